"""Scoring a model on several sites, and the one per-site, per-structure Dice table.

A score row is ``{"LV": dice, "MYO": ..., "area-LV": ratio, ..., "n": images, "full": 1.0 or
0.0}`` with a structure present only where it was scored: every structure on the full ground
truth (synthetic research data), the labelled structures otherwise. The research harness,
the centralised baseline and the coordinator's final table all use these rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from common.data.context import Context
from common.data.site_data import SiteData
from common.training.loop import EvalResult, SegmentationTensors, evaluate
from common.training.metrics import STRUCTURES

SiteScores = dict[str, dict[str, float]]  # site -> score row (see the module docstring)


def score_row(result: EvalResult, full: bool) -> dict[str, float]:
    row: dict[str, float] = {"n": float(result.samples), "full": float(full)}
    for s in STRUCTURES:
        if result.scores.count.get(s, 0) > 0:
            row[s.name] = result.scores.dice[s]
            row[f"area-{s.name}"] = result.scores.area_ratio[s]
    return row


def score_sites(
    model: nn.Module,
    sites: Mapping[str, SiteData],
    *,
    split: str,
    device: torch.device,
    amp: bool = True,
    context: Context = "none",
) -> SiteScores:
    """Score ``model`` on the ``split`` of every site that has samples in it (``context``: the
    input the model takes, its recipe's ``model.context``)."""
    out: SiteScores = {}
    for name, data in sites.items():
        part = data.split(split)
        if len(part) == 0:
            continue
        result = evaluate(
            model, SegmentationTensors.from_sites([part], context), device=device, amp=amp
        )
        out[name] = score_row(result, full=part.full_masks is not None)
    return out


def format_table(scores: SiteScores, title: str = "", *, scored_on: bool = False) -> str:
    """A fixed-width table: one row per site, Dice per structure (``-`` where not scored);
    ``scored_on`` adds whether a row is on the full ground truth or the labelled structures."""
    header = f"{'site':<14}" + "".join(f"{s.name:>8}" for s in STRUCTURES) + f"{'n':>6}"
    if scored_on:
        header += "  scored on"
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for site, row in scores.items():
        cells = "".join(
            f"{row[s.name]:>8.3f}" if not math.isnan(row.get(s.name, math.nan)) else f"{'-':>8}"
            for s in STRUCTURES
        )
        line = f"{site:<14}{cells}{int(row['n']):>6}"
        if scored_on:
            line += "  " + ("full ground truth" if row.get("full") else "labelled structures")
        lines.append(line)
    return "\n".join(lines)
