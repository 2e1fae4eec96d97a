"""Progress of long admin operations: a rich bar on a terminal, plain lines otherwise.

Both go to stderr, so a command's `--json` output on stdout stays parseable. Plain
lines (for logs, CI, `systemd-run`) are written at the start, at most every few
seconds, and once at the end, so a long operation neither floods a log nor looks hung.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["Advance", "progress"]

# Called with how many more units are done.
Advance = Callable[[int], None]

PLAIN_INTERVAL_SECONDS = 5.0


class _PlainLines:
    def __init__(self, description: str, total: int | None, out: TextIO, interval: float) -> None:
        self._description = description
        self._total = total
        self._out = out
        self._interval = interval
        self._done = 0
        self._started = self._last = time.monotonic()
        # A first line at once: what is to be done is known before the first interval.
        self._line()

    def advance(self, count: int) -> None:
        self._done += count
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._line()

    def finish(self) -> None:
        self._line(final=True)

    def _line(self, *, final: bool = False) -> None:
        elapsed = time.monotonic() - self._started
        done = f"{self._done:,}"
        if self._total is not None:
            share = self._done / self._total if self._total else 1.0
            done = f"{self._done:,}/{self._total:,} ({share:.0%})"
        state = "..."
        if final:
            # An operation that ends before its total (a verification that found a
            # break) says where it stopped, not that it did everything.
            finished = self._total is None or self._done >= self._total
            state = "done" if finished else "stopped"
        self._out.write(f"{self._description}: {done} {state} {elapsed:.1f} s\n")
        self._out.flush()


@contextlib.contextmanager
def progress(
    description: str,
    total: int | None = None,
    *,
    out: TextIO | None = None,
    interval: float = PLAIN_INTERVAL_SECONDS,
) -> Iterator[Advance]:
    """Report the progress of `description` (`total` units, if known) while the block runs.

    The plain-line summary is written only when the block completes: an operation
    that failed says so in its own error, not in a "done" line.
    """
    stream = out if out is not None else sys.stderr
    if stream.isatty():
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),
            transient=False,
        )
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda count: bar.advance(task, count)
        return
    lines = _PlainLines(description, total, stream, interval)
    yield lines.advance
    lines.finish()
