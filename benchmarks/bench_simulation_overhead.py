"""Simulation overhead: an N-site FedAvg simulation on Flower's engine versus a plain loop that
does the same local training without Flower, side by side in one run.

    python benchmarks/bench_simulation_overhead.py [--rounds 10] [--size 96]

Both do the same work: for every round, every site trains one local epoch from the global
weights (same images, model, batch, seeds, label dropout, augmentation), then the weights are
averaged by number of images. Federated evaluation is off in the simulation (the plain loop
evaluates nothing either). The simulation uses Flower's supported path (``flwr run`` on a
managed local SuperLink, Ray backend, one CPU and one torch thread per simulated site); the
plain loop trains the sites one after the other with every core.

Two ways of running the simulation, one run each, side by side: Ray started and stopped by
Flower within the run (the default), and a Ray head started once for the engine (a study:
``resources.keep_ray``), which each run joins; the managed SuperLink and that Ray head are paid
once per study and not counted.

Reported: total wall time ratio (simulation / plain loop; goal <= 1.15), the steady-state
ratio of the rounds alone (Flower's start-up excluded; goal <= 1.10), and the start-up cost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from common_setup import REPO, federation, load, plain_fedavg, record

from common.security.checkpoint import load_checkpoint
from fl_server.metrics_log import read_metrics_log
from simulations.engine import Resources, SimulationEngine

VARIANTS = {"Ray per run": Resources(), "Ray kept for the study": Resources(keep_ray=True)}

GOAL, GOAL_ROUNDS = 1.15, 1.10
SITES = {"A": 80, "B": 240, "C": 24}  # the fedecho study's sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench-federation"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    specs = federation(args.data_dir, SITES)
    work = Path(tempfile.mkdtemp(prefix="echofl-bench-sim-"))
    data = load(specs, args.size, work / "cache")
    (work / "sites.json").write_text(json.dumps([s.model_dump(mode="json") for s in specs]))
    settings = {
        "num-server-rounds": args.rounds,
        "local-epochs": 1,
        "lr": 0.002,
        "batch-size": 16,
        "image-size": args.size,
        "label-dropout-p": 0.5,
        "min-sites": len(specs),
        "client-threads": 1,
        "seed": 0,
        "federated-evaluation": False,
        # plain FedAvg, as the plain loop does (the recipe's default is FedAvgM)
        "strategy": "fedavg",
        "step-normalised": False,
        "server-momentum": 0.0,
        "output-dir": str(work / "out"),
        "cache-dir": str(work / "cache"),
        "sim-sites": str(work / "sites.json"),
    }
    results = {}
    try:
        plain_s, plain_rounds, plain_state = plain_fedavg(data, args.rounds, settings, cores)
        for name, resources in VARIANTS.items():
            out = work / f"out-{len(results)}"
            with SimulationEngine(work / f"flwr-{len(results)}", resources) as engine:
                engine.start()  # the managed SuperLink (and a kept Ray head): once per study
                outcome = engine.run(
                    REPO, {**settings, "output-dir": str(out)}, len(specs), timeout=7200
                )
            if outcome.returncode != 0:
                raise SystemExit("\n".join(outcome.output[-30:]))
            rows = read_metrics_log(out / "metrics.jsonl")
            rounds = [r["seconds"] for r in rows if r.get("event") == "round-done"]
            final, _ = load_checkpoint(out / "checkpoints" / "final.pt")
            diff = max(
                float((final[k].double() - plain_state[k].double()).abs().max())
                for k in final
                if final[k].is_floating_point()
            )
            results[name] = {
                "seconds": outcome.seconds,
                "round_seconds": rounds,
                "startup_seconds": outcome.seconds - sum(rounds),
                "ratio_total": outcome.seconds / plain_s,
                "ratio_rounds": sum(rounds) / sum(plain_rounds),
                "final_weights_max_abs_diff": diff,
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    images = sum(len(d.split("train")) for d in data.values())
    print(
        f"{len(specs)} sites, {images} training images per round at {args.size}x{args.size}, "
        f"{args.rounds} rounds x 1 local epoch, {cores} cores"
    )
    print(f"plain loop (no Flower):         {plain_s:8.1f} s ({np.mean(plain_rounds):.1f} s/round)")
    for name, r in results.items():
        print(
            f"Flower simulation, {name}: {r['seconds']:8.1f} s "
            f"({np.mean(r['round_seconds']):.1f} s/round; start-up and wind-down "
            f"{r['startup_seconds']:.1f} s)"
        )
        print(
            f"    ratio total = {r['ratio_total']:.3f} (goal <= {GOAL}: "
            f"{'met' if r['ratio_total'] <= GOAL else 'NOT met'}); rounds only = "
            f"{r['ratio_rounds']:.3f} (goal <= {GOAL_ROUNDS}: "
            f"{'met' if r['ratio_rounds'] <= GOAL_ROUNDS else 'NOT met'}); largest difference "
            f"to the plain loop's final model {r['final_weights_max_abs_diff']:.2e}"
        )
    path = record(
        "simulation_overhead",
        {
            "settings": {**vars(args), "data_dir": str(args.data_dir), "sites": SITES},
            "plain_seconds": plain_s,
            "plain_round_seconds": plain_rounds,
            "variants": results,
            "goals": {"total": GOAL, "rounds": GOAL_ROUNDS},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
