"""``--dry-run`` estimates time, memory, disk and cost offline, from measured figures scaled by FLOPs per token."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from harness.config import DEFAULT_CONFIG, config_from_mapping, load_config, read_config_file
from harness.errors import MonoscopeError
from harness.run.estimates import REFERENCES, estimate_resources
from harness.run.runner import run_evaluation
from harness.subject.shape import ModelShape

ROOT = Path(__file__).resolve().parents[1]
RESEARCH = ROOT / "harness" / "configs" / "research-gpu.yaml"
GEMMA_2_2B = ModelShape(n_layers=26, d_model=2304, d_mlp=9216, n_heads=8, n_kv_heads=4, head_dim=256, vocab_size=256000)


def test_the_research_config_dry_run_runs_offline_without_keys_or_a_gpu(tmp_path: Path) -> None:
    """The bundled research config, from the CLI, with the hub off, no API key and no CUDA: exit 0 and every estimate printed."""
    env = {name: value for name, value in os.environ.items() if not name.endswith("_API_KEY")}
    env |= {"HOME": str(tmp_path), "HF_HOME": str(tmp_path / ".cache" / "huggingface"), "HF_HUB_OFFLINE": "1", "MONOSCOPE_PROGRESS": "0"}
    command = [
        sys.executable,
        "-c",
        "from harness.cli import main; main()",
        "run",
        str(RESEARCH),
        "--dry-run",
        "--run-dir",
        str(tmp_path / "run"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    for expected in (
        "activations",
        "train.sae-64k",
        "index",
        "cuda memory peak",
        "host RAM",
        "disk:",
        "estimated cost: $",
        "OPENAI_API_KEY",
    ):
        assert expected in out, expected
    assert "886,004 tokens/s" in out and "RESULTS.md" in out  # the measured figure and its source are named
    assert "no index measurement" not in out and "none: benchmarks/gpu_check.py" in out  # the unmeasured GPU index says so
    assert not (tmp_path / ".cache" / "huggingface" / "hub").exists()  # nothing downloaded


def test_times_scale_the_measured_figures_by_flops_per_token() -> None:
    config = load_config(RESEARCH)
    estimate = estimate_resources(config, GEMMA_2_2B)
    rows = {row["stage"]: row for row in estimate["stages"]}
    # Gemma 2 2B, blocks 0..12 at 1,024 tokens: weights 2304·256·(2·8 + 2·4) + 3·2304·9216 per block, attention 2·8·256·512.
    flops = 2 * 13 * (2304 * 256 * 24 + 3 * 2304 * 9216 + 2 * 8 * 256 * 512)
    gpu_forward = next(r for r in REFERENCES if r.stage == "forward" and r.device == "cuda")
    tokens = (100_000_000 // 1024) * 1024
    assert rows["activations"]["seconds"] == pytest.approx(tokens * flops / (gpu_forward.tokens_per_s * gpu_forward.flops_per_token))
    gpu_training = next(r for r in REFERENCES if r.stage == "training" and r.device == "cuda")
    train_tokens = rows["train.sae-64k"]["tokens"]
    expected = train_tokens * 12 * 2304 * 65536 / (gpu_training.tokens_per_s * gpu_training.flops_per_token)
    assert rows["train.sae-64k"]["seconds"] == pytest.approx(expected)
    assert rows["index"]["seconds"] is None and estimate["total_seconds"] is None  # no GPU index measurement: no guess
    assert estimate["disk"]["residual_store"] == 0  # store_residuals: false
    kept = estimate_resources(replace(config, foundation=replace(config.foundation, store_residuals=True)), GEMMA_2_2B)
    assert kept["disk"]["residual_store"] == tokens * 2304 * 2  # bfloat16
    assert not any("no store" in row["stage"] for row in kept["stages"])
    assert estimate["memory"]["model_weights"] == GEMMA_2_2B.parameters() * 2
    assert GEMMA_2_2B.parameters() == pytest.approx(2.61e9, rel=0.01)  # Gemma 2 2B's published size


def test_cpu_estimates_of_the_default_config_reproduce_the_measured_demo() -> None:
    # The reference figures were measured on 262,144 tokens (235,904 training tokens); the estimate scales with tokens.
    config = load_config(DEFAULT_CONFIG)
    embedded = ModelShape(n_layers=18, d_model=640, d_mlp=2048, n_heads=4, n_kv_heads=1, head_dim=256, vocab_size=262144)
    rows = {row["stage"]: row for row in estimate_resources(config, embedded)["stages"]}
    share = config.foundation.tokens / 262_144
    assert share == 0.375  # the demo's 98,304 tokens
    assert rows["activations"]["seconds"] == pytest.approx(120.01 * share)
    assert rows["train.sae-8k"]["seconds"] == pytest.approx(80.93 * share, rel=1e-3)
    assert rows["train.sae-512"]["seconds"] < rows["train.sae-2k"]["seconds"] < rows["train.sae-8k"]["seconds"]


def test_every_reference_figure_is_kept_in_results_md() -> None:
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    for measured in REFERENCES:
        assert measured.source.startswith("benchmarks/RESULTS.md")
    for figure in ("120.01", "80.93", "45.41", "886,004", "380,968", "17.8 GiB"):
        assert figure in results, figure


def test_a_stated_shape_must_match_the_models_own_config(tmp_path: Path) -> None:
    data = read_config_file(DEFAULT_CONFIG)
    wrong = {"n_layers": 18, "d_model": 640, "d_mlp": 4096, "n_heads": 4, "n_kv_heads": 1, "head_dim": 256, "vocab_size": 262144}
    config = config_from_mapping(data | {"model": data["model"] | {"shape": wrong}})
    with pytest.raises(MonoscopeError, match="differs from the model's own config"):
        run_evaluation(config, tmp_path / "run", dry_run=True, log=lambda message: None)


def test_a_real_run_still_stops_on_a_missing_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    data = json.loads(json.dumps(read_config_file(RESEARCH)))
    data["model"] |= {"device": "cpu"}
    with pytest.raises(MonoscopeError, match="OPENAI_API_KEY"):
        run_evaluation(config_from_mapping(data), tmp_path / "run", log=lambda message: None)
