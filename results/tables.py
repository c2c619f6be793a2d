"""Result tables as pandas DataFrames: specificity by activation level, per unit, per set, and real versus controls.

Every function takes records (or a table built from them) and returns a
DataFrame with fixed columns, also when there is nothing to put in it. Reruns
append records, so the last record per key wins wherever records are read.
Missing values are None (NaN in float columns); tables round-trip through CSV
with ``write_table`` and ``load_table``. The comparisons between groups of units
are in ``results.comparisons``, the correlation tables in ``results.correlation_tables``.
"""

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from harness.records import EvaluatedUnit, Explanation, FeatureCorrelation, Judgment, NearestFeatures, Simulation
from harness.storage import atomic_write_bytes
from results.correlation_tables import correlation_summary as correlation_summary  # harness.api reads it from here
from results.frames import defined, frame, mean_and_interval, missing_as_none
from results.ranking import NOT_JUDGED, RankScore, unit_rankings
from results.store import latest_by_key
from results.summary import control_summary, unit_scores
from scorers.binary import BinaryJudgment, binary_summary
from scorers.intervention import InterventionJudgment, intervention_summary
from scorers.saebench import SaebenchJudgment

SCORES = (0, 1, 2, 3)
SOURCES = ("real", "shuffled", "token_stats")
METRICS = ("rubric", "pearson")  # means of the judge's and the simulator's scores
CONTROLS = ("shuffled", "token_stats")
ALL_UNITS = "all units"  # controls.csv: the rows that pool every evaluated unit of the run
CONTROL_METRICS = (*METRICS, "rubric_auc")  # paired real versus control
# Scored only when the run's evaluation.scorers names them: a table lists them when some unit has a value.
# intervention: fraction of (prompt, strength) pairs where the judge picks the steered continuation; detection and
# fuzzing: balanced accuracy of the judge's Yes/No, and their _auc the AUC of its P(yes) (scorers.binary)
# saebench: SAEBench's autointerp detection accuracy (scorers.saebench; real and shuffled only)
OPTIONAL_METRICS = ("intervention", "detection", "detection_auc", "fuzzing", "fuzzing_auc", "saebench")
BINARY_SCORERS = ("detection", "fuzzing")
# the output-centric explanation's scores (harness.steering.outputs): detection and the intervention scorer
OUTPUT_COLUMNS = ("detection_output", "detection_auc_output", "intervention_output")
SET_METRICS = (*METRICS, "rubric_auc", "level_spearman")  # real-explanation means per set
REASONS = {"rubric_auc": SOURCES, "level_spearman": ("real",)}  # rank metrics: per source, a value or why there is none

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
    *(f"rubric_auc_{source}" for source in SOURCES),
    *(f"rubric_auc_reason_{source}" for source in SOURCES),
    *(f"intervention_{source}" for source in SOURCES),
    "intervention_kl",
    *(f"{scorer}{part}_{source}" for scorer in BINARY_SCORERS for part in ("", "_auc", "_f1", "_reason") for source in SOURCES),
    *OUTPUT_COLUMNS,
    *(f"saebench_{source}" for source in SOURCES),
    "level_spearman_real",
    "level_spearman_reason_real",
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
    *(f"{metric}_{part}" for metric in (*SET_METRICS, *OPTIONAL_METRICS) for part in ("mean", "ci_low", "ci_high")),
]
SET_MEANS_COLUMNS = ["unit_set", "metric", "source", "n_units", "n_missing", "mean", "ci_low", "ci_high", "missing_reasons"]
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
    *(f"rubric_auc_reason_{source}" for source in SOURCES),
    *(f"{scorer}_reason_{source}" for scorer in BINARY_SCORERS for source in SOURCES),
    "level_spearman_reason_real",
    "source",
    "missing_reasons",
    "smaller_set",
    "larger_set",
)


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
    return frame(rows, SPECIFICITY_COLUMNS)


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
    interventions: list[InterventionJudgment] = (),
    classifications: list[BinaryJudgment] = (),
    saebench: list[SaebenchJudgment] = (),
) -> pd.DataFrame:
    """Return one row per evaluated unit: its facts, explanations, scores per source, failures and neighbours.

    Scores per source: the mean rubric score, the simulation Pearson r, and the rank-based
    ``rubric_auc`` (firing versus non-firing contexts, ``results.ranking``) with
    ``rubric_auc_reason`` saying why it is missing; for the real explanation also
    ``level_spearman_real``, the Spearman correlation of rubric score with activation level,
    with its ``level_spearman_reason_real``; with the intervention scorer, ``intervention_<source>``
    (the fraction of steering pairs judged right, ``scorers.intervention``) and ``intervention_kl``
    (the mean KL of the unit's steerings); with the detection and fuzzing scorers, ``detection_<source>`` and
    ``fuzzing_<source>`` (balanced accuracy), ``detection_auc_<source>``, ``fuzzing_auc_<source>`` (AUC of P(yes))
    and ``detection_f1_<source>``, ``fuzzing_f1_<source>`` (F1 of "yes" on the right texts; ``scorers.binary``), with
    ``detection_reason_<source>``, ``fuzzing_reason_<source>`` saying why they are missing.
    Rows are ordered features first (by dictionary size, then set name, layer and index), then neurons.
    ``n_judgments`` counts the unit's judgment records of every source, failures included; ``n_failures`` counts its judgment and
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
    intervened: dict[tuple[str, str], list[InterventionJudgment]] = defaultdict(list)
    for judgment in latest_by_key(list(interventions)).values():
        intervened[(judgment.unit, judgment.source)].append(judgment)
    classified: dict[tuple[str, str, str], list[BinaryJudgment]] = defaultdict(list)
    for record in latest_by_key(list(classifications)).values():
        classified[(record.scorer, record.unit, record.source)].append(record)
    saebench_scores = {(r.unit, r.source): r.score for r in latest_by_key(list(saebench)).values()}
    rankings = unit_rankings(judged)
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
        row.update(_rank_cells(unit.unit, rankings))
        for source in SOURCES:
            row[f"intervention_{source}"] = intervention_summary(intervened.get((unit.unit, source), []))["fraction"]
        row["intervention_kl"] = intervention_summary(intervened.get((unit.unit, "real"), []))["mean_kl"]
        for scorer in BINARY_SCORERS:
            for source in SOURCES:
                summary = binary_summary(classified.get((scorer, unit.unit, source), []))
                row[f"{scorer}_{source}"], row[f"{scorer}_auc_{source}"] = summary["balanced_accuracy"], summary["auc"]
                row[f"{scorer}_f1_{source}"], row[f"{scorer}_reason_{source}"] = summary["f1"], summary["reason"]
        output = binary_summary(classified.get(("detection", unit.unit, "output"), []))
        row["detection_output"], row["detection_auc_output"] = output["balanced_accuracy"], output["auc"]
        row["intervention_output"] = intervention_summary(intervened.get((unit.unit, "output"), []))["fraction"]
        for source in SOURCES:
            row[f"saebench_{source}"] = saebench_scores.get((unit.unit, source))
        row["n_judgments"] = n_judgments[unit.unit]
        row["n_failures"] = n_failures[unit.unit]
        row["max_neuron_correlation"] = correlation.max_neuron_correlation if correlation is not None else None
        row["neuron"] = correlation.neuron if correlation is not None else None
        row["nearest_larger"] = _nearest_larger(unit, neighbor_records, set_sizes)
        rows.append(row)
    return frame(rows, UNIT_COLUMNS)


def _rank_cells(unit: str, rankings: dict[tuple[str, str], dict[str, RankScore]]) -> dict[str, Any]:
    """Return a unit's rank-metric cells: ``<metric>_<source>`` and ``<metric>_reason_<source>`` (None when the value exists)."""
    cells: dict[str, Any] = {}
    for metric, sources in REASONS.items():
        for source in sources:
            score = rankings.get((unit, source), {}).get(metric, RankScore(None, NOT_JUDGED))
            cells[f"{metric}_{source}"] = score.value
            cells[f"{metric}_reason_{source}"] = score.reason
    return cells


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
    set, then "neurons". Metrics: ``SET_METRICS`` of the real explanation (rubric, pearson,
    rubric_auc, level_spearman). Means are over units with the metric; the 95% bootstrap
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
        for metric in (*SET_METRICS, *OPTIONAL_METRICS):
            mean, low, high = mean_and_interval(defined(members[f"{metric}_real"]), seed)
            row.update({f"{metric}_mean": mean, f"{metric}_ci_low": low, f"{metric}_ci_high": high})
        rows.append(row)
    table = frame(rows, SET_COLUMNS)
    table["d_sae"] = table["d_sae"].astype("Int64")
    for metric in OPTIONAL_METRICS:  # a scorer the run did not use: missing values as a CSV reads them back
        for part in ("mean", "ci_low", "ci_high"):
            table[f"{metric}_{part}"] = pd.to_numeric(table[f"{metric}_{part}"]).astype(float)
    return table


def control_table(unit_table_df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Return real versus each control (shuffled, token_stats) per unit set and metric, paired over units.

    With more than one set, the rows of unit set ``ALL_UNITS`` pool every evaluated unit (features
    and neurons alike): the figure a run's signal check reads.

    Metrics: ``CONTROL_METRICS`` (rubric, pearson, rubric_auc). Only units with both scores
    enter (``n_units``); a constant simulation prediction scores 0 on either side
    (``results.summary.paired_value``), counted in ``n_constant_real`` and
    ``n_constant_control``. The interval is the 95% bootstrap interval of the mean paired
    difference (None below 2 units).
    """
    rows = []
    metrics = scored_metrics(unit_table_df, CONTROL_METRICS)
    groups = [(name, unit_table_df[unit_table_df["unit_set"] == name]) for name in set_order(unit_table_df)]
    if len(groups) > 1:
        groups.append((ALL_UNITS, unit_table_df))
    for name, members in groups:
        scores: dict[tuple[str, str], dict[str, float | None]] = {}
        for record in members.to_dict("records"):
            for source in SOURCES:
                constant = missing_as_none(record.get(f"constant_prediction_{source}"))
                scores[(record["unit"], source)] = {metric: missing_as_none(record[f"{metric}_{source}"]) for metric in metrics} | {
                    "constant_prediction": bool(constant) and str(constant).lower() != "false"
                }
        for metric in metrics:
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
    return frame(rows, CONTROL_COLUMNS)


def _missing_reasons(members: pd.DataFrame, metric: str, source: str) -> str | None:
    """Return "2 no firing context judged; 1 not judged": how many units of ``members`` lack the metric, by reason."""
    column = f"{metric}_reason_{source}"
    scorer = metric.split("_")[0]
    if column not in members and scorer in BINARY_SCORERS:
        column = f"{scorer}_reason_{source}"  # a binary scorer's AUC and F1 are missing for its balanced accuracy's reason
    if column not in members:
        return None
    counts = members[column].dropna().value_counts()
    return "; ".join(f"{count} {reason}" for reason, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))) or None


def set_means_table(unit_table_df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Return per unit set, metric and explanation source the mean over units with its 95% bootstrap interval over units.

    In: the unit table. Out: rows for rubric, pearson and rubric_auc of every source and
    level_spearman of the real explanation; ``n_units`` have the value, ``n_missing`` do not,
    and for the rank metrics ``missing_reasons`` counts why. The interval is None below 2 units.
    """
    rows = []
    for name in set_order(unit_table_df):
        members = unit_table_df[unit_table_df["unit_set"] == name]
        for metric in scored_metrics(unit_table_df, SET_METRICS):
            for source in REASONS.get(metric, SOURCES):
                values = defined(members[f"{metric}_{source}"])
                mean, low, high = mean_and_interval(values, seed)
                rows.append(
                    {
                        "unit_set": name,
                        "metric": metric,
                        "source": source,
                        "n_units": int(values.size),
                        "n_missing": len(members) - int(values.size),
                        "mean": mean,
                        "ci_low": low,
                        "ci_high": high,
                        "missing_reasons": _missing_reasons(members, metric, source),
                    }
                )
    return frame(rows, SET_MEANS_COLUMNS)


def scored_metrics(unit_table_df: pd.DataFrame, metrics: tuple[str, ...]) -> tuple[str, ...]:
    """Return ``metrics`` followed by the ``OPTIONAL_METRICS`` some unit of the table has a real-explanation value for."""
    optional = [m for m in OPTIONAL_METRICS if f"{m}_real" in unit_table_df and unit_table_df[f"{m}_real"].notna().any()]
    return (*metrics, *optional)


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
