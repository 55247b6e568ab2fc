"""Small hand-drawn recordings for the format round-trip tests.

The label maps are a crude apical 4-chamber: an LV "bullet" (ellipse cut flat at the mitral
plane), a myocardium ring around it open at the base, and an LA ellipse below the mitral plane.
The LV shortens and narrows linearly from ED to ES. Frames are Rayleigh speckle scaled by a
per-structure echogenicity, zero outside a 70-degree sector with its apex at the top centre.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from common.data.formats.recording import Recording
from tests.helpers import build_recording

MakeRecording = Callable[..., Recording]


@pytest.fixture
def make_recording() -> MakeRecording:
    """The :func:`build_recording` factory."""
    return build_recording


@pytest.fixture
def three_cases() -> list[Recording]:
    """Three small 4CH recordings, one per split, with different spacings."""
    return [
        build_recording(
            "patient0001",
            split="train",
            spacing_mm=(0.3, 0.15),
            info={"quality": "Good", "sex": "F", "age": "61"},
            seed=1,
        ),
        build_recording("patient0002", split="val", spacing_mm=(0.25, 0.125), seed=2, es=3),
        build_recording(
            "patient0003",
            split="test",
            spacing_mm=(0.31, 0.154),
            tilt_deg=8.0,
            info={"quality": "Poor", "ef": "48"},
            seed=3,
        ),
    ]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())
