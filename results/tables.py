"""Result tables as pandas DataFrames: specificity by activation level, per unit, per set, and the comparisons.

Every function takes records (or a table built from them) and returns a
DataFrame with fixed columns, also when there is nothing to put in it. Reruns
append records, so the last record per key wins wherever records are read.
Missing values are None (NaN in float columns); tables round-trip through CSV
with ``write_table`` and ``load_table``.
"""

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from harness.records import EvaluatedUnit, Explanation, FeatureCorrelation, Judgment, NearestFeatures, Simulation
from harness.storage import atomic_write_bytes
from results.store import latest_by_key
from results.summary import bootstrap_interval, control_summary, unit_scores

SCORES = (0, 1, 2, 3)
SOURCES = ("real", "shuffled", "token_stats")
METRICS = ("rubric", "pearson")
CONTROLS = ("shuffled", "token_stats")
ALL_FEATURES = "all features"

SPECIFICITY_COLUMNS = ["level", "label", "n", *(f"count_{s}" for s in SCORES), *(f"freq_{s}" for s in SCORES)]
UNIT_COLUMNS = [
    "unit",
    "unit_set",
    "kind",
    "layer",
    "index",
    "set_size",
    "density",
    "max_activation",
    "explanation",
    "token_stats_explanation",
    *(f"rubric_{source}" for source in SOURCES),
    *(f"pearson_{source}" for source in SOURCES),
    *(f"constant_prediction_{source}" for source in SOURCES),
    "n_judgments",
    "n_failures",
    "max_neuron_correlation",
    "neuron",
    "nearest_larger",
]
SET_COLUMNS = [
    "unit_set",
    "kind",
    "d_sae",
    "l0",
    "variance_explained",
    "dead_fraction",
    "dead_fraction_all_tokens",
    "n_units",
    "rubric_mean",
    "rubric_ci_low",
    "rubric_ci_high",
    "pearson_mean",
    "pearson_ci_low",
    "pearson_ci_high",
]
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
CONTROL_COLUMNS = [
    "unit_set",
    "metric",
    "control",
    "real",
    "control_mean",
    "difference",
    "ci_low",
    "ci_high",
    "n_units",
    "n_constant_real",
    "n_constant_control",
]
CORRELATION_COLUMNS = [
    "unit",
    "dictionary",
    "n_tokens",
    "fire_count",
    "max_neuron_correlation",
    "neuron",
    "max_residual_correlation",
    "residual_direction",
]
CORRELATION_SUMMARY_COLUMNS = [
    "dictionary",
    "threshold",
    "n_features",
    "n_defined",
    "fraction_at_most_threshold",
    "median_max_correlation",
    "n_residual_defined",
    "fraction_residual_at_most_threshold",
    "median_max_residual_correlation",
]
# Columns read back as text whatever they hold (a label "0" stays "0", an explanation "42" stays "42").
TEXT_COLUMNS = (
    "label",
    "unit",
    "unit_set",
    "kind",
    "explanation",
    "token_stats_explanation",
    "neuron",
    "nearest_larger",
    "feature_set",
    "metric",
    "control",
    "dictionary",
    "residual_direction",
)


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Return a DataFrame of ``rows`` with exactly ``columns`` (an empty one keeps the columns)."""
    return pd.DataFrame(rows, columns=columns)


def _value(value: Any) -> Any:
    """Return ``value`` with NaN (and pandas' missing markers) as None."""
    if value is None:
        return None
    if isinstance(value, float | np.floating) and math.isnan(value):
        return None
    if value is pd.NA:
        return None
    return value


def _defined(values: pd.Series) -> np.ndarray:
    """Return the non-missing values of a column as a float array."""
    return pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)


def _unit_order(unit: str) -> tuple[str, int, str]:
    """Return a sort key for a unit name "prefix/index" that orders indexes numerically."""
    prefix, _, index = unit.rpartition("/")
    return (prefix, int(index), unit) if index.isdigit() else (prefix, -1, unit)


def _round_score(score: float) -> int:
    """Return a 0..3 rubric score rounded half up to the nearest integer and clipped to 0..3."""
    return int(min(3, max(0, math.floor(score + 0.5))))


def _fraction_text(value: float) -> str:
    """Return a fraction of the maximum activation as short text: 0.1 → "0.1", 0.25 → "0.25", 0 → "0.0"."""
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def level_label(level: int, levels: int = 10) -> str:
    """Return the label of an activation level: "0" for -1 (not firing), else its interval of fractions of max, "(0.0, 0.1]"."""
    if level < 0:
        return "0"
    return f"({_fraction_text(level / levels)}, {_fraction_text((level + 1) / levels)}]"


def specificity_table(
    judgments: list[Judgment],
    unit: str | None = None,
    unit_set: str | None = None,
    units: list[EvaluatedUnit] | None = None,
    levels: int = 10,
) -> pd.DataFrame:
    """Return the stacked-frequency table of rounded rubric scores per activation level.

    Only judgments of source "real" with a parsed score enter, optionally only
    those of ``unit`` or of the units of ``unit_set`` (which needs ``units``).
    One row per level present, -1 (not firing) first; columns ``level``,
    ``label``, ``n``, ``count_0..3`` and ``freq_0..3`` (fractions of n).
    """
    if unit_set is not None and units is None:
        raise ValueError("specificity_table: unit_set needs the units records")
    members = {u.unit for u in latest_by_key(units).values() if u.unit_set == unit_set} if unit_set is not None else None
    counts: dict[int, list[int]] = defaultdict(lambda: [0] * len(SCORES))
    for judgment in latest_by_key(judgments).values():
        if judgment.source != "real" or judgment.score is None:
            continue
        if unit is not None and judgment.unit != unit:
            continue
        if members is not None and judgment.unit not in members:
            continue
        counts[judgment.level][_round_score(judgment.score)] += 1
    rows = []
    for level in sorted(counts):
        n = sum(counts[level])
        row: dict[str, Any] = {"level": level, "label": level_label(level, levels), "n": n}
        row.update({f"count_{s}": counts[level][s] for s in SCORES})
        row.update({f"freq_{s}": counts[level][s] / n for s in SCORES})
        rows.append(row)
    return _frame(rows, SPECIFICITY_COLUMNS)


def _nearest_larger(unit: EvaluatedUnit, neighbors: list[NearestFeatures], set_sizes: dict[str, int]) -> str:
    """Return "dict/i (cos), …": the top neighbour of ``unit`` in each larger dictionary, smallest dictionary first."""
    own_size = set_sizes.get(unit.unit_set)
    entries = []
    for record in neighbors:
        if record.unit != unit.unit or not record.nearest or not record.cosine:
            continue
        other_size = set_sizes.get(record.other_dictionary)
        if own_size is not None and other_size is not None and other_size <= own_size:
            continue
        order = other_size if other_size is not None else math.inf
        entries.append((order, record.other_dictionary, f"{record.nearest[0]} ({record.cosine[0]:.2f})"))
    return ", ".join(text for _order, _name, text in sorted(entries))


def unit_table(
    units: list[EvaluatedUnit],
    explanations: list[Explanation],
    judgments: list[Judgment],
    simulations: list[Simulation],
    correlations: list[FeatureCorrelation],
    neighbors: list[NearestFeatures],
) -> pd.DataFrame:
    """Return one row per evaluated unit: its facts, explanations, mean scores per source, failures and neighbours.

    Rows are ordered features first (by dictionary size, then set name, layer and
    index), then neurons. ``n_judgments`` counts the unit's judgment records of
    every source, failures included; ``n_failures`` counts its judgment and
    simulation records with no parsed result.
    """
    unit_records = sorted(
        latest_by_key(units).values(),
        key=lambda u: (u.kind == "neuron", u.set_size, u.unit_set, u.layer, u.index, u.unit),
    )
    explained = latest_by_key(explanations)
    judged = list(latest_by_key(judgments).values())
    simulated = list(latest_by_key(simulations).values())
    correlated = latest_by_key(correlations)
    neighbor_records = list(latest_by_key(neighbors).values())
    scores = unit_scores(judged, simulated)
    set_sizes = {u.unit_set: u.set_size for u in unit_records if u.kind == "feature"}
    n_judgments: dict[str, int] = defaultdict(int)
    n_failures: dict[str, int] = defaultdict(int)
    for judgment in judged:
        n_judgments[judgment.unit] += 1
        n_failures[judgment.unit] += judgment.score is None
    for simulation in simulated:
        n_failures[simulation.unit] += simulation.predicted is None

    rows = []
    for unit in unit_records:
        llm = explained.get((unit.unit, "llm"))
        token_stats = explained.get((unit.unit, "token_stats"))
        correlation = correlated.get(unit.unit)
        row: dict[str, Any] = {
            "unit": unit.unit,
            "unit_set": unit.unit_set,
            "kind": unit.kind,
            "layer": unit.layer,
            "index": unit.index,
            "set_size": unit.set_size,
            "density": unit.density,
            "max_activation": unit.max_activation,
            "explanation": llm.text if llm is not None else None,
            "token_stats_explanation": token_stats.text if token_stats is not None else None,
        }
        for metric in METRICS:
            for source in SOURCES:
                row[f"{metric}_{source}"] = scores.get((unit.unit, source), {}).get(metric)
        for source in SOURCES:
            row[f"constant_prediction_{source}"] = bool(scores.get((unit.unit, source), {}).get("constant_prediction", False))
        row["n_judgments"] = n_judgments[unit.unit]
        row["n_failures"] = n_failures[unit.unit]
        row["max_neuron_correlation"] = correlation.max_neuron_correlation if correlation is not None else None
        row["neuron"] = correlation.neuron if correlation is not None else None
        row["nearest_larger"] = _nearest_larger(unit, neighbor_records, set_sizes)
        rows.append(row)
    return _frame(rows, UNIT_COLUMNS)


def _mean_and_interval(values: np.ndarray, seed: int) -> tuple[float | None, float | None, float | None]:
    """Return the mean of ``values`` (None when empty) and its 95% bootstrap interval (None below 2 values)."""
    if values.size == 0:
        return None, None, None
    if values.size < 2:
        return float(values.mean()), None, None
    low, high = bootstrap_interval(values, seed)
    return float(values.mean()), low, high


def set_order(unit_table_df: pd.DataFrame, dictionary_rows: list[dict] | None = None, neuron_set: str = "neurons") -> list[str]:
    """Return the unit sets in table order: dictionaries by d_sae (else set size) and name, other sets, then ``neuron_set``."""
    sizes: dict[str, float] = {}
    for row in dictionary_rows or []:
        sizes[row["dictionary"]] = float(row["d_sae"]) if row.get("d_sae") is not None else math.inf
    for name, group in unit_table_df.groupby("unit_set", sort=True):
        if name != neuron_set and name not in sizes:
            is_feature = bool((group["kind"] == "feature").all())
            sizes[str(name)] = float(group["set_size"].max()) if is_feature else math.inf
    ordered = sorted(sizes, key=lambda name: (sizes[name], name))
    if neuron_set in set(unit_table_df["unit_set"]):
        ordered.append(neuron_set)
    return ordered


def set_table(unit_table_df: pd.DataFrame, dictionary_rows: list[dict], seed: int = 0) -> pd.DataFrame:
    """Return the dictionary-size comparison: one row per unit set with its dictionary statistics and mean real scores.

    Sets: every dictionary of ``dictionary_rows`` (by d_sae), any other evaluated
    set, then "neurons". Means are over units with the metric; the 95% bootstrap
    interval over units is None when fewer than 2 units have it.
    """
    by_name = {row["dictionary"]: row for row in dictionary_rows}
    rows = []
    for name in set_order(unit_table_df, dictionary_rows):
        members = unit_table_df[unit_table_df["unit_set"] == name]
        dictionary = by_name.get(name, {})
        kinds = sorted(set(members["kind"]))
        kind = kinds[0] if len(kinds) == 1 else ("feature" if name in by_name or not kinds else "mixed")
        row: dict[str, Any] = {
            "unit_set": name,
            "kind": kind,
            "d_sae": dictionary.get("d_sae"),
            "l0": dictionary.get("l0"),
            "variance_explained": dictionary.get("variance_explained"),
            "dead_fraction": dictionary.get("dead_fraction"),
            "dead_fraction_all_tokens": dictionary.get("dead_fraction_all_tokens"),
            "n_units": len(members),
        }
        for metric in METRICS:
            mean, low, high = _mean_and_interval(_defined(members[f"{metric}_real"]), seed)
            row.update({f"{metric}_mean": mean, f"{metric}_ci_low": low, f"{metric}_ci_high": high})
        rows.append(row)
    table = _frame(rows, SET_COLUMNS)
    table["d_sae"] = table["d_sae"].astype("Int64")
    return table


def difference_interval(features: np.ndarray, neurons: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """Return the 95% percentile bootstrap interval of mean(features) − mean(neurons), resampling each group independently."""
    rng = np.random.default_rng(seed)
    feature_means = rng.choice(features, size=(resamples, features.size), replace=True).mean(axis=1)
    neuron_means = rng.choice(neurons, size=(resamples, neurons.size), replace=True).mean(axis=1)
    differences = feature_means - neuron_means
    return float(np.percentile(differences, 2.5)), float(np.percentile(differences, 97.5))


def _compare_row(feature_set: str, metric: str, features: np.ndarray, neurons: np.ndarray, seed: int) -> dict[str, Any]:
    """Return one compare_table row for two groups of per-unit scores."""
    row: dict[str, Any] = {
        "feature_set": feature_set,
        "metric": metric,
        "n_features": int(features.size),
        "n_neurons": int(neurons.size),
        "feature_mean": float(features.mean()) if features.size else None,
        "neuron_mean": float(neurons.mean()) if neurons.size else None,
        "difference": None,
        "ci_low": None,
        "ci_high": None,
        "mannwhitney_u": None,
        "p_value": None,
    }
    if features.size == 0 or neurons.size == 0:
        return row
    row["difference"] = float(features.mean() - neurons.mean())
    if features.size >= 2 and neurons.size >= 2:
        row["ci_low"], row["ci_high"] = difference_interval(features, neurons, seed)
    test = scipy_stats.mannwhitneyu(features, neurons, alternative="two-sided")
    row["mannwhitney_u"] = float(test.statistic)
    row["p_value"] = float(test.pvalue)
    return row


def compare_table(unit_table_df: pd.DataFrame, neuron_set: str = "neurons", seed: int = 0) -> pd.DataFrame:
    """Return features versus neurons per feature set (and all feature sets pooled) and metric, on real scores.

    ``difference`` is the feature mean minus the neuron mean; its 95% interval
    resamples each group independently (2000 resamples, seeded; None unless both
    groups have 2 values); ``mannwhitney_u`` and ``p_value`` come from a two-sided
    Mann–Whitney U test (None when a group is empty).
    """
    neurons = unit_table_df[unit_table_df["unit_set"] == neuron_set]
    feature_sets = [name for name in set_order(unit_table_df, neuron_set=neuron_set) if name != neuron_set]
    features = unit_table_df[unit_table_df["unit_set"] != neuron_set]
    groups = [(name, unit_table_df[unit_table_df["unit_set"] == name]) for name in feature_sets]
    if feature_sets:
        groups.append((ALL_FEATURES, features))
    rows = []
    for name, group in groups:
        for metric in METRICS:
            column = f"{metric}_real"
            rows.append(_compare_row(name, metric, _defined(group[column]), _defined(neurons[column]), seed))
    return _frame(rows, COMPARE_COLUMNS)


def control_table(unit_table_df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Return real versus each control (shuffled, token_stats) per unit set and metric, paired over units.

    Only units with both scores enter (``n_units``); a constant simulation prediction scores
    0 on either side (``results.summary.paired_value``), counted in ``n_constant_real`` and
    ``n_constant_control``. The interval is the 95% bootstrap interval of the mean paired
    difference (None below 2 units).
    """
    rows = []
    for name in set_order(unit_table_df):
        members = unit_table_df[unit_table_df["unit_set"] == name]
        scores: dict[tuple[str, str], dict[str, float | None]] = {}
        for record in members.to_dict("records"):
            for source in SOURCES:
                constant = _value(record.get(f"constant_prediction_{source}"))
                scores[(record["unit"], source)] = {metric: _value(record[f"{metric}_{source}"]) for metric in METRICS} | {
                    "constant_prediction": bool(constant) and str(constant).lower() != "false"
                }
        for metric in METRICS:
            for control in CONTROLS:
                summary = control_summary(scores, metric, control, seed)
                interval = summary["ci95"] or (None, None)
                rows.append(
                    {
                        "unit_set": name,
                        "metric": metric,
                        "control": control,
                        "real": summary["real"],
                        "control_mean": summary["control_mean"],
                        "difference": summary["difference"],
                        "ci_low": interval[0],
                        "ci_high": interval[1],
                        "n_units": summary["n_units"],
                        "n_constant_real": summary["n_constant_real"],
                        "n_constant_control": summary["n_constant_control"],
                    }
                )
    return _frame(rows, CONTROL_COLUMNS)


def _dictionary_order(names: set[str], dictionary_order: list[str] | None) -> list[str]:
    """Return ``names`` in ``dictionary_order`` first, then the rest by name."""
    order = [name for name in dictionary_order or [] if name in names]
    return order + sorted(names - set(order))


def correlation_table(correlations: list[FeatureCorrelation], dictionary_order: list[str] | None = None) -> pd.DataFrame:
    """Return one row per feature with its strongest neuron and residual-direction correlations.

    Rows are grouped by dictionary (in ``dictionary_order`` when given, else by
    name) and ordered by feature index within one.
    """
    records = list(latest_by_key(correlations).values())
    rank = {name: i for i, name in enumerate(_dictionary_order({r.dictionary for r in records}, dictionary_order))}
    records.sort(key=lambda r: (rank[r.dictionary], _unit_order(r.unit)))
    rows = [{column: getattr(record, column) for column in CORRELATION_COLUMNS} for record in records]
    return _frame(rows, CORRELATION_COLUMNS)


def correlation_summary(
    correlations: list[FeatureCorrelation], threshold: float = 0.3, dictionary_order: list[str] | None = None
) -> pd.DataFrame:
    """Return per dictionary how many features have a defined max neuron correlation and what fraction is at most ``threshold``.

    The same for the max residual-direction correlation; fractions and medians
    are over the features where the correlation is defined (None when none is).
    """
    table = correlation_table(correlations, dictionary_order)
    rows = []
    for name in dict.fromkeys(table["dictionary"]):
        members = table[table["dictionary"] == name]
        neuron = _defined(members["max_neuron_correlation"])
        residual = _defined(members["max_residual_correlation"])
        rows.append(
            {
                "dictionary": name,
                "threshold": threshold,
                "n_features": len(members),
                "n_defined": int(neuron.size),
                "fraction_at_most_threshold": float(np.mean(neuron <= threshold)) if neuron.size else None,
                "median_max_correlation": float(np.median(neuron)) if neuron.size else None,
                "n_residual_defined": int(residual.size),
                "fraction_residual_at_most_threshold": float(np.mean(residual <= threshold)) if residual.size else None,
                "median_max_residual_correlation": float(np.median(residual)) if residual.size else None,
            }
        )
    return _frame(rows, CORRELATION_SUMMARY_COLUMNS)


def table_path(run_dir: Path, name: str) -> Path:
    """Return the CSV path of table ``name`` in a run directory."""
    return Path(run_dir) / "results" / "tables" / f"{name}.csv"


def write_table(run_dir: Path, name: str, df: pd.DataFrame) -> Path:
    """Write ``df`` as CSV to <run>/results/tables/<name>.csv atomically; return the path."""
    path = table_path(run_dir, name)
    atomic_write_bytes(path, df.to_csv(index=False, lineterminator="\n").encode("utf-8"))
    return path


def load_table(run_dir: Path, name: str) -> pd.DataFrame:
    """Return the table written by ``write_table`` (empty cells read back as NaN, text columns as text)."""
    return pd.read_csv(table_path(run_dir, name), dtype={column: str for column in TEXT_COLUMNS}, keep_default_na=False, na_values=[""])
