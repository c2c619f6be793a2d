"""monoscope benchmarks: each compares monoscope with a baseline in the same run and prints ratios.

    python benchmarks/run.py            # table
    python benchmarks/run.py --json     # one JSON object keyed by benchmark name
    python benchmarks/run.py --only index_memory

Benchmarks:
- activation_throughput: tokens/s of monoscope's collection (residual features of a
  dictionary + MLP neurons of every block up to the dictionary's) against a naive
  full forward with output_hidden_states=True plus a separate encode, same tokens
  and batching, on the embedded model.
- index_memory: peak resident memory of building a 16,384-unit index over T and
  10×T tokens, each in its own fresh process.
"""

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict]] = {}


def benchmark(function: Callable[[argparse.Namespace], dict]) -> Callable[[argparse.Namespace], dict]:
    """Register a benchmark under its function name."""
    BENCHMARKS[function.__name__] = function
    return function


def random_dictionary(d_in: int, d_sae: int, hook: str):
    from harness.dictionaries import Dictionary

    generator = torch.Generator().manual_seed(0)
    W_dec = torch.nn.functional.normalize(torch.randn(d_sae, d_in, generator=generator), dim=-1)
    return Dictionary(
        name="bench",
        hook_name=hook,
        architecture="relu",
        d_in=d_in,
        d_sae=d_sae,
        W_enc=W_dec.t().contiguous(),
        b_enc=torch.full((d_sae,), -0.5),
        W_dec=W_dec,
        b_dec=torch.zeros(d_in),
    )


@benchmark
def activation_throughput(args: argparse.Namespace) -> dict:
    """Tokens/s: monoscope's early-stopping hooked pass vs a full forward with all hidden states."""
    from harness.corpus import chunk_documents, corpus_documents
    from harness.dictionaries import encode
    from harness.model import collect_activations, load_subject_model, with_bos

    subject = load_subject_model("embedded")
    layer = subject.default_layer
    dictionary = random_dictionary(subject.d_model, 8192, f"blocks.{layer}.hook_resid_post")
    chunks = torch.from_numpy(chunk_documents(corpus_documents(), subject.tokenizer, 64, args.throughput_tokens)).long()
    hooks = [f"blocks.{layer}.hook_resid_post"] + [f"blocks.{block}.mlp.hook_post" for block in range(layer + 1)]
    batch = 8

    def monoscope_pass() -> None:
        for start in range(0, chunks.shape[0], batch):
            acts = collect_activations(subject, chunks[start : start + batch], hooks)
            encode(dictionary, acts[hooks[0]])

    @torch.inference_mode()
    def naive_pass() -> None:
        for start in range(0, chunks.shape[0], batch):
            output = subject.model(input_ids=with_bos(subject, chunks[start : start + batch]), output_hidden_states=True)
            encode(dictionary, output.hidden_states[layer + 1][:, 1:].float())

    timings = {}
    for name, run in (("monoscope", monoscope_pass), ("naive", naive_pass)):
        run_started = time.perf_counter()
        run()
        timings[name] = time.perf_counter() - run_started
    tokens = chunks.numel()
    return {
        "tokens": tokens,
        "monoscope_tokens_per_s": round(tokens / timings["monoscope"], 1),
        "naive_tokens_per_s": round(tokens / timings["naive"], 1),
        "monoscope_outputs": f"{dictionary.d_sae} features + MLP neurons of blocks 0..{layer}",
        "naive_outputs": f"{dictionary.d_sae} features (plus logits and all hidden states)",
        "ratio": round(timings["naive"] / timings["monoscope"], 2),
        "target": ">= 5",
    }


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
