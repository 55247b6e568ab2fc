"""fl-client's supervision of its SuperNode, with a stand-in process for the SuperNode (the real
one, revoked while connected, is in test_e2e_tls.py) and for the site worker beside it: a
SuperNode that ends by itself is started again; a refused key ends fl-client with exit code 3; one
that keeps failing at once is given up; an operator's SIGTERM stops it without a restart; a site
worker that dies is started again while the SuperNode keeps running."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from fl_client import cli

STAND_IN = """
import pathlib, sys, time
count = pathlib.Path(sys.argv[1])
n = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(n))
behaviour = sys.argv[2]
if behaviour == "refused-on-restart" and n >= 2:
    print("ERROR: activation failed [code: 2004]", flush=True)
    time.sleep(30)  # like the SuperNode, it does not exit by itself after saying so
elif behaviour == "long":
    time.sleep(30)
"""

WORKER_STAND_IN = """
import pathlib, sys, time
count = pathlib.Path(sys.argv[1])
n = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(n))
if sys.argv[2] == "dies-once" and n == 1:
    raise SystemExit(9)
time.sleep(30)
"""


@pytest.fixture
def supervised(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    worker = tmp_path / "worker_stand_in.py"
    worker.write_text(WORKER_STAND_IN)
    count = tmp_path / "starts"
    messages: list[str] = []
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def make(behaviour: str, worker_behaviour: str = "stays") -> cli.Supervisor:
        monkeypatch.setattr(
            cli,
            "supernode_command",
            lambda _config: [sys.executable, str(script), str(count), behaviour],
        )
        monkeypatch.setattr(
            cli,
            "worker_command",
            lambda _config, _path: [
                sys.executable,
                str(worker),
                str(tmp_path / "worker-starts"),
                worker_behaviour,
            ],
        )
        monkeypatch.setattr(cli, "supernode_env", lambda _config: dict(os.environ))
        monkeypatch.setattr(cli, "write_superexec_secret", lambda _config: None)
        config = type("Config", (), {"site": "A", "private_key": Path("site.key")})()
        return cli.Supervisor(config, messages.append, restart_delay_s=0.1, max_quick_failures=3)

    yield make, count, messages
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def test_a_key_refused_at_the_restart_ends_with_exit_code_3(supervised) -> None:  # type: ignore[no-untyped-def]
    make, count, messages = supervised
    assert make("refused-on-restart").run() == cli.EXIT_UNREGISTERED
    assert count.read_text() == "2"  # the first ended by itself, the second was refused
    assert "ended without being asked to" in messages[0]
    assert "REFUSED: site A's key is not registered" in messages[-1]


def test_a_supernode_that_keeps_failing_is_given_up(supervised) -> None:  # type: ignore[no-untyped-def]
    make, count, messages = supervised
    assert make("exit").run() == 1
    assert count.read_text() == "3"
    assert "3 times in a row within a minute" in messages[-1]


def test_sigterm_stops_without_a_restart(supervised) -> None:  # type: ignore[no-untyped-def]
    make, count, _ = supervised
    supervisor = make("long")
    threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    started = time.monotonic()
    code = supervisor.run()
    assert time.monotonic() - started < 15
    assert code == -signal.SIGTERM
    assert count.read_text() == "1"


def test_a_site_worker_that_dies_is_started_again(supervised, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make, count, messages = supervised
    supervisor = make("long", "dies-once")
    threading.Timer(4.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    supervisor.run()
    assert (tmp_path / "worker-starts").read_text() == "2"
    assert count.read_text() == "1"  # the SuperNode kept running
    assert any("the site worker ended (exit code 9); starting it again" in m for m in messages)


def test_a_worker_whose_fl_client_is_already_gone_ends_at_once(tmp_path: Path) -> None:
    """fl-client killed while it was starting its worker: the worker, now a child of init (or a
    subreaper), must not run on its own; it ends before loading anything."""
    import subprocess

    from tests.helpers import minimal_site_config

    config = minimal_site_config(tmp_path, audit_log=str(tmp_path / "audit.jsonl"))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that is not this worker's parent
    done = subprocess.run(
        [sys.executable, "-m", "fl_client.worker", "--config", str(config), "--site", "A",
         "--parent", str(gone.pid)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "site worker ready" not in done.stdout
    assert not (tmp_path / "audit.jsonl").exists()


@pytest.mark.parametrize("supernode", ["silent", "absent"])
def test_a_worker_whose_supernode_hangs_or_is_gone_still_stops_on_sigterm(
    tmp_path: Path, supernode: str
) -> None:
    """The SuperNode's Runtime API accepts connections and never answers (a hung SuperNode), or
    nothing listens any more (it died): each AcquireTask is bounded and is not retried inside the
    call, so the worker still ends on SIGTERM, within one request's time limit."""
    import socket
    import subprocess

    from fl_client.worker import REQUEST_TIMEOUT_S, RETRY_S
    from tests.helpers import minimal_site_config

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if supernode == "silent":
        listener.listen(8)  # connections are accepted by the kernel and never answered
    else:
        listener.close()  # the port is free: connection refused
    home = tmp_path / "flwr"
    config = minimal_site_config(
        tmp_path, runtime_port=port, flwr_home=str(home), task_start="spawn",
        audit_log=str(tmp_path / "audit.jsonl"),
    )  # fmt: skip
    home.mkdir()
    (home / "superexec-A.secret").write_bytes(b"s" * 32)
    worker = subprocess.Popen(
        [sys.executable, "-m", "fl_client.worker", "--config", str(config), "--site", "A",
         "--parent", str(os.getpid())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        for line in worker.stdout:  # polling has begun once it is ready
            if "site worker ready" in line:
                break
        time.sleep(REQUEST_TIMEOUT_S / 2)  # inside a poll (silent) or between retries (absent)
        worker.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = worker.wait(timeout=REQUEST_TIMEOUT_S + RETRY_S + 10)
        assert code == 0
        assert time.monotonic() - started <= REQUEST_TIMEOUT_S + RETRY_S + 5
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        listener.close()
