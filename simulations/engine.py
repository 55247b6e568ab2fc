"""Running the echofl Flower app on Flower's simulation engine, the supported way.

``flwr run <app> <connection> --stream`` against a *managed local SuperLink* (address
``:local:``), which Flower starts in simulation mode on first use. echofl gives every
simulation its own ``FLWR_HOME`` (connection file, SuperLink state and log) and its own free
loopback ports (``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT`` / ``FLWR_LOCAL_CONTROL_API_PORT``), turns
telemetry, update checks and runtime dependency installation off, and stops the background
SuperLink (with everything it started: ServerApp, simulation, Ray) when the run ends, so that
nothing is left running. Scale-out beyond one node is Flower's and Ray's: with
``Resources.ray_address`` (experiment config ``resources.ray_address``, or ``RAY_ADDRESS`` in the
environment) Flower's Ray backend joins that existing cluster instead of starting Ray here
(its ``ray.init()`` reads ``RAY_ADDRESS``), and the simulated sites' actors are placed on the
cluster's nodes; nothing else changes.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.app_bundle import stage_app
from common.errors import EchoflError
from common.processes import family, free_port, kill_all, processes_mentioning

CONNECTION = "echofl-sim"


@dataclass(frozen=True)
class Resources:
    """Per simulated site: CPU cores and GPU fraction (Ray scheduling hints). Several sites
    share one GPU with ``gpus_per_site < 1``; parallel sites = min(CPUs / cpus, GPUs / gpus)."""

    cpus_per_site: float = 1.0
    gpus_per_site: float = 0.0
    ray_address: str = ""  # an existing Ray cluster (head "host:port"); "" = Ray on this machine
    # without ray_address: start one local Ray head for all runs of this engine (a study), so
    # that each run joins it instead of starting and stopping Ray itself
    keep_ray: bool = False


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def run_config_arg(values: Mapping[str, Any]) -> str:
    """``k1=v1 k2="text"`` as ``flwr run --run-config`` expects (TOML values)."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in values.items())


def stop_local_superlink(flwr_home: Path, grace: float = 5.0) -> int:
    """Stop the managed SuperLink of this ``FLWR_HOME`` and everything it started
    (ServerApp, simulation, Ray). Returns how many processes were signalled."""
    leaders = processes_mentioning(str(flwr_home / "local-superlink"))
    targets = family(leaders) - {os.getpid(), os.getppid()}
    kill_all(targets, grace)
    return len(targets)


def simulation_env(flwr_home: Path, ray_address: str = "") -> dict[str, str]:
    env = dict(os.environ)
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
            "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "RAY_DEDUP_LOGS": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    )
    bin_dir = str(Path(sys.executable).parent)  # flwr, flower-superlink, flwr-* live here
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def write_connection(flwr_home: Path) -> None:
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = ":local:"\n'
    )


@dataclass
class SimulationOutcome:
    returncode: int
    seconds: float
    output: list[str]


class LocalRay:
    """A Ray head on this machine for the engine's lifetime (``Resources.keep_ray``): ``ray
    start --head --block`` in its own session, loopback only, unique ports and its own temp
    folder; stopped with everything it started."""

    def __init__(self, env: dict[str, str]) -> None:
        import tempfile

        self.temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: socket paths
        self.address = f"127.0.0.1:{free_port()}"
        command = [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            self.address.rsplit(":", 1)[1],
            "--num-cpus",
            str(os.cpu_count() or 1),
            "--include-dashboard",
            "false",
            "--dashboard-port",
            str(free_port()),
            "--ray-client-server-port",
            str(free_port()),
            "--temp-dir",
            str(self.temp),
            "--disable-usage-stats",
        ]
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while not list(self.temp.glob("session_*/sockets/raylet*")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"could not start a local Ray head ({shlex.join(command)})")
            time.sleep(0.3)

    def stop(self) -> None:
        targets = family([self.proc.pid, *processes_mentioning(str(self.temp))])
        kill_all(targets - {os.getpid(), os.getppid()}, 10.0)


def require_simulation_extra() -> None:
    """Flower's simulation engine runs on Ray, an optional extra (hospitals do not need it)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise EchoflError(
            "research simulation needs Flower's simulation engine (Ray), which is not installed: "
            "pip install -e '.[simulation]' (hospitals and the coordinator do not need it)"
        )


class SimulationEngine:
    """A project-owned ``FLWR_HOME`` with its managed local SuperLink (started by the first
    run, reused by later ones, stopped by :meth:`close` or on leaving a ``with`` block); with
    ``keep_ray``, also one Ray head that every run joins."""

    def __init__(self, flwr_home: Path, resources: Resources | None = None) -> None:
        require_simulation_extra()
        self.flwr_home = flwr_home.resolve()
        self.resources = resources or Resources()
        write_connection(self.flwr_home)
        self.env = simulation_env(self.flwr_home, self.resources.ray_address)
        self.ray: LocalRay | None = None
        self._lock = threading.Lock()
        self._staged: dict[Path, Path] = {}  # app folder -> the copy of its bundle's files
        self._started = False
        self._interrupted = False

    def start(self) -> None:
        """Start the managed SuperLink once (``flwr ls`` brings it up), so that concurrent
        runs do not race to start it."""
        with self._lock:
            if self._interrupted:
                raise RuntimeError("the study was interrupted: no new run is started")
            if self._started:
                return
            if self.resources.keep_ray and not self.resources.ray_address:
                self.ray = LocalRay(self.env)
                self.env["RAY_ADDRESS"] = self.ray.address  # before the SuperLink starts
            proc = subprocess.run(
                ["flwr", "ls", CONNECTION],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(
                    "could not start the local SuperLink: " + (proc.stdout + proc.stderr)[-1500:]
                )
            self._started = True

    def __enter__(self) -> SimulationEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def interrupt(self) -> None:
        """Stop everything now (the study was interrupted): the runs in flight end with the
        SuperLink, and no later run starts a new one."""
        with self._lock:
            self._interrupted = True
        self.close()

    def close(self) -> None:
        stop_local_superlink(self.flwr_home)
        if self.ray is not None:
            self.ray.stop()
            self.ray = None

    def staged_app(self, app_dir: Path) -> Path:
        """The bundle's files of ``app_dir``, copied once per engine (a study): ``flwr run`` on
        the source folder would walk every file under it (a ``.venv``, data, run outputs) before
        each run; the copy bundles to the same bytes (common/app_bundle.py). The code a study's
        runs execute is the code at its first run."""
        source = app_dir.resolve()
        with self._lock:
            if source not in self._staged:
                dest = self.flwr_home / "app-bundles" / str(len(self._staged))
                stage_app(source, dest)
                self._staged[source] = dest
            return self._staged[source]

    def run(
        self,
        app_dir: Path,
        run_config: Mapping[str, Any],
        num_sites: int,
        *,
        on_line: Callable[[str], None] | None = None,
        timeout: float = 6 * 3600,
    ) -> SimulationOutcome:
        """``flwr run <app_dir> --stream`` with ``num_sites`` simulated SuperNodes."""
        self.start()
        app = self.staged_app(app_dir)
        federation = (
            f"num-supernodes={num_sites} "
            f"client-resources-num-cpus={self.resources.cpus_per_site:g} "
            f"client-resources-num-gpus={self.resources.gpus_per_site:g}"
        )
        command = [
            "flwr",
            "run",
            str(app),
            CONNECTION,
            "--stream",
            "--run-config",
            run_config_arg(run_config),
            "--federation-config",
            federation,
        ]
        started = time.perf_counter()
        lines: list[str] = []
        proc = subprocess.Popen(
            command,
            env=self.env,
            cwd=app_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                lines.append(line)
                if on_line is not None:
                    on_line(line)
                if time.perf_counter() - started > timeout:
                    raise TimeoutError(f"simulation exceeded {timeout:.0f}s: {shlex.join(command)}")
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return SimulationOutcome(proc.returncode, time.perf_counter() - started, lines)
