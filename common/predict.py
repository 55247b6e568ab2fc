"""Segment a user's recordings with a trained echofl model and measure them: ``echofl-predict``.

    echofl-predict --checkpoint final.pt --verify-key model-signing.pub \\
        --input /data/CAMUS_public --format camus-nifti --out predictions/

Input: a dataset folder in any native format echofl reads (``--format``; its masks, if any,
are ignored here); ``--format dicom``: an ultrasound DICOM file or a folder of them (one
recording each, multi-frame or not; spacing from the ultrasound regions, ``common/data/
dicom_echo.py``); or ``--format images``: a folder of PNG/JPEG frames, each sub-folder one
recording (its frames in name order), each image file directly in the folder a recording of one
frame. ``--spacing-mm ROW,COL`` overrides the spacing.

The checkpoint is applied as its model card says (``common/model_card.py``: model settings,
preprocessing, label map) after its digest and, with ``--verify-key``, the coordinator's
signature are checked; ``--allow-unsigned`` accepts a checkpoint without a signature (a local
research model) and says so. Output, written into ``<out>.partial/`` and renamed into place when
complete (nothing half-written is left): ``masks/<recording>/<frame>.png`` (mask values 0-3),
``overlays/<recording>.png`` (ED and ES with the outlines), ``measurements.csv`` (one row per
recording: ``common/measure/recording.py``; biplane volumes where a patient's A2C and A4C are
both read, ``--views 2CH,4CH`` for CAMUS) and, with ``--truth`` on a labelled input,
``agreement.csv`` (Dice, HD95 and mean surface distance in mm per structure, EF error against
the EF measured on the reference masks by the same method).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from common.data.context import model_input
from common.data.preprocess import normalise, resize_image
from common.data.synthetic.contact_sheet import outlined
from common.errors import DataError, EchoflError
from common.labels import Structure
from common.measure.recording import COLUMNS, biplane, measure, undecided_lv
from common.model_card import ModelCard, card_from_sidecar
from common.training.allocator import keep_freed_memory
from common.version import add_version

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class Recording:
    """Frames of one acquisition: float (T, H, W) native intensities."""

    name: str
    frames: np.ndarray
    spacing_mm: tuple[float, float] | None
    ed: int | None = None
    es: int | None = None
    truth: np.ndarray | None = None  # reference label maps (T, H, W), where the input has them
    truth_structures: tuple[Structure, ...] = ()  # the structures the reference annotates
    case: str = ""  # the patient, where the input names one (pairs A2C with A4C)
    view: str = ""


def model_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options of a command that applies a checkpoint (echofl-predict, echofl-export)."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    add_version(parser)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--verify-key", type=Path, help="the coordinator's model-signing.pub")
    parser.add_argument("--allow-unsigned", action="store_true", help="accept no signature")
    return parser


def load_model(
    checkpoint: Path, verify_key: Path | None, allow_unsigned: bool
) -> tuple[torch.nn.Module, ModelCard, dict]:
    """The checkpoint's network, ready to segment, and its model card."""
    from common.security.checkpoint import load_checkpoint
    from common.security.pki import load_verify_key
    from common.training.model import build_unet

    if verify_key is None and not allow_unsigned:
        raise EchoflError(
            f"{checkpoint}: give --verify-key (the coordinator's model-signing.pub) so the "
            "checkpoint's signature is checked, or --allow-unsigned for a local research model"
        )
    key = load_verify_key(verify_key) if verify_key is not None else None
    state, sidecar = load_checkpoint(checkpoint, key)
    card = card_from_sidecar(checkpoint, sidecar)
    model = build_unet(card.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(
            checkpoint, f"weights do not fit the model card's network ({exc})"
        ) from None
    model.eval()
    return model, card, sidecar


def segment(
    model: torch.nn.Module, card: ModelCard, frames: np.ndarray, chunk: int = 16
) -> np.ndarray:
    """Label maps uint8 (T, H, W) at the frames' own size (:func:`segment_scored`)."""
    return segment_scored(model, card, frames, chunk)[0]


def segment_scored(
    model: torch.nn.Module, card: ModelCard, frames: np.ndarray, chunk: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Label maps uint8 (T, H, W) at the frames' own size, and each frame's
    :func:`~common.measure.recording.undecided_lv` (at the model's own size, before any
    resampling). The class probabilities are resampled to the frames' size (bilinear) and each
    pixel takes the most probable class, so the boundary is placed between the model's pixels
    rather than on them (nnU-Net resamples probabilities, not labels, for the same reason).
    ``chunk`` frames at a time bound the memory of the full-size probabilities. ``frames`` are
    one recording: a model that sees each frame's partner (``model.context = "partner"``,
    :mod:`common.data.context`) takes it from among them."""
    keep_freed_memory()
    size, target = card.preprocess.size, tuple(frames.shape[1:])
    shrink = target[0] < size[0] or target[1] < size[1]
    out = np.empty((len(frames), *target), np.uint8)
    scores = np.empty(len(frames), np.float64)
    lv = int(Structure.LV)  # the card's label map is echofl's: mask value = output channel
    if len(frames) == 0:
        return out, scores
    normalised = np.stack(
        [normalise(resize_image(f.astype(np.float32), size), card.preprocess.normalisation)
         for f in frames]
    )  # fmt: skip
    inputs = model_input(normalised, card.model.context)  # the frames are one recording
    for start in range(0, len(frames), chunk):
        batch = inputs[start : start + chunk]
        with torch.no_grad():
            probs = model(torch.from_numpy(batch)).softmax(1)
            for k, p in enumerate(probs[:, lv].numpy()):
                scores[start + k] = undecided_lv(p)
            if tuple(probs.shape[2:]) != target:
                probs = F.interpolate(
                    probs, size=target, mode="bilinear", align_corners=False, antialias=shrink
                )
            out[start : start + len(batch)] = probs.argmax(1).to(torch.uint8).numpy()
    return out, scores


def site_recordings(
    format: str,
    root: Path,
    *,
    split: str | None = None,
    max_cases: int | None = None,
    **options: object,
) -> list[Recording]:
    """Recordings of a native-format dataset folder (one per case and view); ``options`` go to
    the format's loader (e.g. ``views=("2CH", "4CH")`` for CAMUS). ``split`` keeps one split's
    cases, ``max_cases`` the first N cases of each split (as a site spec's ``max_cases``)."""
    from common.data.formats import load_site
    from common.data.selection import limit_cases

    samples = limit_cases(load_site(format, root, site="predict", **options), max_cases)
    groups: dict[tuple[str, str], list] = {}
    for sample in samples:
        if split is None or sample.meta.split == split:
            groups.setdefault((sample.meta.case_id, sample.meta.view), []).append(sample)
    out = []
    for (case, view), samples in sorted(groups.items()):
        samples.sort(
            key=lambda s: (s.meta.frame if s.meta.frame is not None else 0, s.meta.phase or "")
        )
        phases = [s.meta.phase for s in samples]
        shapes = {s.image.shape for s in samples}
        if len(shapes) > 1:
            raise DataError(
                samples[0].meta.source, f"frames of {case} {view} differ in size: {shapes}"
            )
        full = all(s.full_mask is not None for s in samples)
        out.append(
            Recording(
                name=f"{case}_{view}",
                case=case,
                view=view,
                frames=np.stack([s.image for s in samples]),
                spacing_mm=samples[0].meta.spacing_mm,
                ed=phases.index("ED") if "ED" in phases else None,
                es=phases.index("ES") if "ES" in phases else None,
                truth=np.stack([s.full_mask if full else s.mask for s in samples]),
                truth_structures=tuple(Structure) if full else tuple(sorted(samples[0].labelled)),
            )
        )
    return out


def image_recordings(root: Path) -> list[Recording]:
    """Recordings of a folder of images (see the module doc)."""
    if not root.is_dir():
        raise DataError(root, "input folder not found")
    out = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            files = sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if files:
                out.append(Recording(entry.name, _read_frames(files), None))
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            out.append(Recording(entry.stem, _read_frames([entry]), None))
    if not out:
        raise DataError(root, f"no images ({', '.join(IMAGE_SUFFIXES)}) in the input folder")
    return out


def _read_frames(files: Sequence[Path]) -> np.ndarray:
    frames = []
    for path in files:
        try:
            with Image.open(path) as im:
                frames.append(np.asarray(im.convert("L"), dtype=np.float32))
        except (OSError, ValueError) as exc:
            raise DataError(path, f"unreadable image ({exc})") from None
    if len({f.shape for f in frames}) > 1:
        raise DataError(files[0].parent, "the frames of this recording differ in size")
    return np.stack(frames)


def overlay(frames: np.ndarray, labels: np.ndarray, indices: Sequence[int]) -> Image.Image:
    """The given frames side by side, gray, with one-pixel outlines of each structure."""
    tiles = []
    for t in indices:
        gray = frames[t]
        span = float(gray.max() - gray.min()) or 1.0
        scaled = Image.fromarray(((gray - gray.min()) / span * 255).astype(np.uint8))
        tiles.append(np.asarray(outlined(scaled, Image.fromarray(labels[t]))))
    return Image.fromarray(np.concatenate(tiles, axis=1))


def run(
    recordings: Sequence[Recording],
    model: torch.nn.Module,
    card: ModelCard,
    out: Path,
    *,
    spacing_override: tuple[float, float] | None = None,
    truth: bool = False,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> list[dict]:
    """Segment and measure every recording into ``out`` (atomically); returns the rows. With
    ``truth``, also ``agreement.csv``: per recording, Dice / HD95 / mean surface distance (mm)
    of each annotated structure (mean over its frames) and EF against the EF the same method
    measures on the reference masks."""
    if out.exists():
        raise EchoflError(
            f"{out}: the output folder exists; choose a new one (nothing is overwritten)"
        )
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "overlays").mkdir(parents=True)
    rows, agreements = [], []
    views: dict[
        tuple[str, str], tuple[tuple[np.ndarray, np.ndarray], tuple[float, float], dict]
    ] = {}
    started = time.perf_counter()
    try:
        for i, rec in enumerate(recordings, 1):
            labels, undecided = segment_scored(model, card, rec.frames)
            folder = partial / "masks" / rec.name
            folder.mkdir(parents=True)
            for t, lab in enumerate(labels):
                Image.fromarray(lab).save(folder / f"{t:04d}.png")
            spacing = spacing_override or rec.spacing_mm
            row = measure(rec.name, labels, spacing, rec.ed, rec.es, undecided, rec.frames)
            if truth and rec.truth is not None:
                agreements.append(_agreement(rec, labels, spacing, row))
            if rec.view in ("2CH", "4CH") and spacing is not None and row["ed_frame"] != "":
                phases = (labels[int(row["ed_frame"])], labels[int(row["es_frame"])])
                views[(rec.case, rec.view)] = (phases, spacing, row)
            shown = [i for i in (row["ed_frame"], row["es_frame"]) if i != ""] or [0]
            overlay(rec.frames, labels, shown).save(partial / "overlays" / f"{rec.name}.png")
            rows.append(row)
            rate = sum(len(r.frames) for r in recordings[:i]) / (time.perf_counter() - started)
            progress(
                f"[{i}/{len(recordings)}] {rec.name}: EF {row['ef_percent'] or '-'} % "
                f"{row['flags'] or ''} ({rate:.1f} frames/s)"
            )
        for (case, view), (four, spacing4, row4) in views.items():
            if view == "4CH" and (case, "2CH") in views:
                two, spacing2, row2 = views[(case, "2CH")]
                try:
                    both = biplane(four, two, spacing4, spacing2)
                except ValueError:  # an LV missing at ED or ES in one view: no biplane value
                    continue
                row4.update(both)
                row2.update(both)
        with (partial / "measurements.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
            writer.writeheader()
            writer.writerows(rows)
        if truth:
            if not agreements:
                raise EchoflError("--truth: the input has no reference masks to compare with")
            with (partial / "agreement.csv").open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=AGREEMENT_COLUMNS, restval="")
                writer.writeheader()
                writer.writerows(agreements)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(out)
    return rows


AGREEMENT_COLUMNS = [
    "recording",
    *(f"{m}-{s.name}" for s in Structure for m in ("dice", "hd95", "msd")),
    "ef_percent",
    "ef_reference_percent",
    "ef_error",
]


def _agreement(
    rec: Recording, labels: np.ndarray, spacing: tuple[float, float] | None, row: dict
) -> dict[str, object]:
    from common.measure.agreement import agreement

    assert rec.truth is not None
    per_frame = [
        agreement(labels[t], rec.truth[t], spacing, rec.truth_structures)
        for t in range(len(labels))
    ]
    out: dict[str, object] = {"recording": rec.name}
    for key in per_frame[0]:
        values = [f[key] for f in per_frame if not np.isnan(f[key])]
        out[key] = round(float(np.mean(values)), 4) if values else ""
    reference = measure(rec.name, rec.truth, spacing, rec.ed, rec.es)
    if Structure.LV in rec.truth_structures and reference["ef_percent"] != "":
        out["ef_reference_percent"] = reference["ef_percent"]
        if row["ef_percent"] != "":
            out["ef_percent"] = row["ef_percent"]
            out["ef_error"] = round(float(row["ef_percent"]) - float(reference["ef_percent"]), 2)
    return out


def _spacing(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        row, col = (float(v) for v in text.split(","))
    except ValueError:
        raise EchoflError(f"--spacing-mm must be ROW,COL in millimetres, got {text!r}") from None
    if row <= 0 or col <= 0:
        raise EchoflError(f"--spacing-mm must be positive, got {text!r}")
    return row, col


def dicom_recordings(root: Path) -> list[Recording]:
    """One recording per DICOM file: ``root`` itself, or every ``*.dcm`` in the folder."""
    from common.data.dicom_echo import read_echo_dicom

    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in (".dcm", ".dicom"))
        if not files:
            raise DataError(root, "no DICOM files (*.dcm) in the input folder")
    else:
        raise DataError(root, "input not found")
    out = []
    for path in files:
        frames, spacing = read_echo_dicom(path)
        out.append(Recording(path.stem, frames, spacing))
    return out


def recordings_for(format: str, root: Path, options: dict | None = None) -> list[Recording]:
    if format == "images":
        return image_recordings(root)
    if format == "dicom":
        return dicom_recordings(root)
    return site_recordings(format, root, **(options or {}))


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """What to segment and where to write it (echofl-predict, fl-client predict)."""
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--format", default="images", help="a native format, 'images' or 'dicom'")
    parser.add_argument("--spacing-mm", help="ROW,COL pixel spacing (overrides the format's)")
    parser.add_argument(
        "--views",
        help="CAMUS formats: the views to read, e.g. 2CH,4CH (both give biplane volumes)",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--truth",
        action="store_true",
        help="the input's own masks as reference: agreement.csv (Dice, HD95, MSD, EF error)",
    )


def predict_with(
    args: argparse.Namespace, checkpoint: Path, verify_key: Path | None, allow_unsigned: bool
) -> int:
    """Apply ``checkpoint`` to ``args.input`` (see :func:`add_input_arguments`); exit code."""
    try:
        spacing = _spacing(args.spacing_mm)
        model, card, sidecar = load_model(checkpoint, verify_key, allow_unsigned)
        signed = "signature verified" if verify_key else "UNSIGNED, accepted by --allow-unsigned"
        print(
            f"model: {checkpoint} (run {sidecar.get('run', '?')}, round "
            f"{sidecar.get('round', '?')}, {signed})",
            file=sys.stderr,
        )
        options = {} if args.views is None else {"views": tuple(args.views.split(","))}
        recordings = recordings_for(args.format, args.input, options)
        rows = run(recordings, model, card, args.out, spacing_override=spacing, truth=args.truth)
    except EchoflError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    flagged = sum(1 for r in rows if r["flags"])
    print(f"{len(rows)} recording(s) -> {args.out}/measurements.csv ({flagged} with flags)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = model_parser(__doc__)
    add_input_arguments(parser)
    args = parser.parse_args(argv)
    return predict_with(args, args.checkpoint, args.verify_key, args.allow_unsigned)


if __name__ == "__main__":
    raise SystemExit(main())
