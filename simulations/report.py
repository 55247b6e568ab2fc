"""Tables and figures from the runs' ``result.json`` files (never typed in by hand).

* ``results.csv``: one row per condition x site x structure: mean and sd of Dice over seeds,
  the number of seeds, mean predicted/true area ratio, whether the full ground truth scored it;
* ``results.md``: the same as a table (sites x structures by conditions, mean ± sd);
* ``curves.png``: validation Dice (full ground truth) per round/epoch per condition, the mean of
  the structures and one panel per structure (one colour per condition in every figure);
* ``bars.png``: test Dice per site and structure, one bar per condition;
* ``overlays-<site>.png``: predictions of every condition (first seed) on test images.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from common.data.site_data import SiteData
from common.training.loop import SegmentationTensors, predict
from common.training.metrics import STRUCTURES
from common.training.model import build_unet
from simulations.clinical import clinical_markdown
from simulations.experiment import Condition, ExperimentConfig
from simulations.recipes_report import recipes_markdown
from simulations.study import study_markdown

COLOURS = {1: "#e6194b", 2: "#3cb44b", 3: "#4363d8"}  # LV red, MYO green, LA blue


def summarise(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean/sd over seeds for every condition x site x structure that was scored."""
    cells: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {}
    order: list[tuple[str, str, str]] = []
    for res in results:
        for site, row in res["test"].items():
            for s in STRUCTURES:
                if s.name not in row:
                    continue
                key = (res["condition"], site, s.name)
                if key not in cells:
                    cells[key] = []
                    order.append(key)
                cells[key].append(
                    (row[s.name], row.get(f"area-{s.name}", math.nan), row.get("full", 0.0))
                )
    out = []
    for key in order:
        values = np.array([v[0] for v in cells[key]])
        areas = np.array([v[1] for v in cells[key]])
        out.append(
            {
                "condition": key[0],
                "site": key[1],
                "structure": key[2],
                "dice_mean": float(values.mean()),
                "dice_sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "seeds": len(values),
                "area_ratio_mean": float(np.nanmean(areas)),
                "scored_on": "full" if cells[key][0][2] else "labelled",
            }
        )
    return out


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()}
            )


def markdown_table(
    rows: list[dict[str, Any]], conditions: Sequence[str], labelled: Mapping[str, set[str]]
) -> str:
    """Sites x structures (rows) by conditions (columns); ``*`` marks a structure the site
    does not annotate (where the shortcut can show)."""
    by_key = {(r["condition"], r["site"], r["structure"]): r for r in rows}
    sites = list(dict.fromkeys(r["site"] for r in rows))
    head = "| site | structure | " + " | ".join(conditions) + " |"
    lines = [head, "|" + "---|" * (len(conditions) + 2)]
    for site in sites:
        for s in STRUCTURES:
            cells = []
            for cond in conditions:
                r = by_key.get((cond, site, s.name))
                if r is None:
                    cells.append("-")
                elif r["seeds"] > 1:
                    cells.append(f"{r['dice_mean']:.3f} ± {r['dice_sd']:.3f}")
                else:
                    cells.append(f"{r['dice_mean']:.3f}")
            if all(c == "-" for c in cells):
                continue
            mark = "" if s.name in labelled.get(site, set()) else " *"
            lines.append(f"| {site} | {s.name}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def condition_styles(conditions: Sequence[Condition]) -> dict[str, dict[str, Any]]:
    """One colour (and line style, past 20 conditions) per condition, in the config's order:
    the same condition looks the same in every figure of a report."""
    colours = plt.get_cmap("tab20" if len(conditions) > 10 else "tab10").colors
    n = len(colours)
    return {
        c.name: {"color": colours[i % n], "linestyle": ("-", "--", ":")[(i // n) % 3]}
        for i, c in enumerate(conditions)
    }


def plot_curves(results: Sequence[dict[str, Any]], config: ExperimentConfig, path: Path) -> None:
    """Validation Dice per round/epoch: the mean of the structures, and one panel per structure
    where the runs recorded it (``curves_by_structure``; runs from before it have the mean)."""
    panels: list[tuple[str, str | None]] = [("mean of LV/MYO/LA", None)]
    if any("curves_by_structure" in r for r in results):
        panels += [(s.name, s.name) for s in STRUCTURES]
    many = len(config.conditions) > 10
    width = (10 if many else 7) if len(panels) == 1 else 4.2 * len(panels) + (3 if many else 0)
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 4.6), sharey=True, squeeze=False)
    styles = condition_styles(config.conditions)
    for ax, (title, structure) in zip(axes[0], panels, strict=True):
        _draw_curves(ax, results, config, styles, structure)
        ax.set_title(title, fontsize=9)
    axes[0][0].set_ylabel("validation Dice (full truth)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if many or len(panels) > 1:  # the legend beside the plot, not over the curves
        fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:
        axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _draw_curves(  # type: ignore[no-untyped-def]
    ax, results, config: ExperimentConfig, styles: dict, structure: str | None
) -> None:
    le = config.recipe.train.epochs
    for cond in config.conditions:
        style = dict(styles[cond.name])
        runs = [r for r in results if r["condition"] == cond.name]
        if structure is not None:
            runs = [r for r in runs if "curves_by_structure" in r]
        if not runs:
            continue
        curves = []
        for r in runs:
            source = (
                r["curves"]
                if structure is None
                else {k: v[structure] for k, v in r["curves_by_structure"].items()}
            )
            for name, curve in source.items():
                if cond.kind == "federated":
                    x = np.arange(len(curve)) * le
                else:
                    x = np.arange(1, len(curve) + 1)
                curves.append((x, np.array(curve, dtype=float), name))
        if cond.kind == "local":  # one thin line per site in the condition's colour
            for k, name in enumerate(sorted({c[2] for c in curves})):
                mine = [c for c in curves if c[2] == name]
                length = min(len(c[1]) for c in mine)
                y = np.nanmean(np.stack([c[1][:length] for c in mine]), axis=0)
                ax.plot(
                    mine[0][0][:length], y, lw=1, alpha=0.8, color=style["color"],
                    linestyle=(":", "-.", "--", (0, (1, 3)))[k % 4], label=f"{cond.name} ({name})",
                )  # fmt: skip
        else:
            length = min(len(c[1]) for c in curves)
            y = np.nanmean(np.stack([c[1][:length] for c in curves]), axis=0)
            ax.plot(curves[0][0][:length], y, lw=2, label=cond.name, **style)
    ax.set_xlabel("epochs over each site's data\n(round x local epochs)", fontsize=8)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)


def plot_bars(
    rows: list[dict[str, Any]],
    conditions: Sequence[str],
    path: Path,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    groups = list(dict.fromkeys((r["site"], r["structure"]) for r in rows))
    by_key = {(r["condition"], r["site"], r["structure"]): r for r in rows}
    width = 0.8 / max(len(conditions), 1)
    fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(groups) * max(len(conditions), 2) / 2), 4.2))
    x = np.arange(len(groups))
    for i, cond in enumerate(conditions):
        means = [by_key.get((cond, *g), {}).get("dice_mean", np.nan) for g in groups]
        sds = [by_key.get((cond, *g), {}).get("dice_sd", 0.0) for g in groups]
        ax.bar(
            x + (i - (len(conditions) - 1) / 2) * width,
            means,
            width,
            yerr=sds,
            label=cond,
            capsize=2,
            **({"color": styles[cond]["color"]} if styles and cond in styles else {}),
        )
    ax.set_xticks(x, [f"{site}\n{structure}" for site, structure in groups], fontsize=7)
    ax.set_ylabel("test Dice")
    ax.set_ylim(0, 1)
    ax.legend(  # above the bars, never over them
        fontsize=7, ncols=min(3, max(len(conditions), 1)), loc="lower center",
        bbox_to_anchor=(0.5, 1.01), frameon=False,
    )  # fmt: skip
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _draw(ax: Any, image: np.ndarray, labels: np.ndarray | None, title: str) -> None:
    """Image in gray with each structure filled in its colour (semi-transparent)."""
    ax.imshow(image, cmap="gray")
    if labels is not None:
        overlay = np.zeros((*labels.shape, 4))
        for value, colour in COLOURS.items():
            rgb = matplotlib.colors.to_rgb(colour)
            overlay[labels == value] = (*rgb, 0.45)
        ax.imshow(overlay)
    ax.set_title(title, fontsize=6)
    ax.axis("off")


MAX_OVERLAY_CONDITIONS = 6


def save_small_png(fig: Any, path: Path, dpi: int) -> None:
    """A figure as a 256-colour PNG: ultrasound overlays stay well under 300 KB."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    image.save(path, format="PNG", optimize=True)


def plot_overlays(
    config: ExperimentConfig,
    data: Mapping[str, SiteData],
    models: Mapping[str, Mapping[str, Path]],
    out_dir: Path,
    n_images: int = 3,
) -> list[Path]:
    """One PNG per site: ground truth and each condition's prediction on test images.

    models: condition name -> {"all": model path} or {site name: model path} (local).
    """
    paths = []
    device = torch.device("cpu")
    for site, site_data in data.items():
        test = site_data.split("test")
        if len(test) == 0:
            continue
        idx = np.linspace(0, len(test) - 1, min(n_images, len(test))).round().astype(int)
        tensors = {}  # per input context: each test frame with its partner from the whole split
        truth = test.full_masks[idx] if test.full_masks is not None else test.masks[idx]
        rows = [("ground truth", truth)]
        for cond_name, paths_by in models.items():
            path = paths_by.get("all") or paths_by.get(site)
            if path is None or not path.is_file():
                continue
            condition = next((c for c in config.conditions if c.name == cond_name), None)
            recipe = config.recipe_for(condition) if condition is not None else config.recipe
            model = build_unet(recipe.model)  # a condition may change the network (norm)
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            context = recipe.model.context
            if context not in tensors:
                tensors[context] = SegmentationTensors.from_sites([test], context).images[idx]
            rows.append((cond_name, predict(model, tensors[context], device=device).numpy()))
        fig, axes = plt.subplots(
            len(rows), len(idx), figsize=(1.9 * len(idx), 1.9 * len(rows)), squeeze=False
        )
        for r, (name, labels) in enumerate(rows):
            for c in range(len(idx)):
                _draw(axes[r][c], test.images[idx[c]], labels[c], name if c == 0 else "")
        fig.suptitle(f"site {site}: LV red, MYO green, LA blue", fontsize=8)
        fig.tight_layout()
        path = out_dir / f"overlays-{site}.png"
        save_small_png(fig, path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


def setup_markdown(config: ExperimentConfig, data: Mapping[str, SiteData]) -> str:
    """The study's set-up: every site (where its data come from, how many cases and images,
    what it annotates) and the training settings every condition starts from."""
    lines = [
        "## Set-up\n",
        "| site | role | data | format | cases | training images | annotates |",
        "|---|---|---|---|---|---|---|",
    ]
    for site in config.sites:
        source = f"synthetic vendor {site.vendor}" if site.synthetic else f"`{site.root}`"
        if site.shift is not None:
            source += f", shift s = {site.shift.strength:g}"
        loaded = data.get(site.name)
        cases = site.cases if site.synthetic else (site.max_cases or "all")
        images = len(loaded.split("train")) if loaded is not None and site.role == "train" else "-"
        labels = (
            ", ".join(s.name for s in loaded.labelled_set)
            if loaded is not None and site.role == "train"
            else "- (evaluation only)"
        )
        lines.append(
            f"| {site.name} | {site.role} | {source} | {site.format} | {cases} | {images} | "
            f"{labels} |"
        )
    r = config.recipe
    agg = r.aggregation
    lines += [
        "",
        f"Training (before each condition's changes): {r.preprocess.size[0]} x "
        f"{r.preprocess.size[1]} px, {config.budget.rounds} rounds x {r.train.epochs} local "
        f"epoch(s) (pooled runs: {config.epochs} epochs), batch {r.train.batch_size}, "
        f"lr {r.optimiser.lr:g}, loss {r.loss.name}, label dropout p = {r.label_dropout.p:g}; "
        f"aggregation {agg.strategy}"
        + (f", server momentum {agg.server_momentum:g}" if agg.server_momentum else "")
        + (", step-normalised" if agg.step_normalised else "")
        + f". Seeds: {', '.join(str(x) for x in config.seeds)} ({len(config.seeds)}). "
        "Conditions: " + "; ".join(f"{c.name} ({c.kind})" for c in config.conditions) + ".",
        "",
    ]
    return "\n".join(lines) + "\n"


def write_report(
    config: ExperimentConfig,
    results: Sequence[dict[str, Any]],
    data: Mapping[str, SiteData],
    out_dir: Path,
    conditions: Sequence[Condition] | None = None,
    command: str = "python simulations/run.py",
) -> dict[str, Path]:
    """Write every table and figure; returns their paths by kind. ``command`` is the command
    line that reproduces the report (quoted at its end)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    conditions = list(conditions or config.conditions)
    names = [c.name for c in conditions if any(r["condition"] == c.name for r in results)]
    rows = summarise(results)
    labelled = {name: {s.name for s in d.labelled_set} for name, d in data.items()}
    test_only = {s.name for s in config.sites if s.role == "test"}
    for name in test_only:
        labelled[name] = set()
    csv_path, md_path = out_dir / "results.csv", out_dir / "results.md"
    write_csv(rows, csv_path)
    study = study_markdown(
        results,
        conditions,
        labelled,
        [s.name for s in config.train_sites],
        sorted(test_only),
        config.recipe,
    )
    md_path.write_text(
        f"# {config.name}: test Dice per site and structure\n\n"
        f"Seeds: {', '.join(str(s) for s in config.seeds)}; budget {config.budget.rounds} rounds x "
        f"{config.recipe.train.epochs} local epoch(s) (= {config.epochs} epochs for "
        "local/centralised), final models. Synthetic sites are scored on the full ground truth "
        "(every structure); `*` marks a structure that site does not annotate"
        f"{' (evaluation-only sites: ' + ', '.join(sorted(test_only)) + ')' if test_only else ''}."
        " What the numbers mean and what they do not: [docs/study.md](../../../docs/study.md)."
        "\n\n"
        + setup_markdown(config, data)
        + "## Test Dice\n\n"
        + markdown_table(rows, names, labelled)
        + "\n\n"
        + study
        + recipes_markdown(config, results, labelled)
        + clinical_markdown(results, names)
        + "\n## Figures\n\n![learning curves](curves.png)\n\n![test Dice](bars.png)\n\n"
        + "".join(f"![overlays {site}](overlays-{site}.png)\n" for site in data)
        + f"\n_Generated by `{command}`._\n"
    )
    plot_curves(results, config, out_dir / "curves.png")
    plot_bars(rows, names, out_dir / "bars.png", condition_styles(config.conditions))
    first_seed = min(config.seeds)
    models: dict[str, dict[str, Path]] = {}
    for cond in conditions[:MAX_OVERLAY_CONDITIONS]:  # a figure stays readable (and small)
        run = config.run_dir / "runs" / cond.slug / f"seed-{first_seed}"
        found = {p.stem.removeprefix("model-"): p for p in run.glob("model-*.pt")}
        if found:
            models[cond.name] = found
    overlays = plot_overlays(config, data, models, out_dir)
    return {
        "csv": csv_path,
        "markdown": md_path,
        "curves": out_dir / "curves.png",
        "bars": out_dir / "bars.png",
        **{p.stem: p for p in overlays},
    }
