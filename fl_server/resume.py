"""Resuming a run after the coordinator died: where it stopped, and a consistent log.

A round counts as completed when its ``round-done`` event is in ``metrics.jsonl``; that event
is written after the round's checkpoint, so the checkpoint of every completed round exists.
On resume the log keeps exactly the rows of the completed rounds (a half-finished round's
rows are dropped, so no round is counted twice), the global model of the last completed round
is loaded (verified), and round numbers continue from there.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from common.files import write_atomic
from fl_server.metrics_log import read_metrics_log


@dataclass(frozen=True)
class ResumePoint:
    completed: int  # last completed round (0: only the initial evaluation, or nothing)
    checkpoint: Path | None
    best_round: int
    best_score: float


def find_resume_point(out: Path) -> ResumePoint:
    rows = read_metrics_log(out / "metrics.jsonl")
    done = [r for r in rows if r.get("event") == "round-done"]
    completed = max((int(r["round"]) for r in done), default=0)
    checkpoint = out / "checkpoints" / f"round-{completed:04d}.pt"
    best_round, best_score = 0, -math.inf
    for r in done:
        if r.get("score") is not None and r["score"] > best_score:
            best_round, best_score = int(r["round"]), float(r["score"])
    return ResumePoint(
        completed, checkpoint if checkpoint.is_file() else None, best_round, best_score
    )


def trim_log(out: Path, completed: int) -> int:
    """Keep the rows of rounds <= ``completed`` (and run-level events); returns rows dropped."""
    path = out / "metrics.jsonl"
    rows = read_metrics_log(path)
    keep = [r for r in rows if r.get("round") is None or int(r["round"]) <= completed]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in keep).encode())
    return len(rows) - len(keep)
