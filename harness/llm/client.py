"""LLM clients: a backend registry and ``LLMClient``, which wraps one backend with an on-disk response
cache, retries, re-asking on unparseable replies, a concurrency limit and per-stage token/cost accounting.

Backends ("openai", "anthropic", "local") register themselves with ``register_backend`` when their
module is imported; ``make_backend`` imports them on demand. Backends translate their SDK's errors
into ``TransientBackendError`` (rate limits, 5xx, timeouts, connection errors, malformed replies:
retried with exponential backoff and jitter, honouring Retry-After) or ``PermanentBackendError``
(any other 4xx: raised at once). API keys come only from the environment (``api_key_from_env``);
every key read is scrubbed ("***") from error messages and cache files.
"""

import email.utils
import functools
import hashlib
import importlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from harness.errors import MonoscopeError
from harness.llm.budget import Budget, estimated_tokens
from harness.llm.interface import CHOICE_LOGPROBS, CONTINUATION_LOGPROB, GENERATE, SLOT_LOGPROBS, Backend, Completion, Message, Usage
from harness.storage import temporary_file

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

BackendFactory = Callable[..., Backend]
_FACTORIES: dict[str, BackendFactory] = {}
_BACKEND_MODULES = {name: f"harness.llm.backends.{name}" for name in ("openai", "anthropic", "local")}
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_CALL = threading.local()  # per-thread usage reported by the backend call in progress


# --- errors ------------------------------------------------------------------------------------------


class BackendError(MonoscopeError):
    """A backend call failed; the message is scrubbed of API keys."""

    def __init__(self, message: str) -> None:
        super().__init__(scrub(message))


class TransientBackendError(BackendError):
    """A failure worth retrying (429, 5xx, timeout, connection error, malformed reply); ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentBackendError(BackendError):
    """A failure that retrying cannot fix (400, 401, 403, 404, ...): raised at once."""


BACKEND_FAILURE = "backend error: "  # how a record's ``failure`` names a failed backend call (not an unparseable reply)


def failure_reason(error: "BackendError") -> str:
    """Return the ``failure`` of a record whose backend call failed (permanently, or after every retry)."""
    return f"{BACKEND_FAILURE}{error}"[:500]


class UnparseableReply(Exception):  # noqa: N818 (the name callers use)
    """Every attempt's reply failed to parse; ``raw`` is the last reply, ``attempts`` how many were made."""

    def __init__(self, raw: str, attempts: int) -> None:
        self.raw = scrub(raw)
        self.attempts = attempts
        super().__init__(f"unparseable reply after {attempts} attempts: {self.raw[:200]!r}")


EMPTY_REPLY = "(empty reply)"  # the assistant turn of a re-ask whose rejected reply was empty (APIs refuse empty turns)


def reask_message(error: str, format_hint: str) -> str:
    """Return the user turn that re-asks after a rejected reply: the parse error and the expected format."""
    return f"Your reply was not in the expected format ({error}). Reply with only {format_hint}."


def reask_turns(rejected: str, error: str, format_hint: str) -> list[Message]:
    """Return the turns appended to the original messages to re-ask: the rejected reply, then ``reask_message``."""
    return [Message("assistant", rejected if rejected.strip() else EMPTY_REPLY), Message("user", reask_message(error, format_hint))]


def missing_capability(backend: Backend, capability: str) -> MonoscopeError:
    """Return the error for asking ``backend`` for a ``capability`` it lacks."""
    has = ", ".join(sorted(backend.capabilities)) or "nothing"
    return MonoscopeError(
        f"LLM backend {backend.name!r} (model {backend.model!r}) does not support {capability!r} (it supports: {has})",
        "choose a scoring format that only needs what this backend supports, or a backend that supports it",
    )


def status_error(backend: str, status: int, message: str, headers: Mapping[str, str] | None = None) -> BackendError:
    """Return the backend error for an HTTP error status: transient for 408, 429 and 5xx, permanent otherwise."""
    text = f"{backend}: HTTP {status}: {message}"[:500]
    if status in (408, 429) or status >= 500:
        return TransientBackendError(text, retry_after_seconds(headers or {}))
    return PermanentBackendError(text)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Return the wait a response asks for (``retry-after-ms``, ``retry-after`` seconds or HTTP date), or None."""
    try:
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


# --- secrets -----------------------------------------------------------------------------------------


def api_key_from_env(env_var: str, backend: str) -> str:
    """Return the API key in environment variable ``env_var`` (registered for scrubbing); MonoscopeError if unset."""
    value = os.environ.get(env_var, "").strip()
    if not value:
        raise MonoscopeError(
            f"the {backend!r} LLM backend needs an API key in the environment variable {env_var}, which is not set",
            f"export {env_var}=<your key> (keys are read only from the environment; a local server without auth accepts any value)",
        )
    with _SECRETS_LOCK:
        _SECRETS.add(value)
    return value


def scrub(text: str) -> str:
    """Return ``text`` with every API key read so far replaced by "***"."""
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


# --- registry ----------------------------------------------------------------------------------------


@contextmanager
def sdk_errors(sdk: Any, backend: str) -> Iterator[None]:
    """Translate the exceptions of an official SDK (openai and anthropic share their shape) into backend errors.

    Rate limits, server errors, timeouts, lost connections and malformed bodies are
    transient; everything else is permanent. The SDK exception is not chained, so
    no request details (headers, keys) reach a printed traceback.
    """
    try:
        yield
    except sdk.APIStatusError as error:
        raise status_error(backend, error.status_code, error.message, error.response.headers) from None
    except sdk.APITimeoutError:
        raise TransientBackendError(f"{backend}: request timed out") from None
    except sdk.APIConnectionError as error:
        raise TransientBackendError(f"{backend}: connection error ({error.message})") from None
    except (sdk.APIResponseValidationError, ValueError) as error:  # ValueError: a body that is not JSON
        raise TransientBackendError(f"{backend}: malformed response ({type(error).__name__})") from None
    except TypeError as error:  # a parameter the SDK does not know
        raise PermanentBackendError(f"{backend}: bad request parameters ({error})") from None
    except Exception as error:
        if isinstance(error, BackendError):
            raise
        raise PermanentBackendError(f"{backend}: {type(error).__name__}: {scrub(str(error))}") from None


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Return a decorator that registers a factory ``(model, **options) -> Backend`` under ``name``."""

    def decorator(factory: BackendFactory) -> BackendFactory:
        _FACTORIES[name] = factory
        return factory

    return decorator


def backend_names() -> list[str]:
    """Return the sorted names of registered and importable-on-demand backends."""
    return sorted(set(_FACTORIES) | set(_BACKEND_MODULES))


def make_backend(name: str, model: str, **options: Any) -> Backend:
    """Return a backend ``name`` calling ``model``, importing its module on first use; MonoscopeError if unknown."""
    if name not in _FACTORIES and name in _BACKEND_MODULES:
        module = _BACKEND_MODULES[name]
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name == module:
                raise MonoscopeError(
                    f"LLM backend {name!r} is not available: module {module} is missing", "choose another backend"
                ) from None
            raise MonoscopeError(f"LLM backend {name!r} needs the Python package {error.name!r}", f"pip install {error.name}") from None
    if name not in _FACTORIES:
        raise MonoscopeError(f"unknown LLM backend {name!r}", f"choose one of {', '.join(backend_names())}")
    return _FACTORIES[name](model, **options)


def report_usage(usage: Usage) -> None:
    """Record the usage of the backend call running on this thread (for calls that return no Completion)."""
    _CALL.usage = usage


# --- the client --------------------------------------------------------------------------------------

_COUNTERS = ("calls", "cached_calls", "retries", "prompt_tokens", "completion_tokens")


class LLMClient:
    """One backend behind a response cache, retries, a concurrency limit and per-stage accounting.

    In ``usage_by_stage``, ``calls`` counts backend invocations (retried attempts and re-asks included), ``retries``
    those that repeated a transiently failed attempt, ``cached_calls`` answers read from the cache;
    tokens and cost are those of backend invocations only (cache hits are free).
    """

    def __init__(
        self,
        backend: Backend,
        cache_dir: str | Path | None = None,
        *,
        max_concurrency: int = 4,
        max_parse_attempts: int = 2,
        retry_attempts: int = 6,
        retry_initial_wait: float = 1.0,
        retry_max_wait: float = 60.0,
        prices: Mapping[str, tuple[float, float]] | None = None,
        budget: Budget | None = None,
    ) -> None:
        if max_concurrency < 1 or max_parse_attempts < 1 or retry_attempts < 1:
            raise MonoscopeError("max_concurrency, max_parse_attempts and retry_attempts must be at least 1", "pass positive values")
        self.backend = backend
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_concurrency = max_concurrency
        self.max_parse_attempts = max_parse_attempts
        self.retry_attempts = retry_attempts
        self.retry_max_wait = retry_max_wait
        self.prices = dict(prices or {})
        self.budget = budget
        if budget is not None and self._price() is None:
            raise MonoscopeError(
                f"--max-cost needs the price of model {backend.model!r} ({backend.name})",
                "add it under llm.prices in the config: MODEL: [USD per 1M input tokens, USD per 1M output tokens]",
            )
        self._backoff = wait_random_exponential(multiplier=retry_initial_wait, max=retry_max_wait)
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._lock = threading.Lock()
        self._stats: dict[str, dict[str, int]] = {}
        self._request_locks: dict[str, list[Any]] = {}  # key -> [lock, holders and waiters]
        self._backend_calls = 0

    @property
    def backend_calls(self) -> int:
        """Return how many times the backend was invoked (cache hits excluded)."""
        with self._lock:
            return self._backend_calls

    def require(self, capability: str) -> None:
        """Return None if the backend supports ``capability``; raise MonoscopeError naming both otherwise."""
        if capability not in self.backend.capabilities:
            raise missing_capability(self.backend, capability)

    def generate(
        self,
        messages: list[Message],
        stage: str,
        parse: Callable[[str], Any] | None = None,
        format_hint: str | None = None,
        **params: Any,
    ) -> Any:
        """Return the reply as a Completion, or ``parse(reply text)`` when ``parse`` is given.

        Temperature defaults to 0. ``format_hint`` (required with ``parse``) names the expected
        reply in a few words ("one integer from 0 to 3"). A reply that ``parse`` rejects
        (ValueError) is never cached; the model is asked again with the original messages, its
        rejected reply (an assistant turn) and a user turn naming the format and the parse error
        (``reask_message``), ``max_parse_attempts`` asks in all (default 2: one re-ask; a later
        re-ask replaces the earlier rejected reply and note). Then UnparseableReply is raised
        with the last rejected text. An accepted reply, first or re-asked, is cached under the
        ORIGINAL request's key, so a rerun reads it without a call.
        """
        self.require(GENERATE)
        if parse is not None and not format_hint:
            raise TypeError("LLMClient.generate: parse needs format_hint, the words naming the expected reply")
        params = {"temperature": 0, **params}
        request = {"messages": [[m.role, m.content] for m in messages], "params": params}
        key = self._key(GENERATE, request)

        def ask() -> Any:
            raw = ""
            conversation = list(messages)
            for _ in range(self.max_parse_attempts):
                prompt_text = "".join(m.content for m in conversation)
                self._reserve(stage, prompt_text, int(params.get("max_tokens") or params.get("max_new_tokens") or 256))
                completion = self._call(stage, functools.partial(self.backend.generate, list(conversation), **params))
                completion = Completion(scrub(completion.text), completion.usage, completion.cached)  # a reply may echo a key
                try:
                    value = completion if parse is None else parse(completion.text)
                except ValueError as error:
                    raw = completion.text
                    conversation = [*messages, *reask_turns(raw, str(error), str(format_hint))]
                    continue
                usage = {"prompt_tokens": completion.usage.prompt_tokens, "completion_tokens": completion.usage.completion_tokens}
                self._cache_write(key, GENERATE, request, {"text": completion.text, "usage": usage})
                return value
            raise UnparseableReply(raw, self.max_parse_attempts)

        return self._cached_or_ask(key, lambda r: self._decode_reply(r, parse), stage, ask)

    def choice_logprobs(self, messages: list[Message], choices: list[str], stage: str) -> dict[str, float]:
        """Return {choice: log-probability of the choice as the reply's start} (-inf where the backend saw none)."""
        self.require(CHOICE_LOGPROBS)
        request = {"messages": [[m.role, m.content] for m in messages], "choices": list(choices)}
        key = self._key(CHOICE_LOGPROBS, request)

        def ask() -> dict[str, float]:
            self._reserve(stage, "".join(m.content for m in messages), 1)
            logprobs = self._call(stage, lambda: self.backend.choice_logprobs(list(messages), list(choices)))
            result = {choice: float(logprobs.get(choice, -math.inf)) for choice in choices}
            self._cache_write(key, CHOICE_LOGPROBS, request, {"logprobs": result})
            return result

        return self._cached_or_ask(key, lambda r: {choice: float(r["logprobs"][choice]) for choice in choices}, stage, ask)

    def choice_logprobs_many(self, requests: list[list[Message]], choices: list[str], stage: str) -> list[dict[str, float] | BackendError]:
        """Return ``choice_logprobs`` of every request, in order, or the BackendError that request ended with.

        Each request is cached, counted and budgeted as its own. The ones not in the cache go to
        the backend together when it has ``choice_logprobs_batch`` (the local backend: one forward
        pass over their common prefix and a batch of remainders; a failure is then every one's),
        else one by one in up to ``max_concurrency`` threads.
        """
        self.require(CHOICE_LOGPROBS)
        bodies = [{"messages": [[m.role, m.content] for m in messages], "choices": list(choices)} for messages in requests]
        keys = [self._key(CHOICE_LOGPROBS, body) for body in bodies]
        batch = getattr(self.backend, "choice_logprobs_batch", None)
        results: list[dict[str, float] | BackendError | None] = [None] * len(requests)
        missing: dict[str, list[int]] = {}  # key -> the positions asking it (identical requests are asked once)
        for index, key in enumerate(keys):
            hit, value = self._cache_get(key, lambda r: {choice: float(r["logprobs"][choice]) for choice in choices})
            if hit:
                self._count(stage, cached_calls=1)
                results[index] = value
            else:  # without a cache (a dry run's plan) nothing is shared: every request counts as asked
                missing.setdefault(key if self.cache_dir is not None else f"{key}#{index}", []).append(index)
        repeats = sum(len(positions) - 1 for positions in missing.values())
        if repeats:
            self._count(stage, cached_calls=repeats)  # a repeated request is answered from the first one's reply
        if batch is None or len(missing) < 2:

            def one(index: int) -> dict[str, float] | BackendError:
                try:
                    return self.choice_logprobs(requests[index], choices, stage)
                except BackendError as error:
                    return error

            for key, value in zip(missing, self.map(one, [positions[0] for positions in missing.values()]), strict=True):
                for position in missing[key]:
                    results[position] = value
            return results  # type: ignore[return-value]
        asked = [positions[0] for positions in missing.values()]
        for index in asked:
            self._reserve(stage, "".join(m.content for m in requests[index]), 1)
        try:
            answers = self._call(stage, lambda: batch([list(requests[i]) for i in asked], list(choices)))
        except BackendError as error:
            answers = [error] * len(asked)
        else:
            self._count(stage, calls=len(asked) - 1)  # one request per prompt, as if asked one by one
        for slot, index, answer in zip(missing, asked, answers, strict=True):
            if not isinstance(answer, BackendError):
                answer = {choice: float(answer.get(choice, -math.inf)) for choice in choices}
                self._cache_write(keys[index], CHOICE_LOGPROBS, bodies[index], {"logprobs": answer})
            for position in missing[slot]:
                results[position] = answer
        return results  # type: ignore[return-value]

    def slot_logprobs(
        self, messages: list[Message], lines: list[str], filler: str, choices: list[str], stage: str
    ) -> list[dict[str, float]]:
        """Return the backend's ``slot_logprobs``: per line of the forced reply, {choice: log-probability next}.

        Cached and counted as one call; a backend that answers another number of lines is a permanent failure.
        """
        self.require(SLOT_LOGPROBS)
        request = {"messages": [[m.role, m.content] for m in messages], "lines": list(lines), "filler": filler, "choices": list(choices)}
        key = self._key(SLOT_LOGPROBS, request)

        def decode(response: dict[str, Any]) -> list[dict[str, float]]:
            return [{choice: float(row[choice]) for choice in choices} for row in response["logprobs"]]

        def ask() -> list[dict[str, float]]:
            self._reserve(stage, "".join(m.content for m in messages) + "".join(line + filler + "\n" for line in lines), 0)
            rows = self._call(stage, lambda: self.backend.slot_logprobs(list(messages), list(lines), filler, list(choices)))
            if len(rows) != len(lines):
                raise PermanentBackendError(f"slot_logprobs: {len(rows)} answers for {len(lines)} lines")
            result = [{choice: float(row.get(choice, -math.inf)) for choice in choices} for row in rows]
            self._cache_write(key, SLOT_LOGPROBS, request, {"logprobs": result})
            return result

        return self._cached_or_ask(key, decode, stage, ask)

    def continuation_logprob(self, prompt: str, continuation: str, stage: str) -> float:
        """Return log P(continuation | prompt) summed over the continuation's tokens."""
        self.require(CONTINUATION_LOGPROB)
        request = {"prompt": prompt, "continuation": continuation}
        key = self._key(CONTINUATION_LOGPROB, request)

        def ask() -> float:
            self._reserve(stage, prompt + continuation, 0)
            value = float(self._call(stage, lambda: self.backend.continuation_logprob(prompt, continuation)))
            self._cache_write(key, CONTINUATION_LOGPROB, request, {"logprob": value})
            return value

        return self._cached_or_ask(key, lambda r: float(r["logprob"]), stage, ask)

    def map(self, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """Return ``[function(item) for item in items]``, run in up to ``max_concurrency`` threads, in order.

        Backend calls are limited to ``max_concurrency`` at a time across the whole client, so nested
        ``map`` calls cannot exceed it (nor deadlock). The first exception cancels pending items and is raised.
        """
        items = list(items)
        if self.max_concurrency == 1 or len(items) <= 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items)), thread_name_prefix="llm") as pool:
            futures: list[Future[R]] = [pool.submit(function, item) for item in items]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def usage_by_stage(self) -> dict[str, dict[str, Any]]:
        """Return {stage: {calls, cached_calls, retries, prompt_tokens, completion_tokens, cost_usd}}.

        ``cost_usd`` comes from the price table (USD per 1M input and output tokens of the model);
        None when the model is not in it.
        """
        price = self._price()
        with self._lock:
            result: dict[str, dict[str, Any]] = {stage: dict(counts) for stage, counts in self._stats.items()}
        for counts in result.values():
            cost = None if price is None else (counts["prompt_tokens"] * price[0] + counts["completion_tokens"] * price[1]) / 1e6
            counts["cost_usd"] = cost
        return result

    # --- internals ---

    def _cached_or_ask(self, key: str, decode: Callable[[dict[str, Any]], R], stage: str, ask: Callable[[], R]) -> R:
        """Return the cached answer to request ``key`` (decoded), or else ``ask()``'s, which caches it.

        Identical requests in flight at the same time (two records with the same prompt) are asked
        once: the later ones wait for the first and then read its reply from the cache.
        """
        hit, value = self._cache_get(key, decode)
        if not hit:
            with self._request_lock(key):
                hit, value = self._cache_get(key, decode)
                if not hit:
                    return ask()
        self._count(stage, cached_calls=1)
        return value

    @contextmanager
    def _request_lock(self, key: str) -> Iterator[None]:
        """Hold the lock of one request key; the lock is dropped once nobody holds or waits for it."""
        with self._lock:
            entry = self._request_locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._request_locks[key]

    def _price(self) -> tuple[float, float] | None:
        """Return (USD per 1M input, per 1M output tokens) of the model; the local backend is free."""
        if self.backend.model in self.prices:
            return self.prices[self.backend.model]
        return (0.0, 0.0) if self.backend.name == "local" else None

    def _reserve(self, stage: str, prompt_text: str, max_output_tokens: int) -> None:
        """Refuse a call (BudgetExhausted) whose worst-case cost would pass the run's spending limit."""
        price = self._price()
        if self.budget is None or price is None:
            return
        estimate = (estimated_tokens(prompt_text) * price[0] + max_output_tokens * price[1]) / 1e6
        self.budget.reserve(estimate, stage)

    def _count(self, stage: str, **increments: int) -> None:
        with self._lock:
            counts = self._stats.setdefault(stage, dict.fromkeys(_COUNTERS, 0))
            for name, value in increments.items():
                counts[name] += value
            self._backend_calls += increments.get("calls", 0)

    def _call(self, stage: str, invoke: Callable[[], R]) -> R:
        """Return ``invoke()``'s result, retrying TransientBackendError with backoff."""
        retrying = Retrying(
            stop=stop_after_attempt(self.retry_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(TransientBackendError),
            before_sleep=lambda state: self._before_retry(stage, state),
            reraise=True,
        )
        try:
            return retrying(self._attempt, stage, invoke)
        except TransientBackendError as error:
            raise TransientBackendError(f"{error} (gave up after {self.retry_attempts} attempts)", error.retry_after) from None

    def _attempt(self, stage: str, invoke: Callable[[], R]) -> R:
        with self._slots:
            _CALL.usage = None
            self._count(stage, calls=1)
            try:
                result = invoke()
            except MonoscopeError:
                raise
            except Exception as error:  # an untranslated error: keep its type, never leak a key
                text = f"{type(error).__name__}: {error}"
                if scrub(text) != text:
                    raise PermanentBackendError(f"{self.backend.name}: {text}") from None
                raise
            usage = result.usage if isinstance(result, Completion) else getattr(_CALL, "usage", None)
        if usage is not None:
            self._count(stage, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
            price = self._price()
            if self.budget is not None and price is not None:
                self.budget.charge((usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1e6)
        return result

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.retry_max_wait)
        return float(self._backoff(state))

    def _before_retry(self, stage: str, state: RetryCallState) -> None:
        self._count(stage, retries=1)
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info("%s: attempt %d failed (%s); retrying in %.2f s", stage, state.attempt_number, error, wait)

    def _key(self, kind: str, request: dict[str, Any]) -> str:
        payload = {"backend": self.backend.name, "model": self.backend.model, "kind": kind, **request}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    def _cache_get(self, key: str, decode: Callable[[dict[str, Any]], Any]) -> tuple[bool, Any]:
        """Return (True, decode(cached response)), or (False, None) when absent, unreadable or undecodable."""
        path = self._cache_path(key)
        if path is None:
            return False, None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("key") != key:
                return False, None
            return True, decode(record["response"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False, None  # a miss; a reply the parser now rejects (ValueError) is asked again

    @staticmethod
    def _decode_reply(response: dict[str, Any], parse: Callable[[str], Any] | None) -> Any:
        completion = Completion(str(response["text"]), Usage(**response["usage"]), cached=True)
        return completion if parse is None else parse(completion.text)

    def _cache_write(self, key: str, kind: str, request: dict[str, Any], response: dict[str, Any]) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        record = dict(key=key, kind=kind, backend=self.backend.name, model=self.backend.model, request=request, response=response)
        text = scrub(json.dumps(record, ensure_ascii=False, indent=1))
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = temporary_file(path.parent, ".tmp-", ".json")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
