"""A whole deployed federation on this machine's loopback: a real coordinator (TLS, node
authentication) and real hospital clients, for demos, end-to-end tests and benchmarks.

Everything runs through the console scripts a hospital and a coordinator use (``fl-server``,
``fl-client``), each long-lived process in its own process group so that a caller can kill a
site (and everything it started) or stop the lot afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import tomli_w

from common.data.synthetic.federation import FederationConfig, generate_federation
from common.processes import family, free_port, processes_mentioning
from fl_server.audit import app_digest
from fl_server.coordinator import DEFAULT_APP_DIR
from fl_server.metrics_log import read_metrics_log

BIN = Path(sys.executable).parent


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def background(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / args[0]), *args[1:]],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


class Cluster:
    """``sites``: site name -> (synthetic data folder, format). Every site pins (trusts) the
    echofl app as it is now, unless ``trusted`` gives a site's list of app bundle hashes;
    ``site_options`` are further site-config keys for every site (e.g. ``task_start``),
    ``coordinator_options`` further coordinator.toml keys (e.g. ``message_store``)."""

    def __init__(
        self,
        base: Path,
        sites: dict[str, tuple[str, str]],
        min_sites: int,
        trusted: dict[str, list[str]] | None = None,
        site_options: dict[str, object] | None = None,
        coordinator_options: dict[str, object] | None = None,
    ) -> None:
        self.base = base
        self.app_sha256 = app_digest(DEFAULT_APP_DIR)
        self.sites = sites
        self.home = base / "coordinator"
        self.port = free_port()  # the sites' address: the fleet-only proxy
        self.superlink_port = free_port()  # the SuperLink behind it, on loopback
        self.superlink: subprocess.Popen | None = None
        self.clients: dict[str, subprocess.Popen] = {}
        init = cli(
            "fl-server",
            "init",
            "--home",
            str(self.home),
            "--host",
            "localhost",
            "--port",
            str(self.port),
            "--listen-host",
            "127.0.0.1",
            "--superlink-port",
            str(self.superlink_port),
            "--min-sites",
            str(min_sites),
            *[x for s in sites for x in ("--site", s)],
        )
        if init.returncode != 0:
            raise RuntimeError(init.stderr)
        if coordinator_options:
            config_file = self.home / "coordinator.toml"
            coordinator = tomllib.loads(config_file.read_text())
            config_file.write_text(tomli_w.dumps({**coordinator, **coordinator_options}))
        self.sites_dir = base / "sites"
        self.sites_dir.mkdir(exist_ok=True)
        for site, (data, fmt) in sites.items():
            bundle = self.home / "bundles" / site
            config = tomllib.loads((bundle / f"{site}.toml").read_text())
            config.update(
                {
                    "data_dir": str(base / "data" / data),
                    "format": fmt,
                    "ca_certificate": str(bundle / "ca.crt"),
                    "private_key": str(bundle / "site.key"),
                    "model_verify_key": str(bundle / "model-signing.pub"),
                    "models_dir": str(self.models_dir(site)),
                    "cache_dir": str(base / f"cache-{site}"),
                    "runtime_port": free_port(),
                    "log_file": str(base / f"{site}.log"),
                    "audit_log": str(self.audit_path(site)),
                    "trusted_apps": (trusted or {}).get(site, [self.app_sha256]),
                    **(site_options or {}),
                }
            )
            (self.sites_dir / f"{site}.toml").write_text(tomli_w.dumps(config))

    def models_dir(self, site: str) -> Path:
        """Where ``site`` keeps the final models the coordinator sends."""
        return self.base / f"models-{site}"

    def audit_path(self, site: str) -> Path:
        return self.base / f"audit-{site}.jsonl"

    @staticmethod
    def generate(base: Path, sites: list[dict]) -> None:
        generate_federation(
            FederationConfig.model_validate(
                {"seed": 5, "output_dir": str(base / "data"), "workers": 1, "sites": sites}
            ),
            progress=lambda _: None,
        )

    def start(self) -> None:
        """``fl-server start`` (the SuperLink and its fleet-only proxy), until the SuperLink
        answers ``GET /health`` through the proxy."""
        self.superlink = background(
            "fl-server", "start", "--home", str(self.home), log=self.base / "superlink.out"
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.superlink.poll() is not None:
                break
            if self.get("/health")[0] == 200:
                return
            time.sleep(0.5)
        log = (self.base / "superlink.out").read_text()[-2000:]
        raise TimeoutError(f"the coordinator did not come up:\n{log}")

    def get(self, path: str, method: str = "GET", body: bytes = b"") -> tuple[int, str]:
        """One HTTPS request to the sites' address (verified with the CA): (status, body);
        status 0 when nothing answered."""
        import http.client

        context = ssl.create_default_context(cafile=str(self.home / "pki" / "ca" / "ca.crt"))
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=context)
            conn.request(method, path, body=body or None)
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        except OSError:
            return 0, ""

    def register(self, *sites: str) -> list[subprocess.CompletedProcess]:
        return [cli("fl-server", "register", "--home", str(self.home), "--site", s) for s in sites]

    def start_client(self, site: str) -> subprocess.Popen:
        proc = background(
            "fl-client",
            "--site",
            site,
            "--config-dir",
            str(self.sites_dir),
            log=self.base / f"client-{site}.out",
        )
        self.clients[site] = proc
        return proc

    def kill_client(self, site: str) -> None:
        """A hospital's machine dies: fl-client, its SuperNode (own session) and ClientApps."""
        proc = self.clients.pop(site)
        for pid in family([proc.pid]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        # and whatever fl-client started while it was being killed (a worker it restarted):
        # on a dead machine nothing of the site survives
        for _ in range(3):
            time.sleep(0.3)
            for pid in processes_mentioning(str(self.sites_dir / f"{site}.toml")):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def run_command(self, name: str, rounds: int, run_config: str) -> list[str]:
        return [
            str(BIN / "fl-server"),
            "run",
            "--home",
            str(self.home),
            "--rounds",
            str(rounds),
            "--name",
            name,
            "--run-config",
            run_config,
        ]

    def rows(self, name: str) -> list[dict]:
        return read_metrics_log(self.home / "runs" / name / "metrics.jsonl")

    def wait_for(  # type: ignore[no-untyped-def]
        self, name: str, predicate, timeout: float = 600, run: subprocess.Popen | None = None
    ) -> list[dict]:
        """Poll the run's metrics log until ``predicate(rows)``; fail at once if ``run`` (the
        `fl-server run` process) has ended before that."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.rows(name)
            if predicate(rows):
                return rows
            if run is not None and run.poll() is not None:
                raise RuntimeError(f"fl-server run {name} ended (exit {run.returncode}) first")
            time.sleep(0.5)
        raise TimeoutError(f"condition not reached in run {name} within {timeout:g} s")

    def close(self) -> None:
        for site in list(self.clients):
            stop(self.clients.pop(site))
        if self.superlink is not None:
            stop(self.superlink)
        time.sleep(2)


def done_rounds(rows: list[dict]) -> dict[int, list[str]]:
    return {r["round"]: r["sites"] for r in rows if r.get("event") == "round-done"}
