"""`flwr run .` without a site map (Flower's default simulation: 2 SuperNodes, nothing but
partition ids) trains on the built-in synthetic federation instead of failing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fl_server.metrics_log import read_metrics_log
from simulations.engine import SimulationEngine
from tests.helpers import ProcessWatch

APP_DIR = Path(__file__).resolve().parents[2]


def test_the_default_simulation_runs_on_the_builtin_federation(tmp_path: Path) -> None:
    run_config = {  # the pyproject defaults, a smaller size and one round (no sim-sites)
        "num-server-rounds": 1,
        "image-size": 32,
        "client-threads": 1,
        "output-dir": str(tmp_path / "out"),
        "cache-dir": str(tmp_path / "cache"),
    }
    with ProcessWatch(str(tmp_path)) as watch, SimulationEngine(tmp_path / "flwr") as engine:
        outcome = engine.run(APP_DIR, run_config, num_sites=2, timeout=900)
    assert outcome.returncode == 0, "\n".join(outcome.output[-40:])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sites"] == {"A": ["LA", "LV", "MYO"], "B": ["LV"]}
    assert summary["partial_structures"] == ["LA", "MYO"]
    rounds = [
        r
        for r in read_metrics_log(tmp_path / "out" / "metrics.jsonl")
        if r.get("event") == "round-done"
    ]
    assert [r["round"] for r in rounds] == [1] and sorted(rounds[0]["sites"]) == ["A", "B"]
    assert (tmp_path / "cache" / "builtin-federation" / "A" / "database_nifti").is_dir()
    assert watch.leftovers() == {}


@pytest.mark.parametrize("partition", [0, 5])
def test_builtin_sites_are_the_documented_ones(partition: int, tmp_path: Path) -> None:
    from fl_client.builtin_federation import builtin_site

    spec = builtin_site(partition, tmp_path)
    assert (spec.name, spec.format) == (
        ("A", "camus-nifti") if partition == 0 else ("B5", "echonet-dynamic")
    )
    again = builtin_site(partition, tmp_path)  # generated once, then reused
    assert again == spec
