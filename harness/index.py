"""The activation index: bounded per-unit samples of where each unit fires.

One streaming pass over the corpus keeps, for every unit, in memory bounded by
units × samples (independent of the number of tokens):

- ``top``: the top-k chunks by the unit's maximum activation (one token per chunk);
- ``interval``: per activation interval, a reservoir of chunks whose token in that
  interval has the smallest hash priority (stratified reservoir sampling);
- ``nonzero``: a reservoir of chunks with a random firing token;
- ``zero``: a reservoir of chunks with a random non-firing token;
- statistics: firing count, negative count, sum, maximum, minimum and a histogram
  over the intervals.

A unit fires where its activation is positive. Intervals are fixed in advance
and shared by every unit: bin 0 is (0, 2^min_exponent), then ``bins_per_octave``
log-spaced bins per octave up to 2^max_exponent, and a last bin for values
above. Sampling priorities are a hash of (seed, chunk, position, unit), never
a generator's state, and every selection is a pure function of the set of
candidates, so indexes over disjoint chunk ranges merge exactly and in any order.

A sample stores the unit's activations on a window of ``window`` tokens around
its target token (shifted to stay inside the chunk).
"""

import math
from dataclasses import dataclass, field

import torch

from harness.errors import MonoscopeError

EMPTY_KEY = torch.iinfo(torch.int64).max
POSITION_BITS = 12
SAMPLE_KINDS = ("top", "interval", "nonzero", "zero")


@dataclass(frozen=True)
class IndexConfig:
    """What the index keeps per unit; indexes merge only if their configs are equal."""

    top_k: int = 24
    interval_samples: int = 2
    bins_per_octave: int = 4
    min_exponent: int = -6
    max_exponent: int = 10
    random_nonzero: int = 8
    random_zero: int = 8
    window_before: int = 11
    window_after: int = 4
    seed: int = 0

    @property
    def n_bins(self) -> int:
        """Return the number of activation intervals (including the under- and overflow bins)."""
        return (self.max_exponent - self.min_exponent) * self.bins_per_octave + 2

    @property
    def window(self) -> int:
        """Return the number of tokens stored per sample."""
        return self.window_before + 1 + self.window_after

    def bin_edges(self) -> list[float]:
        """Return the lower edges of the intervals: 0, then 2^(min_exponent + i / bins_per_octave)."""
        steps = (self.max_exponent - self.min_exponent) * self.bins_per_octave
        return [0.0] + [2.0 ** (self.min_exponent + i / self.bins_per_octave) for i in range(steps + 1)]

    def samples_per_unit(self) -> int:
        """Return the number of sample slots per unit (the memory bound's factor)."""
        return self.top_k + self.n_bins * self.interval_samples + self.random_nonzero + self.random_zero


@dataclass
class SampleSlots:
    """Fixed-size sample slots of one kind, leading shape [units, ...slots].

    ``key`` orders the slots: an int64 hash priority (smallest kept) for the
    reservoirs; for "top" the float activation (largest kept) with ``tie`` (the
    hash priority) breaking equal activations.
    """

    key: torch.Tensor
    chunk: torch.Tensor  # int64, -1 where empty
    position: torch.Tensor  # int32 target position within the chunk
    activations: torch.Tensor  # float32 [..., window]
    tie: torch.Tensor | None = None  # int64, "top" only

    def part(self, start: int, stop: int) -> "SampleSlots":
        """Return a view of the slots of units start..stop-1."""
        tie = None if self.tie is None else self.tie[start:stop]
        return SampleSlots(self.key[start:stop], self.chunk[start:stop], self.position[start:stop], self.activations[start:stop], tie)

    def assign(self, start: int, part: "SampleSlots") -> None:
        """Copy ``part`` into the slots of units start.., in place."""
        stop = start + part.key.shape[0]
        self.key[start:stop] = part.key
        self.chunk[start:stop] = part.chunk
        self.position[start:stop] = part.position
        self.activations[start:stop] = part.activations
        if self.tie is not None and part.tie is not None:
            self.tie[start:stop] = part.tie


@dataclass
class IndexState:
    """The mutable accumulator of one index: statistics plus sample slots for every unit."""

    config: IndexConfig
    n_units: int
    context_length: int
    n_tokens: int = 0
    chunk_ranges: list[tuple[int, int]] = field(default_factory=list)
    fire_count: torch.Tensor = field(default=None)  # type: ignore[assignment]
    negative_count: torch.Tensor = field(default=None)  # type: ignore[assignment]
    activation_sum: torch.Tensor = field(default=None)  # type: ignore[assignment]
    maximum: torch.Tensor = field(default=None)  # type: ignore[assignment]
    minimum: torch.Tensor = field(default=None)  # type: ignore[assignment]
    histogram: torch.Tensor = field(default=None)  # type: ignore[assignment]
    slots: dict[str, SampleSlots] = field(default_factory=dict)


def _empty_slots(shape: tuple[int, ...], window: int, top: bool) -> SampleSlots:
    return SampleSlots(
        key=torch.full(shape, -math.inf) if top else torch.full(shape, EMPTY_KEY, dtype=torch.int64),
        chunk=torch.full(shape, -1, dtype=torch.int64),
        position=torch.zeros(shape, dtype=torch.int32),
        activations=torch.zeros(*shape, window),
        tie=torch.full(shape, EMPTY_KEY, dtype=torch.int64) if top else None,
    )


def new_index(n_units: int, config: IndexConfig, context_length: int) -> IndexState:
    """Return an empty index for ``n_units`` units over chunks of ``context_length`` tokens."""
    if context_length < config.window:
        raise MonoscopeError(
            f"context length {context_length} is shorter than the index window of {config.window} tokens",
            "use longer chunks or a smaller window",
        )
    if context_length > 2**POSITION_BITS:
        raise MonoscopeError(f"context length {context_length} exceeds {2**POSITION_BITS}", "use shorter chunks")
    state = IndexState(config=config, n_units=n_units, context_length=context_length)
    state.fire_count = torch.zeros(n_units, dtype=torch.int64)
    state.negative_count = torch.zeros(n_units, dtype=torch.int64)
    state.activation_sum = torch.zeros(n_units, dtype=torch.float64)
    state.maximum = torch.full((n_units,), -math.inf)
    state.minimum = torch.full((n_units,), math.inf)
    state.histogram = torch.zeros(n_units, config.n_bins, dtype=torch.int64)
    window = config.window
    state.slots = {
        "top": _empty_slots((n_units, config.top_k), window, top=True),
        "interval": _empty_slots((n_units, config.n_bins, config.interval_samples), window, top=False),
        "nonzero": _empty_slots((n_units, config.random_nonzero), window, top=False),
        "zero": _empty_slots((n_units, config.random_zero), window, top=False),
    }
    return state


_MASK_63 = (1 << 63) - 1


def _mix(x: torch.Tensor) -> torch.Tensor:
    """Return a splitmix64-style scramble of int64 ``x`` (wrapping arithmetic, logical shifts)."""
    x = x * -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * -4658895280553007687  # 0xBF58476D1CE4E5B9
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * -7723592293110705685  # 0x94D049BB133111EB
    return x ^ ((x >> 31) & ((1 << 33) - 1))


def token_hashes(seed: int, chunk_ids: torch.Tensor, context_length: int) -> torch.Tensor:
    """Return int64 hashes [batch, T] of (seed, chunk, position)."""
    positions = torch.arange(context_length, dtype=torch.int64)
    flat = chunk_ids.to(torch.int64)[:, None] * context_length + positions[None, :]
    return _mix(_mix(flat) ^ _mix(torch.tensor(seed, dtype=torch.int64) + 0x5DEECE66D))


def unit_hashes(seed: int, unit_ids: torch.Tensor) -> torch.Tensor:
    """Return int64 hashes [units] of (seed, unit)."""
    return _mix(unit_ids.to(torch.int64) * 0x2545F491 + _mix(torch.tensor(seed, dtype=torch.int64)))


def priority_keys(token_hash: torch.Tensor, unit_hash: torch.Tensor) -> torch.Tensor:
    """Return positive int64 sampling keys [batch, T, units] whose low bits hold the position."""
    mixed = (token_hash[:, :, None] ^ unit_hash[None, None, :]) * -7046029254386353131
    mixed = mixed ^ ((mixed >> 29) & ((1 << 35) - 1))
    positions = torch.arange(token_hash.shape[1], dtype=torch.int64)[None, :, None]
    return (mixed & _MASK_63 & ~((1 << POSITION_BITS) - 1)) | positions


def activation_bins(values: torch.Tensor, config: IndexConfig) -> torch.Tensor:
    """Return the interval index of each value (n_bins for values that do not fire, i.e. <= 0)."""
    positive = values > 0
    safe = torch.where(positive, values, torch.ones_like(values))
    raw = torch.floor((torch.log2(safe) - config.min_exponent) * config.bins_per_octave).to(torch.int64) + 1
    bins = raw.clamp(0, config.n_bins - 1)
    return torch.where(positive, bins, torch.full_like(bins, config.n_bins))


def _windows(acts: torch.Tensor, batch: torch.Tensor, position: torch.Tensor, unit: torch.Tensor, window_before: int, window: int) -> torch.Tensor:
    """Return activations [n, window] of ``unit`` around ``position`` in batch row ``batch``."""
    start = window_start(position.to(torch.int64), acts.shape[1], window_before, window)
    offsets = start[:, None] + torch.arange(window)[None, :]
    return acts[batch[:, None], offsets, unit[:, None]]


def window_start(position: torch.Tensor, context_length: int, window_before: int, window: int) -> torch.Tensor:
    """Return where a sample's window begins: ``window_before`` tokens back, kept inside the chunk."""
    return (position - window_before).clamp(0, context_length - window)


def _choose(key: torch.Tensor, tie: torch.Tensor | None, capacity: int) -> torch.Tensor:
    """Return the indices (last axis) of the ``capacity`` entries to keep, in slot order.

    Reservoirs keep the smallest keys; "top" keeps the largest activations, equal
    activations ordered by their tie key. Either way the choice depends only on
    the set of entries, never on their order, which makes merging exact.
    """
    if tie is None:
        return torch.topk(key, capacity, dim=-1, largest=False, sorted=True).indices
    order = torch.sort(tie, dim=-1, stable=True).indices
    by_value = torch.sort(torch.gather(key, -1, order), dim=-1, descending=True, stable=True).indices
    return torch.gather(order, -1, by_value)[..., :capacity]


def _gather(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    if tensor.dim() == index.dim():
        return torch.gather(tensor, -1, index)
    return torch.gather(tensor, -2, index[..., None].expand(*index.shape, tensor.shape[-1]))


def _merge_candidates(
    slots: SampleSlots,
    key: torch.Tensor,
    tie: torch.Tensor | None,
    chunk: torch.Tensor,
    position: torch.Tensor,
    acts: torch.Tensor,
    config: IndexConfig,
) -> SampleSlots:
    """Return ``slots`` merged with one batch's candidates (last axis = batch row).

    Only candidates that win a slot have their activation window gathered from
    ``acts`` [B, T, units of this block].
    """
    capacity = slots.key.shape[-1]
    combined_key = torch.cat([slots.key, key], dim=-1)
    combined_tie = None if tie is None else torch.cat([slots.tie, tie], dim=-1)
    chosen = _choose(combined_key, combined_tie, capacity)
    new_chunk = _gather(torch.cat([slots.chunk, chunk], dim=-1), chosen)
    new_position = _gather(torch.cat([slots.position, position.to(torch.int32)], dim=-1), chosen)
    old_index = chosen.clamp(max=capacity - 1)
    new_acts = _gather(slots.activations, old_index)
    fresh = (chosen >= capacity) & (new_chunk >= 0)
    if fresh.any():
        where = fresh.nonzero(as_tuple=True)
        batch_row = chosen[where] - capacity
        new_acts[where] = _windows(acts, batch_row, new_position[where], where[0], config.window_before, config.window)
    return SampleSlots(
        key=_gather(combined_key, chosen),
        chunk=new_chunk,
        position=new_position,
        activations=new_acts,
        tie=None if combined_tie is None else _gather(combined_tie, chosen),
    )


def _merge_slots(first: SampleSlots, second: SampleSlots) -> SampleSlots:
    """Return the slots of the union of two slot sets (used to merge shard indexes)."""
    capacity = first.key.shape[-1]
    tie = None if first.tie is None else torch.cat([first.tie, second.tie], dim=-1)
    combined_key = torch.cat([first.key, second.key], dim=-1)
    chosen = _choose(combined_key, tie, capacity)
    return SampleSlots(
        key=_gather(combined_key, chosen),
        chunk=_gather(torch.cat([first.chunk, second.chunk], dim=-1), chosen),
        position=_gather(torch.cat([first.position, second.position], dim=-1), chosen),
        activations=_gather(torch.cat([first.activations, second.activations], dim=-2), chosen),
        tie=None if tie is None else _gather(tie, chosen),
    )


def update_index(state: IndexState, unit_acts: torch.Tensor, chunk_ids: torch.Tensor, unit_block: int = 2048) -> None:
    """Fold activations [batch, T, units] of the chunks ``chunk_ids`` [batch] into ``state``, in place."""
    batch, length, n_units = unit_acts.shape
    if n_units != state.n_units or length != state.context_length:
        raise ValueError(
            f"activations {tuple(unit_acts.shape)} do not fit an index of {state.n_units} units over {state.context_length} tokens"
        )
    chunk_ids = chunk_ids.to(torch.int64).cpu()
    state.chunk_ranges = _union_ranges(state.chunk_ranges, _ranges_of(chunk_ids.tolist()))
    token_hash = token_hashes(state.config.seed, chunk_ids, length)
    for start in range(0, n_units, unit_block):
        stop = min(start + unit_block, n_units)
        _update_block(state, unit_acts[:, :, start:stop].float().cpu().contiguous(), chunk_ids, token_hash, start)
    state.n_tokens += batch * length


def _update_block(state: IndexState, acts: torch.Tensor, chunk_ids: torch.Tensor, token_hash: torch.Tensor, start: int) -> None:
    config = state.config
    batch, _length, width = acts.shape
    stop = start + width
    state.fire_count[start:stop] += (acts > 0).sum(dim=(0, 1))
    state.negative_count[start:stop] += (acts < 0).sum(dim=(0, 1))
    state.activation_sum[start:stop] += acts.sum(dim=(0, 1), dtype=torch.float64)
    state.maximum[start:stop] = torch.maximum(state.maximum[start:stop], acts.amax(dim=(0, 1)))
    state.minimum[start:stop] = torch.minimum(state.minimum[start:stop], acts.amin(dim=(0, 1)))

    n_bins = config.n_bins
    bins = activation_bins(acts, config)  # [B, T, U]; n_bins where the unit does not fire
    keys = priority_keys(token_hash, unit_hashes(config.seed, torch.arange(start, stop)))
    counts = torch.zeros(batch, n_bins + 1, width, dtype=torch.int64)
    counts.scatter_add_(1, bins, torch.ones_like(bins))
    state.histogram[start:stop] += counts[:, :n_bins, :].sum(dim=0).t()
    smallest = torch.full((batch, n_bins + 1, width), EMPTY_KEY, dtype=torch.int64)
    smallest.scatter_reduce_(1, bins, keys, reduce="amin", include_self=True)
    position_mask = (1 << POSITION_BITS) - 1

    def candidates(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        chunk = torch.where(key == EMPTY_KEY, -1, chunk_ids.expand_as(key))
        return key, chunk, key & position_mask

    interval_key, interval_chunk, interval_position = candidates(smallest[:, :n_bins, :].permute(2, 1, 0))
    merged = _merge_candidates(state.slots["interval"].part(start, stop), interval_key, None, interval_chunk, interval_position, acts, config)
    state.slots["interval"].assign(start, merged)
    for kind, chosen in (("nonzero", smallest[:, :n_bins, :].amin(dim=1)), ("zero", smallest[:, n_bins, :])):
        key, chunk, position = candidates(chosen.t().contiguous())
        merged = _merge_candidates(state.slots[kind].part(start, stop), key, None, chunk, position, acts, config)
        state.slots[kind].assign(start, merged)

    values, positions = acts.max(dim=1)  # [B, U]
    values, positions = values.t(), positions.t()
    tie = torch.gather(keys, 1, positions.t()[:, None, :]).squeeze(1).t()
    fires = values > 0
    top_key = torch.where(fires, values, torch.full_like(values, -math.inf))
    top_chunk = torch.where(fires, chunk_ids.expand_as(values), -1)
    top_tie = torch.where(fires, tie, EMPTY_KEY)
    merged = _merge_candidates(state.slots["top"].part(start, stop), top_key, top_tie, top_chunk, positions, acts, config)
    state.slots["top"].assign(start, merged)


def merge_indexes(first: IndexState, second: IndexState) -> IndexState:
    """Return the index of the union of two indexes over disjoint chunk ranges."""
    if first.config != second.config:
        raise MonoscopeError("the indexes were built with different settings", "merge only shards built with the same index config")
    if (first.n_units, first.context_length) != (second.n_units, second.context_length):
        raise MonoscopeError(
            f"cannot merge an index of {first.n_units} units × {first.context_length} tokens with one of "
            f"{second.n_units} × {second.context_length}",
            "merge shards of the same dictionary and corpus chunking",
        )
    merged = IndexState(config=first.config, n_units=first.n_units, context_length=first.context_length)
    merged.chunk_ranges = _union_ranges(first.chunk_ranges, second.chunk_ranges)
    merged.n_tokens = first.n_tokens + second.n_tokens
    merged.fire_count = first.fire_count + second.fire_count
    merged.negative_count = first.negative_count + second.negative_count
    merged.activation_sum = first.activation_sum + second.activation_sum
    merged.maximum = torch.maximum(first.maximum, second.maximum)
    merged.minimum = torch.minimum(first.minimum, second.minimum)
    merged.histogram = first.histogram + second.histogram
    merged.slots = {kind: _merge_slots(first.slots[kind], second.slots[kind]) for kind in SAMPLE_KINDS}
    return merged


def _ranges_of(ids: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for chunk in sorted(ids):
        if ranges and ranges[-1][1] == chunk:
            ranges[-1] = (ranges[-1][0], chunk + 1)
        else:
            ranges.append((chunk, chunk + 1))
    return ranges


def _union_ranges(first: list[tuple[int, int]], second: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for begin, end in sorted([*first, *second]):
        if merged and begin < merged[-1][1]:
            raise MonoscopeError(f"chunks {begin}..{end - 1} were indexed twice", "merge only indexes of disjoint chunk ranges")
        if merged and begin == merged[-1][1]:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((begin, end))
    return merged
