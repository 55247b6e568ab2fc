"""Generic folder format for a hospital's own exports: loader and writer.

Layout under the site root (see ``docs/formats/folder.md``)::

    manifest.toml   what the site annotates
    index.csv       one row per annotated frame
    <any paths>     images and masks, named by index.csv relative to the site root

``manifest.toml`` (unknown keys are refused, so a typo is an error naming the key)::

    format_version = 1                  # required, must be 1
    labelled = ["LV", "LA"]             # required: the structures the masks annotate
    default_view = "4CH"                # optional, default "4CH"
    default_spacing_mm = [0.31, 0.31]   # optional (row, column) pixel size in mm
    description = "Cardiology export"   # optional free text

``index.csv`` columns (header required; only the first three must be present; an empty cell
means "not given"; unknown columns are refused):

=================  ==========================================================================
case_id            patient / study id (required)
image              image file: ``.png``, ``.jpg``/``.jpeg`` (8- or 16-bit grayscale; colour is
                   reduced to its first channel when the channels are equal, else to luminance)
                   or ``.npy`` (2-D numeric)
mask               mask file: ``.png`` (8/16-bit grayscale or palette indices) or ``.npy``
                   (2-D integer); values 0 bg, 1 LV, 2 MYO, 3 LA. JPEG masks are refused
                   (lossy compression alters label values)
phase              ``ED``, ``ES`` or empty
view               e.g. ``4CH``, ``2CH``; empty -> ``default_view``
split              ``train``, ``val``, ``test``; empty -> hash split of the case id
                   (:func:`common.data.formats.splits.hash_split`, fractions 0.8 / 0.1 / 0.1)
frame              0-based frame index in the acquisition
spacing_row_mm     pixel height in mm (with ``spacing_col_mm``; both or neither); empty ->
spacing_col_mm     ``default_spacing_mm``, else unknown
quality            free text (e.g. Good / Medium / Poor)
=================  ==========================================================================

Images are returned as float32 in their native range (0..255 for 8-bit, 0..65535 for 16-bit).
A mask may only contain structures of ``labelled``; pixels of other structures must be 0.
Rows sharing (case_id, view, phase, frame) are refused when phase or frame is given.
"""

from __future__ import annotations

import csv
import difflib
import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import (
    BaseModel,
    ConfigDict,
    PositiveFloat,
    ValidationError,
    field_validator,
)

from common.data.formats.full_ground_truth import (
    FullGroundTruth,
    sample_key,
    write_full_ground_truth,
)
from common.data.formats.recording import Recording
from common.data.formats.splits import hash_split, parse_split
from common.data.sample import Phase, Sample, SampleMeta, make_sample
from common.errors import DataError
from common.labels import ALL_STRUCTURES, LabelledSet, Structure, parse_labelled_set

FORMAT_NAME = "folder"
FORMAT_VERSION = 1
MANIFEST = "manifest.toml"
INDEX = "index.csv"
REQUIRED_COLUMNS: tuple[str, ...] = ("case_id", "image", "mask")
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "phase",
    "view",
    "split",
    "frame",
    "spacing_row_mm",
    "spacing_col_mm",
    "quality",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")
MASK_SUFFIXES = (".png", ".npy")
JPEG_SUFFIXES = (".jpg", ".jpeg")
FrameSelection = Literal["ed-es", "all"]


class FolderManifest(BaseModel):
    """The validated ``manifest.toml`` of a folder site."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1]
    labelled: frozenset[Structure]
    default_view: str = "4CH"
    default_spacing_mm: tuple[PositiveFloat, PositiveFloat] | None = None
    description: str = ""

    @field_validator("labelled", mode="before")
    @classmethod
    def _parse_labelled(cls, value: Any) -> LabelledSet:
        if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
            raise ValueError('must be a list of structure names, e.g. ["LV", "LA"]')
        return parse_labelled_set(value)

    @field_validator("default_view")
    @classmethod
    def _check_view(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()


def load(root: str | Path, *, site: str) -> list[Sample]:
    """Load a folder site: one :class:`Sample` per ``index.csv`` row, in file order."""
    root = Path(root)
    manifest = read_manifest(root / MANIFEST)
    index_path = root / INDEX
    full = FullGroundTruth(root)
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for line, row in _read_index(index_path):
        meta, key = _row_meta(row, manifest, site, index_path, line)
        if key is not None:
            if key in seen:
                raise DataError(
                    index_path, f"line {line}: same case/view/phase/frame as line {seen[key]}"
                )
            seen[key] = line
        image = read_image(_listed_file(root, row, "image", index_path, line))
        mask_path = _listed_file(root, row, "mask", index_path, line)
        mask = read_mask(mask_path)
        full_mask = full.get(key) if key is not None else None
        samples.append(
            make_sample(image, mask, manifest.labelled, meta, full_mask=full_mask, source=mask_path)
        )
    return samples


def write(
    root: str | Path,
    recordings: Sequence[Recording],
    *,
    labelled: LabelledSet | None = None,
    frames: FrameSelection = "ed-es",
    image_format: Literal["png", "jpeg"] = "png",
    description: str = "",
) -> Path:
    """Write recordings as a folder site under ``root``; returns ``root``.

    labelled: the structures kept in the masks (default all three); others become 0.
    frames: "ed-es" writes the ED and ES frames; "all" every frame (ED/ES ones with a phase).
    image_format: "png" (lossless, mode L) or "jpeg" (quality 90, like lossy exports);
        masks are always PNG (mode L).
    Full label maps of the written frames go to the site's full-ground-truth file.
    """
    root = Path(root)
    kept = ALL_STRUCTURES if labelled is None else parse_labelled_set(labelled)
    if frames not in ("ed-es", "all"):
        raise ValueError(f"frames must be 'ed-es' or 'all', got {frames!r}")
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    suffix = ".png" if image_format == "png" else ".jpg"
    keep_values = np.array(sorted(int(s) for s in kept))
    rows: list[dict[str, str]] = []
    full_maps: dict[str, np.ndarray] = {}
    for rec in recordings:
        for phase, index in _selected_frames(rec, frames):
            tag = phase if phase is not None else f"f{index:03d}"
            name = f"{rec.case_id}_{rec.view}_{tag}"
            key = sample_key(rec.case_id, rec.view, phase, index)
            if key in full_maps:
                raise ValueError(f"{rec.case_id}: two recordings of view {rec.view}")
            image_rel, mask_rel = f"images/{name}{suffix}", f"masks/{name}.png"
            labels = rec.labels[index]
            mask = np.where(np.isin(labels, keep_values), labels, 0).astype(np.uint8)
            _save_picture(root / image_rel, rec.frames[index])
            _save_picture(root / mask_rel, mask)
            full_maps[key] = labels
            rows.append(_index_row(rec, phase, index, image_rel, mask_rel))
    _write_index(root / INDEX, rows)
    _write_manifest(root / MANIFEST, kept, _default_view(recordings), description)
    write_full_ground_truth(root, full_maps)
    return root


# ---------------------------------------------------------------- manifest and index


def read_manifest(path: Path) -> FolderManifest:
    """Parse and validate ``manifest.toml``; every problem is a DataError naming the key."""
    if not path.is_file():
        raise DataError(path, f"missing {MANIFEST}: not a folder-format site")
    try:
        with path.open("rb") as handle:
            content = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DataError(path, f"invalid TOML ({exc})") from exc
    try:
        return FolderManifest.model_validate(content)
    except ValidationError as exc:
        # unknown keys first: a typo also makes the intended key "missing"
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        problems = "; ".join(_describe(e) for e in errors)
        raise DataError(path, f"invalid manifest: {problems}") from None


def _describe(error: Any) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        known = list(FolderManifest.model_fields)
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key {key!r} ({hint}known keys: {', '.join(known)})"
    if error["type"] == "missing":
        return f"missing required key {key!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"key {key!r}: {message}"


def _read_index(path: Path) -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise DataError(path, f"missing {INDEX}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in reader.fieldnames or []]
            _check_header(header, path)
            reader.fieldnames = header
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(path, f"unreadable CSV file ({exc})") from exc
    for line, row in rows:
        if None in row or any(row.get(c) is None for c in header):
            raise DataError(path, f"line {line}: expected {len(header)} fields")
    return [(line, {k: (v or "").strip() for k, v in row.items()}) for line, row in rows]


def _check_header(header: list[str], path: Path) -> None:
    if not header:
        raise DataError(path, "empty file: no header line")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(path, f"missing required column(s) {', '.join(missing)}")
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        known = ", ".join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
        raise DataError(path, f"unknown column(s) {', '.join(unknown)} (known: {known})")


def _row_meta(
    row: dict[str, str], manifest: FolderManifest, site: str, path: Path, line: int
) -> tuple[SampleMeta, str | None]:
    """Sample metadata of one index row and its full-ground-truth key (None if underivable)."""
    case_id = row["case_id"]
    if not case_id:
        raise DataError(path, f"line {line}: empty case_id")
    phase = _phase(row.get("phase", ""), path, line)
    frame = _frame(row.get("frame", ""), path, line)
    view = row.get("view", "") or manifest.default_view
    split_text = row.get("split", "")
    split = parse_split(split_text, path, f"line {line}") if split_text else hash_split(case_id)
    meta = SampleMeta(
        site=site,
        case_id=case_id,
        view=view,
        phase=phase,
        spacing_mm=_spacing(row, manifest, path, line),
        split=split,
        frame=frame,
        quality=row.get("quality", "") or None,
    )
    key = None if phase is None and frame is None else sample_key(case_id, view, phase, frame)
    return meta, key


def _phase(text: str, path: Path, line: int) -> Phase | None:
    if not text:
        return None
    value = text.upper()
    if value not in ("ED", "ES"):
        raise DataError(path, f"line {line}: phase {text!r} is not ED, ES or empty")
    return value  # type: ignore[return-value]


def _frame(text: str, path: Path, line: int) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise DataError(path, f"line {line}: frame {text!r} is not a non-negative integer")
    return int(text)


def _spacing(
    row: dict[str, str], manifest: FolderManifest, path: Path, line: int
) -> tuple[float, float] | None:
    texts = (row.get("spacing_row_mm", ""), row.get("spacing_col_mm", ""))
    if not any(texts):
        return manifest.default_spacing_mm
    if not all(texts):
        raise DataError(path, f"line {line}: give both spacing_row_mm and spacing_col_mm or none")
    try:
        values = tuple(float(t) for t in texts)
    except ValueError:
        raise DataError(path, f"line {line}: spacing {texts} is not numeric") from None
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise DataError(path, f"line {line}: spacing {texts} must be positive")
    return values[0], values[1]


def _listed_file(root: Path, row: dict[str, str], column: str, path: Path, line: int) -> Path:
    if not row[column]:
        raise DataError(path, f"line {line}: empty {column}")
    listed = root / row[column]
    if not listed.is_file():
        raise DataError(listed, f"missing {column} file listed in {INDEX} line {line}")
    return listed


# ---------------------------------------------------------------- image and mask files


def read_image(path: Path) -> np.ndarray:
    """2-D numeric image from PNG / JPEG (8- or 16-bit) or ``.npy``, in its native range."""
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(
            path, f"unsupported image type {suffix!r} (use {', '.join(IMAGE_SUFFIXES)})"
        )
    if suffix == ".npy":
        return _read_npy(path, integer=False)
    with _open_picture(path) as picture:
        if picture.mode in ("L", "I", "F") or picture.mode.startswith("I;16"):
            return np.asarray(picture)
        channels = np.asarray(picture.convert("RGB"))
        if np.array_equal(channels[..., 0], channels[..., 1]) and np.array_equal(
            channels[..., 0], channels[..., 2]
        ):
            return channels[..., 0]
        return np.asarray(picture.convert("L"))


def read_mask(path: Path) -> np.ndarray:
    """2-D integer label map from a lossless PNG or ``.npy``; JPEG is refused."""
    suffix = path.suffix.lower()
    if suffix in JPEG_SUFFIXES:
        raise DataError(
            path, "JPEG masks are refused: lossy compression alters label values (use PNG or .npy)"
        )
    if suffix not in MASK_SUFFIXES:
        raise DataError(path, f"unsupported mask type {suffix!r} (use {', '.join(MASK_SUFFIXES)})")
    if suffix == ".npy":
        return _read_npy(path, integer=True)
    with _open_picture(path) as picture:
        if picture.mode in ("L", "P", "I", "1") or picture.mode.startswith("I;16"):
            return np.asarray(picture).astype(np.int64)
        raise DataError(
            path, f"a mask must be a single-channel label map, got PNG mode {picture.mode}"
        )


def _open_picture(path: Path) -> Image.Image:
    try:
        picture = Image.open(path)
        picture.load()
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError ...
        raise DataError(path, f"unreadable image file ({exc})") from exc
    return picture


def _read_npy(path: Path, *, integer: bool) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:  # ValueError, OSError, EOFError
        raise DataError(path, f"unreadable .npy file ({exc})") from exc
    if array.ndim != 2:
        raise DataError(path, f"expected a 2-D array, got shape {array.shape}")
    kinds = "iub" if integer else "iubf"
    if array.dtype.kind not in kinds:
        what = "an integer" if integer else "a numeric"
        raise DataError(path, f"expected {what} array, got dtype {array.dtype}")
    return array


# ---------------------------------------------------------------- writing helpers


def _selected_frames(rec: Recording, frames: FrameSelection) -> list[tuple[Phase | None, int]]:
    if frames == "ed-es":
        return [("ED", rec.ed), ("ES", rec.es)]
    phases: dict[int, Phase] = {rec.ed: "ED", rec.es: "ES"}
    return [(phases.get(i), i) for i in range(rec.frames.shape[0])]


def _save_picture(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L")
    if path.suffix == ".jpg":
        picture.save(path, quality=90)
    else:
        picture.save(path)


def _index_row(
    rec: Recording, phase: Phase | None, index: int, image: str, mask: str
) -> dict[str, str]:
    return {
        "case_id": rec.case_id,
        "image": image,
        "mask": mask,
        "phase": phase or "",
        "view": rec.view,
        "split": rec.split,
        "frame": str(index),
        "spacing_row_mm": repr(float(rec.spacing_mm[0])),
        "spacing_col_mm": repr(float(rec.spacing_mm[1])),
        "quality": rec.info.get("quality", ""),
    }


def _write_index(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS), lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)


def _default_view(recordings: Sequence[Recording]) -> str:
    views = [rec.view for rec in recordings]
    return max(sorted(set(views)), key=views.count) if views else "4CH"


def _write_manifest(path: Path, kept: LabelledSet, view: str, description: str) -> None:
    names = ", ".join(json.dumps(s.name) for s in sorted(kept))
    lines = [
        f"format_version = {FORMAT_VERSION}",
        f"labelled = [{names}]",
        f"default_view = {json.dumps(view)}",
    ]
    if description:
        lines.append(f"description = {json.dumps(description)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
