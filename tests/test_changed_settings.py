"""A rerun with changed evaluation settings recomputes exactly what they invalidate and never mixes old records in.

The tiny run of tests/test_batch.py (tiny random Gemma, deterministic fake LLM backend) is finished once per test,
then rerun in the same directory with one setting changed.
"""

from pathlib import Path

import pytest

from harness.llm.client import register_backend
from harness.records import Explanation, Judgment, Simulation, TokenContext
from harness.run.evaluate import EXPLANATIONS, JUDGMENTS, SIMULATIONS
from harness.run.runner import run_evaluation
from results.store import read_records
from tests.test_batch import CALLS, TINY_CONFIG, FakeBackend, tiny_config, tiny_subject  # noqa: F401 (a fixture)


class OtherFakeBackend(FakeBackend):
    """The same deterministic replies under another backend and model name: a changed explainer."""

    name = "fake-test-other"
    model = "fake-model-2"


register_backend("fake-test-other")(lambda model="fake-model-2", **_options: OtherFakeBackend())


def finished(tmp_path: Path) -> Path:
    run_evaluation(tiny_config(), tmp_path, log=lambda _message: None)
    return tmp_path


def score_set(run_dir: Path) -> set[tuple[str, str]]:
    return {(c.unit, c.context_id) for c in read_records(run_dir / "contexts.jsonl", TokenContext) if c.split == "score"}


@pytest.mark.usefixtures("tiny_subject")
def test_a_changed_judge_format_rejudges_every_context_in_the_new_format(tmp_path: Path) -> None:
    run_dir = finished(tmp_path)
    before = read_records(run_dir / JUDGMENTS, Judgment)
    assert {j.judge_format for j in before} == {"rating"}
    evaluation = TINY_CONFIG["evaluation"] | {"judge_format": "expected_value"}
    run_evaluation(tiny_config(evaluation=evaluation), run_dir, log=lambda _message: None)
    after = read_records(run_dir / JUDGMENTS, Judgment)
    assert {j.judge_format for j in after} == {"expected_value"} and len(after) == len(before)
    assert {s.simulator_format for s in read_records(run_dir / SIMULATIONS, Simulation)} == {"expected_value"}  # untouched


@pytest.mark.usefixtures("tiny_subject")
def test_a_changed_explainer_model_re_explains_and_a_rerun_then_asks_nothing(tmp_path: Path) -> None:
    run_dir = finished(tmp_path)
    explainer = {"backend": "fake-test-other", "model": "fake-model-2"}
    run_evaluation(tiny_config(explainer=explainer), run_dir, log=lambda _message: None)
    llm = [e for e in read_records(run_dir / EXPLANATIONS, Explanation) if e.explainer == "llm"]
    assert llm and {(e.backend, e.model) for e in llm} == {("fake-test-other", "fake-model-2")}
    texts = {e.unit: e.text for e in llm}
    for judgment in read_records(run_dir / JUDGMENTS, Judgment):
        if judgment.source == "real":
            assert judgment.explanation == texts[judgment.unit]  # every real judgment scores today's explanation
    CALLS.clear()
    run_evaluation(tiny_config(explainer=explainer), run_dir, log=lambda _message: None)
    assert CALLS == []


@pytest.mark.usefixtures("tiny_subject")
@pytest.mark.parametrize("sampling", [{"score_top": 1}, {"score_zero": 1, "score_random": 0}])
def test_a_smaller_scoring_set_leaves_no_judgment_of_a_dropped_context(tmp_path: Path, sampling: dict) -> None:
    run_dir = finished(tmp_path)
    evaluation = TINY_CONFIG["evaluation"] | {"sampling": TINY_CONFIG["evaluation"]["sampling"] | sampling}
    run_evaluation(tiny_config(evaluation=evaluation), run_dir, log=lambda _message: None)
    current = score_set(run_dir)
    judged = {(j.unit, j.context_id) for j in read_records(run_dir / JUDGMENTS, Judgment)}
    simulated = {(s.unit, s.context_id) for s in read_records(run_dir / SIMULATIONS, Simulation)}
    assert judged == current and simulated <= current


@pytest.mark.usefixtures("tiny_subject")
def test_a_changed_simulation_subset_keeps_only_the_simulated_contexts(tmp_path: Path) -> None:
    run_dir = finished(tmp_path)
    before = {(s.unit, s.context_id) for s in read_records(run_dir / SIMULATIONS, Simulation)}
    evaluation = TINY_CONFIG["evaluation"] | {"simulation_contexts": 1}
    run_evaluation(tiny_config(evaluation=evaluation), run_dir, log=lambda _message: None)
    after = {(s.unit, s.context_id) for s in read_records(run_dir / SIMULATIONS, Simulation)}
    assert after < before and len({unit for unit, _ in after}) == len(after)  # one simulated context per unit
