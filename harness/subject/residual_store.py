"""The residual store: one hook's activations of every corpus chunk on disk, in the model's dtype.

The activation pass writes it once; training, dictionary statistics and indexing read it,
so they need no second forward pass. It is optional (``model.store_residuals``): without it
those stages run the model again over the chunks they need (``ForwardSource``).

The file is raw row-major [n_chunks, T, width] values with no header, named after the hook and
the dtype (``blocks.9.hook_resid_post.bf16``): n_chunks × T × width × (4, 2 or 2) bytes. bfloat16,
which numpy lacks, is stored as its raw 16-bit patterns. A sidecar JSON file lists the chunk
ranges written, so an interrupted pass resumes and a store is never read where it was not
written. Reads and writes are plain file I/O, not a memory map, whose touched pages would stay
in the process's resident set and make it grow with the tokens read.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import MonoscopeError
from harness.storage import atomic_write_json, read_json

STORE_SUFFIXES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


@dataclass(frozen=True)
class ResidualStore:
    """A residual store file: ``n_chunks`` chunks of ``context_length`` tokens × ``width`` values of ``dtype``."""

    path: Path
    n_chunks: int
    context_length: int
    width: int
    dtype: torch.dtype

    @property
    def chunk_bytes(self) -> int:
        """Return the bytes of one chunk (T × width × itemsize)."""
        return self.context_length * self.width * self.dtype.itemsize

    @property
    def ranges_path(self) -> Path:
        """Return the sidecar file listing the chunk ranges written."""
        return self.path.with_name(self.path.name + ".json")

    def written(self) -> set[int]:
        """Return the ids of the chunks written so far (as of the last ``mark_written``)."""
        if not self.ranges_path.exists():
            return set()
        return {chunk for start, stop in read_json(self.ranges_path)["chunk_ranges"] for chunk in range(start, stop)}

    def mark_written(self, chunks: set[int]) -> None:
        """Record ``chunks`` as written (call after the writes they name)."""
        atomic_write_json(self.ranges_path, {"chunk_ranges": _ranges(sorted(chunks)), "dtype": STORE_SUFFIXES[self.dtype]})

    def write(self, chunk_ids: list[int], rows: torch.Tensor) -> None:
        """Write ``rows`` [len(chunk_ids), T, width] (any device and float dtype) at ``chunk_ids``."""
        data = rows.detach().to(self.dtype).cpu().contiguous()
        raw = data.view(torch.int16) if self.dtype == torch.bfloat16 else data
        array = raw.numpy()
        with open(self.path, "r+b") as handle:
            for row, chunk in enumerate(chunk_ids):
                handle.seek(chunk * self.chunk_bytes)
                handle.write(memoryview(array[row]).cast("B"))

    def read(self, chunk_ids: list[int]) -> torch.Tensor:
        """Return the chunks ``chunk_ids`` as float32 [len(chunk_ids), T, width] on the CPU."""
        raw_dtype = torch.int16 if self.dtype == torch.bfloat16 else self.dtype
        out = torch.empty(len(chunk_ids), self.context_length, self.width, dtype=raw_dtype)
        array = out.numpy()
        with open(self.path, "rb") as handle:
            for row, chunk in enumerate(chunk_ids):
                handle.seek(chunk * self.chunk_bytes)
                if handle.readinto(memoryview(array[row]).cast("B")) != self.chunk_bytes:
                    raise OSError(f"{self.path} ends before chunk {chunk}")
        return (out.view(torch.bfloat16) if self.dtype == torch.bfloat16 else out).float()


def open_residual_store(directory: Path, hook: str, n_chunks: int, context_length: int, width: int, dtype: torch.dtype) -> ResidualStore:
    """Return the store of ``hook`` under ``directory``, creating its file (n_chunks × T × width values) if missing.

    Raises MonoscopeError for a dtype with no store format, or an existing file of another size.
    """
    if dtype not in STORE_SUFFIXES:
        raise MonoscopeError(f"no residual store format for {dtype}", f"use one of {', '.join(str(d) for d in STORE_SUFFIXES)}")
    store = ResidualStore(directory / f"{hook}.{STORE_SUFFIXES[dtype]}", n_chunks, context_length, width, dtype)
    size = n_chunks * store.chunk_bytes
    directory.mkdir(parents=True, exist_ok=True)
    if not store.path.exists():
        with open(store.path, "wb") as handle:
            handle.truncate(size)  # sparse until written
    elif os.path.getsize(store.path) != size:
        raise MonoscopeError(
            f"{store.path} holds {os.path.getsize(store.path)} bytes, not the {size} of {n_chunks} chunks × {context_length} × {width}",
            "the corpus or model changed: start a new run directory",
        )
    return store


def store_bytes(tokens: int, width: int, dtype: torch.dtype) -> int:
    """Return the disk size in bytes of a store of ``tokens`` tokens × ``width`` values of ``dtype``."""
    return tokens * width * dtype.itemsize


@dataclass(frozen=True)
class StoreSource:
    """The chunks ``chunk_ids`` of a residual store as an activation source (``chunks_per_read`` chunks per read)."""

    store: ResidualStore
    chunk_ids: tuple[int, ...]
    chunks_per_read: int = 64

    @property
    def n_rows(self) -> int:
        """Return the number of tokens of the selected chunks."""
        return len(self.chunk_ids) * self.store.context_length

    @property
    def width(self) -> int:
        """Return the store's width (d_in)."""
        return self.store.width

    @property
    def n_chunks(self) -> int:
        """Return the number of reads."""
        return -(-len(self.chunk_ids) // self.chunks_per_read)

    def rows_from(self, chunk: int) -> Iterator[torch.Tensor]:
        """Yield float32 rows [chunks_per_read × T, width] on the CPU, from read ``chunk`` on."""
        for start in range(chunk * self.chunks_per_read, len(self.chunk_ids), self.chunks_per_read):
            yield self.store.read(list(self.chunk_ids[start : start + self.chunks_per_read])).reshape(-1, self.width)


def _ranges(ids: list[int]) -> list[list[int]]:
    """Return sorted ids as [start, stop) runs."""
    runs: list[list[int]] = []
    for chunk in ids:
        if runs and runs[-1][1] == chunk:
            runs[-1][1] = chunk + 1
        else:
            runs.append([chunk, chunk + 1])
    return runs
