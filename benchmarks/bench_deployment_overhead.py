"""Deployment overhead: federated rounds over TLS on loopback (a real SuperLink with node
authentication behind the fleet-only proxy, real sites started by ``fl-client``) versus the same
compute without Flower, side by side in one run, for three ways of running a round:

- **cold**: every message in a fresh interpreter (``task_start = "spawn"``) and the SuperNode
  asking for messages every 3 s while idle (Flower 1.42's own wait) - what a message cost before
  the site worker;
- **warm, SQL store**: every message forked from the site worker, which has torch and Flower
  imported, and the SuperNode asking every 0.5 s (``poll_interval_s``); the SuperLink keeps
  messages, their contents and runs in its database file (Flower's own, ``message_store =
  "database"``);
- **warm** (the default): the same, with the SuperLink keeping them in memory and only the
  registrations in the file (``fl_server.superlink``).

    python benchmarks/bench_deployment_overhead.py [--rounds 6] [--size 96] [--local-epochs 1]

All do the same work per round (every site one or more local epochs from the global weights,
then the weighted mean; federated evaluation off, so one message per site per round). The plain
loop trains the sites one after the other with every core; deployed, each site trains in its
own task process with one torch thread (``--client-threads``), the sites sharing the cores.

Figures: round wall / plain round (goal <= 1.3 on 2 cores, 3 sites); round wall / the slowest
site's own training (what the round costs when every site has its own core, as in a real
federation); the fixed cost per message = (round wall - slowest site's training) / messages per
round (goal <= 0.5 s), over rounds 2-N (in its first round a site builds its data cache at
the run's image size, which the plain loop does before its clock starts; the all-rounds
figures are printed beside); where a task's time goes (the sites' audit logs time each step); and
whether all modes trained the same final model (same seed: they must).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from common_setup import federation, load, plain_fedavg, record, slowest_training

from common.security.checkpoint import load_checkpoint
from fl_server.loopback import Cluster, done_rounds

GOAL_RATIO, GOAL_MESSAGE_S = 1.3, 0.5
SITES = {"A": 80, "B": 240, "C": 24}
# mode -> (site-config keys of every site, coordinator.toml keys)
MODES = {
    "cold": ({"task_start": "spawn", "poll_interval_s": 3.0}, {"message_store": "database"}),
    "warm, SQL store": (
        {"task_start": "fork", "poll_interval_s": 0.5},
        {"message_store": "database"},
    ),
    "warm": ({"task_start": "fork", "poll_interval_s": 0.5}, {"message_store": "memory"}),
}


def deployed(work: Path, specs, args, mode: str) -> dict:  # type: ignore[no-untyped-def]
    base = work / mode.replace(", ", "-").replace(" ", "-")
    base.mkdir()
    (base / "data").symlink_to(args.data_dir.resolve())
    formats = {s.name: (s.name, s.format) for s in specs}
    site_options, coordinator_options = MODES[mode]
    cluster = Cluster(
        base,
        formats,
        min_sites=len(specs),
        site_options=site_options,
        coordinator_options=coordinator_options,
    )
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
            "federated-evaluation=false "
            # plain FedAvg, as the plain loop does (the recipe's default is FedAvgM)
            'strategy="fedavg" step-normalised=false server-momentum=0',
        )
        started = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        command_s = time.perf_counter() - started
        rows = cluster.rows("bench")
    finally:
        cluster.close()
    if run.returncode != 0:
        raise SystemExit(run.stdout[-3000:] + run.stderr[-2000:])
    rounds = done_rounds(rows)
    round_s = [r["seconds"] for r in rows if r.get("event") == "round-done"]
    compute = slowest_training(rows, rounds)
    phases: dict[str, list[float]] = {}
    for site in formats:
        for line in cluster.audit_path(site).read_text().splitlines():
            entry = json.loads(line)
            if entry.get("event") == "task-executed" and entry.get("message_type") == "train":
                for name, seconds in entry.get("phases", {}).items():
                    phases.setdefault(name, []).append(seconds)
                phases.setdefault("queued (before the task)", []).append(entry["queued_s"])
    steps = ("configure-s", "train-exchange-s", "aggregate-s", "checkpoint-s")
    done = [r for r in rows if r.get("event") == "round-done"]
    coordinator = {k: statistics.mean(r[k] for r in done) for k in steps}
    state, _ = load_checkpoint(base / "coordinator" / "runs" / "bench" / "checkpoints" / "final.pt")
    return {
        "round_seconds": round_s,
        "slowest_site_training_seconds": compute,
        "task_phase_seconds": {k: statistics.mean(v) for k, v in phases.items()},
        "coordinator_step_seconds": coordinator,
        "command_seconds": command_s,
        "final": {k: v.numpy() for k, v in state.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench-federation"))
    parser.add_argument(
        "--client-threads",
        type=int,
        default=1,
        help="torch threads of each site's task (default 1: the sites share the cores)",
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
    plain = statistics.mean(plain_rounds)
    results = {mode: deployed(work, specs, args, mode) for mode in MODES}
    shutil.rmtree(work, ignore_errors=True)

    images = sum(len(d.split("train")) for d in data.values())
    messages = len(specs)  # one training message per site per round
    print(
        f"{len(specs)} sites, {images} training images x {args.local_epochs} local epoch(s) "
        f"per round at {args.size}x{args.size}, {args.rounds} rounds, {cores} cores"
    )
    # Steady state: rounds 2..N. In its first round a site prepares its data at the run's image
    # size (decoding and resampling every recording into its cache: fl_client.site), which the
    # plain loop does before its clock starts; the all-rounds figures are printed beside.
    steady_plain = statistics.mean(plain_rounds[1:]) if len(plain_rounds) > 1 else plain
    print(
        f"plain loop (no Flower):       {steady_plain:6.1f} s/round (rounds 2-{args.rounds}; "
        f"all rounds {plain:.1f})"
    )
    summary = {}
    for mode, r in results.items():
        rounds, sites = r["round_seconds"], r["slowest_site_training_seconds"]
        first = 1 if len(rounds) > 1 else 0
        wall, site = statistics.mean(rounds[first:]), statistics.mean(sites[first:])
        per_message = (wall - site) / messages
        all_wall, all_site = statistics.mean(rounds), statistics.mean(sites)
        summary[mode] = {
            "round_s": wall,
            "slowest_site_s": site,
            "ratio_plain": wall / steady_plain,
            "ratio_own_core": wall / site,
            "per_message_s": per_message,
            "first_round_s": rounds[0],
            "all_rounds": {
                "round_s": all_wall,
                "ratio_plain": all_wall / plain,
                "per_message_s": (all_wall - all_site) / messages,
            },
        }
        site_options, coordinator_options = MODES[mode]
        how = (
            f"{site_options['task_start']}, poll {site_options['poll_interval_s']:g} s, "
            f"messages in the SuperLink's {coordinator_options['message_store']}"
        )
        print(
            f"deployed, {mode} ({how}): "
            f"{wall:6.1f} s/round (slowest site's own training {site:.1f} s; first round "
            f"{rounds[0]:.1f} s; whole command {r['command_seconds']:.0f} s)"
        )
        print(
            f"    round / plain round = {wall / steady_plain:.2f}; round / slowest site's "
            f"training (one core per site) = {wall / site:.2f}; fixed cost per message = "
            f"{per_message:.2f} s (all rounds: {all_wall / plain:.2f}; "
            f"{(all_wall - all_site) / messages:.2f} s)"
        )
        steps = ", ".join(f"{k} {v:.3f} s" for k, v in r["task_phase_seconds"].items())
        print(f"    a training task's steps (site audit logs): {steps}")
        coord = ", ".join(f"{k[:-2]} {v:.3f} s" for k, v in r["coordinator_step_seconds"].items())
        print(f"    the coordinator's steps per round (round-done): {coord}")
    cold, sql, warm = summary["cold"], summary["warm, SQL store"], summary["warm"]
    print(
        f"warm / cold round time = {warm['round_s'] / cold['round_s']:.2f}; fixed cost per "
        f"message {cold['per_message_s']:.2f} s (cold) -> {sql['per_message_s']:.2f} s (warm, "
        f"SQL store) -> {warm['per_message_s']:.2f} s (warm); the SQL store's share: "
        f"{sql['per_message_s'] - warm['per_message_s']:+.2f} s per message, round "
        f"{sql['round_s']:.1f} -> {warm['round_s']:.1f} s"
    )
    print(
        f"goals (rounds 2-{args.rounds}): round / plain <= {GOAL_RATIO}: "
        f"{'met' if warm['ratio_plain'] <= GOAL_RATIO else 'NOT met'} ({warm['ratio_plain']:.2f}); "
        f"per message <= {GOAL_MESSAGE_S} s: "
        f"{'met' if warm['per_message_s'] <= GOAL_MESSAGE_S else 'NOT met'} "
        f"({warm['per_message_s']:.2f} s)"
    )
    b = results["warm"]["final"]
    diff = max(
        float(np.max(np.abs(r["final"][k].astype(np.float64) - b[k].astype(np.float64))))
        for r in results.values()
        for k in b
    )
    print(f"final models of the {len(MODES)} modes: largest difference {diff:.3g} (same seed)")
    path = record(
        "deployment_overhead",
        {
            "settings": {**vars(args), "data_dir": str(args.data_dir), "sites": SITES},
            "plain_round_seconds": plain_rounds,
            "modes": {m: {"site": s, "coordinator": c} for m, (s, c) in MODES.items()},
            "results": {
                m: {k: v for k, v in r.items() if k != "final"} for m, r in results.items()
            },
            "summary": summary,
            "final_model_max_difference": diff,
            "goals": {"ratio": GOAL_RATIO, "per_message_s": GOAL_MESSAGE_S},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
