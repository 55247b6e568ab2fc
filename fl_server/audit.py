"""The coordinator's audit trail: ``<home>/audit.jsonl``, append-only.

One JSON object per line, never rewritten: who did what from where, when. Recorded: sites
registered and unregistered (with the SHA-256 of the public key), runs launched or resumed
(with the SHA-256 of the Flower app bundle the sites will run and the run config), and how each
run ended (with the final checkpoint's digest). ``metrics.jsonl`` of each run keeps the rest
(admissions, refusals, rejected updates, every checkpoint's round).
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any


def app_digest(app_dir: Path) -> str:
    """SHA-256 of the Flower app bundle (FAB) ``flwr run`` builds from ``app_dir``: the hash a
    hospital pins (Flower builds it the same way, byte for byte)."""
    from flwr.cli.build import build_fab_from_disk  # imported here: it pulls in Flower's CLI

    return hashlib.sha256(build_fab_from_disk(app_dir)).hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
        with self.path.open("a", encoding="utf-8") as fh:  # append only
            fh.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        return entry


def read_audit(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
