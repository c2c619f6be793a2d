"""Run in the eai-delphi environment: delphi's detection and fuzzing classifiers on given texts, against the loopback judge.

    python delphi_scoring.py BASE_URL IN.json   # prints JSON

IN.json: {"latents": [{"unit", "scorer" ("detection" or "fuzzing"), "explanation",
"samples": [{"text", "activating"}]}]}: the texts monoscope showed its judge (line breaks as line breaks and marks as
delphi's << >>, so both tools show the judge the same text), in monoscope's order.

delphi's code does the work (eai-delphi 0.1.3): ``DetectionScorer`` / ``FuzzingScorer`` with one example per prompt
(``n_examples_shown`` 1, delphi's default) build the prompt, call the judge through delphi's own ``OpenRouter``
client (base URL pointed at the loopback judge) and parse its list (``Classifier._query``); balanced accuracy and F1
come from ``delphi.log.result_analysis.compute_confusion`` and ``compute_classification_metrics``. The texts skip
delphi's ``_prepare`` (its random marks would differ from monoscope's seeded ones; the marking rule itself is the
same, 0.3 × the window's largest activation). Stubbed, because this path never uses them: vllm (the offline client),
sentence_transformers and faiss (embedding scorers) and sparsify (its SAE loader).
"""

import asyncio
import json
import sys
from pathlib import Path

from stubs import DELPHI_UNUSED, stub_modules

stub_modules(*DELPHI_UNUSED)

import pandas as pd  # noqa: E402
from delphi.clients import OpenRouter  # noqa: E402
from delphi.log.result_analysis import compute_classification_metrics, compute_confusion  # noqa: E402
from delphi.scorers import DetectionScorer, FuzzingScorer  # noqa: E402
from delphi.scorers.classifier.sample import ClassifierOutput, Sample  # noqa: E402

base_url, request = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
client = OpenRouter("hash-judge", api_key="unused", base_url=f"{base_url}/chat/completions", temperature=0.0)
results = []
for latent in request["latents"]:
    scorer_type = DetectionScorer if latent["scorer"] == "detection" else FuzzingScorer
    scorer = scorer_type(client, n_examples_shown=1)
    samples = [
        Sample(text=s["text"], data=ClassifierOutput(str_tokens=[], activations=[], distance=0, activating=s["activating"]))
        for s in latent["samples"]
    ]
    outputs = asyncio.run(scorer._query(latent["explanation"], [[sample] for sample in samples]))
    frame = pd.DataFrame([{"prediction": o.prediction, "activating": o.activating} for o in outputs])
    metrics = compute_classification_metrics(compute_confusion(frame))
    results.append(
        {
            "unit": latent["unit"],
            "scorer": latent["scorer"],
            "predictions": [o.prediction for o in outputs],
            "balanced_accuracy": float(metrics["accuracy"]),
            "f1": float(metrics["f1_score"]),
        }
    )
print(json.dumps({"latents": results}))
