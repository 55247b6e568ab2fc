"""The one sample type every dataset loader yields and every training path consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from common.errors import DataError
from common.labels import (
    BACKGROUND,
    LabelledSet,
    Structure,
    format_labelled_set,
    invalid_label_values,
)

Phase = Literal["ED", "ES"]
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class SampleMeta:
    """Where a sample comes from and how it was acquired.

    ``spacing_mm`` is the physical size of one pixel as (row, column) in millimetres, in the
    native image (before any resizing). ``phase`` is None for frames that are neither ED nor ES.
    ``source`` is the local file the sample was read from: for error messages on the site only,
    never sent to the coordinator.
    """

    site: str
    case_id: str
    view: str = "4CH"
    phase: Phase | None = None
    spacing_mm: tuple[float, float] | None = None
    split: Split = "train"
    frame: int | None = None
    quality: str | None = None
    source: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One annotated 2-D echo frame.

    image: float32 (H, W), native intensities (no normalisation yet).
    mask: uint8 (H, W), values in {0, 1, 2, 3}; only structures in ``labelled`` may appear.
    labelled: the structures this mask annotates; a pixel of any other structure is unknown
        and reads as background.
    full_mask: uint8 (H, W) with every structure, where the full ground truth exists (synthetic
        data); for evaluation only, never for training.
    """

    image: np.ndarray
    mask: np.ndarray
    labelled: LabelledSet
    meta: SampleMeta
    full_mask: np.ndarray | None = None


def make_sample(
    image: np.ndarray,
    mask: np.ndarray,
    labelled: LabelledSet,
    meta: SampleMeta,
    *,
    full_mask: np.ndarray | None = None,
    source: str | Path | None = None,
) -> Sample:
    """Build a :class:`Sample`, checking it; a problem raises :class:`DataError` naming ``source``.

    Checks: 2-D image and mask of the same shape, finite image, mask values in the schema,
    no annotated pixel of a structure outside ``labelled``, same for ``full_mask``.
    """
    where = source if source is not None else meta.source
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 2:
        raise DataError(where, f"image must be 2-D (H, W), got shape {image.shape}")
    if mask.ndim != 2:
        raise DataError(where, f"mask must be 2-D (H, W), got shape {mask.shape}")
    if image.shape != mask.shape:
        raise DataError(where, f"image/mask shape mismatch: image {image.shape}, mask {mask.shape}")
    if not np.issubdtype(image.dtype, np.number):
        raise DataError(where, f"image has non-numeric dtype {image.dtype}")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise DataError(where, "image contains NaN or infinite values")
    mask = _checked_mask(mask, where, "mask")
    present = {int(v) for v in np.unique(mask)} - {BACKGROUND}
    stray = sorted(Structure(v).name for v in present if Structure(v) not in labelled)
    if stray:
        raise DataError(
            where,
            f"mask annotates {', '.join(stray)} but the labelled set is "
            f"{format_labelled_set(labelled)}",
        )
    if full_mask is not None:
        full_mask = _checked_mask(np.asarray(full_mask), where, "full ground-truth mask")
        if full_mask.shape != mask.shape:
            raise DataError(
                where, f"full ground truth shape {full_mask.shape} != mask shape {mask.shape}"
            )
    if source is not None and meta.source is None:
        meta = SampleMeta(**{**meta.__dict__, "source": str(source)})
    return Sample(
        image=image, mask=mask, labelled=frozenset(labelled), meta=meta, full_mask=full_mask
    )


def _checked_mask(mask: np.ndarray, where: str | Path | None, what: str) -> np.ndarray:
    if mask.dtype.kind == "f":
        if not np.isfinite(mask).all() or not np.array_equal(mask, np.round(mask)):
            raise DataError(where, f"{what} has non-integer values; label maps must be integers")
    elif mask.dtype.kind not in "iub":
        raise DataError(where, f"{what} has non-numeric dtype {mask.dtype}")
    bad = invalid_label_values(mask)
    if bad:
        shown = ", ".join(str(v) for v in bad[:8])
        raise DataError(
            where,
            f"{what} has label value(s) {shown} outside the schema "
            "(0 background, 1 LV, 2 MYO, 3 LA)",
        )
    return mask.astype(np.uint8, copy=False)
