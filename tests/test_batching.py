"""RequestBatcher: requests from several threads run in batches, each caller gets its own answer or its batch's error."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.llm.batching import RequestBatcher


def test_every_caller_gets_its_own_answer_in_batches_of_at_most_the_limit():
    seen: list[list[int]] = []
    entered = threading.Event()

    def run(requests: list[int]) -> list[int]:
        seen.append(list(requests))
        entered.wait(5)  # the first batch holds until the others have queued
        return [r * r for r in requests]

    batcher = RequestBatcher(run, max_batch=3)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(batcher.submit, n) for n in range(20)]
        deadline = time.monotonic() + 10
        while len(batcher._queue) < 4 and time.monotonic() < deadline:  # let the other threads queue behind the first batch
            time.sleep(0.01)
        entered.set()
        answers = [future.result(timeout=30) for future in futures]
    assert answers == [n * n for n in range(20)]
    assert sorted(r for batch in seen for r in batch) == list(range(20)), "each request ran exactly once"
    assert max(len(batch) for batch in seen) <= 3 and max(len(batch) for batch in seen) > 1
    assert sum(size * count for size, count in batcher.batch_sizes.items()) == 20


def test_a_lone_caller_runs_batches_of_one():
    batcher = RequestBatcher(lambda requests: [str(r) for r in requests], max_batch=8)
    assert [batcher.submit(n) for n in range(5)] == ["0", "1", "2", "3", "4"]
    assert batcher.batch_sizes == {1: 5}


def test_a_failed_batch_raises_in_each_of_its_callers_and_the_next_batch_runs():
    def run(requests: list[int]) -> list[int]:
        if 13 in requests:
            raise ValueError("unlucky batch")
        return list(requests)

    batcher = RequestBatcher(run, max_batch=4)
    with pytest.raises(ValueError, match="unlucky"):
        batcher.submit(13)
    assert batcher.submit(7) == 7
    short = RequestBatcher(lambda requests: requests[:-1], max_batch=4)
    with pytest.raises(RuntimeError, match="a batch of 1 requests got 0 answers"):
        short.submit(1)
