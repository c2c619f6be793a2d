"""The SAEBench setting of the detection scorer (``scorers.saebench``) against fixtures made once by the pinned sae-bench 0.6.0
(``tests/fixtures/saebench/make_fixtures.py``; the suite does not need sae-bench), and in a run."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness.index.state import IndexConfig, new_index, update_index
from scorers.saebench import parse_predictions, prediction_accuracy
from tests.test_batch import tiny_subject  # noqa: F401 (fixture)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "saebench"
SAEBENCH_INDEX = IndexConfig(top_k=4, interval_samples=1, random_nonzero=2, random_zero=2, window_before=10, window_after=10)


def test_the_spaced_top_windows_equal_saebenchs_selection_on_a_stored_activation_tensor() -> None:
    acts = torch.from_numpy(np.load(FIXTURES / "acts.npy"))  # [64 sequences, 128 tokens, 3 latents]
    expected = json.loads((FIXTURES / "top_indices.json").read_text())
    state = new_index(acts.shape[2], IndexConfig(**{**SAEBENCH_INDEX.__dict__, "spaced_top": 12}), acts.shape[1])
    for start in range(0, 64, 16):  # in batches, as a run folds chunks in
        update_index(state, acts[start : start + 16], torch.arange(start, start + 16))
    slots = state.slots["spaced_top"]
    for latent in range(acts.shape[2]):
        got = [[int(c), int(p)] for c, p in zip(slots.chunk[latent], slots.position[latent], strict=True)]
        assert got == expected[str(latent)], latent


def test_per_latent_scores_from_stored_judge_replies_equal_saebenchs() -> None:
    cases = json.loads((FIXTURES / "replies.json").read_text())
    assert any(case["score"] is None for case in cases) and any(case["score"] == 1.0 for case in cases)
    for case in cases:
        predictions = parse_predictions(case["reply"])
        assert predictions == case["predictions"], case["reply"]
        score = None if predictions is None else prediction_accuracy(predictions, case["labels"])
        assert score == case["score"], case["reply"]


SAEBENCH_RUN = {
    "corpus": {"tokens": 8192, "context_length": 128},
    "index": {
        "top_k": 4,
        "interval_samples": 1,
        "random_nonzero": 2,
        "random_zero": 2,
        "window_before": 10,
        "window_after": 10,
        "spaced_top": 12,
        "weighted": 24,
    },
}


@pytest.mark.usefixtures("tiny_subject")
def test_a_run_in_the_saebench_setting_writes_its_explanations_scores_and_saebenchs_autointerp_envelope(tmp_path: Path) -> None:
    from harness.run.runner import run_evaluation
    from results.saebench import saebench_envelopes
    from tests.test_batch import CALLS, TINY_CONFIG, tiny_config

    evaluation = {**TINY_CONFIG["evaluation"], "scorers": ["rubric", "detection"], "detection_setting": "saebench"}
    config = tiny_config(**SAEBENCH_RUN, evaluation=evaluation, model={**TINY_CONFIG["model"], "batch_size": 4})
    run_evaluation(config, tmp_path, log=lambda _message: None)
    records = [json.loads(line) for line in (tmp_path / "saebench.jsonl").read_text().splitlines()]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    skipped = manifest["saebench_skipped"]
    assert records, f"no unit was scored; skipped: {skipped}"
    assert {r["source"] for r in records} <= {"real", "shuffled"} and all(len(r["labels"]) == 14 for r in records)
    assert all(sum(r["labels"]) <= 4 for r in records), "only the 2 top and 2 weighted windows can be active; random ones are negative"
    assert all(r["parse_rule"] == "saebench-lenient" for r in records)
    explanations = [json.loads(line) for line in (tmp_path / "explanations.jsonl").read_text().splitlines()]
    assert {r["unit"] for r in records} <= {e["unit"] for e in explanations if e["explainer"] == "saebench"}
    assert not (tmp_path / "detection.jsonl").exists(), "the SAEBench setting replaces monoscope's detection"
    units = pd.read_csv(tmp_path / "results" / "tables" / "units.csv")
    assert units["saebench_real"].notna().any()
    files = sorted((tmp_path / "results" / "saebench").glob("*_eval_results.json"))
    autointerp = {path.name: json.loads(path.read_text()) for path in files}
    assert autointerp and all(e["eval_type_id"] == "autointerp" for e in autointerp.values())
    assert sorted(autointerp) == sorted(f"monoscope_tiny_{e['sae_lens_id']}_eval_results.json" for e in autointerp.values())
    for output in autointerp.values():
        assert_saebench_autointerp_output(output)
    real = {r["unit"]: r["score"] for r in records if r["source"] == "real" and r["score"] is not None}
    for output in autointerp.values():
        dictionary = output["sae_lens_id"]
        mine = [score for unit, score in real.items() if unit.startswith(f"{dictionary}/")]
        assert output["eval_result_metrics"]["autointerp"]["autointerp_score"] == pytest.approx(np.mean(mine))
        assert sorted(int(latent) for latent in output["eval_result_unstructured"]) == sorted(
            int(unit.split("/")[1]) for unit in real if unit.startswith(f"{dictionary}/")
        )
    assert "neurons" not in {e["sae_lens_id"] for e in autointerp.values()}, "neurons are not a dictionary"
    envelopes = saebench_envelopes(tmp_path)
    assert all(e["eval_type_id"] == "monoscope_autointerp" for e in envelopes.values())
    CALLS.clear()
    before = (tmp_path / "saebench.jsonl").read_bytes()
    run_evaluation(config, tmp_path, log=lambda _message: None)
    assert CALLS == [] and (tmp_path / "saebench.jsonl").read_bytes() == before


def test_the_saebench_setting_without_its_index_and_corpus_is_refused_naming_what_is_missing() -> None:
    from harness.config import config_from_mapping
    from harness.errors import MonoscopeError

    with pytest.raises(MonoscopeError, match="corpus.context_length: 128.*index.spaced_top: 12 or more"):
        config_from_mapping({"evaluation": {"scorers": ["detection"], "detection_setting": "saebench"}})
    with pytest.raises(MonoscopeError, match="detection_setting"):
        config_from_mapping({"evaluation": {"detection_setting": "delphi"}})


def test_without_saebench_records_no_saebench_autointerp_file_is_written(tmp_path: Path) -> None:
    from results.saebench_autointerp import autointerp_outputs, write_autointerp_outputs

    stale = tmp_path / "results" / "saebench" / "monoscope_old_sae-2k_eval_results.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    assert autointerp_outputs(tmp_path) == {}
    assert write_autointerp_outputs(tmp_path) == [] and not stale.exists(), "an earlier config's file does not outlive it"


# What SAEBench 0.6.0 requires of an AutoInterpEvalOutput, written here from reading its JSON schema
# (sae_bench/evals/autointerp/eval_output_schema_autointerp.json) and eval_config.py, not copied from them.
REQUIRED_TOP = {
    "eval_type_id": str,
    "eval_config": dict,
    "eval_id": str,
    "datetime_epoch_millis": int,
    "eval_result_metrics": dict,
    "eval_result_details": list,
    "sae_bench_commit_hash": str,
    "sae_lens_id": (str, type(None)),
    "sae_lens_release_id": (str, type(None)),
    "sae_lens_version": (str, type(None)),
    "sae_cfg_dict": (dict, type(None)),
}
CONFIG_FIELDS = {
    "model_name": str,
    "n_latents": (int, type(None)),
    "override_latents": (list, type(None)),
    "dead_latent_threshold": (int, float),
    "random_seed": int,
    "dataset_name": str,
    "llm_context_size": int,
    "llm_batch_size": int,
    "llm_dtype": str,
    "buffer": int,
    "no_overlap": bool,
    "act_threshold_frac": (int, float),
    "total_tokens": int,
    "scoring": bool,
    "max_tokens_in_explanation": int,
    "use_demos_in_explanation": bool,
    "n_top_ex_for_generation": int,
    "n_iw_sampled_ex_for_generation": int,
    "n_top_ex_for_scoring": int,
    "n_random_ex_for_scoring": int,
    "n_iw_sampled_ex_for_scoring": int,
}


def assert_saebench_autointerp_output(output: dict) -> None:
    """Assert ``output`` has every field SAEBench's AutoInterpEvalOutput requires, with its JSON type."""
    for name, kind in REQUIRED_TOP.items():
        assert name in output and isinstance(output[name], kind), (name, output.get(name))
    assert output["eval_type_id"] == "autointerp"
    assert 0 <= output["datetime_epoch_millis"] <= 9_999_999_999_999  # SAEBench's validator bounds
    assert not re.fullmatch(r"[0-9a-f]{7,40}", output["sae_bench_commit_hash"]), "a protocol name, never an invented hash"
    config = output["eval_config"]
    for name, kind in CONFIG_FIELDS.items():
        assert name in config and isinstance(config[name], kind), (name, config.get(name))
    assert set(config) == set(CONFIG_FIELDS), "SAEBench's config is a pydantic dataclass: no unknown fields"
    assert (config["n_latents"] is None) != (config["override_latents"] is None)  # its __post_init__ asserts exactly one
    metrics = output["eval_result_metrics"]
    assert set(metrics) == {"autointerp"} and set(metrics["autointerp"]) == {"autointerp_score", "autointerp_std_dev"}
    assert all(isinstance(value, float) for value in metrics["autointerp"].values())


def test_windows_show_each_token_decoded_alone_and_drop_what_it_cannot_spell_as_saebench_does() -> None:
    from harness.subject.decoding import single_token_strings, token_pieces
    from scorers.saebench import SaebenchWindow, marked

    class ByteFallback:
        """ "é" spelled as two byte tokens (as Gemma's byte fallback does); each alone decodes to U+FFFD."""

        def decode(self, ids: list[int], clean_up_tokenization_spaces: bool | None = None) -> str:
            raw = b"".join({1: b"caf", 2: b"\xc3", 3: b"\xa9", 4: b"\n"}[i] for i in ids)
            return raw.decode(errors="replace")

    tokenizer, ids = ByteFallback(), [1, 2, 3, 4]
    assert single_token_strings(tokenizer, ids) == ("caf", "\ufffd", "\ufffd", "\n")
    assert "".join(token_pieces(tokenizer, ids)) == "café\n", "monoscope's own rendering keeps the character whole"
    window = SaebenchWindow(0, 1, single_token_strings(tokenizer, ids), (0.0, 5.0, 0.0, 0.0), True, "top")
    # SAEBench's Example.to_str: <<token>> around active tokens, then "�" removed and line breaks shown as ↵
    assert marked(window, 1.0) == "caf<<>>↵" and marked(window, None) == "caf↵"
