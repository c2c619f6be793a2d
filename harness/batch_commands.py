"""Python functions behind ``monoscope run``, ``demo``, ``compare``, ``correlate`` and ``report`` (usable from notebooks)."""

from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.batch import build_foundation, check_same_foundation, correlation_stage, preflight, run_evaluation
from harness.config import DEFAULT_CONFIG, RunConfig, load_config
from harness.errors import MonoscopeError
from harness.pipeline import Progress
from harness.records import EvaluatedUnit, FeatureCorrelation
from harness.reporting import results_stage
from harness.runs import prepare_run_directory
from results.store import read_records


def run_demo(run_dir: Path = Path("runs/demo"), tokens: int | None = None, log: Progress = print) -> dict[str, Any]:
    """Run the bundled default config (embedded model, corpus, three dictionaries, neurons) and return its summary."""
    config = load_config(DEFAULT_CONFIG)
    if tokens is not None:
        config = replace(config, foundation=replace(config.foundation, tokens=tokens))
    return run_evaluation(config, run_dir, log=log)


def compare_features_and_neurons(
    config: RunConfig,
    run_dir: Path | None = None,
    dictionary: str | None = None,
    units: int | None = None,
    match_density: bool = False,
    log: Progress = print,
) -> list[dict[str, Any]]:
    """Evaluate ``units`` random alive features of ``dictionary`` (default: every dictionary) and as many neurons;
    return the features-vs-neurons rows (means, Mann–Whitney U, bootstrap 95% interval of the difference) per scorer."""
    evaluation = config.evaluation
    if dictionary is not None:
        evaluation = replace(evaluation, dictionaries=(dictionary,))
    if units is not None:
        evaluation = replace(evaluation, units_per_dictionary=units)
    neurons = replace(config.neurons, enabled=True, match_density=dictionary if match_density else None)
    if match_density and dictionary is None:
        raise MonoscopeError("--match-density needs --dictionary", "name the dictionary whose features the neurons should match")
    summary = run_evaluation(replace(config, evaluation=evaluation, neurons=neurons), run_dir, log=log)
    rows = summary.get("compare", [])
    for row in rows:
        log(_compare_line(row))
    return rows


def correlate(
    config: RunConfig, run_dir: Path | None = None, features: int | None = -1, tokens: int | None = -1, log: Progress = print
) -> Path:
    """Compute the feature–neuron correlations of the config's dictionaries; return the path of correlations.jsonl.

    ``features``/``tokens`` override the config (None = all); -1 keeps the config's value.
    """
    settings = config.correlation
    settings = replace(
        settings,
        enabled=True,
        features=settings.features if features == -1 else features,
        tokens=settings.tokens if tokens == -1 else tokens,
    )
    config = replace(config, correlation=settings)
    run_dir = run_dir or Path("runs") / config.name
    preflight(config, None)
    prepare_run_directory(run_dir)
    check_same_foundation(run_dir, config)
    subject, chunks, dictionaries = build_foundation(run_dir, config, log)
    evaluated = read_records(run_dir / "units.jsonl", EvaluatedUnit)
    correlation_stage(run_dir, config, subject, chunks, dictionaries, evaluated, log)
    from results.tables import correlation_summary

    table = correlation_summary(read_records(run_dir / "correlations.jsonl", FeatureCorrelation))
    for row in table.to_dict("records"):
        log(
            f"correlate: {row['dictionary']}: {row['n_defined']} features; max correlation with a neuron ≤ 0.3 for "
            f"{row['fraction_at_most_threshold']:.1%}; median {row['median_max_correlation']:.3f}"
        )
    return run_dir / "correlations.jsonl"


def report(run_dir: Path, log: Progress = print) -> dict[str, Any]:
    """Rewrite the tables, plots, HTML report and SAEBench summary of a run from its records; return the summary."""
    if not (run_dir / "units.jsonl").exists():
        raise MonoscopeError(f"{str(run_dir)!r} has no evaluated units", "run 'monoscope run CONFIG' (or 'monoscope demo') first")
    return results_stage(run_dir, log)


def _compare_line(row: dict[str, Any]) -> str:
    def number(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    interval = "n/a" if row.get("ci_low") is None else f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
    return (
        f"compare: {row.get('feature_set')} vs neurons, {row.get('metric')}: features {number(row.get('feature_mean'))} "
        f"(n={row.get('n_features')}), neurons {number(row.get('neuron_mean'))} (n={row.get('n_neurons')}), "
        f"difference {number(row.get('difference'))} 95% CI {interval}, Mann–Whitney p {number(row.get('p_value'))}"
    )
