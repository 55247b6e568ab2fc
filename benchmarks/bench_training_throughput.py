"""Training throughput: echofl's loop versus a minimal plain MONAI loop, side by side.

    python benchmarks/bench_training_throughput.py [--images 256] [--size 128] [--reps 3]

Same model (the default MONAI U-Net), same batch size, same data in memory. The plain loop is
the textbook one: slice a batch, forward, cross-entropy, backward, Adam step. echofl's loop
(``common.training.train_one_epoch``) is run (a) doing the same work (adaptive CE with every
structure labelled = cross-entropy, no Dice term, no label dropout, no augmentation): the goal
is >= 0.97 of the plain loop's images/s; and (b) with the full recipe (adaptive CE + marginal
Dice + label dropout + augmentation), reported beside it. Runs alternate (plain, echofl,
plain, ...) after a warm-up so that drift hits both.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from common_setup import disc_tensors, record

from common.labels import Structure
from common.training.augment import Augmentation
from common.training.label_dropout import LabelDropout
from common.training.loop import SegmentationTensors, train_one_epoch
from common.training.losses import SegmentationLoss
from common.training.model import build_unet

GOAL = 0.97


def plain_epoch(
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    tensors: SegmentationTensors,
    batch: int,
    gen: torch.Generator,
) -> float:
    model.train()
    started = time.perf_counter()
    order = torch.randperm(len(tensors), generator=gen)
    for start in range(0, len(tensors), batch):
        idx = order[start : start + batch]
        optimiser.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(tensors.images[idx]), tensors.masks[idx].long())
        loss.backward()
        optimiser.step()
    return time.perf_counter() - started


def echofl_epoch(
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    tensors: SegmentationTensors,
    batch: int,
    gen: torch.Generator,
    full: bool,
) -> float:
    loss = SegmentationLoss("adaptive", dice_weight=1.0 if full else 0.0)
    stats = train_one_epoch(
        model,
        tensors,
        optimiser,
        loss,
        batch_size=batch,
        generator=gen,
        device=torch.device("cpu"),
        dropout=LabelDropout.for_partial([Structure.MYO, Structure.LA], 0.5) if full else None,
        augmentation=Augmentation(enabled=full),
    )
    return stats.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tensors = disc_tensors(args.images, args.size)

    def fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = build_unet()
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    runners = {
        "plain MONAI loop": lambda m, o, g: plain_epoch(m, o, tensors, args.batch, g),
        "echofl loop, same work": lambda m, o, g: echofl_epoch(m, o, tensors, args.batch, g, False),
        "echofl loop, full recipe": lambda m, o, g: echofl_epoch(
            m, o, tensors, args.batch, g, True
        ),
    }
    state = {name: (*fresh(), torch.Generator().manual_seed(1)) for name in runners}
    for name, run in runners.items():  # warm-up epoch each
        run(*state[name])
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.reps):
        for name, run in runners.items():
            seconds[name].append(run(*state[name]))
    rate = {name: args.images / float(np.median(s)) for name, s in seconds.items()}
    base = rate["plain MONAI loop"]
    print(
        f"{args.images} images {args.size}x{args.size}, batch {args.batch}, "
        f"{args.threads} threads, median of {args.reps} epochs"
    )
    for name, r in rate.items():
        print(f"  {name:<26} {r:7.1f} img/s   ratio to plain {r / base:.3f}")
    ratio = rate["echofl loop, same work"] / base
    print(
        f"echofl / plain (same work) = {ratio:.3f} (goal >= {GOAL}: "
        f"{'met' if ratio >= GOAL else 'NOT met'})"
    )
    path = record(
        "training_throughput",
        {
            "settings": vars(args),
            "images_per_second": rate,
            "ratio_same_work": ratio,
            "ratio_full_recipe": rate["echofl loop, full recipe"] / base,
            "goal": GOAL,
            "epoch_seconds": seconds,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
