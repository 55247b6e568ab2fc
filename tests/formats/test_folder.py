"""Folder format: round trip, manifest validation, image/mask file types and malformed input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data.formats import folder
from common.data.formats.recording import Recording
from common.data.formats.splits import hash_split
from common.errors import DataError
from common.labels import Structure

from .conftest import MakeRecording

LV_LA = frozenset({Structure.LV, Structure.LA})


@pytest.fixture
def site(tmp_path: Path, three_cases: list[Recording]) -> Path:
    folder.write(tmp_path, three_cases, labelled=LV_LA, description="Hospital B export")
    return tmp_path


def _index(site: Path) -> list[dict[str, str]]:
    with (site / "index.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_index(site: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> None:
    header = header or list(rows[0])
    with (site / "index.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_written_files(site: Path) -> None:
    assert (site / "manifest.toml").read_text() == (
        "format_version = 1\n"
        'labelled = ["LV", "LA"]\n'
        'default_view = "4CH"\n'
        'description = "Hospital B export"\n'
    )
    rows = _index(site)
    assert list(rows[0]) == [
        "case_id",
        "image",
        "mask",
        "phase",
        "view",
        "split",
        "frame",
        "spacing_row_mm",
        "spacing_col_mm",
        "quality",
    ]
    assert rows[0] == {
        "case_id": "patient0001",
        "image": "images/patient0001_4CH_ED.png",
        "mask": "masks/patient0001_4CH_ED.png",
        "phase": "ED",
        "view": "4CH",
        "split": "train",
        "frame": "0",
        "spacing_row_mm": "0.3",
        "spacing_col_mm": "0.15",
        "quality": "Good",
    }
    with Image.open(site / rows[0]["mask"]) as mask, Image.open(site / rows[0]["image"]) as image:
        assert (mask.mode, image.mode) == ("L", "L")


def test_round_trip(site: Path, three_cases: list[Recording]) -> None:
    samples = folder.load(site, site="hospital-b")
    assert len(samples) == 6
    for rec in three_cases:
        for phase, index in (("ED", rec.ed), ("ES", rec.es)):
            (s,) = [x for x in samples if (x.meta.case_id, x.meta.phase) == (rec.case_id, phase)]
            labels = rec.labels[index]
            expected = np.where(labels == Structure.MYO, 0, labels)
            np.testing.assert_array_equal(s.mask, expected)
            np.testing.assert_array_equal(s.full_mask, labels)
            np.testing.assert_array_equal(s.image, rec.frames[index].astype(np.float32))
            assert s.labelled == LV_LA
            assert s.meta.site == "hospital-b"
            assert s.meta.frame == index
            assert s.meta.split == rec.split
            assert s.meta.spacing_mm == rec.spacing_mm
            assert s.meta.quality == rec.info.get("quality")
            assert s.meta.source.endswith(f"masks/{rec.case_id}_4CH_{phase}.png")


def test_all_frames_and_jpeg_images(tmp_path: Path, make_recording: MakeRecording) -> None:
    rec = make_recording("c1", n_frames=4, ed=1, es=3)
    folder.write(tmp_path, [rec], frames="all", image_format="jpeg")
    samples = folder.load(tmp_path, site="s")
    assert [(s.meta.frame, s.meta.phase) for s in samples] == [
        (0, None),
        (1, "ED"),
        (2, None),
        (3, "ES"),
    ]
    for s in samples:
        np.testing.assert_array_equal(s.mask, rec.labels[s.meta.frame])
        np.testing.assert_array_equal(s.full_mask, rec.labels[s.meta.frame])
        assert s.meta.source.endswith(".png")
        assert np.abs(s.image - rec.frames[s.meta.frame]).mean() < 10.0  # lossy JPEG


def test_sixteen_bit_png_and_npy(site: Path) -> None:
    rows = _index(site)[:2]
    image16 = (np.arange(48 * 40, dtype=np.uint16).reshape(48, 40) * 30).astype(np.uint16)
    Image.fromarray(image16).save(site / "images" / "wide.png")
    mask = np.zeros((48, 40), np.int16)
    mask[10:20, 10:20] = Structure.LA
    np.save(site / "masks" / "m.npy", mask)
    np.save(site / "images" / "img.npy", np.full((48, 40), 0.5, np.float32))
    rows[0].update(image="images/wide.png", mask="masks/m.npy")
    rows[1].update(image="images/img.npy", phase="", frame="", split="", view="", quality="")
    _write_index(site, rows)
    first, second = folder.load(site, site="s")
    np.testing.assert_array_equal(first.image, image16.astype(np.float32))
    assert first.image.max() > 255  # native 16-bit range kept
    np.testing.assert_array_equal(first.mask, mask.astype(np.uint8))
    assert second.image.max() == pytest.approx(0.5)
    assert (second.meta.phase, second.meta.frame, second.meta.view) == (None, None, "4CH")
    assert second.meta.split == hash_split("patient0001")
    assert second.meta.quality is None
    assert second.full_mask is None  # no phase nor frame: no key to look up


def test_manifest_defaults(site: Path) -> None:
    (site / "manifest.toml").write_text(
        'format_version = 1\nlabelled = ["lv", "LA"]\ndefault_view = "2CH"\n'
        "default_spacing_mm = [0.5, 0.25]\n"
    )
    rows = _index(site)
    for row in rows:
        row.update(view="", spacing_row_mm="", spacing_col_mm="")
    (site / "echofl-full-ground-truth.npz").unlink()
    _write_index(site, rows)
    samples = folder.load(site, site="s")
    assert {s.meta.view for s in samples} == {"2CH"}
    assert {s.meta.spacing_mm for s in samples} == {(0.5, 0.25)}


# ---------------------------------------------------------------- manifest errors


def test_manifest_typo_names_the_key(site: Path) -> None:
    (site / "manifest.toml").write_text('format_version = 1\nlabeled = ["LV"]\n')
    with pytest.raises(
        DataError,
        match=r"manifest\.toml: invalid manifest: unknown key 'labeled' \(did you mean 'labelled'",
    ):
        folder.load(site, site="s")


def test_manifest_missing_key(site: Path) -> None:
    (site / "manifest.toml").write_text('labelled = ["LV"]\n')
    with pytest.raises(
        DataError, match=r"manifest\.toml: invalid manifest: missing required key 'format_version'"
    ):
        folder.load(site, site="s")


def test_manifest_unknown_structure(site: Path) -> None:
    (site / "manifest.toml").write_text('format_version = 1\nlabelled = ["LV", "RV"]\n')
    with pytest.raises(
        DataError, match=r"manifest\.toml: .*key 'labelled': unknown structure 'RV'"
    ):
        folder.load(site, site="s")


def test_manifest_bad_version_and_toml(site: Path) -> None:
    (site / "manifest.toml").write_text('format_version = 2\nlabelled = ["LV"]\n')
    with pytest.raises(DataError, match=r"manifest\.toml: .*key 'format_version'"):
        folder.load(site, site="s")
    (site / "manifest.toml").write_text("format_version = \n")
    with pytest.raises(DataError, match=r"manifest\.toml: invalid TOML"):
        folder.load(site, site="s")


# ---------------------------------------------------------------- index and file errors


def test_jpeg_mask_is_refused(site: Path) -> None:
    rows = _index(site)
    Image.open(site / rows[0]["mask"]).save(site / "masks" / "lossy.jpg")
    rows[0]["mask"] = "masks/lossy.jpg"
    _write_index(site, rows)
    with pytest.raises(DataError, match=r"lossy\.jpg: JPEG masks are refused"):
        folder.load(site, site="s")


def test_missing_required_column(site: Path) -> None:
    rows = _index(site)
    _write_index(site, rows, header=[c for c in rows[0] if c != "mask"])
    with pytest.raises(DataError, match=r"index\.csv: missing required column\(s\) mask"):
        folder.load(site, site="s")


def test_unknown_column(site: Path) -> None:
    rows = _index(site)
    for row in rows:
        row["spacing_mm"] = "0.3"
    _write_index(site, rows)
    with pytest.raises(DataError, match=r"index\.csv: unknown column\(s\) spacing_mm"):
        folder.load(site, site="s")


def test_structure_outside_the_labelled_set(site: Path, three_cases: list[Recording]) -> None:
    rows = _index(site)
    Image.fromarray(three_cases[0].labels[0]).save(site / rows[0]["mask"])  # has MYO
    with pytest.raises(DataError, match=r"patient0001_4CH_ED\.png: mask annotates MYO"):
        folder.load(site, site="s")


def test_label_value_outside_the_schema(site: Path) -> None:
    rows = _index(site)
    Image.fromarray(np.full((48, 40), 255, np.uint8)).save(site / rows[1]["mask"])
    with pytest.raises(DataError, match=r"patient0001_4CH_ES\.png: .*value\(s\) 255 outside"):
        folder.load(site, site="s")


def test_shape_mismatch(site: Path) -> None:
    rows = _index(site)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(site / rows[2]["mask"])
    with pytest.raises(DataError, match=r"patient0002_4CH_ED\.png: image/mask shape mismatch"):
        folder.load(site, site="s")


def test_missing_listed_file(site: Path) -> None:
    rows = _index(site)
    (site / rows[3]["image"]).unlink()
    with pytest.raises(DataError, match=r"patient0002_4CH_ES\.png: missing image file .* line 5"):
        folder.load(site, site="s")


def test_corrupt_png(site: Path) -> None:
    rows = _index(site)
    (site / rows[0]["image"]).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"patient0001_4CH_ED\.png: unreadable image file"):
        folder.load(site, site="s")


def test_bad_cells(site: Path) -> None:
    rows = _index(site)
    rows[0]["phase"] = "mid-systole"
    _write_index(site, rows)
    with pytest.raises(DataError, match=r"index\.csv: line 2: phase 'mid-systole'"):
        folder.load(site, site="s")
    rows[0]["phase"], rows[1]["spacing_col_mm"] = "ED", ""
    _write_index(site, rows)
    with pytest.raises(DataError, match=r"index\.csv: line 3: give both spacing"):
        folder.load(site, site="s")
    rows[1]["spacing_col_mm"], rows[2]["split"] = "0.15", "holdout"
    _write_index(site, rows)
    with pytest.raises(DataError, match=r"index\.csv: line 4: unknown split 'holdout'"):
        folder.load(site, site="s")


def test_duplicate_rows(site: Path) -> None:
    rows = _index(site)
    _write_index(site, [*rows, rows[0]])
    with pytest.raises(
        DataError, match=r"index\.csv: line 8: same case/view/phase/frame as line 2"
    ):
        folder.load(site, site="s")


def test_writer_keeps_only_the_labelled_structures(
    tmp_path: Path, make_recording: MakeRecording
) -> None:
    rec = make_recording("c1")
    folder.write(tmp_path, [rec], labelled=frozenset({Structure.MYO}))
    samples = folder.load(tmp_path, site="s")
    assert {int(v) for s in samples for v in np.unique(s.mask)} == {0, 2}
    assert samples[0].labelled == {Structure.MYO}
