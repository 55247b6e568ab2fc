"""The run's machine-readable log: one JSON object per line, appended and flushed at once.

Rows: ``{"round": r, "phase": "train"|"val"|"test", "site": name, "node": id, ...metrics}``
for every site's reply, ``"site": "*"`` for the aggregate of a round, and
``{"event": ...}`` rows for the run's milestones (negotiation, rejected replies, checkpoints).

With ``tensorboard_dir``, the same numbers also go to TensorBoard (run setting ``tensorboard``,
on by default; ``tensorboard --logdir <output-dir>/tensorboard``): every numeric metric of a
site row as ``<phase>/<site>/<metric>`` (the round's aggregate as ``<phase>/all/<metric>``) and
every numeric field of ``round-done`` as ``round/<field>``, at step = round. TensorBoard's writer
queues the scalars to its own thread; the file is flushed once per round.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _scalars(row: Mapping[str, Any], skip: frozenset[str]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if k not in skip
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


class TensorBoardSink:
    """The metrics log's rows as TensorBoard scalars (see the module docstring)."""

    SITE_FIELDS = frozenset({"round", "phase", "site", "node", "time"})
    ROUND_FIELDS = frozenset({"event", "round", "time"})

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def row(self, row: Mapping[str, Any]) -> None:
        step = row.get("round")
        if not isinstance(step, int):
            return
        if "event" not in row and "phase" in row and "site" in row:
            site = "all" if row["site"] == "*" else row["site"]
            for key, value in _scalars(row, self.SITE_FIELDS).items():
                self.writer.add_scalar(f"{row['phase']}/{site}/{key}", value, step)
        elif row.get("event") == "round-done":
            for key, value in _scalars(row, self.ROUND_FIELDS).items():
                self.writer.add_scalar(f"round/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MetricsLog:
    def __init__(self, path: Path, tensorboard_dir: Path | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tensorboard = None if tensorboard_dir is None else TensorBoardSink(tensorboard_dir)

    def write(self, row: Mapping[str, Any]) -> None:
        line = json.dumps({k: _clean(v) for k, v in row.items()} | {"time": round(time.time(), 3)})
        with self.path.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
        if self.tensorboard is not None:
            self.tensorboard.row(row)

    def close(self) -> None:
        """Flush and close the TensorBoard file (the JSON lines are flushed as written)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None

    def site_row(
        self, server_round: int, phase: str, site: str, node: int, metrics: Mapping[str, float]
    ) -> None:
        self.write(
            {"round": server_round, "phase": phase, "site": site, "node": node, **dict(metrics)}
        )

    def event(self, name: str, **fields: Any) -> None:
        self.write({"event": name, **fields})


def read_metrics_log(path: Path) -> list[dict[str, Any]]:
    """All rows of a metrics log (a missing file is an empty log)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
