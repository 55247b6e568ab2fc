"""The site worker (fl_client.worker) against a real SuperLink and a real SuperNode in process
isolation on loopback (no TLS here: the TLS deployment is test_e2e_tls.py), with a small pinned
app of its own:

- a task forked from the warm worker computes exactly what a task in a fresh interpreter
  computes (torch training, same seed: the same bytes);
- a task that outlives ``task_timeout_s`` is stopped; the coordinator gets an error reply that
  says so, the site's audit log records it;
- without the SuperExec secret, nobody can take the SuperNode's tasks;
- nothing is left running afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

from common.audit import read_audit
from common.processes import free_port
from fl_server.audit import app_digest
from tests.helpers import ProcessWatch, acquire_task_without_secret

BIN = Path(sys.executable).parent

PYPROJECT = """
[project]
name = "workerprobe"
version = "1.0.0"

[tool.flwr.app]
publisher = "echofl-tests"

[tool.flwr.app.components]
serverapp = "probe:server"
clientapp = "probe:client"

[tool.flwr.app.config]
out = ""
mode = "train"
"""

PROBE = """
import json, os, pathlib, sys, time
import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

client = ClientApp()
server = ServerApp()


@client.train()
def train(msg, context):
    if msg.content["config"]["mode"] == "sleep":
        time.sleep(600)
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 2, 3, padding=1))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    x = torch.randn(16, 1, 32, 32)
    y = (x > 0).long()[:, 0]
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    metrics = MetricRecord({"loss": float(loss), "threads": torch.get_num_threads(),
                            "pid": os.getpid()})
    return Message(RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": metrics}),
                   reply_to=msg)


@server.main()
def main(grid, context):
    deadline = time.monotonic() + 60
    while not (nodes := list(grid.get_node_ids())) and time.monotonic() < deadline:
        time.sleep(0.5)
    config = ConfigRecord({"mode": context.run_config["mode"]})
    messages = [grid.create_message(RecordDict({"config": config}), "train", n, "") for n in nodes]
    out = []
    for m in grid.send_and_receive(messages, timeout=120):
        if m.has_error():
            out.append({"error": m.error.reason})
        else:
            state = m.content["arrays"].to_numpy_ndarrays()
            digest = __import__("hashlib").sha256(b"".join(a.tobytes() for a in state)).hexdigest()
            out.append({"digest": digest, **dict(m.content["metrics"])})
    pathlib.Path(context.run_config["out"]).write_text(json.dumps(out))
"""


def _env(flwr_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def _stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
            return


class Node:
    """A SuperLink, one SuperNode (process isolation, SuperExec secret) and the site worker."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port, self.runtime_port = free_port(), free_port()
        self.app = base / "probe-app"
        self.app.mkdir()
        (self.app / "pyproject.toml").write_text(PYPROJECT)
        (self.app / "probe.py").write_text(PROBE)
        self.sha256 = app_digest(self.app)
        self.ctl_home = base / "ctl"
        self.ctl_home.mkdir()
        (self.ctl_home / "config.toml").write_text(
            f'[superlink]\ndefault = "t"\n\n[superlink.t]\naddress = "127.0.0.1:{self.port}"\n'
            "insecure = true\n"
        )
        self.site_home = base / "site-flwr"
        self.secret = self.site_home / "superexec-A.secret"
        self.site_home.mkdir()
        self.secret.write_text("a shared secret for this test")
        self.superlink = _start(
            [
                "flower-superlink",
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database",
                str(base / "state.db"),
                "--disable-runtime-dependency-installation",
            ],
            base / "superlink.out",
            _env(base / "superlink-flwr"),
        )
        self.supernode = _start(
            [
                "flower-supernode",
                "--insecure",
                "--superlink",
                f"127.0.0.1:{self.port}",
                "--isolation",
                "process",
                "--superexec-auth-secret-file",
                str(self.secret),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.runtime_port),
                "--node-config",
                'site="A"',
            ],
            base / "supernode.out",
            _env(self.site_home),
        )
        self.worker: subprocess.Popen | None = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                break
            time.sleep(0.3)

    def site_config(self, name: str, **fields: object) -> Path:
        config = {
            "site": "A",
            "coordinator": f"127.0.0.1:{self.port}",
            "ca_certificate": "unused-here.crt",
            "private_key": "unused-here.key",
            "data_dir": str(self.base),
            "format": "folder",
            "flwr_home": str(self.site_home),
            "runtime_port": self.runtime_port,
            "audit_log": str(self.base / "audit-A.jsonl"),
            "trusted_apps": [self.sha256],
            **fields,
        }
        path = self.base / f"{name}.toml"
        path.write_text(tomli_w.dumps(config))
        return path

    def start_worker(self, config: Path) -> None:
        if self.worker is not None:
            _stop(self.worker)
        self.worker = _start(
            [sys.executable, "-m", "fl_client.worker", "--config", str(config), "--site", "A"],
            self.base / f"worker-{config.stem}.out",
            _env(self.site_home),
        )

    def run(self, tag: str, mode: str = "train") -> list[dict]:
        out = self.base / f"replies-{tag}.json"
        result = subprocess.run(
            [
                str(BIN / "flwr"),
                "run",
                str(self.app),
                "t",
                "--stream",
                "--run-config",
                f'out="{out}" mode="{mode}"',
            ],
            env=_env(self.ctl_home),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert out.is_file(), result.stdout[-3000:] + result.stderr[-2000:]
        return json.loads(out.read_text())

    def close(self) -> None:
        for proc in (self.worker, self.supernode, self.superlink):
            if proc is not None:
                _stop(proc)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("worker")
    watch = ProcessWatch(str(base)).__enter__()
    node = Node(base)
    out: dict = {"node": node}
    try:
        node.start_worker(node.site_config("fork"))
        out["fork"] = node.run("fork")
        node.start_worker(node.site_config("spawn", task_start="spawn"))
        out["spawn"] = node.run("spawn")
        node.start_worker(node.site_config("short", task_timeout_s=3))
        started = time.monotonic()
        out["stopped"] = node.run("stopped", mode="sleep")
        out["stopped_after"] = time.monotonic() - started
        out["intruder"] = acquire_task_without_secret(f"127.0.0.1:{node.runtime_port}")
        out["audit"] = read_audit(base / "audit-A.jsonl")
    finally:
        node.close()
        watch.__exit__()
        out["leftovers"] = watch.leftovers()
    yield out


def test_a_forked_task_computes_what_a_fresh_interpreter_computes(node: dict) -> None:
    (fork,), (spawn,) = node["fork"], node["spawn"]
    assert "digest" in fork and "digest" in spawn, (fork, spawn)
    assert fork["digest"] == spawn["digest"] and fork["loss"] == spawn["loss"]
    assert fork["threads"] == spawn["threads"]
    executed = [e for e in node["audit"] if e["event"] == "task-executed"]
    assert [e["outcome"] for e in executed[:2]] == ["completed", "completed"]
    assert {e["app_sha256"] for e in executed} == {node["node"].sha256}
    # the ClientApp module named in the bundle's pyproject was imported from the bundle
    apps = str(node["node"].site_home / "apps")
    assert all(e["app_module"].startswith(apps) and e["app_module"].endswith("/probe.py")
               for e in executed[:2])  # fmt: skip


def test_a_task_past_its_deadline_is_stopped_and_reported(node: dict) -> None:
    (reply,) = node["stopped"]
    assert "stopped by the site worker (signal SIGTERM)" in reply.get("error", ""), reply
    assert node["stopped_after"] < 60  # not the 600 s the task would have slept
    stopped = [e for e in node["audit"] if e["event"] == "task-stopped"]
    assert len(stopped) == 1 and "task_timeout_s = 3" in stopped[0]["reason"]
    last = [e for e in node["audit"] if e["event"] == "task-executed"][-1]
    assert last["outcome"] == "stopped"


def test_the_runtime_api_refuses_a_task_request_without_the_secret(node: dict) -> None:
    assert node["intruder"].startswith("refused: HTTPStatusError"), node["intruder"]
    assert "401 Unauthorized" in node["intruder"]


def test_no_process_left_behind(node: dict) -> None:
    assert node["leftovers"] == {}


def test_the_secret_file_is_private(tmp_path: Path) -> None:
    from fl_client.cli import write_superexec_secret
    from fl_client.site_config import SiteConfig

    config = SiteConfig(
        site="A",
        coordinator="localhost:9092",
        ca_certificate=tmp_path / "ca.crt",
        private_key=tmp_path / "site.key",
        data_dir=tmp_path,
        format="folder",
        flwr_home=tmp_path / "flwr",
    )
    write_superexec_secret(config)
    first = config.superexec_secret_file.read_bytes()
    assert len(first) == 64 and (config.superexec_secret_file.stat().st_mode & 0o777) == 0o600
    write_superexec_secret(config)  # a new one at every start
    assert config.superexec_secret_file.read_bytes() != first
