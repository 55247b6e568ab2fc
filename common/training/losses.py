"""Partial-label losses: adaptive (marginal) cross-entropy and an optional marginal Dice term.

Shapes: logits ``(B, C, H, W)`` with ``C = NUM_CLASSES`` (0 background, 1 LV, 2 MYO, 3 LA),
target ``(B, H, W)`` integer labels, labelled ``(B, C)`` bool where ``labelled[b, c]`` says whether
structure ``c`` is annotated in sample ``b`` (column 0, background, is always True).

For a sample with labelled set S the adaptive cross-entropy of a pixel is
``-log p_c`` when it is annotated as structure c in S and ``-log(p_bg + sum_{k not in S} p_k)``
when it reads as background: a structure nobody annotated in this image may hide inside its
"background". With S = every structure this is exactly the ordinary cross-entropy.
References: Shi et al. 2021 (marginal loss), Fidon et al. 2021 (label-set loss functions).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from common.labels import BACKGROUND, NUM_CLASSES

LossName = Literal["adaptive", "naive"]


def _check_inputs(logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor) -> None:
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, C, H, W), got shape {tuple(logits.shape)}")
    b, c, h, w = logits.shape
    if c != NUM_CLASSES:
        raise ValueError(f"logits must have {NUM_CLASSES} channels, got {c}")
    if tuple(target.shape) != (b, h, w):
        raise ValueError(f"target must be (B, H, W) = {(b, h, w)}, got {tuple(target.shape)}")
    if tuple(labelled.shape) != (b, c) or labelled.dtype != torch.bool:
        raise ValueError(
            f"labelled must be a bool tensor of shape {(b, c)}, got "
            f"{labelled.dtype} {tuple(labelled.shape)}"
        )


def marginal_background_mask(labelled: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` bool: the classes merged into background (background + unlabelled structures)."""
    merged = ~labelled
    merged[:, BACKGROUND] = True
    return merged


class AdaptiveCrossEntropy(nn.Module):
    """Adaptive (marginal) cross-entropy, averaged over pixels and then over the batch.

    Args:
        check_targets: verify that no pixel is annotated with a structure outside its sample's
            labelled set (such a pixel has no defined loss); costs one reduction per call.
    """

    def __init__(self, check_targets: bool = True) -> None:
        super().__init__()
        self.check_targets = check_targets

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor
    ) -> torch.Tensor:
        _check_inputs(logits, target, labelled)
        target = target.long()
        logits = logits.float()
        fully_labelled = bool(labelled.all())
        if self.check_targets and not fully_labelled:
            target_labelled = labelled.gather(1, target.flatten(1)).view_as(target)
            if not bool(target_labelled.all()):
                raise ValueError("target annotates a structure outside its sample's labelled set")
        if fully_labelled:  # nothing merged: exactly the ordinary cross-entropy (one fused op)
            return F.cross_entropy(logits, target)
        # The merged classes (background + unlabelled structures) and the labelled structures
        # partition the classes, so the softmax normaliser over [logsumexp of the merged logits,
        # labelled structures' logits] is the one over all classes: the marginal loss is the
        # ordinary cross-entropy on these "merged logits" (unlabelled channels at -inf are
        # never a target and carry no gradient).
        merged = marginal_background_mask(labelled)[:, :, None, None]
        background = torch.logsumexp(logits.masked_fill(~merged, float("-inf")), dim=1)
        structures = logits[:, 1:].masked_fill(merged[:, 1:], float("-inf"))
        return F.cross_entropy(torch.cat([background[:, None], structures], dim=1), target)


class MarginalDiceLoss(nn.Module):
    """Soft Dice over each sample's labelled structures, unlabelled ones merged into background.

    Returns ``1 - mean Dice`` over the (sample, labelled structure) pairs of the batch; the
    structures outside a sample's labelled set do not enter its Dice at all (their probability
    counts as background, which is never scored). ``smooth`` avoids 0/0 on empty structures.
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        if smooth <= 0:
            raise ValueError(f"smooth must be > 0, got {smooth}")
        self.smooth = smooth

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor
    ) -> torch.Tensor:
        _check_inputs(logits, target, labelled)
        probs = F.softmax(logits.float(), dim=1)
        onehot = F.one_hot(target.long(), NUM_CLASSES).permute(0, 3, 1, 2).to(probs.dtype)
        intersection = (probs * onehot).sum(dim=(2, 3))
        total = probs.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3))
        dice = (2 * intersection + self.smooth) / (total + self.smooth)  # (B, C)
        scored = labelled.clone()
        scored[:, BACKGROUND] = False
        if not bool(scored.any()):
            return logits.sum() * 0.0
        return 1.0 - dice[scored].mean()


class SegmentationLoss(nn.Module):
    """The training loss: cross-entropy (adaptive or naive) plus an optional marginal Dice term.

    ``naive`` ignores the labelled sets (missing structures read as background, the usual
    mistake the adaptive loss corrects); it is kept as a reference condition.
    """

    def __init__(self, kind: LossName = "adaptive", dice_weight: float = 0.0) -> None:
        super().__init__()
        if kind not in ("adaptive", "naive"):
            raise ValueError(f"loss kind must be 'adaptive' or 'naive', got {kind!r}")
        if dice_weight < 0:
            raise ValueError(f"dice_weight must be >= 0, got {dice_weight}")
        self.kind = kind
        self.dice_weight = dice_weight
        self.cross_entropy = AdaptiveCrossEntropy()
        self.dice = MarginalDiceLoss()

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor
    ) -> torch.Tensor:
        if self.kind == "naive":
            labelled = torch.ones_like(labelled)
        loss = self.cross_entropy(logits, target, labelled)
        if self.dice_weight > 0:
            loss = loss + self.dice_weight * self.dice(logits, target, labelled)
        return loss
