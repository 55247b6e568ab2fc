"""fl_server.polling: the ServerApp's prompt exchange with the sites, without Flower's 3 s naps.
The exchange through a stand-in grid (push ids, replies arriving over time, a deadline); the
patch point in Flower's deployment grid still where it was."""

from __future__ import annotations

import inspect
import time
from types import SimpleNamespace

from flwr.superlink.grid import http_grid

from fl_server.polling import PromptGrid


class SlowGrid:
    """Replies arrive ``delay`` seconds after the push; message ``never`` is never answered."""

    def __init__(self, delay: float, never: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.delay, self.never = delay, never
        self.pulls = 0

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        self.pushed = time.monotonic()
        return list(messages)

    def pull_messages(self, ids):  # type: ignore[no-untyped-def]
        self.pulls += 1
        if time.monotonic() - self.pushed < self.delay:
            return []
        return [
            SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i))
            for i in ids
            if i not in self.never
        ]


def test_replies_are_noticed_within_the_poll_interval() -> None:
    grid = PromptGrid(SlowGrid(0.3), interval=0.05)  # type: ignore[arg-type]
    started = time.monotonic()
    replies = list(grid.send_and_receive(["a", "b"], timeout=10))
    waited = time.monotonic() - started
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["a", "b"]
    assert 0.3 <= waited < 0.6  # Flower's grid would have slept 3 s


def test_the_deadline_ends_the_wait_with_what_arrived() -> None:
    grid = PromptGrid(SlowGrid(0.0, never={"b"}), interval=0.05)  # type: ignore[arg-type]
    started = time.monotonic()
    replies = list(grid.send_and_receive(["a", "b"], timeout=0.4))
    assert [r.metadata.reply_to_message_id for r in replies] == ["a"]
    assert 0.4 <= time.monotonic() - started < 1.0


def test_flowers_grid_still_naps_and_downloads_through_the_patched_name() -> None:
    source = inspect.getsource(http_grid.HttpGrid.send_and_receive)
    assert "time.sleep(3)" in source
    assert "pull_objects(" in inspect.getsource(http_grid.HttpGrid.pull_messages)
    target = getattr(http_grid.pull_objects, "func", http_grid.pull_objects)
    params = inspect.signature(target).parameters
    assert params["initial_backoff"].default == 1 and params["backoff_cap"].default == 10
