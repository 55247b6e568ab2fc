"""Every echofl command answers --version with echofl's installed version (sites must run the
coordinator's version, so they need to be able to see it)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


@pytest.mark.parametrize("script", [*SCRIPTS, "simulations/run.py"])
def test_version(script: str) -> None:
    if script.endswith(".py"):
        command = [sys.executable, str(REPO / script), "--version"]
    else:
        command = [str(Path(sys.executable).parent / script), "--version"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith(f"(echofl {version('echofl')})"), done.stdout
