"""What a site declares in a reply, checked against what the coordinator knows.

The coordinator trusts nothing a site says about itself beyond its answer to the query round
(:class:`fl_server.negotiation.SiteInfo`: the images per split it declared once, before any
model travelled). A training reply's ``num-examples`` may not exceed the site's training split
from the query, nor be zero, negative or not a whole number; its FedAvg weight is the query's
count, never the reply's. Every metric must be a finite number in its range: Dice in [0, 1],
``n-X`` whole numbers between 0 and the scored split's size, areas and losses >= 0. A reply that
fails is left out of the mean, of the metric aggregates and of model selection, and the reason
is logged with the site's name. No Flower here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from common.federation.protocol import (
    NUM_EXAMPLES,
    SCORE_PREFIXES,
    area_key,
    count_key,
    dice_key,
)
from common.training.metrics import STRUCTURES

NON_NEGATIVE = ("loss", "train-loss", "train-seconds", "train-steps", "train-distillation-loss")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _whole(value: float) -> bool:
    return value == int(value)


def metric_problem(metrics: Mapping[str, Any], split_size: int, *, training: bool) -> str | None:
    """Why these reply metrics cannot be believed (None: they can). ``split_size``: the images
    of the scored split (training: the train split) the site declared in the query round."""
    for key, value in metrics.items():
        if _number(value) is None:
            return f"metric {key} = {value!r} is not a finite number"
    examples = float(metrics.get(NUM_EXAMPLES, math.nan))
    if math.isnan(examples):
        return f"the reply has no {NUM_EXAMPLES}"
    if not _whole(examples) or examples < 0:
        return f"{NUM_EXAMPLES} = {examples:g} is not a count"
    if training and examples == 0:
        return f"{NUM_EXAMPLES} = 0: a training reply must have trained on images"
    if examples > split_size:
        return (
            f"{NUM_EXAMPLES} = {examples:g} exceeds the {split_size} image(s) the site declared "
            "in the query round"
        )
    for prefix in SCORE_PREFIXES:
        for s in STRUCTURES:
            n_key, d_key, a_key = (count_key(s, prefix), dice_key(s, prefix), area_key(s, prefix))
            if n_key in metrics:
                n = float(metrics[n_key])
                if not _whole(n) or not 0 <= n <= max(examples, 0):
                    return f"{n_key} = {n:g} is not a count in [0, {NUM_EXAMPLES} = {examples:g}]"
            if d_key in metrics and not 0.0 <= float(metrics[d_key]) <= 1.0:
                return f"{d_key} = {float(metrics[d_key]):g} is outside [0, 1]"
            if a_key in metrics and float(metrics[a_key]) < 0:
                return f"{a_key} = {float(metrics[a_key]):g} is negative"
    for key in NON_NEGATIVE:
        if key in metrics and float(metrics[key]) < 0:
            return f"{key} = {float(metrics[key]):g} is negative"
    return None
