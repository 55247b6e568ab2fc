"""``fl-server demo``: a real federation on this machine's loopback, in one command.

Three synthetic hospitals of different vendors, native formats and labelled sets (A: CAMUS-like
NIfTI with LV, MYO and LA; B: EchoNet-like AVI with LV; D: a handheld-like folder with LV and
LA) join a coordinator through the same commands a real deployment uses (:mod:`fl_server.
loopback`): ``fl-server init`` (PKI, TLS certificates, site bundles), ``fl-server start``
(SuperLink behind the fleet-only proxy), ``fl-server register`` for each site's key,
``fl-client`` per site (SuperNode with TLS and node authentication, the site worker with the app
pinned), ``fl-server run`` for a few rounds; at the end every hospital must hold the signed final
model, verified against the coordinator's public key and equal to the coordinator's. Then every
process the demo started is stopped, and the demo checks that none is left.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common.errors import EchoflError
from common.processes import family, process_table
from common.security.checkpoint import load_checkpoint
from common.security.pki import load_verify_key
from fl_client.models import stored_model
from fl_server.loopback import Cluster

DATA = [
    {"name": "A", "vendor": "A", "format": "camus-nifti"},
    {"name": "B", "vendor": "B", "format": "echonet-dynamic"},
    {"name": "D", "vendor": "D", "format": "folder", "labelled": ["LV", "LA"]},
]
RUN = "demo"


def run_demo(
    base: Path, rounds: int, cases: int, image_size: int, say: Callable[[str], None]
) -> dict[str, str]:
    """The whole demo in ``base`` (made if missing); site -> sha256 of the model it verified.
    Raises :class:`EchoflError` naming the step that failed (the folder keeps the logs)."""
    base.mkdir(parents=True, exist_ok=True)
    say(f"1/5 synthetic hospitals A, B, D ({cases} cases each) in {base / 'data'}")
    Cluster.generate(base, [{**d, "cases": cases} for d in DATA])
    sites = {d["name"]: (d["name"], d["format"]) for d in DATA}
    cluster = Cluster(base, sites, min_sites=len(sites))
    try:
        say(f"2/5 coordinator in {cluster.home} (TLS on 127.0.0.1:{cluster.port}, fleet only)")
        cluster.start()
        for site, done in zip(sites, cluster.register(*sites), strict=True):
            if done.returncode != 0:
                raise EchoflError(f"registering site {site} failed: {done.stderr.strip()}")
        say("3/5 hospitals' fl-client started (logs: " + str(base / "client-<site>.out") + ")")
        for site in sites:
            cluster.start_client(site)
        say(f"4/5 fl-server run: {rounds} round(s) at {image_size} px")
        command = cluster.run_command(
            RUN, rounds, f"image-size={image_size} local-epochs=1 client-threads=1"
        )
        if subprocess.run(command, check=False).returncode != 0:
            raise EchoflError(f"the run failed; logs are in {base}")
        say("5/5 the final model at every hospital, signature and digest checked")
        return verified_models(cluster, sites)
    finally:
        started = started_processes(cluster)
        cluster.close()
        left = leftovers(started)
        if left:
            raise EchoflError(f"processes still running after the demo (killed now): {left}")


def verified_models(cluster: Cluster, sites: dict) -> dict[str, str]:
    final = cluster.home / "runs" / RUN / "checkpoints" / "final.pt"
    expected = hashlib.sha256(final.read_bytes()).hexdigest()
    out = {}
    for site in sites:
        path = stored_model(cluster.models_dir(site))  # the newest delivered model
        key = load_verify_key(cluster.home / "bundles" / site / "model-signing.pub")
        load_checkpoint(path, key)  # raises unless the coordinator's signature verifies
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise EchoflError(f"site {site} holds a model that is not the coordinator's: {path}")
        out[site] = digest
    return out


def started_processes(cluster: Cluster) -> dict[int, str]:
    """Every process the demo's coordinator and hospitals run now (their process groups,
    sessions and descendants: :func:`common.processes.family`), with its command line."""
    leaders = [p.pid for p in (cluster.superlink, *cluster.clients.values()) if p is not None]
    table = process_table()
    return {pid: table[pid][2] for pid in family(leaders) if pid in table and pid != os.getpid()}


def leftovers(started: dict[int, str], wait_s: float = 10.0) -> list[int]:
    """Those of ``started`` still alive (same process id and command line) after ``wait_s``
    seconds of grace; killed then."""
    deadline = time.monotonic() + wait_s
    while True:
        table = process_table()
        alive = [pid for pid, cmd in started.items() if pid in table and table[pid][2] == cmd]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return alive


def main(directory: Path | None, keep: bool, rounds: int, cases: int, image_size: int) -> int:
    def say(message: str) -> None:
        print(f"[demo] {message}", flush=True)

    base = directory or Path(tempfile.mkdtemp(prefix="echofl-demo-"))
    started = time.perf_counter()
    try:
        models = run_demo(base.resolve(), rounds, cases, image_size, say)
    except KeyboardInterrupt:
        say(f"interrupted; everything the demo started is stopped (its folder: {base})")
        return 130
    except (EchoflError, RuntimeError, TimeoutError, OSError) as exc:  # the step's own message
        say(f"FAILED: {exc} (the demo's folder, with every log: {base})")
        return 1
    for site, digest in models.items():
        say(f"site {site}: final model verified, sha256 {digest[:16]}")
    run_dir = base / "coordinator" / "runs" / RUN
    say(f"done in {time.perf_counter() - started:.0f}s; no process left behind")
    if directory is None and not keep:
        shutil.rmtree(base, ignore_errors=True)
        say("the demo folder was removed (--keep or --dir keeps it)")
    else:
        say(f"the run: {run_dir} (fl-server report --home {base / 'coordinator'} {RUN}; "
            f"tensorboard --logdir {run_dir / 'tensorboard'})")  # fmt: skip
    return 0
