"""Seconds per step of a piece of work: a round on the coordinator, a task at a site."""

from __future__ import annotations

import time


class Stopwatch:
    """``lap(step)`` records the seconds since the previous lap (or the start) under
    ``step + suffix``; ``steps`` holds them in order."""

    def __init__(self, suffix: str = "") -> None:
        self.suffix = suffix
        self.last = time.perf_counter()
        self.steps: dict[str, float] = {}

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.steps[f"{step}{self.suffix}"] = round(now - self.last, 4)
        self.last = now

    def laps(self, last_step: str) -> dict[str, float]:
        self.lap(last_step)
        return dict(self.steps)
