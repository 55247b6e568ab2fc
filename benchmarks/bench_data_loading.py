"""Data loading per epoch from the preprocessing cache versus the training step time.

    python benchmarks/bench_data_loading.py [--cases 100] [--epochs 3] [--threads 2]

Measures, side by side in one run on one synthetic vendor-A site (CAMUS-like NIfTI, 128x128):
  * the first load (native files -> preprocessing -> cache) and a cached load (arrays from disk);
  * per epoch: slicing batches out of the cached arrays (data loading proper), and the batch
    transforms (label dropout + augmentation), versus the training steps (forward, loss,
    backward, optimiser).
Goal: data loading per epoch from the cache (a cached load, counted in full every epoch as in
a federated round of one local epoch, + batch slicing) <= 5% of the training step time. The
transforms are reported beside it: they are training work any pipeline does.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from common.config import SiteSpec
from common.data.cache import load_site_cached
from common.data.preprocess import PreprocessConfig
from common.data.synthetic.federation import FederationConfig, generate_federation
from common.labels import Structure
from common.recipe import Recipe
from common.training.label_dropout import LabelDropout
from common.training.loop import (
    SegmentationTensors,
    batch_indices,
    train_one_epoch,
)
from common.training.losses import SegmentationLoss
from common.training.model import build_unet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    fed = FederationConfig.model_validate(
        {
            "seed": 0,
            "output_dir": str(args.data_dir),
            "sites": [{"name": "A", "vendor": "A", "format": "camus-nifti", "cases": args.cases}],
        }
    )
    site = generate_federation(fed, progress=lambda _: None)[0]
    spec = SiteSpec(name="A", format="camus-nifti", root=site.root)
    pre = PreprocessConfig(size=(128, 128))
    cache_dir = Path(tempfile.mkdtemp(prefix="echofl-bench-cache-"))
    try:
        t0 = time.perf_counter()
        load_site_cached(spec, pre, cache_dir)
        first_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = load_site_cached(spec, pre, cache_dir)
        cached_load = time.perf_counter() - t0
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)

    train = SegmentationTensors.from_sites([data.split("train")])
    config = Recipe().train  # batch 16, the default augmentation
    torch.manual_seed(0)
    model = build_unet()
    optimiser = Recipe().optimiser.build(model.parameters())
    dropout = LabelDropout.for_partial([Structure.MYO, Structure.LA], 0.5)
    generator = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(args.epochs):
        epochs.append(
            train_one_epoch(
                model,
                train,
                optimiser,
                SegmentationLoss("adaptive", dice_weight=1.0),
                batch_size=config.batch_size,
                generator=generator,
                device=torch.device("cpu"),
                dropout=dropout,
                augmentation=config.augment,
            )
        )
    epoch_s = sum(e.seconds for e in epochs) / len(epochs)
    batch_s = sum(e.data_seconds for e in epochs) / len(epochs)
    step_s = epoch_s - batch_s
    t0 = time.perf_counter()
    for _ in range(args.epochs):  # the slicing alone, as train_one_epoch does it
        for idx in batch_indices(len(train), config.batch_size, generator, shuffle=True):
            _ = train.images[idx], train.masks[idx].long(), train.labelled[idx]
    slicing_s = (time.perf_counter() - t0) / args.epochs
    transforms_s = max(batch_s - slicing_s, 0.0)
    ratio = (cached_load + slicing_s) / step_s
    print(
        f"site: vendor A, {len(data)} frames, {len(train)} training images at 128x128, "
        f"{args.threads} threads"
    )
    print(f"first load (native files + preprocessing): {first_load:8.2f} s")
    print(f"cached load (arrays from disk):             {cached_load:8.3f} s")
    print(f"batch slicing per epoch:                    {slicing_s:8.3f} s")
    print(f"label dropout + augmentation per epoch:     {transforms_s:8.3f} s")
    print(
        f"training steps per epoch:                   {step_s:8.2f} s "
        f"({len(train) / epoch_s:.0f} img/s)"
    )
    print(
        f"data loading / training steps = (cached load + slicing) / steps = {ratio:.4f} "
        f"(goal <= 0.05: {'met' if ratio <= 0.05 else 'NOT met'})"
    )
    print(f"(with the transforms too: {(cached_load + batch_s) / step_s:.4f})")


if __name__ == "__main__":
    main()
