"""The activation index: bounded per-unit samples of where each unit fires.

One streaming pass over the corpus keeps, for every unit, in memory bounded by
units × samples (independent of the number of tokens):

- ``top``: the top-k chunks by the unit's maximum activation (one token per chunk);
- ``interval``: per activation interval, a reservoir of chunks whose token in that
  interval has the smallest hash priority (stratified reservoir sampling);
- ``nonzero``: a reservoir of chunks with a random firing token;
- ``zero``: a reservoir of chunks with a random non-firing token;
- ``weighted`` (``IndexConfig.weighted`` slots, 0 = none): firing tokens drawn with probability
  ∝ activation², without replacement (A-Res, Efraimidis and Spirakis 2006: the largest keys
  log(u)/w, u uniform from the token's hash, w = activation²), among tokens whose window fits the
  chunk unshifted; several may come from one chunk. SAEBench's importance-weighted sample;
- ``spaced_top`` (``IndexConfig.spaced_top`` slots, 0 = none): the top-k firing tokens among
  those whose window fits unshifted, no two of one chunk within ``window_before`` tokens of each
  other, chosen greedily by activation (SAEBench's ``get_k_largest_indices`` with ``no_overlap``);
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
SAMPLE_KINDS = ("top", "interval", "nonzero", "zero", "weighted", "spaced_top")


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
    weighted: int = 0  # importance-weighted (∝ activation²) samples per unit; SAEBench's setting needs some
    spaced_top: int = 0  # top samples per unit, several per chunk but ``window_before`` apart; SAEBench's setting

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
        return self.top_k + self.n_bins * self.interval_samples + self.random_nonzero + self.random_zero + self.weighted + self.spaced_top


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


def _empty_slots(
    shape: tuple[int, ...], window: int, top: bool, device: torch.device, key_dtype: torch.dtype = torch.float32
) -> SampleSlots:
    return SampleSlots(
        key=torch.full(shape, -math.inf, dtype=key_dtype, device=device)
        if top
        else torch.full(shape, EMPTY_KEY, dtype=torch.int64, device=device),
        chunk=torch.full(shape, -1, dtype=torch.int64, device=device),
        position=torch.zeros(shape, dtype=torch.int32, device=device),
        activations=torch.zeros(*shape, window, device=device),
        tie=torch.full(shape, EMPTY_KEY, dtype=torch.int64, device=device) if top else None,
    )


def check_context_length(context_length: int, config: IndexConfig) -> None:
    """Raise MonoscopeError unless chunks of ``context_length`` tokens fit an index: window ≤ length ≤ 2**POSITION_BITS.

    Sampling keys keep a sample's position in their low POSITION_BITS bits (``priority_keys``).
    """
    if context_length < config.window:
        raise MonoscopeError(
            f"context length {context_length} is shorter than the index window of {config.window} tokens",
            "use longer chunks or a smaller window",
        )
    if context_length > 2**POSITION_BITS:
        raise MonoscopeError(
            f"context length {context_length} exceeds the index's limit of {2**POSITION_BITS} tokens per chunk",
            f"use chunks of at most {2**POSITION_BITS} tokens",
        )


def new_index(n_units: int, config: IndexConfig, context_length: int, device: str | torch.device = "cpu") -> IndexState:
    """Return an empty index for ``n_units`` units over chunks of ``context_length`` tokens, its tensors on ``device``."""
    check_context_length(context_length, config)
    state = IndexState(config=config, n_units=n_units, context_length=context_length)
    device = torch.device(device)
    state.fire_count = torch.zeros(n_units, dtype=torch.int64, device=device)
    state.negative_count = torch.zeros(n_units, dtype=torch.int64, device=device)
    state.activation_sum = torch.zeros(n_units, dtype=torch.float64, device=device)
    state.maximum = torch.full((n_units,), -math.inf, device=device)
    state.minimum = torch.full((n_units,), math.inf, device=device)
    state.histogram = torch.zeros(n_units, config.n_bins, dtype=torch.int64, device=device)
    window = config.window
    state.slots = {
        "top": _empty_slots((n_units, config.top_k), window, True, device),
        "interval": _empty_slots((n_units, config.n_bins, config.interval_samples), window, False, device),
        "nonzero": _empty_slots((n_units, config.random_nonzero), window, False, device),
        "zero": _empty_slots((n_units, config.random_zero), window, False, device),
        "weighted": _empty_slots((n_units, config.weighted), window, True, device, torch.float64),
        "spaced_top": _empty_slots((n_units, config.spaced_top), window, True, device),
    }
    return state


def index_to(state: IndexState, device: str | torch.device) -> IndexState:
    """Move every tensor of ``state`` to ``device`` (in place) and return it; the on-disk format is device-free."""
    for name in ("fire_count", "negative_count", "activation_sum", "maximum", "minimum", "histogram"):
        setattr(state, name, getattr(state, name).to(device))
    for slots in state.slots.values():
        for name in ("key", "chunk", "position", "activations", "tie"):
            value = getattr(slots, name)
            if value is not None:
                setattr(slots, name, value.to(device))
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
    positions = torch.arange(context_length, dtype=torch.int64, device=chunk_ids.device)
    flat = chunk_ids.to(torch.int64)[:, None] * context_length + positions[None, :]
    return _mix(_mix(flat) ^ _mix(torch.tensor(seed, dtype=torch.int64, device=chunk_ids.device) + 0x5DEECE66D))


def unit_hashes(seed: int, unit_ids: torch.Tensor) -> torch.Tensor:
    """Return int64 hashes [units] of (seed, unit)."""
    return _mix(unit_ids.to(torch.int64) * 0x2545F491 + _mix(torch.tensor(seed, dtype=torch.int64, device=unit_ids.device)))


def priority_keys(token_hash: torch.Tensor, unit_hash: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Return positive int64 sampling keys (elementwise, broadcasting) whose low bits hold the position."""
    mixed = (token_hash ^ unit_hash) * -7046029254386353131
    mixed = mixed ^ ((mixed >> 29) & ((1 << 35) - 1))
    return (mixed & _MASK_63 & ~((1 << POSITION_BITS) - 1)) | position


def activation_bins(values: torch.Tensor, config: IndexConfig) -> torch.Tensor:
    """Return the interval index of each value (n_bins for values that do not fire, i.e. <= 0)."""
    positive = values > 0
    safe = torch.where(positive, values, torch.ones_like(values))
    raw = torch.floor((torch.log2(safe) - config.min_exponent) * config.bins_per_octave).to(torch.int64) + 1
    bins = raw.clamp(0, config.n_bins - 1)
    return torch.where(positive, bins, torch.full_like(bins, config.n_bins))


def _windows(
    acts: torch.Tensor, batch: torch.Tensor, position: torch.Tensor, unit: torch.Tensor, window_before: int, window: int
) -> torch.Tensor:
    """Return activations [n, window] of ``unit`` around ``position`` in batch row ``batch``."""
    start = window_start(position.to(torch.int64), acts.shape[1], window_before, window)
    offsets = start[:, None] + torch.arange(window, device=start.device)[None, :]
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


def _slot_order(row: torch.Tensor, key: torch.Tensor, tie: torch.Tensor | None) -> torch.Tensor:
    """Return a permutation sorting entries by row, then best first within the row."""
    if tie is None:
        order = torch.sort(key, stable=True).indices
    else:
        order = torch.sort(tie, stable=True).indices
        order = order[torch.sort(key[order], descending=True, stable=True).indices]
    return order[torch.sort(row[order], stable=True).indices]


def _first_per_group(group: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Return the indices of the smallest-key entry of each group."""
    order = torch.sort(key, stable=True).indices
    order = order[torch.sort(group[order], stable=True).indices]
    sorted_group = group[order]
    first = torch.ones_like(sorted_group, dtype=torch.bool)
    first[1:] = sorted_group[1:] != sorted_group[:-1]
    return order[first]


@dataclass(frozen=True)
class _Candidates:
    """Candidate samples for some slot rows, with where to read their windows."""

    row: torch.Tensor  # flat slot-row index
    key: torch.Tensor
    tie: torch.Tensor | None
    chunk: torch.Tensor
    position: torch.Tensor
    batch_row: torch.Tensor  # row of the batch the window is read from
    unit_local: torch.Tensor  # unit column of the block the window is read from


def _merge_rows(slots: SampleSlots, candidates: _Candidates, acts: torch.Tensor, config: IndexConfig) -> None:
    """Merge candidates into the rows they name, keeping the best ``capacity`` per row, in place.

    Only rows that receive candidates are touched, and only winning candidates
    have their activation window read from ``acts`` [B, T, units of the block].
    """
    if candidates.row.numel() == 0:
        return
    capacity = slots.key.shape[-1]
    keys, chunks, positions = slots.key.view(-1, capacity), slots.chunk.view(-1, capacity), slots.position.view(-1, capacity)
    windows = slots.activations.view(-1, capacity, config.window)
    ties = None if slots.tie is None else slots.tie.view(-1, capacity)
    touched, local_row = torch.unique(candidates.row, return_inverse=True)
    n_touched, n_old = touched.numel(), touched.numel() * capacity
    entry_row = torch.cat([torch.arange(n_touched, device=local_row.device).repeat_interleave(capacity), local_row])
    entry_key = torch.cat([keys[touched].reshape(-1), candidates.key])
    entry_tie = None if ties is None else torch.cat([ties[touched].reshape(-1), candidates.tie])
    order = _slot_order(entry_row, entry_key, entry_tie)
    sorted_row = entry_row[order]
    counts = torch.bincount(sorted_row, minlength=n_touched)
    rank = torch.arange(order.numel(), device=order.device) - (torch.cumsum(counts, 0) - counts)[sorted_row]
    keep = rank < capacity
    kept, kept_row, kept_rank = order[keep], sorted_row[keep], rank[keep]
    target = touched[kept_row]
    is_old = kept < n_old
    old_flat = kept.clamp(max=n_old - 1)
    new = ~is_old
    new_index = (kept - n_old).clamp(min=0)
    old_chunks = chunks[touched].reshape(-1)
    old_positions = positions[touched].reshape(-1)
    old_windows = windows[touched].reshape(-1, config.window)
    kept_chunk = torch.where(is_old, old_chunks[old_flat], candidates.chunk[new_index])
    kept_position = torch.where(is_old, old_positions[old_flat], candidates.position.to(torch.int32)[new_index])
    # Read a window for every kept entry and keep the fresh ones where the entry is new: a masked
    # assignment would make the host wait to learn how many entries are new.
    fresh_windows = _windows(
        acts,
        candidates.batch_row[new_index],
        candidates.position[new_index],
        candidates.unit_local[new_index],
        config.window_before,
        config.window,
    )
    kept_windows = torch.where(new[:, None], fresh_windows, old_windows[old_flat])
    keys[target, kept_rank] = entry_key[kept]
    chunks[target, kept_rank] = kept_chunk
    positions[target, kept_rank] = kept_position
    windows[target, kept_rank] = kept_windows
    if ties is not None:
        ties[target, kept_rank] = entry_tie[kept]


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


def update_index(state: IndexState, unit_acts: torch.Tensor, chunk_ids: torch.Tensor, unit_block: int = 4096) -> None:
    """Fold activations [batch, T, units] of the chunks ``chunk_ids`` [batch] into ``state``, in place.

    The work runs on the device of ``state`` (``new_index(..., device=)``, ``index_to``); activations on
    another device are moved there one unit block at a time. Nothing is copied back to the host; the
    sparse steps (``nonzero``, ``unique``) wait for the device to learn how many entries they hold, a
    few times per block of ``unit_block`` units.
    """
    batch, length, n_units = unit_acts.shape
    if n_units != state.n_units or length != state.context_length:
        raise ValueError(
            f"activations {tuple(unit_acts.shape)} do not fit an index of {state.n_units} units over {state.context_length} tokens"
        )
    device = state.fire_count.device
    state.chunk_ranges = _union_ranges(state.chunk_ranges, _ranges_of(chunk_ids.tolist()))
    chunk_ids = chunk_ids.to(device=device, dtype=torch.int64)
    token_hash = token_hashes(state.config.seed, chunk_ids, length)
    for start in range(0, n_units, unit_block):
        stop = min(start + unit_block, n_units)
        _update_block(state, unit_acts[:, :, start:stop].to(device=device, dtype=torch.float32).contiguous(), chunk_ids, token_hash, start)
    state.n_tokens += batch * length


def _update_block(state: IndexState, acts: torch.Tensor, chunk_ids: torch.Tensor, token_hash: torch.Tensor, start: int) -> None:
    config = state.config
    batch, length, width = acts.shape
    stop = start + width
    fires = acts > 0
    fires_per_chunk = fires.sum(dim=1)  # [B, U]
    state.fire_count[start:stop] += fires_per_chunk.sum(dim=0)
    state.negative_count[start:stop] += (acts < 0).sum(dim=(0, 1))
    state.activation_sum[start:stop] += acts.sum(dim=(0, 1), dtype=torch.float64)
    state.maximum[start:stop] = torch.maximum(state.maximum[start:stop], acts.amax(dim=(0, 1)))
    state.minimum[start:stop] = torch.minimum(state.minimum[start:stop], acts.amin(dim=(0, 1)))
    unit_hash = unit_hashes(config.seed, torch.arange(start, stop, device=acts.device))

    # Everything below works on firing entries only (sparse for dictionary features).
    b, t, u = fires.nonzero(as_tuple=True)
    values = acts[b, t, u]
    bins = activation_bins(values, config)
    n_bins = config.n_bins
    state.histogram[start:stop] += torch.bincount(u * n_bins + bins, minlength=width * n_bins).view(width, n_bins)
    keys = priority_keys(token_hash[b, t], unit_hash[u], t)

    interval = state.slots["interval"]
    cell = (u + start) * n_bins + bins
    below = keys < interval.key.view(-1, config.interval_samples)[cell, -1]
    chosen = below.nonzero(as_tuple=True)[0]
    chosen = chosen[_first_per_group(cell[chosen] * batch + b[chosen], keys[chosen])]
    _merge_rows(
        interval, _Candidates(cell[chosen], keys[chosen], None, chunk_ids[b[chosen]], t[chosen], b[chosen], u[chosen]), acts, config
    )

    nonzero = state.slots["nonzero"]
    below = keys < nonzero.key[start + u, -1]
    chosen = below.nonzero(as_tuple=True)[0]
    chosen = chosen[_first_per_group(u[chosen] * batch + b[chosen], keys[chosen])]
    _merge_rows(
        nonzero, _Candidates(start + u[chosen], keys[chosen], None, chunk_ids[b[chosen]], t[chosen], b[chosen], u[chosen]), acts, config
    )

    # Zero samples: a chunk-level key decides whether a chunk enters; then the
    # non-firing token with the smallest key in that chunk is the target.
    zero = state.slots["zero"]
    chunk_key = priority_keys(token_hash[:, :1], unit_hash[None, :], torch.zeros(1, dtype=torch.int64, device=acts.device))  # [B, U]
    eligible = (fires_per_chunk < length) & (chunk_key < zero.key[start:stop, -1][None, :])
    zb, zu = eligible.nonzero(as_tuple=True)
    if zb.numel():
        positions = torch.arange(length, device=acts.device)
        token_keys = priority_keys(token_hash[zb], unit_hash[zu][:, None], positions[None, :])
        token_keys = torch.where(fires[zb, :, zu], EMPTY_KEY, token_keys)
        target = token_keys.argmin(dim=1)
        zero_key = (chunk_key[zb, zu] & ~((1 << POSITION_BITS) - 1)) | target
        _merge_rows(zero, _Candidates(start + zu, zero_key, None, chunk_ids[zb], target, zb, zu), acts, config)

    if config.weighted:
        _update_weighted(state, acts, chunk_ids, (b, t, u, values), keys, start)
    if config.spaced_top:
        _update_spaced_top(state, acts, chunk_ids, token_hash, start)

    top = state.slots["top"]
    chunk_max, argmax = acts.max(dim=1)  # [B, U]
    contender = (chunk_max > 0) & (chunk_max >= top.key[start:stop, -1][None, :])
    tb, tu = contender.nonzero(as_tuple=True)
    if tb.numel():
        position = argmax[tb, tu]
        tie = priority_keys(token_hash[tb, position], unit_hash[tu], position)
        _merge_rows(top, _Candidates(start + tu, chunk_max[tb, tu], tie, chunk_ids[tb], position, tb, tu), acts, config)


def _update_weighted(
    state: IndexState, acts: torch.Tensor, chunk_ids: torch.Tensor, entries: tuple[torch.Tensor, ...], tie: torch.Tensor, start: int
) -> None:
    """Fold the firing entries (b, t, u, value) into the ``weighted`` reservoir (A-Res keys log(u) / activation²)."""
    config, length = state.config, acts.shape[1]
    b, t, u, values = entries
    weighted = state.slots["weighted"]
    uniform = ((tie >> POSITION_BITS).to(torch.float64) + 0.5) / float(2 ** (63 - POSITION_BITS))  # the hash bits above the position
    key = torch.log(uniform) / values.to(torch.float64) ** 2
    fits = (t >= config.window_before) & (t < length - config.window_after)
    chosen = (fits & (key > weighted.key[start + u, -1])).nonzero(as_tuple=True)[0]
    candidates = _Candidates(start + u[chosen], key[chosen], tie[chosen], chunk_ids[b[chosen]], t[chosen], b[chosen], u[chosen])
    _merge_rows(weighted, candidates, acts, config)


def _update_spaced_top(state: IndexState, acts: torch.Tensor, chunk_ids: torch.Tensor, token_hash: torch.Tensor, start: int) -> None:
    """Fold each chunk's greedy, ``window_before``-spaced list of its largest activations into ``spaced_top``.

    The global greedy choice over all tokens (SAEBench's no_overlap) equals the top-k of the union of
    every chunk's own greedy list, since a token is only ever excluded by a larger one of its chunk.
    """
    config = state.config
    batch, length, width = acts.shape
    spaced = state.slots["spaced_top"]
    spacing = config.window_before
    masked = acts.clone()
    masked[:, : config.window_before] = -math.inf
    masked[:, length - config.window_after :] = -math.inf
    unit_hash = unit_hashes(config.seed, torch.arange(start, start + width, device=acts.device))
    offsets = torch.arange(-spacing, spacing + 1, device=acts.device)
    for _ in range(config.spaced_top):
        value, position = masked.max(dim=1)  # [B, U]
        enter = (value > 0) & (value >= spaced.key[start : start + width, -1][None, :])
        sb, su = enter.nonzero(as_tuple=True)
        if sb.numel() == 0:
            return
        chosen = position[sb, su]
        tie = priority_keys(token_hash[sb, chosen], unit_hash[su], chosen)
        _merge_rows(spaced, _Candidates(start + su, value[sb, su], tie, chunk_ids[sb], chosen, sb, su), acts, config)
        around = (position[:, None, :] + offsets[None, :, None]).clamp(0, length - 1)  # [B, 2·spacing + 1, U]
        masked.scatter_(1, around, -math.inf)


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
            overlap_end = min(end, merged[-1][1]) - 1
            raise MonoscopeError(f"chunks {begin}..{overlap_end} were indexed twice", "merge only indexes of disjoint chunk ranges")
        if merged and begin == merged[-1][1]:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((begin, end))
    return merged
