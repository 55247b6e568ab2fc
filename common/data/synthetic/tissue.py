"""Tissue classes of the synthetic anatomy and their echogenicity.

Echogenicity is the mean backscatter level of a class in dB relative to the myocardium (the 0-dB
reference of the display chain). Ranges follow ``docs/echo-data.md``: blood -30..-40 dB, soft
tissue -10..-15 dB, pericardium +6..+10 dB; the rest are set to look right beside them.
"""

from __future__ import annotations

import enum

import numpy as np


class Tissue(enum.IntEnum):
    """Class of a point of the scanned plane (values index the per-case lookup tables)."""

    TISSUE = 0  # surrounding soft tissue (mediastinum, liver edge): the default
    CHEST_WALL = 1  # skin, fat and muscle layers in the near field
    LUNG = 2  # aerated lung at the sector sides: strong reflector then nothing
    PERICARDIUM = 3
    MYOCARDIUM = 4  # LV myocardium, incl. the interventricular septum (labelled MYO)
    WALL = 5  # RV free wall, atrial walls, aortic wall (unlabelled)
    BLOOD = 6
    VALVE = 7  # mitral / tricuspid leaflets
    FIBROUS = 8  # valve annuli (fibrous skeleton)
    SCAR = 9  # infarcted, thinned myocardium
    TRABECULA = 10  # papillary muscles and apical trabeculae inside the LV cavity (labelled LV)


N_TISSUES = len(Tissue)

# (low, high) dB relative to myocardium; sampled once per case.
ECHOGENICITY_DB: dict[Tissue, tuple[float, float]] = {
    Tissue.TISSUE: (-15.0, -10.0),  # mean level; heterogeneity spreads it by ±6 dB
    Tissue.CHEST_WALL: (-8.0, -3.0),
    Tissue.LUNG: (-24.0, -16.0),
    Tissue.PERICARDIUM: (6.0, 10.0),
    Tissue.MYOCARDIUM: (0.0, 0.0),
    Tissue.WALL: (-8.0, -3.0),
    Tissue.BLOOD: (-40.0, -30.0),
    Tissue.VALVE: (-1.0, 4.0),
    Tissue.FIBROUS: (3.0, 8.0),
    Tissue.SCAR: (2.0, 6.0),
    Tissue.TRABECULA: (-6.0, -1.0),
}

# Standard deviation (dB) of each class's smooth spatial heterogeneity. Blood gets its texture
# from the image-quality stratum ("cloudy" blood), see :mod:`common.data.synthetic.quality`.
HETEROGENEITY_DB: dict[Tissue, float] = {
    Tissue.TISSUE: 6.0,
    Tissue.CHEST_WALL: 3.0,
    Tissue.LUNG: 4.0,
    Tissue.PERICARDIUM: 2.0,
    Tissue.MYOCARDIUM: 1.5,
    Tissue.WALL: 2.0,
    Tissue.BLOOD: 0.0,
    Tissue.VALVE: 1.0,
    Tissue.FIBROUS: 1.0,
    Tissue.SCAR: 2.0,
    Tissue.TRABECULA: 2.0,
}

# How much a class's brightness depends on the beam incidence: walls parallel to the beam lose
# echo (fibre anisotropy, dropout), interfaces facing the beam add a specular echo (strongest
# for the fibrous pericardium).
ORIENTATION_WEIGHT: dict[Tissue, float] = {
    Tissue.MYOCARDIUM: 1.0,
    Tissue.WALL: 1.0,
    Tissue.SCAR: 1.0,
    Tissue.PERICARDIUM: 0.5,
}
SPECULAR_WEIGHT: dict[Tissue, float] = {
    Tissue.MYOCARDIUM: 1.0,
    Tissue.WALL: 1.0,
    Tissue.SCAR: 1.0,
    Tissue.PERICARDIUM: 2.0,
    Tissue.VALVE: 1.0,
    Tissue.FIBROUS: 1.0,
}


def sample_echogenicity(rng: np.random.Generator) -> np.ndarray:
    """One case's echogenicity per class (dB), float32 ``(N_TISSUES,)``, indexed by Tissue."""
    out = np.zeros(N_TISSUES, dtype=np.float32)
    for t in Tissue:
        lo, hi = ECHOGENICITY_DB[t]
        out[int(t)] = rng.uniform(lo, hi)
    return out


def heterogeneity_weights() -> np.ndarray:
    """Per-class heterogeneity standard deviation, dB, float32 ``(N_TISSUES,)``."""
    return np.array([HETEROGENEITY_DB[t] for t in Tissue], dtype=np.float32)


def orientation_weights() -> tuple[np.ndarray, np.ndarray]:
    """Per-class (orientation-loss, specular) weights, float32 ``(N_TISSUES,)`` each."""
    loss = np.zeros(N_TISSUES, np.float32)
    spec = np.zeros(N_TISSUES, np.float32)
    for t, w in ORIENTATION_WEIGHT.items():
        loss[int(t)] = w
    for t, w in SPECULAR_WEIGHT.items():
        spec[int(t)] = w
    return loss, spec
