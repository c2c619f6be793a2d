"""A sparse dictionary's weights and how it maps hook activations to unit activations and back.

``encode``/``decode`` apply a dictionary as SAELens 6.54.12's inference classes do
(``StandardSAE``, ``JumpReLUSAE``, ``TopKSAE``, ``GatedSAE``): the input is cast to the
weights' dtype, normalised per token (``constant_norm_rescale``, ``layer_norm``), ``b_dec``
is subtracted when ``apply_b_dec_to_input``, then the ReLU, JumpReLU, TopK or gated encoder;
TopK with ``rescale_acts_by_decoder_norm`` ranks pre-activations scaled by the decoder row
norms and divides by them again before decoding. What a cfg.json means is read by
``harness.dictionaries.saelens_config``."""

from dataclasses import dataclass, field, replace
from typing import Any

import torch


@dataclass(frozen=True, eq=False)
class Dictionary:
    """Encoder/decoder weights of one dictionary and how to apply them (SAELens field names)."""

    name: str
    hook_name: str
    architecture: str  # relu, jumprelu, topk, gated or identity
    d_in: int
    d_sae: int
    W_enc: torch.Tensor | None = None  # [d_in, d_sae]
    b_enc: torch.Tensor | None = None  # [d_sae]; gated dictionaries have none
    W_dec: torch.Tensor | None = None  # [d_sae, d_in]
    b_dec: torch.Tensor | None = None  # [d_in]
    threshold: torch.Tensor | None = None  # [d_sae], JumpReLU only
    b_gate: torch.Tensor | None = None  # [d_sae], gated only
    b_mag: torch.Tensor | None = None  # [d_sae], gated only
    r_mag: torch.Tensor | None = None  # [d_sae], gated only
    k: int | None = None  # TopK only
    rescale_acts_by_decoder_norm: bool = False  # TopK only
    apply_b_dec_to_input: bool = False
    normalize_activations: str = "none"  # none, constant_norm_rescale or layer_norm
    metadata: dict[str, Any] = field(default_factory=dict)

    def unit_name(self, index: int) -> str:
        """Return the name of unit ``index``, e.g. ``sae-4k/1234``."""
        return f"{self.name}/{index}"


LAYER_NORM_EPS = 1e-5  # SAELens' run_time_activation_ln_in


def _normalize_in(dictionary: Dictionary, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Return (normalised x, the per-token statistics that undo it), as SAELens' ``_setup_activation_normalization``."""
    mode = dictionary.normalize_activations
    if mode == "constant_norm_rescale":
        coefficient = dictionary.d_in**0.5 / x.norm(dim=-1, keepdim=True)
        return x * coefficient, coefficient
    if mode == "layer_norm":
        mean = x.mean(dim=-1, keepdim=True)
        centred = x - mean
        std = centred.std(dim=-1, keepdim=True)
        return centred / (std + LAYER_NORM_EPS), (mean, std)
    return x, None


def _normalize_out(dictionary: Dictionary, x_hat: torch.Tensor, state: Any) -> torch.Tensor:
    mode = dictionary.normalize_activations
    if mode == "constant_norm_rescale":
        return x_hat / state
    if mode == "layer_norm":
        mean, std = state
        return x_hat * std + mean  # SAELens multiplies by std, without the epsilon
    return x_hat


def _as_output(values: torch.Tensor) -> torch.Tensor:
    """Return 16-bit results as float32 (an exact widening); float32 and float64 stay as they are."""
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


def encode(dictionary: Dictionary, x: torch.Tensor) -> torch.Tensor:
    """Return unit activations [..., d_sae] for hook activations ``x`` [..., d_in].

    Computed in the weights' dtype, as SAELens casts its input to the SAE's dtype; 16-bit
    results are returned widened to float32.
    """
    if dictionary.architecture == "identity":
        return x
    x, _ = _normalize_in(dictionary, x.to(dictionary.W_enc.dtype))
    if dictionary.apply_b_dec_to_input:
        x = x - dictionary.b_dec
    projected = x @ dictionary.W_enc
    if dictionary.architecture == "gated":
        # SAELens computes x @ (W_enc * exp(r_mag)); scaling the columns of the shared product is the same map
        # without a second matmul or a d_in x d_sae temporary per batch.
        active = (projected + dictionary.b_gate > 0).to(x.dtype)
        magnitude = torch.relu(projected * dictionary.r_mag.exp() + dictionary.b_mag)
        return _as_output(active * magnitude)
    hidden_pre = projected + dictionary.b_enc
    if dictionary.architecture == "relu":
        return _as_output(torch.relu(hidden_pre))
    if dictionary.architecture == "jumprelu":
        return _as_output(torch.relu(hidden_pre) * (hidden_pre > dictionary.threshold).to(hidden_pre.dtype))
    if dictionary.rescale_acts_by_decoder_norm:
        hidden_pre = hidden_pre * dictionary.W_dec.norm(dim=-1)
    values, indices = hidden_pre.topk(dictionary.k, dim=-1, sorted=False)
    return _as_output(torch.zeros_like(hidden_pre).scatter(-1, indices, torch.relu(values)))


def decode(dictionary: Dictionary, features: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """Return the reconstruction [..., d_in] of ``features`` [..., d_sae].

    Per-token normalisations (constant_norm_rescale, layer_norm) are undone with
    the statistics of the original input ``x``, which is then required.
    """
    if dictionary.architecture == "identity":
        return features
    features = features.to(dictionary.W_dec.dtype)
    if dictionary.rescale_acts_by_decoder_norm:
        features = features * (1 / dictionary.W_dec.norm(dim=-1))
    x_hat = features @ dictionary.W_dec + dictionary.b_dec
    if dictionary.normalize_activations != "none":
        if x is None:
            raise ValueError(f"decoding with {dictionary.normalize_activations} needs the original input")
        _, state = _normalize_in(dictionary, x.to(x_hat.dtype))
        x_hat = _normalize_out(dictionary, x_hat, state)
    return _as_output(x_hat)


def encoding_record(dictionary: Dictionary) -> dict[str, Any]:
    """Return the settings that decide what ``encode`` computes (JSON), for the records built from a dictionary.

    An index records them, so a dictionary read with other settings (another loader version,
    an edited cfg.json) is never folded into an index built with the old ones.
    """
    dtype = None if dictionary.W_enc is None else str(dictionary.W_enc.dtype).removeprefix("torch.")
    return {
        "architecture": dictionary.architecture,
        "d_in": dictionary.d_in,
        "d_sae": dictionary.d_sae,
        "dtype": dtype,
        "k": dictionary.k,
        "rescale_acts_by_decoder_norm": dictionary.rescale_acts_by_decoder_norm,
        "apply_b_dec_to_input": dictionary.apply_b_dec_to_input,
        "normalize_activations": dictionary.normalize_activations,
    }


def identity_dictionary(kind: str, layer: int, width: int) -> Dictionary:
    """Return the identity dictionary over MLP neurons ("neurons") or residual basis directions."""
    if kind == "neurons":
        return Dictionary(name=f"mlp.{layer}", hook_name=f"blocks.{layer}.mlp.hook_post", architecture="identity", d_in=width, d_sae=width)
    return Dictionary(name=f"resid.{layer}", hook_name=f"blocks.{layer}.hook_resid_post", architecture="identity", d_in=width, d_sae=width)


WEIGHT_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "b_gate", "b_mag", "r_mag")


def dictionary_to(dictionary: Dictionary, device: str | torch.device) -> Dictionary:
    """Return ``dictionary`` with its weights on ``device`` (a copy; the weights' dtype is kept).

    Stages move a dictionary once to the device of their activations: ``encode`` and ``decode``
    never move tensors themselves, so a mismatch fails loudly instead of copying every batch.
    """
    moved = {name: getattr(dictionary, name).to(device) for name in WEIGHT_NAMES if getattr(dictionary, name) is not None}
    return replace(dictionary, **moved)
