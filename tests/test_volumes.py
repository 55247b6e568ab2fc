"""Volumes and EF from hand-made masks with known answers (common.measure.volumes)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.labels import Structure
from common.measure.volumes import (
    area_length_ml,
    biplane_volume_ml,
    ed_es_frames,
    ejection_fraction,
    isotropic,
    la_volume_ml,
    lv_components,
    trace,
)


def ellipse(
    shape: tuple[int, int],
    centre_mm: tuple[float, float],
    semi_mm: tuple[float, float],
    spacing: tuple[float, float],
    value: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Label map with an ellipse (semi-axes (vertical, horizontal) in mm) painted at value."""
    labels = np.zeros(shape, np.uint8) if out is None else out
    rows = (np.arange(shape[0]) + 0.5) * spacing[0] - centre_mm[0]
    cols = (np.arange(shape[1]) + 0.5) * spacing[1] - centre_mm[1]
    inside = (rows[:, None] / semi_mm[0]) ** 2 + (cols[None, :] / semi_mm[1]) ** 2 <= 1.0
    labels[inside] = value
    return labels


def spheroid_ml(a: float, b: float, c: float | None = None) -> float:
    return 4.0 / 3.0 * math.pi * a * b * (b if c is None else c) / 1000.0


@pytest.mark.parametrize("spacing", [(0.25, 0.25), (0.2, 0.3)], ids=["square", "anisotropic"])
def test_an_ellipse_has_the_volume_of_its_spheroid(spacing: tuple[float, float]) -> None:
    """A 4CH LV as an ellipse of semi-axes 40 mm (long) x 20 mm: the method of disks gives the
    prolate spheroid's 4/3 pi a b^2 = 67.02 ml within 1 %; area-length gives it too."""
    labels = ellipse((480, 240), (50.0, 30.0), (40.0, 20.0), spacing, Structure.LV)
    lv = trace(labels, spacing)
    assert lv.length_mm == pytest.approx(80.0, rel=0.01)
    assert lv.area_mm2 == pytest.approx(math.pi * 40 * 20, rel=0.005)
    assert lv.volume_ml == pytest.approx(spheroid_ml(40, 20), rel=0.01)
    assert area_length_ml(lv.area_mm2, lv.length_mm) == pytest.approx(spheroid_ml(40, 20), rel=0.02)


def test_biplane_gives_the_ellipsoid_and_ef_follows_from_two_phases() -> None:
    spacing = (0.25, 0.25)
    ed4 = trace(ellipse((400, 240), (45, 30), (40, 22), spacing, Structure.LV), spacing)
    ed2 = trace(ellipse((400, 240), (45, 30), (40, 18), spacing, Structure.LV), spacing)
    assert biplane_volume_ml(ed4, ed2) == pytest.approx(spheroid_ml(40, 22, 18), rel=0.01)
    es4 = trace(ellipse((400, 240), (45, 30), (34, 15), spacing, Structure.LV), spacing)
    edv, esv = ed4.volume_ml, es4.volume_ml
    expected = 100 * (1 - spheroid_ml(34, 15) / spheroid_ml(40, 22))  # 60.2 %
    assert ejection_fraction(edv, esv) == pytest.approx(expected, abs=0.7)
    assert ejection_fraction(100.0, 40.0) == 60.0
    with pytest.raises(ValueError, match="end-diastolic volume must be positive"):
        ejection_fraction(0.0, 0.0)


def test_area_length_by_hand_and_la_volume() -> None:
    # A = 10 cm^2 = 1000 mm^2, L = 50 mm: 8 * 1000^2 / (3 pi 50) mm^3 = 16.98 ml
    assert area_length_ml(1000.0, 50.0) == pytest.approx(8e6 / (150 * math.pi) / 1000)
    spacing = (0.25, 0.25)
    labels = ellipse((400, 240), (50, 30), (25, 15), spacing, Structure.LA)
    area, volume = la_volume_ml(labels, spacing)
    assert area == pytest.approx(math.pi * 25 * 15, rel=0.005)
    assert volume == pytest.approx(spheroid_ml(25, 15), rel=0.02)
    with pytest.raises(ValueError, match="no left atrium"):
        la_volume_ml(np.zeros((10, 10), np.uint8), spacing)


def test_ed_es_from_the_area_curve() -> None:
    areas = np.array([0, 900, 1000, 800, 600, 500, 650, 950, 0])
    assert ed_es_frames(areas) == (2, 5)
    with pytest.raises(ValueError, match="LV is visible in 1 of 3 frame"):
        ed_es_frames(np.array([0, 10, 0]))


def test_isotropic_resampling_keeps_the_physical_size_and_components_are_counted() -> None:
    labels = ellipse((100, 100), (10, 20), (8, 12), (0.2, 0.4), Structure.LV)
    square, step = isotropic(labels, (0.2, 0.4))
    assert step == 0.2 and square.shape == (100, 200)
    assert (square == 1).sum() * 0.04 == pytest.approx((labels == 1).sum() * 0.08, rel=0.01)
    with pytest.raises(ValueError, match="pixel spacing must be positive"):
        isotropic(labels, (0.0, 0.4))
    assert lv_components(labels) == 1
    two = ellipse((100, 100), (5, 5), (2, 2), (0.2, 0.2), Structure.LV)
    two = ellipse((100, 100), (15, 15), (2, 2), (0.2, 0.2), Structure.LV, out=two)
    assert lv_components(two) == 2


def test_a_synthetic_recordings_ef_from_its_masks_is_its_true_ef() -> None:
    """The generator knows each case's EF (area-length on the exact shapes); the method of
    disks on its rasterised masks lands within 3 EF points (the method floor of issue 13; vendor
    B's 112 x 112 export, 1.4 x 2.0 mm pixels, is the coarsest), on a clip too, where ED and ES
    are found from the LV area curve."""
    from common.data.synthetic.generator import case_seed, generate_recording
    from common.data.synthetic.vendors import get_vendor
    from common.measure.recording import COLUMNS, measure

    for vendor in ("A", "B", "E"):
        rec = generate_recording(get_vendor(vendor), seed=case_seed(1, vendor, 0), case_id="x")
        row = measure("x", rec.labels, rec.spacing_mm, rec.ed, rec.es)
        assert set(row) == set(COLUMNS) and row["flags"] == ""
        assert abs(row["ef_percent"] - float(rec.info["ef"])) < 3.0, (vendor, row)
        assert row["edv_ml"] == pytest.approx(float(rec.info["edv_ml"]), rel=0.08)
    clip = generate_recording(get_vendor("A"), seed=case_seed(1, "A", 1), case_id="c", n_frames=12)
    found = measure("c", clip.labels, clip.spacing_mm)
    assert abs(found["ed_frame"] - clip.ed) <= 1 and abs(found["es_frame"] - clip.es) <= 1
    assert abs(found["ef_percent"] - float(clip.info["ef"])) < 2.5


def test_the_flags_say_what_is_missing_or_doubtful() -> None:
    from common.measure.recording import measure

    spacing = (0.5, 0.5)
    ed = ellipse((200, 120), (50, 30), (40, 20), spacing, Structure.LV)
    es = ellipse((200, 120), (50, 30), (39.5, 19.8), spacing, Structure.LV)  # EF ~3 %
    es = ellipse((200, 120), (92, 30), (6, 10), spacing, Structure.LA, out=es)
    row = measure("r", np.stack([ed, es]), spacing, 0, 1)
    assert row["flags"] == "ef-out-of-range" and row["la_volume_es_ml"] != ""
    row = measure("r", np.stack([ed, ed]), None, 0, 1)
    assert row["flags"] == "no-spacing"  # nothing in mm is computed, so no LA check either
    assert row["edv_ml"] == "" and row["ed_frame"] == 0
    empty = np.zeros((3, 20, 20), np.uint8)
    assert measure("r", empty, spacing)["flags"] == "ed-es-not-found"
    two = ellipse((200, 120), (20, 30), (8, 8), spacing, Structure.LV, out=ed.copy() * 0)
    two = ellipse((200, 120), (70, 30), (8, 8), spacing, Structure.LV, out=two)
    assert "several-lv-components" in measure("r", np.stack([two, es]), spacing, 0, 1)["flags"]
    with pytest.raises(ValueError, match=r"r: label maps must be \(frames, H, W\)"):
        measure("r", ed, spacing)


def test_an_undecided_lv_is_scored_and_flagged() -> None:
    """The score counts the pixels between 0.2 and 0.8 per pixel called LV; the row keeps the
    larger of ED's and ES's and flags it above the limit; other frames do not count."""
    from common.measure.recording import (
        DOUBTFUL_EF_FLAGS,
        UNDECIDED_LV_LIMIT,
        measure,
        undecided_lv,
    )

    p = np.array([[0.1, 0.3, 0.5], [0.9, 0.79, 0.2]])  # undecided 0.3 0.5 0.79; LV 0.5 0.9 0.79
    assert undecided_lv(p) == 1.0
    assert undecided_lv(np.zeros((4, 4))) == 0.0  # neither: no division by zero
    assert undecided_lv(np.full((2, 2), 0.95)) == 0.0
    spacing = (0.5, 0.5)
    ed = ellipse((200, 120), (50, 30), (40, 20), spacing, Structure.LV)
    es = ellipse((200, 120), (50, 30), (30, 15), spacing, Structure.LV)
    es = ellipse((200, 120), (92, 30), (6, 10), spacing, Structure.LA, out=es)
    labels = np.stack([ed, es, es])
    calm = measure("r", labels, spacing, 0, 1, [0.05, 0.1, 0.9])  # frame 2 is neither ED nor ES
    assert calm["lv_undecided"] == 0.1 and calm["flags"] == ""
    unsure = measure("r", labels, spacing, 0, 1, [0.05, UNDECIDED_LV_LIMIT + 0.01, 0.0])
    assert unsure["flags"] == "uncertain-lv" and unsure["lv_undecided"] == 0.19
    assert unsure["ef_percent"] == calm["ef_percent"]  # a flag, never a changed measurement
    assert "uncertain-lv" in DOUBTFUL_EF_FLAGS  # the names the benchmark counts are measure's
    assert measure("r", labels, spacing, 0, 1)["lv_undecided"] == ""  # no model, no score
    with pytest.raises(ValueError, match="r: 2 LV scores for 3 label maps"):
        measure("r", labels, spacing, 0, 1, [0.0, 0.0])


def test_a_stray_island_of_lv_does_not_change_the_volumes() -> None:
    """A prediction with a few pixels of "LV" far from the chamber (in the right ventricle, say):
    the row is flagged, and the volumes, EF and ED/ES are those of the chamber alone, as a
    clinician would trace it (without this, the long axis would span both pieces)."""
    from common.measure.recording import measure
    from common.measure.volumes import chambers

    spacing = (0.5, 0.5)
    ed = ellipse((200, 160), (50, 60), (40, 20), spacing, Structure.LV)
    es = ellipse((200, 160), (50, 60), (34, 15), spacing, Structure.LV)
    es = ellipse((200, 160), (92, 60), (6, 10), spacing, Structure.LA, out=es)
    clean = measure("r", np.stack([ed, es]), spacing)
    noisy_es = ellipse((200, 160), (30, 10), (3, 3), spacing, Structure.LV, out=es.copy())
    noisy_es = ellipse((200, 160), (96, 10), (2, 2), spacing, Structure.LA, out=noisy_es)
    noisy = measure("r", np.stack([ed, noisy_es]), spacing)
    assert noisy["flags"] == "several-lv-components" and clean["flags"] == ""
    for column in ("ed_frame", "es_frame", "edv_ml", "esv_ml", "ef_percent", "la_volume_es_ml"):
        assert noisy[column] == clean[column], column
    assert lv_components(chambers(noisy_es)) == 1
    assert (chambers(noisy_es) == Structure.LA).sum() == (es == Structure.LA).sum()
    # the island really would have mattered: tracing everything gives another ESV
    assert trace(noisy_es, spacing).volume_ml != pytest.approx(float(clean["esv_ml"]), rel=0.05)


def test_surface_agreement_in_millimetres() -> None:
    """Two squares, the prediction shifted by 4 pixels (2 mm at 0.5 mm): Dice 1 - 4/20, and
    every boundary distance at most 2 mm; a missing structure is NaN, not 0."""
    from common.measure.agreement import agreement

    truth = np.zeros((60, 60), np.uint8)
    truth[20:40, 20:40] = Structure.LV
    pred = np.zeros_like(truth)
    pred[24:44, 20:40] = Structure.LV
    got = agreement(pred, truth, (0.5, 0.5))
    assert got["dice-LV"] == pytest.approx(1 - 4 / 20)
    assert got["hd95-LV"] == pytest.approx(2.0, abs=0.01)  # the shifted edges, 4 px x 0.5 mm
    assert 0 < got["msd-LV"] < 2.0
    assert math.isnan(got["hd95-MYO"]) and math.isnan(got["dice-MYO"])
    same = agreement(truth, truth, (0.5, 0.5))
    assert same["dice-LV"] == 1.0 and same["hd95-LV"] == 0.0 and same["msd-LV"] == 0.0
    in_pixels = agreement(pred, truth, None)
    assert in_pixels["hd95-LV"] == pytest.approx(4.0, abs=0.01)


def test_agreement_equals_monais_hausdorff_and_surface_distance_functions() -> None:
    """The one-pass HD95 / MSD are MONAI's compute_hausdorff_distance(percentile=95) and
    compute_average_surface_distance(symmetric=True), on irregular masks with anisotropic
    spacing."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    from common.measure.agreement import agreement
    from tests.helpers import draw_labels

    truth = draw_labels((64, 56), 0.0)
    pred = draw_labels((64, 56), 0.6, tilt_deg=12.0)
    spacing = (0.4, 0.25)
    got = agreement(pred, truth, spacing)
    one_hot = [
        torch.nn.functional.one_hot(torch.from_numpy(m.astype(np.int64)), 4).permute(2, 0, 1)[None]
        for m in (pred, truth)
    ]
    hd95 = compute_hausdorff_distance(*one_hot, percentile=95, spacing=list(spacing))[0]
    msd = compute_average_surface_distance(*one_hot, symmetric=True, spacing=list(spacing))[0]
    for s in Structure:
        assert got[f"hd95-{s.name}"] == pytest.approx(float(hd95[int(s) - 1]), rel=1e-5)
        assert got[f"msd-{s.name}"] == pytest.approx(float(msd[int(s) - 1]), rel=1e-5)
        assert got[f"hd95-{s.name}"] > 0


def _walled_frame(lv: np.ndarray, cavity: int, wall: int = 200, wall_px: int = 12) -> np.ndarray:
    """A frame: the LV at ``cavity``, a wall ``wall_px`` thick around it at ``wall``, 0 beyond
    (the black outside an ultrasound sector)."""
    from scipy import ndimage

    frame = np.zeros(lv.shape, np.uint8)
    frame[ndimage.binary_dilation(lv, iterations=wall_px)] = wall
    frame[lv] = cavity
    return frame


def test_lv_contrast_is_the_band_minus_the_core_over_the_grey_range() -> None:
    """A disk of LV (radius 20 px: r = round(0.06 sqrt(area)) = 2) at grey 40 in a 12 px wall at
    200, black beyond: band 200, core 40, range 0-200 (1st and 99th percentiles), so 0.8
    exactly; a cavity at 150 (haze) 0.25; at 170, 0.15."""
    from common.measure.recording import lv_contrast

    yy, xx = np.mgrid[:128, :128]
    lv = (yy - 64) ** 2 + (xx - 64) ** 2 <= 20**2
    assert lv_contrast(_walled_frame(lv, 40), lv) == pytest.approx(0.8)
    assert lv_contrast(_walled_frame(lv, 150), lv) == pytest.approx(0.25)
    assert lv_contrast(_walled_frame(lv, 170), lv) == pytest.approx(0.15)
    tiny = (yy - 64) ** 2 + (xx - 64) ** 2 <= 3**2  # 29 pixels: too small to score
    assert np.isnan(lv_contrast(_walled_frame(tiny, 40), tiny))
    with pytest.raises(ValueError, match=r"frame \(128, 128\) and LV mask \(64, 64\) differ"):
        lv_contrast(np.zeros((128, 128)), lv[:64, :64])


def test_a_faint_lv_border_is_flagged_and_the_measurement_kept() -> None:
    """measure() scores the fainter of ED and ES on the LV it measures, writes it in
    ``lv_contrast`` and flags ``low-contrast`` below the limit; without frames, no score."""
    from common.measure.recording import DOUBTFUL_EF_FLAGS, LOW_CONTRAST_LIMIT, measure

    spacing = (0.5, 0.5)  # an LV of 80 x 40 px semi-axes at ED: r = 6, its band 6-18 px out
    ed = ellipse((300, 200), (75, 50), (40, 20), spacing, Structure.LV)
    es = ellipse((300, 200), (75, 50), (30, 15), spacing, Structure.LV)
    labels = np.stack([ed, es])
    clear = np.stack([_walled_frame(lab == Structure.LV, 40, wall_px=20) for lab in labels])
    row = measure("r", labels, spacing, 0, 1, frames=clear)
    assert row["lv_contrast"] == 0.8 and row["flags"] == "no-la"  # these hand-made frames have none
    faint_es = _walled_frame(es == Structure.LV, 170, wall_px=20)  # 0.15, under the limit
    assert LOW_CONTRAST_LIMIT > (200 - 170) / 200
    faint = measure("r", labels, spacing, 0, 1, frames=np.stack([clear[0], faint_es]))
    assert faint["lv_contrast"] == 0.15 and faint["flags"] == "low-contrast no-la"
    assert faint["ef_percent"] == row["ef_percent"]  # a flag, never a changed measurement
    assert "low-contrast" in DOUBTFUL_EF_FLAGS
    assert measure("r", labels, spacing, 0, 1)["lv_contrast"] == ""
    with pytest.raises(ValueError, match=r"r: frames \(2, 100, 60\) and label maps"):
        measure("r", labels, spacing, 0, 1, frames=np.zeros((2, 100, 60)))


def test_a_frame_too_small_to_score_leaves_the_other_frames_contrast() -> None:
    """An ES LV under 50 pixels has no contrast of its own; ED's is the row's."""
    from common.measure.recording import measure

    yy, xx = np.mgrid[:128, :128]
    big = ((yy - 64) ** 2 + (xx - 64) ** 2 <= 20**2).astype(np.uint8)
    tiny = ((yy - 64) ** 2 + (xx - 64) ** 2 <= 3**2).astype(np.uint8)
    frames = np.stack([_walled_frame(big == 1, 170), _walled_frame(tiny == 1, 40)])
    row = measure("r", np.stack([big, tiny]), (0.5, 0.5), 0, 1, frames=frames)
    assert row["lv_contrast"] == 0.15 and "low-contrast" in str(row["flags"]).split()
