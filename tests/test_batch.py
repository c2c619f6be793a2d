"""Config-driven batch runs (``monoscope run``): reruns, dry runs and the spending limit (Ray: tests/test_ray.py).

The subject model is a tiny random Gemma with a byte tokenizer (the loader is
patched), the LLM a deterministic fake whose replies depend only on the prompt,
so two runs of the same work must give the same records.
"""

import hashlib
import json
import math
import threading
from dataclasses import replace
from pathlib import Path

import pytest

import harness.run.foundation
import harness.run.runner
from harness.config import config_from_mapping
from harness.llm.budget import BudgetExhausted
from harness.llm.client import register_backend, report_usage
from harness.llm.interface import CHOICE_LOGPROBS, GENERATE, Completion, Message, Usage
from harness.run.evaluate import EXPLANATIONS, JUDGMENTS, SIMULATIONS
from harness.run.runner import run_evaluation
from tests.tiny_models import tiny_byte_gemma

CALLS: list[str] = []
CALLS_LOCK = threading.Lock()


class FakeBackend:
    """Replies are a function of the prompt only: a rating digit, or log-probabilities from a hash."""

    name = "fake-test"
    model = "fake-model"
    capabilities = frozenset({GENERATE, CHOICE_LOGPROBS})

    def generate(self, messages: list[Message], **params: object) -> Completion:
        digest = _digest(messages)
        with CALLS_LOCK:
            CALLS.append(digest)
        return Completion(str(int(digest[:8], 16) % 4), Usage(100, 1))

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        digest = _digest(messages)
        with CALLS_LOCK:
            CALLS.append(digest)
        report_usage(Usage(100, 1))
        weights = [1 + int(digest[2 * i : 2 * i + 2], 16) for i in range(len(choices))]
        return {choice: math.log(w / sum(weights)) for choice, w in zip(choices, weights, strict=True)}


def _digest(messages: list[Message]) -> str:
    return hashlib.sha256("".join(m.content for m in messages).encode()).hexdigest()


register_backend("fake-test")(lambda model="fake-model", **_options: FakeBackend())


@pytest.fixture
def tiny_subject(monkeypatch: pytest.MonkeyPatch):
    """Patch the batch runner's model loading to a tiny random Gemma with a byte tokenizer."""
    subject = tiny_byte_gemma()
    monkeypatch.setattr(harness.run.foundation, "load_subject_model", lambda *args, **kwargs: subject)
    monkeypatch.setattr(harness.run.runner, "model_shape", lambda name: (4, 32, 64))
    monkeypatch.setenv("MONOSCOPE_PROGRESS", "0")
    return subject


TINY_CONFIG = {
    "name": "tiny",
    "seed": 3,
    "model": {"name": "tiny-byte-gemma", "layer": 2, "batch_size": 16},
    "corpus": {"tokens": 6144, "context_length": 32},
    "dictionaries": {"train": [16, 32], "training_batch_size": 64},
    "index": {"top_k": 4, "interval_samples": 1, "random_nonzero": 2, "random_zero": 2, "window_before": 5, "window_after": 2},
    "neurons": {"pool_size": 24},
    "evaluation": {
        "units_per_dictionary": 2,
        "simulation_contexts": 2,
        "judge_format": "rating",
        "simulator_format": "expected_value",
        "sampling": {
            "explain_top": 4,
            "explain_per_level": 1,
            "score_top": 2,
            "score_per_level": 1,
            "score_random": 1,
            "score_zero": 2,
        },
    },
    "correlation": {"features": 4, "tokens": 2048},
    "explainer": {"backend": "fake-test", "model": "fake-model"},
    "judge": {"backend": "fake-test", "model": "fake-model"},
    "simulator": {"backend": "fake-test", "model": "fake-model"},
    "llm": {"max_concurrency": 2, "prices": {"fake-model": [1000.0, 1000.0]}},
}  # a run that takes seconds


def tiny_config(**overrides: object):
    """Return the RunConfig of TINY_CONFIG with whole sections replaced by ``overrides``."""
    return config_from_mapping({**TINY_CONFIG, **overrides})


def record_lines(run_dir: Path, name: str) -> list[str]:
    """Return a record file's lines, sorted (record order depends on scheduling, content must not)."""
    return sorted((run_dir / name).read_text(encoding="utf-8").splitlines())


def test_rerun_of_finished_run_makes_no_call_and_changes_nothing(tmp_path: Path, tiny_subject: object) -> None:
    config = tiny_config()
    run_evaluation(config, tmp_path, log=lambda _message: None)
    before = {name: (tmp_path / name).read_bytes() for name in (EXPLANATIONS, JUDGMENTS, SIMULATIONS, "correlations.jsonl")}
    first = json.loads((tmp_path / "manifest.json").read_text())
    CALLS.clear()
    run_evaluation(config, tmp_path, log=lambda _message: None)
    assert CALLS == []
    assert before == {name: (tmp_path / name).read_bytes() for name in before}
    rerun = json.loads((tmp_path / "manifest.json").read_text())
    assert all(not stages for stages in rerun["usage"].values()), "this invocation's usage: nothing asked"
    assert rerun["usage_total"] == first["usage_total"] == first["usage"], "the run's accounting survives the rerun"


def test_dry_run_counts_calls_and_spends_nothing(tmp_path: Path, tiny_subject: object) -> None:
    config = tiny_config()
    CALLS.clear()
    before_foundation = run_evaluation(config, tmp_path / "new", dry_run=True, log=lambda _message: None)
    assert before_foundation["upper_bound"] and before_foundation["stages"]["judge"]["calls"] > 0
    assert before_foundation["estimated_cost_usd"] > 0
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    harness.run.foundation.build_foundation(run_dir, config, log=lambda _message: None)  # local work only: no LLM call
    planned = run_evaluation(config, run_dir, dry_run=True, log=lambda _message: None)
    assert CALLS == [] and not (run_dir / JUDGMENTS).exists() and not (run_dir / EXPLANATIONS).exists()
    assert not planned["upper_bound"]
    assert planned["stages"]["judge"]["calls"] <= before_foundation["stages"]["judge"]["calls"]
    run_evaluation(config, run_dir, log=lambda _message: None)
    usage = json.loads((run_dir / "manifest.json").read_text())["usage"]
    requests = sum(counts["calls"] + counts["cached_calls"] for client in usage.values() for counts in client.values())
    # the plan counts every request the run makes; identical prompts are answered from the cache, so it bounds the calls
    assert sum(stage["calls"] for stage in planned["stages"].values()) == requests
    assert len(CALLS) <= requests
    after = run_evaluation(config, run_dir, dry_run=True, log=lambda _message: None)
    assert all(stage["calls"] == 0 for stage in after["stages"].values())


def test_max_cost_stops_cleanly_and_a_rerun_resumes(tmp_path: Path, tiny_subject: object) -> None:
    config = tiny_config()
    CALLS.clear()
    # each call costs 100 prompt + 1 output token at $1000 per 1M: ~$0.101; allow about ten of them
    with pytest.raises(BudgetExhausted):
        run_evaluation(config, tmp_path, max_cost=1.05, log=lambda _message: None)
    spent_calls = len(CALLS)
    assert 0 < spent_calls <= 11
    kept = (tmp_path / EXPLANATIONS).read_text().splitlines()
    assert len([line for line in kept if '"llm"' in line]) > 0
    CALLS.clear()
    run_evaluation(config, tmp_path, log=lambda _message: None)
    unsharded = tmp_path.parent / "reference"
    first_calls = set(CALLS)
    CALLS.clear()
    run_evaluation(replace(config), unsharded, log=lambda _message: None)
    # the resumed run asked only what the stopped one had not: together they made the reference run's calls
    assert len(first_calls) + spent_calls >= len(set(CALLS))
    assert record_lines(tmp_path, JUDGMENTS) == record_lines(unsharded, JUDGMENTS)


def test_the_intervention_scorer_runs_in_a_run_fills_the_tables_and_a_rerun_asks_nothing(tmp_path: Path, tiny_subject: object) -> None:
    import pandas as pd

    from harness.run.evaluate import INTERVENTIONS
    from harness.steering.generate import STEERING

    evaluation = {**TINY_CONFIG["evaluation"], "scorers": ["rubric", "simulation", "intervention"], "intervention_multiples": [5.0]}
    config = tiny_config(evaluation=evaluation, steering={"prompts": 2, "multiples": [5.0], "tokens": 4})
    run_evaluation(config, tmp_path, log=lambda _message: None)
    records = [json.loads(line) for line in (tmp_path / INTERVENTIONS).read_text().splitlines()]
    units = {json.loads(line)["unit"] for line in (tmp_path / "units.jsonl").read_text().splitlines()}
    explained = {
        r["unit"] for r in map(json.loads, (tmp_path / EXPLANATIONS).read_text().splitlines()) if r["explainer"] == "llm" and r["text"]
    }
    assert {r["unit"] for r in records} == units & explained
    per_unit_source = {(r["unit"], r["source"]) for r in records}
    assert len(records) == 20 * len(per_unit_source), "every neutral prompt at the one strength, per unit and source"
    assert {source for _, source in per_unit_source} == {"real", "shuffled", "token_stats"}
    steerings = (tmp_path / STEERING).read_text().splitlines()
    expected = 20 * len(units & explained) + 2 * len(units - explained)
    assert len(steerings) == expected, "the steering stage's 2 prompts were the intervention's, not generated again"
    table = pd.read_csv(tmp_path / "results" / "tables" / "units.csv")
    assert table["intervention_real"].notna().any() and table["intervention_kl"].notna().any()
    controls = pd.read_csv(tmp_path / "results" / "tables" / "controls.csv")
    assert "intervention" in set(controls["metric"])
    CALLS.clear()
    before = (tmp_path / INTERVENTIONS).read_bytes(), (tmp_path / STEERING).read_bytes()
    run_evaluation(config, tmp_path, log=lambda _message: None)
    assert CALLS == [] and ((tmp_path / INTERVENTIONS).read_bytes(), (tmp_path / STEERING).read_bytes()) == before


def test_intervention_prompts_limits_the_intervention_scorer_to_the_first_neutral_prompts(tmp_path: Path, tiny_subject: object) -> None:
    from harness.run.evaluate import INTERVENTIONS
    from scorers.intervention import neutral_prompts

    evaluation = {
        **TINY_CONFIG["evaluation"],
        "scorers": ["rubric", "intervention"],
        "intervention_multiples": [5.0],
        "intervention_prompts": 3,
    }
    config = tiny_config(evaluation=evaluation, steering={"enabled": False, "tokens": 3})
    run_evaluation(config, tmp_path, log=lambda _message: None)
    records = [json.loads(line) for line in (tmp_path / INTERVENTIONS).read_text().splitlines()]
    assert records and {r["prompt"] for r in records} == set(neutral_prompts()[:3])


@pytest.mark.parametrize(
    ("scorers", "setting", "rows"),
    [
        (["rubric"], "monoscope", ["explain", "judge"]),
        (["simulation"], "monoscope", ["explain", "simulate"]),
        (["rubric", "detection"], "saebench", ["explain", "judge", "saebench"]),
        (["detection", "fuzzing", "intervention"], "monoscope", ["explain", "detection", "fuzzing", "intervene"]),
    ],
)
def test_the_dry_run_plan_has_a_row_for_each_configured_scorer_only(
    tmp_path: Path, tiny_subject: object, scorers: list[str], setting: str, rows: list[str]
) -> None:
    evaluation = {**TINY_CONFIG["evaluation"], "scorers": scorers, "detection_setting": setting, "intervention_prompts": 3}
    sections = {"evaluation": evaluation}
    if setting == "saebench":  # the setting's own input rules: 128-token sequences, 21-token windows
        index = {**TINY_CONFIG["index"], "window_before": 10, "window_after": 10, "spaced_top": 12, "weighted": 19}
        sections |= {"corpus": {"tokens": 8192, "context_length": 128}, "index": index}
    config = tiny_config(**sections)
    plan = run_evaluation(config, tmp_path / "run", dry_run=True, log=lambda _message: None)
    assert list(plan["stages"]) == rows
    if "intervention" in scorers:
        units = (len(config.foundation.dictionary_sizes) + int(config.neurons.enabled)) * evaluation["units_per_dictionary"]
        assert plan["stages"]["intervene"]["calls"] == units * 3 * len(config.evaluation.intervention_multiples) * 3
        assert not any("intervention" in note and "leaves out" in note for note in plan["notes"])
