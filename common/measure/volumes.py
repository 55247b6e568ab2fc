"""Cardiac volumes and ejection fraction from segmentation masks (apical views).

- LV volume, single plane: the method of disks (Simpson's rule; Lang et al., ASE/EACVI chamber
  quantification 2015): 20 disks of equal height perpendicular to the long axis (apex and
  mitral-plane midpoint as :func:`common.data.formats.lv_tracing.trace_lv` finds them), each
  diameter measured at the disk's middle, ``V = sum(pi / 4 * d_i^2) * L / 20``.
- LV volume, biplane (A4C + A2C of the same patient): ``V = sum(pi / 4 * a_i * b_i) * L / 20``
  with the i-th diameters of both views and ``L`` the longer of the two long axes.
- LA volume, single plane: area-length, ``V = 8 A^2 / (3 pi L)``.
- EF = 100 (EDV - ESV) / EDV.

Masks are first resampled to square pixels (nearest neighbour, the finer of the two spacings),
so the disks are perpendicular to the long axis in millimetres, not in pixels. Every length is
in mm, every area in mm^2 (reported in cm^2), every volume in ml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from common.data.formats.lv_tracing import N_CHORDS, trace_lv
from common.labels import Structure


def isotropic(labels: np.ndarray, spacing_mm: tuple[float, float]) -> tuple[np.ndarray, float]:
    """``labels`` (H, W) resampled to square pixels of the finer spacing; (labels, mm/pixel)."""
    dy, dx = float(spacing_mm[0]), float(spacing_mm[1])
    if dy <= 0 or dx <= 0 or not (math.isfinite(dy) and math.isfinite(dx)):
        raise ValueError(f"pixel spacing must be positive, got {spacing_mm}")
    step = min(dy, dx)
    if math.isclose(dy, dx, rel_tol=1e-6):
        return np.asarray(labels), step
    zoom = (dy / step, dx / step)
    return ndimage.zoom(np.asarray(labels), zoom, order=0, mode="nearest", grid_mode=True), step


@dataclass(frozen=True)
class LvTrace:
    """One frame's LV in mm: long-axis length and the disk diameters (base to apex)."""

    length_mm: float
    diameters_mm: np.ndarray
    area_mm2: float

    @property
    def volume_ml(self) -> float:
        n = len(self.diameters_mm)
        return float(np.sum(np.pi / 4.0 * self.diameters_mm**2) * self.length_mm / n / 1000.0)


def trace(labels: np.ndarray, spacing_mm: tuple[float, float], n_disks: int = N_CHORDS) -> LvTrace:
    """The LV of one label map (label 1) as ``n_disks`` disks of equal height along the long
    axis (apex and mitral-plane midpoint as :func:`trace_lv` finds them), each disk's diameter
    measured at its middle, edge to edge of the LV pixels; ``ValueError`` without an LV."""
    square, step = isotropic(labels, spacing_mm)
    rows = trace_lv(square, n_disks)
    apex, base = rows[0, :2], rows[0, 2:]
    axis = (base - apex) / np.linalg.norm(base - apex)
    normal = np.array([-axis[1], axis[0]])
    rr, cc = np.nonzero(square == Structure.LV)
    points = np.column_stack([cc, rr]).astype(float) - apex
    along, across = points @ axis, points @ normal
    start, extent = along.min() - 0.5, along.max() - along.min() + 1.0  # pixel edges
    diameters = np.empty(n_disks)
    for k in range(n_disks):
        t = start + (k + 0.5) * extent / n_disks
        near = np.abs(along - t) <= 0.5
        if not near.any():
            near = np.abs(along - t) <= np.abs(along - t).min() + 1e-9
        diameters[k] = across[near].max() - across[near].min() + 1.0
    area = float((np.asarray(labels) == Structure.LV).sum()) * spacing_mm[0] * spacing_mm[1]
    return LvTrace(extent * step, diameters * step, area)


def biplane_volume_ml(four: LvTrace, two: LvTrace) -> float:
    """Biplane method of disks from the A4C and A2C traces of one phase."""
    if len(four.diameters_mm) != len(two.diameters_mm):
        raise ValueError("biplane disks need the same number of disks in both views")
    length = max(four.length_mm, two.length_mm)
    n = len(four.diameters_mm)
    return float(np.sum(np.pi / 4.0 * four.diameters_mm * two.diameters_mm) * length / n / 1000.0)


def area_length_ml(area_mm2: float, length_mm: float) -> float:
    """Single-plane area-length volume ``8 A^2 / (3 pi L)`` in ml (A in mm^2, L in mm)."""
    if length_mm <= 0:
        raise ValueError(f"length must be positive, got {length_mm}")
    return 8.0 * area_mm2**2 / (3.0 * math.pi * length_mm) / 1000.0


def la_volume_ml(labels: np.ndarray, spacing_mm: tuple[float, float]) -> tuple[float, float]:
    """(LA area in mm^2, LA volume in ml by area-length) of one label map; the length is the
    LA's longest extent along its principal axis. ``ValueError`` without an LA."""
    square, step = isotropic(labels, spacing_mm)
    la = square == Structure.LA
    if la.sum() < 2:
        raise ValueError("no left atrium in the mask")
    rr, cc = np.nonzero(la)
    points = np.column_stack([cc, rr]).astype(float)
    centred = points - points.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov(centred.T))
    along = centred @ vectors[:, -1]
    length = (along.max() - along.min() + 1.0) * step  # pixel centres -> pixel edges
    area = float(la.sum()) * step * step
    return area, area_length_ml(area, float(length))


def ejection_fraction(edv_ml: float, esv_ml: float) -> float:
    """EF in percent; ``ValueError`` for a non-positive end-diastolic volume."""
    if edv_ml <= 0:
        raise ValueError(f"end-diastolic volume must be positive, got {edv_ml}")
    return 100.0 * (edv_ml - esv_ml) / edv_ml


def ed_es_frames(lv_areas: np.ndarray) -> tuple[int, int]:
    """End-diastole and end-systole from the LV area curve of one clip: the frames of the
    largest and of the smallest LV area (frames without an LV, area 0, are not candidates).
    ``ValueError`` when fewer than two frames show an LV."""
    areas = np.asarray(lv_areas, dtype=float)
    present = np.flatnonzero(areas > 0)
    if len(present) < 2:
        raise ValueError(
            f"ED/ES not found: the LV is visible in {len(present)} of {len(areas)} frame(s)"
        )
    ed = int(present[np.argmax(areas[present])])
    es = int(present[np.argmin(areas[present])])
    if ed == es:  # pragma: no cover - only with two equal areas, then argmax == argmin
        raise ValueError("ED/ES not found: the LV area does not change over the clip")
    return ed, es


def lv_components(labels: np.ndarray) -> int:
    """Connected components (4-connected) of the LV in one label map."""
    _, n = ndimage.label(np.asarray(labels) == Structure.LV)
    return int(n)


def chambers(labels: np.ndarray) -> np.ndarray:
    """``labels`` (H, W) with the LV and the LA each reduced to its largest 4-connected piece
    (smaller pieces become background): the chamber a clinician traces. A segmentation's stray
    islands (a few pixels of "LV" in the right ventricle) would otherwise set the long axis
    across both pieces and make the volume meaningless."""
    out = np.array(labels, copy=True)
    for structure in (Structure.LV, Structure.LA):
        pieces, n = ndimage.label(out == structure)
        if n > 1:
            sizes = np.bincount(pieces.ravel())[1:]
            out[(pieces > 0) & (pieces != 1 + int(np.argmax(sizes)))] = 0
    return out
