"""Steering and feature search on a run directory: unit names, strengths from the index, records, the CLI, a planted feature."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import harness.run.foundation
import harness.run.steering
from harness.cli import main
from harness.config import config_from_mapping
from harness.dictionaries.dictionary import Dictionary, encode
from harness.dictionaries.formats import save_saelens_directory
from harness.errors import MonoscopeError
from harness.index.store import unit_maxima
from harness.run.directory import prepare_run_directory, update_manifest
from harness.run.foundation import build_foundation
from harness.run.steering import loaded_dictionaries, search_command, steer_command
from harness.steering.generate import STEERING
from harness.steering.search import parse_prompt
from harness.steering.units import run_dictionary
from harness.subject.model import collect_activations
from tests.tiny_models import tiny_byte_gemma

LAYER = 2
HOOK = f"blocks.{LAYER}.hook_resid_post"
POSITIVE = ["x = ⟦Z⟧ + 1", "print(⟦Z⟧)", "Z"]
NEGATIVE = ["x = Y + 1", "print(Y)", "return 0"]


def planted_dictionary(subject) -> Dictionary:
    """Feature 0 fires on 'Z' in the positive prompts and on no token of the negatives (threshold between them).

    Its encoder direction is the least-squares fit of +1 on the marked residuals and −1 on every
    residual of the negative prompts (28 points in 32 dimensions: separable).
    """

    def residuals(text: str) -> torch.Tensor:
        return collect_activations(subject, torch.tensor([parse_prompt(subject, text).ids]), [HOOK])[HOOK][0]

    marked = torch.stack([residuals(text)[parse_prompt(subject, text).marked[0] if "⟦" in text else 0] for text in POSITIVE])
    negatives = torch.cat([residuals(text) for text in NEGATIVE])
    points = torch.cat([marked, negatives]).double()
    targets = torch.cat([torch.ones(len(marked)), -torch.ones(len(negatives))]).double().unsqueeze(1)
    direction = torch.linalg.lstsq(points, targets).solution[:, 0].float()
    lowest, highest = float((marked @ direction).min()), float((negatives @ direction).max())
    assert lowest > highest, "precondition: the planted direction separates the prompts"
    W_enc = torch.zeros(subject.d_model, 4)
    W_enc[:, 0] = direction
    b_enc = torch.tensor([-(lowest + highest) / 2, -1e4, -1e4, -1e4])
    W_dec = torch.nn.functional.normalize(torch.randn(4, subject.d_model, generator=torch.Generator().manual_seed(1)), dim=-1)
    return Dictionary("planted", HOOK, "relu", subject.d_model, 4, W_enc, b_enc, W_dec, torch.zeros(subject.d_model))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """A finished foundation of a tiny Gemma: two trained dictionaries, a planted one loaded, 16 pool neurons."""
    subject = tiny_byte_gemma()
    root = tmp_path_factory.mktemp("steering-run")
    save_saelens_directory(planted_dictionary(subject), root / "planted")
    config = config_from_mapping(
        {
            "seed": 1,
            "model": {"name": "tiny-byte-gemma", "layer": LAYER, "batch_size": 8},
            "corpus": {"tokens": 4096, "context_length": 32},
            "dictionaries": {"train": [16, 48], "training_batch_size": 64, "load": [str(root / "planted")]},
            "index": {"top_k": 4, "interval_samples": 1, "random_nonzero": 2, "random_zero": 2, "window_before": 5, "window_after": 2},
            "neurons": {"pool_size": 16},
        }
    )
    run_dir = root / "run"
    prepare_run_directory(run_dir)
    patch = pytest.MonkeyPatch()
    patch.setattr(harness.run.foundation, "load_subject_model", lambda *a, **k: subject)
    patch.setenv("MONOSCOPE_PROGRESS", "0")
    build_foundation(run_dir, config, lambda message: None)
    foundation = {"model": "tiny-byte-gemma", "device": "cpu", "dtype": "float32"}
    update_manifest(run_dir, config={"foundation": foundation, "load_dictionaries": [str(root / "planted")]})
    patch.undo()
    return run_dir, subject


def pool_neuron(run_dir: Path) -> str:
    maxima, about = unit_maxima(run_dir / "index" / "neurons.safetensors")
    return next(name for name, top in zip(about["unit_names"], maxima.tolist(), strict=True) if top > 0)


def alive(run_dir: Path, dictionary: str) -> int:
    maxima, _ = unit_maxima(run_dir / "index" / f"{dictionary}.safetensors")
    return int(torch.nonzero(maxima > 0)[0])


def test_steer_command_clamps_at_multiples_of_the_index_maximum_and_records_each_steering(run):
    run_dir, subject = run
    feature, neuron = f"sae-16/{alive(run_dir, 'sae-16')}", pool_neuron(run_dir)
    records = steer_command(run_dir, [feature, neuron], ["def f(x):", "import os"], [5.0, -2.0], max_new_tokens=4, subject=subject)
    assert len(records) == 4 and [r.multiples[0] for r in records] == [5.0, 5.0, -2.0, -2.0]
    feature_max = float(unit_maxima(run_dir / "index" / "sae-16.safetensors")[0][alive(run_dir, "sae-16")])
    assert records[0].values[0] == pytest.approx(5.0 * feature_max) and records[2].values[0] == pytest.approx(-2.0 * feature_max)
    assert all(r.units == (feature, neuron) and len(r.kl) == len(subject.tokenizer(r.steered)["input_ids"]) for r in records)
    lines = (run_dir / STEERING).read_text().splitlines()
    assert [json.loads(line)["prompt"] for line in lines[-4:]] == ["def f(x):", "import os", "def f(x):", "import os"]


def test_steer_cli_prints_both_continuations_and_the_kl(run, monkeypatch: pytest.MonkeyPatch):
    run_dir, subject = run
    monkeypatch.setattr(harness.run.steering, "load_subject_model", lambda *a, **k: subject)
    unit = f"sae-48/{alive(run_dir, 'sae-48')}"
    result = CliRunner().invoke(main, ["steer", str(run_dir), unit, "--prompt", "for i in", "--value", "10", "--tokens", "3"])
    assert result.exit_code == 0, result.output
    assert "plain:" in result.output and "steered:" in result.output and "KL(steered ‖ plain)" in result.output
    assert f"{unit} = 10 × max" in result.output


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        ("sae-99/1", "has no dictionary 'sae-99'"),
        ("sae-16/16", "dictionary 'sae-16' has 16 features"),
        ("mlp.9/0", "outside the model"),
        ("feature-seven", "bad unit name"),
    ],
)
def test_a_bad_unit_is_a_one_line_error(run, monkeypatch: pytest.MonkeyPatch, unit: str, message: str):
    run_dir, subject = run
    with pytest.raises(MonoscopeError, match=message):
        steer_command(run_dir, [unit], ["x"], [5.0], subject=subject)
    monkeypatch.setattr(harness.run.steering, "load_subject_model", lambda *a, **k: subject)
    result = CliRunner().invoke(main, ["steer", str(run_dir), unit, "--prompt", "x"])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "Traceback" not in result.output


def test_a_neuron_outside_the_pool_or_a_unit_that_never_fired_is_refused(run):
    run_dir, subject = run
    _, about = unit_maxima(run_dir / "index" / "neurons.safetensors")
    outside = next(f"mlp.0/{i}" for i in range(subject.d_mlp) if f"mlp.0/{i}" not in about["unit_names"])
    with pytest.raises(MonoscopeError, match="not in the run's indexed pool"):
        steer_command(run_dir, [outside], ["x"], [5.0], subject=subject)
    with pytest.raises(MonoscopeError, match="never fired"):
        steer_command(run_dir, ["planted/1"], ["x"], [5.0], subject=subject)


def test_search_finds_the_planted_feature_and_nothing_found_fires_on_a_negative(run):
    run_dir, subject = run
    found = search_command(run_dir, POSITIVE, NEGATIVE, limit=1000, subject=subject)
    assert "planted/0" in [item.unit for item in found]
    planted = next(item for item in found if item.unit == "planted/0")
    assert 0 < planted.score <= 1 and planted.score == pytest.approx(min(planted.positive) / planted.max_activation, abs=1e-5)
    assert [item.score for item in found] == sorted((item.score for item in found), reverse=True)
    dictionary = run_dictionary(run_dir, "planted", loaded_dictionaries(run_dir))
    for text in NEGATIVE:
        acts = encode(dictionary, collect_activations(subject, torch.tensor([parse_prompt(subject, text).ids]), [HOOK])[HOOK][0])
        assert float(acts[:, 0].max()) <= 0
    as_negative = search_command(run_dir, POSITIVE[:2], ["Z"], limit=1000, subject=subject)
    assert "planted/0" not in [item.unit for item in as_negative], "a unit firing on a negative prompt is left out"


@pytest.mark.parametrize(
    ("positive", "negative", "message"),
    [
        ([], [], "at least one --positive"),
        (["a ⟦b"], [], "exactly one span"),
        (["⟦a⟧ ⟦b⟧"], [], "exactly one span"),
        (["a ⟦⟧ b"], [], "empty span"),
        (["a"], ["⟦b⟧"], "has a mark"),
        ([""], [], "empty"),
    ],
)
def test_bad_search_prompts_are_clear_errors(run, positive, negative, message: str):
    run_dir, subject = run
    with pytest.raises(MonoscopeError, match=message):
        search_command(run_dir, positive, negative, subject=subject)


BAD_STEERING_OPTIONS = [
    ({"units": ["foo"]}, "bad unit name"),
    ({"units": ["sae-2k/abc"]}, "bad unit name"),
    ({"units": ["neurons/3"]}, r"mlp\.L/I"),
    ({"units": ["sae-2k/1", "mlp.3/7", "sae-2k/1"]}, "named twice"),
    ({"multiples": [5.0, float("nan")]}, "not a finite number"),
    ({"multiples": [float("-inf")]}, "not a finite number"),
    ({"max_new_tokens": 0}, "--tokens is 0"),
    ({"temperature": 0.5}, "without --seed"),
    ({"seed": 0, "temperature": 0.0}, "--temperature is 0"),
    ({"seed": 0, "temperature": -1.0}, "--temperature is -1"),
    ({"seed": 0, "temperature": float("nan")}, "--temperature is nan"),
]


@pytest.mark.parametrize(("options", "message"), BAD_STEERING_OPTIONS)
def test_bad_steering_options_are_refused_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict, message: str
) -> None:
    import harness.run.steering as steering_run

    monkeypatch.setattr(steering_run, "run_subject", lambda run_dir: pytest.fail("the model was loaded"))
    arguments = {"units": ["sae-2k/1"], "prompts": ["The weather"], "multiples": [5.0]} | options
    with pytest.raises(MonoscopeError, match=message):
        steering_run.steer_command(tmp_path, **arguments)


@pytest.mark.parametrize(
    ("positive", "negative", "limit", "message"),
    [
        ([], [], 20, "at least one --positive"),
        (["import os"], [], 0, "--limit is 0"),
        (["import os"], [], -5, "--limit is -5"),
        (["import ⟦os"], [], 20, "exactly one span"),
        (["⟦⟧import"], [], 20, "empty span"),
        (["import os"], ["a ⟦b⟧"], 20, "has a mark"),
        (["import os", ""], [], 20, "empty"),
    ],
)
def test_bad_search_options_are_refused_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, positive: list, negative: list, limit: int, message: str
) -> None:
    import harness.run.steering as steering_run

    monkeypatch.setattr(steering_run, "run_subject", lambda run_dir: pytest.fail("the model was loaded"))
    with pytest.raises(MonoscopeError, match=message):
        steering_run.search_command(tmp_path, positive, negative, limit)
