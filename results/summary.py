"""Per-unit scores and the real-versus-control summary with bootstrap intervals over units."""

from collections import defaultdict

import numpy as np

from harness.records import Judgment, Simulation
from scorers.simulation import correlation_scores


def unit_scores(judgments: list[Judgment], simulations: list[Simulation]) -> dict[tuple[str, str], dict[str, float | None]]:
    """Return {(unit, source): {"rubric": mean parsed rubric score, "pearson": …, "spearman": …}}."""
    rubric: dict[tuple[str, str], list[float]] = defaultdict(list)
    for judgment in judgments:
        if judgment.score is not None:
            rubric[(judgment.unit, judgment.source)].append(judgment.score)
    grouped: dict[tuple[str, str], list[Simulation]] = defaultdict(list)
    for simulation in simulations:
        grouped[(simulation.unit, simulation.source)].append(simulation)
    keys = set(rubric) | set(grouped)
    scores = {}
    for key in keys:
        correlation = correlation_scores(grouped.get(key, []))
        scores[key] = {
            "rubric": float(np.mean(rubric[key])) if rubric.get(key) else None,
            "pearson": correlation["pearson"],
            "spearman": correlation["spearman"],
        }
    return scores


def bootstrap_interval(values: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """Return the 95% percentile bootstrap interval of the mean of ``values`` (resampling units)."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(resamples, values.size), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def control_summary(scores: dict[tuple[str, str], dict[str, float | None]], metric: str, control: str = "shuffled", seed: int = 0) -> dict:
    """Return mean real score, mean control score and their paired difference with a 95% CI over units.

    Only units with both a real and a control score enter; ``n_units`` says how many.
    """
    units = sorted({unit for unit, _source in scores})
    pairs = [
        (scores[(u, "real")][metric], scores[(u, control)][metric])
        for u in units
        if (u, "real") in scores
        and (u, control) in scores
        and scores[(u, "real")][metric] is not None
        and scores[(u, control)][metric] is not None
    ]
    if not pairs:
        return {"metric": metric, "control": control, "n_units": 0, "real": None, "control_mean": None, "difference": None, "ci95": None}
    real, other = (np.array(column, dtype=float) for column in zip(*pairs, strict=True))
    difference = real - other
    interval = bootstrap_interval(difference, seed) if len(pairs) > 1 else None
    return {
        "metric": metric,
        "control": control,
        "n_units": len(pairs),
        "real": float(real.mean()),
        "control_mean": float(other.mean()),
        "difference": float(difference.mean()),
        "ci95": interval,
    }
