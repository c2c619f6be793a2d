"""A loopback LLM server that injects faults: for reliability tests of the LLM client layer and of whole runs.

``FaultServer`` speaks the OpenAI chat-completions (``POST /v1/chat/completions``) and Anthropic messages
(``POST /v1/messages``) wire formats on 127.0.0.1 (ephemeral port, one thread per request). Its answers depend
on the prompt only (a digest of the messages), so a run against a faulty server must give the same records as
a run against a healthy one:

- explain prompts (chat or base template) get a phrase naming the digest;
- rating prompts get a digit 0..3 from the digest; structured-simulation prompts a JSON list of 0..10 per token;
- requests asking for ``logprobs`` get top log-probabilities of " 0".." 9", " Yes" and " No" from the digest.

A re-ask of a rejected reply is answered as the request it re-asks (its messages before the first assistant turn).
Faults are drawn per attempt from a seeded hash of (seed, request digest, attempt number), so which attempts
fail does not depend on thread timing. Kinds (``FAULT_KINDS``): ``429`` (no Retry-After), ``429_retry_after``,
``500``, ``503``, ``stall`` (no answer for ``stall_seconds``: longer than the client's timeout), ``cutoff`` (the
body stops halfway and the connection closes), ``garbage`` (a well-formed reply whose text no parser accepts;
only for requests without ``logprobs``). Every request is faulted at most ``max_faults_per_request`` times and
given garbage at most ``max_garbage_per_request`` times, so every request is answered in the end.

``permanent`` maps a stage ("explain", "judge", "simulate") to an HTTP status: the first distinct request of
that stage other than the answer-spelling probe (``scorers.answers``: one per run, not a unit's) is answered
with that status every time it is asked (401 or 400: a permanent failure; 503: the client's retries run out)
until ``heal()``. ``injected`` counts what was injected, by stage and kind.
"""

import hashlib
import json
import re
import threading
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any

from scorers.answers import PROBE_EXPLANATION
from tests.loopback import reply_body, start_server

TRANSIENT_KINDS = ("429", "429_retry_after", "500", "503", "stall", "cutoff")
FAULT_KINDS = (*TRANSIENT_KINDS, "garbage")
GARBAGE = "Excerpt GARBAGE: no answer here"  # rejected by every parser: starts with "Excerpt", no digit, no list
STAGE_MARKERS = (
    ("What does this feature detect?", "explain"),
    ("In short, the marked tokens are", "explain"),
    ("Rate how specifically", "judge"),
    ("Predict the feature's activation", "simulate"),
    ("how active is the feature on the token marked ⟦ ⟧", "simulate"),
)


def stage_of(prompt: str) -> str:
    """Return the stage ("explain", "judge", "simulate" or "other") whose template the prompt was rendered from."""
    for marker, stage in STAGE_MARKERS:
        if marker in prompt:
            return stage
    return "other"


def answer_text(prompt: str, digest: str) -> str:
    """Return the deterministic reply text of a generate request."""
    stage = stage_of(prompt)
    if stage == "explain":
        return f"tokens of kind {digest[:6]}"
    if stage == "simulate":
        count = len(re.findall(r"^\d+: ", prompt, flags=re.MULTILINE))
        return json.dumps([int(digest[i % 60 : i % 60 + 2], 16) % 11 for i in range(count)])
    return str(int(digest[:8], 16) % 4)


def answer_logprobs(digest: str) -> list[tuple[str, float]]:
    """Return deterministic top log-probabilities of the answer tokens of logprob-based formats."""
    tokens = [f" {d}" for d in range(10)] + [" Yes", " No"]
    return [(token, -0.25 * (1 + int(digest[2 * i : 2 * i + 2], 16) % 16)) for i, token in enumerate(tokens)]


def _unit(seed: int, digest: str, attempt: int) -> float:
    """Return a uniform number in [0, 1) from a seeded hash of one attempt of one request."""
    value = hashlib.sha256(f"{seed}:{digest}:{attempt}".encode()).digest()
    return int.from_bytes(value[:8], "big") / 2**64


class FaultServer:
    """A loopback OpenAI/Anthropic-compatible server with seeded fault injection (see the module docstring)."""

    def __init__(
        self,
        rates: Mapping[str, float] | None = None,
        *,
        seed: int = 0,
        stall_seconds: float = 3.0,
        retry_after: str = "0",
        max_faults_per_request: int = 2,
        max_garbage_per_request: int = 1,
        permanent: Mapping[str, int] | None = None,
    ) -> None:
        unknown = set(rates or {}) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        self.rates = dict(rates or {})
        if sum(self.rates.values()) > 1:
            raise ValueError("fault rates sum to more than 1")
        self.seed = seed
        self.stall_seconds = stall_seconds
        self.retry_after = retry_after
        self.max_faults_per_request = max_faults_per_request
        self.max_garbage_per_request = max_garbage_per_request
        self.permanent = dict(permanent or {})
        self.lock = threading.Lock()
        self.injected: Counter[tuple[str, str]] = Counter()  # (stage, kind) -> count
        self.requests: Counter[str] = Counter()  # stage -> requests received
        self.answered: Counter[str] = Counter()  # stage -> well-formed, parseable answers sent
        self.answered_digests: set[str] = set()
        self.request_digests: list[str] = []
        self._attempts: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._garbage: Counter[str] = Counter()
        self._permanent_digests: dict[str, str] = {}  # stage -> the digest failing permanently
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: a cut-off body never poisons a reused one

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                api = "anthropic" if self.path.rstrip("/").endswith("/messages") else "openai"
                try:
                    server._respond(self, api, body)
                except OSError:
                    pass  # the client gave up on a stalled or cut-off reply

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd, self.thread = start_server(Handler)

    # --- public ---

    def base_url(self, api: str = "openai") -> str:
        """Return the base URL the ``api``'s SDK takes ("openai" with /v1, "anthropic" without)."""
        port = self.httpd.server_address[1]
        return f"http://127.0.0.1:{port}/v1" if api == "openai" else f"http://127.0.0.1:{port}"

    def heal(self) -> None:
        """Stop injecting anything: every later request gets its normal answer."""
        with self.lock:
            self.rates = {}
            self.permanent = {}
            self._permanent_digests = {}

    def reset_counts(self) -> None:
        """Forget what was received and injected so far (fault budgets per request included)."""
        with self.lock:
            for counter in (self.injected, self.requests, self.answered, self._attempts, self._faults, self._garbage):
                counter.clear()
            self.answered_digests.clear()
            self.request_digests.clear()

    def injected_by_kind(self) -> dict[str, int]:
        """Return {kind: count} over all stages."""
        with self.lock:
            totals: Counter[str] = Counter()
            for (_stage, kind), count in self.injected.items():
                totals[kind] += count
            return dict(totals)

    def transient_by_stage(self) -> dict[str, int]:
        """Return {stage: injected transient faults} (those a client must retry)."""
        with self.lock:
            totals: Counter[str] = Counter()
            for (stage, kind), count in self.injected.items():
                if kind in TRANSIENT_KINDS:
                    totals[stage] += count
            return dict(totals)

    def close(self) -> None:
        """Release stalled handlers and stop the server."""
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> "FaultServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ---

    def _choose(self, stage: str, digest: str, logprobs: bool, probe: bool = False) -> str | int | None:
        """Return the fault of this attempt (a kind, a permanent status) or None; count it."""
        with self.lock:
            self.requests[stage] += 1
            self.request_digests.append(digest)
            attempt = self._attempts[digest]
            self._attempts[digest] += 1
            if stage in self.permanent and not probe:
                failing = self._permanent_digests.setdefault(stage, digest)
                if failing == digest:
                    status = self.permanent[stage]
                    self.injected[(stage, f"permanent_{status}")] += 1
                    return status
            if self._faults[digest] >= self.max_faults_per_request:
                return None
            draw, edge = _unit(self.seed, digest, attempt), 0.0
            for kind in FAULT_KINDS:
                edge += self.rates.get(kind, 0.0)
                if draw < edge:
                    if kind == "garbage" and (logprobs or self._garbage[digest] >= self.max_garbage_per_request):
                        return None
                    self._faults[digest] += 1
                    self._garbage[digest] += kind == "garbage"
                    self.injected[(stage, kind)] += 1
                    return kind
            return None

    def _respond(self, handler: BaseHTTPRequestHandler, api: str, body: dict[str, Any]) -> None:
        messages = body.get("messages", [])
        # A re-ask (the original messages, the rejected reply, a note naming the format) is the original request:
        # same digest, same answer, same fault budget.
        reask = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
        prompt = str(body.get("system", "")) + "".join(str(m.get("content", "")) for m in messages[:reask])
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        stage = stage_of(prompt)
        logprobs = bool(body.get("logprobs"))
        fault = self._choose(stage, digest, logprobs, probe=PROBE_EXPLANATION in prompt)
        if isinstance(fault, int):
            kind = "authentication_error" if fault == 401 else "invalid_request_error" if fault < 500 else "overloaded_error"
            self._send(handler, fault, _error_body(api, kind, f"injected permanent fault {fault}"))
            return
        if fault in ("429", "429_retry_after"):
            headers = {"retry-after": self.retry_after} if fault == "429_retry_after" else {}
            self._send(handler, 429, _error_body(api, "rate_limit_error", "injected rate limit"), headers)
            return
        if fault in ("500", "503"):
            self._send(handler, int(fault), _error_body(api, "api_error", f"injected server error {fault}"))
            return
        if fault == "stall":
            self._closing.wait(self.stall_seconds)  # bounded: never longer than stall_seconds, released by close()
            return  # the connection closes without a reply (the client timed out long before)
        text = GARBAGE if fault == "garbage" else answer_text(prompt, digest)
        payload = json.dumps(reply_body(api, text, answer_logprobs(digest) if logprobs else None)).encode()
        if fault == "cutoff":
            handler.send_response(200)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload[: len(payload) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        if fault is None:
            with self.lock:
                self.answered[stage] += 1
                self.answered_digests.add(digest)
        self._send(handler, 200, payload)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes, headers: Mapping[str, str] | None = None) -> None:
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(payload)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)


def _error_body(api: str, kind: str, message: str) -> bytes:
    if api == "anthropic":
        return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()
