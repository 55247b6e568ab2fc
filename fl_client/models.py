"""A site's store of the final models its coordinator sent: verified, then kept.

At the end of a run the coordinator sends every connected site the run's final model exactly
as it wrote and signed it (``query.final_model``, :class:`common.federation.protocol.FinalModel`).
The site keeps it only after checking, with the coordinator's public key from its own config
(``model_verify_key``), that the signature is valid, that it was signed as the run's
``final.pt``, that the bytes match the signed digest and that its model card can be applied::

    <models_dir>/<run>/final.pt        the weights, byte for byte the coordinator's
    <models_dir>/<run>/final.pt.json   the signed sidecar (model card, run, round)
    <models_dir>/.latest               the run name of the newest model kept

A model is unpacked into a hidden folder and renamed into place, so a crash never leaves a
half-written one; a second delivery for the same run replaces the first. ``fl-client predict``
verifies the stored files again before every use (:func:`stored_model`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.errors import DataError
from common.federation.protocol import FinalModel
from common.files import write_atomic
from common.model_card import card_from_sidecar
from common.names import check_name
from common.security.checkpoint import SIDECAR_SUFFIX, load_checkpoint, verify_signature

FINAL = "final.pt"
LATEST = ".latest"  # run names never start with "." (common.names)


def store_final_model(model: FinalModel, verify_key: Ed25519PublicKey, models_dir: Path) -> Path:
    """Verify ``model`` and keep it under ``models_dir``; returns the stored ``final.pt``.
    Anything that does not verify raises :class:`DataError` and writes nothing."""
    sidecar = model.sidecar
    where = Path(f"final model of run {sidecar.get('run')!r}")
    verify_signature(where, sidecar, verify_key)  # first: nothing unsigned is read further
    run = sidecar.get("run")
    try:
        check_name(run, "run name")
    except ValueError as exc:
        raise DataError(where, f"refused: {exc}") from None
    if sidecar.get("file") != FINAL or sidecar.get("role") != "final":
        raise DataError(
            where,
            f"refused: signed as {sidecar.get('file')!r} (role {sidecar.get('role')!r}), not as "
            "the run's final.pt: a replayed checkpoint is not a final model",
        )
    digest = hashlib.sha256(model.weights).hexdigest()
    if sidecar.get("sha256") != digest or sidecar.get("bytes") != len(model.weights):
        raise DataError(where, "refused: the weights do not match the signed digest")
    card_from_sidecar(where, sidecar)  # a model card this version can apply
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".incoming-{run}-", dir=models_dir))
    try:
        (staging / FINAL).write_bytes(model.weights)
        (staging / (FINAL + SIDECAR_SUFFIX)).write_text(json.dumps(sidecar, indent=2))
        load_checkpoint(staging / FINAL, verify_key)  # the same check every later use makes
        target = models_dir / run
        if target.exists():  # the same run delivered again (a resumed run): replace it
            old = Path(tempfile.mkdtemp(prefix=f".replaced-{run}-", dir=models_dir))
            os.replace(target, old / run)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_atomic(models_dir / LATEST, f"{run}\n".encode())
    return target / FINAL


def stored_runs(models_dir: Path) -> list[str]:
    """The runs whose final model this site keeps, by name."""
    if not models_dir.is_dir():
        return []
    return sorted(
        p.name for p in models_dir.iterdir() if not p.name.startswith(".") and (p / FINAL).is_file()
    )


def stored_model(models_dir: Path, run: str | None = None) -> Path:
    """The ``final.pt`` of ``run`` (default: the newest delivered), after checking it exists."""
    if run is None:
        latest = models_dir / LATEST
        if not latest.is_file():
            raise DataError(
                models_dir,
                "no final model stored yet: the coordinator sends it to every connected site at "
                "the end of a run (the site needs model_verify_key in its config)",
            )
        run = latest.read_text().strip()
    try:
        check_name(run, "run name")
    except ValueError as exc:
        raise DataError(models_dir, str(exc)) from None
    path = models_dir / run / FINAL
    if not path.is_file():
        known = ", ".join(stored_runs(models_dir)) or "none"
        raise DataError(path, f"no final model of run {run!r} stored here (stored: {known})")
    return path
