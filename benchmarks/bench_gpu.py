"""GPU readiness: mixed precision, and several sites sharing one GPU, side by side in one run.

    python benchmarks/bench_gpu.py [--device cuda] [--images 240] [--size 128] [--sites 1,2,4,8]
    python benchmarks/bench_gpu.py --quick --device cpu      (the CPU check the tests run)

1. **AMP**: images/s of echofl's training epoch (``common.training.loop.train_one_epoch``, the
   full recipe: adaptive CE + Dice, label dropout, augmentation) with ``amp=True`` against
   ``amp=False``, alternating, median of ``--reps`` epochs after a warm-up. On CUDA autocast
   runs bf16 where supported, else fp16 with a gradient scaler; on a CPU ``amp`` changes
   nothing (the ratio is ~1 by construction).
2. **Sites per GPU**: N processes train one local epoch each (``train_site``, a site's round)
   at the same time on the same device, as N simulated sites with ``gpus_per_site = 1/N`` do;
   the round time and the aggregate images/s against one site alone. The ratio
   ``(N x one site's time) / round time`` is how much sharing the GPU gains over running the
   same sites one after another.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import torch
from common_setup import disc_tensors as tensors
from common_setup import record

from common.labels import Structure
from common.training.augment import Augmentation
from common.training.label_dropout import LabelDropout
from common.training.loop import SegmentationTensors, train_one_epoch
from common.training.losses import SegmentationLoss
from common.training.model import build_unet


def epoch_seconds(data: SegmentationTensors, device: torch.device, amp: bool, model, optimiser,
                  gen: torch.Generator, batch: int) -> float:  # fmt: skip
    scaler = (
        torch.amp.GradScaler("cuda")
        if amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
        else None
    )
    stats = train_one_epoch(
        model,
        data.pinned() if device.type == "cuda" else data,
        optimiser,
        SegmentationLoss("adaptive", dice_weight=1.0),
        batch_size=batch,
        generator=gen,
        device=device,
        dropout=LabelDropout.for_partial([Structure.MYO, Structure.LA], 0.5),
        augmentation=Augmentation(enabled=True),
        amp=amp,
        scaler=scaler,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return stats.seconds


def amp_speedup(args: argparse.Namespace, device: torch.device) -> dict:
    data = tensors(args.images, args.size)
    state = {}
    for amp in (False, True):
        torch.manual_seed(0)
        model = build_unet().to(device)
        state[amp] = (model, torch.optim.Adam(model.parameters(), 1e-3), torch.Generator())
        epoch_seconds(data, device, amp, *state[amp], args.batch)  # warm-up
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.reps):
        for amp in (False, True):
            seconds[amp].append(epoch_seconds(data, device, amp, *state[amp], args.batch))
    rate = {amp: args.images / statistics.median(s) for amp, s in seconds.items()}
    return {"fp32_img_s": rate[False], "amp_img_s": rate[True], "ratio": rate[True] / rate[False]}


def _site(args: tuple) -> tuple[float, float]:  # type: ignore[type-arg]
    """One simulated site's round in its own process: (start, end) wall-clock times."""
    device_name, images, size, batch, threads, seed, barrier = args
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    data = tensors(images, size, seed)
    torch.manual_seed(seed)
    model = build_unet().to(device)
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(seed)
    epoch_seconds(tensors(batch, size, seed), device, True, model, optimiser, gen, batch)  # warm
    barrier.wait()
    start = time.time()
    epoch_seconds(data, device, True, model, optimiser, gen, batch)
    return start, time.time()


def sharing(args: argparse.Namespace, counts: list[int]) -> dict[int, dict]:
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    out: dict[int, dict] = {}
    for n in counts:
        with ctx.Manager() as manager:
            barrier = manager.Barrier(n)
            jobs = [
                (args.device, args.site_images, args.size, args.batch, args.threads, i, barrier)
                for i in range(n)
            ]
            with ctx.Pool(n) as pool:
                spans = pool.map(_site, jobs)
        round_s = max(e for _, e in spans) - min(s for s, _ in spans)
        out[n] = {
            "round_s": round_s,
            "site_s": statistics.mean(e - s for s, e in spans),
            "img_s": n * args.site_images / round_s,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=256, help="images of the AMP epochs")
    parser.add_argument("--site-images", type=int, default=240, help="a site's training set")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sites", default="1,2,4,8", help="sites sharing the device")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per site process")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a check, not a figure")
    args = parser.parse_args()
    if args.quick:
        args.images, args.site_images, args.size, args.reps, args.sites = 16, 16, 32, 1, "1,2"
    device = torch.device(args.device)
    counts = [int(c) for c in args.sites.split(",")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {args.device} ({name}); {args.size}x{args.size}, batch {args.batch}")
    amp = amp_speedup(args, device)
    print(
        f"AMP: {amp['amp_img_s']:.1f} img/s vs fp32 {amp['fp32_img_s']:.1f} img/s: "
        f"ratio {amp['ratio']:.2f}" + ("" if device.type == "cuda" else " (CPU: AMP is off)")
    )
    shared = sharing(args, counts)
    one = shared[counts[0]]["site_s"] if counts[0] == 1 else None
    for n, r in shared.items():
        gain = f"; {n} x one site / round = {n * one / r['round_s']:.2f}" if one else ""
        print(
            f"{n} site(s) on one {args.device}: round {r['round_s']:.2f} s, "
            f"{r['img_s']:.1f} img/s in all{gain}"
        )
    path = record(
        "gpu" if device.type == "cuda" else "gpu_script_on_cpu",
        {
            "settings": vars(args),
            "device_name": name,
            "amp": amp,
            "sites_per_device": {str(k): v for k, v in shared.items()},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
