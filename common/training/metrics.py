"""Per-structure Dice (and predicted/true area ratio) on hard predictions.

Dice is computed per image and per structure, then averaged over the images where the structure
is scored: on the full ground truth when a sample has one (synthetic data: every structure on
every domain), else only on the structures of the sample's labelled set (real data). An image
where both prediction and reference are empty for a structure scores Dice 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from common.labels import Structure

STRUCTURES: tuple[Structure, ...] = tuple(Structure)


def dice_per_image(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Dice of every structure in every image.

    pred, ref: (B, H, W) integer label maps. Returns (B, 3) float64, columns LV, MYO, LA.
    """
    if pred.shape != ref.shape or pred.ndim != 3:
        raise ValueError(
            f"pred and ref must both be (B, H, W), got {tuple(pred.shape)} and {tuple(ref.shape)}"
        )
    scores = []
    for s in STRUCTURES:
        p = (pred == int(s)).flatten(1)
        r = (ref == int(s)).flatten(1)
        inter = (p & r).sum(1).double()
        total = (p.sum(1) + r.sum(1)).double()
        scores.append(
            torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
        )
    return torch.stack(scores, dim=1)


def area_per_image(labels: torch.Tensor) -> torch.Tensor:
    """Pixel count of every structure: (B, H, W) -> (B, 3) float64."""
    return torch.stack([(labels == int(s)).flatten(1).sum(1).double() for s in STRUCTURES], dim=1)


@dataclass
class SegmentationScores:
    """Mean Dice per structure over the scored images, with counts and area ratios.

    ``dice[s]`` is NaN when no image scored ``s``. ``area_ratio[s]`` is the summed predicted
    area over the summed true area on those images (1 = right size; >1 over-segmentation, e.g.
    an unlabelled RV called LV; 0 = the structure is never predicted).
    """

    dice: dict[Structure, float] = field(default_factory=dict)
    count: dict[Structure, int] = field(default_factory=dict)
    area_ratio: dict[Structure, float] = field(default_factory=dict)

    def as_metrics(self, prefix: str = "dice") -> dict[str, float]:
        """Flat scalar metrics, e.g. ``{"dice-LV": 0.93, "n-LV": 40, "area-LV": 1.02}``."""
        out: dict[str, float] = {}
        for s in STRUCTURES:
            if self.count.get(s, 0) > 0:
                out[f"{prefix}-{s.name}"] = self.dice[s]
                out[f"area-{s.name}"] = self.area_ratio[s]
            out[f"n-{s.name}"] = float(self.count.get(s, 0))
        return out


class DiceAccumulator:
    """Collects per-image Dice over batches; :meth:`result` averages per structure."""

    def __init__(self) -> None:
        self._dice_sum = np.zeros(len(STRUCTURES))
        self._count = np.zeros(len(STRUCTURES), dtype=np.int64)
        self._pred_area = np.zeros(len(STRUCTURES))
        self._true_area = np.zeros(len(STRUCTURES))
        self.per_image: list[np.ndarray] = []

    def add(self, pred: torch.Tensor, ref: torch.Tensor, scored: torch.Tensor) -> None:
        """pred, ref: (B, H, W) labels; scored: (B, 3) bool, which structures count per image."""
        if scored.shape != (pred.shape[0], len(STRUCTURES)):
            raise ValueError(f"scored must be (B, 3), got {tuple(scored.shape)}")
        dice = dice_per_image(pred, ref).cpu()
        scored = scored.cpu()
        self._dice_sum += torch.where(scored, dice, 0.0).sum(0).numpy()
        self._count += scored.sum(0).numpy()
        self._pred_area += torch.where(scored, area_per_image(pred).cpu(), 0.0).sum(0).numpy()
        self._true_area += torch.where(scored, area_per_image(ref).cpu(), 0.0).sum(0).numpy()
        self.per_image.append(torch.where(scored, dice, float("nan")).numpy())

    def result(self) -> SegmentationScores:
        scores = SegmentationScores()
        for i, s in enumerate(STRUCTURES):
            n = int(self._count[i])
            scores.count[s] = n
            scores.dice[s] = float(self._dice_sum[i] / n) if n else float("nan")
            scores.area_ratio[s] = (
                float(self._pred_area[i] / self._true_area[i])
                if self._true_area[i] > 0
                else float("nan")
            )
        return scores
