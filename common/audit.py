"""Append-only audit logs (JSON lines), kept by the coordinator and by every site.

One JSON object per line, never rewritten: what happened, when, by which user on which host and
process. Each entry is written with a single ``write`` on a file opened in append mode, so
entries from several processes (a site's task processes) never interleave.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
from pathlib import Path
from typing import Any


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        entry = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "event": event,
            "user": getpass.getuser(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            **fields,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)  # one write in append mode: atomic with respect to other writers
        finally:
            os.close(fd)
        return entry


def read_audit(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
