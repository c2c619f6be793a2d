"""Secrets: a recognisable fake API key must not appear in any file a run writes (cache included) nor in its logs.

The run talks to a loopback OpenAI-compatible server that, among normal replies,
echoes the key back in an unparseable reply and in a 401 body, the two ways a
key most easily leaks into records and error messages.
"""

import logging
import shutil
from pathlib import Path

import pytest

from harness.run.runner import run_evaluation
from tests.test_batch import tiny_config, tiny_subject  # noqa: F401 (tiny_subject is a fixture)
from tests.test_llm_clients import Plan, ScriptedServer

FAKE_KEY = "sk-monoscope-FAKE-KEY-0123456789abcdef"


@pytest.mark.usefixtures("tiny_subject")
def test_a_fake_key_appears_in_no_file_and_no_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = ScriptedServer("openai")
    server.default = Plan(text="2")
    server.plans.extend([Plan(text=f"Excerpt 9: my key is {FAKE_KEY}")] * 2)  # unparseable, re-asked once, recorded as raw
    try:
        openai_role = {"backend": "openai", "model": "test-model", "base_url": server.base_url}
        config = tiny_config(explainer=openai_role, judge=openai_role, llm={"max_concurrency": 1})
        logs: list[str] = []
        caplog.set_level(logging.DEBUG)
        run_evaluation(config, tmp_path / "run", log=logs.append)
        assert_key_in_no_file(tmp_path / "run", expect_cache=True)
        # a permanent failure whose body echoes the key: the error message must not carry it
        server.plans.extend([Plan(status=401, body='{"error": {"message": "bad key {key}"}}')] * 50)
        first_explanations = (tmp_path / "run" / "explanations.jsonl").read_text()
        (tmp_path / "run" / "explanations.jsonl").unlink()
        shutil.rmtree(tmp_path / "run" / "llm-cache")
        with pytest.raises(Exception) as failure:  # noqa: B017 - any error type, as long as it is scrubbed
            run_evaluation(config, tmp_path / "run", log=logs.append)
    finally:
        server.close()
    assert any(FAKE_KEY in str(request["headers"]) for request in server.requests), "the key was never sent: the test proves nothing"
    assert "unparseable" in first_explanations and "***" in first_explanations  # the echoed key was recorded, scrubbed
    assert_key_in_no_file(tmp_path / "run", expect_cache=False)
    captured = capsys.readouterr()
    for text in (*logs, captured.out, captured.err, caplog.text, str(failure.value), repr(failure.value)):
        assert FAKE_KEY not in text


def assert_key_in_no_file(run_dir: Path, expect_cache: bool) -> None:
    """Fail if any file under ``run_dir`` holds the fake key (and check the scan saw the files it should)."""
    written = [path for path in run_dir.rglob("*") if path.is_file()]
    assert len(written) > 20 and any("llm-cache" in str(path) for path in written) == expect_cache
    for path in written:
        assert FAKE_KEY.encode() not in path.read_bytes(), path
