"""Training through a bounded shuffling buffer: the same batches as in memory when it holds everything,
every row once per epoch and bounded memory when it does not, and an exact resume from a checkpoint."""

import pytest
import torch

from harness.dictionaries.activation_buffer import ShuffleBuffer, TensorSource
from harness.dictionaries.training import TrainingConfig, dictionary_stats, train_dictionary
from harness.subject.residual_store import StoreSource, open_residual_store

HOOK = "blocks.1.hook_resid_post"


def sparse_data(n: int, d_in: int = 24, n_features: int = 48, seed: int = 0) -> torch.Tensor:
    """Rows made of a few of ``n_features`` directions each, on top of a large constant offset (like a residual stream)."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(n_features, d_in, generator=generator)
    codes = torch.rand(n, n_features, generator=generator) * (torch.rand(n, n_features, generator=generator) < 0.06)
    return codes @ directions + 4.0 + 0.05 * torch.randn(n, d_in, generator=generator)


def weights(dictionary) -> dict[str, torch.Tensor]:
    return {name: getattr(dictionary, name) for name in ("W_enc", "b_enc", "W_dec", "b_dec")}


def test_a_store_on_disk_through_a_whole_buffer_trains_what_the_tensor_in_memory_does(tmp_path):
    rows = sparse_data(40 * 16).reshape(40, 16, -1)
    store = open_residual_store(tmp_path, HOOK, 40, 16, rows.shape[2], torch.float32)
    store.write(list(range(40)), rows)
    train_ids = tuple(range(36))
    config = TrainingConfig(d_sae=32, sparsity_coefficient=1.0, batch_size=32, epochs=2, seed=4)
    in_memory = train_dictionary(rows[:36].reshape(-1, rows.shape[2]), config, "a", HOOK)
    streamed = train_dictionary(StoreSource(store, train_ids, chunks_per_read=5), config, "a", HOOK)
    for name, tensor in weights(in_memory).items():
        assert torch.equal(weights(streamed)[name], tensor), name


def test_the_buffer_serves_every_row_once_per_epoch_within_its_capacity():
    rows = torch.arange(1000, dtype=torch.float32)[:, None].repeat(1, 3)
    source = TensorSource(rows, rows_per_chunk=37)
    buffer = ShuffleBuffer(source, capacity=200, batch_size=16, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    for _epoch in range(2):
        buffer.start_epoch()
        served, largest = [], 0
        for batch in buffer.batches(limit=1000 // 16):
            largest = max(largest, buffer.storage.shape[0])
            served.append(batch[:, 0])
        values = torch.cat(served).long().tolist()
        assert len(values) == (1000 // 16) * 16 and len(set(values)) == len(values)  # each row at most once, all but < 1 batch
        assert largest <= 200 + 37  # capacity plus the chunk that filled it
        assert values[:16] != sorted(values[:16])  # shuffled


def test_a_smaller_buffer_trains_a_dictionary_of_nearly_the_same_quality():
    data = sparse_data(16384, seed=1)
    config = TrainingConfig(d_sae=64, sparsity_coefficient=0.3, batch_size=64, epochs=2, seed=2)
    whole = dictionary_stats(train_dictionary(data, config, "a", HOOK), data)
    eighth = dictionary_stats(train_dictionary(data, TrainingConfig(**{**config.__dict__, "buffer_tokens": 2048}), "a", HOOK), data)
    assert eighth.l0 == pytest.approx(whole.l0, rel=0.05)
    assert eighth.variance_explained == pytest.approx(whole.variance_explained, rel=0.02)


class InterruptError(Exception):
    pass


def test_an_interrupted_training_resumes_to_the_uninterrupted_result(tmp_path):
    data = sparse_data(3000, seed=3)
    config = TrainingConfig(d_sae=32, sparsity_coefficient=1.0, batch_size=50, epochs=2, seed=5, buffer_tokens=700)
    expected = train_dictionary(data, config, "a", HOOK)
    checkpoint = tmp_path / "sae.training.pt"
    for stop in (17, 75, 100):  # within an epoch, in the second epoch, and just after one ended

        def interrupt_at(step: int, _total: int, _loss: float, stop: int = stop) -> None:
            if step == stop:
                raise InterruptError

        with pytest.raises(InterruptError):
            train_dictionary(data, config, "a", HOOK, on_step=interrupt_at, checkpoint=checkpoint, checkpoint_seconds=0.0)
        assert checkpoint.exists()
    resumed = train_dictionary(data, config, "a", HOOK, checkpoint=checkpoint, checkpoint_seconds=0.0)
    for name, tensor in weights(expected).items():
        assert torch.equal(weights(resumed)[name], tensor), name
    assert not checkpoint.exists()
