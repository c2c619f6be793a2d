"""activation_throughput: monoscope's hooked, early-stopping collection against a full forward with all hidden states."""

import argparse
import time

import torch
from common import benchmark, random_dictionary


@benchmark
def activation_throughput(args: argparse.Namespace) -> dict:
    """Tokens/s: monoscope's early-stopping hooked pass vs a full forward with all hidden states."""
    from harness.corpus import chunk_documents, corpus_documents
    from harness.dictionaries import encode
    from harness.model import collect_activations, load_subject_model, with_bos

    subject = load_subject_model("embedded")
    layer = subject.default_layer
    dictionary = random_dictionary(subject.d_model, 8192, f"blocks.{layer}.hook_resid_post")
    chunks = torch.from_numpy(chunk_documents(corpus_documents(), subject.tokenizer, 64, args.throughput_tokens)).long()
    hooks = [f"blocks.{layer}.hook_resid_post"] + [f"blocks.{block}.mlp.hook_post" for block in range(layer + 1)]
    batch = 8

    def monoscope_pass() -> None:
        for start in range(0, chunks.shape[0], batch):
            acts = collect_activations(subject, chunks[start : start + batch], hooks)
            encode(dictionary, acts[hooks[0]])

    @torch.inference_mode()
    def naive_pass() -> None:
        for start in range(0, chunks.shape[0], batch):
            output = subject.model(input_ids=with_bos(subject, chunks[start : start + batch]), output_hidden_states=True)
            encode(dictionary, output.hidden_states[layer + 1][:, 1:].float())

    timings = {}
    for name, run in (("monoscope", monoscope_pass), ("naive", naive_pass)):
        run_started = time.perf_counter()
        run()
        timings[name] = time.perf_counter() - run_started
    tokens = chunks.numel()
    return {
        "tokens": tokens,
        "monoscope_tokens_per_s": round(tokens / timings["monoscope"], 1),
        "naive_tokens_per_s": round(tokens / timings["naive"], 1),
        "monoscope_outputs": f"{dictionary.d_sae} features + MLP neurons of blocks 0..{layer}",
        "naive_outputs": f"{dictionary.d_sae} features (plus logits and all hidden states)",
        "ratio": round(timings["naive"] / timings["monoscope"], 2),
        "target": ">= 5",
    }
