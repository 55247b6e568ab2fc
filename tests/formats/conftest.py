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

from common.formats.recording import Recording
from common.labels import Structure
from common.sample import Split

MakeRecording = Callable[..., Recording]


def draw_labels(shape: tuple[int, int], contraction: float, tilt_deg: float = 0.0) -> np.ndarray:
    """uint8 (H, W) label map; ``contraction`` in [0, 1] shrinks the LV (0 = ED, 1 = ES)."""
    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width].astype(float)
    base_row = 0.62 * height
    semi_rows = 0.34 * height * (1.0 - 0.15 * contraction)  # apex-to-centre half length
    semi_cols = 0.17 * width * (1.0 - 0.20 * contraction)
    centre_row = base_row - 0.6 * semi_rows
    theta = np.deg2rad(tilt_deg)
    x, y = cols - width / 2.0, rows - centre_row
    across = x * np.cos(theta) + y * np.sin(theta)
    along = -x * np.sin(theta) + y * np.cos(theta)
    below_base = along > base_row - centre_row
    wall = 0.06 * height * (1.0 + 0.3 * contraction)  # the wall thickens in systole
    lv = ((across / semi_cols) ** 2 + (along / semi_rows) ** 2 <= 1.0) & ~below_base
    outer = (across / (semi_cols + wall)) ** 2 + (along / (semi_rows + wall)) ** 2 <= 1.0
    myo = outer & ~lv & ~below_base
    la_centre = base_row - centre_row + 0.12 * height
    la = (across / (0.15 * width)) ** 2 + ((along - la_centre) / (0.11 * height)) ** 2 <= 1.0
    labels = np.zeros(shape, dtype=np.uint8)
    labels[la & below_base] = Structure.LA
    labels[myo] = Structure.MYO
    labels[lv] = Structure.LV
    return labels


def speckle_frame(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W) speckle-like B-mode image of a label map."""
    height, width = labels.shape
    echogenicity = np.array([0.45, 0.08, 0.9, 0.08])[labels]
    image = rng.rayleigh(1.0, labels.shape) * echogenicity * 90.0
    rows, cols = np.mgrid[0:height, 0:width].astype(float)
    angle = np.degrees(np.arctan2(cols - width / 2.0, rows + 1.0))
    image[np.abs(angle) > 35.0] = 0.0
    return np.clip(image, 0, 255).astype(np.uint8)


def build_recording(
    case_id: str,
    *,
    shape: tuple[int, int] = (48, 40),
    n_frames: int = 4,
    ed: int = 0,
    es: int = 2,
    spacing_mm: tuple[float, float] = (0.3, 0.15),
    split: Split = "train",
    view: str = "4CH",
    fps: float = 50.0,
    tilt_deg: float = 0.0,
    info: dict[str, str] | None = None,
    seed: int = 0,
) -> Recording:
    """A recording whose LV is largest at ``ed`` and smallest at ``es``."""
    rng = np.random.default_rng(seed)
    span = max(abs(es - ed), 1)
    labels = np.stack(
        [draw_labels(shape, min(abs(t - ed) / span, 1.0), tilt_deg) for t in range(n_frames)]
    )
    frames = np.stack([speckle_frame(m, rng) for m in labels])
    return Recording(
        case_id=case_id,
        frames=frames,
        labels=labels,
        ed=ed,
        es=es,
        spacing_mm=spacing_mm,
        fps=fps,
        view=view,
        split=split,
        info=dict(info or {}),
    )


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
