"""steering_overhead: seconds per generated token with a feature clamped against plain ``model.generate``.

Both sides are Hugging Face ``generate`` with its KV cache on the embedded Gemma 3 270M, greedy,
the same prompt and exactly the same number of new tokens (``min_new_tokens`` = ``max_new_tokens``);
the steered side runs inside ``harness.steering.clamp.clamped`` with one feature of a random
8,192-feature ReLU dictionary at the middle block (the demo's largest dictionary's shape: the
hook encodes and twice decodes every position) clamped at every position. Sides alternate,
best of 3; the ratio is steered / plain seconds per token (target ≤ 1.3).
"""

import argparse
import time

import torch
from common import benchmark, random_dictionary


@benchmark
def steering_overhead(args: argparse.Namespace) -> dict:
    from harness.steering.clamp import Clamp, clamped
    from harness.steering.generate import prompt_ids
    from harness.subject.model import load_subject_model

    subject = load_subject_model("embedded")
    layer = subject.default_layer
    dictionary = random_dictionary(subject.d_model, 8192, f"blocks.{layer}.hook_resid_post")
    clamp = Clamp(dictionary, (123,), (25.0,))
    ids = prompt_ids(subject, "def parse_arguments(argv):\n    parser = argparse.ArgumentParser(")
    new_tokens = getattr(args, "steering_tokens", None) or 32
    options = dict(
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        top_k=None,
        top_p=None,
        temperature=None,
        pad_token_id=subject.tokenizer.eos_token_id,
    )

    def plain() -> torch.Tensor:
        return subject.model.generate(ids, **options)

    def steered() -> torch.Tensor:
        with clamped(subject, [clamp], first_clamped=1):
            return subject.model.generate(ids, **options)

    times: dict[str, list[float]] = {"plain": [], "steered": []}
    with torch.inference_mode():
        plain(), steered()  # warm-up
        for _ in range(3):
            for name, side in (("plain", plain), ("steered", steered)):
                started = time.perf_counter()
                out = side()
                times[name].append(time.perf_counter() - started)
                assert out.shape[1] == ids.shape[1] + new_tokens
    per_token = {name: min(values) / new_tokens for name, values in times.items()}
    ratio = per_token["steered"] / per_token["plain"]
    return {
        "target": "<= 1.3",
        "ratio": round(ratio, 3),
        "plain_s_per_token": round(per_token["plain"], 4),
        "steered_s_per_token": round(per_token["steered"], 4),
        "new_tokens": new_tokens,
        "prompt_tokens": int(ids.shape[1]),
        "dictionary": "random ReLU, 8,192 features, blocks.9.hook_resid_post",
        "threads": torch.get_num_threads(),
    }
