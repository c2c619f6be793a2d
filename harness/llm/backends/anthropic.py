"""The "anthropic" LLM backend: Claude through the official ``anthropic`` SDK's messages API.

System messages go to the ``system`` parameter (joined by blank lines); ``max_tokens`` defaults to
512. Sampling parameters (``temperature``, ``top_p``, ``top_k``) are not sent: SDK 2.x speaks API
version 2026-10-21, which rejects them with HTTP 400 even at default values, and the SDK has no
arguments for them. The client's default temperature 0 stays in the cache key, but Claude's replies
are not guaranteed to be deterministic; the response cache is what makes reruns reproducible.

The key is read from ``ANTHROPIC_API_KEY`` (or the variable named by ``api_key_env``) and passed
explicitly (the SDK sends it as ``Authorization: Bearer``), so the SDK consults no other credential
source. The API returns no log-probabilities, so this backend can only ``generate``; a scoring
format that needs more is refused up front.

Errors become ``TransientBackendError`` (429, 408, 5xx including 529 "overloaded", timeouts,
connection errors, malformed 200 replies: retried a bounded number of times by the client) or
``PermanentBackendError`` (other 4xx). The SDK's own retries are off (``max_retries=0``).
"""

from typing import Any

import anthropic

from harness.errors import MonoscopeError
from harness.llm.client import TransientBackendError, api_key_from_env, missing_capability, register_backend, sdk_errors
from harness.llm.interface import CHOICE_LOGPROBS, CONTINUATION_LOGPROB, GENERATE, Completion, Message, Usage

DEFAULT_MAX_TOKENS = 512
SAMPLING_PARAMETERS = frozenset({"temperature", "top_p", "top_k"})  # rejected by API version 2026-10-21


class AnthropicBackend:
    """Messages-API replies of ``model`` through an ``anthropic.Anthropic`` client."""

    name = "anthropic"
    capabilities = frozenset({GENERATE})

    def __init__(self, model: str, client: anthropic.Anthropic) -> None:
        self.model = model
        self._client = client

    def generate(self, messages: list[Message], **params: object) -> Completion:
        """Return the reply's text blocks joined, and its usage."""
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        wire = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
        params = {("max_tokens" if k == "max_new_tokens" else "stop_sequences" if k == "stop" else k): v for k, v in params.items()}
        arguments: dict[str, Any] = {"max_tokens": DEFAULT_MAX_TOKENS, **{k: v for k, v in params.items() if k not in SAMPLING_PARAMETERS}}
        if system:
            arguments["system"] = system
        with sdk_errors(anthropic, "anthropic"):
            response = self._client.messages.create(model=self.model, messages=wire, **arguments)
        return Completion(_text(response), _usage(response))

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        """Never returns: the Anthropic API gives no log-probabilities."""
        raise missing_capability(self, CHOICE_LOGPROBS)

    def continuation_logprob(self, prompt: str, continuation: str) -> float:
        """Never returns: the Anthropic API gives no log-probabilities."""
        raise missing_capability(self, CONTINUATION_LOGPROB)


def _text(response: object) -> str:
    content = getattr(response, "content", None)
    if not isinstance(content, list):
        raise TransientBackendError("anthropic: malformed response (no content)")
    return "".join(
        block.text for block in content if getattr(block, "type", None) == "text" and isinstance(getattr(block, "text", None), str)
    )


def _usage(response: object) -> Usage:
    usage = getattr(response, "usage", None)
    return Usage(int(getattr(usage, "input_tokens", 0) or 0), int(getattr(usage, "output_tokens", 0) or 0))


@register_backend("anthropic")
def anthropic_backend(
    model: str, base_url: str | None = None, api_key_env: str = "ANTHROPIC_API_KEY", timeout: float = 60.0, **options: Any
) -> AnthropicBackend:
    """Return an "anthropic" backend for ``model``; the key is read from ``api_key_env`` now (MonoscopeError if unset)."""
    if options:
        raise MonoscopeError(
            f"unknown option(s) for the 'anthropic' backend: {', '.join(sorted(options))}", "use base_url, api_key_env or timeout"
        )
    key = api_key_from_env(api_key_env, "anthropic")
    client = anthropic.Anthropic(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)
    return AnthropicBackend(model, client)
