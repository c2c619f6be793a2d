"""monoscope benchmarks: each compares monoscope with a baseline in the same run and prints ratios.

    python benchmarks/run.py                    # table
    python benchmarks/run.py --json             # one JSON object keyed by benchmark name
    python benchmarks/run.py --only index_memory
    python benchmarks/run.py --write-results    # also regenerate benchmarks/RESULTS.md

Each benchmark lives in a bench_*.py module beside this file and registers itself
with ``common.benchmark``; its docstring says what it compares.
"""

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCHMARKS  # noqa: E402

MODULES = ("bench_activations", "bench_index", "bench_judge", "bench_client", "bench_demo")
for module in MODULES:
    if (Path(__file__).parent / f"{module}.py").exists():
        importlib.import_module(module)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--throughput-tokens", type=int, default=4096)
    parser.add_argument("--index-tokens", type=int, default=16384)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {}
    for name in args.only or list(BENCHMARKS):
        results[name] = BENCHMARKS[name](args)
        if not args.json:
            print(f"{name}: " + ", ".join(f"{key}={value}" for key, value in results[name].items()), flush=True)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
