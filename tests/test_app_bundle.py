"""The Flower app bundle (common/app_bundle.py): built from the bundle's own folders, it is
byte for byte what Flower's ``flwr run <folder>`` builds from the whole source folder, holds the
app's packages only, and a staged copy bundles to the same digest."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from common.app_bundle import app_digest, app_files, build_bundle, include_roots, stage_app
from common.errors import ConfigError, EchoflError
from tests.helpers import probe_app_pyproject

ROOT = Path(__file__).resolve().parents[1]


def make_app(base: Path, include: str) -> Path:
    """An app folder with its package, plus what a checkout also holds: tests, a virtual
    environment, data, caches."""
    app = base / "app"
    for relative, text in {
        "pyproject.toml": probe_app_pyproject("pkg", include),
        ".gitignore": "/data/\n.venv/\n",
        "README.md": "# probe\n",
        "pkg/__init__.py": "",
        "pkg/app.py": "server = client = None\n",
        "pkg/sub/model.py": "X = 1\n",
        "pkg/sub/presets.json": "{}\n",
        "pkg/__pycache__/app.cpython-311.pyc": "junk",
        "tests/test_app.py": "def test(): pass\n",
        "docs/guide.md": "# guide\n",
        ".venv/lib/site.py": "junk = 1\n",
        "data/site/info.json": "{}\n",
    }.items():
        path = app / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return app


def members(content: bytes) -> list[str]:
    return sorted(zipfile.ZipFile(io.BytesIO(content)).namelist())


def test_the_bundle_is_flowers_own_bytes_and_holds_only_the_package(tmp_path: Path) -> None:
    from flwr.cli.build import build_fab_from_disk

    app = make_app(tmp_path, 'fab-include = ["/pkg/**"]')
    assert include_roots(app) == ["pkg"]
    walked = set(app_files(app))
    assert not any(p.startswith((".venv/", "data/", "tests/", "docs/")) for p in walked), walked
    content = build_bundle(app)
    assert content == build_fab_from_disk(app)  # what flwr run would send, byte for byte
    assert members(content) == [
        ".info/CONTENT",
        "pkg/__init__.py",
        "pkg/app.py",
        "pkg/sub/model.py",
        "pkg/sub/presets.json",
        "pyproject.toml",
    ]
    assert app_digest(app) == hashlib.sha256(content).hexdigest()


def test_without_anchored_includes_every_file_is_walked_as_flower_does(tmp_path: Path) -> None:
    from flwr.cli.build import build_fab_from_disk

    for include in ("", 'fab-include = ["**/*.py"]'):
        app = make_app(tmp_path / str(len(include)), include)
        assert include_roots(app) is None
        assert ".venv/lib/site.py" in app_files(app)
        assert build_bundle(app) == build_fab_from_disk(app)
    assert "tests/test_app.py" not in members(build_bundle(app))  # Flower's own exclusions


def test_a_staged_copy_bundles_to_the_same_digest(tmp_path: Path) -> None:
    app = make_app(tmp_path, 'fab-include = ["/pkg/**"]')
    dest = tmp_path / "staged"
    (dest / "stale").mkdir(parents=True)  # what an earlier copy left is not carried over
    digest = stage_app(app, dest)
    assert digest == app_digest(app) == app_digest(dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        ".gitignore",
        "pkg/__init__.py",
        "pkg/app.py",
        "pkg/sub/model.py",
        "pkg/sub/presets.json",
        "pyproject.toml",
    ]


def test_echofls_bundle_is_its_three_packages(tmp_path: Path) -> None:
    from flwr.cli.build import build_fab_from_disk

    assert include_roots(ROOT) == ["common", "fl_client", "fl_server"]
    content = build_bundle(ROOT)
    tops = {name.split("/", 1)[0] for name in members(content)}
    assert tops == {".info", "common", "fl_client", "fl_server", "pyproject.toml"}
    assert "fl_client/client_app.py" in members(content)
    assert "fl_server/server_app.py" in members(content)
    # a copy of the checkout without its .venv, data and runs: the same bytes by Flower's walk
    copy = tmp_path / "checkout"
    for relative in app_files(ROOT):
        (copy / relative).parent.mkdir(parents=True, exist_ok=True)
        (copy / relative).write_bytes((ROOT / relative).read_bytes())
    assert build_fab_from_disk(copy) == content
    assert stage_app(ROOT, tmp_path / "staged") == hashlib.sha256(content).hexdigest()


def test_an_unreadable_config_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.flwr.app\n")
    with pytest.raises(ConfigError, match=r"pyproject\.toml: not a readable Flower app config"):
        include_roots(tmp_path)
    with pytest.raises(EchoflError):
        app_digest(tmp_path / "missing")


def test_the_simulation_engine_stages_the_app_once_per_study(tmp_path: Path) -> None:
    from simulations.engine import SimulationEngine

    engine = SimulationEngine(tmp_path / "flwr")  # starts nothing until a run
    first = engine.staged_app(ROOT)
    (first / "stale.py").write_text("# would be seen by a second copy\n")
    assert engine.staged_app(ROOT) == first and (first / "stale.py").is_file()  # one copy
    (first / "stale.py").unlink()
    assert first.is_relative_to(tmp_path / "flwr") and app_digest(first) == app_digest(ROOT)
