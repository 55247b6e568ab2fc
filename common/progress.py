"""Progress bars with an ETA for long loops (synthetic generation, centralised training).

A rich bar on standard error when it is a terminal; nothing otherwise, so logs, CI and the
harness's own "k of N runs, ETA" lines stay as they are. ``ECHOFL_PROGRESS=1`` forces the bar
(drawn as a terminal would), ``ECHOFL_PROGRESS=0`` turns it off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ENV = "ECHOFL_PROGRESS"

Advance = Callable[[int], None]


def _wanted() -> tuple[bool, bool]:
    """(draw a bar, force terminal rendering)."""
    setting = os.environ.get(ENV, "").strip()
    if setting == "0":
        return False, False
    if setting == "1":
        return True, True
    return sys.stderr.isatty(), False


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Advance]:
    """Yields ``advance(n)``: n more of ``total`` done. On a terminal the bar is removed when
    done; a forced one (``ECHOFL_PROGRESS=1``) stays, with its final count."""
    draw, force = _wanted()
    if not draw or total <= 0:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(file=sys.stderr, force_terminal=force or None)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=not force,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
