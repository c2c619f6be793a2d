"""training_memory: peak RSS of training a dictionary from a residual store of T and 4T tokens.

Each training runs in a fresh process. monoscope's trainer reads the store in chunks through a
shuffling buffer of fixed size (65,536 tokens here); the baseline is the trainer as it was, with
the whole training set read into RAM first (``np.asarray(store[ids])``). T is chosen so that T
tokens of residuals (T × d_model × 4 bytes) are at least the process's baseline RSS, so a memory
that grows with tokens shows in the ratio.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import ROOT, benchmark

D_MODEL, CONTEXT = 640, 64  # the embedded model's residual width; the demo's chunk length

TRAINING_SCRIPT = """
import re, sys
import numpy as np, torch
sys.path.insert(0, {root!r})
from pathlib import Path
from harness.dictionaries.training import TrainingConfig, train_dictionary
from harness.subject.residual_store import ResidualStore, StoreSource
torch.set_num_threads(2)
store = ResidualStore(Path({store!r}), {chunks_total}, {context}, {d_model}, torch.float32)
ids = tuple(range({chunks}))
def high_water_kib():  # VmHWM: this process's own peak (ru_maxrss would carry the parent's peak across exec)
    return int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))
baseline = high_water_kib()
if {streaming}:
    data = StoreSource(store, ids)
    config = TrainingConfig(d_sae=128, sparsity_coefficient=2.0, batch_size=4096, buffer_tokens=65536)
else:  # the trainer as it was: every training token in RAM first
    data = store.read(list(ids)).reshape(-1, {d_model})
    config = TrainingConfig(d_sae=128, sparsity_coefficient=2.0, batch_size=4096)
train_dictionary(data, config, "sae", "blocks.9.hook_resid_post")
print(high_water_kib(), baseline)
"""


def _peak_rss_mib(store: Path, chunks_total: int, chunks: int, streaming: bool) -> tuple[float, float]:
    script = TRAINING_SCRIPT.format(
        root=str(ROOT), store=str(store), chunks_total=chunks_total, chunks=chunks, context=CONTEXT, d_model=D_MODEL, streaming=streaming
    )
    peak, baseline = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    return round(int(peak) / 1024, 1), round(int(baseline) / 1024, 1)


@benchmark
def training_memory(args: argparse.Namespace) -> dict:
    """Peak RSS training on T and 4T tokens from a store on disk: streaming buffer vs all training tokens in RAM."""
    chunks = args.training_tokens // CONTEXT
    with tempfile.TemporaryDirectory(prefix="monoscope-bench-") as scratch:
        store_path = Path(scratch) / "residuals.f32"
        store = np.memmap(store_path, dtype=np.float32, mode="w+", shape=(4 * chunks, CONTEXT, D_MODEL))
        rng = np.random.default_rng(0)
        for start in range(0, 4 * chunks, 256):  # residual-like rows: a large shared offset plus noise
            block = store[start : start + 256]
            block[:] = rng.standard_normal(block.shape, dtype=np.float32) + 3.0
        store.flush()
        del store
        rows = {}
        for label, streaming in (("monoscope", True), ("all_in_ram", False)):
            peak_t, baseline = _peak_rss_mib(store_path, 4 * chunks, chunks, streaming)
            peak_4t, _ = _peak_rss_mib(store_path, 4 * chunks, 4 * chunks, streaming)
            rows[label] = {
                "peak_rss_mib_T": peak_t,
                "peak_rss_mib_4T": peak_4t,
                "baseline_rss_mib": baseline,
                "ratio_4T_over_T": round(peak_4t / peak_t, 3),
            }
    tokens_mib = round(chunks * CONTEXT * D_MODEL * 4 / 2**20, 1)
    return {
        "T_tokens": chunks * CONTEXT,
        "T_tokens_of_residuals_mib": tokens_mib,
        "buffer_tokens": 65536,
        **rows,
        "ratio": rows["monoscope"]["ratio_4T_over_T"],
        "baseline_ratio": rows["all_in_ram"]["ratio_4T_over_T"],
        "target": "<= 1.1 (the all-in-RAM baseline must exceed 1.1)",
    }


@benchmark
def training_buffer_quality(args: argparse.Namespace) -> dict:
    """Retrain the demo's dictionaries from its residual store, for each seed of ``--buffer-seeds``: through a buffer holding
    the whole training set (at the recipe's seed it must give the demo's dictionaries) and through a quarter-size one, read
    in the run's shuffled chunk order; compare held-out L0 and variance explained (target: seed means within ±2%)."""
    import json
    from dataclasses import asdict, replace

    import torch

    from harness.dictionaries.formats import load_saelens_directory
    from harness.dictionaries.training import TrainingConfig, dictionary_stats, train_dictionary
    from harness.run.foundation import dictionary_label, split_chunks, training_order
    from harness.subject.residual_store import ResidualStore, StoreSource

    run_dir = args.demo_run_dir
    stores = sorted((run_dir / "activations").glob("blocks.*.hook_resid_post.f32"))
    if not stores:
        return {"measured": False, "reason": f"no finished demo run with a float32 residual store in {run_dir}"}
    foundation = _demo_foundation(run_dir)
    chunks = int(json.loads((run_dir / "corpus.json").read_text())["n_chunks"])
    store = ResidualStore(stores[0], chunks, foundation["context_length"], D_MODEL, torch.float32)
    train_ids, held_ids = split_chunks(chunks, foundation["held_out_fraction"])
    held_out = StoreSource(store, tuple(held_ids))
    whole_set = StoreSource(store, tuple(train_ids))
    hook = stores[0].name.removesuffix(".f32")
    rows = {}
    keys = ("l0", "variance_explained")
    for size in args.buffer_sizes:
        name = dictionary_label(size)
        demo = load_saelens_directory(run_dir / "dictionaries" / name, name)
        recipe = TrainingConfig(**json.loads((run_dir / "dictionaries" / name / "cfg.json").read_text())["monoscope_training"])
        quarter_tokens = whole_set.n_rows // 4
        per_seed = {}
        for seed in args.buffer_seeds:
            whole = train_dictionary(whole_set, replace(recipe, seed=seed, buffer_tokens=whole_set.n_rows), name, hook)
            order = training_order(train_ids, quarter_tokens, foundation["context_length"], seed)  # the run's order for that buffer
            quarter = train_dictionary(
                StoreSource(store, tuple(order)), replace(recipe, seed=seed, buffer_tokens=quarter_tokens), name, hook
            )
            whole_stats, quarter_stats = asdict(dictionary_stats(whole, held_out)), asdict(dictionary_stats(quarter, held_out))
            per_seed[seed] = {
                "whole": {key: round(whole_stats[key], 4) for key in keys},
                "quarter": {key: round(quarter_stats[key], 4) for key in keys},
                "relative_change": {key: round(quarter_stats[key] / whole_stats[key] - 1, 4) for key in keys},
            }
            if seed == recipe.seed:
                same = all(torch.equal(getattr(whole, w), getattr(demo, w)) for w in ("W_enc", "b_enc", "W_dec", "b_dec"))
                per_seed[seed]["whole_buffer_equals_demo"] = same
        means = {
            side: {key: sum(row[side][key] for row in per_seed.values()) / len(per_seed) for key in keys} for side in ("whole", "quarter")
        }
        rows[name] = {
            "seeds": per_seed,
            "mean_relative_change": {key: round(means["quarter"][key] / means["whole"][key] - 1, 4) for key in keys},
            "whole_buffer_l0_spread_over_seeds": round(
                (max(r["whole"]["l0"] for r in per_seed.values()) - min(r["whole"]["l0"] for r in per_seed.values()))
                / means["whole"]["l0"],
                4,
            ),
        }
    worst = max(abs(change) for row in rows.values() for change in row["mean_relative_change"].values())
    return {
        "run_dir": str(run_dir),
        "training_tokens": whole_set.n_rows,
        "quarter_buffer_tokens": whole_set.n_rows // 4,
        **rows,
        "ratio": round(worst, 4),
        "target": "<= 0.02 (largest relative change of seed-mean L0 or variance explained); whole buffer at the recipe's seed == demo",
    }


def _demo_foundation(run_dir: Path) -> dict:
    """Return the foundation settings a finished run recorded in its manifest."""
    import json

    return json.loads((run_dir / "manifest.json").read_text())["config"]["foundation"]
