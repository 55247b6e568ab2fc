"""fl_client.supernode: Flower's SuperNode with shorter idle waits. The patch point must still
exist in the installed Flower (a Flower upgrade that moves it fails here, not silently), the
waits are capped, and the launcher is Flower's own entry point otherwise."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time

import flwr.supernode.start_client_internal as loop

from fl_client.supernode import prompt_time


def test_flowers_supernode_loop_still_naps_through_the_module_level_time() -> None:
    source = inspect.getsource(loop)
    assert "time.sleep(3)" in source  # the idle wait between asks for a message
    assert "time.sleep(0.5)" in source  # the wait for a finished reply
    assert loop.time is time  # looked up at call time: replacing it reaches those calls
    # the download of a message's arrays goes through the module-level name, with the backoff
    # as keyword arguments that have defaults
    assert "obj_contents = pull_objects(" in source
    params = inspect.signature(loop.pull_objects).parameters
    assert params["initial_backoff"].default == 1 and params["backoff_cap"].default == 10


def test_sleep_is_capped_and_the_rest_is_time() -> None:
    fast = prompt_time(0.05)
    started = time.perf_counter()
    fast.sleep(3)
    assert time.perf_counter() - started < 0.5
    started = time.perf_counter()
    fast.sleep(0.01)
    assert 0.005 < time.perf_counter() - started < 0.2  # shorter waits are kept
    slow = prompt_time(2.0, local_s=0.02)  # Flower's 0.5 s local waits: capped at local_s
    started = time.perf_counter()
    slow.sleep(0.5)
    assert time.perf_counter() - started < 0.2
    assert fast.monotonic is time.monotonic and fast.time is time.time


def test_the_launcher_is_flowers_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fl_client.supernode", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "usage: flower-supernode" in out.stdout and "--superexec-auth-secret-file" in out.stdout
