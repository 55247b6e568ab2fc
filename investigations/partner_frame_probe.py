"""Partner-frame probe: does a U-Net that also sees each frame's partner frame measure EF better?

NOT the system: a screening probe in one process, centralised and fully labelled, so an input
idea costs minutes instead of a 50-round federation; what it suggests is then measured with the
harness and ``benchmarks/bench_ef.py`` (docs/benchmarks.md, section 8). Side by side, for each
seed, two networks trained with the same data, steps, batches and seed: ``none`` (the frame
alone) and ``partner`` (the frame and its partner, :mod:`common.data.context`). Training: ED
and ES of ``--train-cases`` synthetic cases per vendor A-E (generator seed 0, exact labels),
cross-entropy, Adam, random horizontal flips. Scored: EF by the single-plane method of disks
(:func:`common.measure.recording.measure`) on ``--test-cases`` held-out cases per vendor
(generator seed 9999, ``benchmarks/bench_ef.py``'s test cases), mean absolute error against the
true EF, overall and per image quality grade.

    python investigations/partner_frame_probe.py [--seeds 0 1] [--steps 1200] [--size 128]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.data.context import Context, model_input
from common.data.preprocess import normalise, resize_image, resize_labels
from common.data.synthetic.generator import case_seed, generate_recording
from common.data.synthetic.vendors import TRAINING_VENDORS, get_vendor
from common.measure.recording import measure
from common.training.model import ModelConfig, build_unet

CONTEXTS: tuple[Context, ...] = ("none", "partner")


def cases(vendor: str, n: int, seed: int, size: tuple[int, int], split: str) -> list[dict]:
    out = []
    for i in range(n):
        rec = generate_recording(
            get_vendor(vendor), seed=case_seed(seed, vendor, i), case_id=f"{vendor}{i:03d}",
            n_frames=2, split=split,  # type: ignore[arg-type]
        )  # fmt: skip
        images = np.stack(
            [normalise(resize_image(f.astype(np.float32), size), "zscore") for f in rec.frames]
        )
        labels = np.stack([resize_labels(m, size) for m in rec.labels])
        out.append({"rec": rec, "images": images, "labels": labels})
    return out


def train(context: Context, data: list[dict], steps: int, seed: int) -> torch.nn.Module:
    inputs = np.concatenate([model_input(c["images"], context) for c in data])  # ED, ES per case
    labels = np.concatenate([c["labels"] for c in data])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_unet(ModelConfig(context=context))
    optimiser = torch.optim.Adam(model.parameters(), 2e-3)
    model.train()
    for _ in range(steps):
        idx = rng.integers(0, len(inputs), 16)
        x, y = inputs[idx], labels[idx]
        if rng.random() < 0.5:
            x, y = x[..., ::-1], y[..., ::-1]
        loss = F.cross_entropy(model(torch.from_numpy(x.copy())), torch.from_numpy(y.copy()).long())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@torch.no_grad()
def ef_errors(model: torch.nn.Module, context: Context, test: list[dict]) -> dict[str, list]:
    errors: dict[str, list] = {}
    for case in test:
        rec = case["rec"]
        probs = model(torch.from_numpy(model_input(case["images"], context))).softmax(1)
        probs = F.interpolate(probs, size=rec.frames.shape[1:], mode="bilinear",
                              align_corners=False)  # fmt: skip
        labels = probs.argmax(1).numpy().astype(np.uint8)
        row = measure(rec.case_id, labels, rec.spacing_mm, ed=0, es=1)
        ef = float(row["ef_percent"]) if row["ef_percent"] != "" else float("nan")
        errors.setdefault(str(rec.info["quality"]), []).append(abs(ef - float(rec.info["ef"])))
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--train-cases", type=int, default=40)
    parser.add_argument("--test-cases", type=int, default=60)
    parser.add_argument("--vendors", default="DBCA")
    args = parser.parse_args()
    size = (args.size, args.size)
    started = time.perf_counter()
    data = [c for v in TRAINING_VENDORS for c in cases(v, args.train_cases, 0, size, "train")]
    tests = {v: cases(v, args.test_cases, 9999, size, "test") for v in args.vendors}
    print(f"{len(data)} training cases ({len(data) * 2} frames) at {args.size} px, "
          f"{args.steps} steps of 16; {args.test_cases} test cases per vendor")  # fmt: skip
    print(f"{'seed':>4} {'context':>8} {'vendor':>6} {'EF MAE':>7}   per grade (cases, MAE)")
    for seed in args.seeds:
        for context in CONTEXTS:
            model = train(context, data, args.steps, seed)
            for vendor, test in tests.items():
                errors = ef_errors(model, context, test)
                every = [e for v in errors.values() for e in v]
                grades = ", ".join(
                    f"{g} {len(e)} {np.nanmean(e):.2f}" for g, e in sorted(errors.items())
                )
                print(f"{seed:>4} {context:>8} {vendor:>6} {np.nanmean(every):>7.2f}   {grades}",
                      flush=True)  # fmt: skip
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
