"""Polygon helpers: areas, offsets and the corrected cv2 rasteriser."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.data.synthetic.polygons import (
    densify,
    ellipse,
    fill_polygon,
    offset_polygon,
    polygon_area,
    signed_area,
    smooth_bump,
)


def test_shoelace_area_and_orientation() -> None:
    square = np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 3.0], [0.0, 3.0]])
    assert signed_area(square) == pytest.approx(6.0)
    assert signed_area(square[::-1]) == pytest.approx(-6.0)
    assert polygon_area(square[::-1]) == pytest.approx(6.0)


@pytest.mark.parametrize("reverse", [False, True])
def test_offset_of_a_circle_changes_its_radius(reverse: bool) -> None:
    circle = ellipse((0.0, 0.0), 10.0, 10.0, n=360)
    if reverse:
        circle = circle[::-1]
    grown = offset_polygon(circle, 3.0)
    shrunk = offset_polygon(circle, -3.0)
    assert polygon_area(grown) == pytest.approx(math.pi * 13.0**2, rel=2e-3)
    assert polygon_area(shrunk) == pytest.approx(math.pi * 7.0**2, rel=2e-3)


@pytest.mark.parametrize(
    ("a", "b", "angle"), [(20.3, 11.7, 0.0), (7.2, 15.1, 0.6), (3.1, 2.4, 1.0)]
)
def test_fill_polygon_matches_the_analytic_area(a: float, b: float, angle: float) -> None:
    # cv2 alone paints ~half a pixel too much all round; the corrected fill must not.
    target = np.zeros((80, 80), np.uint8)
    fill_polygon(target, ellipse((40.2, 39.7), a, b, angle, n=400), 3)
    assert set(np.unique(target)) == {0, 3}
    expected = math.pi * a * b
    tolerance = max(0.012 * expected, 2.5)  # boundary pixels: ~1 % for the larger shapes
    assert abs(int((target == 3).sum()) - expected) <= tolerance


def test_densify_bounds_the_edge_length() -> None:
    tri = np.array([[0.0, 0.0], [30.0, 0.0], [0.0, 40.0]])
    dense = densify(tri, 1.0, closed=True)
    edges = np.linalg.norm(np.diff(np.vstack([dense, dense[:1]]), axis=0), axis=1)
    assert edges.max() <= 1.0 + 1e-9
    assert polygon_area(dense) == pytest.approx(600.0, rel=1e-2)


def test_smooth_bump_has_the_requested_spread() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([smooth_bump(200, rng, 1.5, closed=True) for _ in range(400)])
    assert values.mean() == pytest.approx(0.0, abs=0.1)
    assert values.std() == pytest.approx(1.5, rel=0.1)
