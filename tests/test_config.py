"""Config files of ``monoscope run``: the bundled default loads, YAML and TOML agree, bad input fails early and clearly."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.config import DEFAULT_CONFIG, load_config
from harness.errors import MonoscopeError


def test_bundled_default_config_loads_with_its_documented_values() -> None:
    config = load_config(DEFAULT_CONFIG)
    assert config.name == "demo"
    assert config.foundation.dictionary_sizes == (512, 2048, 8192)
    assert config.foundation.neuron_pool_size == 512
    assert config.evaluation.units_per_dictionary == 2 and config.evaluation.sampling.score_zero == 2
    assert config.evaluation.explain_contexts == 12 and config.foundation.tokens == 98_304
    assert config.correlation.tokens == 16384 and config.neurons.enabled


def test_yaml_and_toml_give_the_same_config(tmp_path: Path) -> None:
    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text("seed: 5\ncorpus: {tokens: 4096}\nevaluation: {units_per_dictionary: 3, sampling: {score_top: 1}}\n")
    toml_path = tmp_path / "run.toml"
    toml_path.write_text(
        "seed = 5\n[corpus]\ntokens = 4096\n[evaluation]\nunits_per_dictionary = 3\n[evaluation.sampling]\nscore_top = 1\n"
    )
    from_yaml, from_toml = load_config(yaml_path), load_config(toml_path)
    assert from_yaml == from_toml
    assert from_yaml.evaluation.sampling.seed == 5 and from_yaml.foundation.index.seed == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("corpus: {tokenz: 10}\n", "unknown key 'tokenz' in section 'corpus'"),
        ("evaluation: {units_per_dictionary: many}\n", "evaluation.units_per_dictionary has the wrong type"),
        ("evaluation: {judge_format: vibes}\n", "unknown evaluation.judge_format 'vibes'"),
        ("judge: {backend: carrier-pigeon}\n", "judge.backend 'carrier-pigeon' is not known"),
        ("corpus: {context_length: 8}\n", "shorter than the index window"),
        ("llm: {prices: {gpt-x: [1.0]}}\n", "llm.prices.gpt-x"),
        ("dictionaries: {train: []}\n", "names no dictionary"),
        ("model: [1, 2]\n", "section 'model' of the config is not a mapping"),
        ("corpus: {tokens: 10\n", "cannot be parsed"),
        ("evaluation: {scorers: [detecton, rubric]}\n", "did you mean 'detecton' → 'detection'?"),
        ("evaluation: {scorers: [rubric], fuzzing_variant: active}\n", "fuzzing_variant is 'active' but fuzzing is not in"),
    ],
)
def test_bad_config_is_a_one_line_error_before_any_work(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MonoscopeError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config(path)
    result = CliRunner().invoke(main, ["run", str(path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_cli_rejects_a_missing_config_and_bad_cluster_settings(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "not found" in result.output
    for setting, message in (("chunks_per_task: 0", "cluster.chunks_per_task is 0"), ("workers: -1", "cluster.workers is -1")):
        path = tmp_path / "cluster.yaml"
        path.write_text(f"cluster: {{ray: true, {setting}}}\n")
        result = CliRunner().invoke(main, ["run", str(path), "--run-dir", str(tmp_path / "r")])
        assert result.exit_code == 2 and message in result.output, result.output
    result = CliRunner().invoke(main, ["run", str(DEFAULT_CONFIG), "--shard", "0/2"])  # retired: Ray splits the work
    assert result.exit_code == 2 and "No such option" in result.output
    assert not (tmp_path / "r").exists()


def test_max_cost_with_an_unpriced_hosted_model_is_refused_before_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    path = tmp_path / "hosted.yaml"
    path.write_text("judge: {backend: openai, model: some-model}\n")
    result = CliRunner().invoke(main, ["run", str(path), "--max-cost", "1", "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and "needs the price" in result.output
    assert "sk-test" not in result.output and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("judge: {backend: anthropic, model: claude-x}\n", "the judge (anthropic backend) cannot serve evaluation.judge_format yes_no"),
        (
            "evaluation: {judges: [{backend: openai, model: a}, {backend: anthropic, model: b}]}\n",
            "evaluation.judges[1] (anthropic backend) cannot serve evaluation.judge_format yes_no",
        ),
        ("simulator: {backend: openai, model: a}\n", "the simulator (openai backend) cannot serve evaluation.simulator_format yes_no_all"),
    ],
)
def test_a_format_the_backend_cannot_serve_is_refused_before_the_plan(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "formats.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["run", str(path), "--run-dir", str(tmp_path / "run"), "--dry-run"])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "Traceback" not in result.output
    assert message in result.output and "choose evaluation." in result.output
    assert "calls" not in result.output  # refused before any plan is printed
    assert not (tmp_path / "run").exists()
