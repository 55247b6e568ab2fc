"""Unpack a pinned app bundle into the site's FLWR_HOME, all at once, and check where its code
was imported from.

Flower's ``install_from_fab`` creates the app's folder, then copies the files into it, and skips
the install when the folder already exists. Two tasks of one site starting together (or a task
killed while unpacking) could then import from a half-written folder, and Python would quietly
fall back to another copy of the same package on ``sys.path`` (the site's own installed echofl):
code that is not the pinned bundle. Here the bundle is unpacked into a private folder in
FLWR_HOME/.echofl-install/, marked complete with its hash, and renamed into place (atomic on
one file system), under a per-bundle lock; a folder without the mark is replaced. After loading,
:func:`check_origin` refuses a ClientApp module whose file is not inside the bundle's folder.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

COMPLETE_MARK = ".echofl-complete"  # holds the bundle's sha256, written last
WORK_DIR = ".echofl-install"  # in FLWR_HOME: the locks and the folders being unpacked


class AppOriginError(RuntimeError):
    """The ClientApp was imported from somewhere other than the pinned bundle's folder."""


def installed(app_dir: Path, digest: str) -> bool:
    mark = app_dir / COMPLETE_MARK
    try:
        return mark.read_text().strip() == digest
    except OSError:
        return False


def install_app(content: bytes, digest: str, app_dir: Path) -> Path:
    """Make ``app_dir`` (Flower's folder for this bundle) hold the bundle, complete."""
    from flwr.cli.install import install_from_fab

    if installed(app_dir, digest):
        return app_dir
    work = app_dir.parent.parent / WORK_DIR  # beside apps/ (same file system), not inside it
    work.mkdir(parents=True, exist_ok=True)
    app_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(work / f"{app_dir.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer per bundle; the others wait, then reuse
        if installed(app_dir, digest):
            return app_dir
        for stale in work.glob(f"{app_dir.name}.*"):  # from a task killed while unpacking
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{app_dir.name}.", dir=work))
        try:
            unpacked = install_from_fab(content, install_dir=staging, skip_prompt=True)
            (unpacked / COMPLETE_MARK).write_text(digest + "\n")
            if app_dir.exists():  # incomplete: from a task killed while unpacking, or Flower's
                shutil.rmtree(app_dir)
            os.rename(unpacked, app_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return app_dir


def check_origin(module_file: str, app_dir: Path) -> None:
    """Raise :class:`AppOriginError` unless ``module_file`` lies inside ``app_dir``."""
    inside = False
    if module_file:
        path, root = Path(module_file).resolve(), app_dir.resolve()
        inside = path == root or root in path.parents
    if not inside:
        raise AppOriginError(
            f"the app's ClientApp module was imported from {module_file or '(unknown)'}, not "
            f"from the pinned bundle unpacked at {app_dir}; refusing to run it"
        )
