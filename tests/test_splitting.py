"""Feature splitting: a small dictionary's features are found among a larger one's by decoder cosine similarity."""

import pytest
import torch

from harness.compare.splitting import nearest_features
from harness.dictionaries.dictionary import Dictionary
from harness.errors import MonoscopeError


def dictionary_with_decoder(name: str, W_dec: torch.Tensor) -> Dictionary:
    d_sae, d_in = W_dec.shape
    return Dictionary(
        name=name,
        hook_name="blocks.1.hook_resid_post",
        architecture="relu",
        d_in=d_in,
        d_sae=d_sae,
        W_enc=W_dec.T.clone(),
        b_enc=torch.zeros(d_sae),
        W_dec=W_dec,
        b_dec=torch.zeros(d_in),
    )


def test_scaled_copies_of_the_small_decoder_are_found_with_cosine_one():
    generator = torch.Generator().manual_seed(0)
    small_decoder = torch.randn(8, 64, generator=generator)
    large_decoder = torch.randn(200, 64, generator=generator)
    # Feature 3 of the small dictionary split into large features 17 (x2.5) and 150 (x0.1, plus a little noise).
    large_decoder[17] = 2.5 * small_decoder[3]
    large_decoder[150] = 0.1 * small_decoder[3] + 1e-3 * torch.randn(64, generator=generator)
    large_decoder[42] = 7.0 * small_decoder[5]
    small = dictionary_with_decoder("sae-8", small_decoder)
    large = dictionary_with_decoder("sae-200", large_decoder)

    found = nearest_features(small, [5, 3], large, k=3)

    assert [record.unit for record in found] == ["sae-8/5", "sae-8/3"]
    assert all(record.dictionary == "sae-8" and record.other_dictionary == "sae-200" for record in found)
    assert found[0].nearest[0] == "sae-200/42" and found[0].cosine[0] == pytest.approx(1.0, abs=1e-6)
    assert found[1].nearest[:2] == ("sae-200/17", "sae-200/150")
    assert found[1].cosine[0] == pytest.approx(1.0, abs=1e-6)
    assert 0.99 < found[1].cosine[1] < found[1].cosine[0]
    for record in found:
        assert len(record.nearest) == len(record.cosine) == 3
        assert all(type(value) is float for value in record.cosine)
        assert list(record.cosine) == sorted(record.cosine, reverse=True)
        assert record.cosine[2] < 0.6, "the third is a random row, far from the feature"


def test_decoders_of_different_widths_are_rejected():
    small = dictionary_with_decoder("a", torch.randn(4, 16))
    large = dictionary_with_decoder("b", torch.randn(8, 32))
    with pytest.raises(MonoscopeError, match="different widths"):
        nearest_features(small, [0], large)
