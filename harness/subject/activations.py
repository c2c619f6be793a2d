"""Stream hook activations over corpus chunks, one batch of chunks at a time."""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from harness.subject.model import SubjectModel, collect_activations


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
