"""The report's sentences, written from measured numbers only: no conclusion is fixed in advance.

Every function takes table rows (dicts, None for a missing value) and returns plain text; the
report escapes it. A difference is given a direction only when its 95% interval excludes the
reference (0 for a difference, 0.5 for an AUC) and it rests on at least ``MIN_UNITS`` units on each
side; otherwise the sentence says it is not resolved. A percentile bootstrap over 2–4 units has at
most 35 distinct resamples and its interval only spans the few values there are (two units with
equal scores give [x, x]), so it cannot carry a claim.
"""

from typing import Any

NOT_RESOLVED = "not resolved"
MIN_UNITS = 5  # units per side below which a bootstrap interval over units gives no direction
METRIC_NAMES = {
    "rubric": "rubric score (0–3)",
    "pearson": "simulation correlation (Pearson r)",
    "rubric_auc": "judge AUC (firing vs non-firing contexts)",
    "level_spearman": "Spearman correlation of rubric score with activation level",
    "intervention": "intervention score (fraction of steering pairs judged right)",
    "detection": "detection balanced accuracy (unmarked windows: fires or not)",
    "detection_auc": "detection AUC (P(yes), firing vs non-firing windows)",
    "fuzzing": "fuzzing balanced accuracy (marks on firing vs random tokens)",
    "fuzzing_auc": "fuzzing AUC (P(yes), right vs wrong marks)",
    "saebench": "SAEBench detection accuracy (14 windows per unit)",
}
SOURCE_NAMES = {"real": "real", "shuffled": "shuffled", "token_stats": "token-statistics"}


def fmt(value: float | None, digits: int = 2, signed: bool = False) -> str:
    """Return ``value`` with ``digits`` decimals (a sign when ``signed``), or "—" when missing."""
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def units(n: int | None) -> str:
    """Return "1 unit" / "3 units" ("? units" when unknown)."""
    if n is None:
        return "? units"
    return f"{int(n)} unit" if int(n) == 1 else f"{int(n)} units"


def interval(low: float | None, high: float | None, signed: bool = False) -> str | None:
    """Return "95% CI [low, high]", or None when the interval is missing."""
    if low is None or high is None:
        return None
    return f"95% CI [{fmt(low, signed=signed)}, {fmt(high, signed=signed)}]"


def estimate(mean: float | None, low: float | None, high: float | None, n: int | None = None) -> str:
    """Return "1.83 (95% CI [1.67, 2.00], 2 units)"; without an interval "1.83 (1 unit, no interval)"; "not measured" without a mean."""
    if mean is None:
        return "not measured" if n is None else f"not measured ({units(n)} with a value)"
    bounds = interval(low, high)
    count = f", {units(n)}" if n is not None else ""
    if bounds is None:
        return f"{fmt(mean)} ({units(n) + ', ' if n is not None else ''}no interval)"
    return f"{fmt(mean)} ({bounds}{count})"


def verdict(
    value: float | None,
    low: float | None,
    high: float | None,
    above: str,
    below: str,
    reference: float = 0.0,
    n: int | None = None,
) -> str:
    """Return a measured value with its interval and what it says against ``reference``.

    "+0.80 (95% CI [+0.40, +1.20]): {above}" when the interval lies above the reference, "…: {below}" when
    below; "not resolved" when the interval contains the reference or is missing, or when ``n`` (the
    fewest units on a side) is below ``MIN_UNITS``; "not measured" without a value.
    """
    signed = reference == 0.0
    if value is None:
        return "not measured"
    shown = fmt(value, signed=signed)
    bounds = interval(low, high, signed=signed)
    if bounds is None or low is None or high is None:
        return f"{shown} with no interval (fewer than 2 units): {NOT_RESOLVED}"
    if n is not None and n < MIN_UNITS:
        return f"{shown} ({bounds}): {NOT_RESOLVED}, {units(n)} are too few for an interval over units to say (at least {MIN_UNITS})"
    if low > reference:
        return f"{shown} ({bounds}): {above}"
    if high < reference:
        return f"{shown} ({bounds}): {below}"
    return f"{shown} ({bounds}): {NOT_RESOLVED}, the interval contains {reference:g}"


def set_estimate(row: dict[str, Any] | None, metric: str) -> str:
    """Return a set-table row's real-explanation mean of ``metric`` with its interval."""
    if row is None:
        return "not measured"
    return estimate(row.get(f"{metric}_mean"), row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high"))


def neuron_sentence(row: dict[str, Any], feature_set: dict[str, Any] | None, neurons: dict[str, Any] | None) -> str:
    """Return one features-versus-neurons sentence from a compare-table row and the two set-table rows."""
    metric = row["metric"]
    means = (
        f"{row['feature_set']} {set_estimate(feature_set, metric)} over {units(row['n_features'])} vs neurons "
        f"{set_estimate(neurons, metric)} over {units(row['n_neurons'])}"
        if feature_set is not None
        else f"{row['feature_set']} {fmt(row['feature_mean'])} over {units(row['n_features'])} vs neurons "
        f"{fmt(row['neuron_mean'])} over {units(row['n_neurons'])}"
    )
    return f"Real-explanation {METRIC_NAMES[metric]}: {means}; difference {_neuron_difference(row)}."


def _neuron_difference(row: dict[str, Any]) -> str:
    """Return the verdict on a compare-table row's features-minus-neurons difference."""
    return verdict(
        row["difference"],
        row["ci_low"],
        row["ci_high"],
        "features score higher than neurons",
        "neurons score higher than features",
        n=_fewest(row, "n_features", "n_neurons"),
    )


def pooled_neuron_sentence(rows: dict[str, dict[str, Any]], n_sets: int) -> str:
    """Return the headline features-versus-neurons sentence from the pooled compare rows ({metric: row})."""
    parts = []
    for metric, row in rows.items():
        parts.append(f"{METRIC_NAMES[metric]} {_neuron_difference(row)}")
    scope = "the dictionary's features" if n_sets == 1 else f"the features of the {n_sets} dictionaries pooled"
    return f"Real-explanation scores, {scope} minus the neurons: " + "; ".join(parts) + "."


def size_sentence(rows: dict[str, dict[str, Any]]) -> str:
    """Return the headline size sentence from the largest-versus-smallest size-table rows ({metric: row})."""
    first = next(iter(rows.values()))
    parts = []
    for metric, row in rows.items():
        difference = verdict(
            row["difference"],
            row["ci_low"],
            row["ci_high"],
            "the larger dictionary scores higher",
            "the larger dictionary scores lower",
            n=_fewest(row, "n_smaller", "n_larger"),
        )
        parts.append(
            f"the real-explanation {METRIC_NAMES[metric]} goes from {fmt(row['smaller_mean'])} to {fmt(row['larger_mean'])}, "
            f"difference {difference}"
        )
    return (
        f"From the smallest dictionary ({first['smaller_set']}, {int(first['smaller_d_sae'])} features) to the largest "
        f"({first['larger_set']}, {int(first['larger_d_sae'])} features): " + "; ".join(parts) + "."
    )


def dictionary_sentence(row: dict[str, Any], metrics: tuple[str, ...]) -> str:
    """Return one dictionary's statistics and real-explanation means from its set-table row."""
    stats = (
        f"L0 {fmt(row.get('l0'), 1)}, variance explained {fmt(row.get('variance_explained'), 3)}, "
        f"dead fraction {fmt(row.get('dead_fraction'), 3)}"
    )
    means = "; ".join(f"{METRIC_NAMES[metric]} {set_estimate(row, metric)}" for metric in metrics)
    return f"{row['unit_set']} ({int(row['d_sae'])} features, {units(row.get('n_units'))}): {stats}; {means}."


def missing_clause(row: dict[str, Any]) -> str:
    """Return " (1 unit without a value: 1 constant rubric score)" from a set-means row, or "" when none is missing."""
    missing = row.get("n_missing") or 0
    if not missing:
        return ""
    reasons = f": {row['missing_reasons']}" if row.get("missing_reasons") else ""
    return f" ({units(missing)} without a value{reasons})"


def specificity_sentence(row: dict[str, Any]) -> str:
    """Return the activation-level sentence of one unit set from its set-means row of ``level_spearman``."""
    trend = verdict(
        row["mean"],
        row["ci_low"],
        row["ci_high"],
        "the rubric score rises with activation level (the explanation fits strong activations best)",
        "the rubric score falls as activation rises",
        n=row.get("n_units"),
    )
    return (
        f"{row['unit_set']}, over {units(row['n_units'])}{missing_clause(row)}: the mean per-unit Spearman correlation of the real "
        f"explanation's rubric score with activation level is {trend}."
    )


def source_means(rows: dict[str, dict[str, Any]]) -> str:
    """Return "real 1.83 (95% CI […], 2 units), shuffled …" from set-means rows ({source: row})."""
    return ", ".join(
        f"{SOURCE_NAMES[source]} {estimate(row['mean'], row['ci_low'], row['ci_high'], row['n_units'])}" for source, row in rows.items()
    )


def control_sentence(unit_set: str, metric: str, means: dict[str, dict[str, Any]], controls: dict[str, dict[str, Any]]) -> str:
    """Return one unit set's real-versus-controls sentence for ``metric`` from set-means rows and control-table rows."""
    parts = [f"{unit_set}, {METRIC_NAMES[metric]}: {source_means(means) or 'not measured'}"]
    for control, row in controls.items():
        name = SOURCE_NAMES[control]
        difference = verdict(
            row["difference"],
            row["ci_low"],
            row["ci_high"],
            f"real explanations score higher than {name} ones",
            f"{name} explanations score higher than real ones",
            n=row.get("n_units"),
        )
        parts.append(f"real − {name}, paired over {units(row['n_units'])}: {difference}")
    return "; ".join(parts) + "."


def auc_chance_sentence(unit_set: str, row: dict[str, Any]) -> str:
    """Return whether the judge's AUC on real explanations is resolved from chance (0.5), from a set-means row."""
    ranking = verdict(
        row["mean"],
        row["ci_low"],
        row["ci_high"],
        "the judge ranks firing contexts above non-firing ones",
        "the judge ranks non-firing contexts above firing ones",
        reference=0.5,
        n=row.get("n_units"),
    )
    return f"{unit_set}, over {units(row['n_units'])}{missing_clause(row)}: the mean judge AUC of the real explanation is {ranking}."


def pooled_control_sentence(metric: str, row: dict[str, Any]) -> str:
    """Return real − shuffled on ``metric`` pooled over every unit of the run, from its control-table row."""
    difference = verdict(
        row["difference"],
        row["ci_low"],
        row["ci_high"],
        "real explanations score higher",
        "shuffled explanations score higher",
        n=row.get("n_units"),
    )
    return f"Pooled over all {units(row['n_units'])}, {METRIC_NAMES[metric]}, real − shuffled: {difference}."


def tally_sentence(rows: list[dict[str, Any]], metric: str, control: str) -> str:
    """Return how many unit sets resolve real − ``control`` on ``metric`` above 0, below 0, or not at all."""
    enough = [row for row in rows if row.get("n_units") is None or row["n_units"] >= MIN_UNITS]
    above = sum(1 for row in enough if row["ci_low"] is not None and row["ci_low"] > 0)
    below = sum(1 for row in enough if row["ci_high"] is not None and row["ci_high"] < 0)
    return (
        f"Real minus {SOURCE_NAMES[control]} explanations on the {METRIC_NAMES[metric]}: the 95% interval lies above 0 in "
        f"{above} of {len(rows)} unit sets, below 0 in {below}, and the difference is {NOT_RESOLVED} in {len(rows) - above - below}."
    )


def _fewest(row: dict[str, Any], *columns: str) -> int | None:
    """Return the smallest of a row's unit counts ``columns`` (None when the row has none of them)."""
    counts = [int(row[column]) for column in columns if row.get(column) is not None]
    return min(counts) if counts else None
