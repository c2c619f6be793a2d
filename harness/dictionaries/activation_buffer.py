"""Training data in memory flat in tokens: activation sources read in chunks, and a bounded shuffling buffer.

A source yields the rows [tokens, d_in] of a training set chunk by chunk, from any chunk on
(``rows_from``), so a resumed training reads on from where it stopped. The buffer follows
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

import numpy as np
import torch


class ActivationSource(Protocol):
    """Rows of a training set, read in chunks: ``n_rows`` rows of width ``width`` over ``n_chunks`` chunks."""

    n_rows: int
    width: int
    n_chunks: int

    def rows_from(self, chunk: int) -> Iterator[torch.Tensor]:
        """Yield the rows [tokens, width] of chunk ``chunk``, ``chunk + 1``, … (on the CPU)."""
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


@dataclass(frozen=True)
class StoreSource:
    """Corpus chunks ``chunk_ids`` of a residual store on disk (a memmap [n_chunks, T, d_in]) as a source.

    ``chunks_per_read`` corpus chunks are read at a time, converted to float32.
    """

    store: np.ndarray
    chunk_ids: tuple[int, ...]
    chunks_per_read: int = 64

    @property
    def n_rows(self) -> int:
        """Return the number of tokens of the selected chunks."""
        return len(self.chunk_ids) * int(self.store.shape[1])

    @property
    def width(self) -> int:
        """Return d_in."""
        return int(self.store.shape[2])

    @property
    def n_chunks(self) -> int:
        """Return the number of reads."""
        return -(-len(self.chunk_ids) // self.chunks_per_read)

    def rows_from(self, chunk: int) -> Iterator[torch.Tensor]:
        """Yield the tokens of ``chunks_per_read`` corpus chunks at a time, from read ``chunk`` on."""
        for start in range(chunk * self.chunks_per_read, len(self.chunk_ids), self.chunks_per_read):
            ids = list(self.chunk_ids[start : start + self.chunks_per_read])
            yield torch.from_numpy(np.asarray(self.store[ids], dtype=np.float32)).reshape(-1, self.width)


class ShuffleBuffer:
    """A bounded buffer that shuffles streamed rows and serves them in batches of ``batch_size``.

    ``capacity`` rows at most are held (plus one incoming chunk while it is copied in); the rows
    live on ``device``. Permutations are drawn on the CPU from ``generator``. The whole state
    (rows, counts, the next chunk to read) is in ``state_dict``, so a checkpoint resumes exactly.
    """

    def __init__(self, source: ActivationSource, capacity: int, batch_size: int, generator: torch.Generator, device: torch.device):
        if capacity < 2 * batch_size:
            raise ValueError(f"a buffer of {capacity} rows cannot serve half of itself in batches of {batch_size}")
        self.source = source
        self.capacity = capacity
        self.batch_size = batch_size
        self.generator = generator
        self.device = device
        self.rows = torch.empty(0, source.width, device=device)
        self.next_chunk = 0  # the next chunk of the source to read
        self.ready = 0  # rows at the front of ``rows`` already permuted and not yet served
        self.served_in_epoch = 0

    def start_epoch(self) -> None:
        """Begin a new pass over the source."""
        self.rows = torch.empty(0, self.source.width, device=self.device)
        self.next_chunk, self.ready, self.served_in_epoch = 0, 0, 0

    def batches(self, limit: int) -> Iterator[torch.Tensor]:
        """Yield up to ``limit`` batches [batch_size, d_in] of this epoch (continuing a resumed one)."""
        while self.served_in_epoch < limit:
            if self.ready >= self.batch_size:
                batch, self.rows = self.rows[: self.batch_size], self.rows[self.batch_size :]
                self.ready -= self.batch_size
                self.served_in_epoch += 1
                yield batch
                continue
            if not self._refill():
                return

    def _refill(self) -> bool:
        """Read until the buffer is full (or the source ends), permute, and mark rows ready; False when nothing is left."""
        incoming = []
        held = self.rows.shape[0]
        if self.next_chunk < self.source.n_chunks:
            for rows in self.source.rows_from(self.next_chunk):
                incoming.append(rows.to(self.device, torch.float32))
                held += rows.shape[0]
                self.next_chunk += 1
                if held >= self.capacity:
                    break
        if incoming:
            self.rows = torch.cat([self.rows, *incoming])
        finished = self.next_chunk >= self.source.n_chunks
        if self.rows.shape[0] < self.batch_size:
            return False
        order = torch.randperm(self.rows.shape[0], generator=self.generator, device="cpu")
        self.rows = self.rows[order.to(self.device)]
        whole = self.rows.shape[0] if finished else self.rows.shape[0] // 2
        self.ready = (whole // self.batch_size) * self.batch_size
        return self.ready > 0

    def state_dict(self) -> dict[str, Any]:
        """Return everything needed to continue exactly (rows on the CPU)."""
        return {
            "rows": self.rows.cpu(),
            "next_chunk": self.next_chunk,
            "ready": self.ready,
            "served_in_epoch": self.served_in_epoch,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``."""
        self.rows = state["rows"].to(self.device)
        self.next_chunk, self.ready, self.served_in_epoch = state["next_chunk"], state["ready"], state["served_in_epoch"]
        self.generator.set_state(state["generator"])
