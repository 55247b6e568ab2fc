"""Global-model checkpoints: a weights file and a JSON sidecar with its digest and signature.

``round-0003.pt`` holds the state dict (``torch.save``); ``round-0003.pt.json`` holds the
SHA-256 digest of that file, the round, the model settings, the validation metrics and, when
the coordinator has a signing key, an Ed25519 signature over all of that (the sidecar without
its ``signature`` field, as canonical JSON). Both files are written to a temporary file and
renamed, so a crash never leaves a half-written checkpoint.

Loading checks the digest (a modified weights file is refused) and, given the coordinator's
public key, the signature (an unsigned checkpoint, or one whose sidecar was edited, is refused).
The signed sidecar names the file, its role (``round``, ``best``, ``final``), the round and the
run, so a signed checkpoint cannot be replayed as another: ``round-0000.pt`` copied over
``final.pt`` is refused because it was signed as ``round-0000.pt``, and a resume refuses a
checkpoint signed for another run (``expect_run``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import DataError
from common.files import write_atomic

SIDECAR_SUFFIX = ".json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _signed_payload(sidecar: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in sidecar.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def save_checkpoint(
    path: Path,
    state_dict: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    signing_key: Ed25519PrivateKey | None = None,
) -> dict[str, Any]:
    """Save weights + sidecar (signed when ``signing_key`` is given); returns the sidecar."""
    buffer = io.BytesIO()
    torch.save(dict(state_dict), buffer)
    data = buffer.getvalue()
    write_atomic(path, data)
    sidecar = {
        **meta,
        "file": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    if signing_key is not None:
        signature = signing_key.sign(_signed_payload(sidecar))
        sidecar["signature"] = {
            "algorithm": "ed25519",
            "value": base64.b64encode(signature).decode(),
        }
    write_atomic(Path(str(path) + SIDECAR_SUFFIX), json.dumps(sidecar, indent=2).encode())
    return sidecar


def read_sidecar(path: Path) -> dict[str, Any]:
    sidecar_path = Path(str(path) + SIDECAR_SUFFIX)
    if not sidecar_path.is_file():
        raise DataError(path, f"no checkpoint sidecar {sidecar_path.name}: cannot verify digest")
    try:
        return json.loads(sidecar_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(sidecar_path, f"unreadable checkpoint sidecar ({exc})") from None


def verify_signature(path: Path, sidecar: Mapping[str, Any], key: Ed25519PublicKey) -> None:
    """Raise :class:`DataError` unless ``sidecar`` carries a valid signature by ``key``."""
    signature = sidecar.get("signature")
    if not isinstance(signature, dict) or "value" not in signature:
        raise DataError(
            path,
            "unsigned checkpoint: refused (a verification key was given, so "
            "only checkpoints signed by the coordinator are accepted)",
        )
    try:
        key.verify(base64.b64decode(signature["value"]), _signed_payload(sidecar))
    except (InvalidSignature, ValueError, TypeError):
        raise DataError(
            path,
            "invalid checkpoint signature: the checkpoint or its sidecar was "
            "modified, or it was signed by another coordinator",
        ) from None


def load_checkpoint(
    path: Path, verify_key: Ed25519PublicKey | None = None, *, expect_run: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint after checking its digest (and, when ``verify_key`` is given, its
    signature and that it was signed under this file name; ``expect_run``: for this run);
    returns (state dict, sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint file not found")
    sidecar = read_sidecar(path)
    if not isinstance(sidecar, dict):
        raise DataError(path, f"checkpoint sidecar is not a JSON object ({type(sidecar).__name__})")
    if verify_key is not None:
        verify_signature(path, sidecar, verify_key)
        if sidecar.get("file") != path.name:
            raise DataError(
                path,
                f"checkpoint was signed as {sidecar.get('file')!r}, not {path.name!r}: a copied "
                "or replayed checkpoint is refused",
            )
    if expect_run is not None and sidecar.get("run") != expect_run:
        raise DataError(
            path, f"checkpoint belongs to run {sidecar.get('run')!r}, not {expect_run!r}: refused"
        )
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
