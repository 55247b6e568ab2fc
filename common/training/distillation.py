"""Conditional distillation on the structures a site does not annotate.

After ConDistFL (Wang et al., "ConDistFL: Conditional Distillation for Federated Learning from
Partially Annotated Data", MICCAI DeCaF 2023, arXiv:2308.04070): a site that never annotates a
structure has no label for it, and its local training, supervised only on the merged
background, slowly erases what the global model knows about that structure. The global model
received this round is a frozen teacher; inside the merged background, the student's
distribution over {background and the structures this sample does not annotate} follows the
teacher's distribution over the same classes.

Shapes as in :mod:`common.training.losses`: logits ``(B, C, H, W)``, target ``(B, H, W)``,
labelled ``(B, C)`` bool (column 0 always True). For sample ``b`` let ``M_b`` be its merged
classes (background + unlabelled structures). The loss is

    T^2 * mean over masked pixels of KL( softmax(z_t[M_b] / T) || softmax(z_s[M_b] / T) )

where a pixel is masked in (counted) when its ground truth is merged background
(``target == 0``) and the teacher's argmax over all classes is in ``M_b``: pixels where either
the annotation or the teacher says "a structure this site annotates" are left to the supervised
loss. Samples with ``M_b = {background}`` (fully labelled) contribute nothing; with no counted
pixel in the batch the loss is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.labels import BACKGROUND
from common.training.losses import _check_inputs, marginal_background_mask


class ConditionalDistillation(nn.Module):
    """The loss above. ``temperature`` > 0 softens both distributions (ConDistFL uses 2)."""

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        target: torch.Tensor,
        labelled: torch.Tensor,
    ) -> torch.Tensor:
        _check_inputs(student, target, labelled)
        if teacher.shape != student.shape:
            raise ValueError(
                f"teacher logits {tuple(teacher.shape)} differ from student {tuple(student.shape)}"
            )
        merged = marginal_background_mask(labelled)  # (B, C)
        several = merged.sum(1) > 1  # samples with at least one unannotated structure
        teacher = teacher.detach().float()
        in_merged = merged.gather(1, teacher.argmax(1).flatten(1)).view_as(target)
        counted = (target.long() == BACKGROUND) & in_merged & several[:, None, None]
        if not bool(counted.any()):
            return student.sum() * 0.0
        t = self.temperature
        keep = merged[:, :, None, None]
        log_p = F.log_softmax(student.float().masked_fill(~keep, float("-inf")) / t, dim=1)
        log_q = F.log_softmax(teacher.masked_fill(~keep, float("-inf")) / t, dim=1)
        # classes outside M_b have q = 0 and log = -inf: zero them before the product (no NaN)
        log_p, log_q = log_p.masked_fill(~keep, 0.0), log_q.masked_fill(~keep, 0.0)
        kl = (log_q.exp() * keep * (log_q - log_p)).sum(1)  # (B, H, W)
        return (t * t) * kl[counted].mean()


class DistillationTerm:
    """A frozen teacher (the global model of the round) and the loss's weight this round."""

    def __init__(self, teacher: nn.Module, weight: float, temperature: float) -> None:
        if weight < 0:
            raise ValueError(f"distillation weight must be >= 0, got {weight}")
        self.teacher = teacher.eval()  # frozen: only ever run under no_grad
        self.weight = weight
        self.loss = ConditionalDistillation(temperature)

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher(images)

    def __call__(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        target: torch.Tensor,
        labelled: torch.Tensor,
    ) -> torch.Tensor:
        return self.weight * self.loss(student, teacher, target, labelled)


def ramped_weight(weight: float, ramp_rounds: int, server_round: int) -> float:
    """``weight`` reached linearly over the first ``ramp_rounds`` rounds (0: from round 1)."""
    if ramp_rounds <= 0:
        return weight
    return weight * min(1.0, server_round / ramp_rounds)
