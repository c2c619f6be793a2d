"""local_judge_speed: judgments/s of the local backend's default rubric format against plain transformers calls.

The material, threads and options are those of bench_judge.py (see its docstring).
"""

import argparse
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_judge import RATING_SOURCE, JudgeMaterial, judge_all, judge_client, judge_material, judge_threads
from common import benchmark


def _rating_prompts(material: JudgeMaterial) -> list[tuple[Any, str]]:
    """Return (unit, rating prompt) for every scoring context, rendered as the rubric judge renders them."""
    from harness.llm.render import with_marked_target
    from harness.llm.templates import load_rubric, load_template

    template, rubric = load_template("rubric_rating"), load_rubric()
    text = material.texts
    return [
        (unit, template.render(explanation=text[unit.unit][RATING_SOURCE], context=with_marked_target(c), rubric=rubric.describe()))
        for unit in material.units
        for c in unit.score
    ]


def _naive_judge(subject: Any, backend: Any, mode: str, max_tokens: int | None = None) -> Callable[[str], float | None]:
    """Return a function judging one rating prompt with plain transformers calls, as a user would write them.

    Modes: "full_forward" (one forward with the LM head over all prompt positions, then greedy steps
    with the KV cache), "uncached" (a full forward over the growing text for every new token) and
    "hf_generate" (``model.generate``, greedy). ``max_tokens`` defaults to the rubric's (``RATING_MAX_TOKENS``).
    """
    from scorers.parsing import parse_rating
    from scorers.rubric import RATING_MAX_TOKENS

    max_tokens = max_tokens or RATING_MAX_TOKENS

    model, eos = subject.model, backend._eos

    @torch.inference_mode()
    def judge(prompt: str) -> float | None:
        ids = torch.tensor([backend.prompt_ids(prompt)])
        if mode == "hf_generate":
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_tokens)
            generated = out[0, ids.shape[1] :].tolist()
        else:
            generated, cache, inputs = [], None, ids
            for _ in range(max_tokens):
                if mode == "uncached":
                    logits = model(input_ids=torch.cat([ids, torch.tensor([generated], dtype=torch.long)], dim=1), use_cache=False).logits
                else:
                    out = model(input_ids=inputs, past_key_values=cache, use_cache=True)
                    logits, cache = out.logits, out.past_key_values
                token = int(torch.argmax(logits[0, -1]))
                generated.append(token)
                if token in eos:
                    break
                inputs = torch.tensor([[token]])
        try:
            return float(parse_rating(subject.tokenizer.decode(generated, skip_special_tokens=True)))
        except ValueError:
            return None

    return judge


def _naive_batched_judge(
    subject: Any, backend: Any, batch_size: int, max_tokens: int | None = None
) -> Callable[[list[str]], list[float | None]]:
    """Return a function judging rating prompts ``batch_size`` at a time with ``model.generate`` on a left-padded batch."""
    from scorers.parsing import parse_rating
    from scorers.rubric import RATING_MAX_TOKENS

    max_tokens = max_tokens or RATING_MAX_TOKENS

    model, eos = subject.model, backend._eos
    pad = subject.tokenizer.pad_token_id if subject.tokenizer.pad_token_id is not None else 0

    @torch.inference_mode()
    def judge(prompts: list[str]) -> list[float | None]:
        scores: list[float | None] = []
        for start in range(0, len(prompts), batch_size):
            ids = [backend.prompt_ids(prompt) for prompt in prompts[start : start + batch_size]]
            width = max(len(row) for row in ids)
            inputs = torch.tensor([[pad] * (width - len(row)) + row for row in ids])
            mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in ids])
            out = model.generate(inputs, attention_mask=mask, do_sample=False, max_new_tokens=max_tokens, pad_token_id=pad)
            for row in out[:, width:].tolist():
                reply = row[: next((i + 1 for i, token in enumerate(row) if token in eos), len(row))]
                try:
                    scores.append(float(parse_rating(subject.tokenizer.decode(reply, skip_special_tokens=True))))
                except ValueError:
                    scores.append(None)
        return scores

    return judge


@benchmark
def local_judge_speed(args: argparse.Namespace) -> dict:
    """Judgments/s of the local backend in the default rubric format (rating, through judge_unit) vs plain
    transformers: a full forward with the LM head over all positions per judgment, model.generate, no cache."""
    from harness.config import EvaluationConfig, RunConfig
    from harness.llm.backends.local import make_local_backend
    from harness.llm.interface import Message
    from harness.subject.model import load_subject_model
    from scorers.rubric import RATING_MAX_TOKENS

    judge_format = EvaluationConfig().judge_format
    subject = load_subject_model("embedded")
    run = getattr(args, "judge_run", None)
    material = judge_material(subject, getattr(args, "judge_speed_judgments", 24), Path(run) if run else None)
    concurrency = RunConfig().max_concurrency  # what a run's judge client asks at once
    reusing = make_local_backend(model="embedded", subject=subject)
    plain = make_local_backend(model="embedded", subject=subject, reuse=False)
    prompts = _rating_prompts(material)

    def local(backend: Any, unit: Any, concurrency: int) -> list[float | None]:
        client = judge_client(backend, 1, concurrency)  # one ask per judgment, as on the plain transformers paths
        return [j.score for j in judge_all(_one(material, unit), client, judge_format, RATING_SOURCE)]

    methods: dict[str, Callable[[Any], list[float | None]]] = {
        "local": lambda unit: local(reusing, unit, concurrency),
        "local_no_reuse": lambda unit: local(plain, unit, 1),
    }
    for mode in ("full_forward", "hf_generate", "uncached"):
        naive = _naive_judge(subject, plain, mode)
        methods[mode] = lambda unit, naive=naive: [naive(p) for u, p in prompts if u is unit]
    batched = _naive_batched_judge(subject, plain, concurrency)
    methods["hf_generate_batched"] = lambda unit: batched([p for u, p in prompts if u is unit])
    seconds = dict.fromkeys(methods, 0.0)
    answers: dict[str, list[float | None]] = {name: [] for name in methods}
    with judge_threads(args) as threads_why:
        threads = torch.get_num_threads()
        warm = prompts[0][1]  # one untimed judgment per path first (one-time start-up costs)
        reusing.generate([Message("user", warm)], max_tokens=RATING_MAX_TOKENS)
        plain.generate([Message("user", warm)], max_tokens=RATING_MAX_TOKENS)
        for mode in ("full_forward", "hf_generate", "uncached"):
            _naive_judge(subject, plain, mode)(warm)
        batched([warm] * concurrency)
        warm_batches = reusing.generation_batches
        for index, unit in enumerate(material.units):  # interleaved by unit in a rotating order, so load elsewhere hits all paths
            names = list(methods)
            for name in names[index % len(names) :] + names[: index % len(names)]:
                started = time.perf_counter()
                answers[name] += methods[name](unit)
                seconds[name] += time.perf_counter() - started
    n = len(prompts)
    rate = {name: n / seconds[name] for name in methods}
    agree = all(answers[name] == answers["local"] for name in methods if name != "hf_generate_batched")
    batches = Counter(reusing.generation_batches) - Counter(warm_batches)
    return {
        "judge_format": judge_format,
        "judgments": n,
        "material": material.origin,
        "torch_threads": threads,
        "threads_why": threads_why,
        "local_judgments_per_s": round(rate["local"], 2),
        "local_no_reuse_judgments_per_s": round(rate["local_no_reuse"], 2),
        "full_forward_judgments_per_s": round(rate["full_forward"], 2),
        "hf_generate_judgments_per_s": round(rate["hf_generate"], 2),
        "uncached_judgments_per_s": round(rate["uncached"], 2),
        "hf_generate_batched_judgments_per_s": round(rate["hf_generate_batched"], 2),
        "local_path": f"judge_unit -> LLMClient.generate ({concurrency} at a time, a run's default) -> LocalBackend: requests asked "
        "together run as one padded batch, shared-prefix KV cache, previous reply as a verified draft, LM head only at the "
        "positions that predict the reply",
        "local_batches": {str(size): count for size, count in sorted(batches.items())},
        "answers_agree": agree,
        "hf_generate_batched_agreement": round(
            sum(a == b for a, b in zip(answers["hf_generate_batched"], answers["local"], strict=True)) / n, 3
        ),
        "score_counts": dict(sorted(Counter(str(s) for s in answers["local"]).items())),
        "ratio_vs_hf_generate": round(rate["local"] / rate["hf_generate"], 2),
        "ratio_vs_uncached": round(rate["local"] / rate["uncached"], 2),
        "ratio_vs_local_no_reuse": round(rate["local"] / rate["local_no_reuse"], 2),
        "ratio_vs_hf_generate_batched": round(rate["local"] / rate["hf_generate_batched"], 2),
        "ratio": round(rate["local"] / rate["full_forward"], 2),
        "target": ">= 3 (vs a full forward with the LM head over all positions per judgment)",
    }


def _one(material: JudgeMaterial, unit: Any) -> JudgeMaterial:
    """Return the material cut to one unit."""
    return JudgeMaterial(material.origin, [unit], {unit.unit: material.texts[unit.unit]})
