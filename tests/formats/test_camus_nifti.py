"""CAMUS NIfTI release: write -> load round trips and malformed-input errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.data.formats import camus_nifti
from common.data.formats.recording import Recording
from common.data.formats.splits import hash_split
from common.errors import DataError
from common.labels import Structure

from .conftest import MakeRecording


@pytest.fixture
def site(tmp_path: Path, three_cases: list[Recording]) -> Path:
    camus_nifti.write(tmp_path, three_cases)
    return tmp_path


def _by_key(samples: list) -> dict[tuple[str, str, str | None, int | None], object]:
    return {(s.meta.case_id, s.meta.view, s.meta.phase, s.meta.frame): s for s in samples}


def test_tree_layout_and_cfg(site: Path, three_cases: list[Recording]) -> None:
    folder = site / "database_nifti" / "patient0001"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "Info_4CH.cfg",
        "patient0001_4CH_ED.nii.gz",
        "patient0001_4CH_ED_gt.nii.gz",
        "patient0001_4CH_ES.nii.gz",
        "patient0001_4CH_ES_gt.nii.gz",
        "patient0001_4CH_half_sequence.nii.gz",
        "patient0001_4CH_half_sequence_gt.nii.gz",
    ]
    cfg = camus_nifti.read_cfg(folder / "Info_4CH.cfg")
    assert {k: cfg[k] for k in ("ED", "ES", "NbFrame", "Sex", "Age", "ImageQuality")} == {
        "ED": "1",
        "ES": "3",
        "NbFrame": "3",
        "Sex": "F",
        "Age": "61",
        "ImageQuality": "Good",
    }
    assert 0.0 < float(cfg["EF"]) < 80.0
    # nibabel order on disk: (W, H), zooms (col, row)
    image = nib.load(str(folder / "patient0001_4CH_ED.nii.gz"))
    assert image.shape == (40, 48)
    assert image.header.get_zooms() == pytest.approx((0.15, 0.3))
    splits = {
        name: (site / "database_split" / name).read_text().split()
        for name in ("subgroup_training.txt", "subgroup_validation.txt", "subgroup_testing.txt")
    }
    assert splits == {
        "subgroup_training.txt": ["patient0001"],
        "subgroup_validation.txt": ["patient0002"],
        "subgroup_testing.txt": ["patient0003"],
    }


def test_round_trip_ed_es(site: Path, three_cases: list[Recording]) -> None:
    samples = camus_nifti.load(site, site="camus")
    assert len(samples) == 6
    by_key = _by_key(samples)
    for rec in three_cases:
        for phase, index in (("ED", rec.ed), ("ES", rec.es)):
            frame = 0 if phase == "ED" else abs(rec.es - rec.ed)
            s = by_key[(rec.case_id, "4CH", phase, frame)]
            np.testing.assert_array_equal(s.mask, rec.labels[index])
            np.testing.assert_array_equal(s.full_mask, rec.labels[index])
            np.testing.assert_array_equal(s.image, rec.frames[index].astype(np.float32))
            assert s.image.dtype == np.float32
            assert s.labelled == {Structure.LV, Structure.MYO, Structure.LA}
            assert s.meta.site == "camus"
            assert s.meta.split == rec.split
            assert s.meta.spacing_mm == pytest.approx(rec.spacing_mm, rel=1e-6)
            assert s.meta.quality == rec.info.get("quality")
            assert s.meta.source.endswith(f"{rec.case_id}_4CH_{phase}_gt.nii.gz")


def test_half_sequence(site: Path, three_cases: list[Recording]) -> None:
    samples = camus_nifti.load(site, site="camus", use_half_sequence=True)
    # half sequences: frames ED..ES inclusive = 3, 4, 3 frames
    assert len(samples) == 3 + 4 + 3
    rec = three_cases[1]  # ed 0, es 3
    seq = [s for s in samples if s.meta.case_id == rec.case_id]
    assert [s.meta.frame for s in seq] == [0, 1, 2, 3]
    assert [s.meta.phase for s in seq] == ["ED", None, None, "ES"]
    for s in seq:
        np.testing.assert_array_equal(s.mask, rec.labels[s.meta.frame])
        np.testing.assert_array_equal(s.full_mask, rec.labels[s.meta.frame])
        assert s.meta.source.endswith("patient0002_4CH_half_sequence_gt.nii.gz")


def test_half_sequence_of_a_recording_with_es_before_ed(
    tmp_path: Path, make_recording: MakeRecording
) -> None:
    rec = make_recording("patient0009", n_frames=5, ed=4, es=1)
    camus_nifti.write(tmp_path, [rec])
    seq = camus_nifti.load(tmp_path, site="s", use_half_sequence=True)
    assert [s.meta.phase for s in seq] == ["ED", None, None, "ES"]
    for s, index in zip(seq, [4, 3, 2, 1], strict=True):
        np.testing.assert_array_equal(s.mask, rec.labels[index])


def test_views_2ch_and_4ch(tmp_path: Path, make_recording: MakeRecording) -> None:
    recs = [
        make_recording("patient0001", view="4CH", seed=1),
        make_recording("patient0001", view="2CH", seed=2, shape=(40, 36)),
    ]
    camus_nifti.write(tmp_path, recs)
    only_4ch = camus_nifti.load(tmp_path, site="s")
    assert {s.meta.view for s in only_4ch} == {"4CH"}
    both = camus_nifti.load(tmp_path, site="s", views=("2CH", "4CH"))
    assert sorted((s.meta.view, s.meta.phase) for s in both) == [
        ("2CH", "ED"),
        ("2CH", "ES"),
        ("4CH", "ED"),
        ("4CH", "ES"),
    ]
    two = next(s for s in both if s.meta.view == "2CH" and s.meta.phase == "ES")
    np.testing.assert_array_equal(two.mask, recs[1].labels[2])
    with pytest.raises(ValueError, match="views"):
        camus_nifti.load(tmp_path, site="s", views=("3CH",))


def test_ed_after_es_is_swapped_with_a_warning(site: Path, three_cases: list[Recording]) -> None:
    cfg = site / "database_nifti" / "patient0002" / "Info_4CH.cfg"
    text = cfg.read_text().replace("ED: 1\nES: 4\n", "ED: 4\nES: 1\n")
    cfg.write_text(text)
    with pytest.warns(UserWarning, match=r"patient0002.Info_4CH\.cfg.*swapping"):
        samples = camus_nifti.load(site, site="s", use_half_sequence=True)
    seq = [s for s in samples if s.meta.case_id == "patient0002"]
    assert [s.meta.phase for s in seq] == ["ED", None, None, "ES"]


def test_split_files_are_honoured(site: Path) -> None:
    split_dir = site / "database_split"
    (split_dir / "subgroup_training.txt").write_text("patient0001\npatient0003\n")
    (split_dir / "subgroup_testing.txt").write_text("")
    samples = camus_nifti.load(site, site="s")
    assert {s.meta.case_id: s.meta.split for s in samples} == {
        "patient0001": "train",
        "patient0002": "val",
        "patient0003": "train",
    }


def test_patient_in_no_split_file_is_an_error(site: Path) -> None:
    (site / "database_split" / "subgroup_testing.txt").write_text("\n")
    with pytest.raises(DataError, match=r"'patient0003' is in no split file"):
        camus_nifti.load(site, site="s")


def test_without_split_files_the_split_is_a_hash(site: Path) -> None:
    for path in (site / "database_split").iterdir():
        path.unlink()
    samples = camus_nifti.load(site, site="s")
    for s in samples:
        assert s.meta.split == hash_split(s.meta.case_id, (0.8, 0.1, 0.1))


def test_without_full_ground_truth_file(site: Path) -> None:
    (site / "echofl-full-ground-truth.npz").unlink()
    samples = camus_nifti.load(site, site="s")
    assert all(s.full_mask is None for s in samples)


def test_writer_refuses_other_labelled_sets(tmp_path: Path, three_cases: list[Recording]) -> None:
    with pytest.raises(ValueError, match="always carries"):
        camus_nifti.write(tmp_path, three_cases, labelled=frozenset({Structure.LV}))


# ---------------------------------------------------------------- malformed input


def test_missing_mask(site: Path) -> None:
    (site / "database_nifti" / "patient0001" / "patient0001_4CH_ED_gt.nii.gz").unlink()
    with pytest.raises(DataError, match=r"patient0001_4CH_ED_gt\.nii\.gz: missing ground-truth"):
        camus_nifti.load(site, site="s")


def test_label_outside_the_schema(site: Path) -> None:
    path = site / "database_nifti" / "patient0002" / "patient0002_4CH_ES_gt.nii.gz"
    image = nib.load(str(path))
    data = np.asarray(image.dataobj).copy()
    data[3, 4] = 7
    nib.save(nib.Nifti1Image(data, image.affine, image.header), str(path))
    with pytest.raises(DataError, match=r"patient0002_4CH_ES_gt\.nii\.gz: .*value\(s\) 7 outside"):
        camus_nifti.load(site, site="s")


def test_image_mask_shape_mismatch(site: Path) -> None:
    path = site / "database_nifti" / "patient0003" / "patient0003_4CH_ED_gt.nii.gz"
    camus_nifti.write_nifti(path, np.zeros((30, 20), np.uint8), (0.3, 0.15))
    with pytest.raises(DataError, match=r"patient0003_4CH_ED_gt\.nii\.gz: image/mask shape"):
        camus_nifti.load(site, site="s")


def test_corrupt_nifti(site: Path) -> None:
    path = site / "database_nifti" / "patient0001" / "patient0001_4CH_ES.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header"))
    with pytest.raises(DataError, match=r"patient0001_4CH_ES\.nii\.gz: unreadable NIfTI"):
        camus_nifti.load(site, site="s")


def test_bad_cfg_line(site: Path) -> None:
    cfg = site / "database_nifti" / "patient0001" / "Info_4CH.cfg"
    cfg.write_text("ED: 1\nES 3\n")
    with pytest.raises(DataError, match=r"Info_4CH\.cfg: line 2: expected 'Key: value'"):
        camus_nifti.load(site, site="s")


def test_non_integer_cfg_frame(site: Path) -> None:
    cfg = site / "database_nifti" / "patient0001" / "Info_4CH.cfg"
    cfg.write_text("ED: one\nES: 3\n")
    with pytest.raises(DataError, match=r"Info_4CH\.cfg: ED: expected an integer, got 'one'"):
        camus_nifti.load(site, site="s")


def test_not_a_camus_tree(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no database_nifti/ folder"):
        camus_nifti.load(tmp_path, site="s")
