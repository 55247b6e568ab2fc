"""Ultrasound DICOM files the tests write with pydicom, read back (common.data.dicom_echo),
and refused with a message naming the file when they cannot be used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from common.data.dicom_echo import read_echo_dicom
from common.errors import DataError

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


def write_us(
    path: Path,
    frames: np.ndarray,
    *,
    region_cm: tuple[float, float] | None = (0.03, 0.04),
    pixel_spacing: tuple[float, float] | None = None,
    modality: str = "US",
    rgb: bool = False,
    syntax: str = ExplicitVRLittleEndian,
    pixels: bool = True,
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = US_MULTIFRAME, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if region_cm is not None:
        region = Dataset()
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaY, region.PhysicalDeltaX = region_cm
        ds.SequenceOfUltrasoundRegions = Sequence([region])
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    if pixels and syntax == ExplicitVRLittleEndian:
        ds.PixelData = frames.astype(np.uint8).tobytes()
    elif pixels:  # a compressed syntax: one encapsulated fragment per frame (not a real stream)
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64] * len(frames))
    ds.save_as(path, enforce_file_format=True)
    return path


def frames_of(n: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 24, 32), dtype=np.uint8)


def test_a_multiframe_ultrasound_round_trip(tmp_path: Path) -> None:
    frames = frames_of()
    read, spacing = read_echo_dicom(write_us(tmp_path / "a.dcm", frames))
    assert read.shape == (5, 24, 32) and np.array_equal(read, frames.astype(np.float32))
    assert spacing == pytest.approx((0.3, 0.4))  # 0.03 cm, 0.04 cm


def test_spacing_falls_back_to_pixel_spacing_then_unknown(tmp_path: Path) -> None:
    one = write_us(tmp_path / "b.dcm", frames_of(1), region_cm=None, pixel_spacing=(0.5, 0.6))
    read, spacing = read_echo_dicom(one)
    assert read.shape == (1, 24, 32) and spacing == pytest.approx((0.5, 0.6))
    none = write_us(tmp_path / "c.dcm", frames_of(2), region_cm=None)
    assert read_echo_dicom(none)[1] is None


def test_colour_frames_become_gray(tmp_path: Path) -> None:
    rgb = np.zeros((2, 24, 32, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 200, 50
    read, _ = read_echo_dicom(write_us(tmp_path / "rgb.dcm", rgb, rgb=True))
    assert read.shape == (2, 24, 32)
    assert read[0, 0, 0] == pytest.approx(0.299 * 100 + 0.587 * 200 + 0.114 * 50, abs=0.01)


def test_unusable_files_are_refused_by_name(tmp_path: Path) -> None:
    ct = write_us(tmp_path / "ct.dcm", frames_of(1), modality="CT")
    with pytest.raises(DataError, match=r"ct\.dcm: a CT DICOM, not ultrasound"):
        read_echo_dicom(ct)
    empty = write_us(tmp_path / "empty.dcm", frames_of(1), pixels=False)
    with pytest.raises(DataError, match=r"empty\.dcm: the DICOM has no pixel data"):
        read_echo_dicom(empty)
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 300)
    with pytest.raises(DataError, match=r"junk\.dcm: not a DICOM file"):
        read_echo_dicom(tmp_path / "junk.dcm")
    jp2 = write_us(tmp_path / "jp2.dcm", frames_of(1), syntax=JPEG2000Lossless)
    with pytest.raises(DataError, match=r"jp2\.dcm: cannot decode its pixel data, compressed as"):
        read_echo_dicom(jp2)


def test_predict_reads_a_folder_of_dicom(tmp_path: Path) -> None:
    from common.predict import dicom_recordings

    write_us(tmp_path / "clip1.dcm", frames_of(4))
    write_us(tmp_path / "clip2.dcm", frames_of(3))
    (tmp_path / "notes.txt").write_text("ignored")
    recs = dicom_recordings(tmp_path)
    assert [(r.name, len(r.frames), r.spacing_mm) for r in recs] == [
        ("clip1", 4, pytest.approx((0.3, 0.4))),
        ("clip2", 3, pytest.approx((0.3, 0.4))),
    ]
    assert len(dicom_recordings(tmp_path / "clip1.dcm")) == 1  # one file as the input
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no DICOM files"):
        dicom_recordings(tmp_path / "none")
