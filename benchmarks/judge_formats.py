"""Which rubric format separates real from shuffled explanations best for a given judge?

    python benchmarks/judge_formats.py RUN_DIR [--backend local --model embedded] [--units 4]

Uses a finished run (e.g. runs/demo). Chooses the format on one set of units
(seed 101) and reports every format on another (seed 202), so the choice is
not tuned to the units it is reported on. Separation is the standardised
difference of mean rubric scores on firing contexts, matching minus shuffled
explanation (Cohen's d over judgments), because the formats' scales differ in
spread.

The explanations judged are the token-statistics explanations of each unit's
explanation set: they are specific to the unit by construction, so the
experiment measures the judge, not the explainer (the embedded explainer's
own explanations are too generic to tell a judge's formats apart).
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explainers.token_stats import token_statistics_explanation  # noqa: E402
from harness.config import EvaluationConfig, Role
from harness.run.evaluate import load_unit_contexts, make_client, run_tokenizer, shuffled_sources
from scorers.rubric import judge_unit  # noqa: E402

FORMATS = ("rating", "expected_value", "yes_no", "likelihood")


def separation(real: list[float], shuffled: list[float]) -> float | None:
    """Return Cohen's d of real vs shuffled scores (None when undefined)."""
    if len(real) < 2 or len(shuffled) < 2:
        return None
    pooled = np.sqrt((np.var(real, ddof=1) + np.var(shuffled, ddof=1)) / 2)
    return float((np.mean(real) - np.mean(shuffled)) / pooled) if pooled > 0 else None


def measure(run_dir: Path, role: Role, units: int, seed: int, formats: tuple[str, ...]) -> dict:
    """Return {format: {separation, real_mean, shuffled_mean, judgments, failures, seconds}} on units drawn with ``seed``."""
    client = make_client(role, run_dir)
    config = EvaluationConfig(units_per_dictionary=units, seed=seed)
    contexts = load_unit_contexts(run_dir, config, run_tokenizer(run_dir))
    explanations = {c.unit: token_statistics_explanation(c) for c in contexts}
    usable = [c for c in contexts if explanations[c.unit].text]
    partner = shuffled_sources([c.unit for c in usable], seed)
    results = {}
    for judge_format in formats:
        started = time.perf_counter()
        real, shuffled, failures = [], [], 0
        for unit_contexts in usable:
            other = explanations[partner[unit_contexts.unit]].text
            firing = replace(unit_contexts, score=tuple(c for c in unit_contexts.score if c.target_activation > 0))
            for source, text, bucket in (("real", explanations[unit_contexts.unit].text, real), ("shuffled", other, shuffled)):
                for judgment in judge_unit(firing, text, source, client, judge_format):
                    if judgment.score is None:
                        failures += 1
                    else:
                        bucket.append(judgment.score)
        results[judge_format] = {
            "separation": separation(real, shuffled),
            "real_mean": float(np.mean(real)) if real else None,
            "shuffled_mean": float(np.mean(shuffled)) if shuffled else None,
            "judgments": len(real) + len(shuffled),
            "failures": failures,
            "seconds": round(time.perf_counter() - started, 1),
        }
    return results


def scratch_run(run_dir: Path) -> Path:
    """Return a scratch run beside ``run_dir`` that links its corpus and index, so the experiment's
    explanations and cache do not mix with the run's own records."""
    scratch = run_dir / "experiments" / "judge_formats"
    scratch.mkdir(parents=True, exist_ok=True)
    for name in ("corpus.npy", "corpus.json", "index", "manifest.json"):
        link = scratch / name
        if not link.exists():
            link.symlink_to((run_dir / name).resolve())
    return scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--backend", default="local")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--units", type=int, default=3, help="units per dictionary in each set")
    args = parser.parse_args()
    role = Role(args.backend, args.model)
    scratch = scratch_run(args.run_dir)
    choose = measure(scratch, role, args.units, seed=101, formats=FORMATS)
    ranked = sorted((f for f in FORMATS if choose[f]["separation"] is not None), key=lambda f: -choose[f]["separation"])
    report = measure(scratch, role, args.units, seed=202, formats=FORMATS)
    print(json.dumps({"chosen_on_seed_101": choose, "best": ranked[0] if ranked else None, "reported_on_seed_202": report}, indent=2))


if __name__ == "__main__":
    main()
