"""The "local" backend: an in-process transformers causal LM (by default the embedded Gemma 3 270M).

Scoring never computes the LM head where it is not needed. On Gemma 3 270M
the head (262k x 640) costs more than all 18 blocks on a CPU, so the prompt
runs through the base model only (``model.base_model``: blocks and final
norm) and the head is applied by hand, over the full vocabulary, at exactly
the positions that predict a scored token; the log-softmax normaliser is
exact. Several continuations after one prompt share one forward pass of the
prompt: its KV cache is repeated over a batch of continuations, and only the
continuation tokens are fed after it. ``generate`` decodes greedily with the
same cache and computes the head at the last position only.

Greedy generation reuses work across calls (option ``reuse``, on by default;
the tokens are those of plain greedy decoding, the same arithmetic cut into
other chunks, so logits agree to float rounding): a prompt prefix shared with the
previous prompt (a judge's prompts for one unit and explanation share their
opening) keeps its KV cache, and the previous reply with the same length limit
and stop strings is a draft of up to 8 tokens, fed after the prompt in the same
forward pass and kept as far as it matches the greedy choices (the head then
runs at those few positions), so replies that repeat cost almost no decoding
steps (a rubric rating asks for one token and needs no draft). Greedy requests that the
client's threads ask at the same time run as one right-padded batch after their
common prefix (harness/llm/batching.py): the LM head's 262k x 640 weights are then
read once per pass for all of them. Which requests share a pass depends on
timing, and a batch's arithmetic differs from a single prompt's by float
rounding, so a reply could change only where two tokens tie to within rounding; a client
with max_concurrency 1 never batches. Sampling (temperature > 0) never reuses.

Text to tokens:
- a prompt is encoded without special tokens and BOS is put in front once
  (not again if the text, e.g. a chat template, already starts with it);
- messages become the prompt as plain text (every content in order, joined by
  blank lines, so the prompt ends with the last message); with option
  ``chat=True`` the tokenizer's chat template renders them instead. A base
  model has no turns, so a re-ask (``LLMClient.generate``: the original
  messages, the rejected reply as an assistant turn, then a note naming the
  expected format) is rendered as the note, a blank line and the original
  messages: the rejected reply is left out and the prompt still ends with its
  answer cue ("Rating:", "In short, the marked tokens are");
- a continuation's tokens are the tokens of prompt + continuation beyond
  those of the prompt when the prompt's tokens are a prefix of them (so a
  continuation scores the tokens the model would see in the joined text);
  otherwise, when a merge crosses the boundary, the continuation is encoded on
  its own and appended to the prompt's tokens.
"""

import copy
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from harness.errors import MonoscopeError
from harness.llm.batching import RequestBatcher
from harness.llm.client import register_backend, report_usage
from harness.llm.interface import CHOICE_LOGPROBS, CONTINUATION_LOGPROB, GENERATE, SLOT_LOGPROBS, Completion, Message, Usage
from harness.subject.model import SubjectModel, load_subject_model, local_tokenizer

_GENERATE_PARAMS = frozenset({"temperature", "max_new_tokens", "max_tokens", "stop", "seed"})
_OPTIONS = frozenset({"chat", "batch_size", "logit_rows", "reuse"})
_MIN_SHARED_PREFIX = 16  # tokens: a shorter common prefix with the previous prompt is not worth a cache of its own
_MAX_DRAFT = 8  # tokens of the previous reply verified after a prompt in its forward pass
_PROMPT_CACHES = 8  # scoring prompts whose KV caches are kept for the prompts after them (see _prompt_pass)
_MAX_DRAFT_KEYS = 16  # (length limit, stop strings) settings whose last reply is kept as a draft


@dataclass(frozen=True)
class GreedyRequest:
    """One greedy generation: the prompt's token ids, the length limit and the stop strings."""

    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    stop: tuple[str, ...]

    @property
    def key(self) -> tuple[int, tuple[str, ...]]:
        """Return the settings under which replies serve as drafts for each other."""
        return (self.max_new_tokens, self.stop)


class LocalBackend:
    """Backend "local": generate, choice log-probabilities and continuation log-probabilities in process."""

    name = "local"
    capabilities = frozenset({GENERATE, CHOICE_LOGPROBS, CONTINUATION_LOGPROB, SLOT_LOGPROBS})

    def __init__(
        self,
        subject: SubjectModel,
        model: str | None = None,
        chat: bool | None = None,
        batch_size: int = 16,
        logit_rows: int = 64,
        reuse: bool = True,
    ):
        self.subject = subject
        self.model = model or subject.name
        self.chat = bool(getattr(subject.tokenizer, "chat_template", None)) if chat is None else bool(chat)
        self.model = recorded_name(self.model, self.chat)
        self.batch_size = max(1, int(batch_size))  # continuations per forward pass after a shared prompt
        self.logit_rows = max(1, int(logit_rows))  # positions per LM-head matmul (each row is vocab-wide)
        self.reuse = bool(reuse)  # shared-prefix KV caches (greedy generation and scoring) and previous reply as a draft
        self._lock = threading.RLock()
        self._previous_prompt: list[int] = []
        self._prefix: tuple[list[int], Any] | None = None  # token ids and KV cache of the last shared prompt prefix
        self._prompt_caches: list[tuple[list[int], Any]] = []  # scoring: token ids and KV cache of the last prompts
        self._drafts: dict[tuple[int, tuple[str, ...]], list[int]] = {}  # last greedy reply per (limit, stop strings)
        self._batcher = RequestBatcher(self._greedy_batch, max_batch=self.batch_size)  # greedy requests asked together
        lm = subject.model
        self._base = lm.base_model if hasattr(lm, "base_model") else lm.model
        self._head = lm.get_output_embeddings()
        config = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
        self._softcap = getattr(config, "final_logit_softcapping", None)
        eos = getattr(subject.tokenizer, "eos_token_id", None)
        eos = config.eos_token_id if eos is None else eos
        self._eos = set(eos) if isinstance(eos, list | tuple) else ({eos} if eos is not None else set())
        if chat and not getattr(subject.tokenizer, "chat_template", None):
            raise MonoscopeError(f"model {self.model!r} has no chat template", "drop chat=True to render messages as plain text")

    @property
    def generation_batches(self) -> dict[int, int]:
        """Return {batch size: number of forward passes} of the greedy generations batched so far."""
        return dict(self._batcher.batch_sizes)

    # ------------------------------------------------------------------ text
    def render(self, messages: list[Message]) -> str:
        """Return the prompt text for ``messages`` (plain text, or the chat template with ``chat=True``).

        In plain text, messages whose assistant turn is followed by a user turn (a re-ask) render as
        that last user turn, then the messages before the first assistant turn (module docstring).
        """
        if not messages:
            raise MonoscopeError("no messages to send", "give at least one message")
        if self.chat:
            turns = [{"role": m.role, "content": m.content} for m in messages]
            prefill = messages[-1].role == "assistant"
            return self.subject.tokenizer.apply_chat_template(
                turns, tokenize=False, add_generation_prompt=not prefill, continue_final_message=prefill
            )
        answered = [i for i, m in enumerate(messages[:-1]) if m.role == "assistant"]
        if answered and messages[-1].role != "assistant":
            # A re-ask (original messages, the rejected reply, a note naming the format): a base model has no
            # turns, so the note goes first and the original prompt, which ends with the answer's cue, last.
            messages = [messages[-1], *messages[: answered[0]]]
        return "\n\n".join(m.content for m in messages)

    def encode(self, text: str) -> list[int]:
        """Return the token ids of ``text`` without special tokens."""
        return list(self.subject.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, prompt: str) -> list[int]:
        """Return the token ids of a prompt with BOS in front once."""
        ids = self.encode(prompt)
        bos = self.subject.bos_token_id
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        if not ids:
            raise MonoscopeError("empty prompt on a model without BOS", "give a non-empty prompt")
        return ids

    def continuation_ids(self, prompt: str, prompt_ids: list[int], continuation: str) -> list[int]:
        """Return the tokens of ``continuation`` after ``prompt`` (see the module docstring for the rule)."""
        if not continuation:
            return []
        joined = self.prompt_ids(prompt + continuation)
        if len(joined) > len(prompt_ids) and joined[: len(prompt_ids)] == prompt_ids:
            return joined[len(prompt_ids) :]
        return self.encode(continuation)

    # --------------------------------------------------------------- scoring
    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        """Return {choice: log P(choice | rendered messages)}, all choices after one pass of the prompt."""
        prompt = self.render(messages)
        values = self.continuation_logprobs(prompt, list(choices))
        report_usage(Usage(prompt_tokens=len(self.prompt_ids(prompt)), completion_tokens=0))  # the prompt's tokens read
        return dict(zip(choices, values, strict=True))

    def choice_logprobs_batch(self, requests: list[list[Message]], choices: list[str]) -> list[dict[str, float]]:
        """Return ``[self.choice_logprobs(messages, choices) for messages in requests]``, the prompts run together.

        A 1.5B model on a CPU reads all its weights once per forward pass (6 GB in float32), so a
        pass over a 20-token suffix costs nearly what one over 100 tokens does: the prompts' common
        prefix runs once (its KV cache reused as in ``_prompt_pass``) and their remainders run as one
        right-padded batch of up to ``batch_size`` rows, the LM head only at each row's last
        position. Equal to the one-prompt path to float rounding. Choices of more than one token
        (after any prompt) take the one-prompt path.
        """
        if len(requests) < 2:
            return [self.choice_logprobs(messages, choices) for messages in requests]
        prompts = [self.render(messages) for messages in requests]
        ids = [self.prompt_ids(prompt) for prompt in prompts]
        # the tokens read, counted as if each prompt were asked on its own (as the client counts the calls)
        report_usage(Usage(prompt_tokens=sum(len(row) for row in ids), completion_tokens=0))
        tokens = [[self.continuation_ids(prompt, prompt_ids, c) for c in choices] for prompt, prompt_ids in zip(prompts, ids, strict=True)]
        shared = min(len(prompt_ids) for prompt_ids in ids) - 1  # every row keeps at least its last token
        for prompt_ids in ids[1:]:
            shared = _common_prefix(ids[0], prompt_ids, shared)
        if shared < 1 or any(len(t) != 1 for row in tokens for t in row):
            results = [self.choice_logprobs(messages, choices) for messages in requests]
            report_usage(Usage(prompt_tokens=sum(len(row) for row in ids), completion_tokens=0))
            return results
        results: list[dict[str, float]] = []
        with self._lock, torch.inference_mode():
            prefix = self._prompt_pass(ids[0][:shared])
            for start in range(0, len(ids), self.batch_size):
                rows = ids[start : start + self.batch_size]
                width = max(len(row) - shared for row in rows)
                inputs = torch.zeros((len(rows), width), dtype=torch.long, device=self.subject.device)
                for b, row in enumerate(rows):  # right padding: causal attention keeps real positions off the pads
                    inputs[b, : len(row) - shared] = torch.tensor(row[shared:], device=self.subject.device)
                cache = copy.deepcopy(prefix.cache)
                cache.batch_repeat_interleave(len(rows))
                hidden = self._forward(inputs, cache).last_hidden_state
                last = torch.stack([hidden[b, len(row) - shared - 1] for b, row in enumerate(rows)])
                logprobs = torch.log_softmax(self._logits(last), dim=-1)
                for b, row_tokens in enumerate(tokens[start : start + self.batch_size]):
                    results.append({c: float(logprobs[b, t[0]]) for c, t in zip(choices, row_tokens, strict=True)})
        return results

    def slot_logprobs(self, messages: list[Message], lines: list[str], filler: str, choices: list[str]) -> list[dict[str, float]]:
        """Return, for each of ``lines``, {choice: log P(choice next | the reply up to and including that line)}.

        The reply is forced, not generated: after the rendered ``messages`` come ``lines[0] + filler + "\n" +
        lines[1] + filler + "\n" + …``, each piece tokenised on its own, and one forward pass reads the
        next-token distribution at the last token of every line (OpenAI neuron-explainer's "all at once"
        simulation reads its placeholders the same way). Every choice must be one token when encoded on
        its own (a SentencePiece tokenizer that adds a word-start marker may make " Yes" two: the answer
        probe then stops the run); MonoscopeError otherwise. The prompt's shared opening is reused as in
        ``_prompt_pass``; when a kept cache already covers the first line, the whole reply runs afresh.
        """
        choice_ids = []
        for choice in choices:
            tokens = self.encode(choice)
            if len(tokens) != 1:
                raise MonoscopeError(f"slot_logprobs: the choice {choice!r} is {len(tokens)} tokens", "use choices of one token each")
            choice_ids.append(tokens[0])
        ids = self.prompt_ids(self.render(messages))
        after = self.encode(filler + "\n")
        slots = []
        for line in lines:
            ids += self.encode(line)
            slots.append(len(ids) - 1)
            ids += after
        if not slots:
            return []
        report_usage(Usage(prompt_tokens=len(ids), completion_tokens=0))  # the prompt and the forced reply
        with self._lock, torch.inference_mode():
            out = self._prompt_pass(ids)
            start = len(ids) - out.last_hidden_state.shape[1]  # positions before it came from a kept cache
            if slots[0] < start:
                out, start = self._forward(torch.tensor([ids], device=self.subject.device)), 0
            hidden = out.last_hidden_state[0, [slot - start for slot in slots]]
            logprobs = torch.cat(
                [torch.log_softmax(self._logits(hidden[i : i + self.logit_rows]), dim=-1) for i in range(0, len(slots), self.logit_rows)]
            )
            picked = logprobs[:, choice_ids].tolist()
        return [dict(zip(choices, row, strict=True)) for row in picked]

    def continuation_logprob(self, prompt: str, continuation: str) -> float:
        """Return log P(continuation | prompt) summed over the continuation's tokens."""
        return self.continuation_logprobs(prompt, [continuation])[0]

    def continuation_logprobs(self, prompt: str, continuations: list[str]) -> list[float]:
        """Return log P(c | prompt) for each continuation c, sharing one KV cache of the prompt."""
        ids = self.prompt_ids(prompt)
        continuation_ids = [self.continuation_ids(prompt, ids, c) for c in continuations]
        report_usage(Usage(prompt_tokens=len(ids) + sum(len(c) for c in continuation_ids), completion_tokens=0))
        return self._score(ids, continuation_ids)

    def prefix_scores(self, prefixes: list[str], continuation: str) -> list[float]:
        """Return log P(continuation | prefix) for each prefix (one forward pass per prefix)."""
        scores = []
        for prefix in prefixes:
            ids = self.prompt_ids(prefix)
            scores.append(self._score(ids, [self.continuation_ids(prefix, ids, continuation)])[0])
        return scores

    def _prompt_pass(self, prompt_ids: list[int]) -> Any:
        """Return the base model's output over ``prompt_ids`` (``last_hidden_state`` of the positions run, ``cache`` of all).

        Scoring prompts that share an opening (a judge's prompts for one explanation: its text and the
        rubric, then one context each) reuse it: the KV caches of the last ``_PROMPT_CACHES`` prompts
        are kept, the one sharing the longest prefix (at least ``_MIN_SHARED_PREFIX`` tokens) is cut to
        that prefix, and only the rest of the prompt is run. Positions and arithmetic are those of one
        pass over the whole prompt, cut into two chunks, so log-probabilities agree to float rounding.
        """
        best, shared = None, 0
        for kept_ids, kept_cache in self._prompt_caches:
            n = _common_prefix(kept_ids, prompt_ids, len(prompt_ids) - 1)
            if n > shared and (n == len(kept_ids) or all(_croppable(layer) for layer in getattr(kept_cache, "layers", [None]))):
                best, shared = (kept_ids, kept_cache), n
        cache = None
        if best is not None and shared >= _MIN_SHARED_PREFIX:
            cache = copy.deepcopy(best[1])
            if shared < len(best[0]):
                cache.crop(shared - len(best[0]))  # a negative count: the positions dropped from the end
        else:
            shared = 0
        out = self._forward(torch.tensor([prompt_ids[shared:]], device=self.subject.device), cache)
        if self.reuse:  # callers copy a cache before extending it, so the one kept stays that of this prompt
            self._prompt_caches = [*self._prompt_caches[-(_PROMPT_CACHES - 1) :], (list(prompt_ids), out.cache)]
        return out

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Return float32 logits for hidden states [rows, d] (LM head plus Gemma's soft-capping)."""
        logits = self._head(hidden).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    def _score(self, prompt_ids: list[int], continuations: list[list[int]]) -> list[float]:
        """Return the summed log-probability of each token list after ``prompt_ids`` (which start with BOS)."""
        device = self.subject.device
        if not any(continuations):
            return [0.0] * len(continuations)
        rows: list[torch.Tensor] = []  # hidden states that predict scored tokens
        targets: list[tuple[int, int, int]] = []  # (row, token, continuation)
        with self._lock, torch.inference_mode():
            if len(continuations) == 1 and len(continuations[0]) > 1:
                # One continuation of several tokens: a single pass over prompt + continuation[:-1], no cache.
                tokens = continuations[0]
                if tokens:
                    inputs = torch.tensor([prompt_ids + tokens[:-1]], device=device)
                    hidden = self._base(input_ids=inputs, use_cache=False).last_hidden_state[0]
                    rows.append(hidden[len(prompt_ids) - 1 :])
                    targets = [(k, token, 0) for k, token in enumerate(tokens)]
            elif continuations:
                longer = [i for i, tokens in enumerate(continuations) if len(tokens) > 1]
                out = self._prompt_pass(prompt_ids)
                rows.append(out.last_hidden_state[0, -1:])
                targets = [(0, tokens[0], i) for i, tokens in enumerate(continuations) if tokens]
                n_rows = 1
                for start in range(0, len(longer), self.batch_size):
                    chunk = longer[start : start + self.batch_size]
                    width = max(len(continuations[i]) - 1 for i in chunk)
                    # Right padding needs no mask: causal attention keeps real positions off the pads.
                    inputs = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
                    for b, i in enumerate(chunk):
                        fed = continuations[i][:-1]
                        inputs[b, : len(fed)] = torch.tensor(fed, device=device)
                    cache = copy.deepcopy(out.cache)
                    cache.batch_repeat_interleave(len(chunk))
                    hidden = self._forward(inputs, cache).last_hidden_state
                    for b, i in enumerate(chunk):
                        n = len(continuations[i]) - 1
                        rows.append(hidden[b, :n])
                        targets += [(n_rows + k, token, i) for k, token in enumerate(continuations[i][1:])]
                        n_rows += n
            totals = [0.0] * len(continuations)
            if not rows:
                return totals
            hidden = torch.cat(rows)
            token_ids = torch.tensor([t[1] for t in targets], device=device)
            row_ids = torch.tensor([t[0] for t in targets], device=device)
            picked = torch.empty(len(targets), device=device)
            for start in range(0, hidden.shape[0], self.logit_rows):
                logprobs = torch.log_softmax(self._logits(hidden[start : start + self.logit_rows]), dim=-1)
                here = (row_ids >= start) & (row_ids < start + self.logit_rows)
                picked[here] = logprobs[row_ids[here] - start, token_ids[here]].to(picked.dtype)
            for (_, _, owner), value in zip(targets, picked.tolist(), strict=True):
                totals[owner] += value
            return totals

    # ------------------------------------------------------------ generation
    def generate(self, messages: list[Message], **params: Any) -> Completion:
        """Return the model's continuation of the rendered messages (greedy unless temperature > 0).

        Params: ``max_new_tokens`` (alias ``max_tokens``, default 64), ``temperature``
        (default 0), ``stop`` (a string or list of strings; the text ends before the
        first one), ``seed`` (for sampling). Usage counts the prompt's tokens (BOS
        included) and every token generated (a final EOS included).
        """
        unknown = set(params) - _GENERATE_PARAMS
        if unknown:
            raise MonoscopeError(f"local backend: unknown generate parameter(s) {sorted(unknown)}", f"use {sorted(_GENERATE_PARAMS)}")
        max_new = int(params.get("max_new_tokens", params.get("max_tokens", 64)) or 64)
        stop = params.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        prompt_ids = self.prompt_ids(self.render(messages))
        generated = self.generate_ids(prompt_ids, max_new, float(params.get("temperature") or 0.0), stop, params.get("seed"))
        text = self._decode(generated)
        cut = [text.index(s) for s in stop if s in text]
        if cut:
            text = text[: min(cut)]
        return Completion(text=text, usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=len(generated)))

    def _decode(self, ids: list[int]) -> str:
        return self.subject.tokenizer.decode(ids, skip_special_tokens=True)

    def generate_ids(
        self, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0, stop: list[str] | None = None, seed: int | None = None
    ) -> list[int]:
        """Return the generated token ids after ``prompt_ids`` (stops at EOS, a stop string, or the limit)."""
        if temperature <= 0 and self.reuse and max_new_tokens > 0:
            return self._batcher.submit(GreedyRequest(tuple(prompt_ids), max_new_tokens, tuple(stop or [])))
        device = self.subject.device
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        generated: list[int] = []
        with self._lock, torch.inference_mode():
            inputs = torch.tensor([prompt_ids], device=device)
            cache = None
            for _ in range(max_new_tokens):
                out = self._forward(inputs, cache)
                cache = out.cache
                logits = self._logits(out.last_hidden_state[0, -1:])[0]
                if temperature > 0:
                    probs = torch.softmax(logits / temperature, dim=-1).cpu()
                    token = int(torch.multinomial(probs, 1, generator=generator))
                else:
                    token = int(torch.argmax(logits))
                generated.append(token)
                if self._finished(generated, stop):
                    break
                inputs = torch.tensor([[token]], device=device)
        return generated

    def _forward(self, input_ids: torch.Tensor, cache: Any = None) -> Any:
        """Run the base model on ``input_ids`` [B, n] after the positions in ``cache``; return its output, whose ``cache``
        then holds every position (transformers' current cache API: ``cache=`` in, ``.cache`` out).

        A new cache is created here, on the model's device, so that no part of it depends on the
        caller's default device.
        """
        if cache is None:
            with torch.device(self.subject.device):
                cache = DynamicCache(config=self._base.config)
        return self._base(input_ids=input_ids, cache=cache, use_cache=True)

    def _finished(self, generated: list[int], stop: list[str] | None) -> bool:
        """Return True when the last generated token is EOS or the decoded text contains a stop string."""
        return generated[-1] in self._eos or bool(stop and any(s in self._decode(generated) for s in stop))

    def _greedy_batch(self, requests: list[GreedyRequest]) -> list[list[int]]:
        """Return the greedy tokens after each request's prompt, all prompts in one forward pass.

        The prompts' common prefix (with one prompt: the prefix it shares with the previous
        prompt) is run once and its KV cache kept; each prompt's remainder plus its draft (the
        previous reply under the same limit and stop strings) is fed after it, right-padded,
        and the LM head runs only at the positions that predict the reply. The greedy token at
        each position is kept while the draft agrees with it, so every answer equals plain
        greedy decoding; a row whose draft fails goes on alone, one token per pass.
        """
        device = self.subject.device
        prompts = [list(request.prompt_ids) for request in requests]
        drafts = [self._drafts.get(request.key, [])[: min(request.max_new_tokens - 1, _MAX_DRAFT)] for request in requests]
        answers: list[list[int]] = []
        with self._lock, torch.inference_mode():
            prefix_cache, start = self._shared_prefix(prompts)
            fed = [prompt[start:] + draft for prompt, draft in zip(prompts, drafts, strict=True)]
            width = max(len(tokens) for tokens in fed)
            # Right padding needs no mask: causal attention keeps real positions off the pads.
            inputs = torch.zeros((len(fed), width), dtype=torch.long, device=device)
            for row, tokens in enumerate(fed):
                inputs[row, : len(tokens)] = torch.tensor(tokens, device=device)
            if prefix_cache is not None and len(fed) > 1:
                prefix_cache.batch_repeat_interleave(len(fed))
            out = self._forward(inputs, prefix_cache)
            first = [len(prompt) - start - 1 for prompt in prompts]  # the position that predicts each reply's first token
            hidden = torch.cat([out.last_hidden_state[row, first[row] : len(fed[row])] for row in range(len(fed))])
            proposals = torch.cat(
                [torch.argmax(self._logits(hidden[i : i + self.logit_rows]), dim=-1) for i in range(0, hidden.shape[0], self.logit_rows)]
            ).tolist()
            offset = 0
            for row, request in enumerate(requests):
                generated, done = [], False
                for index, token in enumerate(proposals[offset : offset + len(drafts[row]) + 1]):  # token after prompt + draft[:index]
                    generated.append(int(token))
                    done = self._finished(generated, list(request.stop)) or len(generated) == request.max_new_tokens
                    if done or (index < len(drafts[row]) and token != drafts[row][index]):
                        break
                offset += len(drafts[row]) + 1
                if not done:
                    kept = len(prompts[row]) - start + len(generated) - 1  # fed positions that stay in the row's cache
                    cache = self._row_cache(out.cache, row, len(fed), width - kept, prompts[row] + generated[:-1])
                    generated = self._decode_on(cache, generated, request)
                answers.append(generated)
                self._drafts.pop(request.key, None)
                self._drafts[request.key] = generated
            while len(self._drafts) > _MAX_DRAFT_KEYS:
                self._drafts.pop(next(iter(self._drafts)))
        return answers

    def _row_cache(self, cache: Any, row: int, rows: int, surplus: int, ids: list[int]) -> Any:
        """Return the KV cache of one row of a batch, without its last ``surplus`` positions (see ``_cropped``)."""
        if rows > 1:
            cache = copy.deepcopy(cache)
            cache.batch_select_indices(torch.tensor([row], device=self.subject.device))
        return self._cropped(cache, surplus, ids) if surplus > 0 else cache

    def _decode_on(self, cache: Any, generated: list[int], request: GreedyRequest) -> list[int]:
        """Return ``generated`` extended greedily, one token per pass, from the KV cache of everything before its last token."""
        device = self.subject.device
        while len(generated) < request.max_new_tokens:
            out = self._forward(torch.tensor([[generated[-1]]], device=device), cache)
            cache = out.cache
            generated.append(int(torch.argmax(self._logits(out.last_hidden_state[0, -1:])[0])))
            if self._finished(generated, list(request.stop)):
                break
        return generated

    def _shared_prefix(self, prompts: list[list[int]]) -> tuple[Any, int]:
        """Return (a copy of the KV cache of the first n tokens every prompt shares, n); (None, 0) when none is worth it.

        The prefix is the batch's common prefix, or for one prompt the prefix it shares with the
        previous prompt (at least ``_MIN_SHARED_PREFIX`` tokens, never a whole prompt); its cache
        is kept for the next call and extended from the kept one when that is a shorter prefix of it.
        """
        previous, self._previous_prompt = self._previous_prompt, list(prompts[-1])
        group = prompts if len(prompts) > 1 else [previous, prompts[0]]
        shared = 0
        for column in zip(*group, strict=False):
            if any(token != column[0] for token in column):
                break
            shared += 1
        shared = min(shared, min(len(prompt) for prompt in prompts) - 1)
        first = prompts[0]
        kept_ids, kept_cache = self._prefix if self._prefix is not None else ([], None)
        kept = kept_cache is not None and all(len(kept_ids) < len(p) and p[: len(kept_ids)] == kept_ids for p in prompts)
        if shared >= _MIN_SHARED_PREFIX and (not kept or shared > len(kept_ids)):
            base_cache, begin = (copy.deepcopy(kept_cache), len(kept_ids)) if kept else (None, 0)
            inputs = torch.tensor([first[begin:shared]], device=self.subject.device)
            cache = self._forward(inputs, base_cache).cache
            self._prefix = (list(first[:shared]), cache)
            return copy.deepcopy(cache), shared
        if kept:
            return copy.deepcopy(kept_cache), len(kept_ids)
        return None, 0

    def _cropped(self, cache: Any, surplus: int, ids: list[int]) -> Any:
        """Return ``cache`` without its last ``surplus`` positions, or a fresh cache of ``ids`` where it cannot be cut
        (a sliding-window layer that has dropped its oldest positions)."""
        layers = getattr(cache, "layers", None)
        if layers is not None and all(_croppable(layer) for layer in layers):
            cache.crop(-surplus)
            return cache
        return self._forward(torch.tensor([ids], device=self.subject.device)).cache


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """Return the length of the common prefix of ``a`` and ``b``, at most ``limit``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y or n >= limit:
            break
        n += 1
    return n


def _croppable(layer: Any) -> bool:
    """Return True when a cache layer still holds every position (it is no sliding-window layer past its window)."""
    if not getattr(layer, "is_sliding", False):
        return hasattr(layer, "crop")
    window = getattr(layer, "sliding_window", None)
    return window is not None and layer.get_seq_length() < window


_LOADED: "weakref.WeakValueDictionary[tuple[str, str, str], SubjectModel]" = weakref.WeakValueDictionary()
_LOADING = threading.Lock()


def recorded_name(model: str, chat: bool) -> str:
    """Return the model name a local backend's records and response-cache keys carry: "<model> [chat]" when it
    renders messages with the chat template (the rendering changes every answer), else ``model``."""
    return f"{model} [chat]" if chat else model


def planned_name(model: str, chat: bool | None) -> str | None:
    """Return ``recorded_name`` of a local backend for ``model`` without loading its weights (for a dry run's plan).

    ``chat`` None (when the tokenizer has a chat template) reads the tokenizer from files on this
    machine (``harness.subject.model.local_tokenizer``); None when they are not here.
    """
    if chat is None:
        tokenizer = local_tokenizer(model)
        if tokenizer is None:
            return None
        chat = bool(getattr(tokenizer, "chat_template", None))
    return recorded_name(model, chat)


def shared_model(model: str, device: str = "cpu", dtype: str = "float32") -> SubjectModel:
    """Return model ``model`` loaded on ``device`` in ``dtype``: the same object while any backend still holds it.

    The explainer, judge and simulator usually name one model; it is loaded once (a 1.5B model
    takes 6 GB in float32) and freed when the last backend using it is gone.
    """
    key = (model, device, dtype)
    with _LOADING:
        loaded = _LOADED.get(key)
        if loaded is None:
            loaded = load_subject_model(model, device=device, dtype=dtype)
            _LOADED[key] = loaded
        return loaded


@register_backend("local")
def make_local_backend(
    model: str = "embedded", subject: SubjectModel | None = None, device: str = "cpu", dtype: str = "float32", **options: Any
) -> LocalBackend:
    """Return a LocalBackend for ``model`` ("embedded" or a HF causal LM name/path).

    ``subject`` reuses an already loaded SubjectModel (the judge and the subject
    model are then one object in memory); otherwise the model is loaded once per
    (model, device, dtype) and shared by every backend that names it while any holds
    it (``shared_model``). Options: ``chat`` (render messages with the tokenizer's chat
    template; None, the default, = when the tokenizer has one), ``batch_size`` (continuations per forward pass),
    ``logit_rows`` (positions per LM-head product), ``reuse`` (greedy generation reuses a
    shared prompt prefix's KV cache and the previous reply as a draft; default on).
    """
    unknown = set(options) - _OPTIONS
    if unknown:
        raise MonoscopeError(f"local backend: unknown option(s) {sorted(unknown)}", f"use {sorted(_OPTIONS)}")
    if subject is None:
        subject = shared_model(model, device, dtype)
    elif model not in ("embedded", subject.name):
        raise MonoscopeError(f"model {model!r} does not match the given subject model {subject.name!r}", "drop one of them")
    return LocalBackend(subject, model=subject.name, **options)
