"""index_memory (and index_scale): the activation index's memory and cost as tokens and units grow."""

import argparse
import subprocess
import sys

from common import ROOT, benchmark

INDEX_MEMORY_SCRIPT = """
import resource, sys, torch
sys.path.insert(0, {root!r})
from harness.index import IndexConfig, new_index, update_index
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
