"""Two models' EF errors on the same held-out cases, case by case: is the difference real?

Reads two ``ef.json`` files that ``benchmarks/bench_ef.py`` wrote for the same ``--cases`` and
``--seed`` (the same recordings, in the same order) and prints per vendor each model's MAE, the
mean of the paired differences |error B| - |error A| with a 95 % bootstrap interval (2000
resamples of the cases, seed 0), and how many cases each model got closer. An interval that
contains 0 is a tie.

    python investigations/paired_ef.py A/ef.json B/ef.json [--names baseline,partner]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

RESAMPLES = 2000


def errors(path: Path) -> dict[str, list[tuple[float, float]]]:
    cases = json.loads(path.read_text())["cases"]
    return {v: [(r["truth"], r["model"]) for r in rows] for v, rows in cases.items()}


def paired(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> dict[str, float]:
    if len(a) != len(b) or any(x[0] != y[0] for x, y in zip(a, b, strict=True)):
        raise SystemExit("the two files are not of the same cases (same --cases and --seed)")
    ea = np.array([abs(m - t) for t, m in a])
    eb = np.array([abs(m - t) for t, m in b])
    keep = np.isfinite(ea) & np.isfinite(eb)  # both found an LV
    d = eb[keep] - ea[keep]
    rng = np.random.default_rng(0)
    means = d[rng.integers(0, len(d), (RESAMPLES, len(d)))].mean(1)
    return {
        "cases": int(keep.sum()),
        "mae_a": float(ea[keep].mean()),
        "mae_b": float(eb[keep].mean()),
        "difference": float(d.mean()),
        "low": float(np.percentile(means, 2.5)),
        "high": float(np.percentile(means, 97.5)),
        "b_closer": int((d < 0).sum()),
        "a_closer": int((d > 0).sum()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--names", default="A,B")
    args = parser.parse_args()
    name_a, name_b = args.names.split(",")
    ea, eb = errors(args.a), errors(args.b)
    print(f"| vendor | cases | {name_a} MAE | {name_b} MAE | {name_b} - {name_a} (95 % interval) "
          f"| {name_b} closer | {name_a} closer |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    pooled_a: list[tuple[float, float]] = []
    pooled_b: list[tuple[float, float]] = []
    for vendor in ea:
        pooled_a += ea[vendor]
        pooled_b += eb[vendor]
        rows = [(vendor, paired(ea[vendor], eb[vendor]))]
        for label, r in rows:
            tie = "" if r["low"] > 0 or r["high"] < 0 else " (tie)"
            print(f"| {label} | {r['cases']} | {r['mae_a']:.2f} | {r['mae_b']:.2f} | "
                  f"{r['difference']:+.2f} ({r['low']:+.2f} .. {r['high']:+.2f}){tie} | "
                  f"{r['b_closer']} | {r['a_closer']} |")  # fmt: skip
    r = paired(pooled_a, pooled_b)
    tie = "" if r["low"] > 0 or r["high"] < 0 else " (tie)"
    interval = f"({r['low']:+.2f} .. {r['high']:+.2f}){tie}"
    print(f"| all | {r['cases']} | {r['mae_a']:.2f} | {r['mae_b']:.2f} | {r['difference']:+.2f} "
          f"{interval} | {r['b_closer']} | {r['a_closer']} |")  # fmt: skip
    return 0 if math.isfinite(r["difference"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
