"""LLM client layer over real HTTP: the official openai and anthropic SDKs talk to a scripted loopback
server that speaks each API's wire format (no network beyond 127.0.0.1)."""

import json
import math
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from harness.errors import MonoscopeError
from harness.llm import client as llm
from harness.llm.client import LLMClient, PermanentBackendError, TransientBackendError, UnparseableReply, backend_names, make_backend
from harness.llm.interface import CHOICE_LOGPROBS, Completion, Message
from tests.loopback import reply_body, start_server

SECRET = "sk-test-SECRET-123"
APIS = ["openai", "anthropic"]
KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


@dataclass
class Plan:
    """One scripted response: a status, a body (dict → JSON, str → as is, None → a normal reply), a delay."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    text: str | None = None  # reply text of a normal reply (default: echo the last message)


class ScriptedServer:
    """A loopback server answering each request with the next planned response (then normal replies)."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.plans: deque[Plan] = deque()
        self.default = Plan()
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.top_logprobs: list[tuple[str, float]] | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
                    plan = server.plans.popleft() if server.plans else server.default
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(plan.delay)
                    self.respond(plan, body)
                except OSError:
                    pass  # the client gave up (timeout)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def respond(self, plan: Plan, request: dict[str, Any]) -> None:
                if plan.body is None:
                    text = plan.text if plan.text is not None else f"echo: {request['messages'][-1]['content']}"
                    payload = json.dumps(reply_body(server.api, text, server.top_logprobs)).encode()
                elif isinstance(plan.body, str):
                    payload = plan.body.replace("{key}", self.headers.get("authorization", "") + self.headers.get("x-api-key", "")).encode()
                else:
                    payload = json.dumps(plan.body).encode()
                self.send_response(plan.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in plan.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd, self.thread = start_server(Handler)

    @property
    def base_url(self) -> str:
        port = self.httpd.server_address[1]
        return f"http://127.0.0.1:{port}/v1" if self.api == "openai" else f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], ScriptedServer]]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in KEY_VARS.values():
        monkeypatch.setenv(name, SECRET)
    servers: list[ScriptedServer] = []

    def start(api: str) -> ScriptedServer:
        servers.append(ScriptedServer(api))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def client_for(server: ScriptedServer, cache: Path | None, timeout: float = 5.0, **options: Any) -> LLMClient:
    backend = make_backend(server.api, "test-model", base_url=server.base_url, timeout=timeout)
    return LLMClient(backend, cache_dir=cache, retry_initial_wait=0.01, retry_max_wait=2.0, **options)


def ask(client: LLMClient, text: str = "hello", **params: Any) -> Any:
    return client.generate([Message("user", text)], stage="test", **params)


@pytest.mark.parametrize("api", APIS)
def test_success_sends_the_wire_format_and_counts_usage(api: str, serve, tmp_path: Path):
    server = serve(api)
    client = client_for(server, tmp_path / "cache", prices={"test-model": (1.0, 2.0)})
    completion = client.generate([Message("system", "be brief"), Message("user", "hello")], stage="explain")
    assert completion == Completion("echo: hello", completion.usage) and not completion.cached
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 3)
    (request,) = server.requests
    assert request["json"]["model"] == "test-model"
    if api == "openai":
        assert request["json"]["temperature"] == 0
        assert request["path"] == "/v1/chat/completions" and request["json"]["messages"][0] == {"role": "system", "content": "be brief"}
    else:
        assert request["path"] == "/v1/messages" and request["json"]["system"] == "be brief" and request["json"]["max_tokens"] == 512
        assert request["json"]["messages"] == [{"role": "user", "content": "hello"}]
        assert "temperature" not in request["json"], "API version 2026-10-21 rejects sampling parameters"
    stats = client.usage_by_stage()["explain"]
    assert stats == {
        "calls": 1,
        "cached_calls": 0,
        "retries": 0,
        "prompt_tokens": 11,
        "completion_tokens": 3,
        "cost_usd": pytest.approx(17e-6),
    }


@pytest.mark.parametrize("api", APIS)
def test_rate_limit_honours_retry_after_then_succeeds(api: str, serve, tmp_path: Path):
    server = serve(api)
    server.plans.append(Plan(429, {"error": {"type": "rate_limit_error", "message": "slow down"}}, {"retry-after": "0.2"}))
    client = client_for(server, tmp_path / "cache")
    start = time.monotonic()
    assert ask(client).text == "echo: hello"
    assert time.monotonic() - start >= 0.19, "waited as long as Retry-After asked (backoff alone is ≤ 0.01 s)"
    assert len(server.requests) == 2 and client.usage_by_stage()["test"]["retries"] == 1 and client.backend_calls == 2


@pytest.mark.parametrize("api", APIS)
def test_server_error_then_success(api: str, serve, tmp_path: Path):
    server = serve(api)
    server.plans.append(Plan(500, {"error": {"type": "api_error", "message": "boom"}}))
    client = client_for(server, tmp_path / "cache")
    assert ask(client).text == "echo: hello"
    assert len(server.requests) == 2 and client.usage_by_stage()["test"]["retries"] == 1


@pytest.mark.parametrize("api", APIS)
def test_timeout_is_retried(api: str, serve, tmp_path: Path):
    server = serve(api)
    server.plans.append(Plan(delay=1.0))
    client = client_for(server, tmp_path / "cache", timeout=0.3)
    assert ask(client).text == "echo: hello"
    assert len(server.requests) == 2 and client.usage_by_stage()["test"]["retries"] == 1


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("body", ["this is not json{", {"id": "x", "unexpected": True}])
def test_malformed_body_is_retried_a_bounded_number_of_times(api: str, body: Any, serve, tmp_path: Path):
    server = serve(api)
    server.plans.append(Plan(200, body))
    client = client_for(server, tmp_path / "cache", retry_attempts=3)
    assert ask(client).text == "echo: hello" and len(server.requests) == 2
    server.default = Plan(200, body)
    with pytest.raises(TransientBackendError, match="malformed.*gave up after 3 attempts"):
        ask(client, "again")
    assert len(server.requests) == 5


@pytest.mark.parametrize("api", APIS)
def test_unauthorised_is_not_retried_and_never_shows_the_key(api: str, serve, tmp_path: Path):
    server = serve(api)
    server.plans.append(Plan(401, '{"error": {"type": "authentication_error", "message": "invalid key {key}"}}'))
    client = client_for(server, tmp_path / "cache")
    with pytest.raises(PermanentBackendError) as caught:
        ask(client)
    assert len(server.requests) == 1 and client.usage_by_stage()["test"]["retries"] == 0
    assert "401" in str(caught.value) and "***" in str(caught.value), "the server echoed the key; it is scrubbed"
    assert SECRET not in "".join(traceback.format_exception(caught.value))


@pytest.mark.parametrize("status", [400, 403, 404])
def test_other_client_errors_are_not_retried(status: int, serve, tmp_path: Path):
    server = serve("openai")
    server.plans.append(Plan(status, {"error": {"message": "no"}}))
    with pytest.raises(PermanentBackendError, match=str(status)):
        ask(client_for(server, tmp_path / "cache"))
    assert len(server.requests) == 1


def test_retries_are_bounded(serve, tmp_path: Path):
    server = serve("openai")
    server.default = Plan(503, {"error": {"message": "down"}})
    with pytest.raises(TransientBackendError, match="503.*gave up after 4 attempts"):
        ask(client_for(server, tmp_path / "cache", retry_attempts=4))
    assert len(server.requests) == 4


def test_cache_answers_repeated_calls_without_the_backend(serve, tmp_path: Path):
    server = serve("openai")
    client = client_for(server, tmp_path / "cache")
    first = ask(client)
    second = ask(client)
    assert second.cached and second.text == first.text and client.backend_calls == 1 and len(server.requests) == 1
    resumed = client_for(server, tmp_path / "cache")
    assert ask(resumed).text == first.text and resumed.backend_calls == 0 and len(server.requests) == 1
    assert resumed.usage_by_stage()["test"]["cached_calls"] == 1
    ask(client, max_tokens=7)  # other params: another key
    assert len(server.requests) == 2 and server.requests[-1]["json"]["max_tokens"] == 7
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 2 and not list((tmp_path / "cache").rglob(".tmp-*"))


def test_unparseable_replies_are_reasked_never_cached_then_raised(serve, tmp_path: Path):
    server = serve("openai")
    server.default = Plan(text="no number here")
    client = client_for(server, tmp_path / "cache")
    with pytest.raises(UnparseableReply) as caught:
        ask(client, parse=int, format_hint="one integer")
    assert caught.value.raw == "no number here" and caught.value.attempts == 2 and len(server.requests) == 2
    assert not list((tmp_path / "cache").rglob("*.json")), "an unparseable reply is never cached"
    reask = server.requests[1]["json"]["messages"]
    assert reask[:2] == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "no number here"}]
    assert reask[2]["role"] == "user" and "Reply with only one integer." in reask[2]["content"]
    server.default = Plan(text="7")
    server.plans.append(Plan(text="seven"))
    assert ask(client, parse=int, format_hint="one integer") == 7 and len(server.requests) == 4
    assert ask(client, parse=int, format_hint="one integer") == 7 and len(server.requests) == 4, "the parseable reply was cached"
    with pytest.raises(TypeError, match="format_hint"):
        ask(client, parse=int)


def test_choice_logprobs_read_the_first_tokens_top_logprobs(serve, tmp_path: Path):
    server = serve("openai")
    server.top_logprobs = [("3", -0.1), ("2", -2.5), (" 3", -3.0), ("x", -4.0)]
    client = client_for(server, tmp_path / "cache")
    choices = [" 0", " 1", " 2", " 3"]
    logprobs = client.choice_logprobs([Message("user", "rate it")], choices, stage="judge")
    assert logprobs[" 3"] == pytest.approx(math.log(math.exp(-0.1) + math.exp(-3.0)))
    assert logprobs[" 2"] == pytest.approx(-2.5) and logprobs[" 0"] == logprobs[" 1"] == -math.inf
    request = server.requests[0]["json"]
    assert (request["logprobs"], request["top_logprobs"], request["max_tokens"], request["temperature"]) == (True, 20, 1, 0)
    assert client.choice_logprobs([Message("user", "rate it")], choices, stage="judge") == logprobs and len(server.requests) == 1
    assert client.usage_by_stage()["judge"]["prompt_tokens"] == 11


def test_anthropic_has_no_logprobs(serve, tmp_path: Path):
    server = serve("anthropic")
    client = client_for(server, tmp_path / "cache")
    for call in (lambda: client.require(CHOICE_LOGPROBS), lambda: client.choice_logprobs([Message("user", "x")], ["a"], stage="judge")):
        with pytest.raises(MonoscopeError, match="anthropic.*choice_logprobs"):
            call()
    with pytest.raises(MonoscopeError, match="continuation_logprob"):
        client.continuation_logprob("a", "b", stage="judge")
    assert server.requests == []


@pytest.mark.parametrize("api", APIS)
def test_the_key_is_never_written(api: str, serve, tmp_path: Path):
    server = serve(api)
    server.plans.append(Plan(200, text=f"I saw {SECRET}"))
    client = client_for(server, tmp_path / "cache")
    ask(client)
    ask(client, "second")
    assert all(server.requests[0]["headers"].get(h) in (None, SECRET, f"Bearer {SECRET}") for h in ("authorization", "x-api-key"))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 2 and not any(SECRET.encode() in p.read_bytes() for p in files)


@pytest.mark.parametrize("api", APIS)
def test_a_missing_key_fails_when_the_backend_is_made(api: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(KEY_VARS[api], raising=False)
    with pytest.raises(MonoscopeError, match=KEY_VARS[api]):
        make_backend(api, "test-model", base_url="http://127.0.0.1:9")
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(MonoscopeError, match="MY_KEY"):
        make_backend(api, "test-model", api_key_env="MY_KEY")


def test_map_runs_calls_concurrently_in_order(serve, tmp_path: Path):
    server = serve("openai")
    server.default = Plan(delay=0.2)
    client = client_for(server, tmp_path / "cache", max_concurrency=4)
    replies = client.map(lambda i: ask(client, f"prompt {i}").text, range(8))
    assert replies == [f"echo: prompt {i}" for i in range(8)]
    assert 2 <= server.max_in_flight <= 4, "calls overlap, never more than the limit at once"


def test_identical_requests_in_flight_together_are_asked_once(serve, tmp_path: Path):
    server = serve("openai")
    server.default = Plan(delay=0.2)
    client = client_for(server, tmp_path / "cache", max_concurrency=4)
    replies = client.map(lambda i: ask(client, f"prompt {i % 2}").text, range(6))  # two distinct prompts, three times each
    assert replies == [f"echo: prompt {i % 2}" for i in range(6)]
    assert len(server.requests) == 2 and client.backend_calls == 2
    assert client.usage_by_stage()["test"]["cached_calls"] == 4
    assert not client._request_locks, "no lock outlives its requests"


def test_registry(monkeypatch: pytest.MonkeyPatch):
    assert {"openai", "anthropic", "local"} <= set(backend_names())
    with pytest.raises(MonoscopeError, match="unknown LLM backend 'nope'.*anthropic.*openai"):
        make_backend("nope", "m")
    monkeypatch.setitem(llm._BACKEND_MODULES, "ghost", "harness.backend_ghost")
    with pytest.raises(MonoscopeError, match="module harness.backend_ghost is missing"):
        make_backend("ghost", "m")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with pytest.raises(MonoscopeError, match="unknown option.*colour"):
        make_backend("openai", "m", colour="red")
