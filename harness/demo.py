"""``monoscope demo``: the whole pipeline on the embedded model, corpus and default dictionaries."""

import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from harness.evaluate import EvaluationConfig
from harness.evaluation_commands import Role, explain_command, score_command
from harness.index_store import firing_summary
from harness.model import load_subject_model
from harness.pipeline import (
    FoundationConfig,
    Progress,
    check_layer,
    collect_foundation_activations,
    dictionary_table,
    index_dictionaries,
    prepare_corpus,
    train_default_dictionaries,
)
from harness.runs import cpu_threads, prepare_run_directory, software_versions, timed_stage, update_manifest
from harness.sampling import SamplingConfig

# A handful of units per set: the embedded judge costs a forward pass per judgment
# (and per token for simulation) on two CPU cores; configs scale the same run up.
DEMO_EVALUATION = EvaluationConfig(
    units_per_dictionary=2,
    sampling=SamplingConfig(score_top=3, score_per_level=1, score_random=2, score_zero=3),
    simulation_contexts=2,
)


def run_demo(
    run_dir: Path,
    tokens: int | None = None,
    log: Progress = print,
    config: FoundationConfig | None = None,
    evaluation: EvaluationConfig = DEMO_EVALUATION,
) -> dict:
    """Run corpus → activations → dictionaries → index → explanations → scores on the embedded default.

    Returns the summary that is also written to the manifest.
    """
    config = config or FoundationConfig()
    if tokens is not None:
        config = replace(config, tokens=tokens)
    started = time.perf_counter()
    prepare_run_directory(run_dir)
    torch.set_num_threads(cpu_threads())
    update_manifest(run_dir, config=asdict(config), seed=config.seed, versions=software_versions())
    with timed_stage(run_dir, "load_model"):
        subject = load_subject_model(config.model, config.device, config.dtype)
    hook_name = check_layer(subject, config)
    update_manifest(run_dir, model={"name": subject.name, "n_layers": subject.n_layers, "d_model": subject.d_model, "hook": hook_name})
    log(f"model: {subject.name} ({subject.n_layers} blocks, d_model {subject.d_model}); dictionaries read {hook_name}")
    chunks = prepare_corpus(run_dir, subject, config, log)
    residuals = collect_foundation_activations(run_dir, subject, chunks, config, log)
    dictionaries = train_default_dictionaries(run_dir, residuals, hook_name, config, log)
    index_dictionaries(run_dir, residuals, chunks, dictionaries, config, log)
    rows = dictionary_table(run_dir)
    indexes = {path.stem: firing_summary(path) for path in sorted((run_dir / "index").glob("*.safetensors"))}
    for row in rows:
        row["dead_fraction_all_tokens"] = indexes[row["dictionary"]]["dead_fraction_all_tokens"]
    summary = {"dictionaries": rows, "indexes": indexes, "wall_seconds": round(time.perf_counter() - started, 1)}
    update_manifest(run_dir, summary=summary)
    log("")
    log("dictionary features      L0  var. expl.  dead (held-out)  dead (all tokens)")
    for row in rows:
        log(
            f"{row['dictionary']:<10} {row['d_sae']:>8} {row['l0']:>7.1f} {row['variance_explained']:>11.3f}"
            f" {row['dead_fraction']:>16.3f} {row['dead_fraction_all_tokens']:>18.3f}"
        )
    for name, info in indexes.items():
        log(
            f"index {name}: {info['n_units']} units over {info['n_tokens']} tokens, mean density {info['mean_density']:.4f},"
            f" mean negative share {info['mean_negative_share']:.4f}"
        )
    role = Role("local", config.model)
    with timed_stage(run_dir, "explain"):
        explain_command(run_dir, evaluation, role, log, shared_subject=subject)
    with timed_stage(run_dir, "score"):
        summary["scores"] = score_command(run_dir, evaluation, role, role, log, shared_subject=subject)
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    update_manifest(run_dir, summary=summary)
    log(f"run directory: {run_dir} ({summary['wall_seconds']} s)")
    return summary
