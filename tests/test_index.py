"""The activation index: exact order-free merging, stratification, bounded memory, storage."""

from pathlib import Path

import pytest
import torch

from harness.errors import MonoscopeError
from harness.index.state import EMPTY_KEY, SAMPLE_KINDS, IndexConfig, IndexState, activation_bins, merge_indexes, new_index, update_index
from harness.index.store import load_index, read_header, save_index, unit_samples, unit_stats

CONFIG = IndexConfig(
    top_k=5,
    interval_samples=2,
    bins_per_octave=2,
    min_exponent=-4,
    max_exponent=6,
    random_nonzero=3,
    random_zero=3,
    window_before=3,
    window_after=2,
    seed=7,
    weighted=4,
    spaced_top=3,
)
LENGTH = 16


def sparse_activations(n_chunks: int, n_units: int, scale: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(n_chunks, LENGTH, n_units, generator=generator).pow(3) * scale
    keep = torch.rand(n_chunks, LENGTH, n_units, generator=generator) < 0.3
    signs = torch.where(torch.rand(n_chunks, LENGTH, n_units, generator=generator) < 0.1, -1.0, 1.0)
    return values * keep * signs


def build(acts: torch.Tensor, first_chunk: int, batch: int) -> IndexState:
    state = new_index(acts.shape[2], CONFIG, LENGTH)
    for start in range(0, acts.shape[0], batch):
        chunk_ids = torch.arange(first_chunk + start, first_chunk + min(start + batch, acts.shape[0]))
        update_index(state, acts[start : start + batch], chunk_ids, unit_block=3)
    return state


def assert_same(first: IndexState, second: IndexState) -> None:
    assert first.n_tokens == second.n_tokens
    assert first.chunk_ranges == second.chunk_ranges
    for name in ("fire_count", "negative_count", "maximum", "minimum", "histogram"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert torch.allclose(first.activation_sum, second.activation_sum, rtol=1e-12, atol=1e-9)
    for kind in SAMPLE_KINDS:
        a, b = first.slots[kind], second.slots[kind]
        assert torch.equal(a.key, b.key), kind
        assert torch.equal(a.chunk, b.chunk), kind
        assert torch.equal(a.position, b.position), kind
        assert torch.equal(a.activations, b.activations), kind


@pytest.fixture(scope="module")
def shards() -> tuple[torch.Tensor, torch.Tensor]:
    # Maxima differ 10×: the second shard's activations are ten times larger.
    return sparse_activations(40, 7, 2.0, seed=1), sparse_activations(30, 7, 20.0, seed=2)


def test_shards_merge_exactly_in_either_order(shards):
    low, high = shards
    whole = build(torch.cat([low, high]), 0, batch=9)
    first, second = build(low, 0, batch=4), build(high, 40, batch=11)
    assert first.maximum.max() * 5 < second.maximum.max()
    assert_same(merge_indexes(first, second), whole)
    assert_same(merge_indexes(second, first), whole)


def test_batch_order_does_not_matter(shards):
    low, _ = shards
    forward = build(low, 0, batch=5)
    backward = new_index(low.shape[2], CONFIG, LENGTH)
    for start in reversed(range(0, 40, 8)):
        update_index(backward, low[start : start + 8], torch.arange(start, start + 8))
    assert_same(forward, backward)


def test_every_nonempty_interval_is_sampled(shards):
    low, high = shards
    acts = torch.cat([low, high])
    state = merge_indexes(build(low, 0, batch=6), build(high, 40, batch=6))
    bins = activation_bins(acts, CONFIG)
    for unit in range(acts.shape[2]):
        present = set(bins[:, :, unit].unique().tolist()) - {CONFIG.n_bins}
        sampled = {b for b in range(CONFIG.n_bins) if (state.slots["interval"].chunk[unit, b] >= 0).any()}
        assert present and present == sampled
        assert state.histogram[unit].sum() == (acts[:, :, unit] > 0).sum()


def test_statistics_and_top_k_match_brute_force(shards):
    low, _ = shards
    state = build(low, 0, batch=7)
    for unit in range(low.shape[2]):
        column = low[:, :, unit]
        assert state.fire_count[unit] == (column > 0).sum()
        assert state.negative_count[unit] == (column < 0).sum()
        assert state.maximum[unit] == column.max()
        per_chunk = column.max(dim=1).values
        expected = per_chunk[per_chunk > 0].sort(descending=True).values[: CONFIG.top_k]
        assert torch.equal(state.slots["top"].key[unit, : len(expected)], expected)


def test_sample_windows_hold_the_recorded_activations(shards):
    low, _ = shards
    state = build(low, 0, batch=8)
    for unit in range(low.shape[2]):
        samples = unit_samples(state, unit, f"d/{unit}")
        assert {sample.kind for sample in samples} == set(SAMPLE_KINDS)
        for sample in samples:
            window = low[sample.chunk, sample.window_start : sample.window_start + CONFIG.window, unit]
            assert torch.equal(window, torch.tensor(sample.activations))
            assert sample.window_start <= sample.position < sample.window_start + CONFIG.window
            if sample.kind == "zero":
                assert sample.value <= 0
            else:
                assert sample.value > 0


def test_memory_does_not_grow_with_tokens():
    def footprint(state: IndexState) -> int:
        tensors = [state.fire_count, state.negative_count, state.activation_sum, state.maximum, state.minimum, state.histogram]
        for slots in state.slots.values():
            tensors += [slots.key, slots.chunk, slots.position, slots.activations]
        return sum(t.numel() * t.element_size() for t in tensors)

    small = build(sparse_activations(10, 5, 1.0, seed=3), 0, batch=5)
    large = build(sparse_activations(200, 5, 1.0, seed=3), 0, batch=5)
    assert footprint(small) == footprint(large)
    assert large.slots["interval"].key.shape == (5, CONFIG.n_bins, CONFIG.interval_samples)


def test_overlapping_shards_are_refused(shards):
    low, _ = shards
    with pytest.raises(MonoscopeError, match="indexed twice"):
        merge_indexes(build(low, 0, batch=8), build(low, 0, batch=8))


def test_save_load_round_trip(tmp_path: Path, shards):
    low, _ = shards
    state = build(low, 0, batch=8)
    path = tmp_path / "index.safetensors"
    save_index(state, path, about={"dictionary": "d"})
    loaded, about = load_index(path)
    assert about == {"dictionary": "d"}
    assert loaded.config == CONFIG
    assert_same(state, loaded)
    stats = unit_stats(loaded, 0, "d/0")
    assert stats.fire_count == int((low[:, :, 0] > 0).sum())
    assert stats.density == pytest.approx(stats.fire_count / (40 * LENGTH))


def test_corrupt_index_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "index.safetensors"
    path.write_bytes(b"not an index at all")
    with pytest.raises(MonoscopeError, match="corrupt"):
        read_header(path)


def test_empty_slots_use_sentinels():
    state = new_index(2, CONFIG, LENGTH)
    assert (state.slots["interval"].key == EMPTY_KEY).all()
    assert (state.slots["top"].chunk == -1).all()


def saebench_greedy_top(acts: torch.Tensor, k: int, before: int, after: int) -> list[tuple[int, int]]:
    """SAEBench's no-overlap top-k of one unit's [chunks, T] activations, written out here: rank the tokens whose window
    fits, take each unless a taken token of its chunk lies within ``before`` of it."""
    inner = acts[:, before : acts.shape[1] - after]
    order = inner.flatten().argsort(descending=True).tolist()
    taken: list[tuple[int, int]] = []
    for flat in order:
        row, col = divmod(flat, inner.shape[1])
        col += before
        if float(acts[row, col]) <= 0:
            break
        if all(r != row or abs(c - col) > before for r, c in taken):
            taken.append((row, col))
        if len(taken) == k:
            break
    return taken


def test_spaced_top_is_the_no_overlap_greedy_top_k(shards):
    low, high = shards
    acts = torch.cat([low, high])
    state = build(acts, 0, batch=7)
    for unit in range(acts.shape[2]):
        expected = saebench_greedy_top(acts[:, :, unit], CONFIG.spaced_top, CONFIG.window_before, CONFIG.window_after)
        slots = state.slots["spaced_top"]
        got = [(int(c), int(p)) for c, p in zip(slots.chunk[unit], slots.position[unit], strict=True) if c >= 0]
        assert got == expected, unit


def test_weighted_draws_follow_squared_activations():
    """The first weighted sample of one unit over one chunk, over 3,000 seeds: a χ² test against activation²."""
    from scipy import stats

    values = torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0, 0.5, 3.0, 0.0, 1.5, 2.5, 0.0, 0.0])  # tokens 3..9 fit a window of 3 + 1 + 2
    acts = values[None, :, None]
    counts = torch.zeros(len(values))
    config = IndexConfig(top_k=1, interval_samples=1, random_nonzero=1, random_zero=1, window_before=3, window_after=2, weighted=1)
    for seed in range(3000):
        state = new_index(1, IndexConfig(**{**config.__dict__, "seed": seed}), len(values))
        update_index(state, acts, torch.tensor([0]))
        counts[int(state.slots["weighted"].position[0, 0])] += 1
    weights = values**2
    weights[:3], weights[10:] = 0, 0  # outside the positions whose window fits
    expected = weights / weights.sum() * counts.sum()
    observed = counts[expected > 0]
    assert counts[expected == 0].sum() == 0
    assert stats.chisquare(observed.numpy(), expected[expected > 0].numpy()).pvalue > 0.001
