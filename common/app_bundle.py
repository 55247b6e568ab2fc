"""The Flower app bundle (FAB) of echofl: what it holds, its digest, a copy to submit.

``flwr run <folder>`` bundles a folder by walking *every* file under it (resolving each path)
before it filters them; run from a source checkout with its ``.venv``, generated data and run
outputs that is ~50 000 files and 3-11 s before each run starts, for a bundle of ~200 files.
The bundle's contents are declared once, in ``pyproject.toml``: ``[tool.flwr.app] fab-include``
(the app's own packages). Here the same bundle is built from only the folders those patterns
name, with Flower's own builder and filters, so the bytes (and so the SHA-256 a hospital pins)
are the ones ``flwr run <source folder>`` would send; :func:`stage_app` copies exactly the
files of the bundle to a folder that ``flwr run`` then bundles in milliseconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tomllib
from pathlib import Path

from common.errors import ConfigError, EchoflError

CONFIG_FILE = "pyproject.toml"


def include_roots(app_dir: Path) -> list[str] | None:
    """The top-level folders the bundle's ``fab-include`` patterns draw from (``"/common/**"``
    -> ``common``); ``None`` when the app declares no such patterns, or one that could match
    outside a named top-level folder (then every file must be walked, as Flower does)."""
    try:
        config = tomllib.loads((app_dir / CONFIG_FILE).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            app_dir / CONFIG_FILE, f"not a readable Flower app config ({exc})"
        ) from None
    patterns = config.get("tool", {}).get("flwr", {}).get("app", {}).get("fab-include")
    if not patterns:
        return None
    roots = []
    for pattern in patterns:
        head = pattern.lstrip("/").split("/", 1)[0]
        if not pattern.startswith("/") or "/" not in pattern.lstrip("/") or set("*?[!") & set(head):
            return None  # e.g. "**/*.py": may match anywhere
        roots.append(head)
    return sorted(set(roots))


def app_files(app_dir: Path) -> dict[str, Path]:
    """The files Flower's builder would consider from ``app_dir`` (relative POSIX path -> file),
    walking only the bundle's top-level folders and files. Without ``fab-include`` roots:
    Flower's own full walk."""
    from flwr.cli.utils import collect_files  # Flower's CLI: imported only where needed

    root = app_dir.expanduser().resolve()
    roots = include_roots(root)
    if roots is None:
        return collect_files(root)
    files: dict[str, Path] = {}
    for entry in root.iterdir():  # top-level files: pyproject.toml, .gitignore, ...
        if entry.is_file() and not entry.is_symlink():
            files[entry.name] = entry
    for name in roots:
        top = root / name
        if top.is_symlink() or not top.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for filename in filenames:
                path = Path(dirpath) / filename
                if not path.is_symlink():
                    files[path.relative_to(root).as_posix()] = path
    return files


def bundle_members(app_dir: Path) -> dict[str, Path]:
    """The files that end up in the bundle (plus ``pyproject.toml``, which Flower rewrites)."""
    from flwr.cli.build import filter_paths_for_publish, get_filtered_fab_paths

    files = app_files(app_dir)
    published = filter_paths_for_publish(files)
    config = tomllib.loads(Path(files[CONFIG_FILE]).read_text())
    members = get_filtered_fab_paths(published, config)
    return {CONFIG_FILE: files[CONFIG_FILE], **{p: Path(published[p]) for p in members}}


def build_bundle(app_dir: Path) -> bytes:
    """The bundle's bytes, as ``flwr run app_dir`` builds them (Flower's builder)."""
    from flwr.cli.build import build_fab_from_files

    return build_fab_from_files(app_files(app_dir))[0]


def app_digest(app_dir: Path) -> str:
    """SHA-256 of the bundle ``flwr run`` builds from ``app_dir``: the hash a hospital pins."""
    return hashlib.sha256(build_bundle(app_dir)).hexdigest()


def stage_app(app_dir: Path, dest: Path) -> str:
    """Copy the bundle's files of ``app_dir`` into ``dest`` (emptied first) and return the
    bundle's digest, checked to be the same from the copy as from the source."""
    source = app_dir.expanduser().resolve()
    members = bundle_members(source)
    if dest.exists():
        shutil.rmtree(dest)
    for relative, path in members.items():
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    gitignore = source / ".gitignore"
    if gitignore.is_file():  # the same ignore rules for the copy (none of its files match them)
        shutil.copyfile(gitignore, dest / ".gitignore")
    digest, staged = app_digest(source), app_digest(dest)
    if digest != staged:  # never submit other code than the source folder's
        raise EchoflError(
            f"the copy of the Flower app in {dest} bundles to {staged[:12]}, the source "
            f"{source} to {digest[:12]}: not submitted"
        )
    return digest


__all__ = ["app_digest", "app_files", "build_bundle", "bundle_members", "stage_app"]
