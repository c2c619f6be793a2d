"""JSON Lines record files: appended one record at a time, read back as frozen dataclasses.

A record is flushed and fsynced as soon as it is written, so a killed run
loses at most the record being written; a truncated last line is ignored on
reading. When the same key was written twice (a failure later retried), the
last record wins, and ``compact`` rewrites the file with one record per key.
"""

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from harness.errors import MonoscopeError
from harness.storage import atomic_write_bytes

T = TypeVar("T")


class CorruptRecordsError(MonoscopeError, ValueError):
    """A record file has a damaged line that is not its last (a cut-off last line is a kill, and is skipped)."""


def _plain(record: Any) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(record).items()}


def append_records(path: Path, records: Iterable[Any]) -> None:
    """Append dataclass records to a JSON Lines file and flush them to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(_plain(record), ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_records(path: Path, record_type: type[T]) -> list[T]:
    """Return the records of a JSON Lines file (a truncated last line is skipped)."""
    if not path.exists():
        return []
    fields = {field.name: field for field in dataclasses.fields(record_type)}  # type: ignore[arg-type]
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                continue  # a record cut off by a kill; it will be redone
            raise CorruptRecordsError(
                f"{path}: line {number + 1} is not JSON", "restore it, or delete that line and rerun: the stage redoes what is missing"
            ) from None
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items() if key in fields}
        try:
            records.append(record_type(**values))
        except TypeError:
            raise CorruptRecordsError(
                f"{path}: line {number + 1} is not a {record_type.__name__} record", "restore it, or delete that line and rerun"
            ) from None
    return records


def latest_by_key(records: list[T], key: Callable[[T], Any] | None = None) -> dict[Any, T]:
    """Return the last record for each key (default: the record's own ``key``, see harness.records)."""
    latest: dict[Any, T] = {}
    for record in records:
        latest[record.key if key is None else key(record)] = record  # type: ignore[attr-defined]
    return latest


def records_text(records: Iterable[Any]) -> str:
    """Return records as JSON Lines text (one object per line)."""
    return "".join(json.dumps(_plain(record), ensure_ascii=False) + "\n" for record in records)


def compact(path: Path, record_type: type[T], order: Callable[[T], Any] | None = None, keep: Callable[[T], bool] | None = None) -> list[T]:
    """Rewrite a record file atomically with only the last record per key; return those records.

    With ``order`` (a sort key) the records are written sorted by it (stable), so that a file
    whose records were appended by concurrent workers has one layout whatever their timing.
    With ``keep`` only the records it accepts are written.
    """
    records = [r for r in latest_by_key(read_records(path, record_type)).values() if keep is None or keep(r)]
    if order is not None:
        records.sort(key=order)
    if records or path.exists():  # a stage that wrote nothing leaves no empty file behind
        atomic_write_bytes(path, records_text(records).encode())
    return records
