"""Every stage follows the device of its inputs: device mistakes caught on a CPU-only machine.

Inside ``with torch.device("meta"):`` a tensor created without naming a device lands on the meta
device, and mixing it with the CPU inputs fails loudly. A stage that creates each tensor on the
device of its inputs (or of its configured device) runs there as outside the context and gives the
same result. The seeding rule (initial weights drawn on the CPU from the seed, then moved) is tested
on its own: a CPU generator inside the meta context would otherwise yield meta tensors. The local
backend's test of the same kind is in tests/test_backend_local.py.
"""

from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from harness.compare.correlation import CorrelationAccumulator, correlate_features
from harness.compare.splitting import nearest_features
from harness.dictionaries.dictionary import Dictionary, dictionary_to, encode
from harness.dictionaries.training import TrainingConfig, cpu_permutation, dictionary_stats, initial_decoder, train_dictionary
from harness.index.state import IndexConfig, IndexState, index_to, new_index, update_index
from tests.index_equality import assert_same_index

META = torch.device("meta")


def sparse_activations(seed: int, shape: tuple[int, int, int], density: float = 0.1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(shape, generator=generator) * 4
    keep = torch.rand(shape, generator=generator) < density
    return torch.where(keep, values, -torch.rand(shape, generator=generator) * keep.logical_not() * (values > 3.5))


def random_dictionary(d_in: int, d_sae: int, seed: int) -> Dictionary:
    generator = torch.Generator().manual_seed(seed)
    return Dictionary(
        name=f"sae-{d_sae}",
        hook_name="blocks.1.hook_resid_post",
        architecture="relu",
        d_in=d_in,
        d_sae=d_sae,
        W_enc=torch.randn(d_in, d_sae, generator=generator),
        b_enc=torch.randn(d_sae, generator=generator) * 0.1,
        W_dec=torch.randn(d_sae, d_in, generator=generator),
        b_dec=torch.randn(d_in, generator=generator) * 0.1,
    )


def state_tensors(state: IndexState) -> dict[str, torch.Tensor]:
    tensors = {name: getattr(state, name) for name in ("fire_count", "negative_count", "activation_sum", "maximum", "minimum", "histogram")}
    for kind, slots in state.slots.items():
        for field in fields(slots):
            value = getattr(slots, field.name)
            if value is not None:
                tensors[f"{kind}.{field.name}"] = value
    return tensors


def assert_same_state(first: IndexState, second: IndexState) -> None:
    assert (first.n_tokens, first.chunk_ranges) == (second.n_tokens, second.chunk_ranges)
    one, other = state_tensors(first), state_tensors(second)
    assert one.keys() == other.keys()
    for name in one:
        assert one[name].device == other[name].device == torch.device("cpu"), name
        assert torch.equal(one[name], other[name]), name


def test_index_update_creates_its_tensors_on_the_state_device():
    config = IndexConfig(top_k=4, interval_samples=2, random_nonzero=3, random_zero=3, window_before=3, window_after=2)
    batches = [(sparse_activations(seed, (3, 16, 40)), torch.tensor([3 * seed, 3 * seed + 1, 3 * seed + 2])) for seed in range(3)]
    expected = new_index(40, config, 16)
    for acts, chunk_ids in batches:
        update_index(expected, acts, chunk_ids, unit_block=16)
    state = new_index(40, config, 16, device="cpu")
    with META:
        for acts, chunk_ids in batches:
            update_index(state, acts, chunk_ids, unit_block=16)
    assert_same_state(state, expected)
    assert expected.fire_count.sum() > 0 and (expected.slots["zero"].chunk >= 0).any()


def test_a_new_index_lives_where_it_is_told_and_moves_back():
    config = IndexConfig()
    state = new_index(8, config, 32, device=META)
    assert all(tensor.device == META for tensor in state_tensors(state).values())
    cpu_state = new_index(8, config, 32)
    with META:
        moved = index_to(new_index(8, config, 32, device="cpu"), "cpu")
    assert_same_state(moved, cpu_state)


def test_training_and_statistics_follow_the_training_device():
    activations = torch.randn(512, 16, generator=torch.Generator().manual_seed(1)) + 3.0
    config = TrainingConfig(d_sae=32, sparsity_coefficient=1.0, batch_size=64, seed=5)
    expected = train_dictionary(activations, config, "sae-32", "blocks.1.hook_resid_post")
    expected_stats = dictionary_stats(expected, activations, batch_size=100)
    with META:
        trained = train_dictionary(activations, config, "sae-32", "blocks.1.hook_resid_post", device="cpu")
        stats = dictionary_stats(trained, activations, batch_size=100, device="cpu")
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert getattr(trained, name).device == torch.device("cpu")
        assert torch.equal(getattr(trained, name), getattr(expected, name)), name
    assert stats == expected_stats


def test_initial_weights_and_order_are_drawn_on_the_cpu_from_the_seed():
    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(11)
        return initial_decoder(6, 4, generator), cpu_permutation(50, generator)

    decoder, order = draw()
    with META:  # the active default device must not change what the seed draws, nor where
        meta_decoder, meta_order = draw()
    assert meta_decoder.device == meta_order.device == torch.device("cpu")
    assert torch.equal(meta_decoder, decoder) and torch.equal(meta_order, order)
    assert torch.allclose(decoder.norm(dim=-1), torch.full((6,), 0.1))


def test_dictionary_to_moves_every_weight_and_keeps_the_original():
    dictionary = random_dictionary(8, 12, seed=0)
    moved = dictionary_to(dictionary, META)
    assert all(getattr(moved, name).device == META for name in ("W_enc", "b_enc", "W_dec", "b_dec"))
    assert dictionary.W_enc.device == torch.device("cpu")
    assert replace(moved, W_enc=None, b_enc=None, W_dec=None, b_dec=None).d_sae == 12


def test_correlation_follows_the_subject_model_device(tiny_gemma):
    chunks = np.random.default_rng(0).integers(10, 128, size=(6, 16))
    features = [(random_dictionary(tiny_gemma.d_model, 24, seed=1), [0, 5, 17])]
    expected = correlate_features(tiny_gemma, chunks, [0, 2, 4, 5], features, batch_size=2)
    with META:
        found = correlate_features(tiny_gemma, chunks, [0, 2, 4, 5], features, batch_size=2)
    assert found == expected


def test_correlation_accumulator_state_follows_its_first_batch():
    x, y = torch.randn(40, 3, dtype=torch.float64), torch.randn(40, 5, dtype=torch.float64)
    expected = CorrelationAccumulator(3, 5)
    expected.update(x, y)
    with META:
        accumulator = CorrelationAccumulator(3, 5)
        accumulator.update(x, y)
    assert accumulator.device == torch.device("cpu")
    assert np.array_equal(accumulator.pearson(), expected.pearson(), equal_nan=True)


def test_splitting_follows_the_decoders_device():
    small, large = random_dictionary(8, 6, seed=2), random_dictionary(8, 20, seed=3)
    expected = nearest_features(small, [0, 3, 5], large)
    with META:
        found = nearest_features(small, [0, 3, 5], large, device="cpu")
    assert found == expected


def test_encode_of_a_dictionary_on_another_device_fails_loudly():
    dictionary = dictionary_to(random_dictionary(8, 12, seed=0), META)
    try:
        encode(dictionary, torch.randn(2, 8))
    except (RuntimeError, NotImplementedError):
        return
    raise AssertionError("encode mixed a meta dictionary with CPU inputs without an error")


AVAILABLE = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", AVAILABLE)
def test_one_activation_tensor_gives_the_same_index_on_every_device_and_batch_split(device: str) -> None:
    """Integer fields equal and float fields within float32 rounding, whatever the device, batch split or unit block.

    On a CPU-only machine this runs for the CPU alone (batch and block splits); benchmarks/gpu_check.py runs it on a GPU.
    """
    acts = sparse_activations(7, (12, 16, 40), density=0.2)
    config = IndexConfig(top_k=3, interval_samples=2, random_nonzero=2, random_zero=2, window_before=3, window_after=2, seed=9)
    reference = new_index(40, config, 16)
    update_index(reference, acts, torch.arange(12))
    state = new_index(40, config, 16, device)
    for start in (0, 5, 9):
        stop = {0: 5, 5: 9, 9: 12}[start]
        update_index(state, acts[start:stop].to(device), torch.arange(start, stop), unit_block=7)
    assert_same_index(index_to(state, "cpu"), reference, rtol=1.2e-7 * 16, atol=1e-6)


def test_steering_follows_the_subject_model_device(tiny_gemma):
    from harness.steering.clamp import Clamp, clamped, clamped_residual
    from harness.steering.generate import next_token_kl

    dictionary = random_dictionary(tiny_gemma.d_model, 24, seed=2)
    clamp = Clamp(dictionary, (3, 7), (2.0, -1.0))
    x = torch.randn(2, 5, tiny_gemma.d_model, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([False, True, True, True, True])
    expected = clamped_residual(x, clamp, mask)
    ids = torch.tensor([[2, 11, 12, 13, 14, 15, 16]])
    expected_kl = next_token_kl(tiny_gemma, ids, 4, [clamp], first_clamped=1)
    with torch.inference_mode():
        with clamped(tiny_gemma, [clamp], first_clamped=1):
            expected_logits = tiny_gemma.model(ids, use_cache=False).logits
    with META:
        assert torch.equal(clamped_residual(x, clamp, mask), expected)
        assert torch.equal(next_token_kl(tiny_gemma, ids, 4, [clamp], first_clamped=1), expected_kl)
        with torch.inference_mode(), clamped(tiny_gemma, [clamp], first_clamped=1):
            assert torch.equal(tiny_gemma.model(ids, use_cache=False).logits, expected_logits)
