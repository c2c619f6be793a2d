"""Build an index file: fold batches of activations into one index state and checkpoint it, resumably."""

from pathlib import Path
from typing import Any

import torch

from harness.dictionaries.dictionary import Dictionary, dictionary_to, encode, encoding_record
from harness.errors import MonoscopeError
from harness.index.state import IndexConfig, index_to, new_index, update_index
from harness.index.store import load_index, save_index


class IndexBuilder:
    """Folds batches into one index and checkpoints it atomically every few seconds.

    The index state and the dictionary live on ``device``; checkpoints go through the CPU (device-free format).
    """

    def __init__(
        self,
        path: Path,
        dictionary: Dictionary,
        config: IndexConfig,
        context_length: int,
        about: dict[str, Any],
        device: str | torch.device = "cpu",
    ):
        self.path = path
        self.device = torch.device(device)
        self.dictionary = dictionary_to(dictionary, self.device)
        self.about = about | {"dictionary": dictionary.name, "hook_name": dictionary.hook_name, "encoding": encoding_record(dictionary)}
        if "saelens_config" in dictionary.metadata:  # the SAELens version followed and every cfg.json field read
            self.about["saelens_config"] = dictionary.metadata["saelens_config"]
        if path.exists():
            state, stored_about = load_index(path)
            if stored_about.get("corpus_fingerprint") != about.get("corpus_fingerprint") or state.config != config:
                raise MonoscopeError(
                    f"index {str(path)!r} was built from another corpus or with other settings",
                    "use a new run directory or delete that index",
                )
            stored = stored_about.get("encoding") or {}
            changed = sorted(key for key, value in self.about["encoding"].items() if stored.get(key, "unrecorded") != value)
            if changed:
                raise MonoscopeError(
                    f"index {str(path)!r} was built from dictionary {dictionary.name!r} read with other settings ({', '.join(changed)})",
                    "delete that index to rebuild it with the dictionary as read now, or use a new run directory",
                )
            self.state = index_to(state, self.device)
        else:
            self.state = new_index(dictionary.d_sae, config, context_length, self.device)

    def done_chunks(self) -> set[int]:
        """Return the chunk ids already folded in."""
        return {chunk for begin, end in self.state.chunk_ranges for chunk in range(begin, end)}

    def add(self, hook_activations: torch.Tensor, chunk_ids: torch.Tensor) -> None:
        """Encode hook activations [B, T, d_in] (any device: moved to the builder's) and fold them in."""
        update_index(self.state, encode(self.dictionary, hook_activations.to(self.device)), chunk_ids)

    def add_units(self, unit_activations: torch.Tensor, chunk_ids: torch.Tensor) -> None:
        """Fold in unit activations [B, T, n_units] that need no encoding."""
        update_index(self.state, unit_activations, chunk_ids)

    def save(self) -> None:
        """Write the current state atomically."""
        save_index(self.state, self.path, self.about)
