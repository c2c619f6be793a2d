"""Progress of long stages: the log-line callback every stage takes, and progress bars (tqdm on stderr; quiet when
MONOSCOPE_PROGRESS=0)."""

import os
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

Progress = Callable[[str], None]  # receives one human-readable log line per call (print, click.echo, or a test's list.append)


def progress_bar(total: int, description: str, unit: str = "it") -> Any:
    """Return a tqdm progress bar (a context manager with ``update(n)``) for ``total`` items of a stage."""
    disabled = os.environ.get("MONOSCOPE_PROGRESS", "1") == "0"
    return tqdm(total=total, desc=description, unit=unit, disable=disabled, leave=False, dynamic_ncols=True, mininterval=1.0)
