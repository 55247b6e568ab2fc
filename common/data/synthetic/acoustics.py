"""Fast convolution ("scatterer") model of B-mode imaging on a polar (range, beam) grid.

Per frame, on the beam grid of :mod:`common.data.synthetic.geometry`:

1. paint the anatomy's tissue classes; echogenicity (dB vs myocardium) per class plus smooth
   heterogeneity; walls roughly parallel to the beam lose echo (anisotropic scattering and
   dropout patches), interfaces facing the beam gain a specular component;
2. two-way attenuation (0.5 dB/cm/MHz) partly undone by the TGC (with a random curve error) and
   rib/lung shadows scale the echo amplitude;
3. complex Gaussian scatterers (unit power) times that amplitude, blurred by the PSF: a Gaussian
   with a fixed axial sigma and a lateral sigma ``lat0 + k * depth`` in mm, converted to beams
   per depth band. The envelope is then Rayleigh distributed (fully developed speckle);
4. side-lobe clutter (a fraction of the neighbouring beams' echo power) fills dark cavities next
   to bright walls; near-field clutter (haze, with reverberation banding) and electronic noise
   amplified by the TGC are added before detection;
5. log compression: dynamic range, gain, gray map; optional speckle reduction and persistence;
6. scan conversion (bilinear) to the Cartesian fan, zero outside the sector, then the export
   (smoothing, 8-bit quantisation, JPEG).

Arrays are float32; the complex field is stored as two channels ``(n_r, n_theta, 2)`` so that
OpenCV's separable filters (several times faster than scipy's here) apply to it directly.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from common.data.synthetic.anatomy import HeartShape
from common.data.synthetic.geometry import PolarGrid, scan_maps
from common.data.synthetic.quality import Artefacts
from common.data.synthetic.tissue import Tissue, heterogeneity_weights, orientation_weights
from common.data.synthetic.vendors import VendorProfile

ATTENUATION_DB_PER_CM_MHZ = 0.5
RAYLEIGH_MEAN_OVER_STD = math.sqrt(math.pi / (4.0 - math.pi))  # 1.913: fully developed speckle
RAYLEIGH_LOG_STD_DB = 5.57  # std of 20 log10 of a Rayleigh amplitude


# ---------------------------------------------------------------------------------------------
# Building blocks (pure functions, tested on their own)


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]
) -> np.ndarray:
    """Smooth zero-mean, unit-std random field ``shape`` with about ``cells`` blobs per axis.

    White noise on a coarse grid, upsampled bicubically: a cheap stand-in for a Gaussian random
    field (heterogeneity, dropout patches). float32.
    """
    coarse = rng.standard_normal((cells[0] + 3, cells[1] + 3)).astype(np.float32)
    big = cv2.resize(
        coarse,
        (shape[1] + 2 * shape[1] // cells[1], shape[0] + 2 * shape[0] // cells[0]),
        interpolation=cv2.INTER_CUBIC,
    )
    oy, ox = shape[0] // cells[0], shape[1] // cells[1]
    field = big[oy : oy + shape[0], ox : ox + shape[1]]
    std = float(field.std())
    return ((field - field.mean()) / max(std, 1e-6)).astype(np.float32)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """Sampled Gaussian of ``sigma`` samples (sum 1), radius 3 sigma."""
    radius = max(math.ceil(3.0 * sigma), 1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _filter_axis(field: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """Gaussian blur along ``axis`` (0 rows / range, 1 columns / beams), power-preserving.

    The kernel is scaled by ``1 / sqrt(sum k²)`` so white input keeps its variance: the blur
    sets the speckle size, not the echo level.
    """
    if sigma < 0.3:
        return field
    k = _gaussian_kernel(sigma)
    k = k / np.sqrt(np.sum(k.astype(np.float64) ** 2)).astype(np.float32)
    one = np.ones(1, np.float32)
    kx, ky = (one, k) if axis == 0 else (k, one)
    return cv2.sepFilter2D(field, -1, kx, ky, borderType=cv2.BORDER_REFLECT)


def psf_blur(
    field: np.ndarray, grid: PolarGrid, axial_mm: float, lateral_mm: np.ndarray
) -> np.ndarray:
    """Blur a complex field ``(n_r, n_theta, 2)`` by the depth-dependent PSF.

    axial_mm: axial sigma (mm). lateral_mm: lateral sigma (mm) of every range row ``(n_r,)``;
    it is converted to beams (``sigma / (r dθ)``) and applied in bands of rows whose beam sigma
    differs by < 8 % (rows are independent for a lateral filter, so bands need no overlap).
    """
    out = _filter_axis(field, axial_mm / grid.dr, axis=0)
    sigma_beams = lateral_mm / (grid.r * grid.dtheta)
    sigma_beams = np.minimum(sigma_beams, grid.n_theta / 3.0)
    band = np.round(np.log(np.maximum(sigma_beams, 0.3)) / 0.08).astype(np.int64)
    edges = np.flatnonzero(np.diff(band)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [grid.n_r]])
    result = np.empty_like(out)
    for a, b in zip(starts, stops, strict=True):
        sigma = float(np.exp(band[a] * 0.08))
        result[a:b] = _filter_axis(np.ascontiguousarray(out[a:b]), sigma, axis=1)
    return result


def envelope(field: np.ndarray) -> np.ndarray:
    """Magnitude of a two-channel complex field ``(..., 2)`` -> ``(...)`` float32."""
    return cv2.magnitude(np.ascontiguousarray(field[..., 0]), np.ascontiguousarray(field[..., 1]))


def complex_scatterers(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Circular complex Gaussian scatterers of unit mean power, ``(*shape, 2)`` float32."""
    return rng.standard_normal((*shape, 2), dtype=np.float32) * np.float32(math.sqrt(0.5))


def depth_gains_db(
    vendor: VendorProfile, r_mm: np.ndarray, tgc_error_db: np.ndarray | float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Net echo gain and TGC gain (dB) at depths ``r_mm``.

    Two-way attenuation ``2 * 0.5 dB/cm/MHz * f * r`` is undone by the TGC to the fraction
    ``vendor.tgc_compensation`` (plus a TGC curve error). Returns ``(signal, tgc)``: the echo's
    net gain (attenuation + TGC) and the TGC gain alone, which also amplifies electronic noise.
    """
    r = np.asarray(r_mm, dtype=np.float64)
    loss = 2.0 * ATTENUATION_DB_PER_CM_MHZ * vendor.attenuation_mhz * (r / 10.0)
    tgc = vendor.tgc_compensation * loss + tgc_error_db
    return tgc - loss, tgc


def log_compress(env: np.ndarray, vendor: VendorProfile, gain_db: float) -> np.ndarray:
    """Envelope (myocardium rms = 1) -> display value in [0, 1], float32.

    ``20 log10(env) + gain`` is mapped linearly from ``top - DR`` (black) to ``top`` (white),
    then through the vendor's gray map (gamma, or a sigmoid whose slope is ``gamma * 4``).
    """
    level = 20.0 * np.log10(np.maximum(env, 1e-6)) + np.float32(gain_db)
    floor = vendor.display_top_db - vendor.dynamic_range_db
    y = np.clip((level - np.float32(floor)) / np.float32(vendor.dynamic_range_db), 0.0, 1.0)
    if vendor.gray_map == "sigmoid":
        k = 4.0 * vendor.gamma
        lo, hi = 1.0 / (1.0 + math.exp(k / 2)), 1.0 / (1.0 + math.exp(-k / 2))
        y = (1.0 / (1.0 + np.exp(-k * (y - 0.5))) - lo) / (hi - lo)
    elif vendor.gamma != 1.0:
        y = np.power(y, np.float32(vendor.gamma))
    return y.astype(np.float32, copy=False)


def scan_convert(polar: np.ndarray, grid: PolarGrid, size: tuple[int, int]) -> np.ndarray:
    """Bilinear scan conversion of a ``(n_r, n_theta)`` image to ``size``; 0 outside the fan."""
    map_beam, map_range, inside = scan_maps(grid, size)
    out = cv2.remap(
        polar, map_beam, map_range, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    out[~inside] = 0.0
    return out


def export_frame(image: np.ndarray, vendor: VendorProfile, inside: np.ndarray) -> np.ndarray:
    """Display image in [0, 1] ``(H, W)`` -> exported uint8 frame (smoothing, 8 bit, JPEG)."""
    img = image
    if vendor.smoothing_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), vendor.smoothing_px)
    out = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    if vendor.jpeg_quality is not None:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(vendor.jpeg_quality)])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    out[~inside] = 0  # JPEG ringing must not leak outside the sector
    return out


# ---------------------------------------------------------------------------------------------
# One acquisition


class Scanner:
    """A vendor's probe and display chain set up for one case (per-case random state inside).

    Everything that does not change from frame to frame (the beam grid, TGC and noise profiles,
    shadows, dropout patches, tissue heterogeneity, the stationary near-field clutter) is drawn
    once here; :meth:`frame` then renders any instant of the heart.
    """

    def __init__(
        self,
        vendor: VendorProfile,
        grid: PolarGrid,
        size: tuple[int, int],
        artefacts: Artefacts,
        echogenicity_db: np.ndarray,
        chest_wall_mm: float,
        rng: np.random.Generator,
    ) -> None:
        self.vendor = vendor
        self.grid = grid
        self.size = size
        self.art = artefacts
        shape = (grid.n_r, grid.n_theta)
        r = grid.r
        theta = grid.theta
        self._r = r
        self.chest_wall_mm = chest_wall_mm

        # Echogenicity lookup and heterogeneity (tissue moves little against its texture scale).
        table = echogenicity_db.astype(np.float32).copy()
        table[Tissue.BLOOD] += artefacts.blood_shift_db
        if vendor.harmonic:
            # Harmonic imaging suppresses side-lobe and reverberation echoes that fill cavities.
            table[Tissue.BLOOD] -= 6.0
        self._table = table
        weights = heterogeneity_weights()
        weights[Tissue.BLOOD] = artefacts.blood_texture_db
        self._weights = weights
        self._loss_w, self._spec_w = orientation_weights()
        depth_cells = max(int(grid.geometry.depth_mm / 12.0), 4)
        self._texture = smooth_field(rng, shape, (depth_cells, 12))
        fine = smooth_field(rng, shape, (depth_cells * 3, 36))
        self._texture = (0.7 * self._texture + 0.7 * fine).astype(np.float32)
        # Near-field layers of the chest wall (skin, fat, muscle) as depth stripes.
        period = rng.uniform(3.0, 6.0)
        self._chest_stripes = (3.0 * np.sin(2 * np.pi * r / period + rng.uniform(0, 6.3))).astype(
            np.float32
        )

        # Dropout patches (where a wall parallel to the beam may vanish).
        patches = smooth_field(rng, shape, (max(depth_cells // 2, 3), 6))
        self._dropout = np.clip((patches - artefacts.dropout_threshold) / 0.5, 0.0, 1.0)

        # Attenuation, TGC (with a smooth random error) and the noise the TGC amplifies.
        knots = rng.uniform(-artefacts.tgc_error_db, artefacts.tgc_error_db, 7)
        tgc_err = np.interp(r, np.linspace(0.0, grid.geometry.depth_mm, 7), knots)
        signal_db, tgc_db = depth_gains_db(vendor, r, tgc_err)
        self._signal_gain = (10.0 ** (signal_db / 20.0)).astype(np.float32)
        noise_db = vendor.noise_db + artefacts.noise_offset_db + tgc_db
        self._noise_amp = (10.0 ** (noise_db / 20.0)).astype(np.float32)

        # Shadows (ribs, lung): amplitude factor behind the obstacle; pleural lines.
        shadow_db = np.zeros(shape, np.float32)
        self._pleura_db = np.zeros(shape, np.float32)
        self._lung = np.zeros(shape, bool)
        edge = math.radians(1.5)
        for sh in artefacts.shadows:
            w = _sigmoid((theta - sh.theta0) / edge) * _sigmoid((sh.theta1 - theta) / edge)
            step = _sigmoid((r - sh.start_mm) / 1.5)
            shadow_db += np.float32(sh.loss_db) * step[:, None] * w[None, :]
            if sh.pleura:
                lines = np.zeros_like(r)
                for k, level in ((1, 18.0), (2, 10.0), (3, 4.0)):  # pleura and A-lines
                    lines += level * np.exp(-0.5 * ((r - k * sh.start_mm) / 1.0) ** 2)
                self._pleura_db = np.maximum(self._pleura_db, lines[:, None] * w[None, :])
                self._lung |= (r[:, None] > sh.start_mm) & (w[None, :] > 0.5)
        self._shadow = (10.0 ** (-shadow_db / 20.0)).astype(np.float32)

        # Stationary near-field clutter (reverberations between the probe and the chest wall).
        haze_profile = (
            artefacts.haze
            * np.exp(-r / artefacts.haze_length_mm)
            * (1.0 + 0.6 * np.cos(2 * np.pi * r / artefacts.reverb_period_mm))
        )
        clutter = complex_scatterers(rng, shape)
        lateral = np.full(grid.n_r, 4.0, np.float32)  # reverberation texture: laterally smeared
        clutter = psf_blur(clutter, grid, 1.0, lateral)
        self._haze = clutter * (haze_profile.astype(np.float32) * self._signal_gain)[:, None, None]

        self._lateral_mm = (vendor.lateral_psf_mm(r) * artefacts.lateral_blur).astype(np.float32)
        self._gain = vendor.gain_db + artefacts.gain_error_db
        self._sidelobe_power = 10.0 ** ((vendor.sidelobe_db + artefacts.sidelobe_offset_db) / 10.0)
        self._prev_scatterers: np.ndarray | None = None
        self._prev_display: np.ndarray | None = None

    # -- per frame ----------------------------------------------------------------------------

    def tissue_map(self, shape: HeartShape) -> np.ndarray:
        """Tissue class of every beam sample, uint8 ``(n_r, n_theta)``."""
        classes = np.zeros((self.grid.n_r, self.grid.n_theta), np.uint8)
        n_chest = int(np.searchsorted(self._r, self.chest_wall_mm))
        classes[:n_chest] = Tissue.CHEST_WALL
        classes[self._lung] = Tissue.LUNG
        for poly, tissue in shape.layers:
            self.grid.rasterise(classes, poly, int(tissue))
        return classes

    def echogenicity(self, classes: np.ndarray) -> np.ndarray:
        """Backscatter level (dB vs myocardium) per sample, with wall anisotropy and dropout."""
        db = self._table[classes] + self._weights[classes] * self._texture
        chest = classes == Tissue.CHEST_WALL
        db[chest] += np.broadcast_to(self._chest_stripes[:, None], db.shape)[chest]
        parallel, edge = self._orientation(db)
        loss = (
            self.art.orientation_db * parallel
            + self.art.dropout_db * self._dropout * np.sqrt(parallel)
        ) * self._loss_w[classes]
        gain = (self.art.specular_db * (1.0 - parallel) * edge) * self._spec_w[classes]
        return db - loss + gain + self._pleura_db

    def _orientation(self, db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """How parallel to the beam the local structure runs (0..1), and an interface weight.

        Structure tensor of the smoothed dB map with gradients in mm: along the range (rows) and
        across the beam (columns scaled by ``r dθ``). Parallel-to-beam walls have their gradient
        across the beam.
        """
        g = self.grid
        mid_r = 0.5 * g.geometry.depth_mm
        sig_r, sig_t = 1.5 / g.dr, 1.5 / (mid_r * g.dtheta)
        smooth = cv2.GaussianBlur(db, (0, 0), sigmaX=sig_t, sigmaY=sig_r)
        g_r = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3) / np.float32(8.0 * g.dr)
        g_t = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3) / (8.0 * self._r * g.dtheta)[:, None]
        j_rr = cv2.GaussianBlur(g_r * g_r, (0, 0), sigmaX=2 * sig_t, sigmaY=2 * sig_r)
        j_tt = cv2.GaussianBlur(g_t * g_t, (0, 0), sigmaX=2 * sig_t, sigmaY=2 * sig_r)
        total = j_rr + j_tt
        parallel = j_tt / (total + np.float32(1e-3))
        edge = np.clip(np.sqrt(total) / np.float32(6.0), 0.0, 1.0)  # ~6 dB/mm: a clear interface
        return parallel.astype(np.float32), edge.astype(np.float32)

    def _with_sidelobes(self, amplitude: np.ndarray) -> np.ndarray:
        """Add side-lobe clutter: a fraction of the echo power of the neighbouring beams.

        Echoes from bright structures leak in through the beam's side lobes, filling dark
        cavities next to bright walls with a low haze (worse at depth, through poor windows).
        Modelled as the echo power blurred over about ±8° of beams (and 2 mm in range) at
        ``vendor.sidelobe_db``, added to the scatterer power before the PSF.
        """
        g = self.grid
        power = amplitude * amplitude
        # The spread is smooth: compute it on a 4x coarser grid (a large kernel at full size
        # would cost more than the rest of the frame).
        small = cv2.resize(
            power, (max(g.n_theta // 4, 8), max(g.n_r // 4, 8)), interpolation=cv2.INTER_AREA
        )
        spread = cv2.GaussianBlur(
            small,
            (0, 0),
            sigmaX=max(np.radians(8.0) / g.dtheta / 4, 1.0),
            sigmaY=max(2.0 / g.dr / 4, 0.5),
            borderType=cv2.BORDER_REFLECT,
        )
        spread = cv2.resize(spread, (g.n_theta, g.n_r), interpolation=cv2.INTER_LINEAR)
        return np.sqrt(power + spread * np.float32(self._sidelobe_power))

    def frame(
        self, shape: HeartShape, rng: np.random.Generator, continuous: bool = False
    ) -> np.ndarray:
        """Render one instant: display image ``(H, W)`` float32 in [0, 1], 0 outside the fan.

        continuous: the previous rendered frame is its neighbour in time (a clip): speckle then
        stays partly correlated (``vendor.frame_correlation``) and persistence applies.
        """
        v = self.vendor
        classes = self.tissue_map(shape)
        db = self.echogenicity(classes)
        amplitude = (10.0 ** (db / 20.0)) * self._signal_gain[:, None] * self._shadow
        amplitude = self._with_sidelobes(amplitude)
        looks = []
        for look in range(v.compounding_looks):
            scat = complex_scatterers(rng, classes.shape)
            if look == 0:
                if continuous and self._prev_scatterers is not None:
                    rho = np.float32(v.frame_correlation)
                    scat = rho * self._prev_scatterers + np.sqrt(1 - rho * rho) * scat
                self._prev_scatterers = scat
            field = psf_blur(
                scat * amplitude[..., None], self.grid, v.axial_psf_mm, self._lateral_mm
            )
            field += self._haze
            field += complex_scatterers(rng, classes.shape) * self._noise_amp[:, None, None]
            looks.append(envelope(field))
        env = looks[0] if len(looks) == 1 else np.sqrt(np.mean(np.square(looks), axis=0))
        display = log_compress(env, v, self._gain)
        if v.speckle_reduction > 0:
            smooth = cv2.bilateralFilter(display, d=7, sigmaColor=0.15, sigmaSpace=3.0)
            display = (1 - v.speckle_reduction) * display + v.speckle_reduction * smooth
        if continuous and v.persistence > 0 and self._prev_display is not None:
            display = (1 - v.persistence) * display + v.persistence * self._prev_display
        self._prev_display = display
        return scan_convert(np.ascontiguousarray(display, dtype=np.float32), self.grid, self.size)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
