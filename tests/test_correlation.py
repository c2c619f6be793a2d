"""Streaming feature–neuron correlation: equals numpy.corrcoef, merges exactly, matches brute force on a tiny model."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import harness.compare.correlation
from harness.compare.correlation import CorrelationAccumulator, best_matches, correlate_features
from harness.dictionaries.dictionary import Dictionary, encode
from harness.errors import MonoscopeError
from harness.subject.model import collect_activations

BATCHES = [(0, 1), (1, 40), (40, 41), (41, 300), (300, 512)]  # uneven, including single-token batches


def awkward_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return x [512, 4], y [512, 6]: correlated columns with very different means and scales, one constant each."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(512, 1))
    x = rng.normal(size=(512, 4)) + latent
    x[:, 1] = 1000.0 + 0.01 * x[:, 1]
    x[:, 2] = 0.1  # constant, but its float mean is not exactly 0.1
    x[:, 3] = np.maximum(x[:, 3] - 1.5, 0.0) * 1e4  # sparse and large, like a ReLU feature
    y = rng.normal(size=(512, 6)) + 0.5 * latent
    y[:, 0] = -5e3 + 0.2 * y[:, 0]
    y[:, 2] = 1e-3 * y[:, 2]
    y[:, 4] = 7.0  # constant
    y[:, 5] = x[:, 1] * 3.0  # exactly correlated with an offset column
    return x, y


def accumulate(x: np.ndarray, y: np.ndarray, batches: list[tuple[int, int]]) -> CorrelationAccumulator:
    accumulator = CorrelationAccumulator(x.shape[1], y.shape[1])
    for start, stop in batches:
        accumulator.update(torch.from_numpy(x[start:stop]), torch.from_numpy(y[start:stop]))
    return accumulator


def reference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """numpy.corrcoef over all tokens in float64, with NaN for the columns that are constant."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.corrcoef(x.astype(np.float64), y.astype(np.float64), rowvar=False)[: x.shape[1], x.shape[1] :]
    constant_x = (x == x[0]).all(axis=0)
    constant_y = (y == y[0]).all(axis=0)
    r[constant_x, :] = np.nan
    r[:, constant_y] = np.nan
    return r


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-11), (np.float32, 1e-6)])
def test_streaming_correlation_equals_corrcoef(dtype, tolerance):
    x, y = (array.astype(dtype) for array in awkward_data(seed=1))
    accumulator = accumulate(x, y, BATCHES)
    r = accumulator.pearson()
    expected = reference(x, y)
    assert accumulator.n == 512
    assert r.dtype == np.float64 and r.shape == (4, 6)
    np.testing.assert_array_equal(np.isnan(r), np.isnan(expected))
    assert np.isnan(r[2]).all() and np.isnan(r[:, 4]).all(), "a constant variable has no correlation"
    np.testing.assert_allclose(r, expected, rtol=0, atol=tolerance)


def test_merge_equals_one_accumulator_over_all_tokens():
    x, y = awkward_data(seed=2)
    whole = accumulate(x, y, BATCHES)
    first = accumulate(x, y, BATCHES[:3])
    second = accumulate(x, y, BATCHES[3:])
    first.merge(second)
    empty = CorrelationAccumulator(4, 6)
    empty.merge(first)
    assert empty.n == whole.n == 512
    np.testing.assert_allclose(empty.pearson(), whole.pearson(), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.isnan(empty.pearson()), np.isnan(whole.pearson()))


def test_best_matches_takes_the_largest_signed_correlation_and_skips_nan():
    pearson = np.array([[0.1, -0.9, 0.5], [np.nan, np.nan, np.nan], [np.nan, -0.2, -0.3]])
    assert best_matches(pearson, ["a", "b", "c"]) == [("c", 0.5), (None, None), ("b", -0.2)]
    assert all(type(value) is float for _, value in best_matches(pearson, ["a", "b", "c"]) if value is not None)


def random_dictionary(name: str, d_in: int, d_sae: int, seed: int, architecture: str = "relu", k: int | None = None) -> Dictionary:
    generator = torch.Generator().manual_seed(seed)
    b_enc = -0.5 * torch.rand(d_sae, generator=generator)
    b_enc[0] = -1e4  # never fires: constant over every token
    return Dictionary(
        name=name,
        hook_name="blocks.1.hook_resid_post",
        architecture=architecture,
        d_in=d_in,
        d_sae=d_sae,
        W_enc=torch.randn(d_in, d_sae, generator=generator) / d_in**0.5,
        b_enc=b_enc,
        W_dec=torch.randn(d_sae, d_in, generator=generator),
        b_dec=torch.zeros(d_in),
        k=k,
    )


def test_correlate_features_matches_brute_force(tiny_gemma):
    chunks = np.random.default_rng(0).integers(10, 128, size=(12, 16))
    chunk_ids = [7, 0, 3, 11, 5, 2, 9]
    relu = random_dictionary("sae-relu", tiny_gemma.d_model, 24, seed=1)
    topk = random_dictionary("sae-topk", tiny_gemma.d_model, 16, seed=2, architecture="topk", k=4)
    features = [(relu, [5, 0, 17, 3]), (topk, [2, 9])]
    done: list[int] = []

    records = correlate_features(tiny_gemma, chunks, chunk_ids, features, batch_size=3, progress=done.append)

    assert done == [3, 3, 1]
    hooks = ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post", "blocks.1.hook_resid_post"]
    acts = collect_activations(tiny_gemma, torch.from_numpy(chunks[chunk_ids]).long(), hooks)
    resid = acts["blocks.1.hook_resid_post"].reshape(-1, tiny_gemma.d_model)
    neurons = torch.cat([acts[hook].reshape(-1, tiny_gemma.d_mlp) for hook in hooks[:2]], dim=1).double().numpy()
    neuron_names = [f"mlp.{layer}/{i}" for layer in range(2) for i in range(tiny_gemma.d_mlp)]
    residual_names = [f"resid.1/{i}" for i in range(tiny_gemma.d_model)]
    assert [record.unit for record in records] == ["sae-relu/5", "sae-relu/0", "sae-relu/17", "sae-relu/3", "sae-topk/2", "sae-topk/9"]
    for record, (dictionary, index) in zip(records, [(relu, i) for i in features[0][1]] + [(topk, i) for i in features[1][1]], strict=True):
        feature = encode(dictionary, resid)[:, index].double().numpy()
        assert record.dictionary == dictionary.name
        assert record.n_tokens == len(chunk_ids) * 16
        assert record.fire_count == int((feature > 0).sum())
        if index == 0 and dictionary is relu:
            assert record.fire_count == 0
            assert (record.max_neuron_correlation, record.neuron, record.max_residual_correlation, record.residual_direction) == (None,) * 4
            continue
        for found, name, columns, names in [
            (record.max_neuron_correlation, record.neuron, neurons, neuron_names),
            (record.max_residual_correlation, record.residual_direction, resid.double().numpy(), residual_names),
        ]:
            r = np.corrcoef(feature, columns, rowvar=False)[0, 1:]
            assert type(found) is float
            assert found == pytest.approx(r.max(), abs=1e-6)
            assert r[names.index(name)] == pytest.approx(r.max(), abs=1e-6), "the named unit attains the maximum"


def bad_inputs(dictionary: Dictionary) -> dict[str, tuple[list[tuple[Dictionary, list[int]]], list[int], str]]:
    """Name → (features, chunk ids, expected error) for inputs correlate_features must reject."""
    return {
        "mixed hooks": (
            [(dictionary, [1]), (replace(dictionary, name="b", hook_name="blocks.2.hook_resid_post"), [1])],
            [0],
            "different hooks",
        ),
        "mlp hook": ([(replace(dictionary, hook_name="blocks.1.mlp.hook_post"), [1])], [0], "residual-stream hook"),
        "index out of range": ([(dictionary, [1, 8])], [0], "out of range"),
        "no chunks": ([(dictionary, [1])], [], "no chunks"),
    }


@pytest.mark.parametrize("case", ["mixed hooks", "mlp hook", "index out of range", "no chunks"])
def test_bad_input_fails_before_any_forward_pass(tiny_gemma, monkeypatch, case):
    def no_forward_pass(*args, **kwargs):
        raise AssertionError("a forward pass ran before validation")

    monkeypatch.setattr(harness.compare.correlation, "stream_activations", no_forward_pass)
    features, chunk_ids, message = bad_inputs(random_dictionary("a", tiny_gemma.d_model, 8, seed=3))[case]
    with pytest.raises(MonoscopeError, match=message):
        correlate_features(tiny_gemma, np.zeros((4, 16), dtype=np.int64), chunk_ids, features, batch_size=2)
