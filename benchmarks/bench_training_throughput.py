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

echofl's training processes keep freed memory for reuse (``common.training.allocator``: glibc
settings, once per process, applied by the first training or inference call); glibc's defaults
hand part of every step's buffers back to the kernel and fault them back in on the next. That
setting is per process and cannot be undone, so two comparisons are made:

- **same process** (above): every loop runs with echofl's setting (applied before the first
  epoch): the cost of echofl's loop code alone;
- **as shipped**: the plain loop in a process of its own with glibc's defaults, as a user would
  run it, against echofl's loop in another process; the two processes take turns epoch by epoch
  (never at the same time) in the same ABBA order. Their minor page faults per epoch and peak
  resident memory are printed beside.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F
from common_setup import disc_tensors, record

from common.labels import Structure
from common.training.allocator import keep_freed_memory
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


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def shipped_worker(loop: str, args: argparse.Namespace, conn) -> None:  # type: ignore[no-untyped-def]
    """One loop in a process of its own: the plain loop leaves glibc's defaults alone, echofl's
    loop applies echofl's setting (its first epoch does). Runs an epoch per request and answers
    (seconds, minor page faults); on ``None`` answers its peak resident memory (MiB) and ends."""
    torch.set_num_threads(args.threads)
    tensors = disc_tensors(args.images, args.size)
    torch.manual_seed(0)
    model = build_unet()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)

    def epoch() -> float:
        if loop == "plain":
            return plain_epoch(model, optimiser, tensors, args.batch, gen)
        return echofl_epoch(model, optimiser, tensors, args.batch, gen, False)

    epoch()  # warm-up
    while conn.recv() is not None:
        before = minor_faults()
        seconds = epoch()
        conn.send((seconds, minor_faults() - before))
    conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def as_shipped(args: argparse.Namespace) -> dict:
    """The plain loop (glibc's defaults) and echofl's loop (echofl's setting), each in a fresh
    process, taking turns in ABBA order; per-pair ratios, faults per epoch, peak memory."""
    ctx = mp.get_context("spawn")
    conns, procs = {}, []
    for loop in ("plain", "echofl"):
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=shipped_worker, args=(loop, args, theirs), daemon=True)
        proc.start()
        conns[loop] = ours
        procs.append(proc)
    seconds: dict[str, list[float]] = {"plain": [], "echofl": []}
    faults: dict[str, list[int]] = {"plain": [], "echofl": []}
    ratios = []
    try:
        for rep in range(args.reps):
            order = ("plain", "echofl") if rep % 2 == 0 else ("echofl", "plain")
            taken = {}
            for loop in order:
                conns[loop].send(True)
                taken[loop], fault = conns[loop].recv()
                seconds[loop].append(taken[loop])
                faults[loop].append(fault)
            ratios.append(taken["plain"] / taken["echofl"])
        peak = {}
        for loop, conn in conns.items():
            conn.send(None)
            peak[loop] = conn.recv()
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    return {
        "ratio": float(np.median(ratios)),
        "pair_ratios": ratios,
        "images_per_second": {k: args.images / float(np.median(v)) for k, v in seconds.items()},
        "faults_per_epoch": {k: float(np.median(v)) for k, v in faults.items()},
        "peak_rss_mib": peak,
        "epoch_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=12, help="pairs per comparison")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shipped = as_shipped(args)  # first: its processes start from a quiet machine
    # every loop below runs with echofl's allocator setting (it is per process)
    kept = keep_freed_memory()
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
    faults: dict[str, list[int]] = {name: [] for name in runners}
    pair_ratio: dict[str, list[float]] = {name: [] for name in runners if name != base_name}
    # one comparison after the other, its pairs in ABBA order (plain, X, X, plain, plain, ...):
    # each loop follows itself as often as the other, so cache warmth favours neither
    for name in pair_ratio:
        for rep in range(args.reps):
            order = (base_name, name) if rep % 2 == 0 else (name, base_name)
            taken = {}
            for n in order:
                before = minor_faults()
                taken[n] = runners[n](*state[n])
                faults[n].append(minor_faults() - before)
            for n, s in taken.items():
                seconds[n].append(s)
            pair_ratio[name].append(taken[base_name] / taken[name])  # > 1: faster than plain
    ratio = {name: float(np.median(r)) for name, r in pair_ratio.items()}
    rate = {name: args.images / float(np.median(s)) for name, s in seconds.items()}
    print(
        f"{args.images} images {args.size}x{args.size}, batch {args.batch}, "
        f"{args.threads} threads; {args.reps} epoch pairs per comparison (ABBA order)"
    )
    print(
        f"same process, echofl's allocator setting for every loop "
        f"({'applied' if kept else 'not available: not glibc'}):"
    )
    for name, r in ratio.items():
        lo, hi = np.percentile(pair_ratio[name], [25, 75])
        print(
            f"  {name:<26} {rate[name]:7.1f} img/s   ratio to plain {r:.3f} "
            f"(median of pairs; middle half {lo:.3f}-{hi:.3f}); "
            f"{np.median(faults[name]):.0f} page faults/epoch"
        )
    print(
        f"  {base_name:<26} {rate[base_name]:7.1f} img/s   "
        f"{np.median(faults[base_name]):.0f} page faults/epoch"
    )
    lo, hi = np.percentile(shipped["pair_ratios"], [25, 75])
    print("as shipped, a process per loop, taking turns:")
    labels = {"plain": "plain loop, glibc defaults", "echofl": "echofl loop, same work"}
    for loop, label in labels.items():
        print(
            f"  {label:<26} {shipped['images_per_second'][loop]:7.1f} img/s   "
            f"{shipped['faults_per_epoch'][loop]:.0f} page faults/epoch, "
            f"peak {shipped['peak_rss_mib'][loop]:.0f} MiB"
        )
    print(
        f"  echofl / plain = {shipped['ratio']:.3f} "
        f"(median of pairs; middle half {lo:.3f}-{hi:.3f})"
    )
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
        f"echofl / plain (same work): same process {same:.3f}, as shipped {shipped['ratio']:.3f} "
        f"(goal >= {GOAL}: {'met' if min(same, shipped['ratio']) >= GOAL else 'NOT met'} in both); "
        f"plain / plain = {floor:.3f} (the noise floor)"
    )
    path = record(
        "training_throughput",
        {
            "settings": vars(args),
            "images_per_second": rate,
            "ratio_same_work": same,
            "ratio_full_recipe": ratio["echofl loop, full recipe"],
            "ratio_plain_again": floor,
            "allocator_setting_applied": kept,
            "faults_per_epoch": {n: float(np.median(f)) for n, f in faults.items()},
            "as_shipped": shipped,
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
