"""A sparse dictionary's weights and how it maps hook activations to unit activations and back.

``encode``/``decode`` apply a dictionary as SAELens does: optional input normalisation, ``b_dec``
subtracted from the input when ``apply_b_dec_to_input``, then the ReLU, JumpReLU or TopK encoder."""

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch


@dataclass(frozen=True, eq=False)
class Dictionary:
    """Encoder/decoder weights of one dictionary and how to apply them."""

    name: str
    hook_name: str
    architecture: str
    d_in: int
    d_sae: int
    W_enc: torch.Tensor | None = None  # [d_in, d_sae]
    b_enc: torch.Tensor | None = None  # [d_sae]
    W_dec: torch.Tensor | None = None  # [d_sae, d_in]
    b_dec: torch.Tensor | None = None  # [d_in]
    threshold: torch.Tensor | None = None  # [d_sae], JumpReLU only
    k: int | None = None  # TopK only
    apply_b_dec_to_input: bool = False
    normalize_activations: str = "none"
    input_scale: float = 1.0  # "expected_average_only_in": inputs are multiplied by this
    metadata: dict[str, Any] = field(default_factory=dict)

    def unit_name(self, index: int) -> str:
        """Return the name of unit ``index``, e.g. ``sae-4k/1234``."""
        return f"{self.name}/{index}"


def _normalize_in(dictionary: Dictionary, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
    mode = dictionary.normalize_activations
    if mode == "constant_norm_rescale":
        scale = math.sqrt(dictionary.d_in) / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return x * scale, scale
    if mode == "layer_norm":
        mean = x.mean(dim=-1, keepdim=True)
        std = x.std(dim=-1, keepdim=True)
        return (x - mean) / (std + 1e-5), (mean, std)
    if mode == "expected_average_only_in":
        return x * dictionary.input_scale, dictionary.input_scale
    return x, None


def _normalize_out(dictionary: Dictionary, x_hat: torch.Tensor, state: Any) -> torch.Tensor:
    mode = dictionary.normalize_activations
    if mode == "constant_norm_rescale":
        return x_hat / state
    if mode == "layer_norm":
        mean, std = state
        return x_hat * (std + 1e-5) + mean
    if mode == "expected_average_only_in":
        return x_hat / state
    return x_hat


def encode(dictionary: Dictionary, x: torch.Tensor) -> torch.Tensor:
    """Return unit activations [..., d_sae] for hook activations ``x`` [..., d_in]."""
    if dictionary.architecture == "identity":
        return x
    x, _ = _normalize_in(dictionary, x.to(dictionary.W_enc.dtype))
    if dictionary.apply_b_dec_to_input:
        x = x - dictionary.b_dec
    hidden_pre = x @ dictionary.W_enc + dictionary.b_enc
    if dictionary.architecture == "relu":
        return torch.relu(hidden_pre)
    if dictionary.architecture == "jumprelu":
        return torch.relu(hidden_pre) * (hidden_pre > dictionary.threshold)
    values, indices = hidden_pre.topk(dictionary.k, dim=-1)
    return torch.zeros_like(hidden_pre).scatter(-1, indices, torch.relu(values))


def decode(dictionary: Dictionary, features: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """Return the reconstruction [..., d_in] of ``features``.

    Per-token normalisations (constant_norm_rescale, layer_norm) are undone with
    the statistics of the original input ``x``, which is then required.
    """
    if dictionary.architecture == "identity":
        return features
    x_hat = features @ dictionary.W_dec + dictionary.b_dec
    if dictionary.normalize_activations in ("constant_norm_rescale", "layer_norm"):
        if x is None:
            raise ValueError(f"decoding with {dictionary.normalize_activations} needs the original input")
        _, state = _normalize_in(dictionary, x.to(x_hat.dtype))
        return _normalize_out(dictionary, x_hat, state)
    if dictionary.normalize_activations == "expected_average_only_in":
        return _normalize_out(dictionary, x_hat, dictionary.input_scale)
    return x_hat


def identity_dictionary(kind: str, layer: int, width: int) -> Dictionary:
    """Return the identity dictionary over MLP neurons ("neurons") or residual basis directions."""
    if kind == "neurons":
        return Dictionary(name=f"mlp.{layer}", hook_name=f"blocks.{layer}.mlp.hook_post", architecture="identity", d_in=width, d_sae=width)
    return Dictionary(name=f"resid.{layer}", hook_name=f"blocks.{layer}.hook_resid_post", architecture="identity", d_in=width, d_sae=width)


WEIGHT_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")


def dictionary_to(dictionary: Dictionary, device: str | torch.device) -> Dictionary:
    """Return ``dictionary`` with its weights on ``device`` (a copy; the weights' dtype is kept).

    Stages move a dictionary once to the device of their activations: ``encode`` and ``decode``
    never move tensors themselves, so a mismatch fails loudly instead of copying every batch.
    """
    moved = {name: getattr(dictionary, name).to(device) for name in WEIGHT_NAMES if getattr(dictionary, name) is not None}
    return replace(dictionary, **moved)
