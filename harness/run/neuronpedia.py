"""``monoscope export neuronpedia RUN_DIR OUT``: a run's dictionaries in the layout SAEDashboard's Neuronpedia export writes.

SAEDashboard 0.8.0 (``sae_dashboard/neuronpedia``: ``neuronpedia_runner.py``, ``neuronpedia_converter.py``,
``neuronpedia_dashboard.py``) writes, per dictionary ("source"), ``batch-N.json`` files each holding one
``NeuronpediaDashboardBatch`` (``model_id``, ``layer``, ``sae_set``, ``sae_id_suffix``, ``features``), every feature a
``NeuronpediaDashboardFeature`` with its ``activations`` (``NeuronpediaDashboardActivation``: ``bin_min``,
``bin_max``, ``bin_contains``, per-token ``tokens`` and ``values``, ``qualifying_token_index``), plus
``skipped_indexes.json`` (features left out) and ``run_settings.json``. monoscope writes the same files under
``OUT/<layer>-<set>/`` from the run's index, corpus, dictionaries and subject model, with no new forward pass
over the corpus:

- every feature that fired in the index is exported; the others are ``skipped_indexes`` (SAEDashboard's dead
  features);
- ``activations``: the index's top samples (SAEDashboard's "TOP ACTIVATIONS" group: ``bin_min`` -1, ``bin_max``
  the feature's maximum, ``bin_contains`` -1) and its interval samples (``bin_min``/``bin_max`` the interval's
  edges, ``bin_contains`` the fraction of the feature's firing tokens in it), each a window of the index's
  window length (not the whole context) with one string per token (``token_pieces``: they join to the
  window's decoded text) and the feature's activation on each; ``qualifying_token_index`` is the sampled token;
- ``frac_nonzero``: firing tokens / indexed tokens; ``freq_hist_data_*``: the index's histogram over its
  log-spaced intervals (bar values at each interval's geometric middle; SAEDashboard's bins are linear);
- ``pos_str``/``pos_values`` and ``neg_str``/``neg_values``: the tokens the decoder row promotes and suppresses
  through the final norm and the unembedding (``harness.steering.outputs.output_logits``), among tokens that
  occur in the corpus; ``logits_hist_data_*``: the histogram of those logits over the same tokens;
- ``neuron_alignment_*``: the decoder row's largest entries by magnitude (residual-stream basis directions),
  their values and their share of the row's L1 norm, as SAEDashboard computes them;
- ``correlated_neurons_*``: the feature's most correlated residual direction (Pearson) where monoscope's
  correlation pass measured it (``correlations.jsonl``), else empty; ``correlated_features_*``: the features
  with the nearest decoder rows (cosine in ``correlated_features_l1``, where SAEDashboard's converter puts its
  cosine similarities; ``correlated_features_pearson`` empty: not measured);
- ``decoder_weights_dist`` and ``vector`` empty (attention-output and vector sources only).

Beside them, per source: ``explanations.json``, the run's explanations as Neuronpedia explanation records
(``id``, ``modelId``, ``layer`` = the source id, ``index``, ``description``, ``authorId``, ``typeName``,
``explanationModelName``: the fields of Neuronpedia's ``Explanation`` table, apps/webapp/prisma/schema.prisma in
github.com/hijohnnylin/neuronpedia), and ``explanation_scores.json``, each explanation id mapped to its unit's
row of ``results/tables/units.csv`` (every score and control of that table, documented in the README).
``monoscope_units.json`` maps each exported feature to its monoscope unit name and its strongest MLP-neuron
correlation (``mlp.L/i``), which the dashboard record has no field for.
"""

import hashlib
import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.dictionaries.dictionary import Dictionary
from harness.dictionaries.neurons import POOL_NAME
from harness.errors import MonoscopeError
from harness.index.state import IndexState
from harness.index.store import load_index, unit_samples
from harness.progress import Progress
from harness.records import Explanation, FeatureCorrelation
from harness.storage import atomic_write_json
from harness.subject.decoding import token_pieces
from harness.subject.model import SubjectModel, parse_hook

FEATURES_PER_BATCH = 128  # SAEDashboard's default n_features_at_a_time
TOP_TOKENS = 10
NEAREST = 10
ALIGNMENT = 3
LOGIT_BINS = 40
EXPLANATION_TYPES = {"llm": "monoscope-contexts", "output": "monoscope-outputs", "saebench": "monoscope-saebench"}


@dataclass(frozen=True)
class Source:
    """One exported dictionary: its Neuronpedia source id and where its files go."""

    unit_set: str
    model_id: str
    layer: int
    sae_set: str

    @property
    def source_id(self) -> str:
        """Return Neuronpedia's source id, ``<layer>-<set>``."""
        return f"{self.layer}-{self.sae_set}"


def neuronpedia_model_id(model: str) -> str:
    """Return a Neuronpedia model id for a run's model: ``gemma-3-270m`` for the embedded model, else the id's last part."""
    name = "gemma-3-270m" if model == "embedded" else model.rstrip("/").split("/")[-1]
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "model"


def _set_name(unit_set: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", unit_set.lower()).strip("-")


def _round(values: Any) -> list[float]:
    return [round(float(v), 3) for v in values]


def logit_tables(subject: SubjectModel, decoder: torch.Tensor, allowed: torch.Tensor, top: int = TOP_TOKENS) -> list[dict[str, Any]]:
    """Return, per decoder row [n, d_model], its promoted and suppressed tokens among ``allowed`` [vocab] and their histogram."""
    from harness.steering.outputs import final_norm

    norm = final_norm(subject.model)
    unembedding = subject.model.get_output_embeddings()
    parameter = next(unembedding.parameters())
    with torch.inference_mode():
        logits = unembedding(norm(decoder.to(parameter.device, parameter.dtype)[:, None, :]))[:, 0].float().cpu()
    allowed = allowed[: logits.shape[1]]
    ids = torch.nonzero(allowed).flatten()
    chosen = logits[:, ids]
    tables = []
    for row in chosen:
        top_values, top_at = row.topk(min(top, len(ids)))
        bottom_values, bottom_at = (-row).topk(min(top, len(ids)))
        heights, edges = np.histogram(row.numpy(), bins=LOGIT_BINS)
        tables.append(
            {
                "pos": (ids[top_at].tolist(), _round(top_values)),
                "neg": (ids[bottom_at].tolist(), _round(-bottom_values)),
                "logits_hist_data_bar_heights": [float(h) for h in heights],
                "logits_hist_data_bar_values": _round((edges[:-1] + edges[1:]) / 2),
            }
        )
    return tables


def _activation_groups(state: IndexState, unit: int, chunks: np.ndarray, tokenizer: Any) -> list[dict[str, Any]]:
    """Return the unit's top and interval samples as SAEDashboard activation records."""
    config = state.config
    edges = config.bin_edges() + [math.inf]
    fires = max(int(state.fire_count[unit]), 1)
    histogram = state.histogram[unit].tolist()
    records = []
    for sample in unit_samples(state, unit, str(unit)):
        if sample.kind == "top":
            low, high, contains = -1.0, float(state.maximum[unit]), -1.0
        elif sample.kind == "interval" and sample.interval is not None:
            low, high = edges[sample.interval], edges[sample.interval + 1]
            high = float(state.maximum[unit]) if math.isinf(high) else high
            contains = histogram[sample.interval] / fires
        else:
            continue  # random firing, non-firing and SAEBench samples have no SAEDashboard group
        ids = chunks[sample.chunk, sample.window_start : sample.window_start + len(sample.activations)].tolist()
        records.append(
            {
                "bin_min": round(low, 6),
                "bin_max": round(high, 6),
                "bin_contains": round(contains, 6),
                "tokens": list(token_pieces(tokenizer, ids)),
                "values": _round(sample.activations),
                "qualifying_token_index": sample.position - sample.window_start,
            }
        )
    return records


def _frequency_histogram(state: IndexState, unit: int) -> tuple[list[float], list[float]]:
    edges = state.config.bin_edges()
    values, heights = [], []
    for interval, count in enumerate(state.histogram[unit].tolist()):
        if count:
            low = edges[interval] if interval < len(edges) else edges[-1]
            high = edges[interval + 1] if interval + 1 < len(edges) else 2 * low
            values.append(round(math.sqrt(low * high) if low > 0 else high / 2, 6))
            heights.append(float(count))
    return values, heights


def feature_records(
    source: Source,
    dictionary: Dictionary,
    state: IndexState,
    chunks: np.ndarray,
    subject: SubjectModel,
    allowed: torch.Tensor,
    correlations: dict[str, FeatureCorrelation],
    features: list[int],
) -> Iterator[dict[str, Any]]:
    """Yield one SAEDashboard feature record (``NeuronpediaDashboardFeature.to_dict`` layout) per feature index."""
    if dictionary.W_dec is None:
        raise MonoscopeError(f"{source.unit_set}: the dictionary has no decoder", "export a dictionary with W_dec")
    decoder = dictionary.W_dec.detach().float().cpu()
    unit_directions = torch.nn.functional.normalize(decoder, dim=1)
    logits = logit_tables(subject, decoder[features], allowed)
    for position, feature in enumerate(features):
        row = decoder[feature]
        alignment = row.abs().topk(min(ALIGNMENT, row.numel())).indices
        l1 = float(row.abs().sum()) or 1.0
        cosine = unit_directions @ unit_directions[feature]
        cosine[feature] = -math.inf
        nearest = cosine.topk(min(NEAREST, max(cosine.numel() - 1, 0)))
        correlation = correlations.get(dictionary.unit_name(feature))
        residual = correlation.residual_direction if correlation is not None else None
        values, heights = _frequency_histogram(state, feature)
        table = logits[position]
        yield {
            "feature_index": feature,
            "neuron_alignment_indices": alignment.tolist(),
            "neuron_alignment_values": _round(row[alignment]),
            "neuron_alignment_l1": _round(row[alignment].abs() / l1),
            "correlated_neurons_indices": [int(residual.split("/")[1])] if residual else [],
            "correlated_neurons_l1": [],
            "correlated_neurons_pearson": _round([correlation.max_residual_correlation]) if residual else [],
            "correlated_features_indices": nearest.indices.tolist(),
            "correlated_features_l1": _round(nearest.values),
            "correlated_features_pearson": [],
            "neg_str": list(token_pieces(subject.tokenizer, table["neg"][0])),
            "neg_values": table["neg"][1],
            "pos_str": list(token_pieces(subject.tokenizer, table["pos"][0])),
            "pos_values": table["pos"][1],
            "frac_nonzero": int(state.fire_count[feature]) / max(state.n_tokens, 1),
            "freq_hist_data_bar_values": values,
            "freq_hist_data_bar_heights": heights,
            "logits_hist_data_bar_heights": table["logits_hist_data_bar_heights"],
            "logits_hist_data_bar_values": table["logits_hist_data_bar_values"],
            "n_prompts_total": int(chunks.shape[0]),
            "n_tokens_in_prompt": int(chunks.shape[1]),
            "dataset": "",
            "decoder_weights_dist": [],
            "activations": _activation_groups(state, feature, chunks, subject.tokenizer),
            "vector": [],
        }


def explanation_records(source: Source, explanations: list[Explanation]) -> list[dict[str, Any]]:
    """Return the set's explanations as Neuronpedia ``Explanation`` records (ids derived from their content)."""
    records = []
    for explanation in explanations:
        index = explanation.unit.rsplit("/", 1)[1]
        identity = f"{source.model_id}|{source.source_id}|{index}|{explanation.explainer}|{explanation.text}"
        records.append(
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "monoscope:" + hashlib.sha256(identity.encode()).hexdigest())),
                "modelId": source.model_id,
                "layer": source.source_id,
                "index": index,
                "description": explanation.text,
                "authorId": "monoscope",
                "typeName": EXPLANATION_TYPES.get(explanation.explainer, f"monoscope-{explanation.explainer}"),
                "explanationModelName": explanation.model,
            }
        )
    return records


def _units_table(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Return {unit: its row of results/tables/units.csv}, empty and non-finite cells as None ({} before the results stage)."""
    from results.tables import load_table, table_path

    if not table_path(run_dir, "units").exists():
        return {}
    rows = load_table(run_dir, "units").to_dict(orient="records")
    return {str(row["unit"]): {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()} for row in rows}


def export_neuronpedia(run_dir: Path, out: Path, model_id: str | None = None, log: Progress = print) -> list[Path]:
    """Write every dictionary of a finished run in SAEDashboard's Neuronpedia layout under ``out``; return the source dirs.

    Raises MonoscopeError before any model loads when the run holds no finished foundation or no dictionary index,
    or when ``out`` is a file.
    """
    from harness.run.directory import read_manifest
    from harness.run.reporting import CORRELATIONS
    from harness.run.steering import loaded_dictionaries, run_subject
    from harness.steering.outputs import corpus_tokens
    from harness.steering.units import run_dictionary
    from harness.subject.corpus import load_chunks
    from results.store import latest_by_key, read_records

    run_dir, out = Path(run_dir), Path(out)
    manifest = read_manifest(run_dir)
    foundation = manifest.get("config", {}).get("foundation")
    if not foundation or not (run_dir / "corpus.npy").exists():
        raise MonoscopeError(f"{str(run_dir)!r} holds no finished foundation", "run 'monoscope run CONFIG' (or 'monoscope demo') first")
    indexes = sorted(p for p in (run_dir / "index").glob("*.safetensors") if p.stem != POOL_NAME)
    if not indexes:
        raise MonoscopeError(f"{str(run_dir)!r} has no dictionary index", "run 'monoscope run CONFIG' to build one")
    if out.exists() and not out.is_dir():
        raise MonoscopeError(f"{str(out)!r} is a file", "give a directory to export into")
    model_id = neuronpedia_model_id(foundation["model"]) if model_id is None else model_id
    if not re.fullmatch(r"[a-z0-9_-]+", model_id):
        raise MonoscopeError(f"--model-id {model_id!r}", "Neuronpedia model ids hold lower-case letters, digits, '-' and '_'")
    subject = run_subject(run_dir)
    chunks = load_chunks(run_dir / "corpus")
    allowed = corpus_tokens(chunks, subject.model.get_output_embeddings().weight.shape[0])
    correlations = latest_by_key(read_records(run_dir / CORRELATIONS, FeatureCorrelation)) if (run_dir / CORRELATIONS).exists() else {}
    explanations = (
        [
            e
            for e in latest_by_key(read_records(run_dir / "explanations.jsonl", Explanation)).values()
            if e.text and e.explainer in EXPLANATION_TYPES
        ]
        if (run_dir / "explanations.jsonl").exists()
        else []
    )
    units_table = _units_table(run_dir)
    written = []
    for path in indexes:
        dictionary = run_dictionary(run_dir, path.stem, loaded_dictionaries(run_dir))
        state, _about = load_index(path)
        source = Source(path.stem, model_id, parse_hook(dictionary.hook_name).layer, _set_name(path.stem))
        folder = out / source.source_id
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("batch-*.json"):
            stale.unlink()
        alive = [int(i) for i in torch.nonzero(state.fire_count > 0).flatten().tolist()]
        batches = [alive[i : i + FEATURES_PER_BATCH] for i in range(0, len(alive), FEATURES_PER_BATCH)]
        for number, features in enumerate(batches):
            records = list(feature_records(source, dictionary, state, chunks, subject, allowed, correlations, features))
            for record in records:
                record["dataset"] = str(foundation.get("corpus", ""))
            batch = {"model_id": model_id, "layer": source.layer, "sae_set": source.sae_set, "sae_id_suffix": None, "features": records}
            atomic_write_json(folder / f"batch-{number}.json", batch)
            log(f"neuronpedia: {source.source_id} batch {number + 1}/{len(batches)} ({len(features)} features)")
        skipped = sorted(set(range(state.n_units)) - set(alive))
        atomic_write_json(
            folder / "skipped_indexes.json",
            {"model_id": model_id, "layer": str(source.layer), "sae_set": source.sae_set, "log_sparsity": None, "skipped_indexes": skipped},
        )
        mine = [e for e in explanations if e.unit.rsplit("/", 1)[0] == path.stem]
        records = explanation_records(source, mine)
        atomic_write_json(folder / "explanations.json", records)
        atomic_write_json(
            folder / "explanation_scores.json", {r["id"]: units_table.get(e.unit) for r, e in zip(records, mine, strict=True)}
        )
        atomic_write_json(
            folder / "monoscope_units.json",
            {
                str(i): {
                    "unit": dictionary.unit_name(i),
                    "max_neuron_correlation": getattr(correlations.get(dictionary.unit_name(i)), "max_neuron_correlation", None),
                    "neuron": getattr(correlations.get(dictionary.unit_name(i)), "neuron", None),
                }
                for i in alive
            },
        )
        atomic_write_json(
            folder / "run_settings.json",
            {
                "exporter": "monoscope export neuronpedia",
                "run_dir": str(run_dir.resolve()),
                "model_id": model_id,
                "hook_name": dictionary.hook_name,
                "d_sae": dictionary.d_sae,
                "n_features_exported": len(alive),
                "n_features_skipped": len(skipped),
                "features_per_batch": FEATURES_PER_BATCH,
                "window_tokens": state.config.window,
                "n_indexed_tokens": state.n_tokens,
                "promoted_tokens_among": "tokens that occur in the run's corpus",
                "config": manifest.get("config"),
            },
        )
        written.append(folder)
    return written
