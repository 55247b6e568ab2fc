"""CAMUS, NIfTI release (2023): loader and writer.

Layout under the dataset root::

    database_nifti/<patient>/Info_2CH.cfg  Info_4CH.cfg
    database_nifti/<patient>/<patient>_<view>_<ED|ES>.nii.gz       (+ ``_gt.nii.gz``)
    database_nifti/<patient>/<patient>_<view>_half_sequence.nii.gz (+ ``_gt.nii.gz``)
    database_split/subgroup_training.txt  subgroup_validation.txt  subgroup_testing.txt

- cfg files hold ``Key: value`` lines (``ED, ES, NbFrame, Sex, Age, ImageQuality, EF,
  FrameRate``); ED and ES are 1-based indices into the half sequence. A file with ED > ES is
  read with the two swapped and a warning naming it.
- nibabel returns arrays with the axes reversed, (W, H) or (W, H, T); they are transposed to
  (H, W) / (T, H, W), and the header zooms likewise: ``spacing_mm = (zooms[1], zooms[0])``
  (row, column) in mm, anisotropic and per patient.
- Masks carry the full CAMUS schema: 0 background, 1 LV, 2 MYO, 3 LA (labelled set
  {LV, MYO, LA}). Images are uint8 B-mode, returned as float32 in 0..255.
- Splits come from the ``database_split`` lists. When none of the three list files exists, each
  patient gets :func:`common.data.formats.splits.hash_split` of its id with fractions
  (0.8, 0.1, 0.1) (train, val, test); when the lists exist, a patient listed in none is an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from common.data.formats.full_ground_truth import (
    FullGroundTruth,
    sample_key,
    write_full_ground_truth,
)
from common.data.formats.lv_tracing import disk_volume_ml, trace_lv
from common.data.formats.recording import Recording
from common.data.formats.splits import hash_split, read_split_lists, write_split_lists
from common.data.sample import Phase, Sample, SampleMeta, Split, make_sample
from common.errors import DataError, OptionError
from common.labels import LabelledSet, Structure, format_labelled_set

FORMAT_NAME = "camus-nifti"
LABELLED: LabelledSet = frozenset({Structure.LV, Structure.MYO, Structure.LA})
VIEWS: tuple[str, ...] = ("2CH", "4CH")
IMAGE_DIR = "database_nifti"
SPLIT_DIR = "database_split"
SPLIT_FILES: dict[Split, str] = {
    "train": "subgroup_training.txt",
    "val": "subgroup_validation.txt",
    "test": "subgroup_testing.txt",
}


@dataclass(frozen=True)
class CamusInfo:
    """The parts of an ``Info_<view>.cfg`` file the loaders use.

    ed, es: 1-based frame indices (ED <= ES once swapped), or None when absent.
    values: every ``Key: value`` pair as read.
    """

    ed: int | None
    es: int | None
    quality: str | None
    values: dict[str, str]


def load(
    root: str | Path,
    *,
    site: str,
    views: Iterable[str] = ("4CH",),
    use_half_sequence: bool = False,
) -> list[Sample]:
    """Load a CAMUS NIfTI tree; one :class:`Sample` per annotated frame.

    views: any of "2CH", "4CH" (default only "4CH").
    use_half_sequence: False gives the ED and ES frames (``frame`` = their 0-based index in the
        half sequence); True gives every half-sequence frame with its mask, ``frame`` its
        0-based index and ``phase`` ED/ES on the cfg's ED/ES frames, None elsewhere.
    """
    root = Path(root)
    wanted = check_views(views)
    image_root = root / IMAGE_DIR
    if not image_root.is_dir():
        raise DataError(root, f"no {IMAGE_DIR}/ folder: not a CAMUS NIfTI tree")
    patients = sorted(p.name for p in image_root.iterdir() if p.is_dir() and p.name[0] != ".")
    splits = _read_splits(root, patients)
    full = FullGroundTruth(root)
    samples: list[Sample] = []
    for patient in patients:
        for view in wanted:
            context = _ViewContext(site, patient, view, splits[patient], image_root / patient, full)
            if use_half_sequence:
                samples.extend(_load_half_sequence(context))
            else:
                samples.extend(_load_ed_es(context))
    return samples


def write(
    root: str | Path,
    recordings: Sequence[Recording],
    *,
    labelled: LabelledSet | None = None,
) -> Path:
    """Write recordings as a CAMUS NIfTI tree under ``root``; returns ``root``.

    Per recording: ``Info_<view>.cfg``, the ED and ES frames with their masks, and the half
    sequence: the frames from ED to ES (stepping backwards in time when the recording's ES
    precedes its ED, so that the written sequence always runs ED -> ES with ED = 1,
    ES = NbFrame). Split lists come from ``Recording.split`` (all views of a patient must
    agree); spacing goes to the NIfTI header. CAMUS carries all three structures, so
    ``labelled`` must be None or {LV, MYO, LA}. The full label maps go to the site's
    full-ground-truth file (keys ``<patient>_<view>_ED|ES`` and ``..._f<i>`` for the other
    half-sequence frames).
    """
    root = Path(root)
    check_labelled(labelled, LABELLED, FORMAT_NAME)
    splits = patient_splits(recordings, VIEWS)
    image_root = root / IMAGE_DIR
    full_maps: dict[str, np.ndarray] = {}
    for rec in recordings:
        folder = image_root / rec.case_id
        folder.mkdir(parents=True, exist_ok=True)
        order = half_sequence_order(rec)
        write_cfg(folder / f"Info_{rec.view}.cfg", _cfg_values(rec, len(order)))
        stem = f"{rec.case_id}_{rec.view}"
        for phase, index in (("ED", rec.ed), ("ES", rec.es)):
            write_nifti(folder / f"{stem}_{phase}.nii.gz", rec.frames[index], rec.spacing_mm)
            write_nifti(folder / f"{stem}_{phase}_gt.nii.gz", rec.labels[index], rec.spacing_mm)
        write_nifti(folder / f"{stem}_half_sequence.nii.gz", rec.frames[order], rec.spacing_mm)
        write_nifti(folder / f"{stem}_half_sequence_gt.nii.gz", rec.labels[order], rec.spacing_mm)
        for i, index in enumerate(order):
            phase = "ED" if i == 0 else "ES" if i == len(order) - 1 else None
            full_maps[sample_key(rec.case_id, rec.view, phase, i)] = rec.labels[index]
    write_split_lists({s: root / SPLIT_DIR / name for s, name in SPLIT_FILES.items()}, splits)
    write_full_ground_truth(root, full_maps)
    return root


# ---------------------------------------------------------------- shared with camus_legacy


def read_cfg(path: Path) -> dict[str, str]:
    """``Key: value`` lines of a CAMUS ``Info_<view>.cfg`` (blank lines skipped).

    A missing file, or a line without a colon or with an empty key, raises :class:`DataError`
    naming the file and the line number.
    """
    if not path.is_file():
        raise DataError(path, "missing cfg file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"unreadable cfg file ({exc})") from exc
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise DataError(path, f"line {number}: expected 'Key: value', got {line.strip()!r}")
        values[key.strip()] = value.strip()
    return values


def cfg_int(values: dict[str, str], key: str, path: Path) -> int | None:
    """Integer value of ``key`` (None when absent); a non-integer raises DataError."""
    if key not in values:
        return None
    text = values[key]
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not np.isfinite(number) or number != int(number):
        raise DataError(path, f"{key}: expected an integer, got {text!r}")
    return int(number)


def camus_info(path: Path) -> CamusInfo:
    """Read a cfg file; ED > ES is swapped with a warning naming the file."""
    values = read_cfg(path)
    ed, es = cfg_int(values, "ED", path), cfg_int(values, "ES", path)
    if ed is not None and es is not None and ed > es:
        warnings.warn(
            f"{path}: ED ({ed}) > ES ({es}); swapping them (a known CAMUS annotation slip)",
            UserWarning,
            stacklevel=3,
        )
        ed, es = es, ed
    return CamusInfo(ed=ed, es=es, quality=values.get("ImageQuality") or None, values=values)


def check_views(views: Iterable[str]) -> tuple[str, ...]:
    """Validate the ``views`` loader option (a subset of 2CH, 4CH; order kept, no repeats)."""
    if isinstance(views, str):
        views = (views,)
    wanted = tuple(dict.fromkeys(str(v).upper() for v in views))
    bad = [v for v in wanted if v not in VIEWS]
    if not wanted or bad:
        raise OptionError("views", f"must be a non-empty subset of {VIEWS}, got {tuple(views)}")
    return wanted


def check_labelled(labelled: LabelledSet | None, fixed: LabelledSet, format_name: str) -> None:
    """Formats with a fixed labelled set accept only None or that set."""
    if labelled is not None and frozenset(labelled) != fixed:
        raise ValueError(
            f"{format_name} always carries {format_labelled_set(fixed)}; "
            f"got labelled={format_labelled_set(labelled)}"
        )


def patient_splits(recordings: Sequence[Recording], views: Sequence[str]) -> dict[str, Split]:
    """Split of each patient; checks views, unique (patient, view) and one split per patient."""
    splits: dict[str, Split] = {}
    seen: set[tuple[str, str]] = set()
    for rec in recordings:
        if rec.view not in views:
            raise ValueError(f"{rec.case_id}: view {rec.view!r} is not one of {tuple(views)}")
        if (rec.case_id, rec.view) in seen:
            raise ValueError(f"{rec.case_id}: two recordings of view {rec.view}")
        seen.add((rec.case_id, rec.view))
        if splits.setdefault(rec.case_id, rec.split) != rec.split:
            raise ValueError(f"{rec.case_id}: recordings disagree on the split")
    return splits


def lv_volumes_ml(rec: Recording) -> tuple[float, float] | None:
    """(EDV, ESV) in ml by the method of disks on the full labels, None if the LV is untraceable."""
    try:
        edv = disk_volume_ml(trace_lv(rec.labels[rec.ed]), rec.spacing_mm)
        esv = disk_volume_ml(trace_lv(rec.labels[rec.es]), rec.spacing_mm)
    except ValueError:
        return None
    return edv, esv


def ef_percent(rec: Recording, volumes: tuple[float, float] | None) -> float | None:
    """Ejection fraction: ``info["ef"]`` when given, else from the volumes."""
    if "ef" in rec.info:
        return float(rec.info["ef"])
    if volumes is None or volumes[0] <= 0:
        return None
    return 100.0 * (volumes[0] - volumes[1]) / volumes[0]


def write_cfg(path: Path, values: dict[str, str]) -> None:
    """Write ``Key: value`` lines in the given order."""
    path.write_text("".join(f"{k}: {v}\n" for k, v in values.items()), encoding="utf-8")


def cfg_extra(rec: Recording) -> dict[str, str]:
    """Sex / Age / ImageQuality cfg lines from ``Recording.info`` (omitted when unknown)."""
    extra: dict[str, str] = {}
    for key, name in (("sex", "Sex"), ("age", "Age"), ("quality", "ImageQuality")):
        if key in rec.info:
            extra[name] = rec.info[key]
    return extra


# ---------------------------------------------------------------- NIfTI files


def read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """Array in (H, W) or (T, H, W) order and ``spacing_mm`` (row, column) of a NIfTI file."""
    if not path.is_file():
        raise DataError(path, "missing NIfTI file")
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj)
        zooms = tuple(float(z) for z in image.header.get_zooms())
    except Exception as exc:  # nibabel, gzip and zlib raise many types
        raise DataError(path, f"unreadable NIfTI file ({exc})") from exc
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim not in (2, 3) or len(zooms) < 2:
        raise DataError(path, f"expected a 2-D or 3-D image, got shape {data.shape}")
    return np.ascontiguousarray(data.T), (zooms[1], zooms[0])


def write_nifti(path: Path, array: np.ndarray, spacing_mm: tuple[float, float]) -> None:
    """Write (H, W) or (T, H, W) uint8 in nibabel order (W, H[, T]) with the pixel spacing."""
    row, col = (float(s) for s in spacing_mm)
    data = np.asarray(array, dtype=np.uint8).T
    image = nib.Nifti1Image(data, np.diag([col, row, 1.0, 1.0]))
    image.header.set_data_dtype(np.uint8)
    image.header.set_zooms((col, row) + ((1.0,) if data.ndim == 3 else ()))
    nib.save(image, str(path))


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class _ViewContext:
    site: str
    patient: str
    view: str
    split: Split
    folder: Path
    full: FullGroundTruth

    @property
    def stem(self) -> str:
        return f"{self.patient}_{self.view}"


def _read_splits(root: Path, patients: list[str]) -> dict[str, Split]:
    files = {s: root / SPLIT_DIR / name for s, name in SPLIT_FILES.items()}
    if not any(p.is_file() for p in files.values()):
        return {p: hash_split(p) for p in patients}
    return read_split_lists(files, patients)


def _load_ed_es(ctx: _ViewContext) -> list[Sample]:
    info = camus_info(ctx.folder / f"Info_{ctx.view}.cfg")
    samples = []
    phases: list[tuple[Phase, int | None]] = [("ED", info.ed), ("ES", info.es)]
    for phase, index in phases:
        image_path = ctx.folder / f"{ctx.stem}_{phase}.nii.gz"
        mask_path = ctx.folder / f"{ctx.stem}_{phase}_gt.nii.gz"
        _require_pair(image_path, mask_path)
        image, spacing = read_nifti(image_path)
        mask, _ = read_nifti(mask_path)
        frame = None if index is None else index - 1
        samples.append(_sample(ctx, image, mask, phase, frame, spacing, info, mask_path))
    return samples


def _load_half_sequence(ctx: _ViewContext) -> list[Sample]:
    cfg_path = ctx.folder / f"Info_{ctx.view}.cfg"
    info = camus_info(cfg_path)
    image_path = ctx.folder / f"{ctx.stem}_half_sequence.nii.gz"
    mask_path = ctx.folder / f"{ctx.stem}_half_sequence_gt.nii.gz"
    _require_pair(image_path, mask_path)
    images, spacing = read_nifti(image_path)
    masks, _ = read_nifti(mask_path)
    for path, array in ((image_path, images), (mask_path, masks)):
        if array.ndim != 3:
            raise DataError(path, f"a half sequence must be 3-D (W, H, T), got {array.shape}")
    if images.shape != masks.shape:
        raise DataError(
            mask_path, f"image/mask shape mismatch: image {images.shape}, mask {masks.shape}"
        )
    n = images.shape[0]
    if info.ed is None or info.es is None:
        raise DataError(cfg_path, "ED and ES are required to label the half sequence")
    if not (1 <= info.ed <= n and 1 <= info.es <= n):
        raise DataError(
            cfg_path, f"ED {info.ed} / ES {info.es} outside the half sequence's {n} frames"
        )
    phases: dict[int, Phase] = {info.ed - 1: "ED", info.es - 1: "ES"}
    return [
        _sample(ctx, images[t], masks[t], phases.get(t), t, spacing, info, mask_path)
        for t in range(n)
    ]


def _require_pair(image_path: Path, mask_path: Path) -> None:
    if not image_path.is_file():
        raise DataError(image_path, "missing image file")
    if not mask_path.is_file():
        raise DataError(mask_path, f"missing ground-truth mask for image {image_path.name}")


def _sample(
    ctx: _ViewContext,
    image: np.ndarray,
    mask: np.ndarray,
    phase: Phase | None,
    frame: int | None,
    spacing: tuple[float, float],
    info: CamusInfo,
    mask_path: Path,
) -> Sample:
    extra = {k.lower(): v for k, v in info.values.items() if k in ("Sex", "Age", "EF")}
    meta = SampleMeta(
        site=ctx.site,
        case_id=ctx.patient,
        view=ctx.view,
        phase=phase,
        spacing_mm=spacing,
        split=ctx.split,
        frame=frame,
        quality=info.quality,
        source=str(mask_path),
        extra=extra,
    )
    key = sample_key(ctx.patient, ctx.view, phase, frame)
    return make_sample(image, mask, LABELLED, meta, full_mask=ctx.full.get(key), source=mask_path)


# ---------------------------------------------------------------- writing


def half_sequence_order(rec: Recording) -> list[int]:
    """Recording frame indices of the half sequence: ED, ..., ES (inclusive)."""
    step = 1 if rec.es > rec.ed else -1
    return list(range(rec.ed, rec.es + step, step))


def _cfg_values(rec: Recording, n_frames: int) -> dict[str, str]:
    values = {"ED": "1", "ES": str(n_frames), "NbFrame": str(n_frames)}
    values.update(cfg_extra(rec))
    ef = ef_percent(rec, lv_volumes_ml(rec))
    if ef is not None:
        values["EF"] = f"{ef:.1f}"
    values["FrameRate"] = f"{rec.fps:g}"
    return values
