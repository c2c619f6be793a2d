"""Stream hook activations over corpus chunks, one batch of chunks at a time."""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from harness.subject.model import SubjectModel, collect_activations

# Tokens per batch when the config gives none, by device type: (forward pass, index update).
# The forward default on a GPU is the 256 × 128-token batch measured at 886k tokens/s on an H200
# (../shared/research/gpu-throughput.md); the CPU's is today's 32 × 64 tokens. The training batch
# is part of the recipe, so its default (256) does not depend on the device: the same config
# trains the same dictionary on a CPU and a GPU.
DEVICE_BATCH_TOKENS = {"cpu": (2048, 4096), "cuda": (32768, 65536), "mps": (8192, 16384)}


def default_forward_chunks(device: str, context_length: int) -> int:
    """Return the chunks per forward pass when the config gives none: the device type's default tokens ÷ context length."""
    tokens = DEVICE_BATCH_TOKENS.get(device.split(":")[0], DEVICE_BATCH_TOKENS["cpu"])[0]
    return max(1, tokens // context_length)


@dataclass(frozen=True)
class ActivationBatch:
    """Activations of one batch of chunks: chunk ids [B] and {hook: [B, T, width]}."""

    chunk_ids: torch.Tensor
    activations: dict[str, torch.Tensor]


def stream_activations(
    subject: SubjectModel,
    chunks: np.ndarray,
    hooks: list[str],
    chunk_ids: list[int],
    batch_size: int,
) -> Iterator[ActivationBatch]:
    """Yield hook activations for the chunks ``chunk_ids`` in batches of ``batch_size`` chunks."""
    for start in range(0, len(chunk_ids), batch_size):
        ids = chunk_ids[start : start + batch_size]
        tokens = torch.from_numpy(chunks[ids].astype(np.int64))
        yield ActivationBatch(torch.tensor(ids, dtype=torch.int64, device="cpu"), collect_activations(subject, tokens, hooks))


@dataclass(frozen=True)
class ForwardSource:
    """The activations of one hook over corpus chunks ``chunk_ids``, computed by running the model (no store needed).

    An activation source (harness.dictionaries.activation_buffer): each read is one forward pass over
    ``batch_size`` chunks, and its rows [batch_size × T, width] stay on the model's device in the
    hook's dtype. Reading the source again runs the model again.
    """

    subject: SubjectModel
    chunks: np.ndarray
    chunk_ids: tuple[int, ...]
    hook: str
    width: int
    batch_size: int

    @property
    def n_rows(self) -> int:
        """Return the number of tokens of the selected chunks."""
        return len(self.chunk_ids) * int(self.chunks.shape[1])

    @property
    def n_chunks(self) -> int:
        """Return the number of forward passes a full read takes."""
        return -(-len(self.chunk_ids) // self.batch_size)

    def rows_from(self, chunk: int) -> Iterator[torch.Tensor]:
        """Yield the rows of each forward pass from pass ``chunk`` on."""
        ids = list(self.chunk_ids[chunk * self.batch_size :])
        for batch in stream_activations(self.subject, self.chunks, [self.hook], ids, self.batch_size):
            yield batch.activations[self.hook].reshape(-1, self.width)
