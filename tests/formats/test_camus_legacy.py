"""CAMUS legacy (.mhd/.raw) release: round trips, fold lists and malformed input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from common.data.formats import camus_legacy
from common.data.formats.camus_nifti import read_cfg
from common.data.formats.recording import Recording
from common.data.formats.splits import hash_split
from common.data.sample import Split
from common.errors import DataError
from common.labels import Structure

from .conftest import MakeRecording


@pytest.fixture
def site(tmp_path: Path, three_cases: list[Recording]) -> Path:
    camus_legacy.write(tmp_path, three_cases)
    return tmp_path


def test_tree_layout(site: Path) -> None:
    folder = site / "training" / "patient0002"
    assert sorted(p.name for p in folder.iterdir()) == [
        "Info_4CH.cfg",
        "patient0002_4CH_ED.mhd",
        "patient0002_4CH_ED.raw",
        "patient0002_4CH_ED_gt.mhd",
        "patient0002_4CH_ED_gt.raw",
        "patient0002_4CH_ES.mhd",
        "patient0002_4CH_ES.raw",
        "patient0002_4CH_ES_gt.mhd",
        "patient0002_4CH_ES_gt.raw",
        "patient0002_4CH_sequence.mhd",
        "patient0002_4CH_sequence.raw",
    ]
    image = sitk.ReadImage(str(folder / "patient0002_4CH_ED.mhd"))
    assert sitk.GetArrayFromImage(image).shape == (1, 48, 40)
    assert image.GetSpacing() == pytest.approx((0.125, 0.25, 1.0))
    sequence = sitk.ReadImage(str(folder / "patient0002_4CH_sequence.mhd"))
    assert sitk.GetArrayFromImage(sequence).shape == (4, 48, 40)
    cfg = read_cfg(folder / "Info_4CH.cfg")
    assert (cfg["ED"], cfg["ES"], cfg["NbFrame"]) == ("1", "4", "4")
    edv, esv, ef = float(cfg["LVedv"]), float(cfg["LVesv"]), float(cfg["LVef"])
    assert edv > esv > 0
    assert ef == pytest.approx(100 * (edv - esv) / edv, abs=0.05)
    assert "EF" not in cfg


def test_round_trip(site: Path, three_cases: list[Recording]) -> None:
    samples = camus_legacy.load(site, site="legacy")
    assert len(samples) == 6
    for rec in three_cases:
        for phase, index in (("ED", rec.ed), ("ES", rec.es)):
            (s,) = [x for x in samples if (x.meta.case_id, x.meta.phase) == (rec.case_id, phase)]
            np.testing.assert_array_equal(s.mask, rec.labels[index])
            np.testing.assert_array_equal(s.full_mask, rec.labels[index])
            np.testing.assert_array_equal(s.image, rec.frames[index].astype(np.float32))
            assert s.meta.spacing_mm == pytest.approx(rec.spacing_mm, rel=1e-9)
            assert s.meta.split == rec.split  # fold 1 is the recordings' own split
            assert s.meta.frame == (0 if phase == "ED" else abs(rec.es - rec.ed))
            assert s.meta.quality == rec.info.get("quality")
            assert s.meta.source.endswith(f"{rec.case_id}_4CH_{phase}_gt.mhd")
            assert s.labelled == {Structure.LV, Structure.MYO, Structure.LA}
    explicit_ef = next(s for s in samples if s.meta.case_id == "patient0003")
    assert explicit_ef.meta.extra["ef"] == "48.0"


def _splits(n_test: int, n_val: int, n_train: int) -> dict[str, Split]:
    ids = [f"p{i:02d}" for i in range(n_test + n_val + n_train)]
    kinds: list[Split] = ["test"] * n_test + ["val"] * n_val + ["train"] * n_train
    return dict(zip(ids, kinds, strict=True))


def test_derive_folds_rotates_a_partition() -> None:
    splits = _splits(2, 2, 16)
    folds = camus_legacy.derive_folds(splits)
    assert sorted(folds) == list(range(1, 11))
    assert folds[1] == {
        "train": sorted(c for c, s in splits.items() if s == "train"),
        "val": ["p02", "p03"],
        "test": ["p00", "p01"],
    }
    assert folds[2] == {
        "train": sorted(["p00", "p01"] + [f"p{i:02d}" for i in range(6, 20)]),
        "val": ["p04", "p05"],
        "test": ["p02", "p03"],
    }
    for fold in folds.values():
        members = fold["train"] + fold["val"] + fold["test"]
        assert sorted(members) == sorted(splits)  # each fold is a partition
        assert (len(fold["test"]), len(fold["val"])) == (2, 2)
    # with a 10 % test share the ten test sets tile the patients
    assert sorted(c for f in folds.values() for c in f["test"]) == sorted(splits)


def test_fold_option_selects_the_fold_lists(tmp_path: Path, make_recording: MakeRecording) -> None:
    kinds: list[Split] = ["test", "val"] + ["train"] * 8
    recs = [
        make_recording(f"patient{i:04d}", shape=(24, 20), n_frames=3, split=kind, seed=i)
        for i, kind in enumerate(kinds, start=1)
    ]
    camus_legacy.write(tmp_path, recs)
    expected = camus_legacy.derive_folds({r.case_id: r.split for r in recs})
    lines = (tmp_path / "listSubGroups" / "subGroup3_testing.txt").read_text().split()
    assert lines == expected[3]["test"] == ["patient0003"]
    samples = camus_legacy.load(tmp_path, site="s", fold=3)
    got = {s.meta.case_id: s.meta.split for s in samples}
    assert got == {c: s for s, ids in expected[3].items() for c in ids}
    assert got["patient0001"] == "train"  # test in fold 1
    with pytest.raises(ValueError, match=r"fold must be an integer in 1\.\.10"):
        camus_legacy.load(tmp_path, site="s", fold=11)


def test_without_fold_lists_the_split_is_a_hash(site: Path) -> None:
    for path in (site / "listSubGroups").iterdir():
        path.unlink()
    (site / "listSubGroups").rmdir()
    samples = camus_legacy.load(site, site="s")
    assert {s.meta.split for s in samples} <= {"train", "val", "test"}
    for s in samples:
        assert s.meta.split == hash_split(s.meta.case_id)


def test_missing_fold_file(site: Path) -> None:
    (site / "listSubGroups" / "subGroup4_validation.txt").unlink()
    with pytest.raises(DataError, match=r"subGroup4_validation\.txt: missing split list"):
        camus_legacy.load(site, site="s", fold=4)


# ---------------------------------------------------------------- malformed input


def test_missing_mask(site: Path) -> None:
    (site / "training" / "patient0003" / "patient0003_4CH_ES_gt.mhd").unlink()
    with pytest.raises(DataError, match=r"patient0003_4CH_ES_gt\.mhd: missing ground-truth mask"):
        camus_legacy.load(site, site="s")


def test_truncated_raw(site: Path) -> None:
    raw = site / "training" / "patient0001" / "patient0001_4CH_ED.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(DataError, match=r"patient0001_4CH_ED\.mhd: unreadable MetaImage"):
        camus_legacy.load(site, site="s")


def test_label_outside_the_schema(site: Path) -> None:
    path = site / "training" / "patient0001" / "patient0001_4CH_ED_gt.mhd"
    mask, spacing = camus_legacy.read_mhd(path)
    mask = mask.copy()
    mask[0, 0] = 5
    camus_legacy.write_mhd(path, mask, spacing)
    with pytest.raises(DataError, match=r"patient0001_4CH_ED_gt\.mhd: .*value\(s\) 5 outside"):
        camus_legacy.load(site, site="s")


def test_bad_cfg_line(site: Path) -> None:
    cfg = site / "training" / "patient0002" / "Info_4CH.cfg"
    cfg.write_text(cfg.read_text() + "garbage without colon\n")
    with pytest.raises(DataError, match=r"patient0002.Info_4CH\.cfg: line \d+: expected"):
        camus_legacy.load(site, site="s")


def test_without_simpleitk_the_legacy_reader_says_which_extra_to_install(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SimpleITK is optional (only this reader uses it): reading a legacy tree without it names
    the file and the install extra, instead of an ImportError at import time."""
    import sys

    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import SimpleITK -> ImportError
    header = next(site.rglob("*.mhd"))
    with pytest.raises(DataError) as err:
        camus_legacy.read_mhd(header)
    assert str(header) in str(err.value)
    assert "pip install 'echofl[camus-legacy]'" in str(err.value)
