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
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCHMARKS  # noqa: E402

MODULES = (
    "bench_activations",
    "bench_index",
    "bench_training",
    "bench_judge",
    "bench_judge_speed",
    "bench_client",
    "bench_demo",
    "bench_gpu",
    "bench_steering",
    "bench_ray",
    "bench_scorer_cost",
)
for module in MODULES:
    if (Path(__file__).parent / f"{module}.py").exists():
        importlib.import_module(module)


RESULTS = Path(__file__).parent / "RESULTS.md"
BEGIN, END = "<!-- begin generated: python benchmarks/run.py --write-results -->", "<!-- end generated -->"


def target_met(ratio: object, target: object) -> str:
    """Return "yes", "no" or "n/a" for a ratio against a target like ">= 5" or "<= 1.1"."""
    if not isinstance(ratio, int | float) or not isinstance(target, str):
        return "n/a"
    for operator, holds in ((">=", lambda a, b: a >= b), ("<=", lambda a, b: a <= b), ("<", lambda a, b: a < b), (">", lambda a, b: a > b)):
        if target.strip().startswith(operator):
            try:
                return "yes" if holds(float(ratio), float(target.strip()[len(operator) :].split()[0])) else "no"
            except ValueError:
                return "n/a"
    return "n/a"


def results_markdown(results: dict[str, dict]) -> str:
    """Return the generated part of RESULTS.md: a summary table and each benchmark's figures."""
    lines = [
        BEGIN,
        "",
        f"Measured with `python benchmarks/run.py --write-results` on {platform.machine()}"
        f" ({os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d')}.",
        "",
        "| benchmark | ratio | target | met |",
        "|---|---:|---|---|",
    ]
    for name, result in results.items():
        ratio, target = result.get("ratio", "—"), result.get("target", "—")
        lines.append(f"| `{name}` | {ratio} | {target} | {target_met(ratio, target)} |")
    for name, result in results.items():
        lines += ["", f"### {name}", ""]
        if result.get("note"):
            lines += [str(result["note"]), ""]
        lines += ["```json", json.dumps(result, indent=2), "```"]
    lines += ["", END]
    return "\n".join(lines)


def write_results(results: dict[str, dict]) -> None:
    """Replace the generated part of RESULTS.md (the hand-written parts around it are kept)."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else f"# Benchmark results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    RESULTS.write_text(before + results_markdown(results) + after, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--throughput-tokens", type=int, default=4096)
    parser.add_argument("--index-tokens", type=int, default=16384)
    parser.add_argument("--training-tokens", type=int, default=196608, help="T of training_memory (T and 4T tokens)")
    parser.add_argument("--buffer-sizes", type=int, nargs="+", default=[512, 2048, 8192], help="demo dictionaries to retrain")
    parser.add_argument("--buffer-seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of training_buffer_quality")
    parser.add_argument("--gpu-model-source", type=Path, default=None, help="config + tokenizer of gpu_pipeline's model")
    parser.add_argument("--demo-run-dir", type=Path, default=Path("runs/demo"), help="finished demo run whose timings demo_wall_time reads")
    parser.add_argument("--steering-tokens", type=int, default=32, help="tokens generated per side by steering_overhead")
    parser.add_argument("--scale-tokens", type=int, default=32768, help="tokens per size for index_scale")
    parser.add_argument("--scale-threads", type=int, default=1, help="torch threads in the index_scale subprocesses")
    parser.add_argument("--judge-run", type=Path, default=None, help="run directory whose contexts the judge benchmarks use")
    parser.add_argument("--ray-chunks", type=int, default=256, help="corpus chunks of 64 tokens ray_scaling indexes")
    parser.add_argument("--judge-contexts", type=int, default=48)
    parser.add_argument("--judge-batch", type=int, default=8)
    parser.add_argument("--judge-speed-judgments", type=int, default=24)
    parser.add_argument("--write-results", action="store_true", help="regenerate the generated part of benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {}
    for name in args.only or list(BENCHMARKS):
        try:
            results[name] = BENCHMARKS[name](args)
        except Exception as error:  # one broken benchmark must not hide the others' figures
            results[name] = {"error": f"{type(error).__name__}: {error}"}
        if not args.json:
            print(f"{name}: " + ", ".join(f"{key}={value}" for key, value in results[name].items()), flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    if args.write_results:
        write_results(results)


if __name__ == "__main__":
    main()
