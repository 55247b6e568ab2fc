"""Processes on this machine: free loopback ports, process trees, stopping them cleanly.

Linux ``/proc`` only (the platform echofl targets); no Flower here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, command line) of every live process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), int(fields[3]), cmd)
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
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


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
