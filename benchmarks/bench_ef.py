"""Ejection fraction from a federated model against the method floor, per vendor; and the
speed of prediction on CPU.

    python benchmarks/bench_ef.py [--config simulations/configs/ef.toml] [--level S] [--cases 20]
                                  [--seed 9999] [--out benchmarks/results/ef] [--checkpoint PT]

1. **The model**: among the best checkpoints (``checkpoints/best.pt``) of the partially labelled
   federated runs of the experiment ``--config`` (default ``simulations/configs/ef.toml``: a site
   for every training vendor A-E; for a config with ``[shift]``, at ``--level``, default its
   largest), the one whose sidecar records the highest validation score: chosen on validation,
   never on test.
2. **Held-out recordings**: ``--cases`` new synthetic cases per vendor, from a generator seed no
   training case used: every vendor (A-E and U) rendered as the experiment's site of that vendor
   was (with its shift, if any); a vendor no site had is reported as never seen. ED and ES at each
   vendor's own export size, each with its true EF (the generator's, from the analytic heart:
   single-plane area-length).
3. **EF**: single-plane method of disks (``common/measure``) on the predicted masks and on the
   true masks (the *method floor*: what the method gives with perfect segmentation), both against
   the true EF. Per vendor: mean absolute error of each, their difference, and the goals of
   issue 13 (model within 1.5 EF points of the floor, and at most 5), and how many cases
   ``echofl-predict`` would flag as doubtful (``ef-out-of-range``, ``uncertain-lv``,
   ``low-contrast``) with the MAE of the others: what a clinician relying on the flags sees,
   and the MAE per image quality grade (the generator's Good / Medium / Poor). A Bland-Altman
   plot of the model's EF against the true EF (``bland-altman.png``) and ``results.md`` /
   ``ef.json``.
4. **Speed** of the default model (``Recipe()``'s network and image size; random weights: speed
   does not depend on them): images per second segmented on CPU in batches of 16 frames, and
   the time to the first result for one 16-frame recording, ``echofl-predict`` in a fresh process
   (imports, model, reading, segmenting, measuring, writing).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common.config import read_toml, validate_config
from common.data.synthetic.generator import case_seed, generate_recording
from common.data.synthetic.quality import QUALITIES as GENERATOR_QUALITIES
from common.data.synthetic.shift import DomainShift
from common.data.synthetic.vendors import TRAINING_VENDORS, UNSEEN_VENDOR, get_vendor
from common.federation import protocol
from common.measure.recording import (
    DOUBTFUL_EF_FLAGS,
    EF_RANGE,
    LOW_CONTRAST_LIMIT,
    UNDECIDED_LV_LIMIT,
    measure,
)
from common.model_card import card_meta
from common.predict import load_model, segment_scored
from common.recipe import Recipe
from common.security.checkpoint import SIDECAR_SUFFIX, read_sidecar, save_checkpoint
from common.training.model import build_unet
from simulations.experiment import ExperimentConfig

REPO = Path(__file__).resolve().parents[1]
HELD_OUT_SEED = 9_999  # the experiments' sites use seed 0: no held-out case is a training case
VENDORS = (*TRAINING_VENDORS, UNSEEN_VENDOR)
GOAL_TO_FLOOR, GOAL_ABSOLUTE = 1.5, 5.0
DEFAULT_CONFIG = REPO / "simulations" / "configs" / "ef.toml"


def experiment(path: Path, level: float | None) -> ExperimentConfig:
    """The experiment whose runs hold the model (one level of a ``[shift]`` study)."""
    config = validate_config(ExperimentConfig, read_toml(path), path)
    if config.shift is not None:
        return config.at_level(max(config.shift.levels) if level is None else level)
    if level is not None:
        raise SystemExit(f"{path} has no [shift] section: --level does not apply")
    return config


def choose_model(config: ExperimentConfig) -> tuple[Path, float]:
    scored = []
    for condition in config.conditions:
        if condition.kind != "federated" or condition.labels != "partial":
            continue
        folder = REPO / config.run_dir / "runs" / condition.slug
        for path in sorted(folder.glob("seed-*/checkpoints/best.pt")):
            score = protocol.mean_dice(read_sidecar(path).get("validation", {}))
            if math.isfinite(score):
                scored.append((score, path))
    if not scored:
        raise SystemExit(
            f"no partially labelled federated run of {config.name!r} has a best checkpoint under "
            f"{config.run_dir}/runs: run its experiment first (simulations/run.py --config ...)"
        )
    score, path = max(scored)
    return path, score


def with_card(weights: Path, config: ExperimentConfig) -> Path:
    """A pooled run's ``model-<key>.pt`` (bare weights, no sidecar) as an unsigned checkpoint
    whose model card is the recipe of ``config``'s first condition (how it was trained)."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file: say which and why
        raise SystemExit(
            f"--checkpoint {weights}: not a checkpoint nor a state dict ({exc})"
        ) from None
    recipe = config.recipe_for(config.conditions[0])
    path = Path(tempfile.mkdtemp(prefix="bench-ef-")) / weights.name  # not in the results folder
    meta = {"run": f"{config.name} ({weights.name})", "round": 0, **card_meta(recipe)}
    save_checkpoint(path, state, meta)
    return path


def site_shifts(config: ExperimentConfig) -> dict[str, DomainShift | None]:
    """Each vendor a training site had, with that site's shift: how its held-out cases look."""
    return {s.vendor: s.shift for s in config.train_sites if s.vendor is not None}


def measured(
    labels: np.ndarray,
    spacing: tuple[float, float],
    undecided: np.ndarray | None = None,
    frames: np.ndarray | None = None,
) -> dict[str, object]:
    """EF, whether it is flagged as doubtful, and the flags, as ``echofl-predict`` measures it."""
    row = measure("case", labels, spacing, ed=0, es=1, lv_undecided=undecided, frames=frames)
    flags = str(row["flags"]).split()
    return {
        "ef": float(row["ef_percent"]) if row["ef_percent"] != "" else math.nan,
        "flagged": any(f in DOUBTFUL_EF_FLAGS for f in flags),
        "flags": flags,
        "lv_contrast": float(row["lv_contrast"]) if row["lv_contrast"] != "" else math.nan,
    }


def ef_table(
    checkpoint: Path, shifts: dict[str, DomainShift | None], cases: int, seed: int
) -> dict[str, list[dict[str, float]]]:
    model, card, _ = load_model(checkpoint, None, allow_unsigned=True)
    out: dict[str, list[dict[str, float]]] = {}
    for vendor in VENDORS:
        shift = shifts.get(vendor)
        rows = []
        for i in range(cases):
            rec = generate_recording(
                get_vendor(vendor),
                seed=case_seed(seed, vendor, i),
                case_id=f"{vendor}{i:03d}",
                n_frames=2,
                split="test",
                shift=shift,
            )
            predicted, undecided = segment_scored(model, card, rec.frames)
            row = measured(predicted, rec.spacing_mm, undecided, rec.frames)
            rows.append(
                {
                    "truth": float(rec.info["ef"]),
                    "quality": str(rec.info["quality"]),  # the generator's Good/Medium/Poor
                    "floor": measured(rec.labels, rec.spacing_mm)["ef"],
                    "model": row["ef"],
                    "flagged": row["flagged"],
                    "flags": row["flags"],
                    "lv_undecided": float(max(undecided)),
                    "lv_contrast": row["lv_contrast"],
                }
            )
        out[vendor] = rows
    return out


def summarise(table: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    summary = {}
    for vendor, rows in table.items():
        truth = np.array([r["truth"] for r in rows])
        floor = np.array([r["floor"] for r in rows])
        model = np.array([r["model"] for r in rows])
        measured = np.isfinite(model)
        model_mae = float(np.mean(np.abs(model[measured] - truth[measured])))
        floor_mae = float(np.mean(np.abs(floor - truth)))
        bias = model[measured] - truth[measured]
        # what echofl-predict flags as doubtful: a clinician sees those flagged, not as EF
        plausible = measured & ~np.array([bool(r.get("flagged")) for r in rows])
        summary[vendor] = {
            "cases": len(rows),
            "measured": int(measured.sum()),  # the model found an LV at ED and ES
            "flagged": int(measured.sum() - plausible.sum()),
            "model_median_ae": float(np.median(np.abs(bias))),
            "model_mae_unflagged": float(np.mean(np.abs(model[plausible] - truth[plausible])))
            if plausible.any()
            else math.nan,
            "model_mae": model_mae,
            "floor_mae": floor_mae,
            "model_minus_floor": model_mae - floor_mae,
            "bias": float(bias.mean()),
            "loa": float(1.96 * bias.std(ddof=1)),  # Bland-Altman limits of agreement: bias +- loa
            "within_floor": bool(model_mae <= floor_mae + GOAL_TO_FLOOR),
            "within_absolute": bool(model_mae <= GOAL_ABSOLUTE),
        }
    return summary


QUALITIES = tuple(q.capitalize() for q in GENERATOR_QUALITIES)  # as info["quality"] names them


def by_quality(table: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, list[float]]]:
    """Per vendor and image quality grade: [cases, model MAE, floor MAE] (MAE over the cases
    where the model found an LV; nan where a grade has none)."""
    out: dict[str, dict[str, list[float]]] = {}
    for vendor, rows in table.items():
        out[vendor] = {}
        for grade in QUALITIES:
            picked = [r for r in rows if r.get("quality") == grade]
            measured = [r for r in picked if math.isfinite(r["model"])]
            out[vendor][grade] = [
                len(picked),
                float(np.mean([abs(r["model"] - r["truth"]) for r in measured]))
                if measured
                else math.nan,
                float(np.mean([abs(r["floor"] - r["truth"]) for r in picked]))
                if picked
                else math.nan,
            ]
    return out


def bland_altman(table: dict[str, list[dict[str, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    everything = []
    for vendor, rows in table.items():
        pairs = [(r["model"], r["truth"]) for r in rows if math.isfinite(r["model"])]
        mean = [(m + t) / 2 for m, t in pairs]
        diff = [m - t for m, t in pairs]
        everything += diff
        ax.scatter(mean, diff, s=14, label=vendor, alpha=0.8)
    bias, loa = float(np.mean(everything)), 1.96 * float(np.std(everything, ddof=1))
    for y, style, name in (
        (bias, "-", f"bias {bias:+.1f}"),
        (bias - loa, "--", f"-1.96 sd {bias - loa:+.1f}"),
        (bias + loa, "--", f"+1.96 sd {bias + loa:+.1f}"),
    ):
        ax.axhline(y, color="grey", linestyle=style, linewidth=1)
        ax.annotate(name, (1.0, y), xycoords=("axes fraction", "data"), xytext=(-4, 2),
                    textcoords="offset points", ha="right", fontsize=7, color="grey")  # fmt: skip
    low, high = min(min(everything), bias - loa), max(max(everything), bias + loa)
    ax.set_ylim(low - 2, high + 2)  # both limits of agreement in view
    ax.set_xlabel("(model EF + true EF) / 2  [%]")
    ax.set_ylabel("model EF - true EF  [EF points]")
    ax.set_title(title, fontsize=9)
    ax.legend(title="vendor", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def speed(frames: int = 16, repeats: int = 5) -> dict[str, float]:
    """Images per second of the default model on CPU, and a fresh echofl-predict's time to the
    first result for one recording."""
    recipe = Recipe()
    torch.manual_seed(0)
    model = build_unet(recipe.model).eval()
    size = recipe.preprocess.size
    batch = torch.randn(frames, 1, *size)
    with torch.no_grad():
        model(batch)  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            model(batch).argmax(1)
        network = frames * repeats / (time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        save_checkpoint(
            base / "model.pt", model.state_dict(), {"run": "bench", "round": 0, **card_meta(recipe)}
        )
        rec = generate_recording(get_vendor("A"), seed=1, case_id="r", n_frames=frames)
        folder = base / "input" / "recording"
        folder.mkdir(parents=True)
        from PIL import Image

        for t, frame in enumerate(rec.frames):
            Image.fromarray(frame).save(folder / f"{t:03d}.png")
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "common.predict", "--checkpoint", str(base / "model.pt"),
             "--allow-unsigned", "--input", str(base / "input"), "--out", str(base / "out"),
             "--spacing-mm", "0.3,0.3"],
            check=True, capture_output=True, cwd=REPO,
        )  # fmt: skip
        first = time.perf_counter() - started
    return {
        "image_size": list(size),
        "images_per_second": network,
        "first_result_seconds": first,
        "frames": frames,
        "threads": torch.get_num_threads(),
    }


def report(choice: dict, summary: dict, timing: dict, quality: dict | None = None) -> str:
    lines = [
        "# EF from the federated model against the method floor (generated by "
        "`python benchmarks/bench_ef.py`)",
        "",
        f"Model: `{choice['checkpoint']}` ("
        + (
            f"best validation score {choice['validation']:.3f} among the partially labelled "
            f"federated runs of `{choice['experiment']}`"
            if choice.get("chosen", True)
            else "given by --checkpoint; validation score "
            + (
                f"{choice['validation']:.3f}"
                if math.isfinite(choice["validation"])
                else "none recorded (bare weights)"
            )
            + f"; cases as the sites of `{choice['experiment']}` render them"
        )
        + f"; sites' vendors {', '.join(choice['seen'])}). Held-out synthetic cases "
        f"(generator seed {choice['seed']}), "
        "EF by the single-plane method of disks at ED and ES (given), against the generator's "
        "true EF. Floor: the same method on the true masks. MAE over every case where the model "
        f"found an LV; *flagged*: what `echofl-predict` marks as doubtful, EF outside "
        f"{EF_RANGE[0]:g}-{EF_RANGE[1]:g} % (`ef-out-of-range`), an LV the model was undecided "
        f"about (`uncertain-lv`, score above {UNDECIDED_LV_LIMIT:g}) or a faint LV border "
        f"(`low-contrast`, blood-pool contrast below {LOW_CONTRAST_LIMIT:g}); *MAE unflagged*: "
        "over the others.",
        "",
        "| vendor | cases (LV found) | model MAE | floor MAE | model - floor | bias ± 1.96 sd "
        "| within floor + 1.5 | <= 5 | median AE | flagged | MAE unflagged |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for vendor, s in summary.items():
        seen = "a site's domain" if vendor in choice["seen"] else "never seen"
        lines.append(
            f"| {vendor} ({seen}) | {s['cases']} ({s['measured']}) | {s['model_mae']:.2f} | "
            f"{s['floor_mae']:.2f} | {s['model_minus_floor']:+.2f} | {s['bias']:+.2f} ± "
            f"{s['loa']:.2f} | {'yes' if s['within_floor'] else 'no'} | "
            f"{'yes' if s['within_absolute'] else 'no'} | {s['model_median_ae']:.2f} | "
            f"{s['flagged']} | {s['model_mae_unflagged']:.2f} |"
        )
    if quality:
        lines += [
            "",
            "By the generator's image quality grade (cases: model MAE / floor MAE):",
            "",
            "| vendor | " + " | ".join(QUALITIES) + " |",
            "|---|" + "---|" * len(QUALITIES),
        ]
        for vendor, grades in quality.items():
            cells = [
                f"{n}: {m:.2f} / {f:.2f}" if n else "0: -"
                for n, m, f in (grades[g] for g in QUALITIES)
            ]
            lines.append(f"| {vendor} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "![Bland-Altman: model EF against true EF](bland-altman.png)",
        "",
        f"Speed on this machine ({timing['threads']} threads, default model at "
        f"{timing['image_size'][0]} x {timing['image_size'][1]} px): "
        f"**{timing['images_per_second']:.0f} images/s** segmented in batches of "
        f"{timing['frames']}; first result for one {timing['frames']}-frame recording in a fresh "
        f"`echofl-predict` process: **{timing['first_result_seconds']:.1f} s**.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the experiment")
    parser.add_argument("--level", type=float, default=None, help="a [shift] study's level")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument(
        "--seed",
        type=int,
        default=HELD_OUT_SEED,
        help=f"generator seed of the held-out cases (default {HELD_OUT_SEED}, the test cases; "
        "choose settings such as the flags' limits on another, e.g. 4242)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ef")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="score this checkpoint instead of the best of --config's federated runs (e.g. a "
        "centralised run's model-all.pt, applied with --config's recipe; --config also says how "
        "each vendor's cases look)",
    )
    args = parser.parse_args()
    config = experiment(args.config, args.level)
    if args.checkpoint is None:
        checkpoint, score = choose_model(config)
    else:
        checkpoint = args.checkpoint.resolve()
        if not checkpoint.is_file():
            raise SystemExit(f"--checkpoint {args.checkpoint}: no such file")
        if not Path(str(checkpoint) + SIDECAR_SUFFIX).is_file():
            checkpoint = with_card(checkpoint, config)
        score = protocol.mean_dice(read_sidecar(checkpoint).get("validation", {}))
    shifts = site_shifts(config)
    choice = {
        "checkpoint": str(
            checkpoint.relative_to(REPO) if checkpoint.is_relative_to(REPO) else checkpoint
        ),
        "chosen": args.checkpoint is None,
        "validation": score,
        "experiment": config.name,
        "seen": sorted(shifts),
        "seed": args.seed,
    }
    print(f"model: {choice['checkpoint']} (validation {score:.3f})", flush=True)
    table = ef_table(checkpoint, shifts, args.cases, args.seed)
    summary = summarise(table)
    timing = speed()
    args.out.mkdir(parents=True, exist_ok=True)
    bland_altman(table, args.out / "bland-altman.png", f"{choice['checkpoint']}")
    quality = by_quality(table)
    record = {
        "model": choice,
        "summary": summary,
        "by_quality": quality,
        "cases": table,
        "speed": timing,
    }
    (args.out / "ef.json").write_text(json.dumps(record, indent=2))
    text = report(choice, summary, timing, quality)
    (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
