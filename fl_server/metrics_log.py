"""The run's machine-readable log: one JSON object per line, appended and flushed at once.

Rows: ``{"round": r, "phase": "train"|"val"|"test", "site": name, "node": id, ...metrics}``
for every site's reply, ``"site": "*"`` for the aggregate of a round, and
``{"event": ...}`` rows for the run's milestones (negotiation, rejected replies, checkpoints).
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


class MetricsLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: Mapping[str, Any]) -> None:
        line = json.dumps({k: _clean(v) for k, v in row.items()} | {"time": round(time.time(), 3)})
        with self.path.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()

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
