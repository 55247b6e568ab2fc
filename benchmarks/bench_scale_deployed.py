"""Scale of the real deployment path: a loopback federation of N hospitals (real SuperLink behind
the fleet-only proxy, real ``fl-client`` sites with their SuperNode and site worker, TLS and node
authentication), N = 2 and 10 side by side in one run: memory per site and round time.

    python benchmarks/bench_scale_deployed.py [--sites 2,10] [--rounds 3] [--cases 6] [--size 64]

Every site holds the same small synthetic CAMUS-like set (``--cases`` patients), so the round's
compute grows with N. Memory: the peak of the summed proportional set size (PSS, sampled every
0.5 s; pages shared between processes, e.g. a forked task's with its worker, count once) of
everything a site runs (fl-client, its SuperNode, the site worker and its task processes), per
site; and the coordinator's (SuperLink, SuperExec and ServerApp processes, nginx). Time: the
mean round wall time, the slowest site's own training, and the round time per site.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common_setup import pss_mb, record, slowest_training

from common.processes import family
from fl_server.loopback import Cluster, done_rounds


class MemoryWatch:
    """Peak RSS (MB) of each process group of interest, sampled while the run lasts."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.peak: dict[str, float] = dict.fromkeys(groups, 0.0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def watch(self) -> None:
        while not self.stop.wait(0.5):
            for name, leaders in self.groups.items():
                total = sum(pss_mb(pid) for pid in family(leaders))
                self.peak[name] = max(self.peak[name], total)


def federation(n: int, args: argparse.Namespace) -> dict:
    base = Path(tempfile.mkdtemp(prefix=f"echofl-bench-scale-{n}-"))
    names = [f"S{i:02d}" for i in range(n)]
    Cluster.generate(
        base,
        [{"name": s, "vendor": "A", "format": "camus-nifti", "cases": args.cases} for s in names],
    )
    cluster = Cluster(base, {s: (s, "camus-nifti") for s in names}, min_sites=n)
    try:
        cluster.start()
        cluster.register(*names)
        for s in names:
            cluster.start_client(s)
        assert cluster.superlink is not None
        groups = {s: [cluster.clients[s].pid] for s in names}
        groups["coordinator"] = [cluster.superlink.pid]
        memory = MemoryWatch(groups)
        memory.thread.start()
        command = cluster.run_command(
            "scale",
            args.rounds,
            f"image-size={args.size} local-epochs=1 client-threads=1 federated-evaluation=false",
        )
        started = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        command_s = time.perf_counter() - started
        memory.stop.set()
        memory.thread.join()
        rows = cluster.rows("scale")
    finally:
        cluster.close()
        shutil.rmtree(base, ignore_errors=True)
    if run.returncode != 0:
        raise SystemExit(run.stdout[-3000:] + run.stderr[-2000:])
    rounds = done_rounds(rows)
    assert all(len(sites) == n for sites in rounds.values()), rounds
    round_s = [r["seconds"] for r in rows if r.get("event") == "round-done"]
    slowest = slowest_training(rows, rounds)
    sites_mb = [memory.peak[s] for s in names]
    return {
        "round_s": statistics.mean(round_s),
        "slowest_site_s": statistics.mean(slowest),
        "site_peak_mb": statistics.mean(sites_mb),
        "site_peak_mb_max": max(sites_mb),
        "coordinator_peak_mb": memory.peak["coordinator"],
        "command_s": command_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="2,10")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    counts = [int(c) for c in args.sites.split(",")]
    results = {n: federation(n, args) for n in counts}
    print(
        f"{args.cases} cases per site, {args.size}x{args.size}, {args.rounds} rounds, "
        f"{os.cpu_count()} cores, one torch thread per site"
    )
    for n, r in results.items():
        print(
            f"{n:3d} sites: round {r['round_s']:6.1f} s (slowest site's training "
            f"{r['slowest_site_s']:.1f} s; {r['round_s'] / n:.2f} s per site); memory per site "
            f"{r['site_peak_mb']:.0f} MB (max {r['site_peak_mb_max']:.0f}), coordinator "
            f"{r['coordinator_peak_mb']:.0f} MB"
        )
    if len(counts) >= 2:
        a, b = counts[0], counts[-1]
        slope = (results[b]["round_s"] - results[a]["round_s"]) / (b - a)
        print(f"round time grows by {slope:.2f} s per added site ({a} -> {b} sites, 2 cores)")
    path = record(
        "scale_deployed",
        {"settings": vars(args), "results": {str(k): v for k, v in results.items()}},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
