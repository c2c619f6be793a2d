"""Sampling: explanation and scoring sets are disjoint by chunk, seeded, and span activation levels."""

import torch

from harness.index.sampling import SamplingConfig, activation_level, split_samples
from harness.index.state import IndexConfig, new_index, update_index
from harness.index.store import unit_samples


def indexed_samples():
    generator = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(400, 16, 3, generator=generator) * 2 - 1.5)
    state = new_index(3, IndexConfig(window_before=4, window_after=3), 16)
    update_index(state, acts, torch.arange(400))
    return state


def test_sets_are_disjoint_by_chunk_and_seeded():
    state = indexed_samples()
    for unit in range(3):
        samples = unit_samples(state, unit, f"d/{unit}")
        maximum = float(state.maximum[unit])
        explain, score, dropped = split_samples(f"d/{unit}", samples, maximum, SamplingConfig(seed=1))
        assert dropped == 0  # no text comparison asked for
        assert explain and score
        assert not {s.chunk for s in explain} & {s.chunk for s in score}
        assert len({s.chunk for s in explain}) == len(explain)
        again = split_samples(f"d/{unit}", samples, maximum, SamplingConfig(seed=1))
        assert again == (explain, score, 0)
        other = split_samples(f"d/{unit}", samples, maximum, SamplingConfig(seed=2))
        assert other != (explain, score, 0)
        assert any(s.kind == "zero" for s in score) and not any(s.kind == "zero" for s in explain)
        levels = {activation_level(s.value, maximum, 10) for s in score}
        assert -1 in levels and len(levels) >= 4, "the scoring set spans zero to high activation levels"


def test_activation_levels():
    assert activation_level(0.0, 5.0, 10) == -1
    assert activation_level(0.1, 5.0, 10) == 0
    assert activation_level(5.0, 5.0, 10) == 9
    assert activation_level(2.6, 5.0, 10) == 5


def test_a_held_out_window_that_repeats_an_explanation_window_is_dropped_and_counted():
    """Repeated text (a licence header in many files): held-out chunks that read like an explanation window are not scored."""
    import numpy as np

    from harness.index.sampling import unit_contexts

    generator = torch.Generator().manual_seed(3)
    chunks = np.random.default_rng(0).integers(100, 200, size=(400, 16))
    chunks[::3] = chunks[0]  # every third chunk repeats the same text
    acts = torch.relu(torch.randn(400, 16, 1, generator=generator) * 2 - 1.5)
    acts[::3] = acts[0]  # the same text gives the same activations
    state = new_index(1, IndexConfig(window_before=4, window_after=3), 16)
    update_index(state, acts, torch.arange(400))

    class Tokens:
        def decode(self, ids: list[int]) -> str:
            return "".join(f" t{token}" for token in ids)

    samples = unit_samples(state, 0, "d/0")
    drawn = unit_contexts("d/0", samples, float(state.maximum[0]), chunks, Tokens(), SamplingConfig(seed=1))
    explained = {c.tokens for c in drawn.explain}
    assert drawn.duplicates_dropped > 0
    assert not any(c.tokens in explained for c in drawn.score)
    _explain, _score, plain = split_samples("d/0", samples, float(state.maximum[0]), SamplingConfig(seed=1))
    assert any(c.chunk % 3 == 0 for c in _score), "without the check, repeated text does reach the scoring set"
