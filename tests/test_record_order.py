"""Record files have one layout whatever order concurrent workers finish in (reruns compare byte for byte)."""

import time
from pathlib import Path

from harness.config import EvaluationConfig
from harness.index.sampling import SamplingConfig
from harness.llm.client import LLMClient
from harness.llm.interface import Completion, Message
from harness.run.evaluate import EXPLANATIONS, explain_stage, load_unit_contexts
from tests.test_known_answer import OracleBackend, WordTokenizer, build_synthetic_run


class SlowFirstBackend(OracleBackend):
    """The oracle, answering later the earlier a unit's word comes in the alphabet (so workers finish out of order)."""

    def generate(self, messages: list[Message], **params: object) -> Completion:
        completion = super().generate(messages, **params)
        time.sleep(0.3 - 0.01 * (ord(completion.text[-1]) - ord("a")) if completion.text.startswith("the word") else 0)
        return completion


def test_explanations_file_is_the_same_at_any_concurrency(tmp_path: Path):
    config = EvaluationConfig(units_per_dictionary=4, sampling=SamplingConfig(score_zero=4), explainer_chat=True)
    texts = []
    for concurrency in (1, 4):
        run = tmp_path / f"run-{concurrency}"
        build_synthetic_run(run)
        units = load_unit_contexts(run, config, WordTokenizer())
        explain_stage(run, units, LLMClient(SlowFirstBackend(), cache_dir=None, max_concurrency=concurrency), config)
        texts.append((run / EXPLANATIONS).read_text())
    assert texts[0] == texts[1]
    assert texts[0].count("\n") == 8  # a token-statistics and an LLM explanation per unit
