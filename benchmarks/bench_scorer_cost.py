"""scorer_cost: LLM calls and prompt/completion tokens per scored unit for each of monoscope's scorers, beside the
defaults of SAEBench's autointerp (sae-bench 0.6.0) and delphi's detection and fuzzing (eai-delphi 0.1.3).

monoscope's figures come from the dry-run planner (``harness.run.planning``): the real explain and score stages
run against a backend that counts every request, on one placeholder unit with the default sampling (the most
contexts the sampling config allows) and the default index window (16 tokens), one scorer at a time, for the
three explanation sources (real, shuffled, token statistics) a run scores; tokens are characters / 4 of the
rendered prompts, completions at the request's maximum. The intervention scorer's row is the planner's too (20
neutral prompts × 2 strengths × 3 sources, each prompt rendered with two 12-token placeholder continuations).
The peers' figures follow from their stated default settings, with
their instruction text measured once (characters / 4) from the released wheels: SAEBench, one explanation call
(15 windows of 21 tokens) and one scoring call listing 14 windows, per latent, no controls; delphi, one
explanation call (40 windows of 32 tokens after 3 few-shot examples) and, per scorer, one call per example
(``n_examples_shown`` 1) over 50 activating and 50 non-activating windows of 32 tokens. Ratio: monoscope's
detection calls per unit (three sources) ÷ delphi's detection calls per latent (one explanation).

Beside them, the peers' measured figures (``benchmarks/peers/measured.json``, written by
``python benchmarks/peers/run.py --write-results``): the calls and tokens per latent that SAEBench's and delphi's own
scoring code, and monoscope's, sent to one loopback judge on the same latents and windows, tokens again characters / 4.
"""

import argparse
import json
from pathlib import Path

from common import benchmark

# Instruction text of the peers' prompts, characters, measured from the released wheels (2026-12-02).
SAEBENCH = {"explain_chars": 1494, "score_chars": 830, "window": 21, "explain_windows": 15, "score_windows": 14}
SAEBENCH |= {"explain_max_tokens": 30, "score_max_tokens": 2 * 14 + 5}
DELPHI = {"explain_chars": 2072, "detection_chars": 2355, "fuzzing_chars": 2799, "window": 32, "train": 40, "test": 50}
DELPHI |= {"non_activating": 50, "answer_tokens": 3, "explain_max_tokens": 64}


def _peers() -> dict[str, dict[str, int]]:
    s, d = SAEBENCH, DELPHI
    return {
        "saebench_autointerp": {
            "calls": 2,
            "prompt_tokens": (s["explain_chars"] + s["score_chars"]) // 4 + s["window"] * (s["explain_windows"] + s["score_windows"]),
            "completion_tokens": s["explain_max_tokens"] + s["score_max_tokens"],
        },
        "delphi_explain": {"calls": 1, "prompt_tokens": d["explain_chars"] // 4 + d["train"] * d["window"], "completion_tokens": 64},
        **{
            f"delphi_{scorer}": {
                "calls": d["test"] + d["non_activating"],
                "prompt_tokens": (d["test"] + d["non_activating"]) * (d[f"{scorer}_chars"] // 4 + d["window"]),
                "completion_tokens": (d["test"] + d["non_activating"]) * d["answer_tokens"],
            }
            for scorer in ("detection", "fuzzing")
        },
    }


def _monoscope() -> dict[str, dict[str, int]]:
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from harness.config import EvaluationConfig, Role
    from harness.index.state import IndexConfig
    from harness.run.planning import placeholder_units, plan_calls

    roles = {name: Role() for name in ("explainer", "judge", "simulator")}
    units = placeholder_units(["set/0", "set/1"], EvaluationConfig(), IndexConfig().window)  # two: the shuffled control needs another
    costs = {}
    stages = {"rubric": "judge", "simulation": "simulate", "detection": "detection", "fuzzing": "fuzzing", "intervention": "intervene"}
    for scorer, stage in stages.items():
        config = replace(EvaluationConfig(), scorers=(scorer,))
        with tempfile.TemporaryDirectory() as scratch:
            plan = plan_calls(Path(scratch), units, config, roles, {})
        costs[scorer] = {key: plan[stage][key] // len(units) for key in ("calls", "prompt_tokens", "completion_tokens")}
        if scorer == "rubric":
            costs["explain"] = {key: plan["explain"][key] // len(units) for key in ("calls", "prompt_tokens", "completion_tokens")}
    return costs


PEERS_MEASURED = Path(__file__).resolve().parent / "peers" / "measured.json"


def _peers_measured() -> dict:
    """Return the calls and tokens per latent that ``benchmarks/peers/run.py --write-results`` counted at the loopback
    judge (each tool at its own scoring settings, on the same latents and windows), or why there are none."""
    if not PEERS_MEASURED.exists():
        return {"missing": "not measured: run python benchmarks/peers/run.py --write-results"}
    record = json.loads(PEERS_MEASURED.read_text(encoding="utf-8"))
    costs = {"measured": record["measured"]}
    for result in record["results"]:
        for key, value in result.items():
            if key.startswith("scoring_cost_"):
                costs[f"{result['peer']}: {key.removeprefix('scoring_cost_')}"] = value
    return costs


@benchmark
def scorer_cost(args: argparse.Namespace) -> dict:
    """LLM calls and tokens per scored unit: each monoscope scorer (three explanation sources) and the peers' defaults."""
    ours, peers = _monoscope(), _peers()
    return {
        "monoscope_per_unit": ours,
        "peers_per_latent": peers,
        "peers_measured_per_latent": _peers_measured(),
        "ratio": round(ours["detection"]["calls"] / peers["delphi_detection"]["calls"], 3),
        "target": "report (monoscope scores three explanation sources; the peers one)",
    }
