"""benchmarks/gpu_check.py, the GPU acceptance script, runs its code paths on a CPU (tiny sizes) so it does not rot between GPU sessions."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def test_the_gpu_check_runs_every_check_on_a_cpu_in_smoke_mode(tmp_path: Path) -> None:
    env = {**os.environ, "MONOSCOPE_PROGRESS": "0"}
    command = [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--device", "cpu", "--smoke"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["ok"] and report["seeding"]["initial_weights_equal"] and report["index_equality"]["ok"]
    assert report["run"]["exit_status"] == 0 and set(report["run"]["timings"]) >= {"activations", "index", "score", "correlate"}
    pipeline = report["pipeline"]
    for stage in ("forward", "index", "training"):
        assert pipeline[stage]["cpu"]["tokens_per_s"] > 0 and pipeline[stage]["fraction_of_card"] > 0, stage  # tiny probes here
    assert 0.01 < pipeline["index"]["cpu"]["firing_density"] < 0.025  # the benchmark's 1.6% density holds
    assert set(pipeline["card"]) == {"bf16_flops", "fp32_flops", "copy_bytes_per_s", "sort_keys_per_s"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_the_gpu_check_refuses_cuda_where_there_is_none(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2 and "--device cpu --smoke" in result.stderr
