"""Agreement of a predicted mask with a reference: Dice, HD95 and mean surface distance in mm.

HD95 (the 95th percentile of the symmetric boundary distances) and the mean (symmetric)
surface distance are MONAI's ``compute_hausdorff_distance`` and
``compute_average_surface_distance`` with the pixel spacing, as CAMUS-style evaluations report
them beside Dice. A structure missing from the prediction or the reference gets NaN distances
(Dice 0 when only one of them has it, NaN when neither does).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from common.labels import NUM_CLASSES, Structure


def agreement(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: tuple[float, float] | None,
    structures: tuple[Structure, ...] = tuple(Structure),
) -> dict[str, float]:
    """``{"dice-LV": .., "hd95-LV": .., "msd-LV": .., ...}`` for one (H, W) label map pair; the
    distances are in mm (pixels when ``spacing_mm`` is None) and only for ``structures``."""
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and reference {truth.shape} differ in size")
    one_hot = [
        torch.nn.functional.one_hot(torch.from_numpy(np.asarray(m, dtype=np.int64)), NUM_CLASSES)
        .permute(2, 0, 1)[None]
        .float()
        for m in (pred, truth)
    ]
    spacing = list(spacing_mm) if spacing_mm is not None else None
    hd95 = compute_hausdorff_distance(*one_hot, percentile=95, spacing=spacing)[0]
    msd = compute_average_surface_distance(*one_hot, symmetric=True, spacing=spacing)[0]
    out: dict[str, float] = {}
    for s in structures:
        p, t = pred == int(s), truth == int(s)
        total = int(p.sum() + t.sum())
        out[f"dice-{s.name}"] = 2.0 * float((p & t).sum()) / total if total else math.nan
        both = bool(p.any() and t.any())
        out[f"hd95-{s.name}"] = float(hd95[int(s) - 1]) if both else math.nan
        out[f"msd-{s.name}"] = float(msd[int(s) - 1]) if both else math.nan
    return out
