"""Judge agreement (``results.agreement``, ``evaluation.judges``): three registered judges that disagree by design — A rates by
the known rule, B gives 3 minus A's rating, C answers as A — on two planted unit sets, one that follows a rule and one that
fires at random. The expected figures are computed here, in closed form from the records, not by the code under test."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness.config import EvaluationConfig
from harness.index.sampling import SamplingConfig
from harness.index.state import IndexConfig, new_index, update_index
from harness.index.store import save_index
from harness.llm.client import LLMClient
from harness.llm.interface import Completion, Message
from harness.records import EvaluatedUnit, Judgment
from harness.run.evaluate import explain_stage, load_unit_contexts, score_stage
from harness.run.judges import judge_directory
from results.build import write_results
from results.store import append_records, read_records
from tests.test_batch import tiny_subject  # noqa: F401 (fixture)
from tests.test_known_answer import OracleBackend

WORDS = [f"word{i}" for i in range(24)]
N_UNITS = 12  # per set: at least the 10 an agreement figure needs


class WordTokenizer:
    def decode(self, ids: list[int]) -> str:
        return " ".join(WORDS[i] for i in ids)


class RuleJudge(OracleBackend):
    """Judge A: explains and rates by the rule (3 when the marked token is the explained word, else 0)."""

    name = "judge-a"


class InvertedJudge(OracleBackend):
    """Judge B: rates 3 minus what judge A rates."""

    name = "judge-b"

    def generate(self, messages: list[Message], **params: object) -> Completion:
        reply = super().generate(messages, **params)
        return Completion(str(3 - int(reply.text)), reply.usage) if re.fullmatch(r"[0-3]", reply.text) else reply


class SameJudge(OracleBackend):
    """Judge C: answers exactly as judge A."""

    name = "judge-c"


def build_two_sets(run_dir: Path) -> None:
    """Set "rule" (48 features): unit i fires on WORDS[i]. Set "noise" (24 features): each unit fires at random tokens."""
    from harness.subject.corpus import save_chunks

    rng = np.random.default_rng(1)
    chunks = rng.integers(0, len(WORDS), size=(600, 16)).astype(np.int32)
    save_chunks(run_dir / "corpus", chunks, {"corpus": "synthetic"})
    config = IndexConfig(window_before=5, window_after=2, random_nonzero=16, random_zero=16)
    rule = torch.stack([torch.from_numpy((chunks == i).astype(np.float32) * 5.0) for i in range(N_UNITS)], dim=-1)
    noise = torch.from_numpy((rng.random((600, 16, N_UNITS)) < 0.1).astype(np.float32) * 5.0)
    units = []
    for name, acts, size in (("rule", rule, 48), ("noise", noise, 24)):
        state = new_index(N_UNITS, config, 16)
        update_index(state, acts, torch.arange(600))
        save_index(state, run_dir / "index" / f"{name}.safetensors", {"dictionary": name})
        units += [EvaluatedUnit(f"{name}/{i}", name, "feature", 2, i, size, 0.05, 5.0) for i in range(N_UNITS)]
    append_records(run_dir / "units.jsonl", units)
    (run_dir / "dictionaries.json").write_text(json.dumps([{"dictionary": "noise", "d_sae": 24}, {"dictionary": "rule", "d_sae": 48}]))


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("agreement")
    build_two_sets(run_dir)
    config = EvaluationConfig(
        units_per_dictionary=N_UNITS,
        sampling=SamplingConfig(score_zero=4),
        judge_format="rating",
        simulator_format="structured",
        scorers=("rubric",),
    )
    units = load_unit_contexts(run_dir, config, WordTokenizer())
    explain_stage(run_dir, units, LLMClient(RuleJudge(), cache_dir=run_dir / "cache"), config)
    labels = {"judge-a/rules": run_dir}
    for backend in (InvertedJudge(), SameJudge()):
        labels[f"{backend.name}/rules"] = judge_directory(run_dir, f"{backend.name}/rules")
    for (_label, directory), backend in zip(labels.items(), (RuleJudge(), InvertedJudge(), SameJudge()), strict=True):
        directory.mkdir(parents=True, exist_ok=True)
        client = LLMClient(backend, cache_dir=run_dir / "cache")
        score_stage(directory, units, client, client, config, read_records(run_dir / "explanations.jsonl", _explanation_type()))
    manifest = {"judges": [{"label": label, "dir": str(directory.relative_to(run_dir)) or "."} for label, directory in labels.items()]}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    write_results(run_dir)
    return run_dir


def _explanation_type() -> type:
    from harness.records import Explanation

    return Explanation


def unit_means(directory: Path, unit_set: str) -> dict[str, float]:
    scores: dict[str, list[float]] = {}
    for j in read_records(directory / "judgments.jsonl", Judgment):
        if j.source == "real" and j.unit.startswith(unit_set + "/"):
            scores.setdefault(j.unit, []).append(j.score)
    return {unit: float(np.mean(values)) for unit, values in sorted(scores.items())}


def interval_alpha(x: np.ndarray, y: np.ndarray) -> float:
    """Krippendorff's alpha, interval metric, two coders, no missing values, in closed form:
    α = 1 − (n − 1) · Σᵤ 2(xᵤ − yᵤ)² / Σ_{c≠k} (v_c − v_k)², over the n = 2N pairable values v."""
    values = np.concatenate([x, y])
    n = values.size
    observed = np.sum(2 * (x - y) ** 2)
    expected = 2 * n * np.sum(values**2) - 2 * np.sum(values) ** 2
    return float(1 - (n - 1) * observed / expected)


def ratings(directory: Path, unit_set: str) -> dict[tuple[str, str], float]:
    return {
        (j.unit, j.context_id): j.score
        for j in read_records(directory / "judgments.jsonl", Judgment)
        if j.source == "real" and j.unit.startswith(unit_set + "/")
    }


def test_agreement_figures_equal_their_closed_forms(judged_run: Path) -> None:
    agreement = pd.read_csv(judged_run / "results" / "tables" / "agreement.csv")
    inverted = judge_directory(judged_run, "judge-b/rules")
    for unit_set in ("rule", "noise"):
        a, b = unit_means(judged_run, unit_set), unit_means(inverted, unit_set)
        assert len(a) == N_UNITS and all(b[u] == pytest.approx(3 - a[u]) for u in a), "B is 3 − A by design"
        rows = agreement[(agreement["unit_set"] == unit_set) & (agreement["metric"] == "rubric")]
        spearman = rows.set_index(["statistic", "judge_a", "judge_b"])["value"]
        assert np.ptp(list(a.values())) > 0, "the units' means differ, so their ranks are defined"
        # B's unit means are a decreasing map of A's: Spearman −1 exactly; an identical judge: 1
        assert spearman[("spearman", "judge-a/rules", "judge-b/rules")] == pytest.approx(-1.0)
        assert spearman[("spearman", "judge-a/rules", "judge-c/rules")] == pytest.approx(1.0)
        first, second = ratings(judged_run, unit_set), ratings(inverted, unit_set)
        keys = sorted(first)
        x, y = np.array([first[k] for k in keys]), np.array([second[k] for k in keys])
        assert spearman[("krippendorff_alpha", "judge-a/rules", "judge-b/rules")] == pytest.approx(interval_alpha(x, y))
        assert spearman[("krippendorff_alpha", "judge-a/rules", "judge-c/rules")] == pytest.approx(1.0)
        alpha_rows = rows[rows["statistic"] == "krippendorff_alpha"]
        assert (alpha_rows["n_items"] == len(keys)).all() and (alpha_rows["n_units"] == N_UNITS).all()
        assert (rows["ci_low"] <= rows["value"] + 1e-12).all() and (rows["value"] <= rows["ci_high"] + 1e-12).all()


def test_a_conclusion_that_flips_under_one_judge_does_not_hold_under_every_judge(judged_run: Path) -> None:
    conclusions = pd.read_csv(judged_run / "results" / "tables" / "judge_conclusions.csv")
    rubric = conclusions[(conclusions["comparison"] == "rule vs noise") & (conclusions["metric"] == "rubric")].set_index("judge")
    a = np.mean(list(unit_means(judged_run, "rule").values())) - np.mean(list(unit_means(judged_run, "noise").values()))
    assert a > 1 and rubric.loc["judge-a/rules", "difference"] == pytest.approx(a)
    assert rubric.loc["judge-b/rules", "difference"] == pytest.approx(-a), "3 − x reverses every difference of means"
    assert list(rubric["direction"]) == ["higher", "lower", "higher"]
    assert not rubric["holds_under_every_judge"].any()
    report = (judged_run / "results" / "report.html").read_text() if (judged_run / "results" / "report.html").exists() else None
    if report is None:
        from results.report import write_report

        report = write_report(judged_run).read_text()
    assert "rule vs noise, rubric: does not hold under every judge" in report


def test_with_fewer_than_ten_units_agreement_is_not_computed_and_says_why(judged_run: Path) -> None:
    from results.agreement import agreement_table, judge_unit_tables, run_judges

    judges = run_judges(judged_run)
    units = read_records(judged_run / "units.jsonl", EvaluatedUnit)[:9]
    tables, ratings_by_judge = judge_unit_tables(
        judges, units, read_records(judged_run / "explanations.jsonl", _explanation_type()), [], [], []
    )
    table = agreement_table(tables, ratings_by_judge)
    assert table["value"].isna().all() and table["reason"].str.contains("9 units scored by both judges, under 10").all()


def test_a_run_with_one_judge_says_agreement_was_not_computed(tmp_path: Path) -> None:
    from results.report import _agreement_section

    assert "Not computed: this run has one judge" in _agreement_section(tmp_path)


class SecondFakeJudge:
    """A second deterministic judge for whole runs: the fake-test backend's answers, shifted by one."""

    name = "fake-second"
    model = "second-model"

    def __init__(self) -> None:
        from tests.test_batch import FakeBackend

        self.inner = FakeBackend()
        self.capabilities = self.inner.capabilities

    def generate(self, messages: list[Message], **params: object) -> Completion:
        reply = self.inner.generate(messages, **params)
        return Completion(str((int(reply.text) + 1) % 4), reply.usage) if reply.text.isdigit() else reply

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        values = self.inner.choice_logprobs(messages, choices)
        return dict(zip(choices, reversed(list(values.values())), strict=True))


def _register_second_judge() -> None:
    from harness.llm.client import backend_names, register_backend

    if "fake-second" not in backend_names():
        register_backend("fake-second")(lambda model="second-model", **_options: SecondFakeJudge())


_register_second_judge()


@pytest.mark.usefixtures("tiny_subject")
def test_a_run_with_two_judges_scores_with_both_counts_each_plans_each_and_a_rerun_asks_nothing(tmp_path: Path) -> None:
    from harness.run.runner import run_evaluation
    from tests.test_batch import CALLS, TINY_CONFIG

    first = {"backend": "fake-test", "model": "fake-model"}
    second = {"backend": "fake-second", "model": "second-model"}
    evaluation = {**TINY_CONFIG["evaluation"], "scorers": ["rubric", "simulation", "detection"], "judges": [first, second]}
    sections = {key: value for key, value in TINY_CONFIG.items() if key != "judge"}
    from harness.config import config_from_mapping

    config = config_from_mapping({**sections, "evaluation": evaluation})
    plan = run_evaluation(config, tmp_path / "plan", dry_run=True, log=lambda _message: None)["stages"]
    assert plan["judge:fake-second/second-model"]["calls"] > 0 and plan["detection:fake-second/second-model"]["calls"] > 0
    run_evaluation(config, tmp_path, log=lambda _message: None)
    other = judge_directory(tmp_path, "fake-second/second-model")
    judged = read_records(other / "judgments.jsonl", Judgment)
    assert judged and {j.backend for j in judged} == {"fake-second"}
    assert {j.backend for j in read_records(tmp_path / "judgments.jsonl", Judgment)} == {"fake-test"}
    assert not (other / "simulations.jsonl").exists(), "simulation is the simulator's, not repeated per judge"
    assert (other / "detection.jsonl").stat().st_size > 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["usage"]["judge:fake-second/second-model"]["judge"]["calls"] > 0
    assert [j["label"] for j in manifest["judges"]] == ["fake-test/fake-model", "fake-second/second-model"]
    tables = tmp_path / "results" / "tables"
    by_judge = pd.read_csv(tables / "units_by_judge.csv")
    assert set(by_judge["judge"]) == {"fake-test/fake-model", "fake-second/second-model"}
    agreement = pd.read_csv(tables / "agreement.csv")
    assert agreement["value"].isna().all() and agreement["reason"].str.contains("under 10").all(), "2 units per set: no figure"
    left = run_evaluation(config, tmp_path, dry_run=True, log=lambda _message: None)["stages"]
    assert all(row["calls"] == 0 for row in left.values()), left
    CALLS.clear()
    run_evaluation(config, tmp_path, log=lambda _message: None)
    assert CALLS == []
    assert read_records(other / "judgments.jsonl", Judgment) == judged


def test_several_judges_on_ray_and_bad_judge_lists_are_refused_in_one_line(tmp_path: Path) -> None:
    from harness.config import config_from_mapping
    from harness.errors import MonoscopeError
    from harness.run.runner import preflight

    judges = [{"backend": "fake-test", "model": "fake-model"}, {"backend": "fake-second", "model": "second-model"}]
    config = config_from_mapping({"evaluation": {"judges": judges}, "cluster": {"ray": True}})
    pytest.importorskip("ray")
    with pytest.raises(MonoscopeError, match="several judges"):
        preflight(config, None)
    for bad, message in (
        ({"evaluation": {"judges": []}}, "evaluation.judges is an empty list"),
        ({"evaluation": {"judges": {"backend": "openai"}}}, "not a list of judges"),
        ({"evaluation": {"judges": [judges[0], judges[0]]}}, "more than once"),
        ({"judge": judges[0], "evaluation": {"judges": judges}}, "both a judge section"),
        ({"evaluation": {"judges": [{"backend": "fake-test", "modle": "x"}]}}, "unknown key 'modle'"),
        ({"evaluation": {"judges": [judges[0], {"model": "gpt-4.1-mini"}]}}, r"judges\[1\] has no backend"),
        ({"evaluation": {"judges": [judges[0], {"backend": "openai"}]}}, r"judges\[1\] has no model"),
        ({"evaluation": {"judges": [judges[0], {"backend": "opnai", "model": "x"}]}}, r"judges\[1\].backend 'opnai' is not known"),
    ):
        with pytest.raises(MonoscopeError, match=message):
            config_from_mapping(bad)


def test_the_bundled_two_judge_config_plans_calls_for_both_judges_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.config import judge_roles, load_config
    from harness.run.runner import run_evaluation

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    config = load_config(Path(__file__).resolve().parent.parent / "harness" / "configs" / "two-judges.yaml")
    assert [role.backend for role in judge_roles(config)] == ["openai", "anthropic"]
    plan = run_evaluation(config, tmp_path / "run", dry_run=True, log=lambda _message: None)
    for stage in ("judge", "detection", "fuzzing", "judge:anthropic/claude-sonnet-4-5", "fuzzing:anthropic/claude-sonnet-4-5"):
        assert plan["stages"][stage]["calls"] > 0 and plan["stages"][stage]["cost_usd"] > 0, stage
    assert any("ANTHROPIC_API_KEY" in note for note in plan["notes"])
