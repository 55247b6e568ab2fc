"""What one site does in a federated round: train locally, or score the global model.

Plain functions over a model, the site's cached data, the run's recipe and the coordinator's
instruction, so the Flower client stays a thin wrapper and the same code is tested (and
benchmarked) without Flower. Training is :func:`common.training.loop.train`, the entry point
the pooled and local-only baselines use too; the metrics come back with the protocol's keys.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from common.data.site_data import SiteData
from common.federation.protocol import (
    FULL,
    NUM_EXAMPLES,
    ProtocolError,
    TrainInstruction,
    scores_to_metrics,
)
from common.recipe import Recipe
from common.training.distillation import DistillationTerm, ramped_weight
from common.training.loop import SegmentationTensors, evaluate, train
from common.training.losses import SegmentationLoss


def round_seed(seed: int, server_round: int, site: str) -> int:
    """Seed of a site's local training in one round (distinct per site and round)."""
    h = 0
    for ch in site:
        h = (h * 131 + ord(ch)) % 1_000_003
    return (seed * 7_919 + server_round * 104_729 + h) % (2**31)


def round_schedule(recipe: Recipe, instruction: TrainInstruction) -> tuple[int, int] | None:
    """Where this round's local epochs sit in the run's learning-rate schedule: (epochs of the
    run before them, the run's epochs); None for a constant rate."""
    if recipe.optimiser.lr_schedule == "constant":
        return None
    if instruction.server_rounds is None:
        raise ProtocolError(
            f"the recipe's lr-schedule {recipe.optimiser.lr_schedule!r} needs the run's number of "
            "rounds, and the coordinator's train instruction has no server-rounds (a coordinator "
            "older than this site?)"
        )
    epochs = recipe.train.epochs
    return (instruction.server_round - 1) * epochs, instruction.server_rounds * epochs


def train_site(
    model: nn.Module,
    data: SiteData,
    recipe: Recipe,
    instruction: TrainInstruction,
    *,
    seed: int,
    device: torch.device,
) -> dict[str, float]:
    """Train ``model`` in place on ``data`` (the site's training split) for one round.

    ``seed`` is the run's seed; the round's own seed is :func:`round_seed` of it. Returns
    ``num-examples`` (training images, the FedAvg weight), ``train-loss`` (mean over the last
    local epoch), ``train-seconds`` and Dice per structure on the training batches of the last
    epoch (against the labels trained on, after label dropout).
    """
    if len(data) == 0:
        raise ValueError("the site has no training images")
    started = time.perf_counter()
    distillation = None
    settings = recipe.distillation
    if settings.weight > 0:  # the global model as received is the round's frozen teacher
        weight = ramped_weight(settings.weight, settings.ramp_rounds, instruction.server_round)
        distillation = DistillationTerm(copy.deepcopy(model), weight, settings.temperature)
    history = train(
        model,
        SegmentationTensors.from_sites([data], recipe.model.context),
        recipe,
        seed=round_seed(seed, instruction.server_round, data.site),
        device=device,
        partial=instruction.partial,
        proximal_mu=recipe.aggregation.site_proximal_mu,
        distillation=distillation,
        schedule=round_schedule(recipe, instruction),
    )
    metrics = {
        NUM_EXAMPLES: float(len(data)),
        "train-loss": float(history.epochs[-1].loss),
        "train-seconds": time.perf_counter() - started,
        "train-steps": float(sum(e.steps for e in history.epochs)),
        "train-distillation-loss": float(history.epochs[-1].distillation_loss),
    }
    metrics.update(scores_to_metrics(history.last_epoch_scores))
    return metrics


def evaluate_site(
    model: nn.Module, data: SiteData, recipe: Recipe, *, device: torch.device
) -> dict[str, float]:
    """Score ``model`` on one split of a site.

    ``dice-X`` scores the structures the site annotates (what a hospital can know);
    ``full-dice-X`` scores every structure on the full ground truth where the site has one
    (synthetic research data), else ``full-n-X = 0``.
    """
    if len(data) == 0:  # a site without this split still answers, with nothing scored
        return {
            NUM_EXAMPLES: 0.0,
            "loss": 0.0,
            **scores_to_metrics(None),
            **scores_to_metrics(None, prefix=FULL),
        }
    model.to(device)
    loss_fn = SegmentationLoss(recipe.loss.name, dice_weight=recipe.loss.dice_weight)
    result = evaluate(
        model,
        SegmentationTensors.from_sites([data], recipe.model.context),
        device=device,
        amp=recipe.train.amp,
        loss_fn=loss_fn,
    )
    metrics = {NUM_EXAMPLES: float(len(data)), "loss": float(result.loss)}
    metrics.update(scores_to_metrics(result.labelled_scores))
    metrics.update(scores_to_metrics(result.full_scores, prefix=FULL))
    return metrics
