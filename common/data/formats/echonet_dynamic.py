"""EchoNet-Dynamic: loader and writer.

Layout under the dataset root::

    FileList.csv         FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split
                         (FileName without ".avi"; Split TRAIN, VAL or TEST)
    VolumeTracings.csv   FileName,X1,Y1,X2,Y2,Frame  (FileName with ".avi")
    Videos/<FileName>.avi  112x112 apical 4-chamber clips, three identical channels

- Each traced frame has (usually 21) rows: row 0 the long axis, then chords perpendicular to
  it. Its LV mask is the official rasterisation, :func:`common.data.formats.lv_tracing.tracing_mask`
  (X = column, Y = row). Of the two traced frames of a video the larger area is ED, the other
  ES; when a video has more than two traced frames the first and the last in file order are
  used (as the reference EchoNet code does).
- Samples: one per traced frame, image = that video frame (channel 0, float32 in 0..255),
  mask = LV (label 1) only, labelled set {LV}, view "4CH", ``frame`` = the traced frame index,
  ``spacing_mm`` None (EchoNet records no pixel spacing), split from FileList.
- Videos with fewer than two traced frames, or a traced frame at or beyond the end of the
  video, are skipped with one warning that counts them. A traced frame with fewer than three
  rows (long axis + two chords) is an error.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.data.formats.full_ground_truth import (
    FullGroundTruth,
    sample_key,
    write_full_ground_truth,
)
from common.data.formats.lv_tracing import disk_volume_ml, trace_lv, tracing_mask
from common.data.formats.recording import Recording
from common.data.formats.video import read_gray_video, write_gray_video
from common.data.sample import Phase, Sample, SampleMeta, Split, make_sample
from common.errors import DataError
from common.labels import LabelledSet, Structure, format_labelled_set

FORMAT_NAME = "echonet-dynamic"
LABELLED: LabelledSet = frozenset({Structure.LV})
VIEW = "4CH"
FILE_LIST = "FileList.csv"
TRACINGS = "VolumeTracings.csv"
VIDEO_DIR = "Videos"
FILE_LIST_COLUMNS: tuple[str, ...] = (
    "FileName",
    "EF",
    "ESV",
    "EDV",
    "FrameHeight",
    "FrameWidth",
    "FPS",
    "NumberOfFrames",
    "Split",
)
TRACING_COLUMNS: tuple[str, ...] = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
SPLIT_NAMES: dict[str, Split] = {"TRAIN": "train", "VAL": "val", "TEST": "test"}
MIN_TRACING_ROWS = 3  # long axis + two chords: the fewest that make a polygon


@dataclass(frozen=True)
class VideoEntry:
    """One FileList row: ``name`` without ".avi", the split and the recorded EF / FPS text."""

    name: str
    split: Split
    ef: str
    fps: str


# A video's tracings: frame index -> float (rows, 4) array of (X1, Y1, X2, Y2).
Tracings = dict[str, dict[int, np.ndarray]]


def load(root: str | Path, *, site: str) -> list[Sample]:
    """Load an EchoNet-Dynamic tree: the ED and ES traced frames of every usable video."""
    root = Path(root)
    videos = read_file_list(root / FILE_LIST)
    tracings_path = root / TRACINGS
    tracings = read_tracings(tracings_path)
    full = FullGroundTruth(root)
    samples: list[Sample] = []
    skipped: list[str] = []
    for video in videos:
        traced = tracings.get(video.name, {})
        if len(traced) < 2:
            skipped.append(f"{video.name} ({len(traced)} traced frame(s))")
            continue
        frames = _traced_pair(traced)
        for frame in frames:
            _check_rows(traced[frame], tracings_path, video.name, frame)
        clip = read_gray_video(root / VIDEO_DIR / f"{video.name}.avi")
        beyond = [f for f in frames if f >= clip.shape[0]]
        if beyond:
            skipped.append(f"{video.name} (traced frame {beyond[0]} >= {clip.shape[0]} frames)")
            continue
        samples.extend(_video_samples(site, video, clip, traced, frames, tracings_path, full))
    if skipped:
        shown = "; ".join(skipped[:5]) + ("; ..." if len(skipped) > 5 else "")
        warnings.warn(
            f"{tracings_path}: skipped {len(skipped)} video(s) without two usable traced "
            f"frames: {shown}",
            UserWarning,
            stacklevel=2,
        )
    return samples


def write(
    root: str | Path,
    recordings: Sequence[Recording],
    *,
    labelled: LabelledSet | None = None,
) -> Path:
    """Write recordings as an EchoNet-Dynamic tree under ``root``; returns ``root``.

    Each recording becomes ``Videos/<case_id>.avi`` (MJPG, three channels, any frame size) and
    two traced frames (ED and ES), each 21 rows derived from the LV of the full labels by
    :func:`common.data.formats.lv_tracing.trace_lv`. FileList gets EDV/ESV from the method of disks
    on those tracings with ``Recording.spacing_mm``, EF from ``info["ef"]`` when given (else
    from the volumes), FPS, frame size and count and the split. The full label maps of the two
    frames go to the site's full-ground-truth file. ``labelled`` must be None or {LV}.
    """
    root = Path(root)
    if labelled is not None and frozenset(labelled) != LABELLED:
        raise ValueError(
            f"{FORMAT_NAME} carries only {format_labelled_set(LABELLED)}; "
            f"got labelled={format_labelled_set(labelled)}"
        )
    _check_unique(recordings)
    list_rows: list[list[str]] = []
    tracing_rows: list[list[str]] = []
    full_maps: dict[str, np.ndarray] = {}
    for rec in recordings:
        write_gray_video(root / VIDEO_DIR / f"{rec.case_id}.avi", rec.frames, rec.fps)
        traces = _trace_recording(rec)
        for index in sorted(traces):
            tracing_rows.extend(_tracing_lines(rec.case_id, index, traces[index]))
        list_rows.append(_file_list_line(rec, traces))
        full_maps[sample_key(rec.case_id, VIEW, "ED", rec.ed)] = rec.labels[rec.ed]
        full_maps[sample_key(rec.case_id, VIEW, "ES", rec.es)] = rec.labels[rec.es]
    _write_csv(root / FILE_LIST, FILE_LIST_COLUMNS, list_rows)
    _write_csv(root / TRACINGS, TRACING_COLUMNS, tracing_rows)
    write_full_ground_truth(root, full_maps)
    return root


# ---------------------------------------------------------------- reading the CSV files


def read_file_list(path: Path) -> list[VideoEntry]:
    """FileList.csv rows in file order; a missing column or a bad Split raises DataError."""
    entries = []
    for line, row in _read_csv(path, FILE_LIST_COLUMNS):
        name = row["FileName"].strip()
        if name.lower().endswith(".avi"):
            name = name[:-4]
        if not name:
            raise DataError(path, f"line {line}: empty FileName")
        split_text = row["Split"].strip().upper()
        if split_text not in SPLIT_NAMES:
            raise DataError(
                path, f"line {line}: Split {row['Split']!r} is not one of TRAIN, VAL, TEST"
            )
        entries.append(VideoEntry(name, SPLIT_NAMES[split_text], row["EF"], row["FPS"]))
    return entries


def read_tracings(path: Path) -> Tracings:
    """VolumeTracings.csv grouped as {FileName without ".avi": {frame: (rows, 4) array}}.

    Rows keep their file order within a traced frame (row 0 is the long axis).
    """
    grouped: dict[str, dict[int, list[list[float]]]] = {}
    for line, row in _read_csv(path, TRACING_COLUMNS):
        name = row["FileName"].strip()
        if name.lower().endswith(".avi"):
            name = name[:-4]
        coords = [_number(row[c], path, line, c) for c in ("X1", "Y1", "X2", "Y2")]
        frame = _number(row["Frame"], path, line, "Frame")
        if frame != int(frame) or frame < 0:
            raise DataError(path, f"line {line}: Frame must be a non-negative integer")
        grouped.setdefault(name, {}).setdefault(int(frame), []).append(coords)
    return {
        name: {f: np.asarray(rows, dtype=float) for f, rows in frames.items()}
        for name, frames in grouped.items()
    }


def _read_csv(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs of a CSV with a header; checks the required columns."""
    if not path.is_file():
        raise DataError(path, f"missing {path.name}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames
            if not header:
                raise DataError(path, "empty file: no header line")
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(
                    path,
                    f"missing column(s) {', '.join(missing)} (header: {','.join(header)}; "
                    f"expected {','.join(required)})",
                )
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(path, f"unreadable CSV file ({exc})") from exc
    for line, row in rows:
        if any(row.get(c) is None for c in required):
            raise DataError(path, f"line {line}: too few fields")
    return rows


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(path, f"line {line}: {column}: expected a number, got {text!r}") from None
    if not np.isfinite(value):
        raise DataError(path, f"line {line}: {column}: expected a finite number, got {text!r}")
    return value


# ---------------------------------------------------------------- building samples


def _traced_pair(traced: dict[int, np.ndarray]) -> tuple[int, int]:
    frames = list(traced)
    return frames[0], frames[-1]


def _check_rows(rows: np.ndarray, path: Path, name: str, frame: int) -> None:
    if rows.shape[0] < MIN_TRACING_ROWS:
        raise DataError(
            path,
            f"{name}.avi frame {frame}: {rows.shape[0]} row(s); a traced frame needs at least "
            f"{MIN_TRACING_ROWS} (long axis + 2 chords)",
        )


def _video_samples(
    site: str,
    video: VideoEntry,
    clip: np.ndarray,
    traced: dict[int, np.ndarray],
    frames: tuple[int, int],
    tracings_path: Path,
    full: FullGroundTruth,
) -> list[Sample]:
    shape = (int(clip.shape[1]), int(clip.shape[2]))
    masks = {f: tracing_mask(traced[f], shape) for f in frames}
    ed_frame = max(frames, key=lambda f: int(masks[f].sum()))
    samples = []
    for frame in frames:
        phase: Phase = "ED" if frame == ed_frame else "ES"
        meta = SampleMeta(
            site=site,
            case_id=video.name,
            view=VIEW,
            phase=phase,
            spacing_mm=None,
            split=video.split,
            frame=frame,
            source=str(tracings_path),
            extra={"ef": video.ef, "fps": video.fps},
        )
        mask = masks[frame].astype(np.uint8) * np.uint8(Structure.LV)
        full_mask = full.get(sample_key(video.name, VIEW, phase, frame))
        samples.append(
            make_sample(
                clip[frame], mask, LABELLED, meta, full_mask=full_mask, source=tracings_path
            )
        )
    return samples


# ---------------------------------------------------------------- writing


def _check_unique(recordings: Sequence[Recording]) -> None:
    seen: set[str] = set()
    for rec in recordings:
        if rec.view != VIEW:
            raise ValueError(f"{rec.case_id}: EchoNet-Dynamic holds {VIEW} clips, got {rec.view}")
        if rec.case_id in seen:
            raise ValueError(f"{rec.case_id}: two recordings with the same case id")
        seen.add(rec.case_id)


def _trace_recording(rec: Recording) -> dict[int, np.ndarray]:
    try:
        return {index: trace_lv(rec.labels[index]) for index in (rec.ed, rec.es)}
    except ValueError as exc:
        raise ValueError(f"{rec.case_id}: {exc}") from exc


def _tracing_lines(case_id: str, frame: int, rows: np.ndarray) -> list[list[str]]:
    return [[f"{case_id}.avi", *(f"{v:.4f}" for v in row), str(frame)] for row in rows]


def _file_list_line(rec: Recording, traces: dict[int, np.ndarray]) -> list[str]:
    edv = disk_volume_ml(traces[rec.ed], rec.spacing_mm)
    esv = disk_volume_ml(traces[rec.es], rec.spacing_mm)
    if "ef" in rec.info:
        ef = float(rec.info["ef"])
    else:
        ef = 100.0 * (edv - esv) / edv if edv > 0 else 0.0
    n, height, width = rec.frames.shape
    split = {v: k for k, v in SPLIT_NAMES.items()}[rec.split]
    return [
        rec.case_id,
        f"{ef:.6g}",
        f"{esv:.6g}",
        f"{edv:.6g}",
        str(height),
        str(width),
        f"{rec.fps:g}",
        str(n),
        split,
    ]


def _write_csv(path: Path, header: Sequence[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
