"""CAMUS, legacy release (2019, MetaImage ``.mhd`` + ``.raw``): loader and writer.

Layout under the dataset root::

    training/<patient>/<patient>_<view>_<ED|ES>.mhd (+ .raw)    image
    training/<patient>/<patient>_<view>_<ED|ES>_gt.mhd (+ .raw) mask (0 bg, 1 LV, 2 MYO, 3 LA)
    training/<patient>/<patient>_<view>_sequence.mhd (+ .raw)   ED -> ES half cycle, no mask
    training/<patient>/Info_<view>.cfg                          ED, ES, NbFrame, Sex, Age,
                                                               ImageQuality, LVedv, LVesv, LVef
    listSubGroups/subGroup<k>_<training|validation|testing>.txt  k = 1..10 (official 10 folds)

- SimpleITK reads single frames as (1, H, W); the spacing it reports is (x, y[, z]), giving
  ``spacing_mm = (y, x)`` (row, column) in mm.
- Only ``training/`` is read: the ``testing/`` patients of the 2019 release reuse the ids
  patient0001..0050 and had no public masks.
- The loader option ``fold`` (1..10) picks the list files that define train/val/test. When the
  ``listSubGroups`` folder is absent, each patient gets
  :func:`common.data.formats.splits.hash_split`
  of its id, fractions (0.8, 0.1, 0.1); when the folder exists, the fold's three files must
  exist and list every patient.

Fold derivation in the writer (:func:`derive_folds`): the patients are ordered testing first,
then validation, then training (each sorted by id); fold ``k`` rotates that order left by
``floor((k - 1) * n / 10)`` places and cuts it into as many testing, validation and training
patients as the recordings' own split has. Fold 1 is therefore exactly the recordings' split,
every fold is a partition of the patients, and with a 10 % test share the ten test sets tile the
patients as in a real 10-fold cross-validation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from common.data.formats.camus_nifti import (
    LABELLED,
    VIEWS,
    CamusInfo,
    camus_info,
    cfg_extra,
    check_labelled,
    check_views,
    ef_percent,
    half_sequence_order,
    lv_volumes_ml,
    patient_splits,
    write_cfg,
)
from common.data.formats.full_ground_truth import (
    FullGroundTruth,
    sample_key,
    write_full_ground_truth,
)
from common.data.formats.recording import Recording
from common.data.formats.splits import hash_split, read_split_lists, write_split_lists
from common.data.sample import Phase, Sample, SampleMeta, Split, make_sample
from common.errors import DataError, OptionError
from common.labels import LabelledSet

FORMAT_NAME = "camus-mhd"
N_FOLDS = 10
PATIENT_DIR = "training"
SPLIT_DIR = "listSubGroups"
SPLIT_SUFFIXES: dict[Split, str] = {"train": "training", "val": "validation", "test": "testing"}


def load(
    root: str | Path,
    *,
    site: str,
    views: Iterable[str] = ("4CH",),
    fold: int = 1,
) -> list[Sample]:
    """Load the ED and ES frames of a legacy CAMUS tree; one :class:`Sample` per frame.

    views: any of "2CH", "4CH" (default only "4CH").
    fold: 1..10, which ``listSubGroups`` files define the split.
    ``frame`` is the 0-based index of the frame in the ``_sequence`` file (cfg ED/ES - 1).
    """
    root = Path(root)
    wanted = check_views(views)
    _check_fold(fold)
    patient_root = root / PATIENT_DIR
    if not patient_root.is_dir():
        raise DataError(root, f"no {PATIENT_DIR}/ folder: not a legacy CAMUS tree")
    patients = sorted(p.name for p in patient_root.iterdir() if p.is_dir() and p.name[0] != ".")
    splits = _read_splits(root, patients, fold)
    full = FullGroundTruth(root)
    samples: list[Sample] = []
    for patient in patients:
        for view in wanted:
            folder = patient_root / patient
            info = camus_info(folder / f"Info_{view}.cfg")
            phases: list[tuple[Phase, int | None]] = [("ED", info.ed), ("ES", info.es)]
            for phase, index in phases:
                frame = None if index is None else index - 1
                stem = folder / f"{patient}_{view}_{phase}"
                meta = SampleMeta(
                    site=site,
                    case_id=patient,
                    view=view,
                    phase=phase,
                    split=splits[patient],
                    frame=frame,
                    quality=info.quality,
                    extra=_extra(info),
                )
                samples.append(_load_frame(stem, meta, full))
    return samples


def write(
    root: str | Path,
    recordings: Sequence[Recording],
    *,
    labelled: LabelledSet | None = None,
) -> Path:
    """Write recordings as a legacy CAMUS tree plus the 10 fold lists; returns ``root``.

    Per recording: the cfg, the ED/ES frames with masks and the ED -> ES ``_sequence`` (see
    :func:`common.data.formats.camus_nifti.half_sequence_order`). Folds: :func:`derive_folds` of the
    recordings' splits. ``labelled`` must be None or {LV, MYO, LA}. Full label maps of the ED/ES
    frames go to the site's full-ground-truth file.
    """
    root = Path(root)
    check_labelled(labelled, LABELLED, FORMAT_NAME)
    splits = patient_splits(recordings, VIEWS)
    full_maps: dict[str, np.ndarray] = {}
    for rec in recordings:
        folder = root / PATIENT_DIR / rec.case_id
        folder.mkdir(parents=True, exist_ok=True)
        order = half_sequence_order(rec)
        write_cfg(folder / f"Info_{rec.view}.cfg", _cfg_values(rec, len(order)))
        stem = f"{rec.case_id}_{rec.view}"
        for phase, index in (("ED", rec.ed), ("ES", rec.es)):
            write_mhd(folder / f"{stem}_{phase}.mhd", rec.frames[index], rec.spacing_mm)
            write_mhd(folder / f"{stem}_{phase}_gt.mhd", rec.labels[index], rec.spacing_mm)
            full_maps[sample_key(rec.case_id, rec.view, phase, None)] = rec.labels[index]
        write_mhd(folder / f"{stem}_sequence.mhd", rec.frames[order], rec.spacing_mm)
    for k, fold in derive_folds(splits).items():
        write_split_lists(fold_files(root, k), {c: s for s, ids in fold.items() for c in ids})
    write_full_ground_truth(root, full_maps)
    return root


def derive_folds(
    splits: Mapping[str, Split], n_folds: int = N_FOLDS
) -> dict[int, dict[Split, list[str]]]:
    """Folds 1..n_folds as {split: sorted patient ids}; fold 1 reproduces ``splits``.

    See the module docstring for the rotation rule.
    """
    groups = {s: sorted(c for c, v in splits.items() if v == s) for s in ("test", "val", "train")}
    order = groups["test"] + groups["val"] + groups["train"]
    n, n_test, n_val = len(order), len(groups["test"]), len(groups["val"])
    folds: dict[int, dict[Split, list[str]]] = {}
    for k in range(1, n_folds + 1):
        offset = ((k - 1) * n) // n_folds
        rotated = order[offset:] + order[:offset]
        folds[k] = {
            "train": sorted(rotated[n_test + n_val :]),
            "val": sorted(rotated[n_test : n_test + n_val]),
            "test": sorted(rotated[:n_test]),
        }
    return folds


def fold_files(root: Path, fold: int) -> dict[Split, Path]:
    """``listSubGroups/subGroup<fold>_<training|validation|testing>.txt`` by split."""
    return {
        s: root / SPLIT_DIR / f"subGroup{fold}_{suffix}.txt" for s, suffix in SPLIT_SUFFIXES.items()
    }


# ---------------------------------------------------------------- MetaImage files


def _sitk(path: Path):  # type: ignore[no-untyped-def]
    """SimpleITK, an optional dependency (only this legacy reader uses it)."""
    try:
        import SimpleITK
    except ImportError:
        raise DataError(
            path,
            "the legacy CAMUS format (.mhd/.raw) needs SimpleITK, which is not installed: "
            "pip install 'echofl[camus-legacy]' (or convert the dataset to the CAMUS NIfTI "
            "release, format camus-nifti)",
        ) from None
    return SimpleITK


def read_mhd(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """(H, W) array (a leading axis of length 1 dropped) and ``spacing_mm`` (row, column)."""
    if not path.is_file():
        raise DataError(path, "missing MetaImage header")
    sitk = _sitk(path)
    try:
        image = sitk.ReadImage(str(path))
        data = sitk.GetArrayFromImage(image)
        spacing = image.GetSpacing()
    except RuntimeError as exc:  # SimpleITK reports every read failure this way
        raise DataError(path, f"unreadable MetaImage ({_last_line(exc)})") from exc
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise DataError(path, f"expected a single frame (1, H, W), got shape {data.shape}")
    return data, (float(spacing[1]), float(spacing[0]))


def write_mhd(path: Path, array: np.ndarray, spacing_mm: tuple[float, float]) -> None:
    """Write uint8 (H, W) as a (1, H, W) volume, or (T, H, W), as ``.mhd`` + ``.raw``."""
    data = np.asarray(array, dtype=np.uint8)
    if data.ndim == 2:
        data = data[None]
    sitk = _sitk(path)
    image = sitk.GetImageFromArray(data)
    image.SetSpacing((float(spacing_mm[1]), float(spacing_mm[0]), 1.0))
    sitk.WriteImage(image, str(path), False)


# ---------------------------------------------------------------- helpers


def _check_fold(fold: int) -> None:
    if isinstance(fold, bool) or not isinstance(fold, int) or not 1 <= fold <= N_FOLDS:
        raise OptionError("fold", f"fold must be an integer in 1..{N_FOLDS}, got {fold!r}")


def _read_splits(root: Path, patients: list[str], fold: int) -> dict[str, Split]:
    if not (root / SPLIT_DIR).is_dir():
        return {p: hash_split(p) for p in patients}
    return read_split_lists(fold_files(root, fold), patients)


def _load_frame(stem: Path, meta: SampleMeta, full: FullGroundTruth) -> Sample:
    image_path = stem.with_name(stem.name + ".mhd")
    mask_path = stem.with_name(stem.name + "_gt.mhd")
    if not image_path.is_file():
        raise DataError(image_path, "missing image file")
    if not mask_path.is_file():
        raise DataError(mask_path, f"missing ground-truth mask for image {image_path.name}")
    image, spacing = read_mhd(image_path)
    mask, _ = read_mhd(mask_path)
    meta = SampleMeta(**{**meta.__dict__, "spacing_mm": spacing, "source": str(mask_path)})
    key = sample_key(meta.case_id, meta.view, meta.phase, meta.frame)
    return make_sample(image, mask, LABELLED, meta, full_mask=full.get(key), source=mask_path)


def _extra(info: CamusInfo) -> dict[str, str]:
    keys = {"Sex": "sex", "Age": "age", "LVedv": "edv_ml", "LVesv": "esv_ml", "LVef": "ef"}
    return {name: info.values[k] for k, name in keys.items() if k in info.values}


def _cfg_values(rec: Recording, n_frames: int) -> dict[str, str]:
    values = {"ED": "1", "ES": str(n_frames), "NbFrame": str(n_frames)}
    values.update(cfg_extra(rec))
    volumes = lv_volumes_ml(rec)
    if volumes is not None:
        values["LVedv"] = f"{volumes[0]:.6g}"
        values["LVesv"] = f"{volumes[1]:.6g}"
    ef = ef_percent(rec, volumes)
    if ef is not None:
        values["LVef"] = f"{ef:.1f}"
    return values


def _last_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
