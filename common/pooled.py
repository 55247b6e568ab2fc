"""Training on pooled sites without federation: the centralised baseline and local-only runs.

Same loop, loss and label dropout as a federated site (:mod:`common.training`); only the data
differ (every training site's samples in one pool, or one site alone).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from common.cache import SiteData
from common.label_dropout import LabelDropout
from common.labels import LabelledSet, parse_labelled_set, partially_labelled
from common.model import ModelConfig, build_unet
from common.training import (
    EpochStats,
    EvalResult,
    SegmentationTensors,
    TrainConfig,
    evaluate,
    make_loss,
    make_optimiser,
    needs_grad_scaler,
    train_one_epoch,
)

log = logging.getLogger(__name__)


class LabelDropoutConfig(BaseModel):
    """``p``: drop probability of each partially labelled structure (0 = off). ``structures``:
    None = every structure partially labelled across the training sites (the paper's rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p: float = Field(default=0.0, ge=0.0, le=1.0)
    structures: list[str] | None = None


@dataclass
class PooledHistory:
    epochs: list[EpochStats] = field(default_factory=list)
    validation: list[EvalResult] = field(default_factory=list)
    partial: LabelledSet = frozenset()


def dropout_for(sites: Sequence[SiteData], config: LabelDropoutConfig) -> LabelDropout | None:
    """Label dropout over the structures partially labelled across ``sites``."""
    if config.p <= 0:
        return None
    if config.structures is not None:
        structures = parse_labelled_set(config.structures)
    else:
        structures = partially_labelled(s.labelled_set for s in sites)
    return LabelDropout.for_partial(structures, config.p)


def train_pooled(
    train_sites: Sequence[SiteData],
    *,
    train: TrainConfig,
    model_config: ModelConfig,
    label_dropout: LabelDropoutConfig,
    seed: int,
    device: torch.device,
    validation: SegmentationTensors | None = None,
    on_epoch: Callable[[int, EpochStats, EvalResult | None], None] | None = None,
) -> tuple[nn.Module, PooledHistory]:
    """Train one model on the union of ``train_sites`` for ``train.epochs`` epochs.

    The final model is returned (fixed epoch budget, no selection on validation data);
    ``validation`` is scored after every epoch for the learning curve only.
    """
    torch.manual_seed(seed)
    model = build_unet(model_config).to(device)
    data = SegmentationTensors.from_sites(train_sites)
    optimiser = make_optimiser(model, train)
    loss_fn = make_loss(train)
    dropout = dropout_for(train_sites, label_dropout)
    generator = torch.Generator().manual_seed(seed)
    scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device, train.amp) else None
    history = PooledHistory(partial=partially_labelled(s.labelled_set for s in train_sites))
    for epoch in range(1, train.epochs + 1):
        stats = train_one_epoch(
            model,
            data,
            optimiser,
            loss_fn,
            batch_size=train.batch_size,
            generator=generator,
            device=device,
            dropout=dropout,
            augmentation=train.augment,
            amp=train.amp,
            scaler=scaler,
        )
        history.epochs.append(stats)
        val = None
        if validation is not None and len(validation) > 0:
            val = evaluate(model, validation, device=device, amp=train.amp, loss_fn=loss_fn)
            history.validation.append(val)
        if on_epoch is not None:
            on_epoch(epoch, stats, val)
    return model, history
