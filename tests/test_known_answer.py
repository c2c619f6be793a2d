"""Known-answer test: synthetic units with a known rule, explained and scored by a judge that knows
the rules, through the real prompts, parsers, sampling and record files. Checks the harness's own
arithmetic end to end: real explanations score top marks, the shuffled control stays near zero."""

import re
from pathlib import Path

import numpy as np
import torch

from harness.config import EvaluationConfig
from harness.index.sampling import SamplingConfig
from harness.index.state import IndexConfig, new_index, update_index
from harness.index.store import save_index
from harness.llm.client import LLMClient, register_backend
from harness.llm.interface import GENERATE, Completion, Message, Usage
from harness.records import Judgment, Simulation
from harness.run.evaluate import JUDGMENTS, SIMULATIONS, explain_stage, load_unit_contexts, score_stage
from harness.subject.corpus import save_chunks
from results.store import read_records
from scorers.simulation import correlation_scores

WORDS = [f"word{i}" for i in range(12)]
RULE_WORDS = WORDS[:4]  # unit u fires with activation 5 exactly on RULE_WORDS[u]


class OracleBackend:
    """Answers explainer, rubric and simulator prompts by reading them, knowing only the token rules."""

    name = "oracle"
    model = "rules"
    capabilities = frozenset({GENERATE})

    def generate(self, messages: list[Message], **params: object) -> Completion:
        prompt = messages[-1].content
        if "the marked tokens are" in prompt or "What does this feature detect" in prompt:
            marked = [token.strip() for token in re.findall(r"⟦(.*?)⟧\{\d+\}", prompt)]  # " word3": decoded in context
            word = max(set(marked), key=marked.count)
            return Completion(f"the word {word}", Usage(len(prompt.split()), 3))
        match = re.search(r'explanation: "the word (\w+)"', prompt)
        explained = match.group(1) if match else None  # e.g. a token-statistics explanation
        if "JSON list" in prompt:
            tokens = re.findall(r"^\d+: '(.*)'$", prompt, flags=re.MULTILINE)
            return Completion(str([10 if token.strip() == explained else 0 for token in tokens]), Usage(len(prompt.split()), len(tokens)))
        marked = re.search(r"⟦(.*?)⟧", prompt.split("one token marked as ⟦token⟧:")[1]).group(1).strip()
        return Completion("3" if marked == explained else "0", Usage(len(prompt.split()), 1))


register_backend("oracle")(lambda model="rules", **_options: OracleBackend())


class WordTokenizer:
    def decode(self, ids: list[int]) -> str:
        return " ".join(WORDS[i] for i in ids)


def build_synthetic_run(run_dir: Path) -> None:
    rng = np.random.default_rng(0)
    chunks = rng.integers(0, len(WORDS), size=(300, 16)).astype(np.int32)
    save_chunks(run_dir / "corpus", chunks, {"corpus": "synthetic"})
    acts = torch.zeros(300, 16, len(RULE_WORDS))
    for unit in range(len(RULE_WORDS)):
        acts[:, :, unit] = torch.from_numpy((chunks == unit).astype(np.float32) * 5.0)
    state = new_index(len(RULE_WORDS), IndexConfig(window_before=5, window_after=2), 16)
    update_index(state, acts, torch.arange(300))
    save_index(state, run_dir / "index" / "syn.safetensors", {"dictionary": "syn"})


def test_known_rules_score_perfectly_and_shuffled_control_does_not(tmp_path: Path):
    build_synthetic_run(tmp_path)
    config = EvaluationConfig(
        units_per_dictionary=4,
        sampling=SamplingConfig(score_zero=4),
        explainer_chat=True,
        judge_format="rating",
        simulator_format="structured",
    )
    client = LLMClient(OracleBackend(), cache_dir=tmp_path / "cache")
    units = load_unit_contexts(tmp_path, config, WordTokenizer())
    explanations = explain_stage(tmp_path, units, client, config)
    assert {e.text for e in explanations.values()} == {f"the word {w}" for w in RULE_WORDS}
    score_stage(tmp_path, units, client, client, config)

    judgments = read_records(tmp_path / JUDGMENTS, Judgment)
    simulations = read_records(tmp_path / SIMULATIONS, Simulation)
    assert all(j.failure is None for j in judgments) and all(s.failure is None for s in simulations)
    for unit in explanations:
        real_firing = [j.score for j in judgments if j.unit == unit and j.source == "real" and j.activation > 0]
        real_zero = [j.score for j in judgments if j.unit == unit and j.source == "real" and j.activation <= 0]
        shuffled = [j.score for j in judgments if j.unit == unit and j.source == "shuffled" and j.activation > 0]
        assert real_firing and all(score == 3 for score in real_firing)
        assert real_zero and all(score == 0 for score in real_zero)
        assert shuffled and np.mean(shuffled) == 0
        real = correlation_scores([s for s in simulations if s.unit == unit and s.source == "real"])
        control = correlation_scores([s for s in simulations if s.unit == unit and s.source == "shuffled"])
        assert real["pearson"] >= 0.95 and real["spearman"] >= 0.95
        assert control["pearson"] is None or abs(control["pearson"]) < 0.3

    assert client.backend_calls > 0
    rerun = LLMClient(OracleBackend(), cache_dir=tmp_path / "cache")  # as a second process would
    explain_stage(tmp_path, units, rerun, config)
    score_stage(tmp_path, units, rerun, rerun, config)
    assert rerun.backend_calls == 0, "running the same explain/score again makes no backend call"

    # With the records gone but the response cache kept, the rerun is still free.
    (tmp_path / JUDGMENTS).unlink()
    score_stage(tmp_path, units, rerun, rerun, config)
    assert rerun.backend_calls == 0
    assert len(read_records(tmp_path / JUDGMENTS, Judgment)) == len(judgments)
