"""Training throughput: echofl's loop versus a minimal plain MONAI loop, side by side.

    python benchmarks/bench_training_throughput.py [--images 128] [--size 128] [--reps 12]

Same model (the default MONAI U-Net), same batch size, same data in memory. The plain loop is
the textbook one: slice a batch, forward, cross-entropy, backward, Adam step. echofl's loop
(``common.training.train_one_epoch``) is run (a) doing the same work (adaptive CE with every
structure labelled = cross-entropy, no Dice term, no label dropout, no augmentation): the goal
is >= 0.97 of the plain loop's images/s; and (b) with the full recipe (adaptive CE + marginal
Dice + label dropout + augmentation), reported beside it.

This machine's speed drifts by +-10 % from one epoch to the next (a shared virtual machine), so
a ratio of medians over a few epochs moves by more than the 3 % the goal allows. The epochs are
therefore run as pairs in ABBA order (plain, echofl, echofl, plain, ...), one comparison after
the other, each pair's ratio is taken, and the median of the pairs' ratios is reported. Every
loop trains one shared model and optimiser (see ``main``). A second plain loop, paired with the
first in the same way, shows how far two identical loops differ on this machine (the noise
floor, printed beside the result).
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


def extra_ops(runners: dict, state: dict) -> tuple[dict[str, float], float]:
    """Profile one epoch of the plain loop and one of echofl's (same work): the operators
    echofl's loop runs that the plain loop does not, with their own CPU time in ms, and the
    plain epoch's total operator time in ms. Deterministic where wall time is not."""
    from torch.profiler import ProfilerActivity, profile

    own: dict[str, dict[str, float]] = {}
    for name in ("plain MONAI loop", "echofl loop, same work"):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            runners[name](*state[name])
        own[name] = {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}
    plain, echofl = own["plain MONAI loop"], own["echofl loop, same work"]
    extra = {k: v for k, v in echofl.items() if k not in plain}
    return extra, sum(plain.values())


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
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=12, help="pairs per comparison")
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
        "plain MONAI loop (again)": lambda m, o, g: plain_epoch(m, o, tensors, args.batch, g),
        "echofl loop, same work": lambda m, o, g: echofl_epoch(m, o, tensors, args.batch, g, False),
        "echofl loop, full recipe": lambda m, o, g: echofl_epoch(
            m, o, tensors, args.batch, g, True
        ),
    }
    # one model and optimiser for every loop: each epoch continues the same weights, so the two
    # loops of a pair run on the same parameter memory and the same weight values. With a model
    # per loop (the earlier design) two identical plain loops differed by up to 7.6 % in one run,
    # a per-instance effect larger than the goal's 3 %; the work per epoch does not depend on
    # which loop trained the weights before it.
    model, optimiser = fresh()
    state = {name: (model, optimiser, torch.Generator().manual_seed(1)) for name in runners}
    for name, run in runners.items():  # warm-up epoch each
        run(*state[name])
    base_name = "plain MONAI loop"
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    pair_ratio: dict[str, list[float]] = {name: [] for name in runners if name != base_name}
    # one comparison after the other, its pairs in ABBA order (plain, X, X, plain, plain, ...):
    # each loop follows itself as often as the other, so cache warmth favours neither
    for name in pair_ratio:
        for rep in range(args.reps):
            order = (base_name, name) if rep % 2 == 0 else (name, base_name)
            taken = {n: runners[n](*state[n]) for n in order}
            for n, s in taken.items():
                seconds[n].append(s)
            pair_ratio[name].append(taken[base_name] / taken[name])  # > 1: faster than plain
    ratio = {name: float(np.median(r)) for name, r in pair_ratio.items()}
    rate = {name: args.images / float(np.median(s)) for name, s in seconds.items()}
    print(
        f"{args.images} images {args.size}x{args.size}, batch {args.batch}, "
        f"{args.threads} threads; {args.reps} epoch pairs per comparison (ABBA order)"
    )
    for name, r in ratio.items():
        lo, hi = np.percentile(pair_ratio[name], [25, 75])
        print(
            f"  {name:<26} {rate[name]:7.1f} img/s   ratio to plain {r:.3f} "
            f"(median of pairs; middle half {lo:.3f}-{hi:.3f})"
        )
    print(f"  {base_name:<26} {rate[base_name]:7.1f} img/s")
    extra, plain_ms = extra_ops(runners, state)
    extra_ms = sum(extra.values())
    print(
        f"profiled epoch: echofl runs {len(extra)} operators the plain loop does not "
        f"({', '.join(sorted(extra))}): {extra_ms:.2f} ms of {plain_ms:.0f} ms of operator time "
        f"= {extra_ms / plain_ms:.2%}"
    )
    same = ratio["echofl loop, same work"]
    floor = ratio["plain MONAI loop (again)"]
    print(
        f"echofl / plain (same work) = {same:.3f} (goal >= {GOAL}: "
        f"{'met' if same >= GOAL else 'NOT met'}); plain / plain = {floor:.3f} (the noise floor)"
    )
    path = record(
        "training_throughput",
        {
            "settings": vars(args),
            "images_per_second": rate,
            "ratio_same_work": same,
            "ratio_full_recipe": ratio["echofl loop, full recipe"],
            "ratio_plain_again": floor,
            "pair_ratios": pair_ratio,
            "extra_operators_ms": extra,
            "plain_operator_ms": plain_ms,
            "goal": GOAL,
            "epoch_seconds": seconds,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
