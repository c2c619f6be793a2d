"""A subject model's shape, read from its config or stated in the run config, and the arithmetic it implies.

Used to estimate a run before any weight is loaded (``monoscope run --dry-run``). Counts follow
a Gemma/Llama-style decoder block: attention projections q, k, v, o (grouped-query: ``n_kv_heads``
key/value heads of ``head_dim``) and a gated MLP of three d_model × d_mlp matrices; norms and
biases are ignored (under 0.1% of the arithmetic).
"""

from dataclasses import dataclass
from typing import Any

from harness.errors import MonoscopeError


@dataclass(frozen=True)
class ModelShape:
    """The widths of a decoder-only model (Hugging Face config names in comments)."""

    n_layers: int  # num_hidden_layers
    d_model: int  # hidden_size
    d_mlp: int  # intermediate_size
    n_heads: int  # num_attention_heads
    n_kv_heads: int  # num_key_value_heads
    head_dim: int  # head_dim (hidden_size / num_attention_heads when absent)
    vocab_size: int  # vocab_size

    def block_weights(self) -> int:
        """Return the matrix weights of one block (multiply-adds per token through it)."""
        attention = self.d_model * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        return attention + 3 * self.d_model * self.d_mlp

    def parameters(self) -> int:
        """Return the model's matrix parameters: every block plus the (tied) embedding."""
        return self.n_layers * self.block_weights() + self.vocab_size * self.d_model

    def forward_flops(self, blocks: int, context_length: int) -> float:
        """Return FLOPs per token of running ``blocks`` blocks (no LM head) on chunks of ``context_length`` tokens.

        2 FLOPs per multiply-add: the block weights, plus attention scores and the weighted sum over
        on average half the context (causal).
        """
        attention = 2 * self.n_heads * self.head_dim * (context_length / 2)
        return 2.0 * blocks * (self.block_weights() + attention)


def shape_from_config(config: Any) -> ModelShape:
    """Return the ModelShape of a Hugging Face model config (its text config for multimodal models)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    d_model = int(config.hidden_size)
    n_heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or d_model // n_heads
    d_mlp = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d_model
    return ModelShape(
        n_layers=int(config.num_hidden_layers),
        d_model=d_model,
        d_mlp=int(d_mlp),
        n_heads=n_heads,
        n_kv_heads=int(getattr(config, "num_key_value_heads", None) or n_heads),
        head_dim=int(head_dim),
        vocab_size=int(config.vocab_size),
    )


def read_model_shape(name: str, local_only: bool = False) -> ModelShape:
    """Return the shape of model ``name`` ("embedded", a local directory or a hub id) from its config alone.

    ``local_only`` never touches the network (a hub id must already be in the local cache).
    Raises MonoscopeError when the config cannot be read.
    """
    from transformers import AutoConfig

    from harness.subject.embedded import model_source

    source = model_source(name)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise MonoscopeError(
            f"cannot read the config of model {name!r}: {str(exc).splitlines()[0]}",
            "give a local path, a reachable hub id or 'embedded' (a dry run can use model.shape instead)",
        ) from exc
    return shape_from_config(config)
