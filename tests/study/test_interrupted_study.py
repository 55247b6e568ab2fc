"""A study stopped with SIGTERM (a scheduler's time limit, ``timeout``) stops every Flower and
Ray process it started and says how to continue; parallel runs on one shared Ray are refused."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.config import validate_config
from common.errors import ConfigError
from simulations.experiment import ExperimentConfig, ResourcesConfig
from tests.helpers import ProcessWatch

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
name = "stopped"
seeds = [0]
data_dir = "data"
output_dir = "runs"
[budget]
rounds = 200
[recipe.preprocess]
size = [32, 32]
[recipe.train]
epochs = 1
batch_size = 8
[recipe.model]
channels = [4, 8, 16]
[[sites]]
name = "A"
vendor = "A"
format = "camus-nifti"
cases = 4
[[sites]]
name = "B"
vendor = "B"
format = "echonet-dynamic"
cases = 4
[[conditions]]
name = "federated"
kind = "federated"
"""


def test_sigterm_stops_every_process_of_the_study(tmp_path: Path) -> None:
    (tmp_path / "stopped.toml").write_text(CONFIG)
    command = [sys.executable, str(REPO / "simulations" / "run.py"), "--config", "stopped.toml"]
    with ProcessWatch(str(tmp_path)) as watch:
        proc = subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 300
        log = tmp_path / "runs" / "stopped" / "runs" / "federated" / "seed-0" / "metrics.jsonl"
        while time.monotonic() < deadline and proc.poll() is None:
            if log.is_file() and '"round-done"' in log.read_text():
                break  # rounds are going: SuperLink, ServerApp, Ray and the sites are up
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        seen_before = dict(watch.seen)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted (signal SIGTERM)" in err and "continues from them" in err
    commands = " ".join(seen_before.values())
    assert "superlink" in commands and "ray" in commands  # the watch saw what it started
    assert watch.leftovers() == {}


def test_parallel_runs_on_one_shared_ray_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    raw = {"name": "x", "sites": [{"name": "A", "vendor": "A", "format": "camus-nifti"}]}
    with pytest.raises(ConfigError, match=r"parallel_runs = 4 with keep_ray.*deadlock"):
        validate_config(
            ExperimentConfig, {**raw, "resources": {"keep_ray": True, "parallel_runs": 4}}, "x.toml"
        )
    assert ResourcesConfig(keep_ray=True).federated_workers() == 1  # 0 = one per core: here 1
    assert ResourcesConfig(ray_address="10.0.0.1:6379", parallel_runs=1).federated_workers() == 1
    assert ResourcesConfig(parallel_runs=3).federated_workers() == 3
