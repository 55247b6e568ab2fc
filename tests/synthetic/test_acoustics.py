"""Speckle physics of the convolution model: Rayleigh statistics, PSF, TGC, log compression."""

from __future__ import annotations

import numpy as np
import pytest

from common.data.synthetic.acoustics import (
    RAYLEIGH_LOG_STD_DB,
    RAYLEIGH_MEAN_OVER_STD,
    complex_scatterers,
    depth_gains_db,
    envelope,
    log_compress,
    psf_blur,
    scan_convert,
)
from common.data.synthetic.geometry import PolarGrid, SectorGeometry, scan_maps
from common.data.synthetic.vendors import VENDORS

GRID = PolarGrid(SectorGeometry(150.0, 80.0), 400, 256)


def _homogeneous_envelope(seed: int = 0) -> np.ndarray:
    """Envelope of uniform tissue (unit amplitude) through vendor A's PSF."""
    rng = np.random.default_rng(seed)
    field = complex_scatterers(rng, (GRID.n_r, GRID.n_theta))
    lateral = VENDORS["A"].lateral_psf_mm(GRID.r).astype(np.float32)
    return envelope(psf_blur(field, GRID, VENDORS["A"].axial_psf_mm, lateral))


def test_fully_developed_speckle_is_rayleigh() -> None:
    env = _homogeneous_envelope()[40:]  # skip the first 15 mm, where beams overlap heavily
    assert pytest.approx(1.913, abs=1e-3) == RAYLEIGH_MEAN_OVER_STD
    assert env.mean() / env.std() == pytest.approx(RAYLEIGH_MEAN_OVER_STD, rel=0.05)
    log_db = 20.0 * np.log10(env)
    assert log_db.std() == pytest.approx(RAYLEIGH_LOG_STD_DB, rel=0.05)
    # The PSF is normalised to keep the echo power: the blur sets speckle size, not brightness.
    assert float(np.mean(env.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=0.05)


def _lateral_correlation_mm(envs: list[np.ndarray], depth_mm: float) -> float:
    """Lateral lag (mm) where the intensity autocorrelation around ``depth_mm`` halves."""
    row = int(depth_mm / GRID.dr)
    acs = []
    for env in envs:
        band = env[row - 15 : row + 16].astype(np.float64) ** 2
        band = band - band.mean(axis=1, keepdims=True)
        acs.append([np.mean(band[:, : band.shape[1] - k] * band[:, k:]) for k in range(40)])
    ac = np.mean(acs, axis=0)
    ac /= ac[0]
    i = int(np.argmax(ac < 0.5))
    lag = i - 1 + (ac[i - 1] - 0.5) / (ac[i - 1] - ac[i])
    return float(lag * GRID.r[row] * GRID.dtheta)


def test_lateral_speckle_grows_with_depth_as_the_psf() -> None:
    envs = [_homogeneous_envelope(s) for s in range(4)]
    sigma = VENDORS["A"].lateral_psf_mm  # 0.8 + 0.012 z
    for depth in (40.0, 130.0):
        # A Gaussian amplitude PSF of sigma s gives an intensity correlation exp(-x²/2s²),
        # which halves at 1.177 s.
        expected = 1.177 * float(sigma(depth))
        assert _lateral_correlation_mm(envs, depth) == pytest.approx(expected, rel=0.15)


def test_tgc_leaves_the_uncompensated_part_of_the_attenuation() -> None:
    r = np.array([0.0, 100.0])
    signal_a, tgc_a = depth_gains_db(VENDORS["A"], r)
    # 2-way 0.5 dB/cm/MHz at 2.5 MHz over 10 cm = 25 dB; the TGC undoes 95 %.
    assert tgc_a[1] == pytest.approx(23.75)
    assert signal_a[1] == pytest.approx(-1.25)
    signal_d, _ = depth_gains_db(VENDORS["D"], r)
    assert signal_d[1] == pytest.approx(-0.2 * 20.0)  # handheld: 80 % of 20 dB
    signal_u, _ = depth_gains_db(VENDORS["U"], r)
    assert signal_u[1] > 0  # over-compensated harmonic scanner: brighter far field
    signal_err, _ = depth_gains_db(VENDORS["A"], r, tgc_error_db=np.array([0.0, 3.0]))
    assert signal_err[1] == pytest.approx(1.75)


def test_log_compression_maps_the_dynamic_range() -> None:
    a = VENDORS["A"]  # DR 55 dB, white at +20 dB, gamma 1
    top = 10.0 ** (a.display_top_db / 20.0)
    floor = 10.0 ** ((a.display_top_db - a.dynamic_range_db) / 20.0)
    env = np.array([floor, 1.0, top, 10 * top, floor / 10], np.float32)
    y = log_compress(env, a, gain_db=0.0)
    assert y[0] == pytest.approx(0.0, abs=1e-5)
    assert y[1] == pytest.approx((a.dynamic_range_db - a.display_top_db) / a.dynamic_range_db)
    assert y[2] == pytest.approx(1.0) and y[3] == pytest.approx(1.0) and y[4] == 0.0
    assert log_compress(env, a, gain_db=6.0)[1] == pytest.approx(y[1] + 6.0 / 55.0, abs=1e-5)
    c = VENDORS["C"]  # gamma 1.2 darkens mid-grays
    assert log_compress(env[1:2], c, 0.0)[0] < (c.dynamic_range_db - c.display_top_db) / 50.0
    u = log_compress(np.array([1.0], np.float32), VENDORS["U"], 0.0)  # sigmoid stays in [0, 1]
    assert 0.0 < u[0] < 1.0


def test_scan_conversion_is_zero_outside_the_fan_and_keeps_polar_values() -> None:
    ramp = np.repeat(np.linspace(0.0, 1.0, GRID.n_r, dtype=np.float32)[:, None], GRID.n_theta, 1)
    out = scan_convert(ramp, GRID, (120, 160))
    _, _, inside = scan_maps(GRID, (120, 160))
    assert (out[~inside] == 0).all()
    # A pixel at depth r shows the ramp value r / depth (bilinear between range samples).
    rows, cols = np.nonzero(inside)
    dz, dx = GRID.geometry.spacing_mm((120, 160))
    x = -GRID.geometry.width_mm / 2 + (cols + 0.5) * dx
    z = (rows + 0.5) * dz
    expected = (np.hypot(x, z) / GRID.dr - 0.5) / (GRID.n_r - 1)
    ok = (expected > 0.01) & (expected < 0.99)
    assert np.abs(out[rows, cols][ok] - expected[ok]).max() < 1e-3
