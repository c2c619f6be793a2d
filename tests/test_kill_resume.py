"""Reliability: a run killed with SIGKILL at random points of the index, explain and score stages resumes exactly.

Each trial starts ``monoscope run``'s ``run_evaluation`` in a real process (forked by
tests/kill_worker.py, which imports torch once), waits until the chosen stage has written
some but not all of its output, sends SIGKILL at a seeded random moment, checks that the kill
landed mid-stage, then runs the same config again in the same directory. The resumed run must
end with the records of an uninterrupted run (sorted lines equal, every line parses, one record
per key), the same indexes, and it must not ask the LLM again for any reply stored in the
response cache before the kill. The LLM is a deterministic loopback OpenAI-compatible server
that logs a hash of every request it receives.
"""

import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from scorers.rubric import RATING_MAX_TOKENS
from tests.loopback import reply_body, start_server

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parent.parent
RECORD_FILES = (
    "units.jsonl",
    "contexts.jsonl",
    "explanations.jsonl",
    "judgments.jsonl",
    "simulations.jsonl",
    "correlations.jsonl",
    "neighbors.jsonl",
)
RECORD_KEYS = {
    "explanations.jsonl": ("unit", "explainer"),
    "judgments.jsonl": ("unit", "source", "context_id"),
    "simulations.jsonl": ("unit", "source", "context_id"),
}
INDEXES = ("neurons", "sae-16", "sae-32")
EXPLAIN_DELAY, SCORE_DELAY = 0.12, 0.002  # seconds the server waits before each reply
POLL = 0.003
ATTEMPTS = 3
EXPLANATION = "tokens of kind"


def request_hash(messages: list[tuple[str, str]], logprobs: bool) -> str:
    """Return the hash of one LLM request as the server logs it (messages and the kind of reply asked for)."""
    return hashlib.sha256(json.dumps([[role, content] for role, content in messages] + [logprobs]).encode()).hexdigest()


class LoopbackLLM:
    """A deterministic OpenAI-compatible chat server on 127.0.0.1; ``requests[tag]`` lists the request hashes per trial.

    The first path segment of the URL is the trial's tag (base_url ``http://127.0.0.1:PORT/TAG/v1``).
    Replies depend only on the request (see ``reply``).
    """

    def __init__(self) -> None:
        self.requests: dict[str, list[str]] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                tag = self.path.strip("/").split("/")[0]
                digest = request_hash([(m["role"], m["content"]) for m in body["messages"]], bool(body.get("logprobs")))
                with server.lock:
                    server.requests.setdefault(tag, []).append(digest)
                text = reply_text(body, digest)
                payload = json.dumps(reply_body("openai", text)).encode()
                time.sleep(EXPLAIN_DELAY if text.startswith(EXPLANATION) else SCORE_DELAY)
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client was killed

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd, self.thread = start_server(Handler)

    def base_url(self, tag: str) -> str:
        """Return the base URL a trial's roles use."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{tag}/v1"

    def log(self, tag: str) -> list[str]:
        """Return a copy of the request hashes of one trial so far."""
        with self.lock:
            return list(self.requests.get(tag, []))

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


def reply_text(body: dict[str, Any], digest: str) -> str:
    """Return the reply to a request, a function of the request only.

    Simulator prompts ("Answer with a JSON list of N integers") get N numbers, judge prompts
    (max_tokens ``RATING_MAX_TOKENS``) a rating digit, explainer prompts a one-line explanation.
    """
    simulation = re.search(r"JSON list of (\d+) integers", body["messages"][-1]["content"])
    if simulation:
        return json.dumps([int(digest[i : i + 2], 16) % 11 for i in range(0, 2 * int(simulation.group(1)), 2)])
    if body.get("max_tokens") == RATING_MAX_TOKENS:
        return str(int(digest[:8], 16) % 4)
    return f"{EXPLANATION} {digest[:6]}"


class Worker:
    """The fork server of tests/kill_worker.py: starts runs as processes and reaps them."""

    def __init__(self, directory: Path) -> None:
        env = os.environ | {
            "OPENAI_API_KEY": "dummy-key",
            "MONOSCOPE_PROGRESS": "0",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])),
        }
        self.stderr = (directory / "worker.err").open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(REPOSITORY / "tests" / "kill_worker.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=REPOSITORY,
            env=env,
        )
        assert self.ask(None) == {"ready": True}

    def ask(self, command: dict[str, Any] | None) -> dict[str, Any]:
        """Send one command (None: only read) and return the answer."""
        assert self.process.stdin is not None and self.process.stdout is not None
        if command is not None:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the worker died: {Path(self.stderr.name).read_text()[-2000:]}"
        return json.loads(line)

    def start(self, run_dir: Path, base_url: str) -> int:
        """Start a run (or a resume) of ``run_dir``; return its pid."""
        return self.ask({"op": "start", "run_dir": str(run_dir), "base_url": base_url, "log": str(run_dir.parent / f"{run_dir.name}.log")})[
            "pid"
        ]

    def wait(self, pid: int) -> dict[str, Any]:
        """Wait for a run to end; return its exit code and signal."""
        return self.ask({"op": "wait", "pid": pid})

    def run(self, run_dir: Path, base_url: str) -> None:
        """Run to the end, failing with the run's log if it fails."""
        status = self.wait(self.start(run_dir, base_url))
        assert status["exit"] == 0, (run_dir.parent / f"{run_dir.name}.log").read_text()[-4000:]

    def close(self) -> None:
        """Stop the fork server."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.stderr.close()


# --- progress of each stage, read from the run directory ---------------------------------------------


def indexed_chunks(path: Path) -> int:
    """Return how many chunks the index checkpoint at ``path`` covers (0 when there is none yet)."""
    from harness.index.store import read_header

    if not path.exists():
        return 0
    try:
        header = read_header(path)
    except Exception:  # noqa: BLE001 (a checkpoint being replaced: read again at the next poll)
        return 0
    return sum(end - begin for begin, end in header["chunk_ranges"])


def parsed_lines(path: Path) -> list[dict[str, Any]]:
    """Return the complete JSON lines of a record file (a line cut by a kill is left out)."""
    if not path.exists():
        return []
    result = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            result.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return result


def explained_units(run_dir: Path) -> int:
    """Return how many units have an LLM explanation on disk."""
    return len({r["unit"] for r in parsed_lines(run_dir / "explanations.jsonl") if r["explainer"] == "llm" and r["text"]})


def score_records(run_dir: Path) -> int:
    """Return how many distinct judgment and simulation records are on disk."""
    return sum(
        len({(r["unit"], r["source"], r["context_id"]) for r in parsed_lines(run_dir / name)})
        for name in ("judgments.jsonl", "simulations.jsonl")
    )


@dataclass
class Reference:
    """The uninterrupted run: its directory and the size of each stage's output."""

    run_dir: Path
    totals: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Trial:
    """One kill: the stage, the progress measure to wait for, and the extra delay before SIGKILL."""

    number: int
    stage: str  # "index:<name>", "explain" or "score"
    fraction: float  # wait until this fraction of the stage's output is on disk
    delay: float  # then wait this long (seconds) and kill


def progress_of(stage: str, run_dir: Path) -> int:
    """Return the amount of the stage's output on disk."""
    if stage.startswith("index:"):
        return indexed_chunks(run_dir / "index" / f"{stage.split(':', 1)[1]}.safetensors")
    return explained_units(run_dir) if stage == "explain" else score_records(run_dir)


def plan_trials(seed: int = 20240501) -> list[Trial]:
    """Return the seeded kill points: 4 in the index stage (activations and dictionary indexes), 3 in explain, 3 in score."""
    rng = random.Random(seed)
    stages = ["index:neurons", "index:neurons", "index:sae-16", "index:sae-32", "explain", "explain", "explain", "score", "score", "score"]
    return [
        Trial(number, stage, rng.uniform(0.05, 0.6), rng.uniform(0.0, 0.6 * EXPLAIN_DELAY if stage == "explain" else 0.015))
        for number, stage in enumerate(stages)
    ]


TRIALS = plan_trials()


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackLLM]:
    llm = LoopbackLLM()
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    process = Worker(tmp_path_factory.mktemp("worker"))
    yield process
    process.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, worker: Worker, server: LoopbackLLM) -> Reference:
    """Run the config once without interruption."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    worker.run(run_dir, server.base_url("reference"))
    n_chunks = json.loads((run_dir / "corpus.json").read_text())["n_chunks"]
    totals = {f"index:{name}": n_chunks for name in INDEXES}
    totals |= {"explain": explained_units(run_dir), "score": score_records(run_dir)}
    return Reference(run_dir, totals)


def cached_request_hashes(run_dir: Path) -> set[str]:
    """Return the server-side hashes of every request whose reply is in the run's LLM response cache.

    A cache entry is a file named by its key (the client's rule); a ``.tmp-*`` file is a reply a kill
    caught between writing and renaming, which the client never reads.
    """
    hashes = set()
    for path in (run_dir / "llm-cache").glob("*/*.json"):
        if path.name.startswith(".tmp-"):
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        assert record["key"] == path.stem, path
        messages = [(role, content) for role, content in record["request"]["messages"]]
        hashes.add(request_hash(messages, record["kind"] == "choice_logprobs"))
    return hashes


def assert_same_indexes(run_dir: Path, expected_dir: Path) -> None:
    """Check that every index equals the reference's, tensor for tensor."""
    from safetensors.torch import load_file

    from harness.index.store import read_header

    for name in INDEXES:
        path, expected = run_dir / "index" / f"{name}.safetensors", expected_dir / "index" / f"{name}.safetensors"
        assert read_header(path)["n_tokens"] == read_header(expected)["n_tokens"], name
        got, want = load_file(str(path)), load_file(str(expected))
        assert got.keys() == want.keys(), name
        for key in want:
            assert got[key].equal(want[key]), f"{name}: {key}"


def kill_when(pid: int, ready: Callable[[], bool], delay: float, timeout: float = 180.0) -> None:
    """SIGKILL ``pid`` ``delay`` seconds after ``ready()`` first holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "the stage never started"
        time.sleep(POLL)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Kill:
    """What one kill left: the stage's output on disk and the replies cached by then."""

    done: int
    total: int
    cached: frozenset[str]


def start_and_kill(
    worker: Worker, server: LoopbackLLM, run_dir: Path, tag: str, trial: Trial, total: int, may_miss: bool = False
) -> Kill | None:
    """Start (or resume) the run, SIGKILL it at the trial's point, and check that the kill landed mid-stage.

    With ``may_miss``, a kill that came after the stage had finished (a starved poller) returns None instead of failing.
    """
    wanted = max(1, math.ceil(trial.fraction * total))
    pid = worker.start(run_dir, server.base_url(tag))
    try:
        kill_when(pid, lambda: progress_of(trial.stage, run_dir) >= wanted, trial.delay)
    except BaseException:
        os.kill(pid, signal.SIGKILL)  # never leave a run behind
        raise
    finally:
        status = worker.wait(pid)
    done = progress_of(trial.stage, run_dir)
    if may_miss and (status["signal"] != signal.SIGKILL or done >= total):
        return None
    assert status["signal"] == signal.SIGKILL, f"the run ended before the kill: {status}"
    assert 0 < done < total, f"the kill landed mid-stage: {done} of {total} ({trial})"
    for name in RECORD_FILES:  # what the kill left: complete lines, except at most a cut last line
        lines = (run_dir / name).read_text(encoding="utf-8").splitlines() if (run_dir / name).exists() else []
        for line in lines[:-1]:
            json.loads(line)
    return Kill(done, total, frozenset(cached_request_hashes(run_dir)))


def repaid_after(kill: Kill, server: LoopbackLLM, resume_tag: str) -> set[str]:
    """Return the requests cached before ``kill`` that the resumed run asked again.

    Each start of a run has a tag of its own because a request the killed run sent just before
    the kill can reach the server's log after it: that one was the killed run's, not a re-payment.
    """
    return kill.cached & set(server.log(resume_tag))


def assert_same_as_reference(run_dir: Path, reference: Reference) -> None:
    """Check every record file (lines parse, keys unique, sorted lines equal the reference's) and every index."""
    for name in RECORD_FILES:
        lines = (run_dir / name).read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]  # every line parses: nothing truncated
        if name in RECORD_KEYS:
            keys = [tuple(r[k] for k in RECORD_KEYS[name]) for r in records]
            assert len(keys) == len(set(keys)), f"{name}: duplicated keys"
        assert sorted(lines) == sorted((reference.run_dir / name).read_text(encoding="utf-8").splitlines()), name
    assert_same_indexes(run_dir, reference.run_dir)


def copy_foundation(reference: Reference, run_dir: Path) -> None:
    """Start ``run_dir`` from the reference's finished foundation (corpus, activations, dictionaries, indexes), no records."""
    shutil.copytree(reference.run_dir, run_dir, ignore=shutil.ignore_patterns("*.jsonl", "llm-cache", "results", ".*.lock"))


@pytest.mark.parametrize("trial", TRIALS, ids=[f"{t.number}-{t.stage}" for t in TRIALS])
def test_killed_run_resumes_to_the_uninterrupted_records(
    trial: Trial, tmp_path: Path, worker: Worker, server: LoopbackLLM, reference: Reference
) -> None:
    for attempt in range(ATTEMPTS):  # a kill that missed the stage (the machine too busy to poll) is tried again, earlier
        run_dir, tag = tmp_path / f"run{attempt}", f"trial{trial.number}.{attempt}"
        if not trial.stage.startswith("index:"):  # only the LLM stages run before the kill
            copy_foundation(reference, run_dir)
        attempted = trial if attempt == 0 else replace(trial, fraction=trial.fraction / 2**attempt, delay=0.0)
        kill = start_and_kill(worker, server, run_dir, tag, attempted, reference.totals[trial.stage], may_miss=attempt < ATTEMPTS - 1)
        if kill is not None:
            break
    assert kill is not None
    assert kill.cached <= set(server.log(tag)), "every cached reply was asked of the server (the hashes agree)"
    assert kill.cached or trial.stage.startswith("index:"), "a kill in an LLM stage leaves cached replies to check"
    resume_tag = f"{tag}.resume"  # the response cache key ignores the URL: the resume finds the killed run's replies
    worker.run(run_dir, server.base_url(resume_tag))
    repaid = repaid_after(kill, server, resume_tag)
    assert not repaid, f"{len(repaid)} requests answered and cached before the kill were paid again"
    assert_same_as_reference(run_dir, reference)
    asked_after = server.log(resume_tag)
    again = (set(server.log(tag)) - kill.cached) & set(asked_after)  # in flight at the kill, never stored
    print(
        f"trial {trial.number} {trial.stage}: killed at {kill.done}/{kill.total}; {len(kill.cached)} cached replies,"
        f" {len(asked_after)} asked after, re-paid {len(repaid)}, in flight asked again {len(again)}"
    )


def test_run_killed_in_every_stage_in_turn_resumes(tmp_path: Path, worker: Worker, server: LoopbackLLM, reference: Reference) -> None:
    """One run directory killed three times (index, then explain, then score) ends like the uninterrupted run."""
    run_dir, tag = tmp_path / "run", "chain"
    rng = random.Random(7)
    kills = []
    for number, stage in enumerate(("index:sae-32", "explain", "score")):  # each start has a tag of its own (see repaid_after)
        trial = Trial(-1, stage, rng.uniform(0.05, 0.6), rng.uniform(0.0, 0.015))
        kills.append(start_and_kill(worker, server, run_dir, f"{tag}.{number}", trial, reference.totals[stage]))
    worker.run(run_dir, server.base_url(f"{tag}.{len(kills)}"))
    for number, kill in enumerate(kills):
        asked_later = set().union(*(server.log(f"{tag}.{later}") for later in range(number + 1, len(kills) + 1)))
        repaid = kill.cached & asked_later
        assert not repaid, f"kill {number}: {len(repaid)} requests answered and cached before it were paid again"
    assert_same_as_reference(run_dir, reference)
    print(f"chain: killed at {[(k.done, k.total) for k in kills]}; {sum(len(server.log(f'{tag}.{n}')) for n in range(4))} requests in all")
