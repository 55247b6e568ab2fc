"""The site worker: the only thing that runs code on a hospital's behalf.

``fl-client`` starts the site's SuperNode in Flower's process isolation mode, with a fresh
shared secret, and starts this worker beside it. The worker

- takes the SuperNode's tasks (one per message from the coordinator) from its Runtime API on
  loopback, signing each request with the shared secret (a local user without the secret cannot
  take the site's tasks, and nobody else runs them);
- runs each task in a process of its own through :mod:`fl_client.task`, which refuses any app
  bundle the site has not pinned (``trusted_apps``) before any of it is unpacked;
- is *warm*: it imports torch, NumPy and Flower once and forks each task from itself
  (``task_start = "fork"``), so a message costs a fork instead of a fresh interpreter and ~4 s
  of imports; the app's own modules are still imported from the pinned bundle in every task;
- stops a task that runs longer than ``task_timeout_s`` (SIGTERM: it reports an error reply to
  the coordinator; SIGKILL 10 s later), and audits it;
- ends its tasks when it is stopped; ``fl-client`` restarts it if it dies.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.audit import AuditLog
from common.training.warmup import TRAINING_IMPORTS
from fl_client.site_config import SiteConfig, load_site_config
from fl_client.task import COMPLETED, FAILED, REFUSED, STOPPED, run_task

# Imported once by the worker so that a forked task does not pay for them (third-party only:
# the app's own modules always come from its bundle, see fl_client.task).
PRELOAD = (
    "numpy",
    "torch",
    "pydantic",
    "cryptography",
    "flwr.app",
    "flwr.clientapp",
    "flwr.cli.install",
    "flwr.supernode.runtime.run_clientapp",
    *TRAINING_IMPORTS,  # what a task's first optimiser would import (1.5-1.7 s per task)
)
POLL_S = 0.1  # how often the worker asks the SuperNode for a task
GRACE_S = 10.0  # between SIGTERM and SIGKILL of a task being stopped
ACQUIRE_TASK = "/flwr.proto.Runtime/AcquireTask"
REQUEST_TIMEOUT_S = 5.0  # one AcquireTask call, connect to answer (the SuperNode is on loopback)
RETRY_S = 1.0  # after the SuperNode's Runtime API did not answer


@dataclass
class Running:
    pid: int
    task_id: int
    run_id: int
    started: float
    popen: subprocess.Popen | None = None  # spawn mode
    stop_sent: float | None = None
    reason: str = field(default="")

    def poll(self) -> int | None:
        """The exit code once it ended (negative: killed by that signal), else None."""
        if self.popen is not None:
            return self.popen.poll()
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return -1
        if pid == 0:
            return None
        return os.waitstatus_to_exitcode(status)


class Worker:
    def __init__(  # type: ignore[no-untyped-def]
        self, config: SiteConfig, config_path: Path, say, parent: int | None = None
    ) -> None:
        self.config, self.config_path, self.say = config, config_path, say
        self.audit = AuditLog(config.audit_log)
        self.trusted = frozenset(config.trusted_apps)
        self.running: dict[int, Running] = {}
        self.stopping = False
        # the fl-client that started this worker: when it is gone, so is the worker (also when
        # it died before this process got here, and init or a subreaper became the parent)
        self.parent = os.getppid() if parent is None else parent

    # -- life cycle -----------------------------------------------------------------------
    def run(self) -> int:
        if os.getppid() != self.parent:  # fl-client died while this process was starting
            return 0
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        started = time.perf_counter()
        if self.config.task_start == "fork":
            for name in PRELOAD:
                importlib.import_module(name)
        client = self._client()
        self.say(
            f"site worker ready ({self.config.task_start} per task, "
            f"{time.perf_counter() - started:.1f}s to start); it executes only the app "
            f"bundles pinned in trusted_apps: {', '.join(sorted(self.trusted)) or 'NONE'}"
        )
        if not self.trusted:
            self.say(
                "WARNING: trusted_apps is empty, so every task the coordinator sends is refused; "
                "add the hash the coordinator announces (fl-server app-hash) to the site config"
            )
        try:
            while not self.stopping:
                self.reap()
                self.enforce_deadlines()
                if os.getppid() != self.parent:  # fl-client is gone
                    break
                if not self.acquire(client):
                    time.sleep(POLL_S)
        finally:
            self.stop_all("the site worker is stopping")
            client.close()
        return 0

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self.stopping = True

    def _client(self):  # type: ignore[no-untyped-def]
        from flwr.supercore.interceptors import (
            RuntimeVersionHttpInterceptor,
            SuperExecAuthHttpInterceptor,
        )
        from flwr.supercore.runtime import RuntimeHttpClient

        secret = self.config.superexec_secret_file.read_bytes()
        # One try per poll, each bounded: Flower's own retry invoker retries a dead SuperNode
        # forever inside the call, so the worker would see neither SIGTERM nor its fl-client
        # going away; the poll loop in run() is the retry.
        return RuntimeHttpClient(
            f"http://{self.config.runtime_address}",  # loopback; AcquireTask is signed
            interceptors=[
                RuntimeVersionHttpInterceptor(component_name="SuperExec"),
                SuperExecAuthHttpInterceptor(
                    master_secret=secret, protected_methods={ACQUIRE_TASK}
                ),
            ],
            verify=False,
            timeout=REQUEST_TIMEOUT_S,
            retry_invoker=None,
        )

    # -- tasks ----------------------------------------------------------------------------
    def acquire(self, client) -> bool:  # type: ignore[no-untyped-def]
        """Take one task if the SuperNode has one; True when a task was started."""
        from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
        from flwr.supercore.constant import TaskType

        try:
            res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        except Exception as exc:
            self.say(f"the SuperNode's Runtime API did not answer ({exc}); retrying")
            time.sleep(RETRY_S)
            return False
        if not (res.HasField("task") and res.token):
            return False
        task = res.task
        self.running[task.task_id] = self.launch(res.token, task.task_id, task.run_id)
        return True

    def launch(self, token: str, task_id: int, run_id: int) -> Running:
        now = time.monotonic()
        if self.config.task_start == "spawn":
            popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fl_client.task",
                    "--config",
                    str(self.config_path),
                    "--site",
                    self.config.site,
                ],
                stdin=subprocess.PIPE,
                text=True,
            )
            assert popen.stdin is not None
            popen.stdin.write(token + "\n")  # never on a command line other users can read
            popen.stdin.close()
            return Running(popen.pid, task_id, run_id, now, popen=popen)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the task process
            code = FAILED
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                code = run_task(
                    self.config.runtime_address, token, self.config.site, self.trusted, self.audit
                )
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        return Running(pid, task_id, run_id, now)

    def reap(self) -> None:
        for task_id, task in list(self.running.items()):
            code = task.poll()
            if code is None:
                continue
            del self.running[task_id]
            if code not in (COMPLETED, REFUSED, FAILED, STOPPED):
                self.audit.record(
                    "task-ended-abnormally",
                    site=self.config.site,
                    run=task.run_id,
                    task=task_id,
                    exit_code=code,
                    reason=task.reason or "the task process died",
                )
                self.say(f"task {task_id} of run {task.run_id} ended abnormally (exit {code})")

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for task in self.running.values():
            if task.stop_sent is None and now - task.started > self.config.task_timeout_s:
                task.reason = f"ran longer than task_timeout_s = {self.config.task_timeout_s:g}"
                self.say(f"stopping task {task.task_id} of run {task.run_id}: {task.reason}")
                self.audit.record(
                    "task-stopped",
                    site=self.config.site,
                    run=task.run_id,
                    task=task.task_id,
                    reason=task.reason,
                )
                self._signal(task, signal.SIGTERM)
                task.stop_sent = now
            elif task.stop_sent is not None and now - task.stop_sent > GRACE_S:
                self._signal(task, signal.SIGKILL)

    @staticmethod
    def _signal(task: Running, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(task.pid, sig)

    def stop_all(self, reason: str) -> None:
        for task in self.running.values():
            task.reason = reason
            self._signal(task, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while self.running and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.1)
        for task in self.running.values():
            self._signal(task, signal.SIGKILL)
        time.sleep(0.2)
        self.reap()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fl_client.worker", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="the site's config file")
    parser.add_argument("--site", required=True)
    parser.add_argument("--parent", type=int, help="the fl-client process (default: the parent)")
    args = parser.parse_args(argv)
    config = load_site_config(args.site, args.config)

    def say(message: str) -> None:
        print(f"[fl-client {config.site}] {message}", flush=True)

    return Worker(config, args.config, say, parent=args.parent).run()


if __name__ == "__main__":
    raise SystemExit(main())
