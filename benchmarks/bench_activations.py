"""activation_throughput: monoscope's hooked, early-stopping collection against a full forward with all hidden states."""

import argparse
import time

import torch
from common import benchmark, random_dictionary


@benchmark
def activation_throughput(args: argparse.Namespace) -> dict:
    """Tokens/s: monoscope's early-stopping hooked pass vs a full forward with all hidden states."""
    from harness.dictionaries.dictionary import encode
    from harness.subject.corpus import chunk_documents, corpus_documents
    from harness.subject.model import collect_activations, load_subject_model, with_bos

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
    ceiling = flop_ceiling(subject, layer, dictionary.d_sae)
    return {
        "tokens": tokens,
        "monoscope_tokens_per_s": round(tokens / timings["monoscope"], 1),
        "naive_tokens_per_s": round(tokens / timings["naive"], 1),
        "monoscope_outputs": f"{dictionary.d_sae} features + MLP neurons of blocks 0..{layer}",
        "naive_outputs": f"{dictionary.d_sae} features (plus logits and all hidden states)",
        "ratio": round(timings["naive"] / timings["monoscope"], 2),
        "target": ">= 5",
        "matmul_flops_per_token": ceiling,
        "note": (
            f"Both sides are dense float32 matmuls on the same tokens, so the ratio cannot pass the ratio of their matmul work: "
            f"{ceiling['naive']:,} vs {ceiling['monoscope']:,} multiply-adds per token = {ceiling['ceiling_ratio']}x "
            f"(monoscope stops after block {layer} of {subject.n_layers} and never computes the "
            f"{ceiling['lm_head']:,}-multiply-add LM head). A ratio of 5 on this model would need less arithmetic than the "
            "blocks themselves require; the measured ratio is compared with that ceiling."
        ),
    }


def flop_ceiling(subject, layer: int, d_sae: int) -> dict:
    """Return multiply-adds per token of both sides, counted from the model's own weight shapes, and their ratio."""
    from harness.subject.model import transformer_blocks

    blocks = transformer_blocks(subject.model)
    per_block = [sum(m.weight.numel() for m in block.modules() if isinstance(m, torch.nn.Linear)) for block in blocks]
    lm_head = subject.model.get_output_embeddings().weight.numel()
    encode = subject.d_model * d_sae
    monoscope = sum(per_block[: layer + 1]) + encode
    naive = sum(per_block) + lm_head + encode
    return {"monoscope": monoscope, "naive": naive, "lm_head": lm_head, "ceiling_ratio": round(naive / monoscope, 2)}
