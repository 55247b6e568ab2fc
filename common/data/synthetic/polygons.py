"""Plane-curve helpers for the synthetic anatomy: polylines and polygons as ``(N, 2)`` arrays.

Coordinates are ``(x, z)`` in millimetres (x to the image right, z = depth, downwards) unless a
function says it works in pixel/sample index space. A *polygon* is closed implicitly (the last
vertex connects to the first); an *open curve* is not.
"""

from __future__ import annotations

import cv2
import numpy as np

# Sub-pixel precision of cv2.fillPoly: vertices are fixed-point numbers with this many bits.
_SHIFT = 8
# cv2.fillPoly also paints every pixel an edge touches, which grows a filled shape by about half
# a pixel (Chebyshev). Pulling the outline in by this much (measured against an exact
# point-in-polygon rasteriser: area bias < 0.1 %) makes the fill match pixel-centre sampling.
_FILL_SHRINK_PX = 0.45


def signed_area(poly: np.ndarray) -> float:
    """Signed shoelace area of a polygon (positive when counter-clockwise in (x, z))."""
    x, z = poly[:, 0], poly[:, 1]
    # x_i z_{i+1} - x_{i+1} z_i summed; slicing instead of np.roll (this runs thousands of times)
    return 0.5 * float(np.dot(x[:-1], z[1:]) - np.dot(x[1:], z[:-1]) + x[-1] * z[0] - x[0] * z[-1])


def polygon_area(poly: np.ndarray) -> float:
    """Area of a simple polygon (mm² for mm vertices)."""
    return abs(signed_area(poly))


def curve_length(points: np.ndarray, closed: bool = False) -> float:
    """Length of a polyline (mm); ``closed`` adds the closing edge."""
    pts = np.vstack([points, points[:1]]) if closed else points
    return float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum())


def resample(points: np.ndarray, n: int, closed: bool = False) -> np.ndarray:
    """``n`` points evenly spaced by arc length along the curve (endpoints kept when open)."""
    pts = np.vstack([points, points[:1]]) if closed else points
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    total = s[-1]
    targets = np.linspace(0.0, total, n, endpoint=not closed)
    return np.stack([np.interp(targets, s, pts[:, 0]), np.interp(targets, s, pts[:, 1])], axis=1)


def densify(points: np.ndarray, max_step: float, closed: bool = False) -> np.ndarray:
    """Resample so that no edge is longer than ``max_step`` (same units as the points)."""
    n = max(int(np.ceil(curve_length(points, closed) / max_step)) + 1, 4)
    return resample(points, n, closed)


def normals(points: np.ndarray, closed: bool, outward_sign: float) -> np.ndarray:
    """Unit normals at each vertex, ``(N, 2)``.

    Central differences inside, one-sided at the ends of an open curve. The raw normal is the
    tangent rotated by -90° in (x, z); ``outward_sign`` (+1 or -1) flips it so that it points out
    of the shape (use :func:`outward_sign_of` on the closed outline).
    """
    if closed:
        d = np.empty_like(points)
        d[1:-1] = points[2:] - points[:-2]
        d[0] = points[1] - points[-1]
        d[-1] = points[0] - points[-2]
    else:
        d = np.gradient(points, axis=0)
    n = np.stack([d[:, 1], -d[:, 0]], axis=1)
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    return n * outward_sign


def outward_sign_of(closed_outline: np.ndarray) -> float:
    """Sign making :func:`normals` point outwards for a curve running like ``closed_outline``."""
    # For a counter-clockwise outline the tangent rotated by -90° points outwards.
    return 1.0 if signed_area(closed_outline) > 0 else -1.0


def offset(
    points: np.ndarray, distance: np.ndarray | float, closed: bool, sign: float
) -> np.ndarray:
    """Move every vertex by ``distance`` (scalar or per vertex, mm) along its outward normal."""
    d = np.broadcast_to(np.asarray(distance, dtype=np.float64), (len(points),))
    return points + normals(points, closed, sign) * d[:, None]


def offset_polygon(poly: np.ndarray, distance: float) -> np.ndarray:
    """Outward offset of a closed polygon by ``distance`` mm (negative shrinks)."""
    return offset(poly, distance, True, outward_sign_of(poly))


def ellipse(
    center: tuple[float, float], semi_x: float, semi_z: float, angle_rad: float = 0.0, n: int = 64
) -> np.ndarray:
    """Polygon of an ellipse with semi-axes along x and z before rotation by ``angle_rad``."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    x, z = semi_x * np.cos(t), semi_z * np.sin(t)
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.stack([center[0] + c * x - s * z, center[1] + s * x + c * z], axis=1)


def thick_polyline(points: np.ndarray, width: float) -> np.ndarray:
    """Closed polygon of a band of ``width`` around an open polyline (a valve leaflet, a strand)."""
    n = normals(points, False, 1.0) * (0.5 * width)
    return np.vstack([points + n, (points - n)[::-1]])


def smooth_bump(
    n_points: int,
    rng: np.random.Generator,
    amplitude: float,
    n_harmonics: int = 4,
    closed: bool = False,
) -> np.ndarray:
    """Smooth random displacement along a curve: a short Fourier series, ``(n_points,)``.

    Harmonic k has a standard deviation proportional to 1/k (low frequencies dominate, as for
    real wall irregularity or a tracer's hand), scaled so that the total standard deviation is
    ``amplitude``.
    """
    s = np.linspace(0.0, 1.0, n_points, endpoint=not closed)
    k = np.arange(1, n_harmonics + 1)
    weights = 1.0 / k
    weights /= np.sqrt(np.sum(weights**2) / 2.0)  # E[sin²] = 1/2
    coef = rng.standard_normal(n_harmonics) * weights * amplitude
    phase = rng.uniform(0.0, 2.0 * np.pi, n_harmonics)
    freq = 2.0 * np.pi * k if closed else np.pi * k
    return (coef[None, :] * np.sin(freq[None, :] * s[:, None] + phase[None, :])).sum(axis=1)


def fill_polygon(target: np.ndarray, poly_px: np.ndarray, value: int) -> None:
    """Paint ``value`` into ``target`` (2-D uint8, in place) where pixel centres lie in the polygon.

    ``poly_px`` holds ``(col, row)`` in pixel units with pixel centres at integer positions. Uses
    cv2 (fast scan conversion, ~50x faster than a point-in-polygon test) with a half-pixel
    correction for its inclusive edges.
    """
    if len(poly_px) < 3:
        return
    n = normals(poly_px, True, outward_sign_of(poly_px))
    shrunk = poly_px - n * (_FILL_SHRINK_PX * (np.abs(n[:, 0]) + np.abs(n[:, 1])))[:, None]
    # Clip far-away vertices so the fixed-point coordinates cannot overflow int32.
    h, w = target.shape
    shrunk = np.clip(shrunk, [-4.0 * w - 8, -4.0 * h - 8], [5.0 * w + 8, 5.0 * h + 8])
    pts = np.round(shrunk * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(target, [pts], int(value), lineType=cv2.LINE_8, shift=_SHIFT)
