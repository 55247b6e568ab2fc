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

from common.labels import Structure


def agreement(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: tuple[float, float] | None,
    structures: tuple[Structure, ...] = tuple(Structure),
) -> dict[str, float]:
    """``{"dice-LV": .., "hd95-LV": .., "msd-LV": .., ...}`` for one (H, W) label map pair; the
    distances are in mm (pixels when ``spacing_mm`` is None) and only for ``structures``.

    One MONAI edge-distance pass per structure gives both: HD95 as
    ``compute_hausdorff_distance(percentile=95)`` takes it (the larger of the two directed 95th
    percentiles) and the mean surface distance as ``compute_average_surface_distance(
    symmetric=True)`` (the mean of both directions' distances together); the test checks the two
    functions give the same numbers."""
    from monai.metrics.utils import get_edge_surface_distance

    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and reference {truth.shape} differ in size")
    spacing = list(spacing_mm) if spacing_mm is not None else None
    out: dict[str, float] = {}
    for s in structures:
        p, t = pred == int(s), truth == int(s)
        total = int(p.sum() + t.sum())
        out[f"dice-{s.name}"] = 2.0 * float((p & t).sum()) / total if total else math.nan
        out[f"hd95-{s.name}"] = out[f"msd-{s.name}"] = math.nan
        if not (p.any() and t.any()):
            continue
        _, distances, _ = get_edge_surface_distance(
            torch.from_numpy(p), torch.from_numpy(t), spacing=spacing, symmetric=True
        )
        out[f"hd95-{s.name}"] = float(max(torch.quantile(d.double(), 0.95) for d in distances))
        out[f"msd-{s.name}"] = float(torch.cat(distances).double().mean())
    return out
