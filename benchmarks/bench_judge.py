"""judge_tokens: the rubric judge's shared work against one separate call per judgment; the judge material both
judge benchmarks (this one and bench_judge_speed.py) use.

Both run the embedded Gemma 3 270M judge (temperature 0, no response cache) on real contexts: the
held-out scoring contexts and explanations of an existing run (``--judge-run``, else ``runs/demo``
when present), or synthetic contexts cut from the embedded corpus otherwise.

Optional arguments, read with getattr (benchmarks/run.py need not define them): ``judge_run``,
``judge_contexts`` (48), ``judge_batch`` (8, contexts per rating_batch call), ``judge_speed_judgments``
(24) and ``judge_threads``. Threads: ``judge_threads`` when given; otherwise torch's setting, except
that when other processes keep at least half a core busy at the start the benchmark runs on one
thread (on this 2-core machine two torch threads sharing a core with another process ran 10-20x
slower than one thread). Both sides of every ratio run under the same setting, which the result reports.
"""

import argparse
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from common import ROOT, benchmark

RUN_CANDIDATES = (ROOT / "runs" / "demo",)
SOURCES = ("real", "shuffled", "token_stats")
RATING_SOURCE = "token_stats"  # unit-specific by construction, so the judge is measured rather than the explainer
AGREEMENT = 0.9


@dataclass
class JudgeMaterial:
    """Units with their scoring contexts, the explanation texts judged for each, and where they came from."""

    origin: str
    units: list[Any]  # harness.records.UnitContexts
    texts: dict[str, dict[str, str]]  # unit -> source -> explanation text

    @property
    def n_contexts(self) -> int:
        """Return the number of scoring contexts over all units."""
        return sum(len(unit.score) for unit in self.units)


def judge_material(subject: Any, n_contexts: int, run_dir: Path | None = None) -> JudgeMaterial:
    """Return up to ``n_contexts`` scoring contexts (whole units first) with real, shuffled and token-statistics explanations."""
    candidates = [run_dir] if run_dir is not None else list(RUN_CANDIDATES)
    for candidate in candidates:
        if (candidate / "contexts.jsonl").exists() and (candidate / "explanations.jsonl").exists():
            material = _run_material(candidate, n_contexts)
            if material.n_contexts:
                return material
    return _synthetic_material(subject, n_contexts)


def _run_material(run_dir: Path, n_contexts: int) -> JudgeMaterial:
    """Return the material of a finished run: its contexts.jsonl and explanations.jsonl."""
    from harness.records import Explanation, TokenContext, UnitContexts
    from harness.run.evaluate import shuffled_sources
    from results.store import latest_by_key, read_records

    scoring: dict[str, list[TokenContext]] = {}
    for context in read_records(run_dir / "contexts.jsonl", TokenContext):
        if context.split == "score":
            scoring.setdefault(context.unit, []).append(context)
    latest = latest_by_key(read_records(run_dir / "explanations.jsonl", Explanation))
    text = {key: record.text for key, record in latest.items() if record.text}
    explained = [unit for unit in scoring if (unit, "llm") in text and (unit, "token_stats") in text]
    partner = shuffled_sources(explained, seed=0)  # the pipeline's shuffled control: another unit's LLM explanation
    units: list[UnitContexts] = []
    texts: dict[str, dict[str, str]] = {}
    taken = 0
    for unit in explained:
        if taken >= n_contexts:
            break
        contexts = tuple(scoring[unit][: n_contexts - taken])
        taken += len(contexts)
        units.append(UnitContexts(unit, max(max(c.activations) for c in scoring[unit]), (), contexts))
        shuffled = text[(partner[unit], "llm")] if unit in partner else text[(unit, "token_stats")]
        texts[unit] = {"real": text[(unit, "llm")], "shuffled": shuffled, "token_stats": text[(unit, "token_stats")]}
    return JudgeMaterial(str(run_dir), units, texts)


def _synthetic_material(subject: Any, n_contexts: int, per_unit: int = 12) -> JudgeMaterial:
    """Return synthetic units over 16-token windows of the embedded corpus: each "fires" on one token per window."""
    from harness.records import TokenContext, UnitContexts
    from harness.subject.corpus import chunk_documents, corpus_documents

    chunks = chunk_documents(corpus_documents(), subject.tokenizer, 16, 16 * n_contexts)
    units, texts, names = [], {}, []
    for start in range(0, min(n_contexts, len(chunks)), per_unit):
        unit = f"synthetic/{start // per_unit}"
        contexts = []
        for row in range(start, min(start + per_unit, n_contexts, len(chunks))):
            tokens = tuple(subject.tokenizer.decode([int(t)]) for t in chunks[row])
            target = 4 + row % 8
            activations = tuple(1.0 if i == target else 0.0 for i in range(len(tokens)))
            contexts.append(TokenContext(unit, f"{unit}@{row}:{target}", "top", row, tokens, activations, target))
        units.append(UnitContexts(unit, 1.0, (), tuple(contexts)))
        common = Counter(c.tokens[c.target].strip() or c.tokens[c.target] for c in contexts).most_common(3)
        names.append(unit)
        texts[unit] = {"real": "tokens in Python source code", "token_stats": "the tokens " + ", ".join(f'"{t}"' for t, _ in common)}
    for index, unit in enumerate(names):  # the shuffled control: the next unit's token-statistics explanation
        texts[unit]["shuffled"] = texts[names[(index + 1) % len(names)]]["token_stats"]
    return JudgeMaterial("synthetic (embedded corpus)", units, texts)


def _cpu_used_elsewhere(seconds: float = 1.0) -> float | None:
    """Return how many cores other processes kept busy over ``seconds`` (from /proc/stat), or None where unreadable."""

    def busy_ticks() -> int:
        with open("/proc/stat", encoding="ascii") as handle:
            values = [int(v) for v in handle.readline().split()[1:9]]
        return sum(values) - values[3] - values[4]  # all but idle and iowait

    try:
        before, own = busy_ticks(), time.process_time()
        time.sleep(seconds)
        used = (busy_ticks() - before) / os.sysconf("SC_CLK_TCK") - (time.process_time() - own)
    except (OSError, ValueError):
        return None
    return max(0.0, used / seconds)


@contextmanager
def judge_threads(args: argparse.Namespace) -> Iterator[str]:
    """Run the block under the benchmark's torch thread count (see the module docstring); yield why that count."""
    previous = torch.get_num_threads()
    asked = getattr(args, "judge_threads", None)
    if asked:
        threads, why = int(asked), "judge_threads"
    else:
        elsewhere = _cpu_used_elsewhere() if previous > 1 else None
        if elsewhere is not None and elsewhere >= 0.5:
            threads, why = 1, f"other processes used {elsewhere:.1f} cores at the start: one thread"
        else:
            threads, why = previous, "torch's setting" + ("" if elsewhere is None else f" (other processes: {elsewhere:.1f} cores)")
    torch.set_num_threads(threads)
    try:
        yield why
    finally:
        torch.set_num_threads(previous)


class _Recorder:
    """A backend wrapper that keeps each generate call's usage, so failed calls can be costed."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.name, self.model, self.capabilities = backend, backend.name, backend.model, backend.capabilities
        self.calls: list[Any] = []

    def generate(self, messages: list, **params: Any) -> Any:
        """Return the wrapped backend's Completion after recording its usage."""
        completion = self.backend.generate(messages, **params)
        self.calls.append(completion.usage)
        return completion

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


class _PromptCounter:
    """A generate-only backend that counts the real prompt tokens (embedded tokenizer, BOS included) and replies nothing."""

    def __init__(self, backend: Any) -> None:
        from harness.llm.interface import GENERATE

        self.backend, self.name, self.model, self.capabilities = backend, "count", backend.model, frozenset({GENERATE})

    def generate(self, messages: list, **params: Any) -> Any:
        """Return an empty Completion whose usage counts the prompt's tokens."""
        from harness.llm.interface import Completion, Usage

        return Completion("", Usage(prompt_tokens=len(self.backend.prompt_ids(self.backend.render(messages)))))


class _PositionCounter:
    """Counts positions through the blocks (embedding inputs) and rows of the LM head while active."""

    def __init__(self, subject: Any) -> None:
        lm = subject.model
        base = lm.base_model if hasattr(lm, "base_model") else lm.model
        self.positions = self.head_rows = 0
        self._d = lm.get_output_embeddings().in_features
        self._handles = [
            base.get_input_embeddings().register_forward_hook(self._embedded),
            lm.get_output_embeddings().register_forward_hook(self._headed),
        ]

    def _embedded(self, _module: Any, inputs: tuple, _output: Any) -> None:
        self.positions += int(inputs[0].numel())

    def _headed(self, _module: Any, inputs: tuple, _output: Any) -> None:
        self.head_rows += int(inputs[0].numel()) // self._d

    def take(self) -> tuple[int, int]:
        """Return (positions, head rows) counted since the last take, and reset both."""
        counted = (self.positions, self.head_rows)
        self.positions = self.head_rows = 0
        return counted

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()


def _spearman(a: list[float], b: list[float]) -> tuple[float | None, str | None]:
    """Return (Spearman correlation, None) or (None, why there is none)."""
    from scipy import stats

    if len(a) < 3:
        return None, f"{len(a)} pairs"
    if len(set(a)) < 2 or len(set(b)) < 2:
        return None, "a constant side (no ranks to compare)"
    return round(float(stats.spearmanr(a, b).statistic), 4), None


def _paired(first: dict[str, float | None], second: dict[str, float | None]) -> tuple[list[float], list[float]]:
    keys = [k for k in first if first[k] is not None and second.get(k) is not None]
    return [first[k] for k in keys], [second[k] for k in keys]  # type: ignore[misc]


def judge_client(backend: Any, attempts: int = 1, concurrency: int = 1) -> Any:
    from harness.llm.client import LLMClient

    return LLMClient(backend, cache_dir=None, max_concurrency=concurrency, max_parse_attempts=attempts)


def judge_all(material: JudgeMaterial, client: Any, judge_format: str, source: str, **options: Any) -> list[Any]:
    """Return the Judgments of every unit's scoring contexts for one explanation source (the pipeline's judge_unit)."""
    from scorers.rubric import judge_unit

    judgments = []
    for unit in material.units:
        judgments += judge_unit(unit, material.texts[unit.unit][source], source, client, judge_format, **options)
    return judgments


def _rating_tokens(backend: Any, material: JudgeMaterial, batch_size: int, counter: _PositionCounter) -> dict:
    """Return prompt tokens per judgment, parse rates and agreement of ``rating`` (one call per context) vs ``rating_batch``."""
    n = material.n_contexts
    result: dict[str, Any] = {}
    scores: dict[str, dict[str, float | None]] = {}
    for judge_format in ("rating", "rating_batch"):
        recorder = _Recorder(backend)
        client = judge_client(recorder)
        counter.take()
        started = time.perf_counter()
        judgments = judge_all(
            material, client, judge_format, RATING_SOURCE, **({"batch_size": batch_size} if judge_format == "rating_batch" else {})
        )
        seconds = time.perf_counter() - started
        positions, _ = counter.take()
        usage = client.usage_by_stage()["judge"]
        failed_calls = _failed_calls(judgments, recorder.calls, judge_format, material, batch_size)
        reask_tokens = 2 * sum(call.prompt_tokens for call in failed_calls)  # a temperature-0 re-ask repeats the same reply
        scores[judge_format] = {j.context_id: j.score for j in judgments}
        result[judge_format] = {
            "calls": usage["calls"],
            "prompt_tokens_per_judgment": round(usage["prompt_tokens"] / n, 1),
            "completion_tokens_per_judgment": round(usage["completion_tokens"] / n, 1),
            "prompt_tokens_per_judgment_with_reasks": round((usage["prompt_tokens"] + reask_tokens) / n, 1),
            "positions_computed_per_judgment": round(positions / n, 1),
            "parsed": sum(j.score is not None for j in judgments),
            "score_counts": dict(sorted(Counter(str(j.score) for j in judgments).items())),
            "seconds": round(seconds, 1),
        }
        if judge_format == "rating_batch":
            result[judge_format]["batch_size"] = batch_size
            raw = next((j.raw for j in judgments if j.raw), None)
            result[judge_format]["example_unparsed_reply"] = raw[:80] if raw else None
    largest = max(len(u.score) for u in material.units)  # judge_unit batches within a unit
    sizes = sorted({size for size in (4, batch_size, 16) if size < largest} | {largest})
    by_size = {}
    for size in sizes:  # the real prompts counted with the real tokenizer, nothing generated
        counting = judge_client(_PromptCounter(backend))
        judge_all(material, counting, "rating_batch", RATING_SOURCE, batch_size=size)
        by_size[str(size)] = round(counting.usage_by_stage()["judge"]["prompt_tokens"] / n, 1)
    result["rating_batch"]["prompt_tokens_per_judgment_by_batch_size"] = by_size
    agreement, why = _spearman(*_paired(scores["rating"], scores["rating_batch"]))
    result["rating_batch"]["spearman_vs_rating"] = agreement
    result["rating_batch"]["spearman_vs_rating_note"] = why
    result["rating_batch"]["tokens_ratio"] = round(
        result["rating"]["prompt_tokens_per_judgment"] / result["rating_batch"]["prompt_tokens_per_judgment"], 2
    )
    if result["rating_batch"]["parsed"]:
        shuffled = judge_all(_shuffled(material), judge_client(backend), "rating_batch", RATING_SOURCE, batch_size=batch_size)
        retest, why = _spearman(*_paired(scores["rating_batch"], {j.context_id: j.score for j in shuffled}))
        result["rating_batch"]["retest_spearman_order_shuffled"] = retest
        result["rating_batch"]["retest_note"] = why
    else:
        result["rating_batch"]["retest_spearman_order_shuffled"] = None
        result["rating_batch"]["retest_note"] = "not run: no batched reply parsed, so there is nothing to compare"
    result["rating"]["retest_note"] = "deterministic (greedy, temperature 0, one call per context): 1.0 by construction"
    return result


def _failed_calls(judgments: list[Any], calls: list[Any], judge_format: str, material: JudgeMaterial, batch_size: int) -> list[Any]:
    """Return the usages of calls whose reply did not parse (one call per context, or per batch of a unit's contexts, in order)."""
    failed, index, position = [], 0, 0
    for unit in material.units:
        step = batch_size if judge_format == "rating_batch" else 1
        for start in range(0, len(unit.score), step):
            group = judgments[position + start : position + min(start + step, len(unit.score))]
            if any(j.score is None for j in group):
                failed.append(calls[index])
            index += 1
        position += len(unit.score)
    return failed


def _shuffled(material: JudgeMaterial, seed: int = 1) -> JudgeMaterial:
    """Return the material with each unit's scoring contexts in a shuffled order."""
    units = []
    for unit in material.units:
        order = list(unit.score)
        random.Random(f"{seed}|{unit.unit}").shuffle(order)
        units.append(replace(unit, score=tuple(order)))
    return JudgeMaterial(material.origin, units, material.texts)


def _likelihood_positions(backend: Any, material: JudgeMaterial, counter: _PositionCounter) -> dict:
    """Return forward positions and LM-head rows per judgment of the likelihood judge, separate vs shared prompt, and agreement.

    Separate: the pipeline's judge_unit, one call per (context, explanation) plus one cue-alone call
    per (unit, explanation). Shared: per context one prompt pass whose KV cache serves the unit's
    three explanations, and one cue-alone pass for every explanation of the run.
    """
    from harness.llm.interface import Message
    from harness.llm.render import with_marked_target
    from harness.llm.templates import load_template
    from scorers.rubric import explanation_token_count, likelihood_to_rubric

    n = material.n_contexts * len(SOURCES)
    counter.take()
    started = time.perf_counter()
    separate: dict[tuple[str, str], float | None] = {}
    for source in SOURCES:
        for judgment in judge_all(material, judge_client(backend), "likelihood", source):
            separate[(judgment.context_id, source)] = judgment.score
    separate_seconds = time.perf_counter() - started
    separate_positions, separate_rows = counter.take()

    template = load_template("rubric_likelihood")
    client = judge_client(backend)
    started = time.perf_counter()
    every = sorted({f" {t}" for texts in material.texts.values() for t in texts.values()})
    cue = client.choice_logprobs([Message("user", template.render(context=""))], every, stage="judge")
    shared: dict[tuple[str, str], float | None] = {}
    for unit in material.units:
        texts = material.texts[unit.unit]
        choices = sorted({f" {texts[s]}" for s in SOURCES})
        for context in unit.score:
            prompt = template.render(context=with_marked_target(context))
            logprobs = client.choice_logprobs([Message("user", prompt)], choices, stage="judge")
            for source in SOURCES:
                text = f" {texts[source]}"
                ratio = (logprobs[text] - cue[text]) / explanation_token_count(texts[source])
                shared[(context.context_id, source)] = likelihood_to_rubric(ratio)
    shared_seconds = time.perf_counter() - started
    shared_positions, shared_rows = counter.take()
    keys = list(separate)
    agreement, why = _spearman([separate[k] for k in keys], [shared[k] for k in keys])  # type: ignore[misc]
    return {
        "judgments": n,
        "separate_positions_per_judgment": round(separate_positions / n, 1),
        "separate_head_rows_per_judgment": round(separate_rows / n, 1),
        "separate_full_forward_head_rows_per_judgment": round(separate_positions / n, 1),
        "shared_positions_per_judgment": round(shared_positions / n, 1),
        "shared_head_rows_per_judgment": round(shared_rows / n, 1),
        "positions_ratio": round(separate_positions / shared_positions, 2),
        "head_rows_ratio_vs_full_forward": round(separate_positions / shared_rows, 2),
        "spearman_shared_vs_separate": agreement,
        "spearman_note": why,
        "max_abs_score_difference": float(f"{max(abs(separate[k] - shared[k]) for k in keys):.2g}"),  # type: ignore[operator]
        "separate_seconds": round(separate_seconds, 1),
        "shared_seconds": round(shared_seconds, 1),
        "retest_note": "deterministic (no sampling): 1.0 by construction; shared vs separate is the numerical retest",
    }


@benchmark
def judge_tokens(args: argparse.Namespace) -> dict:
    """Tokens per rubric judgment with shared work (batched contexts; one prompt's KV cache for many continuations)
    vs one separate call per judgment, on the same real contexts, and the rank agreement of their scores."""
    from harness.llm.backends.local import make_local_backend
    from harness.subject.model import load_subject_model

    subject = load_subject_model("embedded")
    run = getattr(args, "judge_run", None)
    material = judge_material(subject, getattr(args, "judge_contexts", 48), Path(run) if run else None)
    backend = make_local_backend(model="embedded", subject=subject)
    counter = _PositionCounter(subject)
    with judge_threads(args) as threads_why:
        threads = torch.get_num_threads()
        try:
            rating = _rating_tokens(backend, material, getattr(args, "judge_batch", 8), counter)
            likelihood = _likelihood_positions(backend, material, counter)
        finally:
            counter.close()
    candidates = [
        ("rating_batch prompt tokens", rating["rating_batch"]["tokens_ratio"], rating["rating_batch"]["spearman_vs_rating"]),
        ("likelihood forward positions", likelihood["positions_ratio"], likelihood["spearman_shared_vs_separate"]),
    ]
    meeting = [c for c in candidates if c[2] is not None and c[2] >= AGREEMENT]
    best = max(meeting or candidates, key=lambda c: c[1])
    return {
        "contexts": material.n_contexts,
        "units": len(material.units),
        "material": material.origin,
        "torch_threads": threads,
        "threads_why": threads_why,
        "rating": rating["rating"],
        "rating_batch": rating["rating_batch"],
        "likelihood": likelihood,
        "ratio_method": best[0] + ("" if meeting else f" (no shared method reached agreement {AGREEMENT})"),
        "ratio": best[1],
        "agreement": best[2],
        "target": f">= 5 at agreement >= {AGREEMENT}",
        "target_met": bool(meeting) and best[1] >= 5,
    }
