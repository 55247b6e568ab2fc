"""Centralised baseline: one model trained on several sites pooled (no federation).

    echofl-centralised --config simulations/configs/centralised-A.toml

Same loop, loss and label dropout as a federated site. Prints Dice per site and structure on
each site's test split (and on evaluation-only sites such as an unseen vendor), and writes
``results.json`` and ``model.pt`` to the output folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from pydantic import Field

from common.config import SiteSpec, StrictModel, read_toml, validate_config
from common.data.cache import load_site_cached
from common.data.site_data import SiteData
from common.errors import EchoflError
from common.labels import partially_labelled
from common.progress import progress_bar
from common.recipe import Recipe
from common.training.loop import SegmentationTensors, resolve_device, train
from common.training.model import build_unet
from common.training.scoring import format_table, score_sites
from common.version import add_version

log = logging.getLogger("echofl.centralised")


class CentralisedConfig(StrictModel):
    """Config file of the centralised baseline (TOML)."""

    seed: int = 0
    device: str = "auto"
    threads: int = Field(default=0, ge=0)  # 0 = torch default
    cache_dir: Path = Path(".cache/echofl")
    output_dir: Path = Path("runs/centralised")
    epochs: int = Field(default=20, ge=1, le=10_000)
    recipe: Recipe = Field(default_factory=Recipe)  # the same recipe a federated run uses
    sites: list[SiteSpec] = Field(min_length=1)
    test_sites: list[SiteSpec] = Field(default_factory=list)  # evaluated, never trained on


def load_sites(specs: list[SiteSpec], config: CentralisedConfig) -> dict[str, SiteData]:
    return {s.name: load_site_cached(s, config.recipe.preprocess, config.cache_dir) for s in specs}


def run(config: CentralisedConfig) -> dict[str, object]:
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    sites = load_sites(config.sites, config)
    test_only = load_sites(config.test_sites, config)
    train_parts = [d.split("train") for d in sites.values()]
    val_parts = [d.split("val") for d in sites.values() if len(d.split("val"))]
    context = config.recipe.model.context
    validation = SegmentationTensors.from_sites(val_parts, context) if val_parts else None
    n_train = sum(len(p) for p in train_parts)
    print(f"centralised: {len(sites)} site(s), {n_train} training images, device {device}")

    def on_epoch(epoch: int, stats, val) -> None:  # type: ignore[no-untyped-def]
        msg = f"epoch {epoch:3d}/{config.epochs}  loss {stats.loss:.4f}  {stats.seconds:.1f}s"
        if val is not None:
            msg += "  val " + " ".join(f"{s.name} {d:.3f}" for s, d in val.scores.dice.items())
        print(msg, flush=True)
        advance(1)

    started = time.perf_counter()
    partial = partially_labelled(p.labelled_set for p in train_parts)
    torch.manual_seed(config.seed)
    model = build_unet(config.recipe.model)
    with progress_bar("centralised training: epochs", config.epochs) as advance:
        history = train(
            model,
            SegmentationTensors.from_sites(train_parts, context),
            config.recipe,
            seed=config.seed,
            device=device,
            partial=partial,
            epochs=config.epochs,
            validation=validation,
            on_epoch=on_epoch,
        )
    train_seconds = time.perf_counter() - started
    scores = score_sites(
        model,
        {**sites, **test_only},
        split="test",
        device=device,
        amp=config.recipe.train.amp,
        context=context,
    )
    print(format_table(scores, title="\nDice on each site's test split (final model)"))
    config.output_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "seed": config.seed,
        "train_images": n_train,
        "train_seconds": round(train_seconds, 2),
        "images_per_second": round(n_train * config.epochs / train_seconds, 1),
        "partial_structures": sorted(s.name for s in partial),
        "epoch_loss": [round(e.loss, 5) for e in history.epochs],
        "test": scores,
        "config": config.model_dump(mode="json"),
    }
    tmp = config.output_dir / "results.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(config.output_dir / "results.json")
    torch.save(model.state_dict(), config.output_dir / "model.pt")
    print(f"\ntrained in {train_seconds:.0f}s; results in {config.output_dir}/results.json")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_version(parser)
    parser.add_argument("--config", required=True, type=Path, help="TOML config file")
    parser.add_argument("--epochs", type=int, help="override epochs")
    parser.add_argument("--seed", type=int, help="override seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        data = read_toml(args.config)
        if args.epochs is not None:
            data["epochs"] = args.epochs
        if args.seed is not None:
            data["seed"] = args.seed
        run(validate_config(CentralisedConfig, data, args.config))
    except EchoflError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
