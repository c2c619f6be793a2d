"""Judge agreement (``evaluation.judges``): do the run's conclusions depend on which LLM judged?

With two or more judges every judge's records give its own unit table (``judge_unit_tables``). From them:

- ``agreement_table``: per unit set (and all units pooled), scorer metric and pair of judges, the
  Spearman correlation of the units' real-explanation scores under the two judges, and for the rubric
  also Krippendorff's alpha (interval level, ``krippendorff`` package; Krippendorff 2011) of the two
  judges' ratings of the same held-out contexts, each with a 95% percentile bootstrap interval over
  units (2000 resamples, seeded). A figure needs ``MIN_UNITS`` units scored by both judges; below
  that, or when a judge's scores are constant, the row has no value and ``reason`` says why.
- ``conclusion_table``: the headline comparisons (features vs neurons, every pair of dictionary
  sizes) under each judge, with whether each holds, in the same direction, under every judge.
"""

from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from harness.records import EvaluatedUnit, Explanation, FeatureCorrelation, Judgment, NearestFeatures, Simulation
from harness.storage import read_json
from results.comparisons import NEURON_SET, compare_table, size_table
from results.frames import frame, missing_as_none
from results.sentences import MIN_UNITS as DIRECTION_UNITS
from results.store import latest_by_key, read_records
from results.tables import ALL_UNITS, set_order, set_table, unit_table
from scorers.binary import BinaryJudgment
from scorers.intervention import InterventionJudgment

MIN_UNITS = 10  # units per set scored by both judges before an agreement figure is computed
RESAMPLES = 2000
AGREEMENT_METRICS = ("rubric", "rubric_auc", "detection", "detection_auc", "fuzzing", "fuzzing_auc", "intervention")
AGREEMENT_COLUMNS = ["unit_set", "metric", "statistic", "judge_a", "judge_b", "value", "ci_low", "ci_high", "n_units", "n_items", "reason"]
CONCLUSION_COLUMNS = [
    "comparison",
    "metric",
    "judge",
    "difference",
    "ci_low",
    "ci_high",
    "n_first",
    "n_second",
    "direction",
    "holds_under_every_judge",
]


def run_judges(run_dir: Path) -> list[tuple[str, Path]]:
    """Return (label, records directory) of every judge of a run, the primary first (one, the run itself, when unrecorded)."""
    manifest_path = run_dir / "manifest.json"
    entries = read_json(manifest_path).get("judges") if manifest_path.exists() else None
    if not entries:
        return [("judge", run_dir)]
    return [(entry["label"], run_dir / entry["dir"]) for entry in entries]


def judge_records(directory: Path) -> tuple[list[Judgment], list[InterventionJudgment], list[BinaryJudgment]]:
    """Return the last record per key of a judge's judgments, intervention judgments and detection/fuzzing records."""
    binary = [r for name in ("detection.jsonl", "fuzzing.jsonl") for r in read_records(directory / name, BinaryJudgment)]
    return (
        list(latest_by_key(read_records(directory / "judgments.jsonl", Judgment)).values()),
        list(latest_by_key(read_records(directory / "interventions.jsonl", InterventionJudgment)).values()),
        list(latest_by_key(binary).values()),
    )


def judge_unit_tables(
    judges: list[tuple[str, Path]],
    units: list[EvaluatedUnit],
    explanations: list[Explanation],
    simulations: list[Simulation],
    correlations: list[FeatureCorrelation],
    neighbors: list[NearestFeatures],
) -> tuple[dict[str, pd.DataFrame], dict[str, list[Judgment]]]:
    """Return ({judge: its unit table}, {judge: its rubric judgments}); explanations and simulations are the run's."""
    tables, ratings = {}, {}
    for label, directory in judges:
        judgments, interventions, binary = judge_records(directory)
        tables[label] = unit_table(units, explanations, judgments, simulations, correlations, neighbors, interventions, binary)
        ratings[label] = judgments
    return tables, ratings


def _groups(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    groups = [(name, table[table["unit_set"] == name]) for name in set_order(table)]
    return groups + [(ALL_UNITS, table)] if len(groups) > 1 else groups


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(scipy_stats.spearmanr(a, b).statistic)


def _alpha(pairs: np.ndarray) -> float | None:
    """Return Krippendorff's alpha (interval) of a [2, items] array of ratings; None when every rating is the same."""
    import krippendorff

    if pairs.shape[1] < 2 or np.ptp(pairs) == 0:
        return None
    return float(krippendorff.alpha(reliability_data=pairs, level_of_measurement="interval"))


def _bootstrap(statistic: Any, n_units: int, seed: int) -> tuple[float | None, float | None]:
    """Return the 95% percentile interval of ``statistic(unit indices)`` over resampled units (undefined resamples left out)."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n_units, n_units)) for _ in range(RESAMPLES)]
    finite = np.array([v for v in values if v is not None and np.isfinite(v)])
    if finite.size < RESAMPLES // 2:
        return None, None
    return float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))


def agreement_table(tables: dict[str, pd.DataFrame], ratings: dict[str, list[Judgment]], seed: int = 0) -> pd.DataFrame:
    """Return the agreement figures of every pair of judges (empty with one judge); see the module docstring."""
    rows: list[dict[str, Any]] = []
    labels = list(tables)
    for judge_a, judge_b in combinations(labels, 2):
        first, second = tables[judge_a], tables[judge_b]
        for name, members in _groups(first):
            other = second.set_index("unit").reindex(members["unit"])
            for metric in AGREEMENT_METRICS:
                column = f"{metric}_real"
                a = pd.to_numeric(members[column], errors="coerce").to_numpy(dtype=float)
                b = pd.to_numeric(other[column], errors="coerce").to_numpy(dtype=float)
                both = ~np.isnan(a) & ~np.isnan(b)
                if not both.any() and np.isnan(a).all() and np.isnan(b).all():
                    continue  # a scorer the run did not use
                a, b = a[both], b[both]
                row = {"unit_set": name, "metric": metric, "statistic": "spearman", "judge_a": judge_a, "judge_b": judge_b}
                rows.append(row | _figure(a.size, lambda idx, a=a, b=b: _spearman(a[idx], b[idx]), a.size, seed))
                if metric == "rubric":
                    rows.append(
                        row
                        | {"statistic": "krippendorff_alpha"}
                        | _alpha_row(set(members["unit"]), ratings[judge_a], ratings[judge_b], seed)
                    )
    return frame(rows, AGREEMENT_COLUMNS)


def _figure(n_units: int, statistic: Any, n_items: int, seed: int) -> dict[str, Any]:
    """Return value, interval, counts and reason of one agreement figure over ``n_units`` units."""
    if n_units < MIN_UNITS:
        reason = f"{n_units} units scored by both judges, under {MIN_UNITS}"
        return {"value": None, "ci_low": None, "ci_high": None, "n_units": n_units, "n_items": n_items, "reason": reason}
    value = statistic(np.arange(n_units))
    if value is None:
        reason = "a judge gave every unit the same score"
        return {"value": None, "ci_low": None, "ci_high": None, "n_units": n_units, "n_items": n_items, "reason": reason}
    low, high = _bootstrap(statistic, n_units, seed)
    return {"value": value, "ci_low": low, "ci_high": high, "n_units": n_units, "n_items": n_items, "reason": None}


def _alpha_row(members: set[str], first: list[Judgment], second: list[Judgment], seed: int) -> dict[str, Any]:
    """Return Krippendorff's alpha of two judges' rubric ratings of the real explanation on the contexts both rated."""
    other = {(j.unit, j.context_id): j.score for j in second if j.source == "real" and j.score is not None}
    by_unit: dict[str, list[tuple[float, float]]] = {}
    for j in first:
        key = (j.unit, j.context_id)
        if j.unit in members and j.source == "real" and j.score is not None and key in other:
            by_unit.setdefault(j.unit, []).append((j.score, other[key]))
    units = sorted(by_unit)

    def statistic(indices: np.ndarray) -> float | None:
        pairs = [pair for i in indices for pair in by_unit[units[i]]]
        return _alpha(np.array(pairs, dtype=float).T) if pairs else None

    return _figure(len(units), statistic, sum(len(v) for v in by_unit.values()), seed)


def direction(difference: float | None, low: float | None, high: float | None, n_first: int, n_second: int) -> str:
    """Return "higher", "lower" or "not resolved": a direction only when the interval excludes 0 with enough units a side."""
    if difference is None or low is None or high is None or min(n_first, n_second) < DIRECTION_UNITS:
        return "not resolved"
    return "higher" if low > 0 else "lower" if high < 0 else "not resolved"


def conclusion_table(tables: dict[str, pd.DataFrame], dictionary_rows: list[dict], seed: int = 0) -> pd.DataFrame:
    """Return features vs neurons and dictionary-size differences per judge, and whether each holds under every judge.

    A conclusion holds under every judge when each judge resolves the same direction; "not resolved" under
    any judge means it does not.
    """
    rows: list[dict[str, Any]] = []
    for label, table in tables.items():
        for row in compare_table(table, NEURON_SET).to_dict("records"):
            if not (missing_as_none(row["n_features"]) and missing_as_none(row["n_neurons"])):
                continue  # no neurons (or no features) scored: nothing compared
            comparison = f"features ({row['feature_set']}) vs neurons"
            rows.append(_conclusion(comparison, row, label, row["n_features"], row["n_neurons"]))
        for row in size_table(set_table(table, dictionary_rows, seed), table).to_dict("records"):
            comparison = f"{row['larger_set']} vs {row['smaller_set']}"
            rows.append(_conclusion(comparison, row, label, row["n_larger"], row["n_smaller"]))
    df = frame(rows, CONCLUSION_COLUMNS)
    if not df.empty:
        agreed = df.groupby(["comparison", "metric"])["direction"].agg(lambda d: len(set(d)) == 1 and d.iloc[0] != "not resolved")
        df["holds_under_every_judge"] = [bool(agreed[(c, m)]) for c, m in zip(df["comparison"], df["metric"], strict=True)]
    return df


def _conclusion(comparison: str, row: dict[str, Any], judge: str, n_first: Any, n_second: Any) -> dict[str, Any]:
    values = {key: missing_as_none(row[key]) for key in ("difference", "ci_low", "ci_high")}
    n_first, n_second = int(missing_as_none(n_first) or 0), int(missing_as_none(n_second) or 0)
    return {
        "comparison": comparison,
        "metric": row["metric"],
        "judge": judge,
        **values,
        "n_first": n_first,
        "n_second": n_second,
        "direction": direction(values["difference"], values["ci_low"], values["ci_high"], n_first, n_second),
        "holds_under_every_judge": None,
    }
