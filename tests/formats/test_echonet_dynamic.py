"""EchoNet-Dynamic: tracing round trip, the official mask rule, skips and malformed input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from common.data.formats import echonet_dynamic
from common.data.formats.lv_tracing import disk_volume_ml, trace_lv, tracing_mask
from common.data.formats.recording import Recording
from common.errors import DataError
from common.labels import Structure

from .conftest import MakeRecording, dice


@pytest.fixture
def recordings(make_recording: MakeRecording) -> list[Recording]:
    return [
        make_recording("0X1A", shape=(112, 112), n_frames=5, ed=0, es=3, split="train", seed=1),
        make_recording(
            "0X2B", shape=(112, 112), n_frames=4, ed=3, es=1, split="val", tilt_deg=10.0, seed=2
        ),
        make_recording(
            "0X3C",
            shape=(112, 112),
            n_frames=4,
            ed=1,
            es=3,
            split="test",
            tilt_deg=-12.0,
            spacing_mm=(0.4, 0.4),
            info={"ef": "61.5"},
            seed=3,
        ),
    ]


@pytest.fixture
def site(tmp_path: Path, recordings: list[Recording]) -> Path:
    echonet_dynamic.write(tmp_path, recordings)
    return tmp_path


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_csv_layout(site: Path, recordings: list[Recording]) -> None:
    file_list = _read(site / "FileList.csv")
    assert file_list[0] == [
        "FileName",
        "EF",
        "ESV",
        "EDV",
        "FrameHeight",
        "FrameWidth",
        "FPS",
        "NumberOfFrames",
        "Split",
    ]
    assert [r[0] for r in file_list[1:]] == ["0X1A", "0X2B", "0X3C"]
    assert [r[4:] for r in file_list[1:]] == [
        ["112", "112", "50", "5", "TRAIN"],
        ["112", "112", "50", "4", "VAL"],
        ["112", "112", "50", "4", "TEST"],
    ]
    ef, esv, edv = (float(v) for v in file_list[1][1:4])
    assert edv > esv > 0
    assert ef == pytest.approx(100 * (edv - esv) / edv, rel=1e-4)
    assert file_list[3][1] == "61.5"  # info["ef"] wins
    tracings = _read(site / "VolumeTracings.csv")
    assert tracings[0] == ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]
    counts: dict[tuple[str, str], int] = {}
    for row in tracings[1:]:
        counts[(row[0], row[5])] = counts.get((row[0], row[5]), 0) + 1
    assert counts == {
        ("0X1A.avi", "0"): 21,
        ("0X1A.avi", "3"): 21,
        ("0X2B.avi", "1"): 21,
        ("0X2B.avi", "3"): 21,
        ("0X3C.avi", "1"): 21,
        ("0X3C.avi", "3"): 21,
    }
    assert sorted(p.name for p in (site / "Videos").iterdir()) == [
        "0X1A.avi",
        "0X2B.avi",
        "0X3C.avi",
    ]


def test_round_trip_lv_dice(site: Path, recordings: list[Recording]) -> None:
    samples = echonet_dynamic.load(site, site="echonet")
    assert len(samples) == 6
    scores = []
    for rec in recordings:
        for phase, index in (("ED", rec.ed), ("ES", rec.es)):
            (s,) = [x for x in samples if (x.meta.case_id, x.meta.phase) == (rec.case_id, phase)]
            assert s.meta.frame == index
            assert s.meta.split == rec.split
            assert s.meta.spacing_mm is None
            assert s.meta.view == "4CH"
            assert s.meta.source.endswith("VolumeTracings.csv")
            assert s.labelled == {Structure.LV}
            assert set(np.unique(s.mask)) == {0, 1}
            np.testing.assert_array_equal(s.full_mask, rec.labels[index])
            # MJPG is lossy: the image is close to, not equal to, the source frame
            assert s.image.shape == (112, 112)
            assert np.abs(s.image - rec.frames[index]).mean() < 8.0
            scores.append(dice(s.mask == Structure.LV, rec.labels[index] == Structure.LV))
    assert min(scores) >= 0.95, scores


def test_official_rule_on_a_hand_made_tracing() -> None:
    # long axis, then three chords of a rectangle x 2..5, y 1..3 (with a .4 rounding down)
    rows = np.array(
        [
            [3.5, 0.0, 3.5, 4.0],
            [2.0, 1.0, 5.0, 1.0],
            [2.4, 2.0, 5.0, 2.0],
            [2.0, 3.0, 4.6, 3.0],
        ]
    )
    expected = np.zeros((5, 7), dtype=bool)
    expected[1:4, 2:6] = True
    np.testing.assert_array_equal(tracing_mask(rows, (5, 7)), expected)
    # clipped to the frame
    assert tracing_mask(rows + np.array([0, 0, 4, 0]), (5, 7)).sum() == 3 * 5


def test_trace_lv_reproduces_the_lv_and_its_volume(make_recording: MakeRecording) -> None:
    rec = make_recording("x", shape=(112, 112), tilt_deg=12.0)
    rows = trace_lv(rec.labels[0])
    assert rows.shape == (21, 4)
    lv = rec.labels[0] == Structure.LV
    assert dice(tracing_mask(rows, lv.shape), lv) >= 0.97
    # a disk of the same chords stacked over the axis: a cylinder of diameter d, length L
    cylinder = np.array([[0, 0, 0, 10]] + [[-1, y, 1, y] for y in np.linspace(0, 10, 20)], float)
    assert disk_volume_ml(cylinder, (1.0, 1.0)) == pytest.approx(np.pi / 4 * 4 * 10 / 1000)


def test_trace_lv_without_myocardium_uses_the_principal_axis(
    make_recording: MakeRecording,
) -> None:
    labels = make_recording("x", shape=(112, 112), tilt_deg=-10.0).labels[2]
    lv_only = np.where(labels == Structure.LV, labels, 0).astype(np.uint8)
    rows = trace_lv(lv_only)
    assert rows[0, 1] < rows[0, 3]  # apex (X1, Y1) above the mitral midpoint (X2, Y2)
    assert dice(tracing_mask(rows, lv_only.shape), lv_only == Structure.LV) >= 0.95
    with pytest.raises(ValueError, match="no LV pixel"):
        trace_lv(np.zeros((8, 8), np.uint8))


def test_larger_area_is_ed(site: Path) -> None:
    samples = echonet_dynamic.load(site, site="s")
    for case in ("0X1A", "0X2B", "0X3C"):
        ed, es = (
            next(s for s in samples if s.meta.case_id == case and s.meta.phase == p)
            for p in ("ED", "ES")
        )
        assert ed.mask.sum() > es.mask.sum()


def _rewrite_tracings(site: Path, keep) -> None:
    rows = _read(site / "VolumeTracings.csv")
    with (site / "VolumeTracings.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([rows[0], *[r for r in rows[1:] if keep(r)]])


def test_video_with_one_traced_frame_is_skipped(site: Path) -> None:
    _rewrite_tracings(site, lambda r: not (r[0] == "0X2B.avi" and r[5] == "1"))
    with pytest.warns(UserWarning, match=r"skipped 1 video\(s\).*0X2B \(1 traced frame"):
        samples = echonet_dynamic.load(site, site="s")
    assert sorted({s.meta.case_id for s in samples}) == ["0X1A", "0X3C"]
    assert len(samples) == 4


def test_traced_frame_beyond_the_video_is_skipped(site: Path) -> None:
    rows = _read(site / "VolumeTracings.csv")
    for row in rows[1:]:
        if row[0] == "0X1A.avi" and row[5] == "3":
            row[5] = "5"  # the clip has frames 0..4
    with (site / "VolumeTracings.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.warns(UserWarning, match=r"skipped 1 video.*0X1A \(traced frame 5 >= 5 frames\)"):
        samples = echonet_dynamic.load(site, site="s")
    assert len(samples) == 4


# ---------------------------------------------------------------- malformed input


def test_tracing_with_too_few_rows(site: Path) -> None:
    kept: dict[str, int] = {"n": 0}

    def keep(row: list[str]) -> bool:
        if row[0] == "0X3C.avi" and row[5] == "1":
            kept["n"] += 1
            return kept["n"] <= 2
        return True

    _rewrite_tracings(site, keep)
    with pytest.raises(
        DataError, match=r"VolumeTracings\.csv: 0X3C\.avi frame 1: 2 row\(s\); .* at least 3"
    ):
        echonet_dynamic.load(site, site="s")


def test_missing_file_list_column(site: Path) -> None:
    rows = _read(site / "FileList.csv")
    with (site / "FileList.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([r[:-1] for r in rows])
    with pytest.raises(DataError, match=r"FileList\.csv: missing column\(s\) Split"):
        echonet_dynamic.load(site, site="s")


def test_missing_tracing_column(site: Path) -> None:
    rows = _read(site / "VolumeTracings.csv")
    rows[0][5] = "frame"
    with (site / "VolumeTracings.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(DataError, match=r"VolumeTracings\.csv: missing column\(s\) Frame"):
        echonet_dynamic.load(site, site="s")


def test_bad_number_in_tracings(site: Path) -> None:
    rows = _read(site / "VolumeTracings.csv")
    rows[4][2] = "abc"
    with (site / "VolumeTracings.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(DataError, match=r"VolumeTracings\.csv: line 5: Y1: expected a number"):
        echonet_dynamic.load(site, site="s")


def test_unknown_split(site: Path) -> None:
    text = (site / "FileList.csv").read_text().replace("VAL", "HOLDOUT")
    (site / "FileList.csv").write_text(text)
    with pytest.raises(DataError, match=r"FileList\.csv: line 3: Split 'HOLDOUT'"):
        echonet_dynamic.load(site, site="s")


def test_corrupt_video(site: Path) -> None:
    (site / "Videos" / "0X2B.avi").write_bytes(b"RIFF....AVI garbage" * 4)
    with pytest.raises(DataError, match=r"0X2B\.avi: unreadable video"):
        echonet_dynamic.load(site, site="s")


def test_missing_video(site: Path) -> None:
    (site / "Videos" / "0X1A.avi").unlink()
    with pytest.raises(DataError, match=r"0X1A\.avi: missing video"):
        echonet_dynamic.load(site, site="s")


def test_missing_tracings_file(site: Path) -> None:
    (site / "VolumeTracings.csv").unlink()
    with pytest.raises(DataError, match=r"VolumeTracings\.csv: missing VolumeTracings\.csv"):
        echonet_dynamic.load(site, site="s")
