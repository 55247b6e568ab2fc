"""Image-quality strata and the acquisition artefacts drawn for one case.

Every case is *good*, *medium* or *poor* (CAMUS's three grades), drawn with the vendor's
probabilities. The stratum scales the artefacts that make real echo ambiguous: near-field haze
(apical clutter), wall dropout, rib and lung shadows, cloudy blood, noise, side-lobe clutter,
gain and TGC errors and aberration blur (a wider lateral PSF through a poor acoustic window). The
global ``difficulty`` knob multiplies them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from common.data.synthetic.knobs import SynthesisKnobs
from common.data.synthetic.vendors import VendorProfile

Quality = Literal["good", "medium", "poor"]
QUALITIES: tuple[Quality, ...] = ("good", "medium", "poor")

# How strongly each stratum expresses the artefacts (medium = the vendor's design values), and
# how much more likely it makes an artefact that is present in only some cases.
_SEVERITY: dict[Quality, float] = {"good": 0.5, "medium": 1.0, "poor": 1.8}
_PREVALENCE: dict[Quality, float] = {"good": 0.5, "medium": 1.0, "poor": 1.7}
_CLOUDY_PROB: dict[Quality, float] = {"good": 0.1, "medium": 0.35, "poor": 0.75}
_LUNG_PROB: dict[Quality, float] = {"good": 0.03, "medium": 0.08, "poor": 0.3}


@dataclass(frozen=True)
class Shadow:
    """Echo loss behind an obstacle, over a range of beam angles.

    theta0/theta1: angular extent (radians, soft edges); start_mm: depth of the obstacle;
    loss_db: attenuation behind it; pleura: a lung (bright pleural line and reverberations at
    the start) rather than a rib.
    """

    theta0: float
    theta1: float
    start_mm: float
    loss_db: float
    pleura: bool = False


@dataclass(frozen=True)
class Artefacts:
    """The artefact levels of one case (levels in dB, lengths in mm, haze linear vs myocardium)."""

    quality: Quality
    haze: float
    haze_length_mm: float
    reverb_period_mm: float
    orientation_db: float
    specular_db: float
    dropout_db: float
    dropout_threshold: float
    shadows: tuple[Shadow, ...]
    blood_shift_db: float
    blood_texture_db: float
    noise_offset_db: float
    sidelobe_offset_db: float
    gain_error_db: float
    tgc_error_db: float
    lateral_blur: float


def sample_quality(
    rng: np.random.Generator, vendor: VendorProfile, knobs: SynthesisKnobs
) -> Quality:
    """Draw a case's image-quality stratum from the vendor's (or the knobs') probabilities."""
    probs = knobs.quality_probs if knobs.quality_probs is not None else vendor.quality_probs
    return QUALITIES[int(rng.choice(3, p=np.asarray(probs, dtype=float)))]


def sample_artefacts(
    rng: np.random.Generator, vendor: VendorProfile, quality: Quality, knobs: SynthesisKnobs
) -> Artefacts:
    """Draw one case's artefacts for ``quality`` on ``vendor``, scaled by ``knobs.difficulty``."""
    d = knobs.difficulty
    sev = _SEVERITY[quality] * d
    prev = _PREVALENCE[quality] * d
    half = math.radians(vendor.sector_deg) / 2.0
    u = rng.uniform

    has_dropout = rng.random() < min(1.0, vendor.wall_dropout_prob * prev)
    dropout_db = u(8.0, 18.0) * min(0.6 + 0.4 * sev, 1.8) if has_dropout else 0.0
    coverage = u(0.2, 0.5)

    shadows: list[Shadow] = []
    if rng.random() < min(1.0, vendor.shadow_prob * prev):
        for _ in range(1 + int(quality == "poor" and rng.random() < 0.5)):
            width = math.radians(u(5.0, 14.0))
            centre = float(rng.choice([-1, 1])) * u(0.2, 0.95) * half
            shadows.append(
                Shadow(
                    centre - width / 2,
                    centre + width / 2,
                    u(8.0, 25.0),
                    u(8.0, 20.0) * min(sev, 1.5),
                )
            )
    if rng.random() < min(1.0, _LUNG_PROB[quality] * d):
        # The left lung covers the lateral (image right) side of the heart.
        edge = u(0.55, 0.85) * half
        shadows.append(Shadow(edge, half + 0.1, u(25.0, 70.0), u(20.0, 30.0), pleura=True))

    cloudy = rng.random() < min(1.0, _CLOUDY_PROB[quality] * d)
    return Artefacts(
        quality=quality,
        haze=float(min(vendor.haze * sev * u(0.7, 1.3), 1.2)),
        haze_length_mm=u(15.0, 35.0),
        reverb_period_mm=u(8.0, 16.0),
        orientation_db=u(3.0, 7.0) * min(d, 1.5),
        specular_db=u(2.0, 5.0),
        dropout_db=dropout_db,
        dropout_threshold=NormalDist().inv_cdf(1.0 - coverage),
        shadows=tuple(shadows),
        blood_shift_db=u(4.0, 12.0) * min(sev, 1.8) if cloudy else 0.0,
        blood_texture_db=(1.5 + 2.0 * sev) if cloudy else 1.0,
        noise_offset_db=6.0 * (sev - 1.0) if d > 0 else -6.0,
        sidelobe_offset_db=4.0 * (sev - 1.0) if d > 0 else -10.0,
        gain_error_db=float(np.clip(rng.normal(0.0, 1.5 * max(sev, 0.3)), -6.0, 6.0)),
        tgc_error_db=vendor.tgc_error_db * min(sev, 2.0),
        lateral_blur=float(np.clip(1.0 + 0.25 * (sev - 0.5), 1.0, 1.5)),
    )
