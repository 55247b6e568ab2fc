"""Deployment overhead: a federated round over TLS on loopback (a real SuperLink with node
authentication, real SuperNodes started by ``fl-client``) versus the same compute without
Flower, side by side in one run, and where the difference goes.

    python benchmarks/bench_deployment_overhead.py [--rounds 5] [--size 96] [--local-epochs 1]

Both do the same work per round (every site one or more local epochs from the global weights,
then the weighted mean; federated evaluation off). The plain loop trains the sites one after
the other with every core; in the deployment each site trains in its own ClientApp process,
with one torch thread by default (``--client-threads``), the sites sharing the cores. Goal:
round time ratio <= 1.15 at the research configuration (the fedecho study's sites, 96 px).

The costs a deployed round adds, measured separately: a fresh ClientApp process for every
message (Flower 1.42's deployment model: interpreter start, imports of torch/MONAI/Flower,
app-bundle install), reading the site's preprocessed data from the disk cache, and
(de)serialising the weights.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common_setup import federation, load, plain_fedavg, record
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.task_identity import TaskIdentity

from common.data.cache import load_site_cached
from common.data.preprocess import PreprocessConfig
from common.training.model import build_unet
from simulations.loopback import Cluster, done_rounds

GOAL = 1.15
SITES = {"A": 80, "B": 240, "C": 24}


def seconds_of(code: str) -> float:
    """Wall time of a fresh interpreter running ``code`` (what a ClientApp process pays)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def serialisation_seconds() -> float:
    state = build_unet().state_dict()
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1  # outside a run
    started = time.perf_counter()
    for _ in range(5):
        message = Message(
            RecordDict({"arrays": ArrayRecord(state)}), dst_node_id=1, message_type="train"
        )
        blobs = [o.deflate() for o in get_all_nested_objects(message).values()]
        torch.save(ArrayRecord(state).to_torch_state_dict(), io.BytesIO())
        assert blobs
    return (time.perf_counter() - started) / 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench-federation"))
    parser.add_argument(
        "--client-threads",
        type=int,
        default=1,
        help="torch threads of each site's ClientApp (default 1: the sites share the cores)",
    )
    args = parser.parse_args()
    specs = federation(args.data_dir, SITES)
    work = Path(tempfile.mkdtemp(prefix="echofl-bench-deploy-"))
    data = load(specs, args.size, work / "plain-cache")
    settings = {
        "lr": 0.002,
        "batch-size": 16,
        "label-dropout-p": 0.5,
        "seed": 0,
        "local-epochs": args.local_epochs,
    }
    cores = os.cpu_count() or 1
    _, plain_rounds, _ = plain_fedavg(data, args.rounds, settings, cores)

    formats = {s.name: (s.name, s.format) for s in specs}
    (work / "data").symlink_to(args.data_dir.resolve())
    cluster = Cluster(work, formats, min_sites=len(specs))
    try:
        cluster.start()
        cluster.register(*formats)
        for site in formats:
            cluster.start_client(site)
        command = cluster.run_command(
            "bench",
            args.rounds,
            f"image-size={args.size} local-epochs={args.local_epochs} lr=0.002 "
            f"label-dropout-p=0.5 client-threads={args.client_threads} "
            "federated-evaluation=false",
        )
        started = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        deployed_s = time.perf_counter() - started
        rows = cluster.rows("bench")
    finally:
        cluster.close()
    if run.returncode != 0:
        raise SystemExit(run.stdout[-3000:] + run.stderr[-2000:])
    rounds = done_rounds(rows)
    round_s = [r["seconds"] for r in rows if r.get("event") == "round-done"]
    compute = {
        r: max(
            x["train-seconds"]
            for x in rows
            if x.get("phase") == "train"
            and x.get("round") == r
            and x.get("site") != "*"
            and "event" not in x
        )
        for r in rounds
    }
    ratio = statistics.mean(round_s) / statistics.mean(plain_rounds)

    # where the time goes, per message
    python_s = seconds_of("pass")
    imports_s = seconds_of("import fl_client.client_app") - python_s
    spec = specs[1]
    t0 = time.perf_counter()
    load_site_cached(spec, PreprocessConfig(size=(args.size, args.size)), work / "plain-cache")
    cache_s = time.perf_counter() - t0
    serial_s = serialisation_seconds()
    shutil.rmtree(work, ignore_errors=True)

    images = sum(len(d.split("train")) for d in data.values())
    print(
        f"{len(specs)} sites, {images} training images x {args.local_epochs} local epoch(s) "
        f"per round at {args.size}x{args.size}, {args.rounds} rounds, {cores} cores"
    )
    print(f"plain loop (no Flower):       {statistics.mean(plain_rounds):6.1f} s/round")
    print(
        f"deployed, TLS on loopback:    {statistics.mean(round_s):6.1f} s/round "
        f"(slowest site's own training {statistics.mean(compute.values()):.1f} s; "
        f"whole command {deployed_s:.0f} s)"
    )
    print(f"ratio = {ratio:.2f} (goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'})")
    print("per message, on this machine:")
    print(f"  fresh interpreter                 {python_s:6.2f} s")
    print(
        f"  imports of the ClientApp module   {imports_s:6.2f} s  (torch, Flower; the U-Net is "
        "a cached TorchScript module, MONAI is not imported)"
    )
    print(f"  site data from the disk cache     {cache_s:6.3f} s")
    print(f"  weights (de)serialisation         {serial_s:6.3f} s")
    path = record(
        "deployment_overhead",
        {
            "settings": {**vars(args), "data_dir": str(args.data_dir), "sites": SITES},
            "plain_round_seconds": plain_rounds,
            "deployed_round_seconds": round_s,
            "site_training_seconds": compute,
            "ratio": ratio,
            "goal": GOAL,
            "per_message": {
                "interpreter": python_s,
                "imports": imports_s,
                "cache_load": cache_s,
                "serialisation": serial_s,
            },
            "deployed_command_seconds": deployed_s,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
