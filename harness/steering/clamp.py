"""Clamp dictionary features or MLP neurons inside the subject model's forward pass.

Feature steering as in Templeton et al. 2024 ("Scaling Monosemanticity", section "Influence
on behavior"): at the dictionary's hook the unit activations are set to fixed values and
everything the dictionary does not explain is kept. At ``blocks.L.hook_resid_post`` the
residual stream x [batch, T, d_model] becomes

    x + (decode(f_clamped, x) − decode(f, x)),   f = encode(x),

so the dictionary's error term x − decode(f, x) is untouched, for every dictionary kind the
loader reads (``harness.dictionaries.dictionary``: ReLU, JumpReLU, TopK, gated, identity). At
``blocks.L.mlp.hook_post`` (a neuron) the down projection's input is set directly. A clamp to
a unit's own activation changes nothing, bit for bit: both decodes see the same features.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from harness.dictionaries.dictionary import Dictionary, decode, dictionary_to, encode
from harness.errors import MonoscopeError
from harness.subject.model import SubjectModel, mlp_output_projection, parse_hook, transformer_blocks

POSITIONS = ("all", "new")  # clamp at every position, or only at the positions of generated tokens


@dataclass(frozen=True, eq=False)
class Clamp:
    """Units of one dictionary held at fixed activations.

    ``values`` are absolute activations (a unit's maximum over the index times a multiple);
    ``None`` keeps the unit's own activation: a no-op that still runs the hook, for checks.
    """

    dictionary: Dictionary
    units: tuple[int, ...]
    values: tuple[float | None, ...]

    def __post_init__(self) -> None:
        if len(self.units) != len(self.values) or not self.units:
            raise MonoscopeError("a clamp needs one value per unit and at least one unit", "pass as many values as units")
        for unit in self.units:
            if not 0 <= unit < self.dictionary.d_sae:
                raise MonoscopeError(
                    f"unit {unit} is outside dictionary {self.dictionary.name!r} ({self.dictionary.d_sae} units)",
                    f"use an index from 0 to {self.dictionary.d_sae - 1}",
                )


def clamp_units(features: torch.Tensor, clamp: Clamp, mask: torch.Tensor) -> torch.Tensor:
    """Return ``features`` [batch, T, d_sae] with the clamp's units set where ``mask`` [T] is True."""
    clamped = features.clone()
    for unit, value in zip(clamp.units, clamp.values, strict=True):
        if value is not None:
            clamped[:, mask, unit] = torch.tensor(value, dtype=features.dtype, device=features.device)
    return clamped


def clamped_residual(x: torch.Tensor, clamp: Clamp, mask: torch.Tensor) -> torch.Tensor:
    """Return the residual x [batch, T, d_in] with the clamp applied at the positions where ``mask`` [T] is True.

    x + (decode(f_clamped, x) − decode(f, x)): the error term of the dictionary is kept. Computed
    in the dictionary's dtype and added back in x's dtype.
    """
    features = encode(clamp.dictionary, x)
    change = decode(clamp.dictionary, clamp_units(features, clamp, mask), x) - decode(clamp.dictionary, features, x)
    return x + change.to(x.dtype)


class _Positions:
    """Which absolute positions a forward call covers: generation with a KV cache calls once per token."""

    def __init__(self, first_clamped: int) -> None:
        self.first_clamped = first_clamped
        self.seen = 0

    def mask(self, length: int, device: torch.device) -> torch.Tensor:
        positions = torch.arange(self.seen, self.seen + length, device=device)
        return positions >= self.first_clamped


@contextmanager
def clamped(subject: SubjectModel, clamps: list[Clamp], first_clamped: int = 0) -> Iterator[None]:
    """Apply ``clamps`` in every forward pass of ``subject.model`` inside the block.

    Positions count from the first token of the first forward call (BOS included) and go on
    across calls, as generation with a KV cache makes them: ``first_clamped`` = 0 clamps every
    position, the prompt's length clamps only generated tokens. Enter once per sequence.
    Raises MonoscopeError for a hook the model does not have or a width that does not match.
    """
    if not clamps:
        raise MonoscopeError("nothing to clamp", "name at least one unit")
    blocks = transformer_blocks(subject.model)
    counter = _Positions(first_clamped)
    handles = []
    last_layer = max(parse_hook(clamp.dictionary.hook_name, subject.n_layers).layer for clamp in clamps)
    for clamp in clamps:
        point = parse_hook(clamp.dictionary.hook_name, subject.n_layers)
        width = subject.dimension(point)
        if clamp.dictionary.d_in != width:
            raise MonoscopeError(
                f"dictionary {clamp.dictionary.name!r} has d_in={clamp.dictionary.d_in} but {point.name} has width {width}",
                "steer with a dictionary trained on this model and hook",
            )
        moved = Clamp(dictionary_to(clamp.dictionary, subject.device), clamp.units, clamp.values)
        if point.site == "resid_post":
            handles.append(blocks[point.layer].register_forward_hook(_residual_hook(moved, counter)))
        else:
            handles.append(mlp_output_projection(blocks[point.layer]).register_forward_pre_hook(_mlp_hook(moved, counter)))
    # The position counter advances once per forward call, after the last clamped block has seen it
    # (forward hooks of one module run in the order they were registered).
    advance = blocks[last_layer].register_forward_hook(lambda _m, inputs, _o: _advance(counter, inputs))
    try:
        yield
    finally:
        for handle in [*handles, advance]:
            handle.remove()


def _advance(counter: _Positions, inputs: Any) -> None:
    hidden = inputs[0] if isinstance(inputs, tuple) and inputs else None
    if hidden is None:
        raise MonoscopeError("cannot read the sequence length of a block's input", "steering needs a standard HF decoder block")
    counter.seen += hidden.shape[1]


def _residual_hook(clamp: Clamp, counter: _Positions):
    def hook(_module: Any, _inputs: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        mask = counter.mask(hidden.shape[1], hidden.device)
        if not bool(mask.any()):
            return None
        steered = clamped_residual(hidden, clamp, mask)
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    return hook


def _mlp_hook(clamp: Clamp, counter: _Positions):
    def hook(_module: Any, inputs: Any) -> Any:
        hidden = inputs[0]
        mask = counter.mask(hidden.shape[1], hidden.device)
        if not bool(mask.any()):
            return None
        return (clamp_units(hidden, clamp, mask), *inputs[1:])

    return hook
