"""Bad inputs end in one line naming the problem and the fix, exit code 2, before any model runs."""

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import harness.api
from harness.cli import main
from harness.dictionaries.dictionary import Dictionary
from harness.dictionaries.formats import save_saelens_directory


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    from transformers import Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8
    )
    config.architectures = ["Gemma3ForCausalLM"]
    config.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


@pytest.fixture(autouse=True)
def no_model_runs(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was loaded although the input was bad")

    monkeypatch.setattr(harness.api, "load_subject_model", refuse)


def sae_dir(tmp_path: Path, d_in: int, hook: str = "blocks.1.hook_resid_post") -> Path:
    dictionary = Dictionary(
        name="sae",
        hook_name=hook,
        architecture="relu",
        d_in=d_in,
        d_sae=8,
        W_enc=torch.randn(d_in, 8),
        b_enc=torch.zeros(8),
        W_dec=torch.randn(8, d_in),
        b_dec=torch.zeros(d_in),
    )
    save_saelens_directory(dictionary, tmp_path / "sae")
    return tmp_path / "sae"


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output.strip()


def assert_one_line_error(code: int, output: str, fragment: str) -> None:
    assert code == 2, output
    lines = output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert fragment in lines[0]
    assert " — " in lines[0], "the message names a fix"


def index_args(tmp_path: Path, model: Path, dictionary: str, *extra: str) -> list[str]:
    return ["index", "--run-dir", str(tmp_path / "run"), "--model", str(model), "--dictionary", dictionary, *extra]


def test_missing_dictionary(tmp_path, tiny_model_dir):
    assert_one_line_error(*run(index_args(tmp_path, tiny_model_dir, str(tmp_path / "missing"))), "not found")


def test_dictionary_with_wrong_d_in(tmp_path, tiny_model_dir):
    assert_one_line_error(*run(index_args(tmp_path, tiny_model_dir, str(sae_dir(tmp_path, d_in=12)))), "d_in=12")


def test_dictionary_layer_out_of_range(tmp_path, tiny_model_dir):
    assert_one_line_error(*run(index_args(tmp_path, tiny_model_dir, "neurons:7")), "out of range")


def test_corrupt_dictionary_weights(tmp_path, tiny_model_dir):
    directory = sae_dir(tmp_path, d_in=16)
    (directory / "sae_weights.safetensors").write_bytes(b"junk")
    assert_one_line_error(*run(index_args(tmp_path, tiny_model_dir, str(directory))), "corrupt")


def test_nan_dictionary_weights(tmp_path, tiny_model_dir):
    directory = sae_dir(tmp_path, d_in=16)
    save_file(
        {"W_enc": torch.full((16, 8), float("nan")), "b_enc": torch.zeros(8), "W_dec": torch.zeros(8, 16), "b_dec": torch.zeros(16)},
        directory / "sae_weights.safetensors",
    )
    assert_one_line_error(*run(index_args(tmp_path, tiny_model_dir, str(directory))), "NaN")


def test_empty_corpus(tmp_path, tiny_model_dir):
    (tmp_path / "empty.txt").write_text("  \n")
    assert_one_line_error(*run(index_args(tmp_path, tiny_model_dir, "neurons:1", "--corpus", str(tmp_path / "empty.txt"))), "empty")


def test_missing_corpus(tmp_path, tiny_model_dir):
    assert_one_line_error(*run(index_args(tmp_path, tiny_model_dir, "neurons:1", "--corpus", str(tmp_path / "no.txt"))), "not found")


BAD_CHUNK_RANGES = [("5:3", "out of range"), ("0:99999", "out of range"), ("-1:2", "out of range"), ("a:b", "bad chunk"), ("3", "bad")]


@pytest.mark.parametrize(("chunks", "message"), BAD_CHUNK_RANGES)
def test_bad_chunk_range(tmp_path, tiny_model_dir, chunks, message):
    assert_one_line_error(*run(index_args(tmp_path, tiny_model_dir, "neurons:1", "--chunks", chunks)), message)


def test_unwritable_run_directory(tmp_path, tiny_model_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, output = run(["index", "--run-dir", str(blocker / "run"), "--model", str(tiny_model_dir), "--dictionary", "neurons:1"])
    assert_one_line_error(code, output, "run directory")


def test_unknown_model(tmp_path):
    assert_one_line_error(*run(index_args(tmp_path, tmp_path / "no-such-model", "neurons:1")), "cannot load model")


def test_train_layer_out_of_range(tmp_path, tiny_model_dir):
    code, output = run(
        [
            "train",
            "--run-dir",
            str(tmp_path / "run"),
            "--out",
            str(tmp_path / "out"),
            "--model",
            str(tiny_model_dir),
            "--layer",
            "5",
            "--d-sae",
            "8",
        ]
    )
    assert_one_line_error(code, output, "out of range")


def test_merge_of_corrupt_index(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"junk")
    assert_one_line_error(*run(["merge-index", str(tmp_path / "out.safetensors"), str(tmp_path / "a.safetensors")]), "corrupt")


def test_score_command_defaults_are_the_config_defaults():
    from harness.cli import DEFAULT_JUDGE_FORMAT, DEFAULT_SIMULATOR_FORMAT
    from harness.config import EvaluationConfig

    assert (DEFAULT_JUDGE_FORMAT, DEFAULT_SIMULATOR_FORMAT) == (EvaluationConfig().judge_format, EvaluationConfig().simulator_format)
