"""Shared fixtures: tiny models built from a config, a toy tokenizer."""

import os

import pytest

# Tests never reach a hub: everything they load is built or shipped locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class ToyTokenizer:
    """Whitespace tokenizer over a growing vocabulary; enough for chunking tests."""

    eos_token_id = 1
    bos_token_id = 2

    def __init__(self) -> None:
        self.vocabulary: dict[str, int] = {}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        ids = [self.vocabulary.setdefault(word, 10 + len(self.vocabulary)) for word in text.split()]
        return {"input_ids": ids}

    def decode(self, ids: list[int]) -> str:
        reverse = {value: key for key, value in self.vocabulary.items()}
        return " ".join(reverse.get(i, "?") for i in ids)


@pytest.fixture
def toy_tokenizer() -> ToyTokenizer:
    return ToyTokenizer()


@pytest.fixture(scope="session")
def tiny_gemma():
    """A 4-block Gemma 3 with random weights, built from a config (no download)."""
    from harness.subject.model import wrap_model
    from tests.tiny_models import tiny_gemma_model

    model = tiny_gemma_model()
    tokenizer = ToyTokenizer()
    return wrap_model(model, tokenizer, name="tiny-gemma")
