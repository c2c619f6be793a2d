"""The results stage of a run: compacted records → tables, plots, HTML report, SAEBench summary, and a terminal summary."""

import shutil
from pathlib import Path
from typing import Any

from harness.progress import Progress
from harness.run.directory import timed_stage
from harness.run.evaluate import RECORD_TYPES
from results.store import compact

CORRELATIONS = "correlations.jsonl"


def results_stage(run_dir: Path, log: Progress) -> dict[str, Any]:
    """Compact the records, write tables, plots, the HTML report and the SAEBench summary; return the summary."""
    from results.build import write_results
    from results.report import write_report
    from results.saebench import write_saebench_summary
    from results.saebench_autointerp import write_autointerp_outputs

    for name, record_type in RECORD_TYPES.items():
        if (run_dir / name).exists():  # a scorer the run does not use leaves no empty file behind
            compact(run_dir / name, record_type)
    shutil.rmtree(run_dir / "results" / "plots", ignore_errors=True)  # plots of units a previous config evaluated
    with timed_stage(run_dir, "results"):
        summary = write_results(run_dir)
        report = write_report(run_dir)
        saebench = write_saebench_summary(run_dir)
        autointerp = write_autointerp_outputs(run_dir)
    log_results(run_dir, log)
    log(f"report: {report}")
    log(f"SAEBench summary: {saebench}")
    if autointerp:
        log(f"SAEBench autointerp results (SAEBench's file layout): {autointerp[0].parent}")
    return summary


# The set means the console shows, in this order, each only when the run has it (results.tables' sets table).
CONSOLE_METRICS = (("rubric", "rubric"), ("pearson", "simulation r"), ("detection", "detection"), ("fuzzing", "fuzzing"),
                   ("saebench", "SAEBench"), ("intervention", "intervention"))  # fmt: skip


def log_results(run_dir: Path, log: Progress) -> None:
    """Log the headline tables: one row per unit set, features vs neurons, feature–neuron correlation."""
    from results.tables import load_table

    def number(value: Any, digits: int = 3) -> str:
        return "—" if value is None or value != value else f"{value:.{digits}f}"

    def interval(row: dict[str, Any], metric: str) -> str:
        low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
        return "" if low is None or low != low else f" [{low:.2f}, {high:.2f}]"

    rows = load_table(run_dir, "sets").to_dict("records")
    # only the scores this run has: a scorer that did not run gets no column
    shown = [(metric, label) for metric, label in CONSOLE_METRICS if any(number(row.get(f"{metric}_mean")) != "—" for row in rows)]
    log("")
    header = "".join(f"  {label + ' (95% CI)':<24}" for _metric, label in shown)
    log(f"{'set':<10} {'size':>6} {'L0':>7} {'var.expl':>8} {'dead':>6} {'units':>5}{header}".rstrip())
    for row in rows:
        size = "" if row["d_sae"] != row["d_sae"] or row["d_sae"] is None else str(int(row["d_sae"]))
        scores = "".join(f"  {number(row[f'{metric}_mean']) + interval(row, metric):<24}" for metric, _label in shown)
        log(
            f"{row['unit_set']:<10} {size:>6} {number(row['l0'], 1):>7} {number(row['variance_explained']):>8}"
            f" {number(row['dead_fraction']):>6} {row['n_units']:>5}{scores}".rstrip()
        )
    for row in load_table(run_dir, "compare").to_dict("records"):
        if not row["n_features"] or not row["n_neurons"]:
            continue  # a metric this run has on one side only (no neurons evaluated, or a scorer that did not run)
        low = "" if row["ci_low"] != row["ci_low"] else f" [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
        log(
            f"features vs neurons: {row['feature_set']}, {row['metric']}: {number(row['feature_mean'])} vs {number(row['neuron_mean'])}"
            f" (n {row['n_features']} vs {row['n_neurons']}), difference {number(row['difference'])}{low},"
            f" Mann–Whitney p {number(row['p_value'])}"
        )
    if (run_dir / CORRELATIONS).exists():
        for row in load_table(run_dir, "correlation_summary").to_dict("records"):
            log(
                f"correlation: {row['dictionary']}: {row['n_defined']} features, max correlation with a neuron ≤ 0.3 for"
                f" {number(row['fraction_at_most_threshold'])}, median {number(row['median_max_correlation'])}"
            )
