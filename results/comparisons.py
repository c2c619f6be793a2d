"""Comparisons between groups of units: features versus neurons, and dictionaries of different sizes.

The groups hold different units, so each 95% interval of a difference of means resamples each
group independently (2000 resamples, seeded; None unless both groups have 2 values).
"""

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from results.frames import defined, frame
from results.tables import METRICS, scored_metrics, set_order

NEURON_SET = "neurons"
ALL_FEATURES = "all features"
SIZE_METRICS = (*METRICS, "rubric_auc")

COMPARE_COLUMNS = [
    "feature_set",
    "metric",
    "n_features",
    "n_neurons",
    "feature_mean",
    "neuron_mean",
    "difference",
    "ci_low",
    "ci_high",
    "mannwhitney_u",
    "p_value",
]
SIZE_COLUMNS = [
    "metric",
    "smaller_set",
    "larger_set",
    "smaller_d_sae",
    "larger_d_sae",
    "n_smaller",
    "n_larger",
    "smaller_mean",
    "larger_mean",
    "difference",
    "ci_low",
    "ci_high",
]


def difference_interval(features: np.ndarray, neurons: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """Return the 95% percentile bootstrap interval of mean(features) − mean(neurons), resampling each group independently."""
    rng = np.random.default_rng(seed)
    feature_means = rng.choice(features, size=(resamples, features.size), replace=True).mean(axis=1)
    neuron_means = rng.choice(neurons, size=(resamples, neurons.size), replace=True).mean(axis=1)
    differences = feature_means - neuron_means
    return float(np.percentile(differences, 2.5)), float(np.percentile(differences, 97.5))


def _difference(first: np.ndarray, second: np.ndarray, seed: int) -> dict[str, float | None]:
    """Return mean(first) − mean(second) and its interval (None where a group is empty or, for the interval, below 2)."""
    if first.size == 0 or second.size == 0:
        return {"difference": None, "ci_low": None, "ci_high": None}
    low, high = difference_interval(first, second, seed) if first.size >= 2 and second.size >= 2 else (None, None)
    return {"difference": float(first.mean() - second.mean()), "ci_low": low, "ci_high": high}


def _compare_row(feature_set: str, metric: str, features: np.ndarray, neurons: np.ndarray, seed: int) -> dict[str, Any]:
    """Return one compare_table row for two groups of per-unit scores."""
    row: dict[str, Any] = {
        "feature_set": feature_set,
        "metric": metric,
        "n_features": int(features.size),
        "n_neurons": int(neurons.size),
        "feature_mean": float(features.mean()) if features.size else None,
        "neuron_mean": float(neurons.mean()) if neurons.size else None,
        "mannwhitney_u": None,
        "p_value": None,
    } | _difference(features, neurons, seed)
    if features.size == 0 or neurons.size == 0:
        return row
    test = scipy_stats.mannwhitneyu(features, neurons, alternative="two-sided")
    row["mannwhitney_u"] = float(test.statistic)
    row["p_value"] = float(test.pvalue)
    return row


def compare_table(unit_table_df: pd.DataFrame, neuron_set: str = NEURON_SET, seed: int = 0) -> pd.DataFrame:
    """Return features versus neurons per feature set (and all feature sets pooled) and metric, on real scores.

    ``difference`` is the feature mean minus the neuron mean; ``mannwhitney_u`` and ``p_value``
    come from a two-sided Mann–Whitney U test (None when a group is empty).
    """
    neurons = unit_table_df[unit_table_df["unit_set"] == neuron_set]
    feature_sets = [name for name in set_order(unit_table_df, neuron_set=neuron_set) if name != neuron_set]
    features = unit_table_df[unit_table_df["unit_set"] != neuron_set]
    groups = [(name, unit_table_df[unit_table_df["unit_set"] == name]) for name in feature_sets]
    if feature_sets:
        groups.append((ALL_FEATURES, features))
    rows = []
    for name, group in groups:
        for metric in scored_metrics(unit_table_df, METRICS):
            column = f"{metric}_real"
            rows.append(_compare_row(name, metric, defined(group[column]), defined(neurons[column]), seed))
    return frame(rows, COMPARE_COLUMNS)


def size_table(set_table_df: pd.DataFrame, unit_table_df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Return every pair of dictionaries (smaller, larger) per metric: mean real scores and larger minus smaller.

    In: the set table (its rows with a ``d_sae`` are the dictionaries, in size order) and the
    unit table (per-unit real scores). Metrics: rubric, pearson, rubric_auc. Out: one row per
    pair and metric; none when fewer than two dictionaries were evaluated.
    """
    dictionaries = [row for row in set_table_df.to_dict("records") if not pd.isna(row["d_sae"])]
    rows = []
    for metric in scored_metrics(unit_table_df, SIZE_METRICS):
        column = f"{metric}_real"
        values = {row["unit_set"]: defined(unit_table_df.loc[unit_table_df["unit_set"] == row["unit_set"], column]) for row in dictionaries}
        for i, smaller in enumerate(dictionaries):
            for larger in dictionaries[i + 1 :]:
                low_values, high_values = values[smaller["unit_set"]], values[larger["unit_set"]]
                rows.append(
                    {
                        "metric": metric,
                        "smaller_set": smaller["unit_set"],
                        "larger_set": larger["unit_set"],
                        "smaller_d_sae": int(smaller["d_sae"]),
                        "larger_d_sae": int(larger["d_sae"]),
                        "n_smaller": int(low_values.size),
                        "n_larger": int(high_values.size),
                        "smaller_mean": float(low_values.mean()) if low_values.size else None,
                        "larger_mean": float(high_values.mean()) if high_values.size else None,
                    }
                    | _difference(high_values, low_values, seed)
                )
    return frame(rows, SIZE_COLUMNS)
