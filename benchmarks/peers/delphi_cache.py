"""Run in the eai-delphi environment: delphi's LatentCache over given tokens, its speed and peak memory.

    python delphi_cache.py IN.json   # prints JSON; run once per token count (peak memory is the process's)

IN.json: {"model": HF checkpoint folder, "dictionary": SAELens folder (cfg.json, sae_weights.safetensors),
"tokens": .npy [n_sequences, context] of token ids, "n_tokens", "batch_size", "hookpoint": e.g. "model.layers.9"}.

delphi's code does the work (eai-delphi 0.1.3, ``delphi.latents.LatentCache``: a forward pass of the whole HF model
with a hook on ``hookpoint``, the encoder applied to what the hook sees, every non-zero latent activation kept in
memory by ``InMemoryCache``). The encoder is monoscope's for this dictionary, written out here because monoscope is
not installed in delphi's environment: f = ReLU(x W_enc + b_enc) (the dictionaries monoscope trains subtract no
b_dec first: ``apply_b_dec_to_input`` is false in their cfg.json, which this script checks). Peak memory is the
process's maximum resident set size. Stubbed, because this path never uses them: delphi's imports of faiss,
sentence_transformers, vllm and sparsify (``stubs.DELPHI_UNUSED``).
"""

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from stubs import DELPHI_UNUSED, stub_modules

stub_modules(*DELPHI_UNUSED)

from delphi.latents import LatentCache  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

request = json.loads(Path(sys.argv[1]).read_text())
config = json.loads((Path(request["dictionary"]) / "cfg.json").read_text())
if config.get("apply_b_dec_to_input") or config.get("normalize_activations", "none") != "none":
    raise SystemExit("delphi_cache.py writes out monoscope's plain ReLU encoder only")
weights = load_file(str(Path(request["dictionary"]) / "sae_weights.safetensors"))
W_enc, b_enc = weights["W_enc"].float(), weights["b_enc"].float()  # noqa: N816 (SAELens' names)


def encode(x: torch.Tensor) -> torch.Tensor:
    """monoscope's ReLU encoder on the hook's output [batch, context, d_in] → [batch, context, d_sae]."""
    return torch.relu(x.float() @ W_enc + b_enc)


torch.set_num_threads(max(1, torch.get_num_threads()))
model = AutoModelForCausalLM.from_pretrained(request["model"], torch_dtype=torch.float32)
model.eval()
tokens = torch.from_numpy(np.load(request["tokens"]).astype(np.int64))
cache = LatentCache(model, {request["hookpoint"]: encode}, batch_size=request["batch_size"])
started = time.perf_counter()
cache.run(request["n_tokens"], tokens)
seconds = time.perf_counter() - started
stored = sum(locations.shape[0] for locations in cache.cache.latent_locations.values())
print(
    json.dumps(
        {
            "n_tokens": request["n_tokens"],
            "seconds": seconds,
            "tokens_per_s": request["n_tokens"] / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "nonzeros_kept": int(stored),
        }
    )
)
