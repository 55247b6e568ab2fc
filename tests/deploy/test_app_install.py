"""A site unpacks a pinned bundle all at once, whatever else is unpacking it at the same time, and
runs a ClientApp only when its module's file is inside the bundle's folder
(fl_client.app_install)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from pathlib import Path

import pytest

from fl_client.app_install import (
    COMPLETE_MARK,
    WORK_DIR,
    AppOriginError,
    check_origin,
    install_app,
    installed,
)
from tests.helpers import probe_app_pyproject

PYPROJECT = probe_app_pyproject("probepkg")
N_MODULES = 40  # enough files that an unpack takes a while (the window two tasks could race in)


def make_bundle(tmp: Path) -> tuple[bytes, str]:
    from flwr.cli.build import build_fab_from_disk

    app = tmp / "probe-src"
    pkg = app / "probepkg"
    pkg.mkdir(parents=True)
    (app / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text("server = client = None\n")
    for i in range(N_MODULES):
        (pkg / f"m{i:02d}.py").write_text(f"VALUE = {i}\n" + "# padding\n" * 2000)
    content = build_fab_from_disk(app)
    return content, hashlib.sha256(content).hexdigest()


def _install(args: tuple[bytes, str, str]) -> list[str]:
    content, digest, app_dir = args
    path = install_app(content, digest, Path(app_dir))
    return sorted(p.name for p in (path / "probepkg").iterdir())  # what this task would import


@pytest.fixture()
def bundle(tmp_path: Path) -> tuple[bytes, str, Path]:
    content, digest = make_bundle(tmp_path)
    return content, digest, tmp_path / "flwr" / "apps" / f"echofl.probe.1.0.0.{digest[:8]}"


def test_concurrent_tasks_each_see_the_whole_bundle(bundle: tuple[bytes, str, Path]) -> None:
    content, digest, app_dir = bundle
    expected = sorted(["__init__.py", "app.py"] + [f"m{i:02d}.py" for i in range(N_MODULES)])
    with multiprocessing.get_context("fork").Pool(6) as pool:
        seen = pool.map(_install, [(content, digest, str(app_dir))] * 6)
    assert all(files == expected for files in seen), [len(f) for f in seen]
    assert installed(app_dir, digest)
    assert [p.name for p in app_dir.parent.iterdir()] == [app_dir.name]
    assert [p.suffix for p in (app_dir.parent.parent / WORK_DIR).iterdir()] == [".lock"]


def test_a_half_written_folder_is_replaced(bundle: tuple[bytes, str, Path]) -> None:
    """As a task killed while unpacking (or Flower's own installer) leaves it: the folder exists,
    without the completion mark and with part of the files."""
    content, digest, app_dir = bundle
    (app_dir / "probepkg").mkdir(parents=True)
    (app_dir / "probepkg" / "__init__.py").write_text("")
    (app_dir / "stale.txt").write_text("left by an interrupted unpack")
    install_app(content, digest, app_dir)
    assert not (app_dir / "stale.txt").exists()
    assert (app_dir / "probepkg" / "app.py").is_file()
    assert (app_dir / COMPLETE_MARK).read_text().strip() == digest


def test_what_a_killed_unpack_left_is_cleared(bundle: tuple[bytes, str, Path]) -> None:
    content, digest, app_dir = bundle
    stale = app_dir.parent.parent / WORK_DIR / f"{app_dir.name}.k1ll3d"
    (stale / "probepkg").mkdir(parents=True)
    install_app(content, digest, app_dir)
    assert not stale.exists() and installed(app_dir, digest)


def test_a_complete_folder_is_reused_not_rewritten(bundle: tuple[bytes, str, Path]) -> None:
    content, digest, app_dir = bundle
    install_app(content, digest, app_dir)
    stamp = (app_dir / "probepkg" / "app.py").stat().st_mtime_ns
    os.utime(app_dir / "probepkg" / "app.py", ns=(stamp - 10**9, stamp - 10**9))
    install_app(content, digest, app_dir)
    assert (app_dir / "probepkg" / "app.py").stat().st_mtime_ns == stamp - 10**9


def test_a_corrupt_bundle_installs_nothing(bundle: tuple[bytes, str, Path]) -> None:
    content, digest, app_dir = bundle
    with pytest.raises(Exception):  # noqa: B017 - Flower's zip / hash errors
        install_app(content[: len(content) // 2], digest, app_dir)
    assert not app_dir.exists()
    assert [p.suffix for p in (app_dir.parent.parent / WORK_DIR).iterdir()] == [".lock"]


def test_a_module_from_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    app_dir = tmp_path / "apps" / "echofl.echofl.0.1.0.abcd1234"
    (app_dir / "fl_client").mkdir(parents=True)
    check_origin(str(app_dir / "fl_client" / "client_app.py"), app_dir)  # inside: fine
    for outside in ("/opt/site/echofl/fl_client/client_app.py", "", str(app_dir) + "x/a.py"):
        with pytest.raises(AppOriginError, match="not from the pinned bundle"):
            check_origin(outside, app_dir)
