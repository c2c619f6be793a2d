"""The residual store in the model's dtype, and foundations built without one (training and indexing from the model)."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import harness.run.foundation
from harness.config import config_from_mapping
from harness.dictionaries.formats import load_saelens_directory
from harness.errors import MonoscopeError
from harness.index.store import load_index
from harness.run.directory import prepare_run_directory
from harness.run.foundation import build_foundation, collect_foundation_activations, prepare_corpus
from harness.subject.residual_store import StoreSource, open_residual_store
from tests.index_equality import assert_same_index
from tests.tiny_models import ByteTokenizer, tiny_byte_gemma, tiny_gemma_model

HOOK = "blocks.2.hook_resid_post"
CONFIG = {
    "seed": 1,
    "model": {"name": "tiny-byte-gemma", "layer": 2, "batch_size": 8},
    "corpus": {"tokens": 4096, "context_length": 32},
    "dictionaries": {"train": [16, 48], "training_batch_size": 64},
    "index": {"top_k": 4, "interval_samples": 1, "random_nonzero": 2, "random_zero": 2, "window_before": 5, "window_after": 2},
    "neurons": {"pool_size": 16},
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_a_store_keeps_the_values_of_its_dtype_at_its_dtypes_size(tmp_path: Path, dtype: torch.dtype) -> None:
    rows = torch.randn(6, 5, 7, generator=torch.Generator().manual_seed(0)) * 30
    store = open_residual_store(tmp_path, HOOK, 6, 5, 7, dtype)
    store.write([4, 1], rows[[4, 1]])
    store.write([0, 2, 3, 5], rows[[0, 2, 3, 5]].to(dtype))
    assert store.path.stat().st_size == 6 * 5 * 7 * dtype.itemsize
    assert torch.equal(store.read([5, 0, 3]), rows[[5, 0, 3]].to(dtype).float())
    source = StoreSource(store, (1, 2, 4), chunks_per_read=2)
    assert torch.equal(torch.cat(list(source.rows_from(1))), rows[[4]].to(dtype).float().reshape(-1, 7))


def test_a_store_of_another_shape_is_refused_before_it_is_read(tmp_path: Path) -> None:
    open_residual_store(tmp_path, HOOK, 6, 5, 7, torch.float32)
    with pytest.raises(MonoscopeError, match="not the 280 of 2 chunks"):
        open_residual_store(tmp_path, HOOK, 2, 5, 7, torch.float32)
    with pytest.raises(MonoscopeError, match="no residual store format"):
        open_residual_store(tmp_path, HOOK, 6, 5, 7, torch.int8)


@pytest.fixture
def patched_subject(monkeypatch: pytest.MonkeyPatch):
    """Let the foundation load a tiny random Gemma (byte tokenizer) whatever the config names."""
    subjects = {"float32": tiny_byte_gemma()}

    def load(name: str, device: str = "cpu", dtype: str = "float32"):
        if dtype not in subjects:
            from harness.subject.model import wrap_model

            subjects[dtype] = wrap_model(tiny_gemma_model().to(getattr(torch, dtype)), ByteTokenizer(), name="tiny-byte-gemma")
        return subjects[dtype]

    monkeypatch.setattr(harness.run.foundation, "load_subject_model", load)
    monkeypatch.setenv("MONOSCOPE_PROGRESS", "0")
    return subjects


def test_without_a_store_the_foundation_trains_and_indexes_what_it_does_with_one(tmp_path: Path, patched_subject) -> None:
    with_store = config_from_mapping(CONFIG)
    without = replace(with_store, foundation=replace(with_store.foundation, store_residuals=False))
    for name, config in (("store", with_store), ("model", without)):
        prepare_run_directory(tmp_path / name)
        build_foundation(tmp_path / name, config, lambda message: None)
    assert list((tmp_path / "store" / "activations").glob("*.f32"))
    assert not (tmp_path / "model" / "activations").exists() or not list((tmp_path / "model" / "activations").iterdir())
    for name in ("sae-16", "sae-48"):
        kept = load_saelens_directory(tmp_path / "store" / "dictionaries" / name, name)
        rerun = load_saelens_directory(tmp_path / "model" / "dictionaries" / name, name)
        for weight in ("W_enc", "b_enc", "W_dec", "b_dec"):
            torch.testing.assert_close(getattr(rerun, weight), getattr(kept, weight), rtol=1e-4, atol=1e-5)
    for name in ("sae-16", "sae-48", "neurons"):
        kept, _ = load_index(tmp_path / "store" / "index" / f"{name}.safetensors")
        rerun, _ = load_index(tmp_path / "model" / "index" / f"{name}.safetensors")
        assert_same_index(rerun, kept, rtol=1e-4, atol=1e-5)


def test_the_store_is_kept_in_the_models_dtype_and_refilled_without_reindexing(tmp_path: Path, patched_subject) -> None:
    config = config_from_mapping(CONFIG | {"model": CONFIG["model"] | {"dtype": "bfloat16"}}).foundation
    subject = harness.run.foundation.load_subject_model("tiny-byte-gemma", "cpu", "bfloat16")
    chunks = prepare_corpus(tmp_path, subject, config, lambda message: None)
    store = collect_foundation_activations(tmp_path, subject, chunks, config, lambda message: None)
    assert store is not None and store.path.name == f"{HOOK}.bf16"
    assert store.path.stat().st_size == chunks.size * 32 * 2
    first = store.read(list(range(chunks.shape[0])))
    neurons_before, _ = load_index(tmp_path / "index" / "neurons.safetensors")
    store.path.unlink()
    store.ranges_path.unlink()  # the store is lost, the neuron index is not: only the store is refilled
    store = collect_foundation_activations(tmp_path, subject, chunks, config, lambda message: None)
    assert store is not None and torch.equal(store.read(list(range(chunks.shape[0]))), first)
    neurons_after, _ = load_index(tmp_path / "index" / "neurons.safetensors")
    assert neurons_after.n_tokens == neurons_before.n_tokens == chunks.size


def test_a_run_resumes_with_other_batch_sizes_or_store_but_not_with_another_corpus(tmp_path: Path) -> None:
    from harness.run.directory import update_manifest
    from harness.run.runner import _jsonable, check_same_foundation

    config = config_from_mapping(CONFIG)
    prepare_run_directory(tmp_path)
    update_manifest(tmp_path, config=_jsonable(config))
    faster = replace(config.foundation, batch_size=64, index_batch_tokens=65536, checkpoint_seconds=5.0, store_residuals=False)
    check_same_foundation(tmp_path, replace(config, foundation=faster))
    for changed, names in (
        (replace(config.foundation, tokens=8192), "tokens"),
        (replace(config.foundation, seed=2, layer=1), "layer, seed"),
    ):
        with pytest.raises(MonoscopeError, match=f"another foundation config \\({names} differ\\)"):
            check_same_foundation(tmp_path, replace(config, foundation=changed))
