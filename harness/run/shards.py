"""Unit shards of one run (``monoscope run --shard i/n``): where each shard writes, waiting for the
other shards' explanations, and merging every shard's records into the run directory."""

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import MonoscopeError
from harness.progress import Progress
from harness.records import EvaluatedUnit, Explanation
from harness.run.evaluate import EXPLANATIONS, RECORD_TYPES
from harness.storage import atomic_write_bytes
from results.store import latest_by_key, read_records, records_text


def shard_directory(run_dir: Path, shard: tuple[int, int] | None) -> Path:
    """Return where a shard writes its records (the run directory itself when unsharded)."""
    if shard is None:
        return run_dir
    path = run_dir / "shards" / f"{shard[0]}-of-{shard[1]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_dirs(run_dir: Path) -> list[Path]:
    return [run_dir, *sorted(p for p in (run_dir / "shards").glob("*-of-*") if p.is_dir())]


def wait_for_explanations(
    run_dir: Path, units: list[EvaluatedUnit], shard: tuple[int, int] | None, wait_seconds: float, log: Progress
) -> list[Explanation]:
    """Return every unit's explanations once all exist in the run (other shards' included), waiting for them up to ``wait_seconds``."""
    names = {unit.unit for unit in units}
    deadline, announced = time.monotonic() + wait_seconds, False
    while True:
        records = [r for d in record_dirs(run_dir) for r in read_records(d / EXPLANATIONS, Explanation) if r.unit in names]
        missing = names - {r.unit for r in records if r.explainer == "llm"}
        if not missing:
            return records
        if shard is None:
            raise MonoscopeError(f"{len(missing)} units have no explanation record", "rerun: the explain stage redoes them")
        if time.monotonic() > deadline:
            raise MonoscopeError(
                f"shard {shard[0]}/{shard[1]} waited {wait_seconds:.0f} s for {len(missing)} explanations of other shards",
                "start the other shards (or rerun this one later: its work so far is saved)",
            )
        if not announced:
            log(f"shard {shard[0]}/{shard[1]}: waiting for the other shards' explanations ({len(missing)} units)")
            announced = True
        time.sleep(1.0)


def merge_shards(run_dir: Path) -> None:
    """Fold every shard's records into the run directory's record files (last record per key wins)."""
    shards = record_dirs(run_dir)[1:]
    if not shards:
        return
    for name, record_type in RECORD_TYPES.items():
        records = [r for directory in [run_dir, *shards] for r in read_records(directory / name, record_type)]
        merged = list(latest_by_key(records).values())
        atomic_write_bytes(run_dir / name, records_text(merged).encode("utf-8"))


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (shared by all processes working on one run directory)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
