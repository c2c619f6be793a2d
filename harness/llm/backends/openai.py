"""The "openai" LLM backend: chat completions through the official ``openai`` SDK.

Works with OpenAI and with any OpenAI-compatible server (vLLM, Ollama, llama.cpp) through
``base_url`` (e.g. "http://localhost:8000/v1"). The key is read from ``OPENAI_API_KEY`` (or the
variable named by ``api_key_env``); a local server without auth accepts any value, e.g. "EMPTY".

Errors become ``TransientBackendError`` (429, 408, 5xx, timeouts, connection errors) or
``PermanentBackendError`` (other 4xx). A malformed 200 reply (a body that is not JSON, or has no
choices) is treated as transient: proxies and overloaded servers do return such bodies now and
then, so it is retried, but only as often as any transient error (the client's bounded attempts).
The SDK's own retries are off (``max_retries=0``); the client retries and counts.

``choice_logprobs`` asks for one reply token with ``logprobs=True, top_logprobs=20`` and reads the
top 20 candidates of that first token. A choice's log-probability is the log of the summed
probability of the candidates equal to it up to surrounding whitespace (so " 3" and "3" both count
as the answer "3"). A choice absent from the top 20 gets -inf: its probability is below the 20th
candidate's and is treated as zero. Choices must therefore be single tokens. There is no
``continuation_logprob``: chat completions do not score a given continuation.
"""

import math
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from harness.errors import MonoscopeError
from harness.llm.client import TransientBackendError, api_key_from_env, missing_capability, register_backend, report_usage, sdk_errors
from harness.llm.interface import CHOICE_LOGPROBS, CONTINUATION_LOGPROB, GENERATE, Completion, Message, Usage

TOP_LOGPROBS = 20


class OpenAIBackend:
    """Chat completions of ``model`` through an ``openai.OpenAI`` client."""

    name = "openai"
    capabilities = frozenset({GENERATE, CHOICE_LOGPROBS})

    def __init__(self, model: str, client: openai.OpenAI) -> None:
        self.model = model
        self._client = client

    def generate(self, messages: list[Message], **params: object) -> Completion:
        """Return the first choice's text and the response's usage (``max_new_tokens`` is sent as ``max_tokens``)."""
        params = dict(params)
        if "max_new_tokens" in params:
            params.setdefault("max_tokens", params.pop("max_new_tokens"))
            params.pop("max_new_tokens", None)
        response = self._create(messages, params)
        usage = _usage(response)
        return Completion(_content(response), usage)

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        """Return {choice: log-probability of the reply's first token being the choice} (-inf if not in the top 20)."""
        response = self._create(messages, {"temperature": 0, "max_tokens": 1, "logprobs": True, "top_logprobs": TOP_LOGPROBS})
        report_usage(_usage(response))
        try:
            top = [(entry.token, float(entry.logprob)) for entry in response.choices[0].logprobs.content[0].top_logprobs]
        except (AttributeError, IndexError, TypeError, ValueError):
            raise TransientBackendError("openai: malformed response (no top_logprobs for the first reply token)") from None
        return {choice: choice_logprob(choice, top) for choice in choices}

    def continuation_logprob(self, prompt: str, continuation: str) -> float:
        """Never returns: chat completions cannot score a given continuation."""
        raise missing_capability(self, CONTINUATION_LOGPROB)

    def _create(self, messages: list[Message], params: dict[str, Any]) -> ChatCompletion:
        wire = [{"role": m.role, "content": m.content} for m in messages]
        with sdk_errors(openai, "openai"):
            response = self._client.chat.completions.create(model=self.model, messages=wire, **params)
        if not isinstance(response, ChatCompletion) or not getattr(response, "choices", None):
            raise TransientBackendError("openai: malformed response (no choices)")
        return response


def _content(response: ChatCompletion) -> str:
    message = getattr(response.choices[0], "message", None)
    content = getattr(message, "content", None)
    if content is None:
        return ""  # e.g. a refusal or an empty reply: a valid answer that parsers may reject
    if not isinstance(content, str):
        raise TransientBackendError("openai: malformed response (message content is not text)")
    return content


def _usage(response: ChatCompletion) -> Usage:
    usage = getattr(response, "usage", None)
    return Usage(int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0))


def choice_logprob(choice: str, top: list[tuple[str, float]]) -> float:
    """Return log Σ exp(logprob) over top tokens equal to ``choice`` up to whitespace; -inf when none is."""
    target = choice.strip() or choice
    matches = {token: logprob for token, logprob in top if (token.strip() or token) == target}
    if not matches:
        return -math.inf
    peak = max(matches.values())
    if peak == -math.inf:
        return -math.inf
    return peak + math.log(sum(math.exp(value - peak) for value in matches.values()))


@register_backend("openai")
def openai_backend(
    model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0, **options: Any
) -> OpenAIBackend:
    """Return an "openai" backend for ``model``; the key is read from ``api_key_env`` now (MonoscopeError if unset)."""
    if options:
        raise MonoscopeError(
            f"unknown option(s) for the 'openai' backend: {', '.join(sorted(options))}", "use base_url, api_key_env or timeout"
        )
    key = api_key_from_env(api_key_env, "openai")
    client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)
    return OpenAIBackend(model, client)
