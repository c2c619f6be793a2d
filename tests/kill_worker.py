"""Fork server for tests/test_kill_resume.py: runs whole evaluations in processes the test can SIGKILL.

Importing torch, transformers and the harness takes several seconds, so this
process imports them once and forks one child per run. It reads JSON commands,
one per line, on stdin and answers one JSON line per command on stdout:

- ``{"op": "start", "run_dir": DIR, "base_url": URL, "log": FILE}`` forks a child that runs
  ``harness.run.runner.run_evaluation`` on the tiny config below (every LLM role on the "openai"
  backend at ``URL``) and answers ``{"pid": PID}``; the child's output goes to ``FILE``;
- ``{"op": "wait", "pid": PID}`` reaps that child and answers ``{"pid": PID, "exit": CODE, "signal": SIG}``.

The subject model is the tiny random Gemma with a byte tokenizer of tests/test_batch.py, built in
each child from the same seed, so every run of the same config computes the same records.
Each index batch is slowed by ``$KILL_WORKER_INDEX_STEP_SECONDS`` (default 0.015 s) so that the
index stage lasts long enough to be interrupted; the tables, plots and report of the results
stage are skipped (the records are still compacted) unless ``KILL_WORKER_RESULTS=1``.
"""

import json
import os
import sys
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the repository root

from harness.config import RunConfig, config_from_mapping
from tests.tiny_models import tiny_byte_gemma


def kill_config(base_url: str) -> RunConfig:
    """Return the run's config: small, but with stages long enough to be interrupted (every index batch checkpointed)."""
    role = {"backend": "openai", "model": "loopback-model", "base_url": base_url}
    data = {
        "name": "kill",
        "seed": 5,
        "model": {"name": "tiny-byte-gemma", "layer": 2, "batch_size": 8},
        "corpus": {"tokens": 6144, "context_length": 32},
        "dictionaries": {"train": [16, 32], "training_batch_size": 256},
        "index": {"top_k": 4, "interval_samples": 1, "random_nonzero": 2, "random_zero": 2, "window_before": 5, "window_after": 2},
        "neurons": {"pool_size": 24},
        "evaluation": {
            "units_per_dictionary": 3,
            "simulation_contexts": 1,
            "judge_format": "rating",
            "simulator_format": "structured",
            "explainer_chat": True,
            "sampling": {
                "explain_top": 4,
                "explain_per_level": 1,
                "score_top": 2,
                "score_per_level": 1,
                "score_random": 1,
                "score_zero": 1,
            },
        },
        "correlation": {"features": 4, "tokens": 1024},
        "explainer": role,
        "judge": role,
        "simulator": role,
        "llm": {"max_concurrency": 2},
    }
    config = config_from_mapping(data)
    return replace(config, foundation=replace(config.foundation, checkpoint_seconds=0.0))


def tiny_subject() -> Any:
    """Return the tiny random Gemma of tests/test_batch.py (same seed, same weights in every process)."""
    return tiny_byte_gemma()


def slow_index_steps(seconds: float) -> None:
    """Make every index batch take ``seconds`` longer (a slow disk or a big model), so that a kill can land between its checkpoints."""
    import time

    from harness.index.builder import IndexBuilder

    add, add_units = IndexBuilder.add, IndexBuilder.add_units

    def slow_add(self: IndexBuilder, *args: Any) -> None:
        time.sleep(seconds)
        add(self, *args)

    def slow_add_units(self: IndexBuilder, *args: Any) -> None:
        time.sleep(seconds)
        add_units(self, *args)

    IndexBuilder.add, IndexBuilder.add_units = slow_add, slow_add_units  # type: ignore[method-assign]


def run_child(run_dir: Path, base_url: str) -> None:
    """Run (or resume) the evaluation in ``run_dir`` with the model loaders patched to the tiny model."""
    import harness.run.foundation
    import harness.run.reporting
    import harness.run.runner
    import results.build
    import results.report
    import results.saebench

    subject = tiny_subject()
    harness.run.foundation.load_subject_model = lambda *args, **kwargs: subject
    harness.run.runner.model_shape = lambda name: (4, 32, 64)
    slow_index_steps(float(os.environ.get("KILL_WORKER_INDEX_STEP_SECONDS", "0.015")))
    if os.environ.get("KILL_WORKER_RESULTS") != "1":  # tables, plots and report are not under test here: skip their seconds
        results.build.write_results = lambda run_dir: {}
        results.report.write_report = lambda run_dir: run_dir / "results" / "report.html"
        results.saebench.write_saebench_summary = lambda run_dir: run_dir / "results" / "saebench.json"
        harness.run.reporting.log_results = lambda run_dir, log: None
    harness.run.runner.run_evaluation(kill_config(base_url), run_dir, log=lambda _message: None)


def start(command: dict[str, Any]) -> dict[str, Any]:
    """Fork a child running one evaluation; return its pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            log = os.open(command["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            sys.stdin.close()
            run_child(Path(command["run_dir"]), command["base_url"])
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return {"pid": pid}


def wait(command: dict[str, Any]) -> dict[str, Any]:
    """Reap a child; return its exit code or the signal that ended it."""
    pid, status = os.waitpid(int(command["pid"]), 0)
    return {
        "pid": pid,
        "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
    }


def main() -> None:
    """Serve commands until stdin closes."""
    os.environ["MONOSCOPE_PROGRESS"] = "0"
    import transformers  # noqa: F401

    import harness.llm.backends.openai  # noqa: F401 (imported before forking, like everything the children use)
    import harness.run.runner  # noqa: F401
    import results.build  # noqa: F401
    import results.report  # noqa: F401
    import results.saebench  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        answer = start(command) if command["op"] == "start" else wait(command)
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
