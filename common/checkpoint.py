"""Global-model checkpoints: a weights file and a JSON sidecar with its SHA-256 digest.

``round-0003.pt`` holds the state dict (``torch.save``); ``round-0003.pt.json`` holds the
digest, the round, the model settings and the validation metrics of that round. Both are
written to a temporary file and renamed, so a crash never leaves a half-written checkpoint.
Loading checks the digest: a modified weights file is refused with a clear error.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from common.errors import DataError

SIDECAR_SUFFIX = ".json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: Path, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """Save weights + sidecar; returns the sidecar content (with ``sha256``)."""
    buffer = io.BytesIO()
    torch.save(dict(state_dict), buffer)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    sidecar = {
        **meta,
        "file": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    atomic_write_bytes(Path(str(path) + SIDECAR_SUFFIX), json.dumps(sidecar, indent=2).encode())
    return sidecar


def read_sidecar(path: Path) -> dict[str, Any]:
    sidecar_path = Path(str(path) + SIDECAR_SUFFIX)
    if not sidecar_path.is_file():
        raise DataError(path, f"no checkpoint sidecar {sidecar_path.name}: cannot verify digest")
    try:
        return json.loads(sidecar_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(sidecar_path, f"unreadable checkpoint sidecar ({exc})") from None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint after checking its digest; returns (state dict, sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint file not found")
    sidecar = read_sidecar(path)
    actual = sha256_file(path)
    if sidecar.get("sha256") != actual:
        expected = str(sidecar.get("sha256"))[:12]
        raise DataError(
            path,
            "checkpoint digest mismatch: the weights file was modified "
            f"(expected {expected}..., got {actual[:12]}...)",
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise DataError(path, f"unreadable checkpoint ({type(exc).__name__})") from None
    return state, sidecar
