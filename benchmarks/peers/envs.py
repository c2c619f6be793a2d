"""One virtual environment per peer tool, with pinned versions and no CUDA wheels.

Each peer is installed into ``$MONOSCOPE_PEERS_DIR`` (default ``~/.cache/monoscope/peers``)/<peer>/, never into
monoscope's own environment. Where a peer needs torch, ``torch==2.13.0`` (the CPU build this machine's pip takes)
is installed first and held by ``constraints.txt`` so that nothing pulls a CUDA build. Where a peer declares
packages its measured path never imports, or a bound that clashes with that torch, it is installed ``--no-deps``
with the few packages that path does import (``PEERS[...]["deps"]``); each such choice is listed here and in
RESULTS.md.

    python benchmarks/peers/envs.py sae-dashboard     # create (or reuse) one environment and print its python
"""

import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONSTRAINTS = HERE / "constraints.txt"
TORCH = "torch==2.13.0"

PEERS: dict[str, dict] = {
    # SAELens with its own dependencies (transformer-lens, transformers, datasets …), torch held at 2.13.0.
    "sae-lens": {"package": "sae-lens==6.54.12", "no_deps": False, "deps": [], "torch": True},
    # SAEDashboard's Neuronpedia records (sae_dashboard/neuronpedia/neuronpedia_dashboard.py) import numpy only;
    # its declared dependencies (sae-lens, transformer-lens, datasets, torch<3 …) serve the dashboard runner.
    "sae-dashboard": {"package": "sae-dashboard==0.8.0", "no_deps": True, "deps": ["numpy"], "torch": False},
    # SAEBench's output classes (eval_output.py, eval_config.py, base_eval_output.py) import pydantic only, and
    # jsonschema validates against its shipped schema; its autointerp scoring path (main.py's Example, Examples and
    # AutoInterp's prompt, API, parse and score methods) needs torch, openai, tabulate and tqdm. Its declared
    # torchvision, sae-lens, transformer-lens, datasets, sae-probes … serve loading models, SAEs and data, which this
    # path does not do (saebench_scoring.py stubs those imports).
    "sae-bench": {
        "package": "sae-bench==0.6.0",
        "no_deps": True,
        "deps": ["pydantic>=2.9.2", "jsonschema", "openai>=1.0.0", "tabulate>=0.9.0", "tqdm"],
        "torch": True,
    },
    # delphi's classifier scorers, its OpenRouter client and result_analysis import torch, transformers, httpx,
    # pandas, orjson, blobfile, jaxtyping, beartype, simple_parsing, asyncer, aiofiles, safetensors, plotly and
    # scikit-learn; vllm (a GPU engine, >= 0.10.2 declared), sentence-transformers, faiss and eai-sparsify serve the
    # offline client, embedding scorers and its SAE loader, which this path does not use (delphi_scoring.py stubs them).
    "eai-delphi": {
        "package": "eai-delphi==0.1.3",
        "no_deps": True,
        "deps": [
            "transformers",
            "httpx",
            "pandas",
            "orjson",
            "blobfile",
            "jaxtyping",
            "beartype",
            "simple_parsing",
            "asyncer",
            "anyio>=4.8.0",
            "aiofiles",
            "safetensors",
            "plotly",
            "scikit-learn",
            "tqdm",
            "tiktoken",
            "huggingface_hub",
        ],  # fmt: skip
        "torch": True,
    },
}


def peers_dir() -> Path:
    """Return the folder that holds the peers' environments."""
    return Path(os.environ.get("MONOSCOPE_PEERS_DIR", Path.home() / ".cache" / "monoscope" / "peers"))


def _spec_digest(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _pip(python: Path, *arguments: str) -> None:
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *arguments]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-4000:]}")


def ensure_env(peer: str) -> Path:
    """Return the python of ``peer``'s environment, creating it on first use (a changed spec rebuilds it)."""
    spec = PEERS[peer]
    folder = peers_dir() / peer
    python = folder / "bin" / "python"
    stamp = folder / "monoscope-peer.json"
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()).get("spec") == _spec_digest(spec):
        return python
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    if spec["torch"]:
        _pip(python, TORCH)
    constraints = ["-c", str(CONSTRAINTS)]
    if spec["no_deps"]:
        _pip(python, *constraints, "--no-deps", spec["package"])
        if spec["deps"]:
            _pip(python, *constraints, *spec["deps"])
    else:
        _pip(python, *constraints, spec["package"], *spec["deps"])
    stamp.write_text(json.dumps({"spec": _spec_digest(spec), "package": spec["package"]}))
    return python


def run_in(peer: str, script: Path, *arguments: str) -> dict:
    """Run ``script`` with ``peer``'s python and return the JSON object it prints last; RuntimeError on failure."""
    python = ensure_env(peer)
    result = subprocess.run([str(python), str(script), *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{script.name} in the {peer} environment failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    for name in sys.argv[1:] or list(PEERS):
        print(name, ensure_env(name))
