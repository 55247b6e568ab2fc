"""The federated recipes side by side: per-seed federated / centralised ratios, the worst seed,
the gap to the fully labelled bound, rounds to 0.9 of the final Dice, and the class-head drift.

Every number is read from the runs' ``result.json`` files and (for the drift) their
``metrics.jsonl``; nothing is typed in. A structure's score for a run is the mean Dice of that
structure over the training sites (full ground truth: every structure at every site).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simulations.experiment import ExperimentConfig

STRUCTURES = ("LV", "MYO", "LA")
GOAL_RATIO = 0.97
GOAL_GAP = 0.03


def structure_scores(result: Mapping[str, Any], sites: Sequence[str]) -> dict[str, float]:
    """Mean Dice of each structure over ``sites`` (NaN where none scored it)."""
    out = {}
    for s in STRUCTURES:
        values = [result["test"][x][s] for x in sites if s in result["test"].get(x, {})]
        out[s] = float(np.mean(values)) if values else math.nan
    return out


def cells_mean(result: Mapping[str, Any], cells: Sequence[tuple[str, str]]) -> float:
    values = [result["test"][x][s] for x, s in cells if s in result["test"].get(x, {})]
    return float(np.mean(values)) if values else math.nan


def rounds_to_fraction(curve: Sequence[float], fraction: float = 0.9) -> int | None:
    """First round (1-based; the curve's index 0 is round 0) whose validation Dice reaches
    ``fraction`` of the final round's."""
    values = [v for v in curve if v is not None]
    if len(values) < 2 or values[-1] is None or math.isnan(values[-1]):
        return None
    target = fraction * values[-1]
    for i, v in enumerate(curve):
        if v is not None and not math.isnan(v) and v >= target:
            return i
    return None


def mean_drift(run_dir: Path) -> dict[str, float]:
    """Mean over rounds of the class-head drift (share of each structure's head change made by
    sites that do not annotate it, FedAvg-weighted) from a run's metrics log."""
    log = run_dir / "metrics.jsonl"
    if not log.is_file():
        return {}
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    drift = [r for r in rows if r.get("event") == "class-drift"]
    return {
        s: float(np.mean([r[s] for r in drift if r.get(s) is not None]))
        for s in STRUCTURES
        if any(r.get(s) is not None for r in drift)
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def recipes_markdown(
    config: ExperimentConfig,
    results: Sequence[dict[str, Any]],
    labelled: Mapping[str, set[str]],
) -> str:
    """The section (Markdown); empty when the study has no centralised partial-label run."""
    by = {(r["condition"], r["seed"]): r for r in results}
    conditions = {c.name: c for c in config.conditions}
    central = next(
        (
            c.name
            for c in config.conditions
            if c.kind == "centralised"
            and c.labels == "partial"
            and config.recipe_for(c).label_dropout.p == 0
        ),
        None,
    )
    upper = next(
        (c.name for c in config.conditions if c.kind == "federated" and c.labels == "full"), None
    )
    if central is None:
        return ""
    sites = [s.name for s in config.train_sites]
    unannotated = [(x, s) for x in sites for s in STRUCTURES if s not in labelled.get(x, set())]
    federated = [
        c.name for c in config.conditions if c.kind == "federated" and c.labels == "partial"
    ]
    out = ["## Federated recipes against centralised training\n"]
    out.append(
        f"Per seed, the federated / centralised ratio of each structure's Dice (mean over the "
        f"training sites {', '.join(sites)}, full ground truth), against `{central}` of the same "
        f"seed. Goal: >= {GOAL_RATIO} for every structure in every seed, and within {GOAL_GAP} "
        f"of the fully labelled federation (`{upper}`) on the never-annotated cells "
        f"({', '.join(f'{x}/{s}' for x, s in unannotated)}).\n"
    )
    out.append(
        "| recipe | seed | LV | MYO | LA | unannotated | gap to fully labelled | "
        "rounds to 0.9 of final |"
    )
    out.append("|---|---|---|---|---|---|---|---|")
    summary = []
    for name in federated:
        seeds = sorted(seed for (n, seed) in by if n == name and (central, seed) in by)
        ratios: dict[str, list[float]] = {s: [] for s in STRUCTURES}
        gaps: list[float] = []
        for seed in seeds:
            fed = structure_scores(by[(name, seed)], sites)
            cen = structure_scores(by[(central, seed)], sites)
            ratio = {s: fed[s] / cen[s] if cen[s] > 0 else math.nan for s in STRUCTURES}
            for s in STRUCTURES:
                ratios[s].append(ratio[s])
            un = cells_mean(by[(name, seed)], unannotated)
            gap = (
                cells_mean(by[(upper, seed)], unannotated) - un
                if upper is not None and (upper, seed) in by
                else math.nan
            )
            gaps.append(gap)
            rounds = rounds_to_fraction(by[(name, seed)]["curves"].get("all", []))
            out.append(
                f"| {name} | {seed} | "
                + " | ".join(_fmt(ratio[s]) for s in STRUCTURES)
                + f" | {_fmt(un)} | {_fmt(gap)} | {rounds if rounds is not None else '-'} |"
            )
        if seeds:
            worst = {s: float(np.nanmin(ratios[s])) for s in STRUCTURES}
            met = all(w >= GOAL_RATIO for w in worst.values()) and all(
                not math.isnan(g) and g <= GOAL_GAP for g in gaps
            )
            summary.append((name, worst, float(np.nanmax(gaps)) if gaps else math.nan, met))
    out.append("")
    out.append("Worst seed per structure (the goal is judged on it):\n")
    out.append("| recipe | worst LV | worst MYO | worst LA | largest gap | goal met |")
    out.append("|---|---|---|---|---|---|")
    for name, worst, gap, met in summary:
        out.append(
            f"| {name} | "
            + " | ".join(_fmt(worst[s]) for s in STRUCTURES)
            + f" | {_fmt(gap)} | {'yes' if met else 'no'} |"
        )
    out.append("")
    drift_rows = []
    for name in federated:
        seeds = sorted(seed for (n, seed) in by if n == name)
        drifts = [
            by[(name, seed)].get("drift")
            or mean_drift(config.run_dir / "runs" / conditions[name].slug / f"seed-{seed}")
            for seed in seeds
        ]
        drifts = [d for d in drifts if d]
        if drifts:
            drift_rows.append(
                (name, {s: float(np.mean([d[s] for d in drifts if s in d])) for s in STRUCTURES})
            )
    if drift_rows:
        out.append("### Where each class head's update comes from\n")
        out.append(
            "Share of each structure's head (the output weights that belong to that class "
            "alone, found from the network) that FedAvg would take from sites that do not "
            "annotate the structure: `sum over those sites of ||p_i d_i|| / sum over all sites "
            "of ||p_i d_i||`, `d_i` a site's change in the round, `p_i` its FedAvg weight. Mean "
            "over rounds and seeds.\n"
        )
        out.append("| recipe | LV | MYO | LA |")
        out.append("|---|---|---|---|")
        for name, d in drift_rows:
            out.append(f"| {name} | " + " | ".join(_fmt(d.get(s)) for s in STRUCTURES) + " |")
        out.append("")
    return "\n".join(out) + "\n"
