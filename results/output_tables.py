"""Explanations from activating contexts against explanations from outputs (``evaluation.output_explanations``).

``output_table``: per unit set (and all units pooled), for detection (balanced accuracy and AUC)
and the intervention scorer, the mean over units of the score of each unit's explanation read
from its activating contexts (the run's "real" explanation) and of its output-centric explanation,
each with a 95% bootstrap interval over units, and the paired difference outputs − contexts over
the units that have both. The report draws it as one 2×2 table per set (explanation × scorer).
After Gur-Arieh et al. (2025), who found output-centric descriptions better at predicting what
steering a feature does, and input-centric ones better at predicting where it fires.
"""

import pandas as pd

from results.frames import defined, frame, mean_and_interval
from results.summary import bootstrap_interval
from results.tables import ALL_UNITS, set_order

OUTPUT_METRICS = ("detection", "detection_auc", "intervention")
OUTPUT_TABLE_COLUMNS = [
    "unit_set",
    "metric",
    "contexts_mean",
    "contexts_ci_low",
    "contexts_ci_high",
    "outputs_mean",
    "outputs_ci_low",
    "outputs_ci_high",
    "difference",
    "ci_low",
    "ci_high",
    "n_units",
]


def output_table(unit_table_df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Return contexts- versus outputs-explanation scores per set and metric (empty when no unit has an output score)."""
    rows = []
    present = [m for m in OUTPUT_METRICS if f"{m}_output" in unit_table_df and unit_table_df[f"{m}_output"].notna().any()]
    groups = [(name, unit_table_df[unit_table_df["unit_set"] == name]) for name in set_order(unit_table_df)]
    if len(groups) > 1:
        groups.append((ALL_UNITS, unit_table_df))
    for name, members in groups:
        for metric in present:
            contexts, outputs = defined(members[f"{metric}_real"]), defined(members[f"{metric}_output"])
            paired = members[[f"{metric}_real", f"{metric}_output"]].apply(pd.to_numeric, errors="coerce").dropna()
            differences = (paired[f"{metric}_output"] - paired[f"{metric}_real"]).to_numpy(dtype=float)
            low, high = bootstrap_interval(differences, seed) if differences.size >= 2 else (None, None)
            c_mean, c_low, c_high = mean_and_interval(contexts, seed)
            o_mean, o_low, o_high = mean_and_interval(outputs, seed)
            rows.append(
                {
                    "unit_set": name,
                    "metric": metric,
                    "contexts_mean": c_mean,
                    "contexts_ci_low": c_low,
                    "contexts_ci_high": c_high,
                    "outputs_mean": o_mean,
                    "outputs_ci_low": o_low,
                    "outputs_ci_high": o_high,
                    "difference": float(differences.mean()) if differences.size else None,
                    "ci_low": low,
                    "ci_high": high,
                    "n_units": int(differences.size),
                }
            )
    return frame(rows, OUTPUT_TABLE_COLUMNS)
