"""Hospital deployment end to end, for real, on loopback: init -> start (the SuperLink on
loopback behind the fleet-only nginx proxy; TLS, node auth) ->
register three sites -> three fl-client processes (different vendors, formats and labelled
sets) -> run 2 rounds -> the final model verifies; an unregistered site is refused; a tampered
checkpoint is refused; an app the sites did not pin is launched on the coordinator and executes
nowhere; every process is stopped afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fl_server.audit import app_digest, file_digest, read_audit
from fl_server.cli import _flwr_env
from fl_server.coordinator import CONNECTION, DEFAULT_APP_DIR, CoordinatorHome
from fl_server.loopback import Cluster, cli, done_rounds
from tests.helpers import ProcessWatch, acquire_task_without_secret

SITES = {
    "A": ("A", "camus-nifti"),
    "B": ("B", "echonet-dynamic"),
    "D": ("D", "folder"),
    "X": ("A", "camus-nifti"),
}  # X: a fourth hospital whose key was never registered
DATA = [
    {"name": "A", "vendor": "A", "format": "camus-nifti", "cases": 10},
    {"name": "B", "vendor": "B", "format": "echonet-dynamic", "cases": 10},
    {"name": "D", "vendor": "D", "format": "folder", "cases": 10, "labelled": ["LV", "LA"]},
]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("deploy")
    Cluster.generate(base, DATA)
    watch = ProcessWatch(str(base)).__enter__()  # this test's processes: they mention base
    cluster = Cluster(base, SITES, min_sites=3)
    out: dict = {"base": base, "home": cluster.home}
    try:
        cluster.start()
        out["register"] = cluster.register("A", "B", "D")
        for site in ("A", "B", "D"):
            cluster.start_client(site)
        out["run"] = subprocess.run(
            cluster.run_command(
                "e2e",
                2,
                "image-size=64 local-epochs=2 label-dropout-p=0.5 client-threads=1 "
                "distillation-weight=0.5 label-aware=true",  # the partial-label options, deployed
            ),
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        out["stranger"] = stranger(cluster, base)
        out["hostile"] = hostile_app(cluster, base)
        out["local_runtime"] = acquire_task_without_secret(  # a local user on the coordinator
            f"127.0.0.1:{cluster.superlink_port}", cluster.home / "pki" / "ca" / "ca.crt"
        )
        out["liar"] = subprocess.run(  # site D lies: 1e9 training images, every Dice 50
            [
                *cluster.run_command(
                    "liar",
                    1,
                    'image-size=32 local-epochs=1 client-threads=1 inject-faults="D:inflate" '
                    'save-updates=true strategy="fedavg" step-normalised=false server-momentum=0',
                ),
                "--min-sites",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        out["liar_rows"] = cluster.rows("liar")
        out["interrupted"] = interrupted_run(cluster, base)
        out["intruder"] = cli(
            "fl-client", "--site", "X", "--config-dir", str(cluster.sites_dir), timeout=300
        )
        out["clients_alive"] = all(p.poll() is None for p in cluster.clients.values())
        # the coordinator revokes site B while it is connected: its client stops, and says why
        out["unregister"] = cli(
            "fl-server", "unregister", "--home", str(cluster.home), "--site", "B"
        )
        revoked = cluster.clients["B"]
        with contextlib.suppress(subprocess.TimeoutExpired):
            revoked.wait(timeout=180)
        out["revoked_code"] = revoked.poll()
        out["revoked_output"] = (base / "client-B.out").read_text()
        out["rows"] = cluster.rows("e2e")
    finally:
        cluster.close()
        watch.__exit__()
        out["leftovers"] = watch.leftovers()
    return out


def stranger(cluster: Cluster, base: Path) -> dict:
    """Someone holding only the public ca.crt, pointing the Flower CLI at the sites' address."""

    home = base / "stranger-flwr"
    home.mkdir()
    ca = cluster.home / "bundles" / "X" / "ca.crt"
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "target"\n\n[superlink.target]\n'
        f'address = "127.0.0.1:{cluster.port}"\nroot-certificates = "{ca}"\n'
    )
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0"}
    flwr = str(Path(sys.executable).parent / "flwr")

    def attempt(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [flwr, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    runs = cluster.home / "runs"
    before = sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []
    pub = cluster.home / "bundles" / "X" / "site.pub"
    return {
        "runs_before": before,
        "register": attempt("supernode", "register", str(pub), "target"),
        "run": attempt("run", str(DEFAULT_APP_DIR), "target"),
        "control": cluster.get("/v1/control/list-runs", "POST", b"\x00")[0],
        "runtime": cluster.get("/v1/runtime/acquire-task", "POST", b"\x00")[0],
        "health": cluster.get("/health")[0],
        "runs_after": sorted(p.name for p in runs.iterdir()) if runs.is_dir() else [],
    }


HOSTILE_PYPROJECT = """
[project]
name = "notevil"
version = "1.0.0"

[tool.flwr.app]
publisher = "someone"

[tool.flwr.app.components]
serverapp = "notevil:server"
clientapp = "notevil:client"

[tool.flwr.app.config]
out = ""
"""

HOSTILE_APP = """
import json, os, pathlib
from flwr.app import Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

client = ClientApp()
server = ServerApp()


@client.train()
def train(msg, context):
    data = pathlib.Path(str(context.node_config["data-dir"]))
    (data / "PWNED").write_text(json.dumps(sorted(os.listdir(data))))
    return Message(RecordDict(), reply_to=msg)


@server.main()
def main(grid, context):
    nodes = list(grid.get_node_ids())
    messages = [grid.create_message(RecordDict(), "train", n, "") for n in nodes]
    replies = list(grid.send_and_receive(messages, timeout=120))
    found = [
        {"error": m.error.reason, "code": m.error.code} if m.has_error() else {"error": None}
        for m in replies
    ]
    out = pathlib.Path(context.run_config["out"])
    out.write_text(json.dumps({"nodes": len(nodes), "replies": found}))
"""


def hostile_app(cluster: Cluster, base: Path) -> dict:
    """Someone with a shell on the coordinator (or a compromised coordinator) launches an app of
    their own on the real SuperLink: its ClientApp would write a file into each hospital's data
    folder. No site pinned it."""
    app = base / "hostile-app"
    app.mkdir()
    (app / "pyproject.toml").write_text(HOSTILE_PYPROJECT)
    (app / "notevil.py").write_text(HOSTILE_APP)
    out = base / "hostile-replies.json"
    env = _flwr_env(CoordinatorHome(cluster.home))
    flwr = str(Path(sys.executable).parent / "flwr")
    result = subprocess.run(
        [flwr, "run", str(app), CONNECTION, "--stream", "--run-config", f'out="{out}"'],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return {
        "result": result,
        "sha256": app_digest(app),
        "replies": json.loads(out.read_text()) if out.is_file() else None,
        "written": sorted(str(p) for p in (base / "data").rglob("PWNED")),
    }


def interrupted_run(cluster: Cluster, base: Path) -> dict:
    """Ctrl-C in `fl-server run` after round 1 of 50: the run must stop on the SuperLink too."""
    log = (base / "interrupted.out").open("w")
    proc = subprocess.Popen(
        cluster.run_command("interrupted", 50, "image-size=32 local-epochs=1 client-threads=1"),
        stdout=log,
        stderr=subprocess.STDOUT,
        # as at a terminal: a test runner started in the background (nohup, `cmd &`) ignores
        # SIGINT, the child would inherit that and Python would then never raise
        # KeyboardInterrupt for it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        cluster.wait_for(
            "interrupted",
            lambda rows: any(r.get("event") == "round-done" for r in rows),
            timeout=600,
            run=proc,
        )
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    time.sleep(3)  # the SuperLink records the stop
    status = cli("fl-server", "status", "--home", str(cluster.home), timeout=120)
    output = (base / "interrupted.out").read_text()
    flower_run = re.search(r"\(Flower run (\d+)\)", output)
    return {
        "code": code,
        "output": output,
        "flower_run": flower_run.group(1) if flower_run else None,
        "status": status.stdout,
        "rounds": done_rounds(cluster.rows("interrupted")),
    }


def test_ctrl_c_in_fl_server_run_stops_the_run_on_the_superlink(deployment: dict) -> None:
    run = deployment["interrupted"]
    assert run["code"] == 130, run["output"][-2000:]
    assert "interrupted: stopping run interrupted" in run["output"]
    assert "continue it with fl-server run" in run["output"]
    assert 1 <= len(run["rounds"]) < 50
    assert "finished:stopped" in run["status"], run["status"]
    audit = read_audit(deployment["home"] / "audit.jsonl")
    assert [e["run"] for e in audit if e["event"] == "run-interrupted"] == ["interrupted"]


def test_federated_run_over_tls_with_node_authentication(deployment: dict) -> None:
    assert all(r.returncode == 0 for r in deployment["register"])
    run = deployment["run"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "final model signed and verified" in run.stdout
    rows = deployment["rows"]
    assert done_rounds(rows) == {1: ["A", "B", "D"], 2: ["A", "B", "D"]}
    negotiated = next(r for r in rows if r.get("event") == "negotiated")
    assert negotiated["partial"] == ["LA", "MYO"]
    assert deployment["clients_alive"]  # long-lived: still connected after the run
    config = next(r for r in rows if r.get("event") == "train-config")
    assert config["distillation-weight"] == 0.5 and config["label-aware"] is True
    b_rounds = [x for x in rows if x.get("phase") == "train" and x.get("site") == "B"]
    assert b_rounds and all(x["train-distillation-loss"] > 0 for x in b_rounds)  # B: LV only
    assert [r["round"] for r in rows if r.get("event") == "class-drift"] == [1, 2]
    for r in (r for r in rows if r.get("event") == "round-done"):
        compute = max(
            x["train-seconds"]
            for x in rows
            if x.get("phase") == "train"
            and x.get("round") == r["round"]
            and x.get("site") != "*"
            and "event" not in x
        )
        print(
            f"round {r['round']}: wall {r['seconds']:.1f}s, slowest site's training {compute:.2f}s"
        )


def test_final_model_verifies_and_tampering_is_refused(deployment: dict) -> None:
    home = deployment["home"]
    final = home / "runs" / "e2e" / "checkpoints" / "final.pt"
    key = home / "pki" / "signing" / "model-signing.pub"
    assert cli("fl-server", "verify", str(final), "--key", str(key)).returncode == 0
    (deployment["base"] / "tampered").mkdir()
    tampered = deployment["base"] / "tampered" / "final.pt"
    raw = bytearray(final.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    tampered.write_bytes(bytes(raw))
    Path(f"{tampered}.json").write_text(Path(f"{final}.json").read_text())
    check = cli("fl-server", "verify", str(tampered), "--key", str(key))
    assert check.returncode == 2 and "digest mismatch" in check.stderr
    edited = json.loads(Path(f"{final}.json").read_text()) | {"round": 7}
    edited_path = deployment["base"] / "edited.pt"
    edited_path.write_bytes(final.read_bytes())
    Path(f"{edited_path}.json").write_text(json.dumps(edited))
    check = cli("fl-server", "verify", str(edited_path), "--key", str(key))
    assert check.returncode == 2 and "invalid checkpoint signature" in check.stderr
    # a replayed checkpoint: the signed round-0 model copied over the final one
    (deployment["base"] / "replayed").mkdir()
    replayed = deployment["base"] / "replayed" / "final.pt"
    first = home / "runs" / "e2e" / "checkpoints" / "round-0000.pt"
    replayed.write_bytes(first.read_bytes())
    Path(f"{replayed}.json").write_text(Path(f"{first}.json").read_text())
    check = cli("fl-server", "verify", str(replayed), "--key", str(key))
    assert check.returncode == 2
    assert "checkpoint was signed as 'round-0000.pt', not 'final.pt'" in check.stderr


def test_every_site_keeps_the_verified_final_model_and_predicts_offline(
    deployment: dict,
) -> None:
    """The coordinator sent final.pt to the three sites at the end of run e2e; each kept the
    coordinator's bytes; after every process stopped, site A segments its own recordings."""
    base, home = deployment["base"], deployment["home"]
    final = home / "runs" / "e2e" / "checkpoints" / "final.pt"
    summary = json.loads((home / "runs" / "e2e" / "summary.json").read_text())
    assert summary["final_model_delivered"] == {"A": "stored", "B": "stored", "D": "stored"}
    for site in ("A", "B", "D"):
        kept = base / f"models-{site}" / "e2e" / "final.pt"
        assert kept.read_bytes() == final.read_bytes()
    assert not (base / "models-X").exists()  # the unregistered hospital received nothing
    delivered = [r for r in deployment["rows"] if r.get("event") == "model-delivered"]
    assert sorted(r["site"] for r in delivered) == ["A", "B", "D"]
    out = base / "predicted-A"
    predict = cli(
        "fl-client", "predict", "--site", "A", "--config-dir", str(base / "sites"),
        "--run", "e2e", "--input", str(base / "data" / "A"), "--format", "camus-nifti",
        "--out", str(out), "--truth", timeout=300,
    )  # fmt: skip
    assert predict.returncode == 0, predict.stderr
    assert "run e2e, round 2, signature verified" in predict.stderr
    rows = (out / "measurements.csv").read_text().splitlines()
    patients = [p for p in (base / "data" / "A" / "database_nifti").iterdir() if p.is_dir()]
    assert len(rows) == 1 + len(patients) == 11  # a header, a row per patient (the 4CH view)
    assert (out / "agreement.csv").is_file()


def test_a_stranger_with_the_ca_certificate_cannot_register_or_launch(deployment: dict) -> None:
    """Through the sites' address (the fleet-only proxy), with only ca.crt: no key is
    registered and no run is launched; the Control and Runtime APIs answer 404 there."""
    stranger = deployment["stranger"]
    for attempt, path in (("register", "register-node"), ("run", "start-run")):
        result = stranger[attempt]
        said = " ".join((result.stdout + result.stderr).split())
        assert result.returncode != 0, said
        assert "404 Not Found" in said and f"/v1/control/{path}" in said, said
    assert stranger["control"] == 404 and stranger["runtime"] == 404
    assert stranger["health"] == 200  # the fleet side is up: the refusals are the proxy's
    assert stranger["runs_after"] == stranger["runs_before"]  # nothing was launched
    assert "X" not in json.loads((deployment["home"] / "state" / "sites.json").read_text())


def test_the_coordinators_runtime_api_gives_no_task_without_the_secret(deployment: dict) -> None:
    """The SuperLink runs in process isolation: only Flower's SuperExec, started by fl-server
    start with the shared secret, takes its ServerApp tasks."""
    said = deployment["local_runtime"]
    assert said.startswith("refused: HTTPStatusError") and "401 Unauthorized" in said, said
    secret = deployment["home"] / "state" / "superexec.secret"
    assert (secret.stat().st_mode & 0o777) == 0o600


def test_unregistered_site_is_refused_with_an_explicit_message(deployment: dict) -> None:
    intruder = deployment["intruder"]
    assert intruder.returncode == 3
    assert "key is not registered with the coordinator" in intruder.stdout
    assert "fl-server register --site X" in intruder.stdout


def test_revoked_site_stops_with_an_explicit_message(deployment: dict) -> None:
    assert deployment["unregister"].returncode == 0, deployment["unregister"].stderr
    assert deployment["revoked_code"] == 3, deployment["revoked_output"][-2000:]
    assert "REFUSED: site B's key is not registered" in deployment["revoked_output"]


def test_sites_unpack_the_app_in_their_own_flwr_home(deployment: dict) -> None:
    apps = list((deployment["base"] / "sites" / "flwr" / "apps").iterdir())
    assert apps and all(p.name.startswith("echofl.echofl.") for p in apps)
    # the hash fl-server printed and audited is the bundle the sites installed
    audit = read_audit(deployment["home"] / "audit.jsonl")
    launch, liar, interrupted = [e for e in audit if e["event"] == "run-launched"]
    assert liar["app_sha256"] == interrupted["app_sha256"] == launch["app_sha256"]
    assert launch["run"] == "e2e" and f"app bundle sha256 {launch['app_sha256']}" in (
        deployment["run"].stdout
    )
    assert {p.name.rsplit(".", 1)[1] for p in apps} == {launch["app_sha256"][:8]}


def test_the_audit_trail_records_who_did_what(deployment: dict) -> None:
    audit = read_audit(deployment["home"] / "audit.jsonl")
    written = [e for e in audit if e["event"] == "checkpoint-written"]
    admitted = [e for e in audit if e["event"] == "site-admitted"]
    delivered = [e for e in audit if e["event"] == "model-delivered"]
    audit = [
        e
        for e in audit
        if e["event"] not in ("checkpoint-written", "site-admitted", "model-delivered")
    ]
    events = [(e["event"], e.get("site") or e.get("run")) for e in audit]
    assert events == [
        ("site-registered", "A"),
        ("site-registered", "B"),
        ("site-registered", "D"),
        ("run-launched", "e2e"),
        ("run-finished", "e2e"),
        ("run-launched", "liar"),
        ("run-finished", "liar"),
        ("run-launched", "interrupted"),
        ("run-interrupted", "interrupted"),
        ("site-unregistered", "B"),
    ]
    assert all(e["user"] and e["host"] and e["time"] for e in audit)
    registered = [e for e in audit if e["event"] == "site-registered"]
    assert all(len(e["key_sha256"]) == 64 for e in registered)
    final = deployment["home"] / "runs" / "e2e" / "checkpoints" / "final.pt"
    finished = next(e for e in audit if e["event"] == "run-finished")
    assert finished["final_sha256"] == file_digest(final)
    # and to whom it sent the final model, with its digest and each site's answer
    assert [(e["site"], e["result"], e["sha256"]) for e in delivered if e["run"] == "e2e"] == [
        (site, "stored", finished["final_sha256"]) for site in ("A", "B", "D")
    ]
    # the ServerApp adds each admission and every checkpoint it wrote, with its digest
    assert sorted((e["run"], e["site"]) for e in admitted) == [
        (run, site) for run in ("e2e", "interrupted", "liar") for site in ("A", "B", "D")
    ]
    e2e = [(e["file"], e["round"]) for e in written if e["run"] == "e2e"]
    assert e2e[0] == ("round-0000.pt", 0) and e2e[-1] == ("final.pt", 2)
    assert {f for f, _ in e2e} == {
        "round-0000.pt",
        "round-0001.pt",
        "round-0002.pt",
        "best.pt",
        "final.pt",
    }
    last = {e["file"]: e["sha256"] for e in written if e["run"] == "e2e"}
    assert last["final.pt"] == finished["final_sha256"]


def test_an_app_no_site_pinned_executes_nowhere(deployment: dict) -> None:
    """The hostile app reached every site (the coordinator accepted it) and executed at none:
    no file written; each site answered with an error naming its hash; each site's audit log
    records the refusal; the pinned echofl app's tasks ran from its own bundle."""
    hostile = deployment["hostile"]
    said = hostile["result"].stdout[-3000:] + hostile["result"].stderr[-2000:]
    assert hostile["replies"] is not None, said
    assert hostile["written"] == []
    assert hostile["replies"]["nodes"] == 3
    replies = hostile["replies"]["replies"]
    assert len(replies) == 3 and all(r["code"] == 7 for r in replies), replies  # INVALID_FAB
    for r in replies:
        assert "not in trusted_apps" in r["error"] and hostile["sha256"] in r["error"]
    launch = next(
        e for e in read_audit(deployment["home"] / "audit.jsonl") if e["event"] == "run-launched"
    )
    for site in ("A", "B", "D"):
        audit = read_audit(deployment["base"] / f"audit-{site}.jsonl")
        refused = [e for e in audit if e["event"] == "task-refused"]
        assert [(e["app_sha256"], e["message_type"]) for e in refused] == [
            (hostile["sha256"], "train")
        ]
        assert refused[0]["app"] == "someone/notevil 1.0.0" and refused[0]["site"] == site
        executed = [e for e in audit if e["event"] == "task-executed"]
        assert executed and {e["app_sha256"] for e in executed} == {launch["app_sha256"]}
        flwr_home = deployment["base"] / "sites" / "flwr"
        assert all(e["app_module"].startswith(str(flwr_home / "apps")) for e in executed)
        # the run stopped with Ctrl-C (its tasks completed or were stopped) aside: the e2e run
        # trained 2 rounds, the liar run 1 (each task is one line), and each delivered its
        # final model once
        stopped = deployment["interrupted"]["flower_run"]
        assert stopped is not None
        finished = [e for e in executed if str(e["run"]) != stopped]
        assert all(e["outcome"] == "completed" for e in finished)
        assert all(e["outcome"] in ("completed", "stopped") for e in executed if e not in finished)
        kinds = [e["message_type"] for e in finished]
        assert kinds.count("train") == 3 and kinds.count("query.final_model") == 2


def test_a_site_claiming_1e9_images_and_dice_50_changes_neither_the_model_nor_best(
    deployment: dict,
) -> None:
    import numpy as np

    from common.security.checkpoint import load_checkpoint

    run = deployment["liar"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    rows = deployment["liar_rows"]
    (rejected,) = [r for r in rows if r.get("event") == "update-rejected"]
    assert rejected["site"] == "D"
    assert "num-examples = 1e+09 exceeds the" in rejected["reason"]
    assert "image(s) the site declared in the query round" in rejected["reason"]
    bad_metrics = [r for r in rows if r.get("event") == "metrics-rejected"]
    assert bad_metrics and {r["site"] for r in bad_metrics} == {"D"}
    assert all("= 50 is outside [0, 1]" in r["reason"] for r in bad_metrics)
    assert done_rounds(rows) == {1: ["A", "B"]}
    # the global model of round 1 is the mean of A's and B's updates, weighted by the counts
    # they declared in the query round (D's weights are not in it, nor its claimed count)
    out = deployment["home"] / "runs" / "liar"
    updates = {s: np.load(out / "updates" / f"round-0001-{s}.npz") for s in ("A", "B")}
    assert not (out / "updates" / "round-0001-D.npz").exists()
    counts = {s: float(u["__weight__"]) for s, u in updates.items()}
    negotiated = next(r for r in rows if r.get("event") == "negotiated")
    assert counts == {s: float(negotiated["counts"][s]["train"]) for s in ("A", "B")}
    state, _ = load_checkpoint(out / "checkpoints" / "round-0001.pt")
    total = sum(counts.values())
    for key, tensor in state.items():
        if tensor.dtype.is_floating_point:
            mean = sum(counts[s] * updates[s][key].astype(np.float64) for s in counts) / total
            np.testing.assert_allclose(tensor.numpy(), mean, rtol=1e-5, atol=1e-6)
    # best.pt is chosen on the honest sites' validation Dice only (all in [0, 1])
    _, best = load_checkpoint(out / "checkpoints" / "best.pt")
    honest = [
        r
        for r in rows
        if r.get("phase") == "val"
        and r.get("round") == 1
        and r["site"] in ("A", "B")
        and "event" not in r  # the site's row, not an event about it
    ]
    assert len(honest) == 2
    val = best["validation"]
    dice = [k for k in val if k.startswith("dice-")]
    assert dice and all(0.0 <= val[k] <= 1.0 for k in dice)
    for key in dice:
        n = key.replace("dice-", "n-")
        weights = [r.get(n, 0.0) for r in honest]
        if sum(weights):
            expected = sum(r[key] * w for r, w in zip(honest, weights, strict=True)) / sum(weights)
            assert val[key] == pytest.approx(expected, rel=1e-6), key


def test_no_process_left_behind(deployment: dict) -> None:
    assert deployment["leftovers"] == {}
