"""Scale: memory and round time of simulations with 2, 5, 10 and 20 sites on this machine.

    python benchmarks/bench_scale.py [--sites 2,5,10,20] [--rounds 3]

Every site is a small synthetic site (alternating vendors A-E in their native formats). While a
simulation runs, the memory of every process it started (SuperLink, ServerApp, simulation,
Ray's processes and ClientApp actors) is sampled twice a second: the proportional set size
(PSS: shared libraries counted once across processes) summed, peak kept. Round time is the
mean of the ServerApp's round times. Goal: linear growth, 20 sites within 8 GB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from common_setup import REPO, federation, pss_mb, record

from common.processes import family, processes_mentioning
from fl_server.metrics_log import read_metrics_log
from simulations.engine import SimulationEngine

GOAL_GB = 8.0
VENDORS = "ABCDE"


class Sampler(threading.Thread):
    def __init__(self, flwr_home: Path) -> None:
        super().__init__(daemon=True)
        self.flwr_home = flwr_home
        self.peak = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            leaders = processes_mentioning(str(self.flwr_home / "local-superlink"))
            self.peak = max(self.peak, sum(pss_mb(p) for p in family(leaders)))
            time.sleep(0.5)


def one(n: int, rounds: int, size: int, data_dir: Path) -> dict:
    cases = {f"{VENDORS[i % 5]}{i:02d}": 6 for i in range(n)}
    specs = federation(data_dir, cases)
    work = Path(tempfile.mkdtemp(prefix=f"echofl-bench-scale-{n}-"))
    (work / "sites.json").write_text(json.dumps([s.model_dump(mode="json") for s in specs]))
    config = {
        "num-server-rounds": rounds,
        "local-epochs": 1,
        "batch-size": 8,
        "image-size": size,
        "min-sites": n,
        "client-threads": 1,
        "seed": 0,
        "output-dir": str(work / "out"),
        "cache-dir": str(work / "cache"),
        "sim-sites": str(work / "sites.json"),
    }
    try:
        with SimulationEngine(work / "flwr") as engine:
            engine.start()
            sampler = Sampler(engine.flwr_home)
            sampler.start()
            outcome = engine.run(REPO, config, n, timeout=3600)
            sampler.stop.set()
            sampler.join()
        if outcome.returncode != 0:
            raise SystemExit("\n".join(outcome.output[-30:]))
        rows = read_metrics_log(work / "out" / "metrics.jsonl")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rounds_s = [r["seconds"] for r in rows if r.get("event") == "round-done"]
    return {
        "sites": n,
        "peak_pss_mb": round(sampler.peak, 1),
        "round_seconds": round(statistics.mean(rounds_s), 2),
        "run_seconds": round(outcome.seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="2,5,10,20")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench-scale"))
    args = parser.parse_args()
    counts = [int(x) for x in args.sites.split(",")]
    rows = [one(n, args.rounds, args.size, args.data_dir) for n in counts]
    print(f"{'sites':>5}{'peak memory (PSS)':>20}{'round time':>12}{'whole run':>11}")
    for r in rows:
        print(
            f"{r['sites']:>5}{r['peak_pss_mb']:>17.0f} MB{r['round_seconds']:>10.1f} s"
            f"{r['run_seconds']:>9.0f} s"
        )
    first, last = rows[0], rows[-1]
    per_site_mem = (last["peak_pss_mb"] - first["peak_pss_mb"]) / (last["sites"] - first["sites"])
    per_site_time = (last["round_seconds"] - first["round_seconds"]) / (
        last["sites"] - first["sites"]
    )
    print(
        f"marginal cost per site: {per_site_mem:.0f} MB of memory, {per_site_time:.2f} s of "
        "round time"
    )
    print(
        f"{last['sites']} sites: {last['peak_pss_mb'] / 1024:.2f} GB (goal <= {GOAL_GB} GB: "
        f"{'met' if last['peak_pss_mb'] / 1024 <= GOAL_GB else 'NOT met'})"
    )
    path = record(
        "scale",
        {
            "settings": {**vars(args), "data_dir": str(args.data_dir)},
            "rows": rows,
            "marginal_mb_per_site": per_site_mem,
            "marginal_round_seconds_per_site": per_site_time,
            "goal_gb": GOAL_GB,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
