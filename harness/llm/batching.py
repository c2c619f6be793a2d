"""Micro-batching: requests that several threads make at about the same time run as one batch.

An in-process model answers a batch of prompts in one forward pass for little more
than the cost of one (on Gemma 3 270M the 262k-row LM head is read from memory once per
pass, whatever the number of rows). The LLM client already asks up to
``max_concurrency`` requests at once from its threads; ``RequestBatcher`` gathers them.

One waiting thread at a time leads: it takes the queued requests (up to ``max_batch``),
runs them, hands every caller its answer, and the next waiting thread leads the next
batch. Before running, a leader waits up to ``gather_seconds`` for the queue to reach the
size of the previous batch, because callers whose answers just came back are about to
ask again; a lone caller (previous batch of one) never waits.
"""

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Generic, TypeVar

Q = TypeVar("Q")
A = TypeVar("A")


class _Ticket(Generic[Q, A]):
    """One request waiting for its answer."""

    def __init__(self, request: Q) -> None:
        self.request = request
        self.answer: A | None = None
        self.error: BaseException | None = None
        self.done = False


class RequestBatcher(Generic[Q, A]):
    """Runs ``run_batch(requests) -> answers`` (same order) over requests submitted together from several threads."""

    def __init__(self, run_batch: Callable[[list[Q]], list[A]], max_batch: int, gather_seconds: float = 0.01) -> None:
        self.run_batch = run_batch
        self.max_batch = max(1, int(max_batch))
        self.gather_seconds = gather_seconds
        self.batch_sizes: Counter[int] = Counter()  # how many batches of each size ran
        self._queue: list[_Ticket[Q, A]] = []
        self._leading = False
        self._last_size = 1
        self._changed = threading.Condition()

    def submit(self, request: Q) -> A:
        """Return the answer to ``request``, computed in a batch with the requests queued beside it (its error is raised)."""
        ticket: _Ticket[Q, A] = _Ticket(request)
        with self._changed:
            self._queue.append(ticket)
            self._changed.notify_all()
            while not ticket.done:
                if self._leading:
                    self._changed.wait()
                    continue
                self._leading = True
                batch = self._gather()
                self._changed.release()
                try:
                    self._run(batch)
                finally:
                    self._changed.acquire()
                    self._leading = False
                    self._changed.notify_all()
        if ticket.error is not None:
            raise ticket.error
        return ticket.answer  # type: ignore[return-value]

    def _gather(self) -> list[_Ticket[Q, A]]:
        """Return the next batch, taken off the queue (called by the leader, holding the lock)."""
        wanted = min(self.max_batch, self._last_size)
        deadline = time.monotonic() + self.gather_seconds
        while len(self._queue) < wanted and (left := deadline - time.monotonic()) > 0:
            self._changed.wait(left)
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        self._last_size = len(batch)
        self.batch_sizes[len(batch)] += 1
        return batch

    def _run(self, batch: list[_Ticket[Q, A]]) -> None:
        """Answer every ticket of ``batch`` (or give each the batch's error)."""
        try:
            answers = self.run_batch([ticket.request for ticket in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} requests got {len(answers)} answers")
            for ticket, answer in zip(batch, answers, strict=True):
                ticket.answer = answer
        except BaseException as error:  # every caller of the batch sees its error
            for ticket in batch:
                ticket.error = error
        for ticket in batch:
            ticket.done = True
