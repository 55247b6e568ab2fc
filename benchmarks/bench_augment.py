"""What the ultrasound-like augmentation costs, beside the default augmentation and a training
step of the default model, measured side by side in one run.

    python benchmarks/bench_augment.py [--repeats 20]

Batch of 16 images at the default recipe's size on CPU: the default augmentation (affine +
intensity jitter), the same with gamma 0.3, speckle 0.3, blur 1 px and noise 0.1, and one Adam
step of the default U-Net (forward, backward, update). Prints milliseconds per batch and the
ratios (extra augmentation time / training step) and writes ``benchmarks/results/augment.json``.
"""

from __future__ import annotations

import argparse
import time

import torch
from common_setup import record

from common.recipe import Recipe
from common.training.augment import Augmentation
from common.training.model import build_unet

ULTRASOUND = {"gamma": 0.3, "speckle": 0.3, "blur": 1.0, "noise": 0.1}


def per_batch_ms(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    recipe = Recipe()
    h, w = recipe.preprocess.size
    g = torch.Generator().manual_seed(0)
    images = torch.randn(16, 1, h, w, generator=g)
    masks = torch.randint(0, 4, (16, h, w), generator=g)
    default = Augmentation()
    ultrasound = default.model_copy(update=ULTRASOUND)
    torch.manual_seed(0)
    model = build_unet(recipe.model)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images), masks)
        loss.backward()
        optimiser.step()

    times = {
        "default augmentation": per_batch_ms(lambda: default(images, masks, g), args.repeats),
        "+ ultrasound-like": per_batch_ms(lambda: ultrasound(images, masks, g), args.repeats),
        "training step": per_batch_ms(step, max(3, args.repeats // 4)),
    }
    extra = times["+ ultrasound-like"] - times["default augmentation"]
    ratios = {
        "ultrasound / default augmentation": times["+ ultrasound-like"]
        / times["default augmentation"],
        "extra augmentation / training step": extra / times["training step"],
    }
    for name, ms in times.items():
        print(f"{name:<24} {ms:8.2f} ms per batch of 16 at {h} x {w}")
    for name, value in ratios.items():
        print(f"{name:<36} {value:6.3f}")
    record("augment", {"ms": times, "ratios": ratios, "settings": ULTRASOUND})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
