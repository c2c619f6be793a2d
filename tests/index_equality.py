"""Compare two index states field by field: integer fields exactly, float fields within a tolerance."""

from dataclasses import fields

import torch

from harness.index.state import IndexState


def assert_same_index(actual: IndexState, expected: IndexState, rtol: float, atol: float) -> None:
    """Fail unless the states agree: config, counts and chunk ranges equal; every tensor's integer values equal and float values close."""
    assert (actual.config, actual.n_units, actual.context_length) == (expected.config, expected.n_units, expected.context_length)
    assert (actual.n_tokens, actual.chunk_ranges) == (expected.n_tokens, expected.chunk_ranges)
    tensors = {f.name: (getattr(actual, f.name), getattr(expected, f.name)) for f in fields(IndexState)}
    for kind, slots in expected.slots.items():
        for f in fields(slots):
            tensors[f"slots.{kind}.{f.name}"] = (getattr(actual.slots[kind], f.name), getattr(slots, f.name))
    for name, (mine, theirs) in tensors.items():
        if not isinstance(theirs, torch.Tensor):
            continue
        mine, theirs = mine.cpu(), theirs.cpu()
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape, name
        if theirs.is_floating_point():
            torch.testing.assert_close(mine, theirs, rtol=rtol, atol=atol, equal_nan=True, msg=lambda text, name=name: f"{name}: {text}")
        else:
            assert torch.equal(mine, theirs), name
