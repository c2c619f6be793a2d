"""A SAELens directory means what SAELens 6.54.12 means: the same features and reconstructions, or a refusal naming the field.

The expected values were computed once by SAELens 6.54.12 itself (tests/fixtures/saelens/make_fixtures.py),
so this suite needs no SAELens.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.dictionaries.dictionary import decode, encode, encoding_record
from harness.dictionaries.formats import load_saelens_directory, save_saelens_directory
from harness.dictionaries.saelens_config import SAELENS_VERSION
from harness.errors import MonoscopeError

FIXTURES = Path(__file__).parent / "fixtures" / "saelens"
CASES = sorted(json.loads((FIXTURES / "cases.json").read_text())["cases"])
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 0, torch.float16: 0}  # 16-bit: computed in that dtype, as SAELens does


def _expected(case: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / case / "expected.safetensors"))


@pytest.mark.parametrize("case", CASES)
def test_encode_and_decode_equal_saelens(case: str) -> None:
    dictionary = load_saelens_directory(FIXTURES / case)
    expected = _expected(case)
    x = expected["x"]
    features = encode(dictionary, x)
    tolerance = TOLERANCE[x.dtype]
    torch.testing.assert_close(features, expected["feature_acts"].float(), atol=tolerance, rtol=tolerance)
    assert torch.equal(features > 0, expected["feature_acts"] > 0), "a different set of features is active"
    reconstruction = decode(dictionary, features, x)
    torch.testing.assert_close(reconstruction, expected["sae_out"].float(), atol=tolerance * 10, rtol=tolerance * 10)


def test_topk_rescaled_by_decoder_norm_is_the_issue_example() -> None:
    """The reported fault: rescale_acts_by_decoder_norm changes which features are active; ignoring it is wrong."""
    dictionary = load_saelens_directory(FIXTURES / "topk_rescale_by_decoder_norm")
    assert dictionary.rescale_acts_by_decoder_norm and dictionary.k == 4
    norms = dictionary.W_dec.norm(dim=-1)
    assert norms.min() < 0.3 and norms.max() > 2.9
    expected = _expected("topk_rescale_by_decoder_norm")
    from dataclasses import replace

    ignored = encode(replace(dictionary, rescale_acts_by_decoder_norm=False), expected["x"])
    assert not torch.equal(ignored > 0, expected["feature_acts"] > 0), "the fixture must tell the two readings apart"
    assert torch.equal(encode(dictionary, expected["x"]) > 0, expected["feature_acts"] > 0)


@pytest.mark.parametrize(
    ("case", "field", "value"),
    [
        ("standard_apply_b_dec_absent", "apply_b_dec_to_input", True),
        ("jumprelu_float16_apply_b_dec_absent", "apply_b_dec_to_input", True),
        ("topk_k_absent", "k", 100),
        ("topk_rescale_absent", "rescale_acts_by_decoder_norm", False),
        ("pre6_standard", "apply_b_dec_to_input", True),
    ],
)
def test_absent_fields_take_saelens_defaults_and_are_recorded(case: str, field: str, value: object) -> None:
    record = load_saelens_directory(FIXTURES / case).metadata["saelens_config"]
    assert record["saelens_version"] == SAELENS_VERSION == "6.54.12"
    assert record["fields"][field] == value
    assert field in record["defaulted"]


def test_every_field_read_is_recorded() -> None:
    record = load_saelens_directory(FIXTURES / "topk_rescale_by_decoder_norm").metadata["saelens_config"]
    assert record["fields"] == {
        "architecture": "topk",
        "dtype": "float32",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "k": 4,
        "rescale_acts_by_decoder_norm": True,
    }
    assert record["defaulted"] == ["normalize_activations", "reshape_activations"]


def _variant(tmp_path: Path, case: str, edit: dict, tensors: dict | None = None, drop: tuple[str, ...] = ()) -> Path:
    directory = tmp_path / "variant"
    shutil.copytree(FIXTURES / case, directory)
    cfg = json.loads((directory / "cfg.json").read_text())
    for key in drop:
        cfg.pop(key, None)
    cfg.update(edit)
    (directory / "cfg.json").write_text(json.dumps(cfg))
    if tensors is not None:
        weights = load_file(str(directory / "sae_weights.safetensors"))
        weights.update({key: value for key, value in tensors.items() if value is not None})
        for key in [key for key, value in tensors.items() if value is None]:
            weights.pop(key)
        save_file(weights, str(directory / "sae_weights.safetensors"))
    return directory


@pytest.mark.parametrize(
    ("case", "edit", "tensors", "drop", "field"),
    [
        ("standard_apply_b_dec_false", {"normalize_activations": "covariance_whitening"}, None, (), "normalize_activations"),
        ("standard_apply_b_dec_false", {"normalize_activations": "expected_average_only_in"}, None, (), "normalize_activations"),
        ("standard_apply_b_dec_false", {"normalize_activations": "whatever"}, None, (), "normalize_activations"),
        ("topk_rescale_absent", {"architecture": "abstopk"}, None, (), "architecture"),
        ("topk_rescale_absent", {"architecture": "batchtopk"}, None, (), "architecture"),
        ("topk_rescale_absent", {"architecture": "matryoshka_batchtopk"}, None, (), "architecture"),
        ("standard_apply_b_dec_false", {"architecture": "transcoder"}, None, (), "architecture"),
        ("standard_apply_b_dec_false", {"architecture": "temporal"}, None, (), "architecture"),
        ("standard_apply_b_dec_false", {"architecture": "matching_pursuit"}, None, (), "architecture"),
        ("standard_apply_b_dec_false", {"architecture": "sparse_magic"}, None, (), "architecture"),
        ("standard_apply_b_dec_false", {}, None, ("architecture",), "architecture"),
        ("standard_apply_b_dec_false", {"reshape_activations": "hook_z"}, None, (), "reshape_activations"),
        ("standard_apply_b_dec_false", {"dtype": "int8"}, None, (), "dtype"),
        ("standard_apply_b_dec_false", {"apply_b_dec_to_input": "yes"}, None, (), "apply_b_dec_to_input"),
        ("topk_rescale_absent", {"k": 4.5}, None, (), "k"),
        (
            "standard_apply_b_dec_false",
            {"metadata": {"sae_lens_version": "6.54.12", "hook_name": "x", "hook_head_index": 2}},
            None,
            (),
            "hook_head_index",
        ),
        ("standard_apply_b_dec_false", {"metadata": {"sae_lens_version": "six", "hook_name": "x"}}, None, (), "sae_lens_version"),
        ("pre6_standard", {"activation_fn_str": "tanh-relu"}, None, (), "activation_fn"),
        ("pre6_standard", {"activation_fn_str": "topk"}, None, (), "activation_fn"),
        ("pre6_standard", {"finetuning_scaling_factor": True}, None, (), "finetuning_scaling_factor"),
        ("standard_apply_b_dec_false", {}, {"scaling_factor": torch.full((32,), 2.0)}, (), "scaling_factor"),
        ("jumprelu", {}, {"log_threshold": torch.zeros(32), "threshold": None}, (), "threshold"),
        ("standard_apply_b_dec_false", {}, {"threshold": torch.zeros(32)}, (), "threshold"),
        ("gated", {}, {"b_mag": None}, (), "b_mag"),
        ("standard_apply_b_dec_false", {"d_sae": "abc"}, None, (), "d_sae"),
        ("standard_apply_b_dec_false", {"d_sae": None}, None, (), "d_sae"),
        ("standard_apply_b_dec_false", {"d_in": [8]}, None, (), "d_in"),
        ("standard_apply_b_dec_false", {"d_sae": 32.5}, None, (), "d_sae"),
        ("standard_apply_b_dec_false", {"metadata": [1]}, None, (), "metadata"),
        ("pre6_topk_kwargs", {"activation_fn_kwargs": [3]}, None, (), "activation_fn_kwargs"),
        ("topk_rescale_absent", {"rescale_acts_by_decoder_norm": "false"}, None, (), "rescale_acts_by_decoder_norm"),
        ("topk_rescale_absent", {"rescale_acts_by_decoder_norm": None}, None, (), "rescale_acts_by_decoder_norm"),
        (
            "standard_apply_b_dec_false",
            {"normalize_activations": "expected_average_only_in", "norm_scaling_factor": float("inf")},
            None,
            (),
            "normalize_activations",
        ),
        ("pre6_standard", {"hook_point": 3}, None, (), "hook_name"),
    ],
)
def test_what_cannot_be_applied_as_saelens_does_is_refused_naming_the_field(
    tmp_path: Path, case: str, edit: dict, tensors: dict | None, drop: tuple[str, ...], field: str
) -> None:
    directory = _variant(tmp_path, case, edit, tensors, drop)
    with pytest.raises(MonoscopeError) as caught:
        load_saelens_directory(directory)
    message = str(caught.value)
    assert field in message and "\n" not in message.split(" — ")[0]


def test_a_saved_dictionary_reads_back_with_every_setting_explicit(tmp_path: Path) -> None:
    dictionary = load_saelens_directory(FIXTURES / "topk_rescale_by_decoder_norm")
    save_saelens_directory(dictionary, tmp_path / "copy")
    cfg = json.loads((tmp_path / "copy" / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == dictionary.hook_name and cfg["sae_lens_version"] == SAELENS_VERSION
    again = load_saelens_directory(tmp_path / "copy")
    assert encoding_record(again) == encoding_record(dictionary)
    assert again.metadata["saelens_config"]["defaulted"] == ["reshape_activations"]
    x = _expected("topk_rescale_by_decoder_norm")["x"]
    assert torch.equal(encode(again, x), encode(dictionary, x))


def test_an_index_refuses_a_dictionary_read_with_other_settings(tmp_path: Path) -> None:
    """An index built under one reading of a cfg.json is not extended under another (class 5 applied to dictionaries)."""
    from dataclasses import replace

    from harness.index.builder import IndexBuilder
    from harness.index.state import IndexConfig

    dictionary = load_saelens_directory(FIXTURES / "standard_apply_b_dec_false")
    config = IndexConfig()
    path = tmp_path / "index.safetensors"
    builder = IndexBuilder(path, dictionary, config, 16, {"corpus_fingerprint": "abc"})
    builder.add(torch.randn(1, 16, dictionary.d_in), torch.tensor([0]))
    builder.save()
    IndexBuilder(path, dictionary, config, 16, {"corpus_fingerprint": "abc"})  # same reading: resumes
    with pytest.raises(MonoscopeError, match="apply_b_dec_to_input"):
        IndexBuilder(path, replace(dictionary, apply_b_dec_to_input=True), config, 16, {"corpus_fingerprint": "abc"})
