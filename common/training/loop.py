"""The one training entry point and evaluation loop used by every caller.

A hospital's Flower client (one round of local training), the local-only and centralised
baselines, the research harness and the benchmarks all call :func:`train` (which runs
:func:`train_one_epoch`) and :func:`evaluate`; nothing else trains or scores a model. Seeding,
the optimiser, the loss, label dropout, augmentation and AMP are set up in :func:`train` alone,
from the :class:`~common.recipe.Recipe`.
Batches are sliced from in-memory tensors (the preprocessing cache), so there is no per-sample
Python work on the hot path: label dropout and augmentation act on whole batches.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from common.data.context import Context, model_input
from common.data.site_data import SiteData
from common.labels import NUM_CLASSES, LabelledSet, parse_labelled_set
from common.recipe import LabelDropoutSettings, Recipe
from common.training.allocator import keep_freed_memory
from common.training.augment import Augmentation
from common.training.distillation import DistillationTerm
from common.training.label_dropout import LabelDropout, SiteSetDropout
from common.training.losses import SegmentationLoss
from common.training.metrics import DiceAccumulator, SegmentationScores


@dataclass
class SegmentationTensors:
    """Samples as tensors: images (N, C, h, w) float32 (C = 1, or 2 with each frame's partner:
    :mod:`common.data.context`), masks (N, h, w) uint8, labelled (N, 4) bool, full_masks
    (N, h, w) uint8 or None."""

    images: torch.Tensor
    masks: torch.Tensor
    labelled: torch.Tensor
    full_masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def pinned(self) -> SegmentationTensors:
        """The same tensors in page-locked host memory (once per training call), so that the
        per-batch copies to a GPU are truly asynchronous (``non_blocking``); as they are when
        no GPU is present."""
        if not torch.cuda.is_available() or self.images.is_pinned():
            return self
        return SegmentationTensors(
            self.images.pin_memory(),
            self.masks.pin_memory(),
            self.labelled.pin_memory(),
            None if self.full_masks is None else self.full_masks.pin_memory(),
        )

    @classmethod
    def from_sites(
        cls, sites: Sequence[SiteData], context: Context = "none"
    ) -> SegmentationTensors:
        """Concatenate sites (the centralised pool, or a single site), each frame with the input
        ``context`` the model takes (the recipe's ``model.context``): a partner frame is taken
        from the same site, case and view."""
        if not sites:
            raise ValueError("no site data given")
        with_full = all(s.full_masks is not None for s in sites)
        groups = [(s.site, r["case_id"], r["view"]) for s in sites for r in s.records]
        images = model_input(np.concatenate([s.images for s in sites]), context, groups)
        return cls(
            images=torch.from_numpy(images),
            masks=torch.from_numpy(np.concatenate([s.masks for s in sites])),
            labelled=torch.from_numpy(np.concatenate([s.labelled for s in sites])),
            full_masks=(
                torch.from_numpy(np.concatenate([s.full_masks for s in sites]))  # type: ignore[misc]
                if with_full
                else None
            ),
        )


@dataclass
class EpochStats:
    loss: float  # the supervised loss (mean over samples)
    samples: int
    seconds: float
    data_seconds: float  # batch assembly, label dropout, augmentation, host->device copies
    steps: int = 0  # optimiser steps
    distillation_loss: float = 0.0  # weighted distillation term (mean over samples)


@dataclass
class EvalResult:
    scores: SegmentationScores
    loss: float
    samples: int
    seconds: float
    per_image_dice: np.ndarray  # (N, 3) LV, MYO, LA; NaN where not scored
    labelled_scores: SegmentationScores | None = None
    full_scores: SegmentationScores | None = None


class ProximalTerm:
    """FedProx: ``mu / 2 * ||w - w_global||^2`` over the trainable parameters."""

    def __init__(self, model: nn.Module, mu: float) -> None:
        if mu < 0:
            raise ValueError(f"proximal mu must be >= 0, got {mu}")
        self.mu = mu
        self.reference = [p.detach().clone() for p in model.parameters()]

    def __call__(self, model: nn.Module) -> torch.Tensor:
        total = sum(
            ((p - r) ** 2).sum() for p, r in zip(model.parameters(), self.reference, strict=True)
        )
        return 0.5 * self.mu * total


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def needs_grad_scaler(device: torch.device, amp: bool) -> bool:
    return amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()


def batch_indices(
    n: int, batch_size: int, generator: torch.Generator | None, shuffle: bool
) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def train_one_epoch(
    model: nn.Module,
    data: SegmentationTensors,
    optimiser: torch.optim.Optimizer,
    loss_fn: SegmentationLoss,
    *,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    dropout: LabelDropout | SiteSetDropout | None = None,
    augmentation: Augmentation | None = None,
    amp: bool = True,
    proximal: ProximalTerm | None = None,
    scaler: torch.amp.GradScaler | None = None,
    scores: DiceAccumulator | None = None,
    distillation: DistillationTerm | None = None,
) -> EpochStats:
    """One pass over ``data`` in a random order drawn from ``generator`` (a CPU generator that
    also draws label dropout and augmentation, so a seed fixes the whole epoch).

    ``scores``, when given, collects Dice of the training batches' predictions against the
    labels trained on (after label dropout and augmentation), on their labelled structures.
    ``distillation`` adds the conditional distillation term towards a frozen teacher on the
    same (augmented) images and the same per-sample labelled sets.
    """
    if len(data) == 0:
        raise ValueError("cannot train on an empty dataset")
    keep_freed_memory()  # once per process: no page-fault churn between steps (see allocator)
    model.train()
    started = time.perf_counter()
    data_seconds = 0.0
    # summed on the device and read once at the end: a float() per step would wait for the
    # GPU after every batch
    loss_sum = torch.zeros((), device=device)
    distill_sum = torch.zeros((), device=device)
    seen, steps = 0, 0
    non_blocking = device.type == "cuda"
    for idx in batch_indices(len(data), batch_size, generator, shuffle=True):
        t0 = time.perf_counter()
        masks, labelled = data.masks[idx], data.labelled[idx]
        if dropout is not None:
            masks, labelled = dropout(masks, labelled, generator)
        images = data.images[idx]
        if augmentation is not None and augmentation.enabled:
            images, masks = augmentation(images, masks, generator)
        images = images.to(device, non_blocking=non_blocking)
        masks = masks.to(device, non_blocking=non_blocking).long()
        labelled = labelled.to(device, non_blocking=non_blocking)
        data_seconds += time.perf_counter() - t0

        optimiser.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            logits = model(images)
        loss = loss_fn(logits.float(), masks, labelled)
        total = loss if proximal is None else loss + proximal(model)
        if distillation is not None:
            with _autocast(device, amp):
                teacher = distillation.teacher_logits(images)
            distilled = distillation(logits.float(), teacher.float(), masks, labelled)
            total = total + distilled
            distill_sum += distilled.detach() * len(idx)
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.step(optimiser)
            scaler.update()
        else:
            total.backward()
            optimiser.step()
        loss_sum += loss.detach() * len(idx)
        seen += len(idx)
        steps += 1
        if scores is not None:
            scores.add(logits.detach().argmax(1).cpu(), masks.cpu(), labelled.cpu()[:, 1:])
        # the batch's tensors and graph freed before the next forward allocates its own
        del images, masks, labelled, logits, loss, total
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return EpochStats(
        float(loss_sum) / seen,
        seen,
        time.perf_counter() - started,
        data_seconds,
        steps,
        float(distill_sum) / seen,
    )


ScoreOn = Literal["auto", "full", "labelled"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: SegmentationTensors,
    *,
    device: torch.device,
    batch_size: int = 32,
    amp: bool = True,
    loss_fn: SegmentationLoss | None = None,
    score_on: ScoreOn = "auto",
) -> EvalResult:
    """Per-structure Dice of ``model`` on ``data``, in one pass.

    Two scorings are kept: ``labelled_scores`` (only each sample's labelled structures, against
    its training mask: what a hospital can know) and ``full_scores`` (every structure against
    the full ground truth, when the data carry one: synthetic research data). ``scores`` is the
    one ``score_on`` asks for: ``auto`` takes the full ground truth when present. The loss
    (against the labelled masks) is reported when ``loss_fn`` is given.
    """
    if score_on == "full" and data.full_masks is None:
        raise ValueError("score_on='full' but these data have no full ground truth")
    keep_freed_memory()
    model.eval()
    started = time.perf_counter()
    labelled_acc = DiceAccumulator()
    full_acc = DiceAccumulator() if data.full_masks is not None else None
    loss_sum = 0.0
    for idx in batch_indices(len(data), batch_size, None, shuffle=False):
        images = data.images[idx].to(device)
        with _autocast(device, amp):
            logits = model(images)
        pred = logits.argmax(1).cpu()
        labelled_acc.add(pred, data.masks[idx].long(), data.labelled[idx][:, 1:])
        if full_acc is not None:
            everything = torch.ones(len(idx), NUM_CLASSES - 1, dtype=torch.bool)
            full_acc.add(pred, data.full_masks[idx].long(), everything)  # type: ignore[index]
        if loss_fn is not None:
            masks = data.masks[idx].to(device).long()
            labelled = data.labelled[idx].to(device)
            loss_sum += float(loss_fn(logits.float(), masks, labelled)) * len(idx)
    use_full = full_acc is not None and score_on in ("auto", "full")
    chosen = full_acc if use_full else labelled_acc
    assert chosen is not None
    per_image = np.concatenate(chosen.per_image) if chosen.per_image else np.zeros((0, 3))
    return EvalResult(
        scores=chosen.result(),
        loss=loss_sum / max(len(data), 1) if loss_fn is not None else float("nan"),
        samples=len(data),
        seconds=time.perf_counter() - started,
        per_image_dice=per_image,
        labelled_scores=labelled_acc.result(),
        full_scores=None if full_acc is None else full_acc.result(),
    )


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    *,
    device: torch.device,
    batch_size: int = 32,
    amp: bool = True,
) -> torch.Tensor:
    """Hard label maps (N, h, w) uint8 for model inputs (N, C, h, w)."""
    keep_freed_memory()
    model.eval()
    out = []
    for idx in batch_indices(images.shape[0], batch_size, None, shuffle=False):
        with _autocast(device, amp):
            out.append(model(images[idx].to(device)).argmax(1).to(torch.uint8).cpu())
    return torch.cat(out) if out else torch.zeros((0, *images.shape[2:]), dtype=torch.uint8)


@dataclass
class TrainHistory:
    """What :func:`train` did: per-epoch statistics, the validation score after each epoch
    (when validation data were given) and Dice on the training batches of the last epoch
    (against the labels trained on, after label dropout and augmentation)."""

    epochs: list[EpochStats]
    validation: list[EvalResult]
    last_epoch_scores: SegmentationScores


def label_dropout_for(settings: LabelDropoutSettings, partial: LabelledSet) -> LabelDropout | None:
    """Label dropout over ``settings.structures`` when given, else over ``partial`` (the
    structures partially labelled across the training sites: the paper's rule); None when off."""
    structures = (
        parse_labelled_set(list(settings.structures))
        if settings.structures is not None
        else partial
    )
    if settings.p <= 0 or not structures:
        return None
    return LabelDropout.for_partial(structures, settings.p)


def train(
    model: nn.Module,
    data: SegmentationTensors,
    recipe: Recipe,
    *,
    seed: int,
    device: torch.device,
    partial: LabelledSet = frozenset(),
    epochs: int | None = None,
    proximal_mu: float = 0.0,
    distillation: DistillationTerm | None = None,
    validation: SegmentationTensors | None = None,
    on_epoch: Callable[[int, EpochStats, EvalResult | None], None] | None = None,
    schedule: tuple[int, int] | None = None,
) -> TrainHistory:
    """Train ``model`` in place on ``data`` with ``recipe``: the one entry point of the pooled,
    local-only and federated paths.

    ``seed`` fixes the epoch orders, label dropout and augmentation; ``partial``: the structures
    partially labelled across the training sites (label dropout acts on them); ``epochs``
    defaults to ``recipe.train.epochs`` (a site's local epochs per round); ``proximal_mu`` > 0
    adds FedProx's term towards the weights ``model`` starts from; ``distillation`` adds the
    conditional distillation term (a federated site: the round's global model as teacher).
    ``validation`` is scored after every epoch for the learning curve only (no selection).
    ``schedule``: (epochs of the run before this call, the run's epochs) for the recipe's
    learning-rate schedule (:meth:`~common.recipe.OptimiserSettings.lr_at`); None: this call is
    the whole run (a pooled or local-only baseline).
    """
    epochs = recipe.train.epochs if epochs is None else epochs
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    optimiser = recipe.optimiser.build(model.parameters())
    done, run_epochs = (0, epochs) if schedule is None else schedule
    loss_fn = SegmentationLoss(recipe.loss.name, dice_weight=recipe.loss.dice_weight)
    dropout: LabelDropout | SiteSetDropout | None = label_dropout_for(recipe.label_dropout, partial)
    if recipe.label_dropout.mode == "site-sets" and recipe.label_dropout.p > 0:
        dropout = SiteSetDropout.from_labelled(data.labelled, recipe.label_dropout.p)
    proximal = ProximalTerm(model, proximal_mu) if proximal_mu > 0 else None
    amp = recipe.train.amp
    scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device, amp) else None
    if device.type == "cuda":
        data = data.pinned()
    history = TrainHistory([], [], SegmentationScores())
    for epoch in range(1, epochs + 1):
        scores = DiceAccumulator() if epoch == epochs else None
        for group in optimiser.param_groups:
            group["lr"] = recipe.optimiser.lr_at(done + epoch, run_epochs)
        stats = train_one_epoch(
            model,
            data,
            optimiser,
            loss_fn,
            batch_size=recipe.train.batch_size,
            generator=generator,
            device=device,
            dropout=dropout,
            augmentation=recipe.train.augment,
            amp=amp,
            proximal=proximal,
            scaler=scaler,
            scores=scores,
            distillation=distillation,
        )
        history.epochs.append(stats)
        if scores is not None:
            history.last_epoch_scores = scores.result()
        val = None
        if validation is not None and len(validation) > 0:
            val = evaluate(model, validation, device=device, amp=amp, loss_fn=loss_fn)
            history.validation.append(val)
        if on_epoch is not None:
            on_epoch(epoch, stats, val)
    return history
