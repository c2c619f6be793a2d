"""The pipeline stages of issue-2 scope: corpus → activations → dictionaries → index.

Each stage reads what the stage before it wrote into the run directory and
writes its own output; each skips work that is already on disk, so an
interrupted run resumes where it stopped.
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.activations import stream_activations
from harness.corpus import chunk_documents, corpus_documents, load_chunks, save_chunks
from harness.dictionaries import STATS_FILE, Dictionary, encode, load_saelens_directory, save_saelens_directory
from harness.errors import MonoscopeError
from harness.index import IndexConfig, new_index, update_index
from harness.index_store import load_index, save_index
from harness.model import SubjectModel, parse_hook
from harness.neurons import POOL_NAME, pool_activations, pool_dictionary, pool_hooks, pool_unit_names, sample_neuron_pool
from harness.progress import progress_bar
from harness.runs import timed_stage
from harness.storage import atomic_write_json, read_json
from harness.training import TrainingConfig, dictionary_stats, train_dictionary

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FoundationConfig:
    """Settings of the foundation stages (corpus, activations, dictionaries, index)."""

    model: str = "embedded"
    layer: int | None = None  # None: the middle block
    corpus: str = "python-stdlib"
    text_field: str = "text"
    tokens: int = 262_144
    context_length: int = 64
    batch_size: int = 32
    device: str = "cpu"
    dtype: str = "float32"
    dictionary_sizes: tuple[int, ...] = (512, 2048, 8192)
    sparsity_coefficient: float = 2.0
    learning_rate: float = 1e-3
    training_batch_size: int = 256
    epochs: int = 1
    held_out_fraction: float = 0.1
    seed: int = 0
    index: IndexConfig = field(default_factory=IndexConfig)
    neuron_pool_size: int = 512  # MLP neurons of blocks 0..L indexed as the neuron baseline (harness.neurons)
    checkpoint_seconds: float = 60.0


def dictionary_label(size: int) -> str:
    """Return the short name of a trained dictionary of ``size`` features, e.g. ``sae-4k``."""
    return f"sae-{size // 1024}k" if size % 1024 == 0 else f"sae-{size}"


def prepare_corpus(run_dir: Path, subject: SubjectModel, config: FoundationConfig, log: Progress) -> np.ndarray:
    """Return the run's token chunks, tokenizing the corpus on first use."""
    path = run_dir / "corpus"
    if path.with_suffix(".npy").exists():
        chunks = load_chunks(path)
        log(f"corpus: reusing {chunks.shape[0]} chunks × {chunks.shape[1]} tokens")
        return chunks
    with timed_stage(run_dir, "corpus"):
        chunks = chunk_documents(
            corpus_documents(config.corpus, config.text_field), subject.tokenizer, config.context_length, config.tokens
        )
        description = {
            "corpus": config.corpus,
            "context_length": config.context_length,
            "n_chunks": int(chunks.shape[0]),
            "n_tokens": int(chunks.size),
            "tokenizer": subject.name,
            "fingerprint": fingerprint(chunks),
        }
        save_chunks(path, chunks, description)
    log(f"corpus: {chunks.shape[0]} chunks × {chunks.shape[1]} tokens from {config.corpus}")
    return chunks


def fingerprint(chunks: np.ndarray) -> str:
    """Return a short content hash of a chunk array (ties indexes to the corpus they came from)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(chunks).tobytes()).hexdigest()[:16]


def split_chunks(n_chunks: int, held_out_fraction: float) -> tuple[list[int], list[int]]:
    """Return (training chunk ids, held-out chunk ids): the last fraction is held out for stats."""
    held = max(1, int(round(n_chunks * held_out_fraction)))
    return list(range(n_chunks - held)), list(range(n_chunks - held, n_chunks))


class IndexBuilder:
    """Folds batches into one index and checkpoints it atomically every few seconds."""

    def __init__(self, path: Path, dictionary: Dictionary, config: IndexConfig, context_length: int, about: dict[str, Any]):
        self.path = path
        self.dictionary = dictionary
        self.about = about | {"dictionary": dictionary.name, "hook_name": dictionary.hook_name}
        if path.exists():
            state, stored_about = load_index(path)
            if stored_about.get("corpus_fingerprint") != about.get("corpus_fingerprint") or state.config != config:
                raise MonoscopeError(
                    f"index {str(path)!r} was built from another corpus or with other settings",
                    "use a new run directory or delete that index",
                )
            self.state = state
        else:
            self.state = new_index(dictionary.d_sae, config, context_length)

    def done_chunks(self) -> set[int]:
        """Return the chunk ids already folded in."""
        return {chunk for begin, end in self.state.chunk_ranges for chunk in range(begin, end)}

    def add(self, hook_activations: torch.Tensor, chunk_ids: torch.Tensor) -> None:
        """Encode hook activations [B, T, d_in] and fold them in."""
        update_index(self.state, encode(self.dictionary, hook_activations), chunk_ids)

    def add_units(self, unit_activations: torch.Tensor, chunk_ids: torch.Tensor) -> None:
        """Fold in unit activations [B, T, n_units] that need no encoding."""
        update_index(self.state, unit_activations, chunk_ids)

    def save(self) -> None:
        """Write the current state atomically."""
        save_index(self.state, self.path, self.about)


def collect_foundation_activations(
    run_dir: Path, subject: SubjectModel, chunks: np.ndarray, config: FoundationConfig, log: Progress
) -> np.memmap:
    """Run the forward pass once over all chunks: keep the residual stream for training
    (a float32 memmap) and fold a seeded pool of MLP neurons of blocks 0..L into the
    ``neurons`` index (the neuron baseline, harness.neurons).

    Returns the residual memmap [n_chunks, T, d_model]. Resumable: the neuron
    index's chunk ranges say which chunks are done.
    """
    layer = config.layer if config.layer is not None else subject.default_layer
    resid_hook = f"blocks.{layer}.hook_resid_post"
    store_path = run_dir / "activations" / f"{resid_hook}.f32"
    store_path.parent.mkdir(parents=True, exist_ok=True)
    shape = (chunks.shape[0], chunks.shape[1], subject.d_model)
    mode = "r+" if store_path.exists() else "w+"
    store = np.memmap(store_path, dtype=np.float32, mode=mode, shape=shape)
    pool = sample_neuron_pool(layer + 1, subject.d_mlp, config.neuron_pool_size, config.seed)
    about = {"corpus_fingerprint": fingerprint(chunks), "model": subject.name, "unit_names": pool_unit_names(pool)}
    index_path = run_dir / "index" / f"{POOL_NAME}.safetensors"
    builder = IndexBuilder(index_path, pool_dictionary(pool, layer), config.index, chunks.shape[1], about)
    done = builder.done_chunks()
    todo = [chunk for chunk in range(chunks.shape[0]) if chunk not in done]
    if not todo:
        log(f"activations: reusing {chunks.shape[0]} chunks")
        return store
    log(f"activations: {len(todo)} chunks through blocks 0..{layer} ({len(pool)} pool neurons indexed)")
    last_save = time.perf_counter()
    hooks = [resid_hook, *pool_hooks(pool)]
    with timed_stage(run_dir, "activations"), progress_bar(len(todo), "activations", "chunk") as bar:
        for batch in stream_activations(subject, chunks, hooks, todo, config.batch_size):
            ids = batch.chunk_ids.numpy()
            store[ids] = batch.activations[resid_hook].cpu().numpy()
            builder.add_units(pool_activations(batch.activations, pool), batch.chunk_ids)
            if time.perf_counter() - last_save > config.checkpoint_seconds:
                store.flush()
                builder.save()
                last_save = time.perf_counter()
            bar.update(len(ids))
        store.flush()
        builder.save()
    return store


def train_default_dictionaries(
    run_dir: Path, residuals: np.memmap, hook_name: str, config: FoundationConfig, log: Progress
) -> list[Dictionary]:
    """Train (or reuse) one dictionary per configured size; return them, smallest first."""
    train_ids, held_ids = split_chunks(residuals.shape[0], config.held_out_fraction)
    width = residuals.shape[2]
    training = None
    dictionaries = []
    for size in sorted(config.dictionary_sizes):
        name = dictionary_label(size)
        directory = run_dir / "dictionaries" / name
        if (directory / STATS_FILE).exists():
            dictionaries.append(load_saelens_directory(directory, name))
            log(f"train: reusing {name}")
            continue
        if training is None:
            training = torch.from_numpy(np.asarray(residuals[train_ids]).reshape(-1, width))
        recipe = TrainingConfig(
            d_sae=size,
            sparsity_coefficient=config.sparsity_coefficient,
            learning_rate=config.learning_rate,
            batch_size=config.training_batch_size,
            epochs=config.epochs,
            seed=config.seed,
        )
        log(f"train: {name} ({size} features, λ={recipe.sparsity_coefficient}) on {training.shape[0]} tokens")
        with timed_stage(run_dir, f"train.{name}"):
            dictionary = train_dictionary(training, recipe, name, hook_name)
        held_out = torch.from_numpy(np.asarray(residuals[held_ids]).reshape(-1, width))
        stats = dictionary_stats(dictionary, held_out)
        save_saelens_directory(dictionary, directory, {"monoscope_training": asdict(recipe)})
        atomic_write_json(directory / STATS_FILE, asdict(stats) | {"d_sae": size, "evaluated_on": "held-out chunks"})
        log(f"  {name}: L0 {stats.l0:.1f}, variance explained {stats.variance_explained:.3f}, dead {stats.dead_fraction:.3f}")
        dictionaries.append(load_saelens_directory(directory, name))
    return dictionaries


def index_dictionaries(
    run_dir: Path, residuals: np.memmap, chunks: np.ndarray, dictionaries: list[Dictionary], config: FoundationConfig, log: Progress
) -> None:
    """Build (or resume) the index of every dictionary from the stored residual stream."""
    about = {"corpus_fingerprint": fingerprint(chunks)}
    for dictionary in dictionaries:
        builder = IndexBuilder(run_dir / "index" / f"{dictionary.name}.safetensors", dictionary, config.index, chunks.shape[1], about)
        done = builder.done_chunks()
        todo = [chunk for chunk in range(chunks.shape[0]) if chunk not in done]
        if not todo:
            log(f"index: reusing {dictionary.name}")
            continue
        last_save = time.perf_counter()
        with timed_stage(run_dir, f"index.{dictionary.name}"), progress_bar(len(todo), f"index {dictionary.name}", "chunk") as bar:
            for start in range(0, len(todo), config.batch_size * 2):
                ids = todo[start : start + config.batch_size * 2]
                builder.add(torch.from_numpy(np.asarray(residuals[ids])), torch.tensor(ids))
                if time.perf_counter() - last_save > config.checkpoint_seconds:
                    builder.save()
                    last_save = time.perf_counter()
                bar.update(len(ids))
            builder.save()


def dictionary_table(run_dir: Path) -> list[dict[str, Any]]:
    """Return one row per trained dictionary in the run: size, L0, variance explained, dead fraction."""
    rows = []
    for stats_path in sorted((run_dir / "dictionaries").glob(f"*/{STATS_FILE}")):
        stats = read_json(stats_path)
        rows.append({"dictionary": stats_path.parent.name, **stats})
    return sorted(rows, key=lambda row: row["d_sae"])


def check_layer(subject: SubjectModel, config: FoundationConfig) -> str:
    """Return the residual hook name of the configured layer, failing early if it is out of range."""
    layer = config.layer if config.layer is not None else subject.default_layer
    return parse_hook(f"blocks.{layer}.hook_resid_post", subject.n_layers).name
