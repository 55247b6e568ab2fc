"""Resuming a run after the coordinator died: where it stopped, and a consistent log.

A round counts as completed when its ``round-done`` event is in ``metrics.jsonl``; that event
is written after the round's checkpoint, so the checkpoint of every completed round exists.
On resume the log keeps exactly the rows of the completed rounds (a half-finished round's
rows are dropped, so no round is counted twice), the global model of the last completed round
is loaded (verified), and round numbers continue from there.

A server optimiser's memory (FedAvgM's momentum, FedAdam's and FedYogi's moments) is kept
beside the checkpoints as ``server-optimiser-0007.pt`` (signed like them), written before the
round's ``round-done`` event; only the latest completed round's file is kept. A resumed run
takes it back, so it continues as if it had never stopped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.files import write_atomic
from common.security.checkpoint import load_checkpoint, save_checkpoint
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


def schedule_change(rows: list[dict], rounds: int, schedule: str) -> str | None:
    """Why a resumed run's learning rate no longer follows its first start's schedule, or None.

    ``rows``: the run's log, this start's ``negotiated`` event last (each start records its
    ``server_rounds``); compared with the start before this one. A cosine schedule spans the
    run's rounds, so changing them on resume moves the learning rate of every remaining round
    (a jump at the resume point). Changing the schedule itself or the local epochs on resume is
    not detected here."""
    starts = [r for r in rows if r.get("event") == "negotiated" and "server_rounds" in r]
    if schedule != "cosine" or len(starts) < 2:
        return None
    before = int(starts[-2]["server_rounds"])
    if before == rounds:
        return None
    return (
        f"the cosine learning-rate schedule now spans {rounds} rounds instead of the {before} "
        "of the run's previous start: the remaining rounds' learning rates change from the "
        "resume point on"
    )


def trim_log(out: Path, completed: int) -> int:
    """Keep the rows of rounds <= ``completed`` (and run-level events); returns rows dropped."""
    path = out / "metrics.jsonl"
    rows = read_metrics_log(path)
    keep = [r for r in rows if r.get("round") is None or int(r["round"]) <= completed]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in keep).encode())
    return len(rows) - len(keep)


def optimiser_state_path(checkpoints: Path, server_round: int) -> Path:
    return checkpoints / f"server-optimiser-{server_round:04d}.pt"


def prune_optimiser_states(checkpoints: Path, keep_round: int) -> None:
    """Remove the server-optimiser files (and sidecars) of rounds before ``keep_round``."""
    for path in checkpoints.glob("server-optimiser-*.pt*"):
        stem = path.name.split(".")[0]
        number = stem.rsplit("-", 1)[-1]
        if number.isdigit() and int(number) < keep_round:
            path.unlink(missing_ok=True)


def write_optimiser_state(
    path: Path, state: dict[str, np.ndarray], meta: dict, signing_key: object | None
) -> None:
    """``state`` as a signed checkpoint-like file (every array keeps its shape, 0-d too)."""
    tensors = {k: torch.from_numpy(np.array(v, order="C")) for k, v in state.items()}
    save_checkpoint(path, tensors, meta, signing_key)  # type: ignore[arg-type]


def read_optimiser_state(
    path: Path, verify_key: object | None, run: str
) -> tuple[dict[str, np.ndarray], dict]:
    """What :func:`write_optimiser_state` wrote, verified (digest; signature with a key)."""
    state, sidecar = load_checkpoint(path, verify_key=verify_key, expect_run=run)  # type: ignore[arg-type]
    return {k: v.numpy() for k, v in state.items()}, sidecar
