"""client_concurrency: LLM calls/s of LLMClient over the real openai backend as max_concurrency grows, against a
loopback OpenAI-compatible server that answers every request after a fixed delay."""

import argparse
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from common import benchmark

SERVER_DELAY_S = 0.2
CONCURRENCY = (1, 8, 32)


class SlowChatServer(ThreadingHTTPServer):
    """A loopback chat-completions server: one thread per connection, every reply after ``delay`` seconds.

    Keeps the largest number of requests it was serving at once (``max_in_flight``) and how many it answered.
    """

    daemon_threads = True
    request_queue_size = 256  # the listen backlog (default 5) must not drop concurrent connects

    def __init__(self, delay: float) -> None:
        super().__init__(("127.0.0.1", 0), _ChatHandler)
        self.delay = delay
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.answered = 0

    @property
    def base_url(self) -> str:
        """Return the server's OpenAI base URL (http://127.0.0.1:PORT/v1)."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _ChatHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as with a real API
    timeout = 10.0  # an idle keep-alive connection's thread ends after this
    disable_nagle_algorithm = True  # headers and body are separate writes: Nagle + delayed ACK would add ~40 ms per reply
    server: SlowChatServer

    def do_POST(self) -> None:  # noqa: N802 (the http.server name)
        """Answer a chat completion (echoing the last message) after the server's delay."""
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        with self.server.lock:
            self.server.in_flight += 1
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)
        try:
            time.sleep(self.server.delay)
            text = f"echo: {request.get('messages', [{}])[-1].get('content', '')}"
            body = {
                "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": request.get("model", "bench"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12},
            }  # fmt: skip
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        finally:
            with self.server.lock:
                self.server.in_flight -= 1
                self.server.answered += 1

    def log_message(self, *args: Any) -> None:
        """Log nothing."""


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block, then restore the previous values (or remove them)."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _measure(base_url: str, server: SlowChatServer, concurrency: int, calls: int) -> dict[str, Any]:
    """Return calls/s, mean latency, retries and the server's peak in-flight for ``calls`` distinct uncached calls."""
    from harness.llm.client import LLMClient, make_backend
    from harness.llm.interface import Message

    backend = make_backend("openai", "bench-model", base_url=base_url, timeout=30.0)
    client = LLMClient(backend, cache_dir=None, max_concurrency=concurrency)
    client.generate([Message("user", f"warm-up {concurrency}")], stage="warm-up", max_tokens=4)
    latencies: list[float] = []

    def call(index: int) -> str:
        started = time.perf_counter()
        reply = client.generate([Message("user", f"prompt {concurrency}-{index}")], stage="bench", max_tokens=4)
        latencies.append(time.perf_counter() - started)
        return reply.text

    with server.lock:
        server.max_in_flight = 0
    started = time.perf_counter()
    replies = client.map(call, range(calls))
    seconds = time.perf_counter() - started
    if replies != [f"echo: prompt {concurrency}-{index}" for index in range(calls)]:
        raise RuntimeError(f"client_concurrency: wrong replies at concurrency {concurrency}")
    stats = client.usage_by_stage()["bench"]
    return {
        "calls": calls,
        "seconds": round(seconds, 3),
        "calls_per_s": round(calls / seconds, 2),
        "ideal_calls_per_s": round(concurrency / SERVER_DELAY_S, 1),
        "mean_latency_ms": round(1000 * sum(latencies) / len(latencies), 1),
        "server_max_in_flight": server.max_in_flight,
        "backend_calls": stats["calls"],
        "retries": stats["retries"],
    }


@benchmark
def client_concurrency(args: argparse.Namespace) -> dict:
    """LLM calls/s of LLMClient over the openai backend at max_concurrency 1, 8 and 32 against a 200 ms loopback server.

    Returns per concurrency: calls, seconds, calls/s (and the ideal concurrency / 0.2 s), mean latency, the server's peak
    in-flight requests, retries, the speed-up over concurrency 1 and the efficiency speed-up / concurrency; "ratio" is the
    efficiency at 32.
    """
    server = SlowChatServer(SERVER_DELAY_S)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    results: dict[str, dict[str, Any]] = {}
    try:
        with _environment(OPENAI_API_KEY="sk-bench-dummy", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost"):
            for concurrency in CONCURRENCY:
                results[str(concurrency)] = _measure(server.base_url, server, concurrency, max(16, 8 * concurrency))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    base = results["1"]["calls_per_s"]
    for concurrency in CONCURRENCY:
        row = results[str(concurrency)]
        row["speedup"] = round(row["calls_per_s"] / base, 2)
        row["efficiency"] = round(row["calls_per_s"] / base / concurrency, 3)
    return {
        "server_delay_ms": int(SERVER_DELAY_S * 1000),
        **{f"concurrency_{c}": results[str(c)] for c in CONCURRENCY},
        "ratio": results[str(CONCURRENCY[-1])]["efficiency"],
        "target": ">= 0.8 (efficiency at concurrency 32: near-linear)",
    }
