"""A deterministic fake LLM backend for the Ray kill tests: tests/test_batch.py's replies, a sleep before each call,
and one line per call appended to a log file, so calls can be counted across the driver and its Ray workers.

Importing the module registers it as "fake-slow". ``$MONOSCOPE_TEST_SLOW_SECONDS`` (default 0) is the sleep,
``$MONOSCOPE_TEST_CALL_LOG`` the log file (none when unset); both are read at each call, in the process making it.
"""

import os
import time
from typing import Any

from harness.llm.client import register_backend
from harness.llm.interface import Completion, Message
from tests.test_batch import FakeBackend, _digest


class SlowBackend(FakeBackend):
    name = "fake-slow"

    def generate(self, messages: list[Message], **params: Any) -> Completion:
        _before(messages)
        return super().generate(messages, **params)

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        _before(messages)
        return super().choice_logprobs(messages, choices)


def _before(messages: list[Message]) -> None:
    time.sleep(float(os.environ.get("MONOSCOPE_TEST_SLOW_SECONDS", "0")))
    log = os.environ.get("MONOSCOPE_TEST_CALL_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(_digest(messages) + "\n")


def register() -> None:
    """Register the backend (run first in each Ray StageWorker); importing this module already does it."""
    register_backend("fake-slow")(lambda model="fake-model", **_options: SlowBackend())


register()
