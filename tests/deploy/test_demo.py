"""``fl-server demo`` end to end: one command brings up a real TLS federation of three synthetic
hospitals on loopback (coordinator, proxy, SuperNodes, site workers), runs a round, checks that
every hospital holds the coordinator's signed final model, and stops everything it started."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from common.security.checkpoint import load_checkpoint
from common.security.pki import load_verify_key
from fl_client.models import stored_model
from tests.helpers import ProcessWatch

BIN = Path(sys.executable).parent


def test_demo_runs_a_verified_federation_and_leaves_no_process(tmp_path: Path) -> None:
    base = tmp_path / "demo"
    with ProcessWatch(str(base)) as watch:
        done = subprocess.run(
            [str(BIN / "fl-server"), "demo", "--dir", str(base), "--rounds", "1", "--cases", "6",
             "--image-size", "32"],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert watch.seen, "the watch saw none of the demo's processes"
    assert watch.leftovers() == {}
    assert "no process left behind" in output
    final = base / "coordinator" / "runs" / "demo" / "checkpoints" / "final.pt"
    expected = hashlib.sha256(final.read_bytes()).hexdigest()
    for site in ("A", "B", "D"):
        assert f"site {site}: final model verified, sha256 {expected[:16]}" in output
        held = stored_model(base / f"models-{site}")
        key = load_verify_key(base / "coordinator" / "bundles" / site / "model-signing.pub")
        load_checkpoint(held, key)  # the signature verifies
        assert hashlib.sha256(held.read_bytes()).hexdigest() == expected
    assert list((final.parents[1] / "tensorboard").glob("events.out.tfevents.*"))


def test_demo_refuses_bad_arguments() -> None:
    done = subprocess.run(
        [str(BIN / "fl-server"), "demo", "--rounds", "0"], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--rounds" in done.stderr
