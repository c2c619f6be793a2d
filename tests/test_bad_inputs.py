"""Bad input against an existing, finished run: one line naming the problem and the fix, exit code 2,
no model loaded, and the run directory left exactly as it was.

With tests/test_cli_errors.py (dictionary, corpus, model, layer, chunk range and
run-directory cases) and tests/test_config.py (config typos and wrong types),
these make up the bad-input suite.
"""

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import harness.run.foundation
from harness.cli import main
from harness.errors import MonoscopeError
from harness.run.runner import run_evaluation
from tests.test_batch import TINY_CONFIG, tiny_config, tiny_subject  # noqa: F401 (a fixture)


def snapshot(run_dir: Path) -> dict[str, str]:
    """Return {relative path: sha256} of every file in the run directory."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_run(tmp_path: Path, tiny_subject: object, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    """A finished tiny run; afterwards, loading a model is an error (bad input must fail before any model runs)."""
    run_dir = tmp_path / "run"
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY_CONFIG))
    run_evaluation(tiny_config(), run_dir, log=lambda _message: None)

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a model was loaded although the input was bad")

    monkeypatch.setattr(harness.run.foundation, "load_subject_model", refuse)
    return run_dir


def write_config(tmp_path: Path, **changes: object) -> str:
    """Write the tiny config with ``changes`` merged into its sections; return its path."""
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in TINY_CONFIG.items()}
    for section, value in changes.items():
        if isinstance(value, dict):
            data[section] = {**data.get(section, {}), **value}
        else:
            data[section] = value
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def damage(run_dir: Path, name: str, text: str) -> None:
    """Overwrite one file of the run (the case's bad input)."""
    (run_dir / name).write_text(text)


CASES: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "unit index out of range": (
        lambda run, tmp: ["show-unit", str(run / "index" / "sae-16.safetensors"), "999"],
        "out of range",
    ),
    "corpus of another run": (
        lambda run, tmp: ["run", write_config(tmp, corpus={"tokens": 4096}), "--run-dir", str(run)],
        "corpus made with requested_tokens 6144, not 4096",
    ),
    "chunks longer than the index takes": (
        lambda run, tmp: ["run", write_config(tmp, corpus={"context_length": 8192}), "--run-dir", str(run)],
        "exceeds the index's limit of 4096 tokens",
    ),
    "conflicting flags": (
        lambda run, tmp: ["correlate", write_config(tmp), "--run-dir", str(run), "--all", "--features", "5"],
        "conflict",
    ),
    "missing API key": (
        lambda run, tmp: ["run", write_config(tmp, judge={"backend": "openai", "model": "gpt-x"}), "--run-dir", str(run)],
        "OPENAI_API_KEY",
    ),
    "unknown backend": (
        lambda run, tmp: ["run", write_config(tmp, simulator={"backend": "nope", "model": "x"}), "--run-dir", str(run)],
        "is not known",
    ),
    "negative max cost": (
        lambda run, tmp: ["run", write_config(tmp), "--run-dir", str(run), "--max-cost", "-1"],
        "negative",
    ),
    "report of a directory with no run": (
        lambda run, tmp: ["report", str(tmp / "empty")],
        "no evaluated units",
    ),
    "loaded dictionary that does not exist": (
        lambda run, tmp: ["run", write_config(tmp, dictionaries={"load": [str(tmp / "missing-sae")]}), "--run-dir", str(run)],
        "not found",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_the_run_untouched(
    case: str, finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (tmp_path / "empty").mkdir()
    arguments, fragment = CASES[case]
    before = snapshot(finished_run)
    result = CliRunner().invoke(main, arguments(finished_run, tmp_path))
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and " — " in lines[0], result.output
    assert fragment in lines[0], lines[0]
    assert snapshot(finished_run) == before


@pytest.mark.parametrize(
    ("name", "text", "fragment"),  # text None: a line of garbage inside the real file
    [
        ("judgments.jsonl", None, "is not JSON"),
        ("manifest.json", "{ half a manifest", "is corrupt"),
    ],
)
def test_a_corrupt_results_file_is_reported_not_overwritten(finished_run: Path, name: str, text: str | None, fragment: str) -> None:
    if text is None:  # damage the middle of the real file
        lines = (finished_run / name).read_text().splitlines()
        text = "\n".join([*lines[:3], "not json", *lines[3:]]) + "\n"
    damage(finished_run, name, text)
    before = snapshot(finished_run)
    result = CliRunner().invoke(
        main,
        ["report", str(finished_run)] if name != "manifest.json" else ["run", str(_config(finished_run)), "--run-dir", str(finished_run)],
    )
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output
    assert snapshot(finished_run) == before


def _config(run_dir: Path) -> Path:
    path = run_dir.parent / "tiny.yaml"
    return path


INDEX_OPTIONS = dict(
    model="tiny-byte-gemma",
    corpus="python-stdlib",
    tokens=6144,
    context_length=32,
    batch_size=16,
    device="cpu",
    dtype="float32",
    seed=3,
    layer=None,
    hook=None,
)  # fmt: skip  (the finished run's corpus settings)


CHANGES = [
    ({"tokens": 4096}, "requested_tokens 6144, not 4096"),
    ({"context_length": 16}, "context_length 32, not 16"),
    ({"corpus": "OTHER"}, "corpus 'python-stdlib', not"),
    ({"model": "other-model"}, "model 'tiny-byte-gemma', not 'other-model'"),
    ({"context_length": 8192}, "exceeds the index's limit of 4096"),
    ({"context_length": 4}, "shorter than the index window"),
    ({"context_length": 200, "model": "SMALL"}, "exceeds model"),  # a model of 128 positions
]


def test_index_and_train_refuse_other_corpus_settings_before_any_model_loads(
    finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harness.api
    from tests.tiny_models import tiny_gemma_model

    (tmp_path / "other.txt").write_text("other text " * 200)
    small = tmp_path / "small-model"
    tiny_gemma_model().save_pretrained(small)  # max_position_embeddings 128
    monkeypatch.setattr(harness.api, "model_shape", lambda name: (4, 32, 64))
    monkeypatch.setattr(harness.api, "load_subject_model", lambda *args, **kwargs: pytest.fail("a model was loaded"))
    before = snapshot(finished_run)
    training = dict(d_sae=8, sparsity_coefficient=1.0, epochs=1)
    for change, fragment in CHANGES:
        options = INDEX_OPTIONS | {key: {"OTHER": str(tmp_path / "other.txt"), "SMALL": str(small)}.get(v, v) for key, v in change.items()}
        with pytest.raises(MonoscopeError, match=re.escape(fragment)):
            harness.api.index_command(finished_run, ["neurons:1"], None, log=lambda _m: None, **options)
        with pytest.raises(MonoscopeError, match=re.escape(fragment)):
            harness.api.train_command(finished_run, tmp_path / "sae", log=lambda _m: None, **training, **options)
    assert snapshot(finished_run) == before and not (tmp_path / "sae").exists()
