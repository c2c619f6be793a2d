"""``monoscope export neuronpedia``: SAEDashboard's Neuronpedia layout from a run's index, corpus and dictionaries."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import harness.run.steering
from harness.cli import main
from harness.errors import MonoscopeError
from harness.index.store import load_index, unit_samples
from harness.records import Explanation
from harness.run.neuronpedia import EXPLANATION_TYPES, export_neuronpedia, neuronpedia_model_id
from harness.steering.outputs import corpus_tokens, output_logits
from harness.steering.units import run_dictionary
from harness.subject.corpus import load_chunks
from harness.subject.decoding import token_pieces
from results.store import append_records
from tests.test_steering_run import run  # noqa: F401 (module fixture: a finished tiny foundation)

# The keys of SAEDashboard 0.8.0's NeuronpediaDashboardFeature.to_dict and NeuronpediaDashboardActivation.to_dict
# (sae_dashboard/neuronpedia/neuronpedia_dashboard.py), written here from reading that file.
FEATURE_KEYS = {
    "feature_index", "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
    "correlated_neurons_indices", "correlated_neurons_l1", "correlated_neurons_pearson", "correlated_features_indices",
    "correlated_features_l1", "correlated_features_pearson", "neg_str", "neg_values", "pos_str", "pos_values",
    "frac_nonzero", "freq_hist_data_bar_values", "freq_hist_data_bar_heights", "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values", "n_prompts_total", "n_tokens_in_prompt", "dataset", "decoder_weights_dist",
    "activations", "vector",
}  # fmt: skip
ACTIVATION_KEYS = {"bin_min", "bin_max", "bin_contains", "tokens", "values", "qualifying_token_index"}
BATCH_KEYS = {"model_id", "layer", "sae_set", "sae_id_suffix", "features"}
# Neuronpedia's Explanation table (apps/webapp/prisma/schema.prisma): the fields an import needs.
EXPLANATION_KEYS = {"id", "modelId", "layer", "index", "description", "authorId", "typeName", "explanationModelName"}


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    run_dir, subject = run
    explanation = Explanation("sae-16/3", "llm", "digits and brackets", "local", "tiny-judge", "h", 4)
    failed = Explanation("sae-16/5", "llm", None, "local", "tiny-judge", "h", 4, failure="no reply")
    append_records(run_dir / "explanations.jsonl", [explanation, failed])
    out = tmp_path_factory.mktemp("neuronpedia")
    patch = pytest.MonkeyPatch()
    patch.setattr(harness.run.steering, "load_subject_model", lambda *a, **k: subject)
    folders = export_neuronpedia(run_dir, out, log=lambda _message: None)
    patch.undo()
    return run_dir, subject, out, folders


def batches(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("batch-*.json"), key=lambda p: int(p.stem.split("-")[1]))]


def test_every_dictionary_gets_a_source_folder_of_dashboard_batches_and_every_fired_feature_a_record(exported) -> None:
    run_dir, _subject, out, folders = exported
    indexed = sorted(p.stem for p in (run_dir / "index").glob("*.safetensors") if p.stem != "neurons")
    assert sorted(f.name for f in folders) == sorted(f"2-{name}" for name in indexed) == sorted(p.name for p in out.iterdir())
    for folder in folders:
        state, _ = load_index(run_dir / "index" / f"{folder.name[2:]}.safetensors")
        fired = {int(i) for i in torch.nonzero(state.fire_count > 0).flatten()}
        features = [f for batch in batches(folder) for f in batch["features"]]
        assert all(set(batch) == BATCH_KEYS and batch["layer"] == 2 and batch["model_id"] == "tiny-byte-gemma" for batch in batches(folder))
        assert {f["feature_index"] for f in features} == fired and len(features) == len(fired)
        assert all(set(f) == FEATURE_KEYS for f in features)
        skipped = json.loads((folder / "skipped_indexes.json").read_text())["skipped_indexes"]
        assert sorted(skipped) == sorted(set(range(state.n_units)) - fired)


def test_activation_records_are_the_index_samples_with_the_corpus_tokens_and_their_bins(exported) -> None:
    run_dir, subject, _out, _folders = exported
    state, _ = load_index(run_dir / "index" / "sae-16.safetensors")
    chunks = load_chunks(run_dir / "corpus")
    feature = next(f for batch in batches(_out / "2-sae-16") for f in batch["features"])
    index = feature["feature_index"]
    samples = [s for s in unit_samples(state, index, "x") if s.kind in ("top", "interval")]
    assert len(feature["activations"]) == len(samples) > 0
    for record, sample in zip(feature["activations"], samples, strict=True):
        ids = chunks[sample.chunk, sample.window_start : sample.window_start + len(sample.activations)].tolist()
        assert "".join(record["tokens"]) == subject.tokenizer.decode(ids) and len(record["tokens"]) == len(ids)
        assert record["values"] == pytest.approx(list(sample.activations), abs=1e-3)
        assert record["qualifying_token_index"] == sample.position - sample.window_start
        assert record["values"][record["qualifying_token_index"]] == pytest.approx(sample.value, abs=1e-3)
        if sample.kind == "top":
            assert (record["bin_min"], record["bin_contains"]) == (-1, -1)
        else:
            low, high = record["bin_min"], record["bin_max"]
            assert low <= sample.value <= high + 1e-6 and 0 < record["bin_contains"] <= 1
    assert feature["frac_nonzero"] == pytest.approx(int(state.fire_count[index]) / state.n_tokens)
    assert sum(feature["freq_hist_data_bar_heights"]) == int(state.fire_count[index])
    assert feature["n_prompts_total"] == chunks.shape[0] and feature["n_tokens_in_prompt"] == chunks.shape[1]


def test_promoted_and_suppressed_tokens_are_the_decoder_rows_logit_lens_among_corpus_tokens(exported) -> None:
    run_dir, subject, out, _folders = exported
    dictionary = run_dictionary(run_dir, "sae-48")
    allowed = corpus_tokens(load_chunks(run_dir / "corpus"), subject.model.get_output_embeddings().weight.shape[0])
    for feature in [f for batch in batches(out / "2-sae-48") for f in batch["features"]][:5]:
        logits = output_logits(subject, dictionary.W_dec[feature["feature_index"]].detach().float())
        masked = logits.masked_fill(~allowed[: logits.shape[0]], -torch.inf)
        top = masked.topk(len(feature["pos_values"]))
        assert feature["pos_values"] == pytest.approx(top.values.tolist(), abs=2e-3)
        assert feature["pos_str"] == list(token_pieces(subject.tokenizer, top.indices.tolist()))
        lowest = logits.masked_fill(~allowed[: logits.shape[0]], torch.inf).topk(len(feature["neg_values"]), largest=False)
        assert feature["neg_values"] == pytest.approx(lowest.values.tolist(), abs=2e-3)
        row = dictionary.W_dec[feature["feature_index"]].detach()
        assert feature["neuron_alignment_indices"][0] == int(row.abs().argmax())
        cosine = torch.nn.functional.cosine_similarity(row[None], dictionary.W_dec.detach(), dim=1)
        cosine[feature["feature_index"]] = -2
        assert feature["correlated_features_indices"][0] == int(cosine.argmax())


def test_explanations_are_neuronpedia_explanation_records_with_their_scores_beside_them(exported) -> None:
    _run_dir, _subject, out, _folders = exported
    records = json.loads((out / "2-sae-16" / "explanations.json").read_text())
    assert len(records) == 1, "a failed explanation is not exported"
    (record,) = records
    assert set(record) == EXPLANATION_KEYS
    assert (record["modelId"], record["layer"], record["index"]) == ("tiny-byte-gemma", "2-sae-16", "3")
    assert (record["description"], record["typeName"], record["explanationModelName"]) == (
        "digits and brackets",
        EXPLANATION_TYPES["llm"],
        "tiny-judge",
    )
    scores = json.loads((out / "2-sae-16" / "explanation_scores.json").read_text())
    assert list(scores) == [record["id"]]
    assert json.loads((out / "2-sae-48" / "explanations.json").read_text()) == []


def test_model_ids_follow_neuronpedias_form() -> None:
    assert neuronpedia_model_id("embedded") == "gemma-3-270m"
    assert neuronpedia_model_id("google/gemma-2-2b") == "gemma-2-2b"
    assert neuronpedia_model_id("/models/My Model/") == "my-model"


def test_bad_inputs_are_refused_before_a_model_loads(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    run_dir, _subject = run
    monkeypatch.setattr(harness.run.steering, "load_subject_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(MonoscopeError, match="no finished foundation"):
        export_neuronpedia(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(MonoscopeError, match="is a file"):
        export_neuronpedia(run_dir, tmp_path / "file")
    with pytest.raises(MonoscopeError, match="model id"):
        export_neuronpedia(run_dir, tmp_path / "out", model_id="Gemma 2")
    result = CliRunner().invoke(main, ["export", "neuronpedia", str(tmp_path / "empty"), str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "Traceback" not in result.output
