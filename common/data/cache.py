"""Preprocessing cache: a site's samples resized and normalised once, stored on disk as arrays.

Layout: ``<cache_dir>/<site>/<key>/`` with ``images.npy`` (N, h, w) float32, ``masks.npy``
(N, h, w) uint8, ``labelled.npy`` (N, 4) bool, ``full_masks.npy`` (N, h, w) uint8 when every
sample has a full ground truth, ``records.json`` (per-sample metadata) and ``manifest.json``.
The key hashes the site spec, the preprocessing settings, the cache version and a fingerprint of
every file under the site's root (relative path, size, modification time), so editing the data
or the settings rebuilds the cache and nothing else does. A build is written to a temporary
folder and renamed into place, so a crash never leaves a half-written cache; older keys of the
same site are removed after a successful build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.config import SiteSpec
from common.data.preprocess import PreprocessConfig
from common.data.selection import build_site_arrays
from common.data.site_data import SiteData
from common.errors import DataError

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def fingerprint_tree(root: Path) -> str:
    """SHA-256 over (relative path, size, mtime) of every file under ``root``."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            st = path.stat()
            rel = path.relative_to(root).as_posix()
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_key(spec: SiteSpec, preprocess: PreprocessConfig) -> str:
    root = Path(spec.root).resolve()
    if not root.exists():
        raise DataError(root, f"data folder of site {spec.name!r} does not exist")
    payload = {
        "version": CACHE_VERSION,
        "spec": spec.model_dump(mode="json", exclude={"name"}) | {"root": str(root)},
        "preprocess": preprocess.model_dump(mode="json"),
        "files": fingerprint_tree(root),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _write(data: SiteData, folder: Path, manifest: dict[str, Any]) -> None:
    np.save(folder / "images.npy", data.images)
    np.save(folder / "masks.npy", data.masks)
    np.save(folder / "labelled.npy", data.labelled)
    if data.full_masks is not None:
        np.save(folder / "full_masks.npy", data.full_masks)
    (folder / "records.json").write_text(json.dumps(data.records))
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _read(site: str, folder: Path) -> SiteData:
    try:
        full_path = folder / "full_masks.npy"
        return SiteData(
            site=site,
            images=np.load(folder / "images.npy"),
            masks=np.load(folder / "masks.npy"),
            labelled=np.load(folder / "labelled.npy"),
            full_masks=np.load(full_path) if full_path.exists() else None,
            records=json.loads((folder / "records.json").read_text()),
        )
    except (OSError, ValueError) as exc:
        raise DataError(folder, f"corrupt preprocessing cache ({exc}); delete this folder") from exc


def load_site_cached(
    spec: SiteSpec,
    preprocess: PreprocessConfig,
    cache_dir: Path,
    *,
    loader_options: dict[str, Any] | None = None,
) -> SiteData:
    """The site's preprocessed samples: read from the cache, building it on first use."""
    from common.data.formats import (
        load_site,  # local import: the registry pulls in the IO libraries
    )

    key = cache_key(spec, preprocess)
    site_dir = Path(cache_dir) / spec.name
    folder = site_dir / key
    if (folder / "manifest.json").is_file():
        return _read(spec.name, folder)

    started = time.perf_counter()
    options = {**spec.options, **(loader_options or {})}
    samples = load_site(spec.format, Path(spec.root), site=spec.name, **options)
    data = build_site_arrays(samples, spec, preprocess)
    if len(data) == 0:
        raise DataError(spec.root, f"empty site {spec.name!r}: no samples left after selection")
    site_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=site_dir))
    try:
        manifest = {
            "site": spec.name,
            "key": key,
            "version": CACHE_VERSION,
            "samples": len(data),
            "labelled": sorted(s.name for s in data.labelled_set),
            "preprocess": preprocess.model_dump(mode="json"),
            "source": spec.model_dump(mode="json"),
            "build_seconds": round(time.perf_counter() - started, 3),
        }
        _write(data, tmp, manifest)
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / "manifest.json").is_file():  # not a concurrent builder: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for stale in site_dir.iterdir():
        if stale.is_dir() and stale.name != key and not stale.name.startswith("."):
            shutil.rmtree(stale, ignore_errors=True)
    log.info(
        "cached site %s: %d samples in %.1fs -> %s",
        spec.name,
        len(data),
        time.perf_counter() - started,
        folder,
    )
    return _read(spec.name, folder)
