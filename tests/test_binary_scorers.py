"""Detection and fuzzing (``scorers.detection``, ``scorers.fuzzing``, ``scorers.binary``): known answers through the real
index, sampling, prompts and record files with planted units and an oracle judge, the shuffled control near chance,
the metrics' arithmetic, the items each scorer shows, and resuming."""

import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.config import EvaluationConfig
from harness.errors import MonoscopeError
from harness.index.sampling import SamplingConfig
from harness.index.state import IndexConfig, new_index, update_index
from harness.index.store import save_index
from harness.llm.client import LLMClient
from harness.llm.interface import CHOICE_LOGPROBS, GENERATE, Completion, Message, Usage
from harness.records import TokenContext, UnitContexts
from harness.run.evaluate import DETECTIONS, FUZZINGS, explain_stage, load_unit_contexts, score_stage
from harness.subject.corpus import save_chunks
from results.store import read_records
from scorers.binary import BinaryJudgment, auc, binary_summary, level_accuracy, yes_probability
from scorers.detection import detection_items
from scorers.fuzzing import fuzzing_items
from scorers.parsing import parse_yes_no
from tests.test_batch import tiny_subject  # noqa: F401 (fixture)
from tests.test_known_answer import OracleBackend

WORDS = [f"word{i}" for i in range(24)]
RULE_WORDS = WORDS[:4]  # unit u fires with activation 5 exactly on RULE_WORDS[u]; a window of 8 holds it about 29% of the time


class WordTokenizer:
    def decode(self, ids: list[int]) -> str:
        return " ".join(WORDS[i] for i in ids)


def build_synthetic_run(run_dir: Path) -> None:
    """A corpus of random words and an index of 4 planted units, with reservoirs large enough for 100+ scored texts."""
    import torch

    chunks = np.random.default_rng(0).integers(0, len(WORDS), size=(600, 16)).astype(np.int32)
    save_chunks(run_dir / "corpus", chunks, {"corpus": "synthetic"})
    acts = torch.zeros(600, 16, len(RULE_WORDS))
    for unit in range(len(RULE_WORDS)):
        acts[:, :, unit] = torch.from_numpy((chunks == unit).astype(np.float32) * 5.0)
    state = new_index(len(RULE_WORDS), IndexConfig(window_before=5, window_after=2, random_nonzero=40, random_zero=40), 16)
    update_index(state, acts, torch.arange(600))
    save_index(state, run_dir / "index" / "syn.safetensors", {"dictionary": "syn"})


def explained_word(prompt: str) -> str | None:
    match = re.search(r'explanation: "the word (\w+)"', prompt)
    return match.group(1) if match else None


def oracle_answer(prompt: str) -> bool:
    """The right answer for a rule "the word W": detection, W in the excerpt; fuzzing, every marked token is W."""
    word = explained_word(prompt)
    excerpt = prompt.split("Line breaks are shown as ⏎.\n", 1)[1].split("\n", 1)[0]
    if "some tokens are marked" in prompt:
        marked = [token.strip() for token in re.findall(r"⟦(.*?)⟧", excerpt)]
        return bool(marked) and all(token == word for token in marked)
    return word in excerpt.split()


class BinaryOracle(OracleBackend):
    """The known-answer oracle (explains and rates by the rules) that also answers detection and fuzzing prompts."""

    def generate(self, messages: list[Message], **params: object) -> Completion:
        prompt = messages[-1].content
        if "Answer Yes or No." in prompt and ("Does the excerpt contain" in prompt or "Is every marked token" in prompt):
            return Completion("Yes" if oracle_answer(prompt) else "No", Usage(len(prompt.split()), 1))
        return super().generate(messages, **params)


class LogprobOracle:
    """Answers from log-probabilities: P(Yes) = 0.9 when the oracle says yes, else 0.2, with a leading space."""

    name = "oracle-logprobs"
    model = "rules"
    capabilities = frozenset({CHOICE_LOGPROBS})

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        prompt = messages[-1].content
        p_yes = 0.9 if explained_word(prompt) is not None and oracle_answer(prompt) else 0.2
        spaced = {" Yes": math.log(p_yes), " No": math.log(1 - p_yes)}
        return {choice: spaced.get(choice, -math.inf) for choice in choices}


CONFIG = EvaluationConfig(
    units_per_dictionary=4,
    sampling=SamplingConfig(score_zero=20, score_random=12),
    judge_format="rating",
    simulator_format="structured",
    scorers=("detection", "fuzzing"),
)


def scored(tmp_path: Path, config: EvaluationConfig, backend: object) -> tuple[list, list[BinaryJudgment], list[BinaryJudgment]]:
    build_synthetic_run(tmp_path)
    explainer = LLMClient(BinaryOracle(), cache_dir=tmp_path / "cache")
    judge = LLMClient(backend, cache_dir=tmp_path / "cache")
    units = load_unit_contexts(tmp_path, config, WordTokenizer())
    explain_stage(tmp_path, units, explainer, config)
    score_stage(tmp_path, units, judge, judge, config)
    return units, read_records(tmp_path / DETECTIONS, BinaryJudgment), read_records(tmp_path / FUZZINGS, BinaryJudgment)


@pytest.mark.parametrize("variant", ["default", "active"])
def test_an_oracle_judge_scores_planted_units_one_and_a_shuffled_explanation_near_chance(tmp_path: Path, variant: str) -> None:
    units, detections, fuzzings = scored(tmp_path, replace(CONFIG, fuzzing_variant=variant), BinaryOracle())
    assert {u.unit for u in units} == {f"syn/{i}" for i in range(len(RULE_WORDS))}
    for records, scorer in ((detections, "detection"), (fuzzings, "fuzzing")):
        assert records and all(r.failure is None and r.scorer == scorer for r in records)
        for unit in units:
            real = binary_summary(r for r in records if r.unit == unit.unit and r.source == "real")
            assert real["balanced_accuracy"] == 1.0 and real["auc"] == 1.0, (scorer, unit.unit, real)
            assert real["n_positive"] > 0 and real["n_negative"] > 0
        shuffled = [r for r in records if r.source == "shuffled"]
        assert len(shuffled) >= 100, "the control is judged on at least 100 texts"
        pooled = binary_summary(shuffled)
        assert 0.40 <= pooled["balanced_accuracy"] <= 0.60, (scorer, pooled)
    assert {r.setting for r in fuzzings} == {f"delphi-{variant}"}
    assert {r.setting for r in detections} == {"monoscope"}


def test_log_probability_answers_are_read_as_p_yes_and_score_the_planted_units_one(tmp_path: Path) -> None:
    units, detections, fuzzings = scored(tmp_path, CONFIG, LogprobOracle())
    assert {r.answer for r in detections + fuzzings} == {"logprobs"}
    assert {r.p_yes for r in detections if r.source == "real"} == {0.9, 0.2}
    for records in (detections, fuzzings):
        for unit in units:
            real = binary_summary(r for r in records if r.unit == unit.unit and r.source == "real")
            assert real["balanced_accuracy"] == 1.0 and real["auc"] == 1.0


def test_a_rerun_asks_nothing_and_a_changed_variant_redoes_only_fuzzing(tmp_path: Path) -> None:
    units, detections, fuzzings = scored(tmp_path, CONFIG, BinaryOracle())
    judge = LLMClient(BinaryOracle(), cache_dir=tmp_path / "fresh-cache")  # an empty cache: any call reaches the backend
    score_stage(tmp_path, units, judge, judge, CONFIG)
    assert judge.backend_calls == 0
    score_stage(tmp_path, units, judge, judge, replace(CONFIG, fuzzing_variant="active"))
    calls = judge.usage_by_stage()
    assert set(calls) == {"fuzzing"} and calls["fuzzing"]["calls"] > 0
    assert read_records(tmp_path / DETECTIONS, BinaryJudgment) == detections
    assert {r.setting for r in read_records(tmp_path / FUZZINGS, BinaryJudgment)} == {"delphi-active"}, "no old record is kept"


def context(activations: list[float], tokens: list[str] | None = None, context_id: str = "u@0:0") -> TokenContext:
    tokens = tokens or [f" t{i}" for i in range(len(activations))]
    return TokenContext("u", context_id, "interval", 0, tuple(tokens), tuple(activations), 0)


def test_detection_shows_windows_unmarked_and_labels_them_by_whether_the_unit_fires_anywhere() -> None:
    firing_elsewhere = context([0.0, 0.0, 2.0, 0.0], context_id="u@1:0")  # the target (token 0) does not fire; token 2 does
    silent = context([0.0, -1.0, 0.0, 0.0], context_id="u@2:0")
    top = context([4.0, 1.0, 0.0, 0.0], context_id="u@3:0")
    items = detection_items(UnitContexts("u", 4.0, (), (firing_elsewhere, silent, top)))
    assert [i.label for i in items] == [True, False, True]
    assert [i.level for i in items] == [4, -1, 9]
    assert all("⟦" not in i.text for i in items) and items[0].text == " t0 t1 t2 t3"


def test_fuzzing_marks_firing_tokens_above_delphis_threshold_and_random_non_firing_ones() -> None:
    a = context([0.0, 1.0, 10.0, 4.0, 0.0, 0.0], context_id="u@1:0")  # 3 firing tokens; 1.0 < 0.3 × 10 is not marked
    b = context([5.0, 0.0, 0.0, 0.0, 0.0, 0.0], context_id="u@2:0")  # 1 firing token
    silent = context([0.0] * 6, context_id="u@3:0")
    every = context([1.0] * 6, context_id="u@4:0")
    unit = UnitContexts("u", 10.0, (), (a, b, silent, every))
    items, skipped = fuzzing_items(unit, "default", seed=0)
    positives = {i.context_id: i.text for i in items if i.label}
    assert positives["u@1:0"] == " t0 t1⟦ t2⟧⟦ t3⟧ t4 t5" and positives["u@2:0"] == "⟦ t0⟧ t1 t2 t3 t4 t5"
    negatives = [i for i in items if not i.label]
    n_wrong = math.ceil((3 + 1 + 6) / 3)  # delphi's n_incorrect: mean firing tokens per positive, rounded up
    assert [i.context_id for i in negatives] == ["u@3:0"] and negatives[0].text.count("⟦") == n_wrong and skipped == 0
    assert fuzzing_items(unit, "default", seed=0) == (items, skipped), "seeded: the same marks every time"
    active, skipped = fuzzing_items(unit, "active", seed=0)
    wrong = [i for i in active if not i.label]
    assert skipped == 1, "the context where every token fires cannot be marked wrongly"
    assert {i.context_id for i in wrong} == {"u@1:0", "u@2:0"}
    for item in wrong:  # never a firing token
        firing = {a: {" t1", " t2", " t3"}, b: {" t0"}}[a if item.context_id == "u@1:0" else b]
        assert not firing & set(re.findall(r"⟦(.*?)⟧", item.text))
    with pytest.raises(MonoscopeError, match="fuzzing variant"):
        fuzzing_items(unit, "hard")


def judgment(label: bool, p_yes: float | None, level: int = 0) -> BinaryJudgment:
    fields = dict(scorer="detection", setting="s", unit="u", context_id="c", variant="window", source="real", explanation="e")
    rest = dict(activation=1.0, answer="logprobs", backend="b", model="m", prompt_hash="h", rendering="3", text_sha256="t")
    return BinaryJudgment(**fields, label=label, level=level, p_yes=p_yes, **rest)


def test_balanced_accuracy_and_auc_match_hand_computed_values_and_a_constant_answer_scores_half() -> None:
    records = [
        judgment(True, 0.9),
        judgment(True, 0.4),
        judgment(True, 0.7),
        judgment(False, 0.6),
        judgment(False, 0.1),
        judgment(False, None),
    ]
    summary = binary_summary(records)
    # TPR 2/3, TNR 1/2 → 7/12; AUC: of the 3×2 pairs, positives beat negatives in 5 (0.4 < 0.6 only) → 5/6
    assert summary["balanced_accuracy"] == pytest.approx(7 / 12) and summary["auc"] == pytest.approx(5 / 6)
    assert (summary["n_positive"], summary["n_negative"], summary["failures"]) == (3, 2, 1)
    # yes on 2 of 3 right texts and 1 of 2 wrong ones: precision 2/3, recall 2/3 → F1 2/3 (delphi's formula)
    assert summary["f1"] == pytest.approx(2 / 3)
    none_right = binary_summary([judgment(True, 0.1), judgment(False, 0.9)])
    assert (none_right["balanced_accuracy"], none_right["f1"]) == (0.0, 0.0)
    constant = binary_summary([judgment(label, 0.5) for label in (True, True, False, False, False)])
    assert constant["auc"] == 0.5 and constant["balanced_accuracy"] == 0.5
    assert binary_summary([judgment(True, 0.9)])["balanced_accuracy"] is None and auc([0.9], [True]) is None
    assert binary_summary([judgment(True, 0.9)])["reason"] == "no wrong text: the unit fires in every window"
    assert binary_summary([judgment(True, 0.9), judgment(False, None)])["reason"] == "no wrong text with a parsed answer"
    assert level_accuracy([judgment(True, 0.9, 3), judgment(True, 0.2, 3), judgment(False, 0.1, -1)]) == {-1: (1, 1), 3: (1, 2)}


def test_yes_no_answers_are_parsed_strictly_and_log_probabilities_normalised() -> None:
    assert parse_yes_no("Yes") and parse_yes_no(" **yes** ") and not parse_yes_no("Answer: No.")
    for reply in ("Yes, because it is", "Y", "maybe", "", "No no"):
        with pytest.raises(ValueError):
            parse_yes_no(reply)
    assert yes_probability(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert yes_probability(-math.inf, -math.inf) is None and yes_probability(0.0, -math.inf) == 1.0


def test_a_generating_judge_without_log_probabilities_is_asked_for_the_word(tmp_path: Path) -> None:
    backend = BinaryOracle()
    assert backend.capabilities == frozenset({GENERATE})
    _, detections, _ = scored(tmp_path, replace(CONFIG, scorers=("detection",)), backend)
    assert {r.answer for r in detections} == {"generated"} and {r.p_yes for r in detections} == {0.0, 1.0}
    assert not (tmp_path / FUZZINGS).exists() or not read_records(tmp_path / FUZZINGS, BinaryJudgment)
    assert np.isfinite([r.activation for r in detections]).all()


@pytest.mark.usefixtures("tiny_subject")
def test_a_run_with_detection_and_fuzzing_fills_the_tables_and_plots_and_a_rerun_asks_nothing(tmp_path: Path) -> None:
    import json

    import pandas as pd

    from harness.run.runner import run_evaluation
    from tests.test_batch import CALLS, TINY_CONFIG, tiny_config

    evaluation = {**TINY_CONFIG["evaluation"], "scorers": ["rubric", "detection", "fuzzing"]}
    config = tiny_config(evaluation=evaluation)
    planned = run_evaluation(config, tmp_path / "plan", dry_run=True, log=lambda _message: None)["stages"]
    assert planned["detection"]["calls"] > 0 and planned["fuzzing"]["calls"] > 0 and "simulate" not in planned
    run_evaluation(config, tmp_path, log=lambda _message: None)
    tables = tmp_path / "results" / "tables"
    units = pd.read_csv(tables / "units.csv")
    for column in ("detection_real", "detection_auc_real", "fuzzing_real", "fuzzing_shuffled"):
        assert column in units and units[column].notna().any(), column
    assert units["pearson_real"].isna().all(), "simulation was not asked for"
    controls = pd.read_csv(tables / "controls.csv")
    assert {"detection", "detection_auc", "fuzzing", "fuzzing_auc"} <= set(controls["metric"])
    sets = pd.read_csv(tables / "sets.csv")
    assert sets["detection_mean"].notna().any()
    levels = pd.read_csv(tables / "binary_levels.csv", dtype={"label": str})
    assert set(levels["scorer"]) == {"detection", "fuzzing"} and ((levels["accuracy"] >= 0) & (levels["accuracy"] <= 1)).all()
    assert (tmp_path / "results" / "plots" / "specificity_neurons.png").stat().st_size > 0
    report = (tmp_path / "results" / "report.html").read_text()
    assert "<b>Detection</b> (balanced accuracy" in report and "<b>Fuzzing</b>" in report and "Fuzzing (fuzzing, fuzzing_auc)" in report
    assert "Pooled over all" in report and "detection balanced accuracy (unmarked windows: fires or not), real − shuffled" in report
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["usage"]["judge"]["detection"]["calls"] > 0 and manifest["usage"]["judge"]["fuzzing"]["calls"] > 0
    left = run_evaluation(config, tmp_path, dry_run=True, log=lambda _message: None)["stages"]
    assert left["detection"]["calls"] == left["fuzzing"]["calls"] == 0, "the plan recognises finished records"
    CALLS.clear()
    before = (tmp_path / DETECTIONS).read_bytes(), (tmp_path / FUZZINGS).read_bytes()
    run_evaluation(config, tmp_path, log=lambda _message: None)
    assert CALLS == [] and ((tmp_path / DETECTIONS).read_bytes(), (tmp_path / FUZZINGS).read_bytes()) == before
