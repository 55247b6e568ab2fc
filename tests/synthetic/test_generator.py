"""Recordings: shapes, labels, sector, determinism, clips, knobs, sites."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.data.formats.recording import Recording
from common.data.synthetic.anatomy import heart_at
from common.data.synthetic.generator import (
    assign_splits,
    case_seed,
    generate_recording,
    generate_site,
    render_case,
)
from common.data.synthetic.geometry import sector_mask
from common.data.synthetic.knobs import PHENOTYPES, SynthesisKnobs
from common.data.synthetic.polygons import fill_polygon
from common.data.synthetic.tissue import Tissue
from common.data.synthetic.vendors import VENDORS
from common.labels import Structure


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_shapes_dtypes_spacing_and_info() -> None:
    case = render_case(VENDORS["A"], seed=3, case_id="p0003", size=(96, 80))
    rec = case.recording
    assert isinstance(rec, Recording)
    assert rec.frames.shape == rec.labels.shape == (2, 96, 80)
    assert rec.frames.dtype == rec.labels.dtype == np.uint8
    assert (rec.ed, rec.es, rec.case_id, rec.view, rec.split) == (0, 1, "p0003", "4CH", "train")
    depth = case.geometry.depth_mm
    width = 2 * depth * math.sin(math.radians(40.0))
    assert rec.spacing_mm == pytest.approx((depth / 96, width / 80))
    assert float(rec.info["depth_mm"]) == pytest.approx(depth, abs=0.05)
    assert 150 * 0.96 <= depth <= 150 * 1.15
    assert rec.info["vendor"] == "A" and rec.info["quality"] in ("Good", "Medium", "Poor")
    assert rec.info["phenotype"] in PHENOTYPES and rec.info["sex"] in ("M", "F")
    assert 18 <= int(rec.info["age"]) <= 95
    edv, esv = float(rec.info["edv_ml"]), float(rec.info["esv_ml"])
    assert float(rec.info["ef"]) == pytest.approx(100 * (edv - esv) / edv, abs=0.1)
    assert rec.fps == VENDORS["A"].fps


def test_natural_size_and_paediatric_population() -> None:
    rec = generate_recording(VENDORS["E"], seed=1, case_id="k")
    assert rec.frames.shape == (2, *VENDORS["E"].export_size)
    assert int(rec.info["age"]) < 18
    # A child's heart in a 90-mm fan: the LV long axis is well below the adult 72-90 mm.
    case = render_case(VENDORS["E"], seed=1, case_id="k", size=(112, 112))
    assert case.params.placement.scale < 0.75


@pytest.mark.parametrize("vendor", list(VENDORS))
def test_labels_valid_present_and_zero_outside_the_sector(vendor: str) -> None:
    for seed in range(3):
        case = render_case(VENDORS[vendor], seed=seed, case_id="c", size=(112, 96))
        rec = case.recording
        outside = ~sector_mask(case.geometry, (112, 96))
        assert set(np.unique(rec.labels).tolist()) == {0, 1, 2, 3}
        for t in range(2):
            # every structure in every frame
            assert {1, 2, 3} <= set(np.unique(rec.labels[t]).tolist())
        assert (rec.labels[:, outside] == 0).all() and (rec.frames[:, outside] == 0).all()
        assert rec.frames[:, ~outside].mean() > 20  # the fan is not empty


def test_es_lv_smaller_and_myo_area_conserved_on_label_maps() -> None:
    for seed in range(6):
        rec = generate_recording(VENDORS["C"], seed=seed, case_id="c", size=(192, 192))
        px = rec.spacing_mm[0] * rec.spacing_mm[1]
        lv = [(rec.labels[t] == Structure.LV).sum() * px for t in (rec.ed, rec.es)]
        myo = [(rec.labels[t] == Structure.MYO).sum() * px for t in (rec.ed, rec.es)]
        assert 0.15 <= 1.0 - lv[1] / lv[0] <= 0.75  # area change of EF 20-75 % hearts
        assert abs(myo[1] / myo[0] - 1.0) <= 0.06  # ±5 % analytic, + rasterisation


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    a1 = generate_recording(VENDORS["B"], seed=11, case_id="x", size=(64, 64))
    a2 = generate_recording(VENDORS["B"], seed=11, case_id="x", size=(64, 64))
    b = generate_recording(VENDORS["B"], seed=12, case_id="x", size=(64, 64))
    assert np.array_equal(a1.frames, a2.frames) and np.array_equal(a1.labels, a2.labels)
    assert a1.info == a2.info
    assert not np.array_equal(a1.frames, b.frames)
    assert _dice(a1.labels[0] == 1, b.labels[0] == 1) < 0.98
    # Same seed, other size or clip length: the same heart.
    big = generate_recording(VENDORS["B"], seed=11, case_id="x", size=(96, 96), n_frames=5)
    assert big.info["ef"] == a1.info["ef"] and big.info["phenotype"] == a1.info["phenotype"]


def test_global_numpy_state_is_neither_used_nor_changed() -> None:
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = generate_recording(VENDORS["D"], seed=5, case_id="x", size=(48, 48))
    assert np.array_equal(np.random.get_state()[1], before)
    np.random.seed(999)
    b = generate_recording(VENDORS["D"], seed=5, case_id="x", size=(48, 48))
    assert np.array_equal(a.frames, b.frames)


def test_clip_runs_ed_to_es_and_back() -> None:
    rec = generate_recording(VENDORS["B"], seed=2, case_id="v", size=(80, 80), n_frames=16)
    assert rec.frames.shape == (16, 80, 80)
    lv = (rec.labels == Structure.LV).sum(axis=(1, 2))
    assert 0 <= rec.ed < rec.es < 16
    assert lv[rec.es] == lv.min() and lv[rec.ed] >= 0.97 * lv.max()
    assert lv[-1] > lv[rec.es] * 1.2  # refilled in diastole
    # Speckle stays partly correlated between neighbouring frames, not between ED and ES.
    inside = rec.frames[0] > 0
    near = np.corrcoef(rec.frames[3][inside], rec.frames[4][inside])[0, 1]
    assert near > np.corrcoef(rec.frames[rec.ed][inside], rec.frames[rec.es][inside])[0, 1]


def test_flip_lr_mirrors_frames_and_labels() -> None:
    plain = generate_recording(VENDORS["A"], seed=4, case_id="x", size=(64, 64))
    flipped = generate_recording(
        VENDORS["A"], seed=4, case_id="x", size=(64, 64), knobs=SynthesisKnobs(flip_lr=True)
    )
    assert np.array_equal(flipped.frames, plain.frames[:, :, ::-1])
    assert np.array_equal(flipped.labels, plain.labels[:, :, ::-1])
    assert flipped.info["orientation"] == "flipped"
    # Standard A4C: the LV right of the (unlabelled) RV; flipped: left of it.
    case = render_case(VENDORS["A"], seed=4, case_id="x", size=(64, 64))
    rv = next(poly for poly, tissue in heart_at(case.params, 0.0).layers if tissue == Tissue.BLOOD)
    rv_col = float(case.geometry.to_pixels(rv, (64, 64))[:, 0].mean())
    lv_col = float(np.nonzero(plain.labels[0] == Structure.LV)[1].mean())
    lv_col_flipped = float(np.nonzero(flipped.labels[0] == Structure.LV)[1].mean())
    assert lv_col > rv_col + 8 and lv_col_flipped < (63 - rv_col) - 8


def test_annotation_jitter_redraws_labels_but_keeps_the_anatomy() -> None:
    exact = render_case(VENDORS["A"], seed=9, case_id="x", size=(128, 128))
    traced = render_case(
        VENDORS["A"],
        seed=9,
        case_id="x",
        size=(128, 128),
        knobs=SynthesisKnobs(annotation_jitter_mm=1.5),
    )
    assert exact.anatomy_labels is exact.recording.labels
    assert np.array_equal(traced.anatomy_labels, exact.recording.labels)
    assert np.array_equal(traced.recording.frames, exact.recording.frames)
    for s in Structure:
        d = _dice(traced.recording.labels == s, traced.anatomy_labels == s)
        assert 0.8 <= d < 0.995, s


def test_quality_knob_changes_the_images() -> None:
    # All-poor cases under a harder setting are hazier and lower in contrast than all-good ones.
    good = SynthesisKnobs(quality_probs=(1.0, 0.0, 0.0), difficulty=0.5)
    poor = SynthesisKnobs(quality_probs=(0.0, 0.0, 1.0), difficulty=2.0)
    contrast = {}
    for name, knobs in (("good", good), ("poor", poor)):
        values = []
        for seed in range(4):
            rec = generate_recording(
                VENDORS["A"], seed=seed, case_id="x", size=(96, 96), knobs=knobs
            )
            assert rec.info["quality"] == name.capitalize()
            f, lab = rec.frames[0].astype(float), rec.labels[0]
            values.append(f[lab == Structure.MYO].mean() - f[lab == Structure.LV].mean())
        contrast[name] = float(np.mean(values))
    assert contrast["poor"] < 0.8 * contrast["good"]


def test_generate_site_names_splits_and_seeds() -> None:
    site = generate_site(VENDORS["C"], 10, seed=7, size=(48, 48))
    assert [r.case_id for r in site] == [f"case{i:04d}" for i in range(1, 11)]
    assert sorted(r.split for r in site) == ["test"] + ["train"] * 8 + ["val"]
    again = generate_site(VENDORS["C"], 12, seed=7, size=(48, 48))
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(site, again[:10], strict=False))
    other_vendor = generate_recording(
        VENDORS["D"], seed=case_seed(7, "C", 0), case_id="x", size=(48, 48)
    )
    assert other_vendor.info["ef"] == site[0].info["ef"]  # the case seed alone fixes the heart
    assert case_seed(7, "C", 0) != case_seed(7, "D", 0) != case_seed(8, "C", 0)
    assert len({case_seed(7, "C", i) for i in range(100)}) == 100


def test_split_assignment_and_argument_errors() -> None:
    assert assign_splits(5, (1.0, 0.0, 0.0), 0) == ["train"] * 5
    counts = assign_splits(20, (0.5, 0.25, 0.25), 0)
    assert (counts.count("train"), counts.count("val"), counts.count("test")) == (10, 5, 5)
    with pytest.raises(ValueError, match="split_fractions"):
        assign_splits(4, (0.5, 0.6, 0.0), 0)
    with pytest.raises(ValueError, match="n_frames"):
        generate_recording(VENDORS["A"], seed=0, case_id="x", n_frames=1)
    with pytest.raises(ValueError, match="size"):
        generate_recording(VENDORS["A"], seed=0, case_id="x", size=(8, 8))


@pytest.mark.parametrize("vendor", list(VENDORS))
def test_lv_and_la_masks_lie_inside_the_sector(vendor: str) -> None:
    # Rasterise LV and LA without the sector cut, then count how much of each the cut removes.
    for seed in range(4):
        case = render_case(VENDORS[vendor], seed=seed, case_id="c", size=(64, 64))
        geometry = case.geometry
        for c in (0.0, 1.0):
            shape = heart_at(case.params, c)
            size = (128, 128)
            inside = sector_mask(geometry, size)
            for poly in (shape.lv, shape.la):
                canvas = np.zeros(size, np.uint8)
                fill_polygon(canvas, geometry.to_pixels(poly, size), 1)
                assert canvas.sum() > 50
                assert canvas[inside].sum() / canvas.sum() >= 0.95
