"""HMC-QU: round trip through AVI + .mat + A4C.xlsx, splits, stride and malformed input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openpyxl
import pytest
import scipy.io

from common.data.formats import hmc_qu
from common.data.formats.recording import Recording
from common.data.formats.splits import hash_split
from common.errors import DataError
from common.labels import Structure

from .conftest import MakeRecording

VIDEO_SIZE = (300, 240)  # (width, height): larger than the 224 masks, small for speed
MASKS = "LV Ground-truth Segmentation Masks"


@pytest.fixture
def recordings(make_recording: MakeRecording) -> list[Recording]:
    return [
        make_recording("ES0001", shape=(224, 224), n_frames=4, ed=0, es=2, fps=25.0, seed=1),
        make_recording(
            "ES0002",
            shape=(224, 224),
            n_frames=5,
            ed=1,
            es=3,
            fps=25.0,
            info={"seg1": "1", "seg7": "1"},
            seed=2,
        ),
    ]


@pytest.fixture
def site(tmp_path: Path, recordings: list[Recording]) -> Path:
    hmc_qu.write(tmp_path, recordings, video_size=VIDEO_SIZE)
    return tmp_path


def test_tree_layout_and_spreadsheet(site: Path) -> None:
    assert sorted(p.name for p in (site / "HMC-QU" / "A4C").iterdir()) == [
        "ES0001 _4CH_1.avi",
        "ES0002 _4CH_1.avi",
    ]
    assert sorted(p.name for p in (site / MASKS).iterdir()) == [
        "Mask_ES0001 _4CH_1.mat",
        "Mask_ES0002 _4CH_1.mat",
    ]
    content = scipy.io.loadmat(str(site / MASKS / "Mask_ES0002 _4CH_1.mat"))
    assert content["predicted"].dtype == np.uint8
    assert content["predicted"].shape == (4, 224, 224)  # frames 1..4 (from ED)
    assert set(np.unique(content["predicted"])) == {0, 1}
    sheet = openpyxl.load_workbook(site / "A4C.xlsx").active
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert rows == [
        [
            "ECHO",
            "SEG1",
            "SEG2",
            "SEG3",
            "SEG5",
            "SEG6",
            "SEG7",
            "One cardiac-cycle frames",
            None,
            "LV Wall Ground-truth Segmentation Masks",
        ],
        ["ES0001 _4CH_1", 0, 0, 0, 0, 0, 0, 1, 4, "ü"],
        ["ES0002 _4CH_1", 1, 0, 0, 0, 0, 1, 2, 5, "ü"],
    ]
    assert [str(r) for r in sheet.merged_cells.ranges] == ["H1:I1"]


def test_round_trip(site: Path, recordings: list[Recording]) -> None:
    samples = hmc_qu.load(site, site="hmc")
    assert len(samples) == 4 + 4
    for rec in recordings:
        echo = f"{rec.case_id} _4CH_1"
        got = [s for s in samples if s.meta.case_id == echo]
        assert [s.meta.frame for s in got] == list(range(rec.ed, rec.frames.shape[0]))
        for s in got:
            labels = rec.labels[s.meta.frame]
            expected = np.where(labels == Structure.MYO, Structure.MYO, 0)
            np.testing.assert_array_equal(s.mask, expected)
            np.testing.assert_array_equal(s.full_mask, labels)
            assert s.labelled == {Structure.MYO}
            assert s.image.shape == (224, 224)
            assert s.image.dtype == np.float32
            # upsampled, MJPG-compressed, then resized back: close to the source frame
            assert np.abs(s.image - rec.frames[s.meta.frame]).mean() < 12.0
            assert s.meta.phase is None
            assert s.meta.spacing_mm is None
            assert s.meta.view == "4CH"
            assert s.meta.split == hash_split(echo, (0.7, 0.15, 0.15))
            assert s.meta.source.endswith(f"Mask_{echo}.mat")


def test_frame_stride_and_split_override(site: Path) -> None:
    samples = hmc_qu.load(site, site="hmc", frame_stride=2, splits={"ES0002 _4CH_1": "test"})
    assert [(s.meta.case_id, s.meta.frame) for s in samples] == [
        ("ES0001 _4CH_1", 0),
        ("ES0001 _4CH_1", 2),
        ("ES0002 _4CH_1", 1),
        ("ES0002 _4CH_1", 3),
    ]
    assert {s.meta.split for s in samples if s.meta.case_id == "ES0002 _4CH_1"} == {"test"}
    with pytest.raises(ValueError, match="frame_stride"):
        hmc_qu.load(site, site="hmc", frame_stride=0)


def test_split_fractions(site: Path) -> None:
    samples = hmc_qu.load(site, site="hmc", split_fractions=(0.0, 0.0, 1.0))
    assert {s.meta.split for s in samples} == {"test"}


def test_unflagged_recording_is_skipped(site: Path) -> None:
    workbook = openpyxl.load_workbook(site / "A4C.xlsx")
    workbook.active["J2"] = "û"
    workbook.save(site / "A4C.xlsx")
    samples = hmc_qu.load(site, site="hmc")
    assert {s.meta.case_id for s in samples} == {"ES0002 _4CH_1"}


def test_cycle_end_disagreeing_with_the_mask_warns(site: Path) -> None:
    workbook = openpyxl.load_workbook(site / "A4C.xlsx")
    workbook.active["I3"] = 9
    workbook.save(site / "A4C.xlsx")
    with pytest.warns(UserWarning, match=r"A4C\.xlsx: row 3 \(ES0002 _4CH_1\): cycle 2\.\.9"):
        samples = hmc_qu.load(site, site="hmc")
    assert len(samples) == 8


# ---------------------------------------------------------------- malformed input


def test_missing_spreadsheet(site: Path) -> None:
    (site / "A4C.xlsx").unlink()
    with pytest.raises(DataError, match=r"A4C\.xlsx: missing spreadsheet"):
        hmc_qu.load(site, site="hmc")


def test_corrupt_spreadsheet(site: Path) -> None:
    (site / "A4C.xlsx").write_bytes(b"PK not really a zip")
    with pytest.raises(DataError, match=r"A4C\.xlsx: unreadable spreadsheet"):
        hmc_qu.load(site, site="hmc")


def test_spreadsheet_without_mask_column(site: Path) -> None:
    workbook = openpyxl.load_workbook(site / "A4C.xlsx")
    workbook.active["J1"] = "Masks?"
    workbook.save(site / "A4C.xlsx")
    with pytest.raises(
        DataError, match=r"A4C\.xlsx: missing column 'LV Wall Ground-truth Segmentation Masks'"
    ):
        hmc_qu.load(site, site="hmc")


def test_mat_without_predicted(site: Path) -> None:
    path = site / MASKS / "Mask_ES0001 _4CH_1.mat"
    scipy.io.savemat(str(path), {"mask": np.zeros((4, 224, 224), np.uint8)})
    with pytest.raises(DataError, match=r"Mask_ES0001 _4CH_1\.mat: no variable 'predicted'"):
        hmc_qu.load(site, site="hmc")


def test_mask_value_outside_hmc_qu_labels(site: Path) -> None:
    path = site / MASKS / "Mask_ES0002 _4CH_1.mat"
    predicted = scipy.io.loadmat(str(path))["predicted"]
    predicted[0, 10, 10] = 3
    scipy.io.savemat(str(path), {"predicted": predicted})
    with pytest.raises(DataError, match=r"Mask_ES0002 _4CH_1\.mat: label value\(s\) 3 outside"):
        hmc_qu.load(site, site="hmc")


def test_missing_mask_file(site: Path) -> None:
    (site / MASKS / "Mask_ES0001 _4CH_1.mat").unlink()
    with pytest.raises(DataError, match=r"Mask_ES0001 _4CH_1\.mat: missing mask file"):
        hmc_qu.load(site, site="hmc")


def test_corrupt_mat(site: Path) -> None:
    (site / MASKS / "Mask_ES0001 _4CH_1.mat").write_bytes(b"MATLAB 5.0 MAT-file garbage")
    with pytest.raises(DataError, match=r"Mask_ES0001 _4CH_1\.mat: unreadable \.mat"):
        hmc_qu.load(site, site="hmc")


def test_cycle_beyond_the_video(site: Path) -> None:
    workbook = openpyxl.load_workbook(site / "A4C.xlsx")
    workbook.active["H2"] = 3
    workbook.save(site / "A4C.xlsx")
    with (
        pytest.warns(UserWarning, match=r"cycle 3\.\.4"),
        pytest.raises(DataError, match=r"ES0001 _4CH_1\.avi: annotated frames 3\.\.6"),
    ):
        hmc_qu.load(site, site="hmc")


def test_mask_size_mismatch_with_full_ground_truth(site: Path) -> None:
    path = site / MASKS / "Mask_ES0001 _4CH_1.mat"
    scipy.io.savemat(str(path), {"predicted": np.zeros((4, 200, 200), np.uint8)})
    with pytest.raises(DataError, match=r"Mask_ES0001 _4CH_1\.mat: full ground truth shape"):
        hmc_qu.load(site, site="hmc")
