"""Loopback HTTP servers for the LLM-client tests: OpenAI and Anthropic reply bodies and a background server thread."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def reply_body(api: str, text: str, top_logprobs: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    """Return a successful chat reply saying ``text`` in the wire format of ``api`` ("openai" or "anthropic").

    Usage is always 11 prompt and 3 completion tokens; ``top_logprobs`` (OpenAI only) are the first token's alternatives.
    """
    if api == "anthropic":
        return {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "test-model", "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 3},
        }  # fmt: skip
    logprobs = None
    if top_logprobs is not None:
        entries = [{"token": token, "logprob": logprob, "bytes": None} for token, logprob in top_logprobs]
        logprobs = {"content": [{**entries[0], "top_logprobs": entries}]}
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": logprobs}
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "test-model", "choices": [choice],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }  # fmt: skip


def start_server(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Return a server on 127.0.0.1 (a free port) handling each request in a daemon thread, and the thread serving it."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return httpd, thread
