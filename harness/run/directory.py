"""Run directories: layout, manifest and per-stage timings.

Layout of a run directory::

    manifest.json             config, seed, versions, git commit, timings per stage
    corpus.npy / corpus.json  token chunks [n_chunks, context_length] and their description
    activations/              hook activations kept for training (float32 memmaps)
    dictionaries/<name>/      SAELens-format dictionaries with monoscope_stats.json
    index/<name>.safetensors  one activation index per dictionary (format: harness.index.store)
"""

import fcntl
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import __version__
from harness.errors import MonoscopeError
from harness.storage import atomic_write_json, read_json

MANIFEST = "manifest.json"


def prepare_run_directory(path: Path) -> Path:
    """Return ``path`` after making sure it exists and is writable (checked before any work)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MonoscopeError(f"cannot create run directory {str(path)!r} ({exc.strerror})", "choose a writable --run-dir") from exc
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):  # a name of its own: concurrent processes probe at once
            pass
    except OSError as exc:
        raise MonoscopeError(f"run directory {str(path)!r} is not writable ({exc.strerror})", "choose a writable --run-dir") from exc
    return path


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """Return the run's manifest, or an empty one for a new run."""
    path = run_dir / MANIFEST
    if not path.exists():
        return {}
    try:
        return read_json(path)
    except ValueError as exc:
        raise MonoscopeError(f"{str(path)!r} is corrupt ({exc})", "restore it or start a new run directory") from exc


def update_manifest(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the manifest (dictionaries merge one level deep) and return it.

    Read-modify-write under a file lock, so concurrent processes of one run never lose each other's updates.
    """

    def merge(manifest: dict[str, Any]) -> None:
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(manifest.get(key), dict):
                manifest[key] = {**manifest[key], **value}
            else:
                manifest[key] = value

    return _modify_manifest(run_dir, merge)


def record_usage(run_dir: Path, usage: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Record {client: {stage: counts}} of this invocation as the manifest's ``usage`` (replacing those clients' entries)
    and add its numbers to ``usage_total``, the run's usage over every invocation (a rerun that asks nothing adds 0)."""

    def merge(manifest: dict[str, Any]) -> None:
        manifest["usage"] = {**manifest.get("usage", {}), **usage}
        manifest["usage_total"] = sum_usage([manifest.get("usage_total", {}), usage])

    return _modify_manifest(run_dir, merge)


def sum_usage(usages: list[dict[str, dict[str, dict[str, Any]]]]) -> dict[str, Any]:
    """Return the sum of {client: {stage: counts}} usages: numbers added (costs rounded to 1e-6), a client without calls kept as {}."""
    total: dict[str, Any] = {client: {} for usage in usages for client in usage}
    for usage in usages:
        for client, stages in usage.items():
            for stage, counts in stages.items():
                target = total[client].setdefault(stage, {})
                for key, value in counts.items():
                    if isinstance(value, float):
                        target[key] = round(target.get(key, 0) + value, 6)
                    elif isinstance(value, int) and not isinstance(value, bool):
                        target[key] = target.get(key, 0) + value
                    else:
                        target[key] = value
    return total


def _modify_manifest(run_dir: Path, change: Any) -> dict[str, Any]:
    """Apply ``change`` (a function that edits the manifest dict in place) under the manifest's file lock; return it."""
    with (run_dir / ".manifest.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read_manifest(run_dir)
        change(manifest)
        atomic_write_json(run_dir / MANIFEST, manifest)
    return manifest


def software_versions() -> dict[str, str]:
    """Return the versions of Python, monoscope and the main libraries, and the git commit."""
    import torch
    import transformers

    versions = {
        "python": platform.python_version(),
        "monoscope": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5, check=False
        )
        if commit.returncode == 0:
            versions["git_commit"] = commit.stdout.strip()
    except OSError:
        pass
    return versions


@contextmanager
def timed_stage(run_dir: Path, stage: str) -> Iterator[None]:
    """Record the wall time of a stage in the manifest under ``timings``."""
    start = time.perf_counter()
    yield
    update_manifest(run_dir, timings={stage: round(time.perf_counter() - start, 2)})


def cpu_threads() -> int:
    """Return the number of CPU threads torch should use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
