"""The GPU acceptance check, one script of a few minutes: every stage on the accelerator, measured beside the CPU.

    python benchmarks/gpu_check.py --out DIR                 # on a machine with CUDA (about 5 minutes on an H200)
    python benchmarks/gpu_check.py --out DIR --device cpu --smoke   # the same code paths, tiny, on a CPU (CI runs this)

It needs no network: the model is Gemma-3-shaped with random weights, built from the embedded model's
config and tokenizer (``--model-source DIR`` holding config.json and the tokenizer files; default: the
embedded checkpoint, de-quantised on first use). Checks, each written to DIR/gpu_check.json:

1. ``seeding``: a dictionary trained a few steps on the accelerator starts from the CPU's initial weights
   and ends close to the CPU-trained one.
2. ``index_equality``: the index of one unit-activation tensor built on the accelerator has the CPU
   index's integer fields and float fields within float32 rounding.
3. ``pipeline``: benchmarks/bench_gpu.py: forward, index (65,536 units, d_in 640, 1.6% density) and
   training (16,384 features, batch 4,096) tokens/s beside the CPU path and the card's limits; targets:
   index ≥ 1,000,000 tokens/s, training ≥ 300,000, each ≥ 50× the CPU path.
4. ``run``: ``monoscope run`` with ``model.device`` on the accelerator, end to end, exit 0: its judge and
   simulator are the random model itself in the likelihood formats (a random model puts too little
   probability on the answer digits for ``expected_value``), its explainer a registered test
   backend (a random model's text is no explanation); the script writes its own config.

Exit status 0 when every check holds (in ``--smoke`` mode the speed targets are not checked).
"""

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def seeding_check(device: str) -> dict[str, Any]:
    """Train the same tiny dictionary on the CPU and on ``device``; compare initial and final weights."""
    from harness.dictionaries.training import TrainingConfig, initial_decoder, train_dictionary

    rows = torch.randn(8192, 64, generator=torch.Generator().manual_seed(0)) + 2.0
    config = TrainingConfig(d_sae=128, sparsity_coefficient=1.0, batch_size=256, seed=3)
    first = initial_decoder(128, 64, torch.Generator().manual_seed(3))
    with torch.device(device):
        again = initial_decoder(128, 64, torch.Generator().manual_seed(3))
    cpu = train_dictionary(rows, config, "a", "blocks.1.hook_resid_post")
    moved = train_dictionary(rows.to(device), config, "a", "blocks.1.hook_resid_post")
    difference = max((getattr(cpu, w) - getattr(moved, w).cpu()).abs().max().item() for w in ("W_enc", "b_enc", "W_dec", "b_dec"))
    scale = max(getattr(cpu, w).abs().max().item() for w in ("W_enc", "W_dec"))
    return {
        "initial_weights_equal": bool(torch.equal(first, again.cpu())),
        "trained_on": str(moved.W_enc.device),
        "max_weight_difference": difference,
        "relative_to_largest_weight": difference / scale,
        "ok": bool(torch.equal(first, again.cpu())) and difference / scale < 1e-2,
    }


def index_equality_check(device: str) -> dict[str, Any]:
    """Fold one unit-activation tensor into an index on the CPU and on ``device``; compare every field."""
    from harness.index.state import IndexConfig, index_to, new_index, update_index
    from tests.index_equality import assert_same_index

    generator = torch.Generator().manual_seed(0)
    config = IndexConfig(seed=5)
    states = {}
    for where in ("cpu", device):
        state = new_index(3000, config, 64, where)
        for batch in range(4):
            acts = torch.relu(torch.randn(16, 64, 3000, generator=torch.Generator().manual_seed(batch)) - 2.0)
            update_index(state, acts.to(where), torch.arange(batch * 16, (batch + 1) * 16), unit_block=1024)
        states[where] = index_to(state, "cpu")
    del generator
    try:
        assert_same_index(states[device], states["cpu"], rtol=1.2e-7 * 64, atol=1e-6)
        return {"ok": True, "units": 3000, "tokens": 4 * 16 * 64}
    except AssertionError as error:
        return {"ok": False, "error": str(error)[:2000]}


def run_check(device: str, model_dir: Path, scratch: Path, smoke: bool) -> dict[str, Any]:
    """Run ``monoscope run`` end to end on ``device`` with the random model; return its exit status and timings."""
    import yaml

    from harness.cli import main
    from harness.llm.client import register_backend
    from harness.llm.interface import GENERATE, Completion, Message, Usage

    class ExplainerBackend:
        name, model, capabilities = "gpu-check", "fixed", frozenset({GENERATE})

        def generate(self, messages: list[Message], **params: object) -> Completion:
            return Completion(" the token 'def' and the names that follow it", Usage(100, 10))

    register_backend("gpu-check")(lambda model="fixed", **options: ExplainerBackend())
    local = {"backend": "local", "model": str(model_dir)}
    config = {
        "name": "gpu-check",
        "model": {"name": str(model_dir), "device": device, "dtype": "bfloat16" if device != "cpu" else "float32"},
        "corpus": {"tokens": 8192 if smoke else 65536, "context_length": 64},
        "dictionaries": {"train": [64, 256] if smoke else [512, 2048]},
        "neurons": {"pool_size": 64},
        "evaluation": {
            "units_per_dictionary": 1,
            "simulation_contexts": 1,
            # likelihood formats: a random model puts no mass on the digits, so expected_value is refused by design
            "judge_format": "likelihood",
            "simulator_format": "likelihood",
        },
        "correlation": {"features": 8, "tokens": 4096},
        "explainer": {"backend": "gpu-check", "model": "fixed"},
        "judge": local,
        "simulator": local,
    }
    path = scratch / "gpu-check.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    try:
        main(["run", str(path), "--run-dir", str(scratch / "run")], standalone_mode=False)
        status = 0
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    manifest = json.loads((scratch / "run" / "manifest.json").read_text()) if (scratch / "run" / "manifest.json").exists() else {}
    return {
        "exit_status": status,
        "seconds": round(time.perf_counter() - started, 1),
        "timings": manifest.get("timings"),
        "ok": status == 0,
    }


def build_random_model(source: Path, target: Path, smoke: bool) -> Path:
    """Save a Gemma-3-shaped model with random weights (``source``'s config, or a tiny one with ``smoke``) and the tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(source)
    if smoke:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        text.num_hidden_layers, text.hidden_size, text.intermediate_size = 4, 64, 128
        text.num_attention_heads, text.num_key_value_heads, text.head_dim = 2, 1, 32
        text.layer_types = text.layer_types[:4] if getattr(text, "layer_types", None) else None
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where gpu_check.json goes")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model-source", type=Path, default=None, help="directory with config.json and the tokenizer files")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: exercise the code paths, check no speed target")
    args = parser.parse_args()
    import tempfile

    from bench_gpu import pipeline

    from harness.subject.embedded import embedded_checkpoint_dir

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: use --device cpu --smoke to exercise the code paths", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    source = args.model_source or embedded_checkpoint_dir()
    report: dict[str, Any] = {"device": args.device, "smoke": args.smoke, "torch": torch.__version__}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="monoscope-gpu-check-") as scratch_name:
        scratch = Path(scratch_name)
        model_dir = build_random_model(source, scratch / "model", args.smoke)
        checks = {
            "seeding": lambda: seeding_check(args.device),
            "index_equality": lambda: index_equality_check(args.device),
            "pipeline": lambda: pipeline(model_dir, args.device, scale=0.01 if args.smoke else 1.0),
            "run": lambda: run_check(args.device, model_dir, scratch, args.smoke),
        }
        for name, check in checks.items():
            check_started = time.perf_counter()
            try:
                report[name] = check()
            except Exception:  # a broken check must not hide the others' results
                report[name] = {"ok": False, "error": traceback.format_exc()[-3000:]}
            report[name]["check_seconds"] = round(time.perf_counter() - check_started, 1)
            print(f"{name}: {json.dumps(report[name], default=str)[:1500]}", flush=True)
            (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    pipeline_ok = "error" not in report["pipeline"] and (args.smoke or all(report["pipeline"]["met"].values()))
    report["ok"] = all(report[name].get("ok", True) for name in ("seeding", "index_equality", "run")) and pipeline_ok
    report["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"gpu_check: {'all checks hold' if report['ok'] else 'FAILED'} in {report['seconds']} s → {args.out / 'gpu_check.json'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
