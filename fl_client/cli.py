"""``fl-client --site X``: a hospital's long-lived federated-learning client.

1. reads and validates ``<config-dir>/<X>.toml`` (see :mod:`fl_client.site_config`);
2. checks everything before connecting: CA certificate and site key present, parseable, valid
   and private; every data file readable with valid labels (this also warms the preprocessing
   cache for the first round);
3. waits for the coordinator (TLS handshake against the federation's CA; retried with a
   readable message while unreachable; a certificate that the CA did not sign is fatal);
4. runs a Flower SuperNode for the site with TLS and node authentication, telemetry and update
   checks off, in Flower's process isolation mode with a fresh shared secret, and beside it the
   site worker (:mod:`fl_client.worker`), the only process that executes the coordinator's tasks,
   and only for the app bundles the site pinned (``trusted_apps``);
5. watches both: an unregistered key gets an explicit message; a SuperNode that ends without
   being asked to is started again, a worker that dies too (see :class:`Supervisor`).

Exit codes: 0 stopped normally, 2 configuration or data problem, 3 not registered,
4 coordinator unreachable (with ``max_retries``), other: the SuperNode's own.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

from common.data.cache import load_site_cached
from common.errors import ConfigError, EchoflError
from common.files import write_secret
from common.labels import format_labelled_set
from common.names import site_name_arg
from common.version import add_version
from fl_client.site_config import SiteConfig, check_files, load_site_config, site_config_path
from fl_client.supernode import POLL_ENV

EXIT_CONFIG, EXIT_UNREGISTERED, EXIT_UNREACHABLE = 2, 3, 4
NOT_REGISTERED_MARK = "[code: 2004]"  # activation refused: the key is not registered

log = logging.getLogger("echofl.fl-client")


class CoordinatorCertificateError(EchoflError):
    """The coordinator answered, but its certificate does not verify against our CA."""


def probe_coordinator(config: SiteConfig, timeout: float = 5.0) -> None:
    """One TLS handshake with the coordinator. ``OSError`` when unreachable;
    :class:`CoordinatorCertificateError` when its certificate does not verify."""
    host, port = config.host_port
    context = ssl.create_default_context(cafile=str(config.ca_certificate))
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            with context.wrap_socket(sock, server_hostname=host):
                return
        except ssl.SSLCertVerificationError as exc:
            raise CoordinatorCertificateError(
                f"the coordinator at {config.coordinator} presented a certificate that does not "
                f"verify against {config.ca_certificate} ({exc.verify_message}): wrong CA file, "
                "or the coordinator's certificate lacks this host name"
            ) from None


CHECK_RETRIES = 2  # --check: three attempts over 10 s, then exit 4 (a check does not wait forever)


def wait_for_coordinator(  # type: ignore[no-untyped-def]
    config: SiteConfig, say, retry_s: float = 5.0, max_retries: int | None = None
) -> bool:
    """Probe until the coordinator answers; False after ``max_retries`` (default: the site
    file's ``max_retries``; None: forever) failed retries."""
    limit = config.max_retries if max_retries is None else max_retries
    attempt = 0
    while True:
        attempt += 1
        try:
            probe_coordinator(config)
            return True
        except OSError as exc:
            if limit is not None and attempt > limit:
                return False
            say(
                f"coordinator {config.coordinator} unreachable ({exc.strerror or exc}); "
                f"retrying in {retry_s:.0f}s (attempt {attempt})"
            )
            time.sleep(retry_s)


def preflight(config: SiteConfig, source: Path, say) -> None:  # type: ignore[no-untyped-def]
    check_files(config, source)
    for folder in (config.flwr_home, config.cache_dir, config.audit_log.parent):
        folder.mkdir(parents=True, exist_ok=True)  # OSError: reported with the path
        if not os.access(folder, os.W_OK):
            raise ConfigError(source, f"{folder} is not writable by this user")
    say(f"certificate and key OK ({config.ca_certificate.name}, {config.private_key.name})")
    pinned = ", ".join(config.trusted_apps) or "none (every task will be refused)"
    say(f"trusted apps (sha256): {pinned}; audit log {config.audit_log}")
    started = time.perf_counter()
    data = load_site_cached(config.spec, config.preprocess, config.cache_dir)
    counts = "/".join(str(len(data.split(s))) for s in ("train", "val", "test"))
    say(
        f"data OK: {len(data)} annotated frames in {config.data_dir} ({config.format}), labelled "
        f"{format_labelled_set(data.labelled_set)}, train/val/test {counts} "
        f"({time.perf_counter() - started:.1f}s)"
    )


def supernode_command(config: SiteConfig) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "fl_client.supernode",  # Flower's flower-supernode, polling more often (see there)
        "--superlink",
        config.coordinator,
        "--root-certificates",
        str(config.ca_certificate),
        "--auth-supernode-private-key",
        str(config.private_key),
        "--node-config",
        config.node_config(),
        "--port",
        str(config.runtime_port),
        "--host",
        "127.0.0.1",
        # tasks are taken by the site worker, which holds the shared secret (fl_client.worker)
        "--isolation",
        "process",
        "--superexec-auth-secret-file",
        str(config.superexec_secret_file),
    ]
    if config.max_retries is not None:
        command += ["--max-retries", str(config.max_retries)]
    return command


def supernode_env(config: SiteConfig) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_HOME": str(config.flwr_home),
            POLL_ENV: str(config.poll_interval_s),
        }
    )
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def worker_command(config: SiteConfig, path: Path) -> list[str]:
    return [
        sys.executable, "-m", "fl_client.worker", "--config", str(path), "--site", config.site,
        "--parent", str(os.getpid()),  # the worker ends when this process does
    ]  # fmt: skip


def write_superexec_secret(config: SiteConfig) -> None:
    """A new random secret shared by the SuperNode and the site worker, readable by this user
    only: without it, nobody can take the SuperNode's tasks."""
    write_secret(config.superexec_secret_file)


class Supervisor:
    """Keeps the site's SuperNode running until the operator stops fl-client.

    The SuperNode ends by itself when the coordinator drops its session (Flower 1.42 shuts a
    node down, with exit code 0 and no reason, when the SuperLink answers UNAUTHENTICATED, e.g.
    after its key was unregistered). fl-client then starts it again: a revoked key is refused at
    that new start ("[code: 2004]"), which ends fl-client with exit code 3 and a message that
    says so; otherwise the site is simply back. A SuperNode that keeps failing soon after its
    start (``max_quick_failures`` times in a row) ends fl-client with its exit code.

    The site worker runs beside the SuperNode, in its own process group (with its tasks): a
    worker that dies is started again at once (its running task is lost; the coordinator's round
    deadline covers it); it is stopped with the SuperNode.
    """

    def __init__(
        self,
        config: SiteConfig,
        say,  # type: ignore[no-untyped-def]
        restart_delay_s: float = 5.0,
        max_quick_failures: int = 5,
        config_path: Path | None = None,
    ) -> None:
        self.config, self.say, self.config_path = config, say, config_path
        self.restart_delay_s, self.max_quick_failures = restart_delay_s, max_quick_failures
        self.stopping = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.worker_starts = 0
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._forward)

    def _forward(self, signum: int, _frame: object) -> None:
        self.stopping.set()
        for proc in (self.proc, self.worker):
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signum)

    def start_worker(self) -> None:
        self.worker_starts += 1
        self.worker = subprocess.Popen(
            worker_command(self.config, self.config_path or Path()),
            env=supernode_env(self.config),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        threading.Thread(target=_relay, args=(self.worker, "worker"), daemon=True).start()

    def stop_worker(self) -> None:
        if self.worker is not None:
            with_group_cleanup(self.worker.pid)
            self.worker.wait()

    def run(self) -> int:
        quick_failures = 0
        while True:
            started = time.monotonic()
            code = run_supernode(self, self.config, self.say)
            if code == EXIT_UNREGISTERED or self.stopping.is_set():
                return code
            quick = time.monotonic() - started < 60
            quick_failures = quick_failures + 1 if quick else 0
            if quick_failures >= self.max_quick_failures:
                self.say(
                    f"the SuperNode ended {quick_failures} times in a row within a minute of "
                    f"its start (last exit code {code}); giving up"
                )
                return code or 1
            self.say(
                f"the SuperNode ended without being asked to (exit code {code}; the "
                "coordinator may have closed this site's session); starting it again in "
                f"{self.restart_delay_s:g} s"
            )
            if self.stopping.wait(self.restart_delay_s):
                return code


def _relay(proc: subprocess.Popen, name: str, on_line=None) -> None:  # type: ignore[no-untyped-def]
    assert proc.stdout is not None
    for line in proc.stdout:
        log.info("%s: %s", name, line.rstrip())
        print(line, end="", flush=True)
        if on_line is not None:
            on_line(line)


def run_supernode(supervisor: Supervisor, config: SiteConfig, say) -> int:  # type: ignore[no-untyped-def]
    """Run the SuperNode once, in its own process group, with the site worker beside it (and
    again if the worker dies), and relay their output."""
    write_superexec_secret(config)
    proc = subprocess.Popen(
        supernode_command(config),
        env=supernode_env(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    supervisor.proc = proc
    if supervisor.stopping.is_set():  # a stop that arrived while it was being started
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    unregistered = threading.Event()

    def watch(line: str) -> None:
        if NOT_REGISTERED_MARK in line:
            unregistered.set()

    # The output is relayed by a thread (a child may keep the pipe open after the SuperNode
    # itself exits) and the process is watched here.
    reader = threading.Thread(target=_relay, args=(proc, "supernode", watch), daemon=True)
    reader.start()
    supervisor.start_worker()
    worker_started = time.monotonic()
    while proc.poll() is None and not unregistered.is_set():
        worker = supervisor.worker
        if worker is not None and worker.poll() is not None and not supervisor.stopping.is_set():
            quick = time.monotonic() - worker_started < 60
            if quick and supervisor.worker_starts >= supervisor.max_quick_failures:
                say(
                    f"the site worker ended {supervisor.worker_starts} times within a minute of "
                    f"its start (last exit code {worker.returncode}); giving up"
                )
                supervisor.stop_worker()
                with_group_cleanup(proc.pid)
                proc.wait()
                return worker.returncode or 1
            say(f"the site worker ended (exit code {worker.returncode}); starting it again")
            supervisor.stop_worker()  # its tasks, if any survived it
            if not quick:
                supervisor.worker_starts = 0
            supervisor.start_worker()
            worker_started = time.monotonic()
        time.sleep(0.2)
    code = proc.wait() if not unregistered.is_set() else EXIT_UNREGISTERED
    supervisor.stop_worker()
    with_group_cleanup(proc.pid)
    reader.join(timeout=5)
    if unregistered.is_set():
        say(
            f"REFUSED: site {config.site}'s key is not registered with the coordinator (or was "
            "unregistered). Send "
            f"the public key that matches {config.private_key.name} (site.pub) to the "
            f"coordinator and ask them to run: fl-server register --site {config.site}"
        )
        return EXIT_UNREGISTERED
    return code


def with_group_cleanup(pgid: int) -> None:
    """After a hard stop, ClientApp processes may outlive the SuperNode: end its group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["predict"]:  # fl-client predict --site X ...: the site's model, offline
        from fl_client.predict import main as predict

        return predict(argv[1:])
    parser = argparse.ArgumentParser(
        prog="fl-client",
        description="Run this hospital's echofl federated client "
        "(`fl-client predict --help`: segment recordings with the site's final model).",
    )
    add_version(parser)
    parser.add_argument(
        "--site", required=True, type=site_name_arg, help="site name (its <site>.toml is read)"
    )
    parser.add_argument("--config", type=Path, help="the site's config file")
    parser.add_argument(
        "--config-dir",
        type=Path,
        help="folder of <site>.toml files (default $ECHOFL_SITE_DIR or /etc/echofl/sites)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="run the pre-flight checks and the coordinator probe (3 attempts over 10 s unless "
        "the site file sets max_retries), then exit: 0 ready, 2 configuration, 4 unreachable",
    )
    args = parser.parse_args(argv)
    path = site_config_path(args.site, args.config, args.config_dir)

    def say(message: str) -> None:
        print(f"[fl-client {args.site}] {message}", flush=True)
        log.info(message)

    try:
        config = load_site_config(args.site, path)
        if config.log_file is not None:
            config.log_file.parent.mkdir(parents=True, exist_ok=True)
            logging.basicConfig(
                filename=config.log_file,
                level=logging.INFO,
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
        preflight(config, path, say)
        retries = CHECK_RETRIES if args.check and config.max_retries is None else None
        if not wait_for_coordinator(config, say, max_retries=retries):
            say(
                f"coordinator {config.coordinator} still unreachable after "
                f"{retries if retries is not None else config.max_retries} retries; giving up"
            )
            return EXIT_UNREACHABLE
        say(f"coordinator {config.coordinator} reachable, certificate verified")
        if args.check:
            return 0
        if not config.trusted_apps:
            say(
                f"WARNING: {path} pins no app (trusted_apps is empty): every task will be "
                "refused until you add the app bundle hash your coordinator announces"
            )
        say("starting the SuperNode (TLS, node authentication) and the site worker")
        return Supervisor(config, say, config_path=path).run()
    except EchoflError as exc:
        print(f"[fl-client {args.site}] error: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    except OSError as exc:  # a folder that cannot be created or written (cache, log, FLWR_HOME)
        where = exc.filename or "a file"
        print(
            f"[fl-client {args.site}] error: {where}: {exc.strerror or exc}",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_CONFIG


if __name__ == "__main__":
    raise SystemExit(main())
