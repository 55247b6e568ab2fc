"""How far each level of the shift-strength axis moves a site from site A's domain, measured.

    python -m simulations.shift_index --out docs/results/shift/calibration [--quick]

For every shifted vendor and level s (``common.data.synthetic.shift``) two indices:

- **Dice drop**: a U-Net trained fully labelled on site A alone, tested on A's own test split
  and on the shifted domain (every case, full ground truth): the drop in mean Dice over LV, MYO
  and LA (and per structure). 0 = the model transfers; large = the domains differ in a way that
  matters for segmentation.
- **Domain accuracy**: held-out accuracy of a small CNN trained to tell A's images from the
  shifted domain's, on the images as the segmentation model sees them (preprocessed), split by
  case. 0.5 = indistinguishable; 1.0 = every image gives its domain away.

Writes ``calibration.json`` and ``calibration.md`` (a table per level) and a plot of both indices
against s. Both are deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import nn

from common.config import SiteSpec, StrictModel
from common.data.cache import load_site_cached
from common.data.preprocess import PreprocessConfig
from common.data.site_data import SiteData
from common.data.synthetic.federation import FederationConfig, generate_federation
from common.data.synthetic.vendors import VendorName
from common.recipe import Recipe
from common.training.loop import SegmentationTensors, resolve_device, train
from common.training.model import build_unet
from common.training.scoring import score_sites
from common.version import add_version
from simulations.experiment import level_tag

STRUCTURES = ("LV", "MYO", "LA")


class CalibrationSettings(StrictModel):
    """What the calibration generates and trains (defaults: the study's quick sizes)."""

    levels: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], min_length=1)
    vendors: list[VendorName] = Field(default_factory=lambda: ["B", "C"], min_length=1)
    reference: VendorName = "A"
    reference_cases: int = Field(default=60, ge=6)
    shifted_cases: int = Field(default=30, ge=4)
    size: tuple[int, int] = (96, 96)  # what the models see (the recipe's preprocessing)
    render_size: tuple[int, int] | None = None  # None: each vendor's own export size
    epochs: int = Field(default=25, ge=1)
    classifier_steps: int = Field(default=300, ge=1)
    seed: int = 0
    workers: int = Field(default=0, ge=0)  # processes rendering the cases (0: one per core)
    data_dir: Path = Path("data/shift-calibration")
    cache_dir: Path = Path(".cache/echofl")


def level_site(vendor: str, level: float) -> str:
    """Site name of one vendor at one level, e.g. ``B-s050``."""
    return f"{vendor}-{level_tag(level)}"


def generate(settings: CalibrationSettings) -> dict[str, Path]:
    """Write the reference site and one fully labelled test-only site per (vendor, level).

    Each level is a federation of its own (``<data_dir>/s<level>/``) whose sites are named by
    their vendor, so a vendor's site has the same seed, hence the same hearts, at every level:
    the levels are paired by case."""

    def federation(folder: Path, sites: list[dict]) -> dict[str, Path]:
        config = FederationConfig.model_validate(
            {
                "seed": settings.seed,
                "output_dir": str(folder),
                "workers": settings.workers,
                "sites": sites,
            }
        )
        return {g.config.name: g.root for g in generate_federation(config, progress=lambda _: None)}

    reference = {
        "name": "ref",
        "vendor": settings.reference,
        "format": "folder",
        "cases": settings.reference_cases,
        "size": settings.render_size,
    }
    roots = federation(settings.data_dir, [reference])
    for level in settings.levels:
        sites = [
            {
                "name": v,
                "vendor": v,
                "format": "folder",
                "cases": settings.shifted_cases,
                "size": settings.render_size,
                "role": "test",
                "shift": {"strength": level, "reference": settings.reference},
            }
            for v in settings.vendors
        ]
        made = federation(settings.data_dir / level_tag(level), sites)
        roots.update({level_site(v, level): made[v] for v in settings.vendors})
    return roots


def load(roots: dict[str, Path], settings: CalibrationSettings) -> dict[str, SiteData]:
    preprocess = PreprocessConfig(size=settings.size)
    return {
        name: load_site_cached(
            SiteSpec(name=name, format="folder", root=root), preprocess, settings.cache_dir
        )
        for name, root in roots.items()
    }


class DomainClassifier(nn.Module):
    """A small CNN: image -> logit of "the shifted domain"."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))[:, 0]


def _case_halves(data: SiteData, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    cases = sorted({r["case_id"] for r in data.records})
    order = rng.permutation(len(cases))
    first = {cases[i] for i in order[: len(cases) // 2]}
    mask = np.array([r["case_id"] in first for r in data.records])
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def domain_accuracy(reference: SiteData, other: SiteData, *, seed: int, steps: int) -> float:
    """Held-out accuracy of :class:`DomainClassifier` (A vs ``other``), two-fold by case and
    class-balanced: each fold trains on half of each domain's cases, tests on the rest."""
    rng = np.random.default_rng(seed)
    folds_ref, folds_other = _case_halves(reference, rng), _case_halves(other, rng)
    correct = total = 0.0
    for k in range(2):
        train_idx = (folds_ref[k], folds_other[k])
        test_idx = (folds_ref[1 - k], folds_other[1 - k])
        torch.manual_seed(seed * 2 + k)
        model = DomainClassifier()
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        xa = torch.from_numpy(reference.images[train_idx[0]])[:, None]
        xb = torch.from_numpy(other.images[train_idx[1]])[:, None]
        batch = 16
        for _ in range(steps):
            ia = torch.from_numpy(rng.integers(0, len(xa), batch // 2))
            ib = torch.from_numpy(rng.integers(0, len(xb), batch // 2))
            x = torch.cat([xa[ia], xb[ib]])
            y = torch.cat([torch.zeros(len(ia)), torch.ones(len(ib))])
            loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for label, (images, idx) in enumerate(
                ((reference.images, test_idx[0]), (other.images, test_idx[1]))
            ):
                logits = model(torch.from_numpy(images[idx])[:, None])
                hits = ((logits > 0).float() == label).float().mean().item()
                correct += 0.5 * hits  # each domain weighs half: balanced accuracy
            total += 1.0
    return correct / total


def reference_model(data: SiteData, settings: CalibrationSettings) -> nn.Module:
    """A U-Net trained fully labelled on the reference site's training split."""
    recipe = Recipe()
    torch.manual_seed(settings.seed)
    model = build_unet(recipe.model)
    train(
        model,
        SegmentationTensors.from_sites([data.split("train").fully_labelled()]),
        recipe,
        seed=settings.seed,
        device=resolve_device("cpu"),
        epochs=settings.epochs,
    )
    return model


def mean_dice(row: dict[str, float]) -> float:
    return float(np.mean([row[s] for s in STRUCTURES]))


def calibrate(settings: CalibrationSettings, progress=print) -> dict:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    sites = load(generate(settings), settings)
    reference = sites["ref"]
    progress(f"reference {settings.reference}: {len(reference)} images; training its model")
    model = reference_model(reference, settings)
    device = resolve_device("cpu")
    own = score_sites(model, {"ref": reference}, split="test", device=device)["ref"]
    rows = []
    for vendor in settings.vendors:
        for level in settings.levels:
            name = level_site(vendor, level)
            scores = score_sites(model, {name: sites[name]}, split="test", device=device)[name]
            accuracy = domain_accuracy(
                reference, sites[name], seed=settings.seed, steps=settings.classifier_steps
            )
            row = {
                "vendor": vendor,
                "shift": level,
                "dice": mean_dice(scores),
                "dice_drop": mean_dice(own) - mean_dice(scores),
                **{f"drop_{s}": own[s] - scores[s] for s in STRUCTURES},
                "domain_accuracy": accuracy,
            }
            rows.append(row)
            progress(
                f"{vendor} s={level:g}: Dice {row['dice']:.3f} (drop {row['dice_drop']:+.3f}), "
                f"domain accuracy {accuracy:.3f}"
            )
    return {
        "settings": settings.model_dump(mode="json"),
        "reference_dice": {s: own[s] for s in STRUCTURES},
        "levels": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }


def markdown(result: dict) -> str:
    ref = result["reference_dice"]
    lines = [
        "# Shift-strength calibration",
        "",
        f"Reference model: trained fully labelled on vendor {result['settings']['reference']}; "
        "its Dice on its own test split: "
        + ", ".join(f"{s} {ref[s]:.3f}" for s in STRUCTURES)
        + f". Computed in {result['seconds']:.0f} s by `python -m simulations.shift_index`.",
        "",
        "| vendor | s | Dice on the domain | drop (mean) | drop LV | drop MYO | drop LA "
        "| domain accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["levels"]:
        lines.append(
            f"| {r['vendor']} | {r['shift']:g} | {r['dice']:.3f} | {r['dice_drop']:+.3f} | "
            f"{r['drop_LV']:+.3f} | {r['drop_MYO']:+.3f} | {r['drop_LA']:+.3f} | "
            f"{r['domain_accuracy']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for vendor in result["settings"]["vendors"]:
        rows = [r for r in result["levels"] if r["vendor"] == vendor]
        s = [r["shift"] for r in rows]
        axes[0].plot(s, [r["dice_drop"] for r in rows], "o-", label=f"vendor {vendor}")
        axes[1].plot(s, [r["domain_accuracy"] for r in rows], "o-", label=f"vendor {vendor}")
    axes[0].set(xlabel="shift strength s", ylabel="Dice drop of the A-trained model")
    axes[1].set(xlabel="shift strength s", ylabel="domain classifier accuracy", ylim=(0.4, 1.02))
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_version(parser)
    parser.add_argument("--out", type=Path, default=Path("docs/results/shift/calibration"))
    parser.add_argument("--quick", action="store_true", help="fewer cases and epochs (minutes)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = CalibrationSettings(seed=args.seed)
    if args.quick:
        settings = settings.model_copy(
            update={"reference_cases": 24, "shifted_cases": 12, "epochs": 8, "levels": [0, 0.5, 1]}
        )
    result = calibrate(settings)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "calibration.json").write_text(json.dumps(result, indent=2))
    (args.out / "calibration.md").write_text(markdown(result))
    plot(result, args.out / "calibration.png")
    print(f"wrote {args.out}/calibration.{{json,md,png}} in {result['seconds']:.0f} s")
    return 0 if all(math.isfinite(r["dice"]) for r in result["levels"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
