"""HMC-QU (apical 4-chamber part): loader and writer.

Layout under the dataset root (note the space before ``_4CH`` in every recording name)::

    A4C.xlsx
    HMC-QU/A4C/ES0001 _4CH_1.avi
    LV Ground-truth Segmentation Masks/Mask_ES0001 _4CH_1.mat   variable ``predicted``,
                                                                uint8 (T, 224, 224), 1 = LV wall

Spreadsheet ``A4C.xlsx`` (first sheet), one row per recording under a header row::

    ECHO | SEG1 | SEG2 | SEG3 | SEG5 | SEG6 | SEG7 | One cardiac-cycle frames | (end) |
    LV Wall Ground-truth Segmentation Masks

``ECHO`` is the recording name; SEG* are the per-segment infarction labels of the A4C view;
"One cardiac-cycle frames" heads two columns (a merged header cell, inferred from the sources
below) holding the 1-based first and last video frame of the annotated cycle; the last column
flags recordings with masks by the character "ü" (a check mark in the Wingdings font).

Source of this layout (a code search over public GitHub repositories; no official description
of the spreadsheet was found): pandas-based HMC-QU preprocessing scripts in several echo
projects read ``A4C.xlsx`` and keep the rows with
``row["LV Wall Ground-truth Segmentation Masks"] == "ü"``, open ``row["ECHO"] + ".avi"`` and
``"Mask_" + row["ECHO"] + ".mat"``, and take ``row["One cardiac-cycle frames"]`` as the 1-based
first annotated frame (mask frame ``i`` = video frame ``start - 1 + i``; one script reads the
same value as ``df.columns[7]``); the HMC-QU dataset generator of the ``vital`` library renames
the columns after ``ECHO`` to ``SEG1, SEG2, SEG3, SEG5, SEG6, SEG7, Reference Frame, End of
Cycle, LV Wall Ground-truth Segmentation Masks`` and slices the video from ``Reference Frame``
to ``End of Cycle``. Hence the loader finds columns by header text (case and spacing ignored;
"Reference Frame" / "End of Cycle" accepted as names) and takes the cycle end from the column
after the start when that column's header is empty (a merged cell).

- Masks: value 1 (LV wall) becomes MYO (2); labelled set {MYO}. The number of annotated frames
  is the mask's T; a spreadsheet end that disagrees is reported with a warning.
- Images: the video frames are larger than the masks; each annotated frame is resized to the
  mask size (224x224) with linear interpolation, float32 in 0..255. One sample per mask frame
  (every ``frame_stride``-th), ``frame`` = its 0-based video frame index, view "4CH".
- ``phase`` is None: public sources give the first annotated frame only as a "reference frame";
  none we found states that it is end-diastole. ``spacing_mm`` is None (no spacing recorded).
- No official split: each recording gets :func:`common.data.formats.splits.hash_split` of its ECHO
  name with fractions (0.7, 0.15, 0.15) (train, val, test), unless ``splits`` names it.
- Full ground truth (synthetic sites) is keyed by frame, ``<ECHO>_4CH_f<frame>``, at mask size.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import openpyxl
import scipy.io
from openpyxl.styles import Alignment

from common.data.formats.full_ground_truth import (
    FullGroundTruth,
    sample_key,
    write_full_ground_truth,
)
from common.data.formats.recording import Recording
from common.data.formats.splits import check_fractions, hash_split
from common.data.formats.video import read_gray_video, write_gray_video
from common.data.sample import SPLITS, Sample, SampleMeta, Split, make_sample
from common.errors import DataError, OptionError
from common.labels import LabelledSet, Structure, format_labelled_set

FORMAT_NAME = "hmc-qu"
LABELLED: LabelledSet = frozenset({Structure.MYO})
VIEW = "4CH"
SPREADSHEET = "A4C.xlsx"
VIDEO_DIR = Path("HMC-QU") / "A4C"
MASK_DIR = "LV Ground-truth Segmentation Masks"
MASK_KEY = "predicted"
MASK_SIZE = 224
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)
DEFAULT_VIDEO_SIZE: tuple[int, int] = (636, 422)  # (width, height), as the real clips
ECHO_SUFFIX = " _4CH_1"
CHECK_MARK = "ü"
NO_MARK = "û"

COL_ECHO = "ECHO"
COL_SEGMENTS: tuple[str, ...] = ("SEG1", "SEG2", "SEG3", "SEG5", "SEG6", "SEG7")
COL_CYCLE = "One cardiac-cycle frames"
COL_MASKS = "LV Wall Ground-truth Segmentation Masks"
_START_NAMES = ("one cardiac-cycle frames", "reference frame")
_END_NAMES = ("end of cycle",)
_TRUE_MARKS = {CHECK_MARK, "✓", "✔", "yes", "y", "true", "1"}


@dataclass(frozen=True)
class SheetRow:
    """One recording of A4C.xlsx: 1-based cycle ``start`` / ``end`` (None when not given)."""

    echo: str
    has_mask: bool
    start: int | None
    end: int | None
    line: int


def load(
    root: str | Path,
    *,
    site: str,
    frame_stride: int = 1,
    split_fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    splits: Mapping[str, Split] | None = None,
) -> list[Sample]:
    """Load every annotated frame of the recordings that A4C.xlsx flags as having masks.

    frame_stride: keep mask frames 0, s, 2s, ... of each recording (s >= 1).
    split_fractions: (train, val, test) fractions of the hash split.
    splits: explicit split per ECHO name, overriding the hash split.
    """
    root = Path(root)
    if isinstance(frame_stride, bool) or not isinstance(frame_stride, int) or frame_stride < 1:
        raise OptionError("frame_stride", f"must be an integer >= 1, got {frame_stride!r}")
    fractions = check_fractions(split_fractions)
    bad = {k: v for k, v in (splits or {}).items() if v not in SPLITS}
    if bad:
        raise OptionError("splits", f"splits must map ECHO names to train/val/test, got {bad}")
    sheet_path = root / SPREADSHEET
    full = FullGroundTruth(root)
    samples: list[Sample] = []
    for row in read_spreadsheet(sheet_path):
        if not row.has_mask:
            continue
        split = (splits or {}).get(row.echo) or hash_split(row.echo, fractions)
        samples.extend(_recording_samples(root, site, row, split, frame_stride, full))
    return samples


def write(
    root: str | Path,
    recordings: Sequence[Recording],
    *,
    labelled: LabelledSet | None = None,
    video_size: tuple[int, int] = DEFAULT_VIDEO_SIZE,
) -> Path:
    """Write recordings as an HMC-QU tree under ``root``; returns ``root``.

    The annotated cycle is the recording's frames from ED to the end (the whole clip when ED is
    its last frame). Videos hold every frame resized (linearly) to ``video_size`` = (width,
    height); masks are the MYO of the labels resized to 224x224 with nearest neighbour, as
    ``predicted`` (1 = wall) in a MATLAB v5 file; A4C.xlsx lists every recording with its
    cycle and the "ü" flag. The ECHO name is ``case_id`` + " _4CH_1" unless the case id already
    ends like an HMC-QU name. Full label maps at 224x224 go to the full-ground-truth file.
    ``labelled`` must be None or {MYO}.
    """
    root = Path(root)
    if labelled is not None and frozenset(labelled) != LABELLED:
        raise ValueError(
            f"{FORMAT_NAME} carries only {format_labelled_set(LABELLED)}; "
            f"got labelled={format_labelled_set(labelled)}"
        )
    width, height = (int(v) for v in video_size)
    if width < MASK_SIZE or height < MASK_SIZE:
        raise ValueError(f"video_size must be at least {MASK_SIZE}x{MASK_SIZE}, got {video_size}")
    full_maps: dict[str, np.ndarray] = {}
    sheet_rows: list[list[Any]] = []
    for rec in recordings:
        if rec.view != VIEW:
            raise ValueError(f"{rec.case_id}: HMC-QU holds {VIEW} clips, got {rec.view}")
        echo = echo_name(rec.case_id)
        start = rec.ed if rec.ed < rec.frames.shape[0] - 1 else 0
        video = np.stack([_resize(f, (width, height), cv2.INTER_LINEAR) for f in rec.frames])
        write_gray_video(root / VIDEO_DIR / f"{echo}.avi", video, rec.fps)
        labels = np.stack(
            [_resize(m, (MASK_SIZE, MASK_SIZE), cv2.INTER_NEAREST) for m in rec.labels[start:]]
        )
        _write_mask(root / MASK_DIR / f"Mask_{echo}.mat", labels == Structure.MYO)
        for i, label_map in enumerate(labels):
            full_maps[sample_key(echo, VIEW, None, start + i)] = label_map
        segments = [int(rec.info.get(s.lower(), "0")) for s in COL_SEGMENTS]
        sheet_rows.append([echo, *segments, start + 1, rec.frames.shape[0], CHECK_MARK])
    write_spreadsheet(root / SPREADSHEET, sheet_rows)
    write_full_ground_truth(root, full_maps)
    return root


def echo_name(case_id: str) -> str:
    """HMC-QU recording name of a case: ``case_id`` + " _4CH_1" unless already of that form."""
    return case_id if re.search(r" _4CH_\d+$", case_id) else case_id + ECHO_SUFFIX


# ---------------------------------------------------------------- spreadsheet


def read_spreadsheet(path: Path) -> list[SheetRow]:
    """Recordings listed in A4C.xlsx (first sheet), in sheet order."""
    if not path.is_file():
        raise DataError(
            path, f"missing spreadsheet {path.name} (it lists the recordings and their cycles)"
        )
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            table = [list(r) for r in workbook.worksheets[0].iter_rows(values_only=True)]
        finally:
            workbook.close()
    except Exception as exc:  # zip, XML and openpyxl errors come in many types
        raise DataError(path, f"unreadable spreadsheet ({exc})") from exc
    header_at, columns = _header(table, path)
    rows = []
    for offset, cells in enumerate(table[header_at + 1 :], start=header_at + 2):
        row = _sheet_row(cells, columns, path, offset)
        if row is not None:
            rows.append(row)
    return rows


def write_spreadsheet(path: Path, rows: list[list[Any]]) -> None:
    """Write A4C.xlsx: header (cycle header merged over two columns) then the given rows."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "A4C"
    sheet.append([COL_ECHO, *COL_SEGMENTS, COL_CYCLE, None, COL_MASKS])
    cycle_col = 2 + len(COL_SEGMENTS)
    sheet.merge_cells(start_row=1, start_column=cycle_col, end_row=1, end_column=cycle_col + 1)
    sheet.cell(row=1, column=cycle_col).alignment = Alignment(horizontal="center")
    for row in rows:
        sheet.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)


def _normal(value: Any) -> str:
    return " ".join(str(value).split()).casefold() if value is not None else ""


def _header(table: list[list[Any]], path: Path) -> tuple[int, dict[str, int | None]]:
    """Index of the header row and the column index of echo / start / end / masks."""
    for at, cells in enumerate(table):
        names = [_normal(c) for c in cells]
        if _normal(COL_ECHO) not in names:
            continue
        found = {
            "echo": names.index(_normal(COL_ECHO)),
            "start": _find(names, _START_NAMES),
            "masks": _find(names, (_normal(COL_MASKS),)),
        }
        for key, title in (("start", COL_CYCLE), ("masks", COL_MASKS)):
            if found[key] is None:
                raise DataError(path, f"missing column {title!r} (header: {cells})")
        start = found["start"]
        end = _find(names, _END_NAMES)
        if end is None and start is not None and start + 1 < len(names) and not names[start + 1]:
            end = start + 1  # the cycle header is merged over the start and end columns
        return at, {**found, "end": end}
    raise DataError(path, f"missing column {COL_ECHO!r}: no header row found")


def _find(names: list[str], wanted: Sequence[str]) -> int | None:
    for i, name in enumerate(names):
        if name in wanted:
            return i
    return None


def _sheet_row(
    cells: list[Any], columns: dict[str, int | None], path: Path, line: int
) -> SheetRow | None:
    def cell(key: str) -> Any:
        index = columns[key]
        return cells[index] if index is not None and index < len(cells) else None

    echo = cell("echo")
    if echo is None or not str(echo).strip():
        return None
    mark = cell("masks")
    has_mask = mark is True or (mark is not False and _normal(mark) in _TRUE_MARKS)
    start = _frame_number(cell("start"), path, line, "cycle start", required=has_mask)
    end = _frame_number(cell("end"), path, line, "cycle end", required=False)
    return SheetRow(str(echo).strip(), has_mask, start, end, line)


def _frame_number(value: Any, path: Path, line: int, what: str, *, required: bool) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise DataError(path, f"row {line}: missing {what} frame")
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or number != int(number) or number < 1:
        if required:
            raise DataError(path, f"row {line}: {what} must be a frame number >= 1, got {value!r}")
        return None
    return int(number)


# ---------------------------------------------------------------- masks and samples


def read_mask(path: Path) -> np.ndarray:
    """``predicted`` of a mask file as uint8 (T, H, W) with values in {0, 1}."""
    if not path.is_file():
        raise DataError(path, "missing mask file for a recording flagged in A4C.xlsx")
    try:
        content = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, TypeError, NotImplementedError (v7.3)
        raise DataError(path, f"unreadable .mat file ({exc})") from exc
    if MASK_KEY not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DataError(path, f"no variable {MASK_KEY!r} in the .mat file (found: {found})")
    masks = np.asarray(content[MASK_KEY])
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[0] == 0:
        raise DataError(path, f"{MASK_KEY!r} must be (T, H, W), got shape {masks.shape}")
    if not np.issubdtype(masks.dtype, np.number):
        raise DataError(path, f"{MASK_KEY!r} has non-numeric dtype {masks.dtype}")
    bad = sorted({float(v) for v in np.unique(masks)} - {0.0, 1.0})
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:8])
        raise DataError(
            path, f"label value(s) {shown} outside HMC-QU's 0 (background) / 1 (LV wall)"
        )
    return masks.astype(np.uint8)


def _recording_samples(
    root: Path, site: str, row: SheetRow, split: Split, stride: int, full: FullGroundTruth
) -> list[Sample]:
    mask_path = root / MASK_DIR / f"Mask_{row.echo}.mat"
    masks = read_mask(mask_path)
    video_path = root / VIDEO_DIR / f"{row.echo}.avi"
    video = read_gray_video(video_path)
    if row.start is None:  # _sheet_row requires it on flagged rows; kept for the type checker
        raise DataError(root / SPREADSHEET, f"row {row.line}: missing cycle start frame")
    first, count = row.start - 1, masks.shape[0]
    if row.end is not None and row.end - row.start + 1 != count:
        warnings.warn(
            f"{root / SPREADSHEET}: row {row.line} ({row.echo}): cycle {row.start}..{row.end} "
            f"but {mask_path.name} has {count} frames; using the mask's frames",
            UserWarning,
            stacklevel=3,
        )
    if first + count > video.shape[0]:
        raise DataError(
            video_path,
            f"annotated frames {row.start}..{row.start + count - 1} (A4C.xlsx row {row.line}) "
            f"beyond the video's {video.shape[0]} frames",
        )
    size = (masks.shape[2], masks.shape[1])
    samples = []
    for i in range(0, count, stride):
        frame = first + i
        meta = SampleMeta(
            site=site,
            case_id=row.echo,
            view=VIEW,
            split=split,
            frame=frame,
            source=str(mask_path),
        )
        image = _resize(video[frame], size, cv2.INTER_LINEAR)
        mask = masks[i] * np.uint8(Structure.MYO)
        full_mask = full.get(sample_key(row.echo, VIEW, None, frame))
        samples.append(
            make_sample(image, mask, LABELLED, meta, full_mask=full_mask, source=mask_path)
        )
    return samples


def _resize(image: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """Resize a 2-D uint8 array to ``size`` = (width, height)."""
    return cv2.resize(np.ascontiguousarray(image), size, interpolation=interpolation)


def _write_mask(path: Path, wall: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {MASK_KEY: wall.astype(np.uint8)}, do_compression=True)
