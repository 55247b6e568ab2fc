"""Processes on this machine: free loopback ports, process trees, stopping them cleanly.

Process discovery goes through psutil (portable); no Flower here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time

import psutil

_GIVEN: set[int] = set()  # ports this process has handed out


def free_port() -> int:
    """A loopback port free now, never one this process handed out before: the OS may give a
    just-closed port again, so two calls in a row (the sites' port and the SuperLink's behind
    it) could otherwise return the same number."""
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise OSError("no loopback port this process has not handed out already (1000 tries)")


def process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, command line) of every live process."""
    table = {}
    for proc in psutil.process_iter(["ppid", "cmdline", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            sid = os.getsid(proc.pid)
        except OSError:
            continue
        table[proc.pid] = (info["ppid"] or 0, sid, " ".join(info["cmdline"] or []))
    return table


def processes_mentioning(text: str) -> list[int]:
    return [pid for pid, (_, _, cmd) in process_table().items() if text in cmd]


def family(leaders: list[int]) -> set[int]:
    """The leaders, their sessions, their descendants, and the processes that watch one of
    them (Flower starts ``flwr-simulation`` / ``flwr-serverapp`` with ``--parent-pid``)."""
    table = process_table()
    family = set(leaders)
    while True:
        # never our own session: only a detached SuperLink's session is taken down whole
        sessions = {table[p][1] for p in family if p in table} - {os.getsid(0)}
        grown = {
            pid
            for pid, (ppid, sid, cmd) in table.items()
            if ppid in family
            or sid in sessions
            or any(f"--parent-pid {p} " in cmd + " " for p in family)
        } | family
        if grown == family:
            return family
        family = grown


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_all(pids: set[int] | list[int], grace: float = 5.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        targets = [p for p in pids if alive(p)]
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in targets):
            time.sleep(0.1)
