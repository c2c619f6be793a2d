"""Per-unit scores and the real-versus-control summary with bootstrap intervals over units."""

from collections import defaultdict

import numpy as np

from harness.records import Judgment, Simulation
from scorers.simulation import correlation_scores

CONSTANT_PREDICTION = "constant prediction"  # the reason scorers.simulation.correlation_scores gives
PAIRED_CONSTANT_SCORE = 0.0  # what a constant prediction scores in paired control comparisons (simulation metrics only)


def unit_scores(judgments: list[Judgment], simulations: list[Simulation]) -> dict[tuple[str, str], dict[str, float | bool | None]]:
    """Return {(unit, source): {"rubric": mean parsed rubric score, "pearson": …, "spearman": …, "constant_prediction": …}}.

    ``constant_prediction`` is True when the source's parsed simulations predicted one value on
    every token: its correlations are None (no correlation exists), and paired control
    comparisons score it ``PAIRED_CONSTANT_SCORE`` (``paired_value``).
    """
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
            "constant_prediction": correlation["reason"] == CONSTANT_PREDICTION,
        }
    return scores


def paired_value(score: dict[str, float | bool | None], metric: str) -> float | None:
    """Return a source's ``metric`` for a paired comparison: the score, or 0 for a constant simulation prediction.

    The rule: an explanation whose simulation predicts the same value everywhere
    predicts nothing, so in paired real-versus-control comparisons it scores 0, whether it is
    the real explanation or a control. Parse failures and constant true activations stay None.
    """
    value = score.get(metric)
    if value is None and metric in ("pearson", "spearman") and score.get("constant_prediction"):
        return PAIRED_CONSTANT_SCORE
    return None if value is None else float(value)


def bootstrap_interval(values: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """Return the 95% percentile bootstrap interval of the mean of ``values`` (resampling units)."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(resamples, values.size), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def control_summary(
    scores: dict[tuple[str, str], dict[str, float | bool | None]], metric: str, control: str = "shuffled", seed: int = 0
) -> dict:
    """Return mean real score, mean control score and their paired difference with a 95% CI over units.

    Only units with both a real and a control value (``paired_value``: a constant simulation
    prediction counts 0) enter; ``n_units`` says how many, and ``n_constant_real`` /
    ``n_constant_control`` how many of them scored 0 for a constant prediction on each side.
    """
    units = sorted({unit for unit, _source in scores})
    pairs = []
    constant = {"real": 0, "control": 0}
    for unit in units:
        if (unit, "real") not in scores or (unit, control) not in scores:
            continue
        real_score, control_score = scores[(unit, "real")], scores[(unit, control)]
        real, other = paired_value(real_score, metric), paired_value(control_score, metric)
        if real is None or other is None:
            continue
        pairs.append((real, other))
        constant["real"] += real_score.get(metric) is None
        constant["control"] += control_score.get(metric) is None
    counts = {"n_constant_real": constant["real"], "n_constant_control": constant["control"]}
    if not pairs:
        return {
            "metric": metric,
            "control": control,
            "n_units": 0,
            "real": None,
            "control_mean": None,
            "difference": None,
            "ci95": None,
        } | counts
    real_values, other_values = (np.array(column, dtype=float) for column in zip(*pairs, strict=True))
    difference = real_values - other_values
    interval = bootstrap_interval(difference, seed) if len(pairs) > 1 else None
    return {
        "metric": metric,
        "control": control,
        "n_units": len(pairs),
        "real": float(real_values.mean()),
        "control_mean": float(other_values.mean()),
        "difference": float(difference.mean()),
        "ci95": interval,
    } | counts
