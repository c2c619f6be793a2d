"""Whole runs against a loopback LLM server that injects faults (tests/fault_server.py).

The runs are those of tests/test_batch.py (tiny random Gemma, byte tokenizer), with every role on the
"openai" backend pointed at the fault server through the real openai SDK. The server's answers depend on
the prompt only, so a run that survives the faults must write the same records as a fault-free run.
"""

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import harness.run.runner
from harness.config import Role
from harness.errors import MonoscopeError
from harness.llm.budget import Budget
from harness.llm.client import LLMClient, make_backend
from harness.records import Explanation, Judgment, Simulation
from harness.run.evaluate import EXPLANATIONS, JUDGMENTS, SIMULATIONS, UnitsFailed
from harness.run.runner import run_evaluation
from results.store import read_records
from tests.fault_server import GARBAGE, TRANSIENT_KINDS, FaultServer
from tests.test_batch import TINY_CONFIG, record_lines, tiny_config, tiny_subject  # noqa: F401 (tiny_subject is a fixture)

CLIENT_TIMEOUT = 1.0  # seconds; a stalled reply is held for 3 s, so it always times out
RETRY_ATTEMPTS = 6
RATES = {"429": 0.05, "429_retry_after": 0.05, "500": 0.05, "503": 0.05, "stall": 0.02, "cutoff": 0.05, "garbage": 0.05}
RECORD_FILES = (EXPLANATIONS, JUDGMENTS, SIMULATIONS)


def quiet(_message: str) -> None:
    """Discard progress messages."""


@pytest.fixture
def fault_server(monkeypatch: pytest.MonkeyPatch, tiny_subject: object) -> Iterator[FaultServer]:  # noqa: F811
    """Start a healthy fault server; point the batch runner's clients at it with a short timeout and short retry waits."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fault-test-dummy")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    def make_client(
        role: Role,
        run_dir: Path,
        shared_subject: Any = None,
        max_concurrency: int = 4,
        prices: dict[str, tuple[float, float]] | None = None,
        budget: Budget | None = None,
    ) -> LLMClient:
        backend = make_backend(role.backend, role.model, base_url=role.base_url, timeout=CLIENT_TIMEOUT)
        return LLMClient(
            backend,
            cache_dir=run_dir / "llm-cache",
            max_concurrency=max_concurrency,
            retry_attempts=RETRY_ATTEMPTS,
            retry_initial_wait=0.005,
            retry_max_wait=0.05,
            prices=prices,
            budget=budget,
        )

    monkeypatch.setattr(harness.run.runner, "make_client", make_client)
    with FaultServer(seed=7, stall_seconds=3.0, retry_after="0") as server:
        yield server


def fault_config(server: FaultServer) -> Any:
    """Return the tiny run's config with every role on the "openai" backend at the fault server."""
    role = {"backend": "openai", "model": "fault-model", "base_url": server.base_url("openai")}
    return tiny_config(explainer=role, judge=role, simulator=role, llm={"max_concurrency": 4})


def fresh_copy(source: Path, target: Path) -> Path:
    """Copy a finished run's foundation (corpus, dictionaries, index, units) without its LLM records and cache."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*RECORD_FILES, "llm-cache", "results"))
    return target


def usage_by_stage(run_dir: Path) -> dict[str, Counter[str]]:
    """Return {stage: summed counters} from the manifest's usage of every client."""
    usage = json.loads((run_dir / "manifest.json").read_text())["usage"]
    totals: dict[str, Counter[str]] = {}
    for client in usage.values():
        for stage, counts in client.items():
            totals.setdefault(stage, Counter()).update({k: v for k, v in counts.items() if isinstance(v, int)})
    return totals


@pytest.mark.slow
def test_run_survives_transient_faults_with_identical_records(tmp_path: Path, fault_server: FaultServer) -> None:
    config = fault_config(fault_server)
    reference = tmp_path / "reference"
    run_evaluation(config, reference, log=quiet)
    assert fault_server.injected_by_kind() == {}
    reference_requests = sum(fault_server.requests.values())

    faulty = fresh_copy(reference, tmp_path / "faulty")
    fault_server.reset_counts()
    fault_server.rates = dict(RATES)
    summary = run_evaluation(config, faulty, log=quiet)

    injected = fault_server.injected_by_kind()
    print(f"\ninjected faults by kind: {injected} over {sum(fault_server.requests.values())} requests ({reference_requests} fault-free)")
    assert set(injected) == set(RATES), "every kind of fault was injected at least once"
    assert sum(injected.values()) >= 0.2 * sum(fault_server.requests.values())
    assert summary["failures"] == []
    # every unit explained and scored, and exactly as in the fault-free run
    for name in RECORD_FILES:
        assert record_lines(faulty, name) == record_lines(reference, name), name
    assert all(r.text is not None and r.failure is None for r in read_records(faulty / EXPLANATIONS, Explanation))
    assert all(r.score is not None and r.failure is None for r in read_records(faulty / JUDGMENTS, Judgment))
    assert all(r.predicted is not None and r.failure is None for r in read_records(faulty / SIMULATIONS, Simulation))
    # the client counted one retry per injected transient fault, stage by stage, and one call per request
    usage = usage_by_stage(faulty)
    print(f"retries by stage: { {stage: counts['retries'] for stage, counts in usage.items()} }")
    transient = fault_server.transient_by_stage()
    assert {stage: counts["retries"] for stage, counts in usage.items() if counts["retries"]} == transient
    assert {stage: counts["calls"] for stage, counts in usage.items()} == dict(fault_server.requests)
    assert sum(transient.values()) == sum(injected[kind] for kind in TRANSIENT_KINDS)
    # garbage replies were asked again and never cached: the cache holds what the fault-free run's holds
    cached = {path.relative_to(faulty): path.read_text() for path in (faulty / "llm-cache").rglob("*.json")}
    assert not [path for path, text in cached.items() if GARBAGE in text]
    assert cached == {path.relative_to(reference): path.read_text() for path in (reference / "llm-cache").rglob("*.json")}


@pytest.mark.slow
def test_permanent_failures_are_recorded_and_a_rerun_redoes_only_them(tmp_path: Path, fault_server: FaultServer) -> None:
    config = fault_config(fault_server)
    # the first explain request fails with 401, the first judge request with 400, the first simulate request
    # with 503 every time (the client's retries run out); the server also injects transient faults
    fault_server.permanent = {"explain": 401, "judge": 400, "simulate": 503}
    fault_server.rates = {"429": 0.05, "500": 0.05}
    with pytest.raises(UnitsFailed) as caught:
        run_evaluation(config, tmp_path, log=quiet)
    assert isinstance(caught.value, MonoscopeError)  # the CLI exits with code 2
    failures = caught.value.failures
    print(f"\nfailed units: {failures}; injected: {fault_server.injected_by_kind()}")
    assert 1 <= len(failures) <= 3 and all(unit in str(caught.value) for unit in failures)
    reasons = " ".join(failures.values())
    assert "HTTP 401" in reasons or "HTTP 400" in reasons

    explanations = read_records(tmp_path / EXPLANATIONS, Explanation)
    judgments = read_records(tmp_path / JUDGMENTS, Judgment)
    simulations = read_records(tmp_path / SIMULATIONS, Simulation)
    failed_explanations = [r for r in explanations if r.failure is not None]
    failed_judgments = [r for r in judgments if r.failure is not None]
    failed_simulations = [r for r in simulations if r.failure is not None]
    assert [(r.text, "HTTP 401" in r.failure) for r in failed_explanations] == [(None, True)]
    assert [(r.score, "HTTP 400" in r.failure) for r in failed_judgments] == [(None, True)]
    assert [(r.predicted, f"gave up after {RETRY_ATTEMPTS} attempts" in r.failure) for r in failed_simulations] == [(None, True)]
    assert {r.unit for r in failed_explanations + failed_judgments + failed_simulations} == set(failures)
    # failures are never scores: everything else was scored, and the results were written
    assert all(r.score is not None for r in judgments if r.failure is None)
    assert all(r.predicted is not None for r in simulations if r.failure is None)
    assert (tmp_path / "results" / "report.html").exists()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {f["unit"] for f in manifest["failures"]} == set(failures) == {f["unit"] for f in manifest["summary"]["failures"]}

    # the server is healthy now: a rerun asks only what failed, nothing that was answered before
    permanent_digests = set(fault_server._permanent_digests.values())
    answered_before = set(fault_server.answered_digests)
    requests_before = sum(fault_server.requests.values())
    fault_server.heal()
    fault_server.reset_counts()
    summary = run_evaluation(config, tmp_path, log=quiet)
    print(f"rerun requests: {dict(fault_server.requests)} (first run: {requests_before})")
    assert summary["failures"] == [] and json.loads((tmp_path / "manifest.json").read_text())["failures"] == []
    asked = set(fault_server.request_digests)
    assert permanent_digests <= asked and not asked & answered_before
    assert fault_server.requests["explain"] == 1
    assert sum(fault_server.requests.values()) < 0.25 * requests_before
    assert sum(counts["calls"] for counts in usage_by_stage(tmp_path).values()) == sum(fault_server.requests.values())
    assert not [r for r in read_records(tmp_path / EXPLANATIONS, Explanation) if r.failure is not None]
    assert all(r.score is not None for r in read_records(tmp_path / JUDGMENTS, Judgment))
    assert all(r.predicted is not None for r in read_records(tmp_path / SIMULATIONS, Simulation))
    fault_server.reset_counts()
    run_evaluation(config, tmp_path, log=quiet)
    assert sum(fault_server.requests.values()) == 0


def test_a_simulator_backend_without_the_format_s_capability_stops_before_explaining(tmp_path: Path, fault_server: FaultServer) -> None:
    # yes_no_all reads slot_logprobs, which a hosted (OpenAI-compatible) backend does not serve: the run stops with
    # the missing capability named, before the explainer has been asked anything.
    role = {"backend": "openai", "model": "fault-model", "base_url": fault_server.base_url("openai")}
    evaluation = dict(TINY_CONFIG["evaluation"]) | {"simulator_format": "yes_no_all"}
    config = tiny_config(explainer=role, judge=role, simulator=role, evaluation=evaluation)
    with pytest.raises(MonoscopeError, match="slot_logprobs"):
        run_evaluation(config, tmp_path, log=quiet)
    assert not fault_server.requests["explain"], "no explainer request before the check"
