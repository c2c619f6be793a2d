"""``monoscope demo``: the whole pipeline on the embedded model, corpus and default dictionaries."""

import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from harness.index_store import read_header
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


def run_demo(run_dir: Path, tokens: int | None = None, log: Progress = print, config: FoundationConfig | None = None) -> dict:
    """Run corpus → activations → dictionaries → index on the embedded default; return the summary."""
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
    indexes = {}
    for path in sorted((run_dir / "index").glob("*.safetensors")):
        header = read_header(path)
        indexes[path.stem] = {"n_units": header["n_units"], "n_tokens": header["n_tokens"]}
    summary = {"dictionaries": rows, "indexes": indexes, "wall_seconds": round(time.perf_counter() - started, 1)}
    update_manifest(run_dir, summary=summary)
    log("")
    log(f"{'dictionary':<10} {'features':>8} {'L0':>7} {'var. expl.':>10} {'dead':>6}")
    for row in rows:
        log(f"{row['dictionary']:<10} {row['d_sae']:>8} {row['l0']:>7.1f} {row['variance_explained']:>10.3f} {row['dead_fraction']:>6.3f}")
    listed = ", ".join(f"{name} ({info['n_units']} units)" for name, info in indexes.items())
    log(f"indexes: {listed}")
    log(f"run directory: {run_dir} ({summary['wall_seconds']} s)")
    return summary
