"""Ultrasound DICOM (single- or multi-frame), as hospitals store echo: frames and pixel spacing.

Spacing comes from the first region of the Sequence of Ultrasound Regions (0018,6011) when its
physical units are cm (code 3: ``PhysicalDeltaY`` / ``PhysicalDeltaX`` x 10 mm), else from
Pixel Spacing (0028,0030), else it is unknown (None). Colour frames (RGB, or YBR that pydicom
converts to RGB) become gray by luminance (ITU-R BT.601). A file that is not DICOM, not
ultrasound, has no pixel data, or whose compression no installed decoder handles is refused
with a :class:`DataError` naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import DataError

US_MODALITY = "US"
_CM = 3  # PhysicalUnitsX/YDirection code for centimetres


def read_echo_dicom(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    """(frames float32 (T, H, W), spacing (row, col) in mm or None) of one DICOM file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise DataError(path, "not a DICOM file (no DICM preamble)") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(path, f"unreadable DICOM file ({exc})") from None
    modality = str(ds.get("Modality", "")).strip()
    if modality != US_MODALITY:
        raise DataError(
            path, f"a {modality or 'modality-less'} DICOM, not ultrasound (Modality must be US)"
        )
    if "PixelData" not in ds:
        raise DataError(path, "the DICOM has no pixel data (a report or structured document?)")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for missing decoders
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown transfer syntax")
        name = getattr(syntax, "name", str(syntax))
        raise DataError(
            path,
            f"cannot decode its pixel data, compressed as {name}: {exc} (install a decoder "
            "such as pylibjpeg, or export uncompressed)",
        ) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    arr = np.asarray(pixels, dtype=np.float32)
    if frames == 1:
        arr = arr[None]
    if samples == 3:
        arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
    if arr.ndim != 3:
        raise DataError(path, f"unexpected pixel array shape {pixels.shape}")
    return arr.astype(np.float32), _spacing(ds)


def _spacing(ds) -> tuple[float, float] | None:  # type: ignore[no-untyped-def]
    regions = ds.get("SequenceOfUltrasoundRegions")
    if regions:
        region = regions[0]
        units = (region.get("PhysicalUnitsYDirection"), region.get("PhysicalUnitsXDirection"))
        deltas = (region.get("PhysicalDeltaY"), region.get("PhysicalDeltaX"))
        if units == (_CM, _CM) and all(d is not None and float(d) > 0 for d in deltas):
            return float(deltas[0]) * 10.0, float(deltas[1]) * 10.0
    spacing = ds.get("PixelSpacing")
    if spacing is not None and len(spacing) == 2 and all(float(v) > 0 for v in spacing):
        return float(spacing[0]), float(spacing[1])
    return None
