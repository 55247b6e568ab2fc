"""EchoNet-style LV tracings: a long axis plus chords perpendicular to it.

A tracing is a float array (N + 1, 4) of rows ``(X1, Y1, X2, Y2)`` in pixel coordinates
(X = column, Y = row, origin at the centre of the top-left pixel). Row 0 is the long axis from
the apex ``(X1, Y1)`` to the mitral-plane midpoint ``(X2, Y2)``; rows 1..N are chords
perpendicular to it, from the mitral plane (row 1) to the apex (row N), with ``(X1, Y1)`` on one
side of the LV contour and ``(X2, Y2)`` on the other.

:func:`tracing_mask` is the official EchoNet-Dynamic rasterisation; :func:`trace_lv` derives a
tracing from a label map such that this rasterisation reproduces the LV (Dice ~0.98 at 112x112);
:func:`disk_volume_ml` is the single-plane method of disks (Simpson's rule).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.draw import polygon

from common.labels import Structure

N_CHORDS = 20
_CROSS = ndimage.generate_binary_structure(2, 1)


def tracing_mask(rows: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """LV mask (bool (H, W)) of one traced frame by the official EchoNet-Dynamic rule.

    Drop row 0 (the long axis); the polygon is the (X1, Y1) points in order followed by the
    (X2, Y2) points in reverse; vertices are rounded to integers and the polygon is filled with
    scikit-image (rows = Y, columns = X), clipped to ``shape``.
    """
    rows = np.asarray(rows, dtype=float)
    if rows.ndim != 2 or rows.shape[1] != 4 or rows.shape[0] < 3:
        raise ValueError(f"a tracing needs at least 3 rows of (X1, Y1, X2, Y2), got {rows.shape}")
    x1, y1, x2, y2 = rows[1:].T
    xs = np.concatenate([x1, x2[::-1]])
    ys = np.concatenate([y1, y2[::-1]])
    rr, cc = polygon(np.rint(ys).astype(int), np.rint(xs).astype(int), shape)
    mask = np.zeros(shape, dtype=bool)
    mask[rr, cc] = True
    return mask


def trace_lv(labels: np.ndarray, n_chords: int = N_CHORDS) -> np.ndarray:
    """Tracing (n_chords + 1, 4) of the LV (label 1) of a uint8 (H, W) label map.

    The mitral-plane midpoint is the mean of the LV border pixels that touch neither LV nor
    myocardium (the opening of the myocardium ring towards the atrium); without a usable
    opening (no MYO label) it is the basal end of the LV's principal axis, the base being the
    end lower in the image (apex at the top, as in apical views). The apex is the LV pixel
    farthest from that midpoint. Chords are spaced evenly along the axis from the most basal
    to the most apical LV pixel; each joins the outermost LV pixel centres on either side
    within half a pixel of the chord, so that the official rule covers those pixels.
    Raises ``ValueError`` when the LV is missing or a single point.
    """
    lv = np.asarray(labels) == Structure.LV
    if not lv.any():
        raise ValueError("cannot trace the LV: the label map has no LV pixel")
    rr, cc = np.nonzero(lv)
    points = np.column_stack([cc, rr]).astype(float)
    base = _mitral_midpoint(np.asarray(labels), lv)
    if base is None:
        base = _principal_base(points)
    apex = points[np.argmax(np.linalg.norm(points - base, axis=1))]
    length = float(np.linalg.norm(base - apex))
    if length < 1e-6:
        raise ValueError("cannot trace the LV: it is a single point")
    axis = (base - apex) / length
    normal = np.array([-axis[1], axis[0]])
    along = (points - apex) @ axis
    across = (points - apex) @ normal
    rows = [np.concatenate([apex, apex + axis * along.max()])]
    for t in np.linspace(along.max(), along.min(), n_chords):
        near = np.abs(along - t) <= 0.5
        if not near.any():
            near = np.abs(along - t) <= np.abs(along - t).min() + 1e-9
        centre = apex + axis * t
        side1 = centre + normal * across[near].min()
        side2 = centre + normal * across[near].max()
        rows.append(np.concatenate([side1, side2]))
    return np.asarray(rows)


def disk_volume_ml(rows: np.ndarray, spacing_mm: tuple[float, float]) -> float:
    """Single-plane method-of-disks LV volume in millilitres.

    Each chord is the diameter of a disk of height L / N (L = long-axis length, N = chord count):
    ``V = sum(pi / 4 * d_i**2) * L / N``; pixel offsets become millimetres with
    ``spacing_mm = (row, column)``.
    """
    rows = np.asarray(rows, dtype=float)
    scale = np.array([spacing_mm[1], spacing_mm[0]])  # (x, y) per pixel in mm

    def mm(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.linalg.norm((q - p) * scale, axis=-1)

    length = float(mm(rows[0, :2], rows[0, 2:]))
    diameters = mm(rows[1:, :2], rows[1:, 2:])
    n = len(diameters)
    return float(np.sum(np.pi / 4.0 * diameters**2) * length / n / 1000.0)


def _mitral_midpoint(labels: np.ndarray, lv: np.ndarray) -> np.ndarray | None:
    """(x, y) mean of the LV border pixels facing neither LV nor MYO, or None if not usable."""
    border = lv & ndimage.binary_dilation(~lv, _CROSS)
    opening = lv & ndimage.binary_dilation(~lv & (labels != Structure.MYO), _CROSS)
    n_open = int(opening.sum())
    # No MYO at all makes the whole border an "opening": fall back to the principal axis then.
    if n_open == 0 or n_open > 0.5 * int(border.sum()):
        return None
    rr, cc = np.nonzero(opening)
    return np.array([cc.mean(), rr.mean()])


def _principal_base(points: np.ndarray) -> np.ndarray:
    """(x, y) midpoint of the basal end (lower in the image) of the principal axis."""
    centroid = points.mean(axis=0)
    if len(points) < 2:
        return centroid
    _, vectors = np.linalg.eigh(np.cov((points - centroid).T))
    axis = vectors[:, -1]
    if axis[1] < 0:
        axis = -axis
    along = (points - centroid) @ axis
    return points[along >= along.max() - 1.0].mean(axis=0)
