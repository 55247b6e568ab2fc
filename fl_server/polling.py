"""Waiting for the sites' replies without Flower's fixed 3-second naps.

Flower 1.42's deployment grid (``flwr.superlink.grid.http_grid.HttpGrid.send_and_receive``)
pushes a round's messages, then asks the SuperLink for the replies and sleeps 3 s between
asks: every exchange ends up to 3 s after its last reply arrived (1.5 s on average, per
message type per round). :class:`PromptGrid` is the same exchange through the Grid's public
``push_messages`` / ``pull_messages``, asking every ``interval`` seconds (default 0.1 s; one
small request to the SuperLink on loopback each time). Everything else is the wrapped grid's.
Simulation grids are used unchanged (they answer in memory).

A reply can be listed before the site has finished uploading its arrays; Flower's grid then
retries the download after 1 s (doubling). :func:`prompt` makes that retry start at 0.05 s
(doubling up to 0.5 s) by giving the grid's module a ``pull_objects`` with those defaults (the
same function; flwr 1.42, checked by ``tests/fl/test_polling.py``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

POLL_S = 0.1
PULL_BACKOFF_S, PULL_BACKOFF_CAP_S = 0.05, 0.5  # Flower's: 1 s and 10 s


class PromptGrid(Grid):
    def __init__(self, grid: Grid, interval: float = POLL_S) -> None:
        self._grid = grid
        self.interval = interval

    # -- the exchange -------------------------------------------------------------------------
    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        pending = set(self._grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            arrived = list(self._grid.pull_messages(pending))
            replies.extend(arrived)
            pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.interval)
        return replies

    # -- everything else: the wrapped grid's ---------------------------------------------------
    def set_run(self, run) -> None:  # type: ignore[no-untyped-def]
        self._grid.set_run(run)

    @property
    def run(self):  # type: ignore[no-untyped-def]
        return self._grid.run

    def create_message(self, *args, **kwargs) -> Message:  # type: ignore[no-untyped-def]
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def get_nodes(self):  # type: ignore[no-untyped-def]
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)


def prompt(grid: Grid) -> Grid:
    """The deployment grid wrapped (see the module docstring); other grids as they are."""
    from flwr.superlink.grid import http_grid

    if not isinstance(grid, http_grid.HttpGrid):
        return grid
    if not isinstance(http_grid.pull_objects, functools.partial):
        http_grid.pull_objects = functools.partial(  # type: ignore[assignment]
            http_grid.pull_objects, initial_backoff=PULL_BACKOFF_S, backoff_cap=PULL_BACKOFF_CAP_S
        )
    return PromptGrid(grid)
