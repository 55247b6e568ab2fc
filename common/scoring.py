"""Scoring a model on several sites and printing per-site, per-structure Dice tables."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from common.cache import SiteData
from common.metrics import STRUCTURES
from common.training import EvalResult, SegmentationTensors, evaluate

SiteScores = dict[str, dict[str, float]]  # site -> {"LV": dice, ..., "n": samples}


def score_sites(
    model: nn.Module,
    sites: Mapping[str, SiteData],
    *,
    split: str,
    device: torch.device,
    amp: bool = True,
) -> dict[str, EvalResult]:
    """Evaluate ``model`` on the ``split`` of every site that has samples in it."""
    results: dict[str, EvalResult] = {}
    for name, data in sites.items():
        part = data.split(split)
        if len(part) == 0:
            continue
        results[name] = evaluate(
            model, SegmentationTensors.from_sites([part]), device=device, amp=amp
        )
    return results


def results_to_scores(results: Mapping[str, EvalResult]) -> SiteScores:
    """Flatten evaluation results to plain numbers (JSON-ready)."""
    out: SiteScores = {}
    for site, res in results.items():
        row = {s.name: res.scores.dice[s] for s in STRUCTURES}
        row.update({f"area-{s.name}": res.scores.area_ratio[s] for s in STRUCTURES})
        row["n"] = float(res.samples)
        out[site] = row
    return out


def format_table(scores: SiteScores, title: str = "") -> str:
    """A fixed-width table: one row per site, Dice per structure (``-`` where not scored)."""
    header = f"{'site':<12}" + "".join(f"{s.name:>8}" for s in STRUCTURES) + f"{'n':>6}"
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for site, row in scores.items():
        cells = "".join(
            f"{row[s.name]:>8.3f}" if not math.isnan(row[s.name]) else f"{'-':>8}"
            for s in STRUCTURES
        )
        lines.append(f"{site:<12}{cells}{int(row['n']):>6}")
    return "\n".join(lines)
