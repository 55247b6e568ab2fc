"""A simulation that outgrows one machine runs on a Ray cluster through Flower's simulation
backend, with nothing in echofl changed but ``resources.ray_address``: a real cluster (a head and
one worker node started with ``ray start`` on loopback, unique ports, its own temp folder), a
3-site federation run against it, the sites' actors found on the cluster's nodes (one per node:
each node has one CPU, each site asks for one), no Ray started by Flower itself, and every
process of the cluster stopped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
import pytest

from common.processes import family, free_port, kill_all, processes_mentioning
from simulations.engine import Resources, SimulationEngine
from tests.helpers import ProcessWatch, three_site_federation

APP_DIR = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def ray(*args: str, temp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run(
        [RAY, "start", *args, "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
         "--temp-dir", str(temp), "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out


def raylets(temp: Path) -> set[int]:
    return {
        p for p in processes_mentioning(str(temp)) if psutil.Process(p).name().startswith("raylet")
    }


class ActorWatch:
    """Samples which raylet each ClientApp actor process runs under while the run lasts."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}  # actor pid -> its raylet's pid
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def watch(self) -> None:
        while not self.stop.wait(0.5):
            for proc in psutil.process_iter(["cmdline"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if "ClientAppActor" not in cmd:
                    continue
                try:
                    parents = proc.parents()
                except psutil.Error:
                    continue
                raylet = next((p.pid for p in parents if p.name().startswith("raylet")), 0)
                self.seen.setdefault(proc.pid, raylet)


@pytest.fixture(scope="module")
def on_cluster(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("raycluster")
    sites = three_site_federation(base, seed=11)
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths
    port = free_port()
    watch = ProcessWatch(str(temp), str(base)).__enter__()
    out: dict = {"base": base}
    try:
        ray("--head", "--port", str(port), "--include-dashboard", "false",
            "--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port()),
            temp=temp)  # fmt: skip
        ray("--address", f"127.0.0.1:{port}", temp=temp)
        out["cluster_raylets"] = raylets(temp)
        actors = ActorWatch()
        actors.thread.start()
        engine = SimulationEngine(
            base / "flwr", Resources(cpus_per_site=1, ray_address=f"127.0.0.1:{port}")
        )
        with engine:
            outcome = engine.run(
                APP_DIR,
                {
                    "num-server-rounds": 1,
                    "local-epochs": 1,
                    "batch-size": 8,
                    "image-size": 32,
                    "min-sites": 3,
                    "client-threads": 1,
                    "model-channels": "4,8,16",
                    "federated-evaluation": False,
                    "output-dir": str(base / "out"),
                    "cache-dir": str(base / "cache"),
                    "sim-sites": str(sites),
                },
                3,
                timeout=900,
            )
        actors.stop.set()
        actors.thread.join()
        out["outcome"] = outcome
        out["actors"] = actors.seen
        out["raylets_after_run"] = raylets(temp)
    finally:
        # the cluster's processes, with their children and the daemons `ray start` detached
        # (e.g. its client server): everything this test started, as the watch recorded it
        kill_all(family(processes_mentioning(str(temp))), 10.0)
        watch.__exit__()
        kill_all(set(watch.seen), 10.0)
        out["leftovers"] = watch.leftovers()
    return out


def test_the_sites_ran_on_the_clusters_nodes(on_cluster: dict) -> None:
    outcome = on_cluster["outcome"]
    assert outcome.returncode == 0, "\n".join(outcome.output[-40:])
    assert (on_cluster["base"] / "out" / "checkpoints" / "final.pt").is_file()
    cluster = on_cluster["cluster_raylets"]
    assert len(cluster) == 2  # the head's and the worker node's
    placed = set(on_cluster["actors"].values())
    # actors on both nodes and nowhere else (a Ray started by Flower would have its own raylet)
    assert placed == cluster, (on_cluster["actors"], cluster)
    assert on_cluster["raylets_after_run"] == cluster  # the cluster kept its two nodes


def test_nothing_of_the_cluster_is_left_running(on_cluster: dict) -> None:
    assert on_cluster["leftovers"] == {}


@pytest.fixture(scope="module")
def kept_ray(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``Resources(keep_ray=True)``: the engine starts one Ray head that every run joins."""
    base = tmp_path_factory.mktemp("keptray")
    sites = three_site_federation(base, seed=12)
    watch = ProcessWatch(str(base)).__enter__()
    out: dict = {}
    try:
        actors = ActorWatch()
        actors.thread.start()
        with SimulationEngine(base / "flwr", Resources(keep_ray=True)) as engine:
            engine.start()
            assert engine.ray is not None
            temp = engine.ray.temp
            watch.markers.append(str(temp))
            out["head_raylets"] = raylets(temp)
            out["outcomes"] = [
                engine.run(
                    APP_DIR,
                    {
                        "num-server-rounds": 1,
                        "image-size": 32,
                        "batch-size": 8,
                        "min-sites": 3,
                        "client-threads": 1,
                        "model-channels": "4,8,16",
                        "federated-evaluation": False,
                        "output-dir": str(base / f"out-{i}"),
                        "cache-dir": str(base / "cache"),
                        "sim-sites": str(sites),
                    },
                    3,
                    timeout=900,
                )
                for i in range(2)
            ]
            out["head_raylets_after"] = raylets(temp)
        actors.stop.set()
        actors.thread.join()
        out["actors"] = actors.seen
        out["temp_left"] = processes_mentioning(str(temp))
    finally:
        watch.__exit__()
        out["leftovers"] = watch.leftovers()
    return out


def test_two_runs_join_the_ray_head_the_engine_keeps(kept_ray: dict) -> None:
    for outcome in kept_ray["outcomes"]:
        assert outcome.returncode == 0, "\n".join(outcome.output[-40:])
    head = kept_ray["head_raylets"]
    assert len(head) == 1 and kept_ray["head_raylets_after"] == head  # the same head throughout
    assert kept_ray["actors"] and set(kept_ray["actors"].values()) == head
    assert kept_ray["temp_left"] == [] and kept_ray["leftovers"] == {}  # close() stops it all
