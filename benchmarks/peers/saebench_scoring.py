"""Run in the sae-bench environment: SAEBench's own autointerp scoring of given windows, against the loopback judge.

    OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 OPENAI_API_KEY=x python saebench_scoring.py IN.json   # prints JSON

IN.json: {"vocab": {token id: string}, "latents": [{"latent", "explanation", "act_threshold",
"windows": [{"toks": [...], "acts": [...] or null}]}]}, the windows in the order monoscope showed them.

SAEBench's code does the work (sae_bench/evals/autointerp/main.py): ``Example`` (its token strings, activity
threshold and ``to_str``), ``Examples``, ``AutoInterp.get_scoring_prompts``, ``get_api_response`` (the openai
SDK, which reads OPENAI_BASE_URL), ``parse_predictions`` and ``score_predictions``. Stubbed, because this path
never uses them: the modules main.py imports for loading models, SAEs and datasets (sae_lens, transformer_lens
and the sae_bench_utils modules that import them); ``model.to_str_tokens`` is a lookup of the same tokenizer's
per-token strings (what TransformerLens' ``to_str_tokens`` returns: each token decoded on its own). A random
window gets zero activations, as SAEBench's ``create_examples(rand_toks)`` gives it.
"""

import json
import sys
from pathlib import Path

from stubs import stub_modules

stub_modules(
    "sae_lens",
    "sae_lens.loading",
    "sae_lens.loading.pretrained_saes_directory",
    "sae_lens.saes",
    "sae_lens.saes.sae",
    "transformer_lens",
    "sae_bench.sae_bench_utils.activation_collection",
    "sae_bench.sae_bench_utils.dataset_utils",
    "sae_bench.sae_bench_utils.general_utils",
    "sae_bench.sae_bench_utils.indexing_utils",
    "sae_bench.sae_bench_utils.sae_selection_utils",
)

import sae_bench.sae_bench_utils  # noqa: E402,F401  (the real package: its __init__ imports nothing stubbed)
import torch  # noqa: E402
from sae_bench.evals.autointerp.eval_config import AutoInterpEvalConfig  # noqa: E402
from sae_bench.evals.autointerp.main import AutoInterp, Example, Examples  # noqa: E402

request = json.loads(Path(sys.argv[1]).read_text())
vocab = {int(key): value for key, value in request["vocab"].items()}


class TokenStrings:
    """What ``Example`` asks of its model: the per-token strings of a tensor of token ids."""

    def to_str_tokens(self, tokens: torch.Tensor) -> list[str]:
        return [vocab[int(token)] for token in tokens.tolist()]


model = TokenStrings()
results = []
for latent in request["latents"]:
    config = AutoInterpEvalConfig(model_name="monoscope-peers", n_latents=None, override_latents=[latent["latent"]], llm_batch_size=1)
    scorer = AutoInterp.__new__(AutoInterp)  # its __init__ loads data this path does not use
    scorer.cfg, scorer.api_key = config, "from-the-environment"
    examples = [
        Example(
            toks=w["toks"],
            acts=w["acts"] if w["acts"] is not None else [0.0] * len(w["toks"]),
            act_threshold=latent["act_threshold"],
            model=model,
        )
        for w in latent["windows"]
    ]
    shown = Examples(examples, shuffle=False)
    shown.examples = examples  # the order monoscope showed (Examples sorts unless shuffling; SAEBench shuffles)
    prompts = scorer.get_scoring_prompts(explanation=latent["explanation"], scoring_examples=shown)
    (reply,), _logs = scorer.get_api_response(prompts, config.max_tokens_in_prediction)
    predictions = scorer.parse_predictions(reply)
    results.append(
        {
            "latent": latent["latent"],
            "predictions": predictions,
            "correct seqs": [i for i, example in enumerate(shown, start=1) if example.is_active],
            "score": None if predictions is None else scorer.score_predictions(predictions, shown),
        }
    )
print(json.dumps({"latents": results}))
