"""Every vendor looks measurably different from every other one; U from all of A-E.

Ten cases per vendor at a common 128 x 128 size (so that size is not what differs), with
image statistics a reader (or a network) can see: brightness of the fan, blood and myocardium,
saturated and near-black fractions, neighbour correlations (speckle size / smoothing), mean
gradient (texture sharpness), the myocardium/blood contrast and the local speckle contrast.
A difference counts when Welch's t over the cases is >= 5.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from common.data.synthetic.generator import render_case
from common.data.synthetic.geometry import sector_mask
from common.data.synthetic.vendors import TRAINING_VENDORS, UNSEEN_VENDOR, VENDORS
from common.labels import Structure

N_CASES = 10
T_MIN = 5.0


def _speckle_contrast(f: np.ndarray, inside: np.ndarray) -> float:
    """Mean local std / mean (3 x 3 windows) over bright pixels; speckle reduction lowers it."""
    mean = cv2.blur(f, (3, 3))
    std = np.sqrt(np.maximum(cv2.blur(f * f, (3, 3)) - mean * mean, 0.0))
    core = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ok = core & (mean > 60)
    return float((std[ok] / mean[ok]).mean())


def _stats(frame: np.ndarray, labels: np.ndarray, inside: np.ndarray) -> dict[str, float]:
    f = frame.astype(np.float64)
    h, w = f.shape
    centre = f[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
    both = inside[:, 1:] & inside[:, :-1]
    return {
        "mean": f[inside].mean(),
        "blood": f[labels == Structure.LV].mean(),
        "myo": f[labels == Structure.MYO].mean(),
        "saturated": (f[inside] > 200).mean(),
        "dark": (f[inside] < 20).mean(),
        "lateral_corr": np.corrcoef(centre[:, :-1].ravel(), centre[:, 1:].ravel())[0, 1],
        "axial_corr": np.corrcoef(centre[:-1].ravel(), centre[1:].ravel())[0, 1],
        "gradient": np.abs(np.diff(f, axis=1))[both].mean(),
        "contrast": (f[labels == Structure.MYO].mean() - f[labels == Structure.LV].mean())
        / (f[labels == Structure.MYO].mean() + f[labels == Structure.LV].mean()),
        "speckle_contrast": _speckle_contrast(f, inside),
    }


@pytest.fixture(scope="module")
def stats() -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for name, vendor in VENDORS.items():
        rows = []
        for seed in range(N_CASES):
            case = render_case(vendor, seed=seed, case_id="x", size=(128, 128))
            rec = case.recording
            inside = sector_mask(case.geometry, (128, 128))
            rows.append(_stats(rec.frames[0], rec.labels[0], inside))
        out[name] = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    return out


def _welch_t(a: np.ndarray, b: np.ndarray) -> float:
    return float(
        abs(a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b) + 1e-12)
    )


def _separating(stats: dict[str, dict[str, np.ndarray]], v1: str, v2: str) -> list[str]:
    return [k for k in stats[v1] if _welch_t(stats[v1][k], stats[v2][k]) >= T_MIN]


def test_every_pair_of_vendors_differs(stats: dict[str, dict[str, np.ndarray]]) -> None:
    for v1, v2 in itertools.combinations(VENDORS, 2):
        assert _separating(stats, v1, v2), f"{v1} and {v2} look alike"


def test_unseen_vendor_differs_from_every_training_vendor(
    stats: dict[str, dict[str, np.ndarray]],
) -> None:
    for v in TRAINING_VENDORS:
        assert len(_separating(stats, UNSEEN_VENDOR, v)) >= 2, f"U too close to {v}"


def test_design_intent_shows_in_the_numbers(stats: dict[str, dict[str, np.ndarray]]) -> None:
    mean = {v: {k: float(a.mean()) for k, a in s.items()} for v, s in stats.items()}
    # C is the dark, contrasty scanner; B the bright one.
    assert mean["C"]["mean"] < min(mean[v]["mean"] for v in "ABDEU")
    assert mean["B"]["mean"] > max(mean[v]["mean"] for v in "ACU")
    # The handheld D has the widest PSF and export smoothing: the blurriest texture.
    assert mean["D"]["gradient"] < min(mean[v]["gradient"] for v in "ABCEU")
    # Blood is darker than myocardium everywhere (dark blood pools, bright walls).
    assert all(m["blood"] < 0.6 * m["myo"] for m in mean.values())
    # U's speckle reduction smooths along the range direction more than any training vendor
    # except the blurry handheld and the soft B.
    assert mean["U"]["axial_corr"] > max(mean[v]["axial_corr"] for v in "ACE")
