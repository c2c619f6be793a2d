"""The run's SAEBench-compatible detection (``evaluation.detection_setting: saebench``; ``scorers.saebench``).

Reads each evaluated unit's ``spaced_top`` and ``weighted`` samples from its index and the corpus;
writes the SAEBench explanation of each unit (explainer "saebench" in ``explanations.jsonl``) and
one ``SaebenchJudgment`` per unit and source (``saebench.jsonl``): "real" (the unit's SAEBench
explanation) and "shuffled" (another unit's, by the run's derangement). A unit SAEBench would skip
(too few samples) gets neither. Records made from the same windows, prompts and models are reused.
"""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.config import EvaluationConfig
from harness.index.store import is_partial_index, load_index, read_header, unit_samples
from harness.llm.client import LLMClient
from harness.llm.templates import load_template
from harness.records import ContextSample, Explanation
from harness.run.evaluate import EXPLANATIONS, shuffled_sources
from harness.subject.decoding import single_token_strings
from results.store import append_records, latest_by_key, read_records
from scorers.saebench import (
    BUFFER,
    DETECTION_TEMPLATE,
    EXPLAIN_TEMPLATE,
    N_RANDOM,
    SaebenchJudgment,
    SaebenchWindow,
    explain_latent,
    score_latent,
    select_windows,
)

SAEBENCH_RECORDS = "saebench.jsonl"
EXPLAINER_NAME = "saebench"


def _unit_rows(run_dir: Path, units: list[str]) -> dict[str, tuple[Path, int]]:
    """Return {unit: (its index file, its row)} for ``DICTIONARY/INDEX`` features and pool neurons ``mlp.L/I``."""
    rows = {}
    for path in sorted(p for p in (run_dir / "index").glob("*.safetensors") if not is_partial_index(p)):
        about = read_header(path).get("about", {})
        names = about.get("unit_names")
        if names:
            rows |= {name: (path, row) for row, name in enumerate(names) if name in units}
        else:
            prefix = f"{about.get('dictionary', path.stem)}/"
            rows |= {unit: (path, int(unit[len(prefix) :])) for unit in units if unit.startswith(prefix)}
    return rows


def _random_windows(chunks: np.ndarray, tokenizer, unit: str, seed: int) -> list[SaebenchWindow]:  # noqa: ANN001
    """Return SAEBench's 10 uniformly random windows of a unit (labelled negative without reading them)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}|{unit}|random".encode()).digest()[:8], "big"))
    length = chunks.shape[1]
    windows = []
    for _ in range(N_RANDOM):
        chunk, position = int(rng.integers(0, len(chunks))), int(rng.integers(BUFFER, length - BUFFER))
        ids = chunks[chunk, position - BUFFER : position + BUFFER + 1].tolist()
        windows.append(SaebenchWindow(chunk, position, single_token_strings(tokenizer, ids), None, False, "random"))
    return windows


def saebench_stage(
    run_dir: Path,
    units: list[str],
    chunks: np.ndarray,
    tokenizer,  # noqa: ANN001 (the subject model's)
    explainer: LLMClient,
    judge: LLMClient,
    config: EvaluationConfig,
    on_unit_done: Callable[[], None] | None = None,
) -> dict[str, str]:
    """Explain and score ``units`` by SAEBench's procedure; return {unit: why it was skipped} for the units SAEBench would skip."""
    rows = _unit_rows(run_dir, units)
    loaded: dict[Path, object] = {}
    explanations = latest_by_key(read_records(run_dir / EXPLANATIONS, Explanation))
    done = latest_by_key(read_records(run_dir / SAEBENCH_RECORDS, SaebenchJudgment))
    explain_settings = (explainer.backend.name, explainer.backend.model, load_template(EXPLAIN_TEMPLATE).sha256)
    judge_settings = (judge.backend.name, judge.backend.model, load_template(DETECTION_TEMPLATE).sha256)
    skipped: dict[str, str] = {}
    scoring: dict[str, list[SaebenchWindow]] = {}

    def pieces(sample: ContextSample) -> tuple[str, ...]:  # each token decoded alone, as SAEBench shows it
        start = sample.window_start
        return single_token_strings(tokenizer, chunks[sample.chunk, start : start + len(sample.activations)].tolist())

    for unit in units:
        if unit not in rows:
            skipped[unit] = "no index row"
            continue
        path, row = rows[unit]
        if path not in loaded:
            loaded[path] = load_index(path)[0]
        samples = unit_samples(loaded[path], row, unit)
        top = [s for s in samples if s.kind == "spaced_top"]
        weighted = [s for s in samples if s.kind == "weighted"]
        chosen = select_windows(top, weighted, _random_windows(chunks, tokenizer, unit, config.seed), unit, config.seed, pieces)
        if chosen is None:
            skipped[unit] = "fewer than SAEBench's 12 top and 7 importance-weighted windows"
            continue
        explain, scoring[unit] = chosen
        digest = hashlib.sha256(json.dumps([[w.chunk, w.position, list(w.tokens)] for w in explain]).encode()).hexdigest()
        record = explanations.get((unit, EXPLAINER_NAME))
        current = (
            record is not None
            and record.text is not None
            and record.contexts_sha256 == digest
            and (record.backend, record.model, record.prompt_hash) == explain_settings
        )
        if not current:
            text, failure, raw = explain_latent(explain, explainer)
            base = dict(backend=explain_settings[0], model=explain_settings[1], prompt_hash=explain_settings[2])
            record = Explanation(
                unit, EXPLAINER_NAME, text, **base, n_contexts=len(explain), failure=failure, raw=raw, contexts_sha256=digest
            )
            append_records(run_dir / EXPLANATIONS, [record])
            explanations[(unit, EXPLAINER_NAME)] = record
    texts = {unit: r.text for (unit, explainer_name), r in explanations.items() if explainer_name == EXPLAINER_NAME and unit in scoring}
    shuffle = shuffled_sources(sorted(texts), config.seed)
    for unit, windows in scoring.items():
        for source, text in (("real", texts.get(unit)), ("shuffled", texts.get(shuffle.get(unit, ""), None))):
            if not text:
                continue
            previous = done.get((unit, source))
            names = tuple(f"{w.chunk}:{w.position}" for w in windows)
            if (
                previous is not None
                and previous.failure is None
                and previous.explanation == text
                and previous.windows == names
                and (previous.backend, previous.model, previous.prompt_hash) == judge_settings
            ):
                continue
            append_records(run_dir / SAEBENCH_RECORDS, [score_latent(unit, source, text, windows, judge, config.seed)])
        if on_unit_done is not None:
            on_unit_done()
    return skipped
