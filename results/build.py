"""Build a run's result tables and figures from its record files.

Reads <run>/units.jsonl, explanations.jsonl, judgments.jsonl,
simulations.jsonl, correlations.jsonl, neighbors.jsonl and dictionaries.json
(the last three may be absent), keeps the last record per key, and writes CSV
tables to <run>/results/tables/ and PNG figures to <run>/results/plots/. The
same records give byte-identical CSVs.
"""

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from harness.records import EvaluatedUnit, Explanation, FeatureCorrelation, Judgment, NearestFeatures, Simulation
from harness.storage import read_json
from results.agreement import agreement_table, conclusion_table, judge_unit_tables, run_judges
from results.binary_tables import binary_level_table
from results.comparisons import NEURON_SET, compare_table, size_table
from results.correlation_tables import correlation_summary, correlation_table
from results.output_tables import output_table
from results.plots import plot_max_correlation, plot_metrics_vs_size, plot_score_distributions, plot_specificity
from results.store import latest_by_key, read_records
from results.tables import (
    SET_METRICS,
    SPECIFICITY_COLUMNS,
    control_table,
    set_means_table,
    set_order,
    set_table,
    specificity_table,
    unit_table,
    write_table,
)
from scorers.binary import BinaryJudgment
from scorers.intervention import InterventionJudgment
from scorers.saebench import SaebenchJudgment

CORRELATION_THRESHOLD = 0.3

T = TypeVar("T")


def safe_name(unit: str) -> str:
    """Return a unit name usable in a file name ("/" and "." replaced by "_")."""
    return unit.replace("/", "_").replace(".", "_")


def _plain(value: Any) -> Any:
    """Return a table cell as a JSON value: numpy scalars as Python numbers, NaN and missing as None."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Return a table's rows as JSON-ready dicts."""
    return [{key: _plain(value) for key, value in row.items()} for row in df.astype(object).to_dict("records")]


def _interval(row: dict[str, Any], metric: str) -> list[float] | None:
    """Return [low, high] of a metric's interval in a set-table row, or None."""
    low, high = row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
    return None if low is None or high is None else [low, high]


def _set_summary(row: dict[str, Any]) -> dict[str, Any]:
    """Return a set-table row as the summary gives it: name, kind, units, and each metric's mean and [low, high]."""
    summary = {"unit_set": row["unit_set"], "kind": row["kind"], "n_units": row["n_units"]}
    for metric in SET_METRICS:
        summary[f"{metric}_mean"] = row[f"{metric}_mean"]
        summary[f"{metric}_ci"] = _interval(row, metric)
    return summary


def _short(text: str | float | None, limit: int = 70) -> str:
    """Return an explanation cut to ``limit`` characters for a figure title (a failed explanation is NaN in the table)."""
    if not isinstance(text, str) or not text:
        return "(no explanation)"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _latest(path: Path, record_type: type[T]) -> list[T]:
    """Return the last record per key of a record file (none when the file is absent)."""
    return list(latest_by_key(read_records(path, record_type)).values())


def write_results(run_dir: Path, levels: int = 10) -> dict[str, Any]:
    """Write the run's tables and figures; return a JSON-ready summary (paths and headline numbers, None for missing)."""
    run_dir = Path(run_dir)
    units = _latest(run_dir / "units.jsonl", EvaluatedUnit)
    explanations = _latest(run_dir / "explanations.jsonl", Explanation)
    judgments = _latest(run_dir / "judgments.jsonl", Judgment)
    simulations = _latest(run_dir / "simulations.jsonl", Simulation)
    correlations = _latest(run_dir / "correlations.jsonl", FeatureCorrelation)
    neighbors = _latest(run_dir / "neighbors.jsonl", NearestFeatures)
    interventions = _latest(run_dir / "interventions.jsonl", InterventionJudgment)
    classifications = _latest(run_dir / "detection.jsonl", BinaryJudgment) + _latest(run_dir / "fuzzing.jsonl", BinaryJudgment)
    dictionaries_path = run_dir / "dictionaries.json"
    dictionary_rows: list[dict] = read_json(dictionaries_path) if dictionaries_path.exists() else []
    dictionary_order = [row["dictionary"] for row in sorted(dictionary_rows, key=lambda row: (row.get("d_sae") or 0, row["dictionary"]))]

    saebench = _latest(run_dir / "saebench.jsonl", SaebenchJudgment)
    units_df = unit_table(units, explanations, judgments, simulations, correlations, neighbors, interventions, classifications, saebench)
    sets_df = set_table(units_df, dictionary_rows)
    set_means_df = set_means_table(units_df)
    compare_df = compare_table(units_df, NEURON_SET)
    sizes_df = size_table(sets_df, units_df)
    controls_df = control_table(units_df)
    correlations_df = correlation_table(correlations, dictionary_order)
    correlation_summary_df = correlation_summary(correlations, CORRELATION_THRESHOLD, dictionary_order)

    evaluated_sets = [name for name in set_order(units_df, dictionary_rows, NEURON_SET) if name in set(units_df["unit_set"])]
    pooled = {name: specificity_table(judgments, unit_set=name, units=units, levels=levels) for name in evaluated_sets}
    by_unit: dict[str, list[Judgment]] = defaultdict(list)
    for judgment in judgments:
        by_unit[judgment.unit].append(judgment)
    per_unit = {unit: specificity_table(by_unit[unit], unit=unit, levels=levels) for unit in units_df["unit"]}
    levels_df = binary_level_table(classifications, units, levels)
    pooled_df = _stack(pooled, "unit_set")
    per_unit_df = _stack(per_unit, "unit")

    judges = run_judges(run_dir)
    agreement_tables: dict[str, pd.DataFrame] = {}
    if len(judges) > 1:
        by_judge, ratings = judge_unit_tables(judges, units, explanations, simulations, correlations, neighbors)
        agreement_tables = {
            "units_by_judge": pd.concat([table.assign(judge=label)[["judge", *table.columns]] for label, table in by_judge.items()]),
            "agreement": agreement_table(by_judge, ratings),
            "judge_conclusions": conclusion_table(by_judge, dictionary_rows),
        }
    tables = {
        "units": units_df,
        "sets": sets_df,
        "set_means": set_means_df,
        "compare": compare_df,
        "sizes": sizes_df,
        "controls": controls_df,
        "correlations": correlations_df,
        "correlation_summary": correlation_summary_df,
        "specificity_pooled": pooled_df,
        "specificity_units": per_unit_df,
        "binary_levels": levels_df,
        **({"output_centric": outputs_df} if not (outputs_df := output_table(units_df)).empty else {}),
        **agreement_tables,
    }
    table_paths = {name: str(write_table(run_dir, name, df)) for name, df in tables.items()}

    plots_dir = run_dir / "results" / "plots"
    plot_paths: dict[str, str] = {}
    for name, table in pooled.items():
        n_units = int((units_df["unit_set"] == name).sum())
        title = f"Specificity vs activation: {name} ({n_units} units, real explanations)"
        accuracy = levels_df[(levels_df["unit_set"] == name) & (levels_df["source"] == "real")]
        plot_paths[f"specificity_{name}"] = str(plot_specificity(table, title, plots_dir / f"specificity_{name}.png", accuracy))
    explanation_of = dict(zip(units_df["unit"], units_df["explanation"], strict=True))
    for unit, table in per_unit.items():
        stem = f"specificity_unit_{safe_name(unit)}"
        title = f"{unit}: {_short(explanation_of.get(unit))}"
        plot_paths[stem] = str(plot_specificity(table, title, plots_dir / f"{stem}.png"))
    is_neuron = units_df["unit_set"] == NEURON_SET
    if is_neuron.any() and not is_neuron.all():
        plot_paths["features_vs_neurons"] = str(plot_score_distributions(units_df, plots_dir / "features_vs_neurons.png", NEURON_SET))
    if not correlations_df.empty:
        plot_paths["max_correlation"] = str(plot_max_correlation(correlations_df, plots_dir / "max_correlation.png", CORRELATION_THRESHOLD))
    plot_paths["metrics_vs_size"] = str(plot_metrics_vs_size(sets_df, plots_dir / "metrics_vs_size.png"))

    set_rows = _rows(sets_df)
    return {
        "run_dir": str(run_dir),
        "tables": table_paths,
        "plots": plot_paths,
        "sets": [_set_summary(row) for row in set_rows],
        "compare": _rows(compare_df),
        "sizes": _rows(sizes_df),
        "controls": _rows(controls_df),
        "max_correlation": {
            "threshold": CORRELATION_THRESHOLD,
            "fraction_at_most_threshold": {row["dictionary"]: row["fraction_at_most_threshold"] for row in _rows(correlation_summary_df)},
        },
    }


def _stack(tables: dict[str, pd.DataFrame], column: str) -> pd.DataFrame:
    """Return the specificity tables stacked with their key in a leading ``column``."""
    parts = [table.assign(**{column: key})[[column, *SPECIFICITY_COLUMNS]] for key, table in tables.items() if not table.empty]
    if not parts:
        return pd.DataFrame(columns=[column, *SPECIFICITY_COLUMNS])
    return pd.concat(parts, ignore_index=True)
