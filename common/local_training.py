"""What one site does in a federated round: train locally, or score the global model.

Pure functions over a model, the site's cached data and typed settings, so the Flower client
stays a thin wrapper and the same code can be tested (and benchmarked) without Flower.
Metrics come back as flat ``{name: float}`` dicts with the same keys at every site, because a
Flower round needs identical metric keys in all replies: a structure a site does not score
gets ``dice-X = 0`` with ``n-X = 0`` and aggregation weights by ``n-X``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from common.augment import Augmentation
from common.cache import SiteData
from common.label_dropout import LabelDropout
from common.labels import LabelledSet
from common.losses import LossName, SegmentationLoss
from common.metrics import STRUCTURES, DiceAccumulator, SegmentationScores
from common.training import (
    ProximalTerm,
    SegmentationTensors,
    evaluate,
    needs_grad_scaler,
    train_one_epoch,
)


@dataclass(frozen=True)
class LocalTrainSettings:
    """The train configuration a site receives for one round."""

    epochs: int
    batch_size: int
    lr: float
    loss: LossName
    dice_weight: float
    augment: bool
    dropout_p: float
    partial: LabelledSet
    proximal_mu: float
    seed: int


_NOTHING_SCORED = SegmentationScores(
    dice={s: float("nan") for s in STRUCTURES},
    count={s: 0 for s in STRUCTURES},
    area_ratio={s: float("nan") for s in STRUCTURES},
)


def score_metrics(scores: SegmentationScores, prefix: str = "") -> dict[str, float]:
    """``{prefix}dice-X``, ``{prefix}n-X`` and ``{prefix}area-X`` for every structure."""
    out: dict[str, float] = {}
    for s in STRUCTURES:
        n = scores.count.get(s, 0)
        out[f"{prefix}dice-{s.name}"] = float(scores.dice[s]) if n else 0.0
        out[f"{prefix}n-{s.name}"] = float(n)
        ratio = scores.area_ratio.get(s, float("nan"))
        out[f"{prefix}area-{s.name}"] = float(ratio) if n and ratio == ratio else 0.0
    return out


def round_seed(seed: int, server_round: int, site: str) -> int:
    """Seed of a site's local training in one round (distinct per site and round)."""
    h = 0
    for ch in site:
        h = (h * 131 + ord(ch)) % 1_000_003
    return (seed * 7_919 + server_round * 104_729 + h) % (2**31)


def train_local(
    model: nn.Module,
    data: SiteData,
    settings: LocalTrainSettings,
    *,
    device: torch.device,
    amp: bool = True,
) -> dict[str, float]:
    """Train ``model`` in place on ``data`` (the site's training split) for the round.

    Returns ``num-examples`` (training images, the FedAvg weight), ``train-loss`` (mean over the
    last local epoch), Dice per structure on the training batches of the last epoch (against
    the labels trained on, after label dropout) and ``train-seconds``.
    """
    if len(data) == 0:
        raise ValueError("the site has no training images")
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    tensors = SegmentationTensors.from_sites([data])
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    loss_fn = SegmentationLoss(settings.loss, dice_weight=settings.dice_weight)
    dropout = (
        LabelDropout.for_partial(settings.partial, settings.dropout_p)
        if settings.dropout_p > 0 and settings.partial
        else None
    )
    proximal = ProximalTerm(model, settings.proximal_mu) if settings.proximal_mu > 0 else None
    scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device, amp) else None
    augmentation = Augmentation(enabled=settings.augment)
    started = time.perf_counter()
    for epoch in range(settings.epochs):
        scores = DiceAccumulator() if epoch == settings.epochs - 1 else None
        stats = train_one_epoch(
            model,
            tensors,
            optimiser,
            loss_fn,
            batch_size=settings.batch_size,
            generator=generator,
            device=device,
            dropout=dropout,
            augmentation=augmentation,
            amp=amp,
            proximal=proximal,
            scaler=scaler,
            scores=scores,
        )
    assert scores is not None
    metrics = {
        "num-examples": float(len(data)),
        "train-loss": float(stats.loss),
        "train-seconds": time.perf_counter() - started,
    }
    metrics.update(score_metrics(scores.result()))
    return metrics


def evaluate_local(
    model: nn.Module,
    data: SiteData,
    *,
    device: torch.device,
    amp: bool = True,
    loss: LossName = "adaptive",
    dice_weight: float = 1.0,
) -> dict[str, float]:
    """Score ``model`` on one split of a site.

    ``dice-X`` scores the structures the site annotates (what a hospital can know);
    ``full-dice-X`` scores every structure on the full ground truth where the site has one
    (synthetic research data), else ``full-n-X = 0``.
    """
    if len(data) == 0:  # a site without this split still answers, with nothing scored
        return {
            "num-examples": 0.0,
            "loss": 0.0,
            **score_metrics(_NOTHING_SCORED),
            **score_metrics(_NOTHING_SCORED, prefix="full-"),
        }
    tensors = SegmentationTensors.from_sites([data])
    model.to(device)
    loss_fn = SegmentationLoss(loss, dice_weight=dice_weight)
    result = evaluate(model, tensors, device=device, amp=amp, loss_fn=loss_fn)
    assert result.labelled_scores is not None
    metrics = {"num-examples": float(len(data)), "loss": float(result.loss)}
    metrics.update(score_metrics(result.labelled_scores))
    full = result.full_scores or SegmentationScores(
        dice={s: float("nan") for s in STRUCTURES},
        count={s: 0 for s in STRUCTURES},
        area_ratio={s: float("nan") for s in STRUCTURES},
    )
    metrics.update(score_metrics(full, prefix="full-"))
    return metrics
