"""Imaging geometry: the sector (fan), the polar beam grid and the Cartesian output grid.

Physical frame: the transducer (the virtual apex of the fan) is at ``(x, z) = (0, 0)`` mm, x
points to the image right, z (depth) downwards. A beam at angle θ (radians, 0 = straight down,
positive towards the image right) reaches ``(r sin θ, r cos θ)``.

The output image of shape ``(H, W)`` covers ``z in [0, depth]`` and
``x in [-depth sin(half), +depth sin(half)]`` (the fan's bounding box), so its pixels are
``depth / H`` mm tall and ``2 depth sin(half) / W`` mm wide (anisotropic, as in CAMUS).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from common.data.synthetic.polygons import densify, fill_polygon


@dataclass(frozen=True)
class SectorGeometry:
    """The imaged fan: ``depth_mm`` of the deepest sample and the full opening ``sector_deg``."""

    depth_mm: float
    sector_deg: float

    @property
    def half_angle(self) -> float:
        """Half the opening, radians."""
        return math.radians(self.sector_deg) / 2.0

    @property
    def width_mm(self) -> float:
        """Width of the fan's bounding box (mm)."""
        return 2.0 * self.depth_mm * math.sin(min(self.half_angle, math.pi / 2))

    def spacing_mm(self, size: tuple[int, int]) -> tuple[float, float]:
        """(row, column) pixel size in mm of an output image of ``size = (H, W)``."""
        h, w = size
        return self.depth_mm / h, self.width_mm / w

    def to_pixels(self, points_mm: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Map ``(x, z)`` mm to ``(col, row)`` output pixel coordinates (centres at integers)."""
        dz, dx = self.spacing_mm(size)
        col = (points_mm[:, 0] + self.width_mm / 2.0) / dx - 0.5
        row = points_mm[:, 1] / dz - 0.5
        return np.stack([col, row], axis=1)

    def inside(self, points_mm: np.ndarray) -> np.ndarray:
        """Boolean ``(N,)``: which ``(x, z)`` points lie inside the fan."""
        r = np.hypot(points_mm[:, 0], points_mm[:, 1])
        theta = np.arctan2(points_mm[:, 0], points_mm[:, 1])
        return (r <= self.depth_mm) & (np.abs(theta) <= self.half_angle) & (points_mm[:, 1] > 0)


@dataclass(frozen=True)
class PolarGrid:
    """Beam samples: ``n_r`` ranges (sample i at ``(i + 0.5) dr`` mm) by ``n_theta`` beams."""

    geometry: SectorGeometry
    n_r: int
    n_theta: int

    @property
    def dr(self) -> float:
        """Range sample spacing (mm)."""
        return self.geometry.depth_mm / self.n_r

    @property
    def dtheta(self) -> float:
        """Beam spacing (radians)."""
        return 2.0 * self.geometry.half_angle / self.n_theta

    @property
    def r(self) -> np.ndarray:
        """Range of each row (mm), float32 ``(n_r,)``."""
        return ((np.arange(self.n_r) + 0.5) * self.dr).astype(np.float32)

    @property
    def theta(self) -> np.ndarray:
        """Angle of each beam (radians), float32 ``(n_theta,)``."""
        return (-self.geometry.half_angle + (np.arange(self.n_theta) + 0.5) * self.dtheta).astype(
            np.float32
        )

    def to_indices(self, points_mm: np.ndarray) -> np.ndarray:
        """Map ``(x, z)`` mm to fractional ``(beam, range)`` sample indices."""
        r = np.hypot(points_mm[:, 0], points_mm[:, 1])
        theta = np.arctan2(points_mm[:, 0], points_mm[:, 1])
        return np.stack(
            [(theta + self.geometry.half_angle) / self.dtheta - 0.5, r / self.dr - 0.5], axis=1
        )

    def rasterise(self, target: np.ndarray, poly_mm: np.ndarray, value: int) -> None:
        """Paint a polygon given in mm into the ``(n_r, n_theta)`` class map ``target``."""
        # Straight edges in mm are curves in (θ, r); 1-mm vertices keep the error negligible.
        fill_polygon(target, self.to_indices(densify(poly_mm, 1.0, closed=True)), value)


def polar_grid_for(
    geometry: SectorGeometry, size: tuple[int, int], axial_psf_mm: float
) -> PolarGrid:
    """Beam grid fine enough for an output image of ``size`` and the vendor's axial PSF.

    Range: 1.5 samples per output row, and one per two axial PSF sigmas where that is finer, but
    never more than 3 per output row (finer rows do not change the look of a small export, they
    only cost time); 64 to 1024 rows. Beams: 1.3 per
    output column at the deepest arc (the fan's widest part), at least 96 and at most 768.
    """
    h, w = size
    n_r = int(np.ceil(max(1.5 * h, geometry.depth_mm / (2.0 * axial_psf_mm))))
    n_r = int(np.clip(min(n_r, 3 * h), 64, 1024))
    arc_mm = geometry.depth_mm * 2.0 * geometry.half_angle
    dx = geometry.width_mm / w
    n_theta = int(np.clip(np.ceil(1.3 * arc_mm / dx), 96, 768))
    return PolarGrid(geometry, n_r, n_theta)


@functools.lru_cache(maxsize=64)
def _scan_maps(
    depth_mm: float, sector_deg: float, h: int, w: int, n_r: int, n_theta: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    grid = PolarGrid(SectorGeometry(depth_mm, sector_deg), n_r, n_theta)
    geom = grid.geometry
    dz, dx = geom.spacing_mm((h, w))
    z = (np.arange(h, dtype=np.float64) + 0.5) * dz
    x = -geom.width_mm / 2.0 + (np.arange(w, dtype=np.float64) + 0.5) * dx
    xx, zz = np.meshgrid(x, z)
    r = np.hypot(xx, zz)
    theta = np.arctan2(xx, zz)
    inside = (r <= depth_mm) & (np.abs(theta) <= geom.half_angle)
    map_beam = ((theta + geom.half_angle) / grid.dtheta - 0.5).astype(np.float32)
    map_range = (r / grid.dr - 0.5).astype(np.float32)
    for a in (map_beam, map_range, inside):
        a.setflags(write=False)
    return map_beam, map_range, inside


def scan_maps(grid: PolarGrid, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scan-conversion lookup for ``cv2.remap``: (beam index, range index, inside-sector mask).

    Each is ``(H, W)``; the index maps are float32 sample coordinates of every output pixel
    centre, the mask is True where the pixel centre lies inside the fan. Cached (read-only).
    """
    g = grid.geometry
    return _scan_maps(
        round(g.depth_mm, 6), round(g.sector_deg, 6), size[0], size[1], grid.n_r, grid.n_theta
    )


def sector_mask(geometry: SectorGeometry, size: tuple[int, int]) -> np.ndarray:
    """Boolean ``(H, W)``: output pixels whose centre lies inside the fan (read-only, cached)."""
    return _scan_maps(
        round(geometry.depth_mm, 6), round(geometry.sector_deg, 6), size[0], size[1], 64, 96
    )[2]
