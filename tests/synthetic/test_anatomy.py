"""A4C anatomy: dimensions, ED -> ES mechanics, orientation, placement in the fan, timing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.data.synthetic.anatomy import (
    HeartParams,
    Placement,
    cycle_phases,
    fit_to_sector,
    heart_at,
    sample_heart,
)
from common.data.synthetic.geometry import SectorGeometry
from common.data.synthetic.knobs import PHENOTYPES
from common.data.synthetic.polygons import fill_polygon, polygon_area
from common.data.synthetic.tissue import Tissue

ORIGIN = Placement((0.0, 0.0), 0.0, 1.0)


def _hearts(phenotype: str, n: int = 25) -> list[HeartParams]:
    return [
        sample_heart(np.random.default_rng(1000 + i), phenotype, 1.0).with_placement(ORIGIN)
        for i in range(n)
    ]


def test_normal_ed_dimensions_follow_the_design_ranges() -> None:
    for p in _hearts("normal"):
        ed = heart_at(p, 0.0)
        lv_len = ed.long_axis_mm
        lv_width = float(ed.lv[:, 0].max() - ed.lv[:, 0].min())
        assert 68.0 <= lv_len <= 92.0  # 72-90 mm, ±a few mm of radial perturbation
        assert 36.0 <= lv_width <= 56.0  # 40-52 mm
        myo_thickness = (polygon_area(ed.epi) - polygon_area(ed.lv)) / (lv_len * 2.4)
        assert 5.0 <= myo_thickness <= 12.0  # mean band thickness, thinner at the apex
        la_len = float(ed.la[:, 1].max() - ed.la[:, 1].min())
        la_width = float(ed.la[:, 0].max() - ed.la[:, 0].min())
        assert 38.0 <= la_len <= 57.0 and 30.0 <= la_width <= 45.0


@pytest.mark.parametrize("phenotype", PHENOTYPES)
def test_es_shortens_narrows_and_conserves_the_myocardium(phenotype: str) -> None:
    efs = []
    for p in _hearts(phenotype):
        ed, es = heart_at(p, 0.0), heart_at(p, 1.0)
        a_ed, a_es = ed.area_mm2(), es.area_mm2()
        assert a_es["LV"] < a_ed["LV"]
        assert abs(a_es["MYO"] / a_ed["MYO"] - 1.0) <= 0.05
        assert a_es["LA"] > a_ed["LA"]  # the atrium fills during systole
        if phenotype in ("normal", "hypertrophic"):
            assert 0.12 <= 1.0 - es.long_axis_mm / ed.long_axis_mm <= 0.23
        efs.append(1.0 - es.lv_volume_ml() / ed.lv_volume_ml())
    lo, hi = {
        "normal": (0.45, 0.78),
        "hypertrophic": (0.5, 0.85),
        "dilated": (0.1, 0.45),
        "infarct": (0.2, 0.6),
    }[phenotype]
    assert lo <= min(efs) and max(efs) <= hi


def test_wall_thickens_in_systole() -> None:
    for p in _hearts("normal", 10):
        ed, es = heart_at(p, 0.0), heart_at(p, 1.0)
        thickness = [polygon_area(s.myo) / (s.long_axis_mm * 2.4) for s in (ed, es)]
        assert thickness[1] > 1.1 * thickness[0]


def test_standard_a4c_orientation() -> None:
    for p in _hearts("normal", 10):
        shape = heart_at(p, 0.0)
        blood = [poly for poly, tissue in shape.layers if tissue == Tissue.BLOOD]
        rv, ra = blood[0], blood[1]
        lv_c, la_c = shape.lv.mean(axis=0), shape.la.mean(axis=0)
        assert lv_c[0] > rv.mean(axis=0)[0] + 15.0  # LV on the image right of the RV
        assert la_c[0] > ra.mean(axis=0)[0] + 10.0  # LA right of the RA
        assert la_c[1] > lv_c[1] + 30.0 and ra.mean(axis=0)[1] > rv.mean(axis=0)[1]  # atria below
        # The unlabelled chambers are of LV/LA size: they are real distractors.
        assert polygon_area(rv) > 0.4 * polygon_area(shape.lv)
        assert polygon_area(ra) > 0.6 * polygon_area(shape.la)


def test_paint_layers_hold_every_tissue_of_an_a4c() -> None:
    tissues = {t for p in _hearts("infarct", 8) for _, t in heart_at(p, 0.0).layers}
    for t in (
        Tissue.PERICARDIUM,
        Tissue.MYOCARDIUM,
        Tissue.WALL,
        Tissue.BLOOD,
        Tissue.VALVE,
        Tissue.FIBROUS,
        Tissue.TRABECULA,
        Tissue.SCAR,
    ):
        assert t in tissues


def _fraction_inside(poly: np.ndarray, geometry: SectorGeometry) -> float:
    """Area fraction of a polygon inside the fan, rasterised at 0.25 mm over its bounding box."""
    res = 0.25
    lo = poly.min(axis=0) - 1.0
    h, w = (np.ceil((poly.max(axis=0) + 1.0 - lo) / res).astype(int) + 1)[::-1]
    canvas = np.zeros((h, w), np.uint8)
    fill_polygon(canvas, (poly - lo) / res, 1)
    rows, cols = np.nonzero(canvas)
    pts = np.stack([cols * res + lo[0], rows * res + lo[1]], axis=1)
    return float(geometry.inside(pts).mean())


@pytest.mark.parametrize(
    ("depth", "sector", "body"), [(150, 80, 1.0), (140, 75, 1.05), (170, 70, 1.0), (90, 85, 0.55)]
)
def test_fit_keeps_lv_and_la_inside_the_fan(depth: float, sector: float, body: float) -> None:
    for i in range(6):
        p = sample_heart(np.random.default_rng(i), "dilated" if i % 3 == 0 else "normal", body)
        placed, geometry = fit_to_sector(p, SectorGeometry(depth, sector), depth * 1.15)
        assert depth <= geometry.depth_mm <= depth * 1.15
        for c in (0.0, 1.0):
            shape = heart_at(placed, c)
            assert _fraction_inside(shape.epi, geometry) >= 0.95
            assert _fraction_inside(shape.la, geometry) >= 0.95
            assert _fraction_inside(shape.lv, geometry) == 1.0


def test_cycle_phases() -> None:
    c, o, ed, es = cycle_phases(2)
    assert (ed, es) == (0, 1) and c.tolist() == [0.0, 1.0] and o.tolist() == [0.0, 0.0]
    c, o, ed, es = cycle_phases(20)
    assert c[ed] == 0.0 and c[es] == 1.0 and o[ed] == 0.0 and o[es] == 0.0
    assert ed < es and int(np.argmax(c)) == es
    assert np.all(np.diff(c[ed : es + 1]) > 0)  # systole: monotonic contraction
    assert o[es + 1 :].max() > 0.5  # the valves open in diastole
    with pytest.raises(ValueError, match="n_frames"):
        cycle_phases(1)


def test_placement_round_trip() -> None:
    place = Placement((3.0, 20.0), math.radians(10.0), 0.9)
    pts = np.array([[0.0, 0.0], [0.0, 10.0]])
    out = place.apply(pts)
    assert out[0] == pytest.approx([3.0, 20.0])
    assert out[1] - out[0] == pytest.approx([9.0 * math.sin(0.1745329), 9.0 * math.cos(0.1745329)])
    turned = place.rotated_about_probe(math.radians(5.0))
    a = np.arctan2(*place.apply(pts)[1]) + math.radians(5.0)
    assert np.arctan2(*turned.apply(pts)[1]) == pytest.approx(a)
