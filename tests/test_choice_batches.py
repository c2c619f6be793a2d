"""``LLMClient.choice_logprobs_many``: requests asked together are cached, counted and failed one by one."""

from pathlib import Path

from harness.llm.client import BackendError, LLMClient, PermanentBackendError
from harness.llm.interface import CHOICE_LOGPROBS, Message


class ScoringBackend:
    """Log-probabilities from the prompt's length; ``fail`` names prompts answered with a permanent error."""

    name = "scoring-test"
    model = "scoring-model"
    capabilities = frozenset({CHOICE_LOGPROBS})

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.fail = fail
        self.asked: list[list[str]] = []  # the prompts of each backend call

    def answer(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        text = messages[-1].content
        if text in self.fail:
            raise PermanentBackendError(f"{self.name}: HTTP 400: refused")
        return {choice: -float(len(text) + index) for index, choice in enumerate(choices)}

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        self.asked.append([messages[-1].content])
        return self.answer(messages, choices)


class BatchingBackend(ScoringBackend):
    """The same answers, with ``choice_logprobs_batch``: one backend call for many prompts."""

    def choice_logprobs_batch(self, requests: list[list[Message]], choices: list[str]) -> list[dict[str, float]]:
        self.asked.append([messages[-1].content for messages in requests])
        return [self.answer(messages, choices) for messages in requests]


def requests(*texts: str) -> list[list[Message]]:
    return [[Message("user", text)] for text in texts]


def test_a_batch_is_one_backend_call_counted_as_its_requests_and_cached(tmp_path: Path) -> None:
    backend = BatchingBackend()
    client = LLMClient(backend, tmp_path / "cache", retry_initial_wait=0.0)
    answers = client.choice_logprobs_many(requests("a", "bb", "a", "ccc"), [" 0", " 1"], stage="judge")
    assert answers == [{" 0": -1.0, " 1": -2.0}, {" 0": -2.0, " 1": -3.0}, {" 0": -1.0, " 1": -2.0}, {" 0": -3.0, " 1": -4.0}]
    assert backend.asked == [["a", "bb", "ccc"]]  # one call; the repeated prompt asked once
    assert client.usage_by_stage()["judge"]["calls"] == 3 and client.usage_by_stage()["judge"]["cached_calls"] == 1
    again = LLMClient(backend, tmp_path / "cache")
    assert again.choice_logprobs_many(requests("a", "bb", "dd"), [" 0", " 1"], stage="judge")[:2] == answers[:2]
    assert backend.asked[1:] == [["dd"]]  # only the new prompt, and alone it goes one by one
    assert again.usage_by_stage()["judge"]["cached_calls"] == 2 and again.usage_by_stage()["judge"]["calls"] == 1
    # the single-request path reads the same cache entries
    assert again.choice_logprobs([Message("user", "ccc")], [" 0", " 1"], stage="judge") == answers[3]


def test_a_failed_batch_fails_each_of_its_requests_and_caches_nothing(tmp_path: Path) -> None:
    backend = BatchingBackend(fail=("bb",))
    client = LLMClient(backend, tmp_path / "cache", retry_initial_wait=0.0)
    answers = client.choice_logprobs_many(requests("a", "bb"), [" 0"], stage="simulate")
    assert all(isinstance(answer, BackendError) and "HTTP 400" in str(answer) for answer in answers)
    backend.fail = ()
    assert client.choice_logprobs_many(requests("a", "bb"), [" 0"], stage="simulate") == [{" 0": -1.0}, {" 0": -2.0}]


def test_without_a_batch_method_requests_go_one_by_one_and_fail_alone(tmp_path: Path) -> None:
    backend = ScoringBackend(fail=("bb",))
    client = LLMClient(backend, tmp_path / "cache", retry_initial_wait=0.0, max_concurrency=2)
    answers = client.choice_logprobs_many(requests("a", "bb", "ccc"), [" 0"], stage="judge")
    assert answers[0] == {" 0": -1.0} and answers[2] == {" 0": -3.0}
    assert isinstance(answers[1], BackendError) and "HTTP 400" in str(answers[1])
    assert sorted(prompt for call in backend.asked for prompt in call) == ["a", "bb", "ccc"]


def test_without_a_cache_repeated_requests_are_each_asked(tmp_path: Path) -> None:
    # a dry run's plan uses a client without a cache: its count of requests must not shrink by sharing
    backend = BatchingBackend()
    client = LLMClient(backend, None, retry_initial_wait=0.0)
    client.choice_logprobs_many(requests("a", "a", "b"), [" 0"], stage="judge")
    assert backend.asked == [["a", "a", "b"]] and client.usage_by_stage()["judge"]["calls"] == 3
