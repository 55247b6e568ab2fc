"""Label maps from the anatomy: exact, or re-drawn the way a human tracer would.

Labels follow the CAMUS convention (0 bg, 1 LV, 2 MYO, 3 LA): the LV cavity is closed by the
straight mitral line and includes papillary muscles and trabeculae; the MYO band is open at the
mitral plane; the LA is closed by the same mitral line. Pixels outside the sector are 0.

*Annotation style*: a tracer's contour deviates smoothly from the true border (a few mm, low
spatial frequency). With ``jitter_mm > 0`` the endocardium (shared by LV and MYO), the
epicardium and the LA are displaced along their normals by smooth random offsets of standard
deviation ``jitter_mm`` (x1.2 for the epicardium, x1.5 for the LA); the annulus points stay where
they are (tracers anchor on them), so LV, MYO and LA still meet along the mitral line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.data.synthetic.anatomy import HeartShape
from common.data.synthetic.geometry import SectorGeometry, sector_mask
from common.data.synthetic.polygons import (
    densify,
    fill_polygon,
    normals,
    outward_sign_of,
    smooth_bump,
)
from common.labels import Structure

# Tracers agree less on the epicardium (its outer border fades into the pericardium) and much
# less on the LA (far from the probe, open to the pulmonary veins) than on the endocardium.
EPI_FACTOR = 1.2
LA_FACTOR = 1.5


@dataclass(frozen=True)
class LabelContours:
    """Closed label polygons in scan-plane mm: LV cavity, epicardium (MYO + cavity), LA."""

    lv: np.ndarray
    epi: np.ndarray
    la: np.ndarray


def exact_contours(shape: HeartShape) -> LabelContours:
    """The rendered anatomy's own borders."""
    return LabelContours(lv=shape.lv, epi=shape.epi, la=shape.la)


def traced_contours(shape: HeartShape, rng: np.random.Generator, jitter_mm: float) -> LabelContours:
    """Borders as a tracer draws them: smooth normal displacement of std ``jitter_mm`` (mm)."""
    if jitter_mm <= 0:
        return exact_contours(shape)
    endo = densify(shape.endo_open, 1.0)
    epi = densify(shape.epi_open, 1.0)
    la = densify(shape.la, 1.0)  # open: the mitral line is the implicit closing edge
    return LabelContours(
        lv=_displace(endo, rng, jitter_mm, anchored=True, closed_for_sign=endo),
        epi=_displace(epi, rng, EPI_FACTOR * jitter_mm, anchored=False, closed_for_sign=epi),
        la=_displace(la, rng, LA_FACTOR * jitter_mm, anchored=True, closed_for_sign=la),
    )


def _displace(
    curve: np.ndarray,
    rng: np.random.Generator,
    sigma: float,
    anchored: bool,
    closed_for_sign: np.ndarray,
) -> np.ndarray:
    n = len(curve)
    # Open profile: the curve's two ends are the annulus points (LV, LA) or the base ends (MYO).
    bump = smooth_bump(n, rng, sigma, n_harmonics=6)
    if anchored:
        s = np.linspace(0.0, 1.0, n)
        bump = bump * np.sin(np.pi * s) ** 0.5
    return curve + normals(curve, False, outward_sign_of(closed_for_sign)) * bump[:, None]


def rasterise_labels(
    contours: LabelContours, geometry: SectorGeometry, size: tuple[int, int]
) -> np.ndarray:
    """uint8 ``(H, W)`` label map: LA, then MYO (epicardium), then LV painted over; 0 outside."""
    labels = np.zeros(size, np.uint8)
    for poly, value in (
        (contours.la, Structure.LA),
        (contours.epi, Structure.MYO),
        (contours.lv, Structure.LV),
    ):
        fill_polygon(labels, geometry.to_pixels(densify(poly, 0.5, closed=True), size), int(value))
    labels[~sector_mask(geometry, size)] = 0
    return labels
