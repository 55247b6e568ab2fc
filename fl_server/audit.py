"""The coordinator's audit trail: ``<home>/audit.jsonl``, append-only.

One JSON object per line, never rewritten: who did what from where, when. Recorded: sites
registered and unregistered (with the SHA-256 of the public key), runs launched or resumed
(with the SHA-256 of the Flower app bundle the sites will run and the run config), and how each
run ended (with the final checkpoint's digest). ``metrics.jsonl`` of each run keeps the rest
(admissions, refusals, rejected updates, every checkpoint's round).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from common.app_bundle import app_digest  # the bundle's digest (re-exported for callers)
from common.audit import AuditLog, read_audit


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


__all__ = ["AuditLog", "app_digest", "file_digest", "read_audit"]
