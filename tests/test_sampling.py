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
        explain, score = split_samples(f"d/{unit}", samples, maximum, SamplingConfig(seed=1))
        assert explain and score
        assert not {s.chunk for s in explain} & {s.chunk for s in score}
        assert len({s.chunk for s in explain}) == len(explain)
        again = split_samples(f"d/{unit}", samples, maximum, SamplingConfig(seed=1))
        assert again == (explain, score)
        other = split_samples(f"d/{unit}", samples, maximum, SamplingConfig(seed=2))
        assert other != (explain, score)
        assert any(s.kind == "zero" for s in score) and not any(s.kind == "zero" for s in explain)
        levels = {activation_level(s.value, maximum, 10) for s in score}
        assert -1 in levels and len(levels) >= 4, "the scoring set spans zero to high activation levels"


def test_activation_levels():
    assert activation_level(0.0, 5.0, 10) == -1
    assert activation_level(0.1, 5.0, 10) == 0
    assert activation_level(5.0, 5.0, 10) == 9
    assert activation_level(2.6, 5.0, 10) == 5
