"""index_memory (and index_scale): the activation index's memory and cost as tokens and units grow."""

import argparse
import json
import math
import subprocess
import sys

from common import ROOT, benchmark

INDEX_MEMORY_SCRIPT = """
import resource, sys, torch
sys.path.insert(0, {root!r})
from harness.index.state import IndexConfig, new_index, update_index
torch.manual_seed(0)
units, tokens, length, batch = {units}, {tokens}, 64, 32
state = new_index(units, IndexConfig(), length)
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for start in range(0, tokens // length, batch):
    acts = torch.relu(torch.randn(batch, length, units) - 2.5)
    update_index(state, acts, torch.arange(start, start + batch))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, baseline)
"""


@benchmark
def index_memory(args: argparse.Namespace) -> dict:
    """Peak RSS of a 16k-unit index build at T and 10×T tokens, each in a fresh process."""
    results = {}
    for label, tokens in (("T", args.index_tokens), ("10T", 10 * args.index_tokens)):
        script = INDEX_MEMORY_SCRIPT.format(root=str(ROOT), units=16384, tokens=tokens)
        output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
        results[label] = {"tokens": tokens, "peak_rss_mib": round(int(output[0]) / 1024, 1)}
    return {
        "units": 16384,
        "T": results["T"],
        "10T": results["10T"],
        "ratio": round(results["10T"]["peak_rss_mib"] / results["T"]["peak_rss_mib"], 3),
        "target": "<= 1.1",
    }


INDEX_SCALE_SCRIPT = """
import json, resource, sys, time, torch
sys.path.insert(0, {root!r})
from harness.index.state import IndexConfig, new_index, update_index
units, tokens, length, batch = {units}, {tokens}, {length}, {batch}
torch.set_num_threads({threads})
torch.manual_seed(0)
warm = new_index(256, IndexConfig(), length)  # absorb torch's one-time start-up costs outside the timing
update_index(warm, torch.randn(batch, length, 256).sub_(2.5).relu_(), torch.arange(batch))
del warm
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
state = new_index(units, IndexConfig(), length)
n_batches = tokens // (length * batch)
seconds = []
fired = 0
for step in range(n_batches):
    acts = torch.randn(batch, length, units).sub_(2.5).relu_()  # relu(randn - 2.5): ~0.62% of entries fire
    fired += int(acts.count_nonzero())
    started = time.perf_counter()
    update_index(state, acts, torch.arange(step * batch, (step + 1) * batch))
    seconds.append(time.perf_counter() - started)
    del acts
tensors = [state.fire_count, state.negative_count, state.activation_sum, state.maximum, state.minimum, state.histogram]
for slots in state.slots.values():
    tensors += [t for t in (slots.key, slots.chunk, slots.position, slots.activations, slots.tie) if t is not None]
print(json.dumps({{
    "seconds": seconds,
    "fired": fired,
    "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "baseline_rss_kib": baseline,
    "state_bytes": sum(t.numel() * t.element_size() for t in tensors),
}}))
"""


def _fitted_exponent(xs: list[float], ys: list[float]) -> float:
    """Return the least-squares slope of log(ys) against log(xs): cost ∝ units^slope."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mean_x, mean_y = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mean_x) * (b - mean_y) for a, b in zip(lx, ly, strict=True)) / sum((a - mean_x) ** 2 for a in lx)


@benchmark
def index_scale(args: argparse.Namespace) -> dict:
    """Time and peak memory per token of update_index at 1k, 16k and 64k units (same tokens and firing density), one process per size.

    Returns per size: tokens, seconds (all batches), µs per token (all, and the second half once reservoirs have
    filled), peak RSS and index state MiB; plus the fitted exponent of time against units ("ratio"; 1.0 = linear).
    """
    length, batch = 64, 32
    step = length * batch
    tokens = max(step, getattr(args, "scale_tokens", 32768) // step * step)
    threads = getattr(args, "scale_threads", 1)
    sizes = {"1k": 1024, "16k": 16384, "64k": 65536}
    results = {}
    for label, units in sizes.items():
        script = INDEX_SCALE_SCRIPT.format(root=str(ROOT), units=units, tokens=tokens, length=length, batch=batch, threads=threads)
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=900)
        measured = json.loads(run.stdout.strip().splitlines()[-1])
        seconds = measured["seconds"]
        late = seconds[len(seconds) // 2 :]
        total = sum(seconds)
        results[label] = {
            "units": units,
            "tokens": tokens,
            "seconds": round(total, 2),
            "us_per_token": round(1e6 * total / tokens, 1),
            "steady_us_per_token": round(1e6 * sum(late) / (len(late) * step), 1),
            "firing_density": round(measured["fired"] / (tokens * units), 5),
            "peak_rss_mib": round(measured["peak_rss_kib"] / 1024, 1),
            "rss_growth_mib": round((measured["peak_rss_kib"] - measured["baseline_rss_kib"]) / 1024, 1),
            "state_mib": round(measured["state_bytes"] / 2**20, 1),
            "batch_activations_mib": round(batch * length * units * 4 / 2**20, 1),
        }
    units = [float(r["units"]) for r in results.values()]
    time_exponent = _fitted_exponent(units, [r["seconds"] for r in results.values()])
    return {
        **results,
        "torch_threads": threads,
        "time_ratio_64k_over_1k": round(results["64k"]["seconds"] / results["1k"]["seconds"], 1),
        "unit_ratio_64k_over_1k": 64,
        "steady_time_exponent": round(_fitted_exponent(units, [r["steady_us_per_token"] for r in results.values()]), 3),
        "state_growth_exponent": round(_fitted_exponent(units, [r["state_mib"] for r in results.values()]), 3),
        "ratio": round(time_exponent, 3),
        "target": "report",
    }
