"""`monoscope index` end to end on a tiny model: shards merge to the whole; an interrupted run resumes."""

from pathlib import Path

import pytest
import torch

import harness.api
from harness.api import index_command, merge_command
from harness.index.state import IndexConfig
from harness.index.store import load_index
from tests.test_index import assert_same

TEXT = " ".join(f"w{i % 97} x{i % 13}" for i in range(3000))
INDEX_CONFIG = IndexConfig(top_k=4, interval_samples=1, bins_per_octave=2, random_nonzero=2, random_zero=2, window_before=3, window_after=1)


@pytest.fixture
def tiny_setup(tmp_path: Path, monkeypatch, tiny_gemma):
    (tmp_path / "corpus.txt").write_text(TEXT)
    monkeypatch.setattr(harness.api, "model_shape", lambda name: (tiny_gemma.n_layers, tiny_gemma.d_model, tiny_gemma.d_mlp))
    monkeypatch.setattr(harness.api, "load_subject_model", lambda *args: tiny_gemma)
    options = dict(
        model="tiny",
        corpus=str(tmp_path / "corpus.txt"),
        tokens=1024,
        context_length=16,
        batch_size=8,
        device="cpu",
        dtype="float32",
        seed=3,
        index_config=INDEX_CONFIG,
        checkpoint_seconds=0.0,
    )
    return tmp_path, options


def build(run_dir: Path, options: dict, chunk_range=None) -> list[Path]:
    return index_command(run_dir, ["neurons:1", "residual-basis:2"], chunk_range, log=lambda _m: None, **options)


def test_partial_indexes_over_chunk_ranges_merge_to_the_whole_index(tiny_setup):
    tmp_path, options = tiny_setup
    whole = build(tmp_path / "whole", options)
    n_chunks = options["tokens"] // options["context_length"]
    parts = [build(tmp_path / "parts", options, chunk_range=r) for r in ((0, 5), (5, n_chunks))]  # uneven, not batch-aligned
    assert [p.name for p in parts[0]] == ["mlp.1.chunks-0-5.safetensors", "resid.2.chunks-0-5.safetensors"]
    for which in range(2):
        merge_command(tmp_path / f"merged{which}.safetensors", [parts[1][which], parts[0][which]], log=lambda _m: None)
        merged, _ = load_index(tmp_path / f"merged{which}.safetensors")
        expected, _ = load_index(whole[which])
        assert_same(merged, expected)


def test_interrupted_index_resumes_without_repeating_work(tiny_setup, monkeypatch):
    tmp_path, options = tiny_setup
    reference = build(tmp_path / "reference", options)
    original = harness.api.stream_activations
    seen: list[int] = []

    def interrupted(*args, **kwargs):
        for number, batch in enumerate(original(*args, **kwargs)):
            if number == 4:
                raise KeyboardInterrupt
            seen.extend(batch.chunk_ids.tolist())
            yield batch

    monkeypatch.setattr(harness.api, "stream_activations", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "resumed", options)
    partial, _ = load_index(tmp_path / "resumed" / "index" / "mlp.1.safetensors")
    assert 0 < partial.n_tokens < 64 * 16, "the kill landed mid-stage"

    resumed_chunks: list[int] = []

    def counting(*args, **kwargs):
        for batch in original(*args, **kwargs):
            resumed_chunks.extend(batch.chunk_ids.tolist())
            yield batch

    monkeypatch.setattr(harness.api, "stream_activations", counting)
    paths = build(tmp_path / "resumed", options)
    assert not set(resumed_chunks) & set(seen), "finished chunks are not run again"
    for path, expected_path in zip(paths, reference, strict=True):
        assert_same(load_index(path)[0], load_index(expected_path)[0])


def test_recorded_activations_match_a_fresh_forward_pass(tiny_setup, tiny_gemma):
    from harness.index.store import unit_samples
    from harness.subject.corpus import load_chunks
    from harness.subject.model import collect_activations

    tmp_path, options = tiny_setup
    path = build(tmp_path / "run", options)[0]
    state, _ = load_index(path)
    chunks = load_chunks(tmp_path / "run" / "corpus")
    for unit in range(0, state.n_units, 7):
        for sample in unit_samples(state, unit, f"mlp.1/{unit}"):
            fresh = collect_activations(
                tiny_gemma, torch.from_numpy(chunks[sample.chunk : sample.chunk + 1]).long(), ["blocks.1.mlp.hook_post"]
            )
            window = fresh["blocks.1.mlp.hook_post"][0, sample.window_start : sample.window_start + INDEX_CONFIG.window, unit]
            torch.testing.assert_close(window, torch.tensor(sample.activations), rtol=1e-4, atol=1e-5)
