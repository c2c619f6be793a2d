"""Training data in memory flat in tokens: activation sources read in chunks, and a bounded shuffling buffer.

A source yields the rows [tokens, d_in] of a training set chunk by chunk, from any chunk on
(``rows_from``), so a resumed training reads on from where it stopped: an in-memory tensor
(``TensorSource``), a residual store on disk (harness.subject.residual_store.StoreSource) or the
model's forward pass itself (harness.subject.activations.ForwardSource). The buffer follows
SAELens' activation store: rows stream in until ``capacity`` rows are held; the buffer is then
permuted, its first half is served in batches and the rest waits for the next refill. At the end
of the stream the remainder is permuted and served. Memory is capacity × d_in, whatever the
number of tokens.

When the capacity holds the whole training set, the buffer permutes it once per epoch with the
same generator draw as shuffling an in-memory tensor (``torch.randperm(n)``), so training gives
the same batches as it would with every row in memory.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class ActivationSource(Protocol):
    """Rows of a training set, read in chunks: ``n_rows`` rows of width ``width`` over ``n_chunks`` chunks."""

    n_rows: int
    width: int
    n_chunks: int

    def rows_from(self, chunk: int) -> Iterator[torch.Tensor]:
        """Yield the rows [tokens, width] of chunk ``chunk``, ``chunk + 1``, … (any device and float dtype)."""
        ...


@dataclass(frozen=True)
class TensorSource:
    """An in-memory tensor [N, d_in] as a source of ``rows_per_chunk``-row chunks."""

    rows: torch.Tensor
    rows_per_chunk: int = 4096

    @property
    def n_rows(self) -> int:
        """Return N."""
        return int(self.rows.shape[0])

    @property
    def width(self) -> int:
        """Return d_in."""
        return int(self.rows.shape[1])

    @property
    def n_chunks(self) -> int:
        """Return the number of chunks."""
        return -(-self.n_rows // self.rows_per_chunk)

    def rows_from(self, chunk: int) -> Iterator[torch.Tensor]:
        """Yield the rows of every chunk from ``chunk`` on."""
        for start in range(chunk * self.rows_per_chunk, self.n_rows, self.rows_per_chunk):
            yield self.rows[start : start + self.rows_per_chunk]


class ShuffleBuffer:
    """A bounded buffer that shuffles streamed rows and serves them in batches of ``batch_size``.

    Rows live in one storage tensor on ``device`` of ``capacity`` rows plus one incoming chunk,
    allocated once; a row is never copied inside it. ``queue`` holds the slots of the rows not yet
    served, in serving order; ``ready`` of them (at its front) are permuted and may be served. A
    served row's slot is reused by the next chunk read. Permutations are drawn on the CPU from
    ``generator``. The whole state is in ``state_dict``, so a checkpoint resumes exactly.
    """

    def __init__(self, source: ActivationSource, capacity: int, batch_size: int, generator: torch.Generator, device: torch.device):
        if capacity < 2 * batch_size:
            raise ValueError(f"a buffer of {capacity} rows cannot serve half of itself in batches of {batch_size}")
        self.source = source
        self.capacity = capacity
        self.batch_size = batch_size
        self.generator = generator
        self.device = device
        self.storage = torch.empty(0, source.width, device=device)
        self.free = torch.empty(0, dtype=torch.long, device=device)  # slots holding no row
        self.queue = torch.empty(0, dtype=torch.long, device=device)  # slots of unserved rows, in serving order
        self.next_chunk = 0  # the next chunk of the source to read
        self.ready = 0  # rows at the front of the queue already permuted
        self.served_in_epoch = 0

    @property
    def held(self) -> int:
        """Return the number of rows held and not yet served."""
        return int(self.queue.numel())

    def start_epoch(self) -> None:
        """Begin a new pass over the source."""
        self.free = torch.cat([self.free, self.queue])
        self.queue = self.queue[:0]
        self.next_chunk, self.ready, self.served_in_epoch = 0, 0, 0

    def batches(self, limit: int) -> Iterator[torch.Tensor]:
        """Yield up to ``limit`` batches [batch_size, d_in] of this epoch (continuing a resumed one)."""
        while self.served_in_epoch < limit:
            if self.ready >= self.batch_size:
                slots, self.queue = self.queue[: self.batch_size], self.queue[self.batch_size :]
                batch = self.storage[slots]
                self.free = torch.cat([self.free, slots])
                self.ready -= self.batch_size
                self.served_in_epoch += 1
                yield batch
                continue
            if not self._refill():
                return

    def _slots_for(self, count: int) -> torch.Tensor:
        """Return ``count`` free slots, growing the storage when there are too few (the first fills only)."""
        if self.free.numel() < count:
            grow = count - self.free.numel()
            start = self.storage.shape[0]
            self.storage = torch.cat([self.storage, torch.empty(grow, self.source.width, device=self.device)])
            self.free = torch.cat([self.free, torch.arange(start, start + grow, device=self.device)])
        slots, self.free = self.free[:count], self.free[count:]
        return slots

    def _refill(self) -> bool:
        """Read until the buffer is full (or the source ends), permute, and mark rows ready; False when nothing is left."""
        held, incoming = self.held, []
        if self.next_chunk < self.source.n_chunks:
            for rows in self.source.rows_from(self.next_chunk):
                slots = self._slots_for(rows.shape[0])
                self.storage[slots] = rows.to(self.device, torch.float32)
                incoming.append(slots)
                held += rows.shape[0]
                self.next_chunk += 1
                if held >= self.capacity:
                    break
        self.queue = torch.cat([self.queue, *incoming])
        finished = self.next_chunk >= self.source.n_chunks
        if self.held < self.batch_size:
            return False
        order = torch.randperm(self.held, generator=self.generator, device="cpu")
        self.queue = self.queue[order.to(self.device)]
        whole = self.held if finished else self.held // 2
        self.ready = (whole // self.batch_size) * self.batch_size
        return self.ready > 0

    def state_dict(self) -> dict[str, Any]:
        """Return everything needed to continue exactly: the unserved rows in serving order (on the CPU) and the counters."""
        return {
            "rows": self.storage[self.queue].cpu(),
            "next_chunk": self.next_chunk,
            "ready": self.ready,
            "served_in_epoch": self.served_in_epoch,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``."""
        rows = state["rows"].to(self.device)
        self.storage = rows.clone()
        self.queue = torch.arange(rows.shape[0], device=self.device)
        self.free = self.queue[:0]
        self.next_chunk, self.ready, self.served_in_epoch = state["next_chunk"], state["ready"], state["served_in_epoch"]
        self.generator.set_state(state["generator"])
