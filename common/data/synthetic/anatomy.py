"""Apical four-chamber (A4C) anatomy in millimetres, for any instant of the cardiac cycle.

Standard (Mayo / CAMUS) orientation: the transducer and the cardiac apex at the top centre, the
LV on the image right, the RV on the left, the atria below the valve planes (LA under the LV, RA
under the RV).

Each chamber is built in the LV's *local frame*: origin at the LV endocardial apex, ``t`` along
the LV long axis towards the mitral plane (local z), ``v`` across it, positive towards the LV
lateral wall (local x). A :class:`Placement` (scale, rotation, translation) maps the local frame
to the scan plane's ``(x, z)``. Chambers are *profiles*: a half-width on each side of an axis as
a function of ``t``:

- LV: a truncated, slightly skewed ellipse ("bullet") with smooth radial perturbations; the
  myocardium (MYO) is the endocardium offset outwards by a wall thickness that varies along the
  wall, open at the mitral plane, and includes the interventricular septum.
- LA: an ellipse below the mitral plane whose top is pinched to the mitral annulus.
- RV: a crescent whose septal side is the LV epicardium; RA: an ellipse under the tricuspid plane
  that abuts the LA across a thin interatrial septum. Both are unlabelled (0), as in CAMUS.
- Pericardium (bright), valve leaflets and annuli, papillary muscle and trabeculae (inside the LV
  label, as annotators include them), moderator band, pulmonary-vein openings in the LA wall and,
  sometimes, the descending aorta behind the LA.

From ED (contraction 0) to ES (contraction 1) the long axis shortens by 15-20 % (normal), the
cavity narrows (the ejection fraction set by the phenotype), the wall thickens so that the MYO
area stays within ±5 % of its ED value, the mitral annulus moves towards the apex and the LA
fills (largest at ES).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np

from common.data.synthetic.geometry import SectorGeometry
from common.data.synthetic.knobs import Phenotype
from common.data.synthetic.polygons import (
    ellipse,
    offset,
    offset_polygon,
    outward_sign_of,
    polygon_area,
    thick_polyline,
)
from common.data.synthetic.tissue import Tissue

_N_SIDE = 64  # samples along each side of the LV profile


@dataclass(frozen=True)
class Placement:
    """Similarity transform from the local LV frame to the scan plane.

    apex: scan-plane ``(x, z)`` mm of the LV endocardial apex. tilt_rad: angle of the LV long axis
    from the vertical (positive: the base swings to the image right). scale: body-size factor
    applied to every local length.
    """

    apex: tuple[float, float]
    tilt_rad: float
    scale: float

    def apply(self, local: np.ndarray) -> np.ndarray:
        """Map local ``(v, t)`` points ``(N, 2)`` (unscaled mm) to scan-plane ``(x, z)`` mm."""
        c, s = math.cos(self.tilt_rad), math.sin(self.tilt_rad)
        v, t = local[:, 0] * self.scale, local[:, 1] * self.scale
        return np.stack([c * v + s * t + self.apex[0], -s * v + c * t + self.apex[1]], axis=1)

    def rotated_about_probe(self, angle_rad: float) -> Placement:
        """The same heart turned by ``angle_rad`` about the transducer (θ -> θ + angle)."""
        c, s = math.cos(angle_rad), math.sin(angle_rad)
        x, z = self.apex
        # A point at beam angle θ, (r sin θ, r cos θ), must move to θ + angle.
        return Placement((c * x + s * z, -s * x + c * z), self.tilt_rad + angle_rad, self.scale)


@dataclass(frozen=True)
class HeartParams:
    """Everything random about one case's heart; lengths in local (unscaled) mm, angles radians.

    ED values unless the name says otherwise. ``width_factor_es`` multiplies the LV half-width of
    contracting segments at ES; ``myo_area_change`` is the relative MYO area change at ES.
    """

    phenotype: Phenotype
    placement: Placement
    # LV cavity
    lv_length: float
    lv_half_width: float
    apex_power: float
    kappa: float
    shortening: float
    width_factor_es: float
    pert_septal: tuple[tuple[float, float], ...]
    pert_lateral: tuple[tuple[float, float], ...]
    # LV wall
    wall_mm: float
    wall_apex_factor: float
    septal_wall_factor: float
    myo_area_change: float
    infarct: tuple[int, float, float, float] | None  # (side -1 septal / +1 lateral, s0, s1, thin)
    # inside the LV
    papillary: tuple[float, float, float, float]  # (s, length, width, lean radians)
    trabeculae: tuple[tuple[float, int, float, float], ...]  # (s, side, radius, inset)
    # valves
    mv_anterior: float
    mv_posterior: float
    valve_thickness: float
    mv_tenting: float
    # LA
    la_length: float
    la_half_width: float
    la_tilt: float
    la_growth_length: float
    la_growth_width: float
    la_wall: float
    pert_la: tuple[tuple[float, float], ...]
    pulmonary_veins: tuple[tuple[int, float, float, float], ...]  # (side, frac, width, length)
    # RV / RA
    rv_apex_s: float
    rv_width: float
    rv_base_ratio: float
    rv_wall: float
    tv_offset: float
    rv_shortening: float
    rv_width_factor_es: float
    moderator_band: float | None  # position along the RV (0 apex, 1 base)
    ra_length: float
    ra_half_width: float
    ra_gap: float
    ra_wall: float
    # surroundings
    pericardium: float
    aorta: tuple[float, float, float] | None  # (dv, dz below the LA, radius)
    chest_wall: float

    def with_placement(self, placement: Placement) -> HeartParams:
        """A copy placed differently in the scan plane."""
        return dataclasses.replace(self, placement=placement)


@dataclass(frozen=True)
class HeartShape:
    """The heart at one instant, scan-plane mm.

    lv: LV cavity polygon (endocardium closed by the straight mitral line).
    epi: epicardium closed across the base (MYO together with the cavity).
    myo: the MYO band alone (open at the mitral plane).
    la: LA cavity polygon (closed by the mitral line).
    endo_open / epi_open: the open endocardial / epicardial curves (septal base, apex, lateral
    base), from which annotation-style labels are re-drawn.
    lv_apex, mitral_mid: endpoints of the LV long axis.
    layers: ``(polygon, tissue)`` in painting order; later layers cover earlier ones.
    """

    contraction: float
    lv: np.ndarray
    epi: np.ndarray
    myo: np.ndarray
    la: np.ndarray
    endo_open: np.ndarray
    epi_open: np.ndarray
    lv_apex: np.ndarray
    mitral_mid: np.ndarray
    layers: tuple[tuple[np.ndarray, Tissue], ...]

    @property
    def long_axis_mm(self) -> float:
        """LV long axis: apex to the middle of the mitral line (mm)."""
        return float(np.linalg.norm(self.mitral_mid - self.lv_apex))

    def area_mm2(self) -> dict[str, float]:
        """Analytic areas (mm²) of the LV cavity, the MYO band and the LA."""
        return {
            "LV": polygon_area(self.lv),
            "MYO": polygon_area(self.myo),
            "LA": polygon_area(self.la),
        }

    def lv_volume_ml(self) -> float:
        """Single-plane area-length volume ``8 A² / (3 π L)`` (ml, with A in cm² and L in cm)."""
        a_cm2 = polygon_area(self.lv) / 100.0
        l_cm = self.long_axis_mm / 10.0
        return 8.0 * a_cm2**2 / (3.0 * math.pi * l_cm)


# ---------------------------------------------------------------------------------------------
# Sampling


def sample_heart(rng: np.random.Generator, phenotype: Phenotype, body_scale: float) -> HeartParams:
    """Draw one heart of ``phenotype``; ``body_scale`` scales every length (sex, child size).

    The placement is provisional (apex near the top centre); :func:`fit_to_sector` adjusts it.
    """
    u = rng.uniform
    deg = math.radians
    if phenotype == "dilated":
        length, half, base, power = u(86, 104), u(27, 33), u(0.72, 0.86), u(0.36, 0.50)
        shortening, ef, wall = u(0.06, 0.12), u(0.18, 0.38), u(6.0, 8.5)
    elif phenotype == "hypertrophic":
        length, half, base, power = u(68, 84), u(17, 22), u(0.62, 0.78), u(0.42, 0.58)
        shortening, ef, wall = u(0.14, 0.20), u(0.62, 0.75), u(12.0, 17.0)
    elif phenotype == "infarct":
        length, half, base, power = u(76, 94), u(22, 28), u(0.65, 0.82), u(0.40, 0.56)
        shortening, ef, wall = u(0.10, 0.16), u(0.45, 0.58), u(7.0, 10.0)
    else:
        length, half, base, power = u(72, 90), u(20, 26), u(0.62, 0.80), u(0.42, 0.60)
        shortening, ef, wall = u(0.15, 0.20), u(0.55, 0.70), u(7.0, 11.0)
    # Area-length: V ∝ L W², so EF = 1 - (1 - shortening) k² for a width factor k.
    width_factor = max(math.sqrt((1.0 - ef) / (1.0 - shortening)), 0.45)
    kappa = math.sqrt(max(1.0 - base ** (1.0 / power), 0.05))
    infarct = None
    if phenotype == "infarct":
        if rng.random() < 0.6:  # LAD territory: apex and apical septum
            infarct = (-1, 0.0, u(0.35, 0.6), u(0.5, 0.7))
        else:  # circumflex: mid/basal lateral wall
            s0 = u(0.25, 0.45)
            infarct = (1, s0, s0 + u(0.25, 0.4), u(0.5, 0.7))
    la_scale = u(1.1, 1.25) if phenotype in ("dilated", "infarct") else 1.0

    def pert(amplitude: float) -> tuple[tuple[float, float], ...]:
        return tuple((rng.normal(0.0, amplitude / k), u(0, 2 * math.pi)) for k in range(1, 5))

    n_trab = int(rng.integers(2, 7))
    trabeculae = tuple(
        (u(0.05, 0.35), int(rng.choice([-1, 1])), u(1.2, 2.8), u(0.3, 2.0)) for _ in range(n_trab)
    )
    veins = tuple(
        (int(rng.choice([-1, 1])), u(0.6, 0.9), u(5.0, 8.0), u(8.0, 15.0))
        for _ in range(int(rng.integers(1, 4)))
    )
    chest = u(8.0, 16.0)
    apex_depth = (chest + 2.0 + wall * 0.7 + u(0.0, 8.0)) * body_scale
    placement = Placement(
        (u(-4.0, 8.0) * body_scale, apex_depth), deg(4.0 + u(-12.0, 12.0)), body_scale
    )
    return HeartParams(
        phenotype=phenotype,
        placement=placement,
        lv_length=length,
        lv_half_width=half,
        apex_power=power,
        kappa=kappa,
        shortening=shortening,
        width_factor_es=width_factor,
        pert_septal=pert(0.035),
        pert_lateral=pert(0.035),
        wall_mm=wall,
        wall_apex_factor=u(0.65, 0.85),
        septal_wall_factor=u(1.1, 1.35) if phenotype == "hypertrophic" else u(1.0, 1.15),
        myo_area_change=u(-0.03, 0.03),
        infarct=infarct,
        papillary=(u(0.4, 0.6), u(15.0, 24.0), u(5.0, 8.0), deg(u(15.0, 35.0))),
        trabeculae=trabeculae,
        mv_anterior=u(20.0, 27.0),
        mv_posterior=u(12.0, 17.0),
        valve_thickness=u(1.3, 2.4),
        mv_tenting=u(1.0, 5.0),
        la_length=u(40.0, 55.0) * la_scale,
        la_half_width=u(16.0, 21.0) * la_scale,
        la_tilt=deg(u(-10.0, 10.0)),
        la_growth_length=u(0.08, 0.16),
        la_growth_width=u(0.04, 0.12),
        la_wall=u(1.5, 2.5),
        pert_la=pert(0.03),
        pulmonary_veins=veins,
        rv_apex_s=u(0.12, 0.3),
        rv_width=u(30.0, 40.0),
        rv_base_ratio=u(0.8, 0.95),
        rv_wall=u(3.0, 5.0),
        tv_offset=u(4.0, 9.0),
        rv_shortening=u(0.15, 0.25),
        rv_width_factor_es=u(0.75, 0.88),
        moderator_band=u(0.3, 0.45) if rng.random() < 0.7 else None,
        ra_length=u(42.0, 55.0),
        ra_half_width=u(15.0, 20.0),
        ra_gap=u(0.5, 2.5),
        ra_wall=u(1.5, 2.5),
        pericardium=u(2.0, 4.0),
        aorta=(u(-5.0, 25.0), u(10.0, 18.0), u(8.0, 12.0)) if rng.random() < 0.5 else None,
        chest_wall=chest * body_scale,
    )


# ---------------------------------------------------------------------------------------------
# Shape at one instant


def _series(s: np.ndarray, terms: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Smooth perturbation ``sum_k a_k sin(k π s + φ_k)`` along a profile (s in [0, 1])."""
    out = np.zeros_like(s)
    for k, (a, phi) in enumerate(terms, start=1):
        out += a * np.sin(k * math.pi * s + phi)
    return out


def _window(s: np.ndarray, s0: float, s1: float, ramp: float = 0.08) -> np.ndarray:
    """1 inside [s0, s1], 0 outside, with cosine ramps of width ``ramp``."""
    up = np.clip((s - (s0 - ramp)) / ramp, 0.0, 1.0)
    down = np.clip(((s1 + ramp) - s) / ramp, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(math.pi * np.minimum(up, down))


def _ellipse_profile(
    t: np.ndarray, length: float, half_width: float, top_half: float
) -> np.ndarray:
    """Half-width of an ellipse spanning ``[-t0, length]`` whose width at t = 0 is ``top_half``.

    Used for the atria: the ellipse is cut by the valve plane at t = 0, where its half-width
    equals the annulus half-width.
    """
    b = max(half_width, 1.08 * top_half)
    q = math.sqrt(1.0 - (top_half / b) ** 2)
    a = length / (1.0 + q)
    centre = length - a
    return b * np.sqrt(np.clip(1.0 - ((t - centre) / a) ** 2, 0.0, None))


def _atrium(
    origin: np.ndarray,
    length: float,
    half_width: float,
    top_half: float,
    tilt: float,
    pert: tuple[tuple[float, float], ...] | None,
) -> np.ndarray:
    """Closed atrium polygon in local coordinates, from the left top corner around to the right.

    ``origin`` is the middle of the valve line (local ``(v, t)``); the axis is sheared by
    ``tilt`` so that the top edge stays on the valve line.
    """
    sigma = np.linspace(0.0, 1.0, 48)
    t = length * (1.0 - np.cos(math.pi * sigma)) / 2.0  # dense at both ends
    h = _ellipse_profile(t, length, half_width, top_half)
    hl, hr = h.copy(), h.copy()
    if pert is not None:
        # Taper to zero at the valve line so the atrium keeps meeting the annulus.
        taper = np.sin(math.pi * np.clip(t / length, 0, 1) / 2.0) ** 2
        hl *= 1.0 + _series(t / length, pert) * taper
        hr *= 1.0 + _series(t / length, pert[::-1]) * taper
    centre_v = origin[0] + t * math.tan(tilt)
    left = np.stack([centre_v - hl, origin[1] + t], axis=1)
    right = np.stack([centre_v + hr, origin[1] + t], axis=1)
    return np.vstack([left, right[-2::-1]])


def _leaflet(
    hinge: np.ndarray,
    closed_tip: np.ndarray,
    open_dir: np.ndarray,
    length: float,
    opening: float,
    thickness: float,
) -> np.ndarray:
    """Polygon of one valve leaflet (quadratic curve from the hinge), local coordinates."""
    open_tip = hinge + open_dir * length
    tip = (1.0 - opening) * closed_tip + opening * open_tip
    # Closed leaflets bow towards the atrium (+t); open ones follow a straight line.
    ctrl = 0.5 * (hinge + tip) + np.array([0.0, 2.0 * (1.0 - opening)])
    w = np.linspace(0.0, 1.0, 12)[:, None]
    curve = (1 - w) ** 2 * hinge + 2 * w * (1 - w) * ctrl + w**2 * tip
    return thick_polyline(curve, thickness)


def heart_at(
    p: HeartParams, contraction: float, valve_opening: float = 0.0, detail: bool = True
) -> HeartShape:
    """The heart of ``p`` at ``contraction`` (0 = ED, 1 = ES) with the valves ``valve_opening``.

    ``valve_opening`` (0 closed, 1 wide open) is 0 at ED and ES (both valves closed).
    ``detail=False`` skips everything but the labelled structures (``layers`` is then empty):
    enough for placement and area checks, four times faster.
    """
    c = float(np.clip(contraction, 0.0, 1.2))
    o = float(np.clip(valve_opening, 0.0, 1.0))

    # ---- LV cavity profile (local frame) ----
    length = p.lv_length * (1.0 - p.shortening * c)
    s = np.linspace(0.0, 1.0, _N_SIDE) ** 2  # dense near the apex, where the width changes fast
    uu = s * (1.0 + p.kappa)
    prof = np.clip(uu * (2.0 - uu), 0.0, None) ** p.apex_power
    k_side = {}
    for side in (-1, 1):
        k_es = np.full_like(s, p.width_factor_es)
        if p.infarct is not None and p.infarct[0] == side:
            k_es = k_es + (1.0 - k_es) * _window(s, p.infarct[1], p.infarct[2])  # akinetic
        k_side[side] = 1.0 - c * (1.0 - k_es)
    h_left = p.lv_half_width * prof * (1.0 + _series(s, p.pert_septal)) * k_side[-1]
    h_right = p.lv_half_width * prof * (1.0 + _series(s, p.pert_lateral)) * k_side[1]
    t = s * length
    left = np.stack([-h_left, t], axis=1)
    right = np.stack([h_right, t], axis=1)
    endo_open = np.vstack([left[::-1], right[1:]])  # septal base -> apex -> lateral base
    s_open = np.concatenate([s[::-1], s[1:]])
    side_open = np.concatenate([-np.ones(_N_SIDE), np.ones(_N_SIDE - 1)])
    sign = outward_sign_of(endo_open)

    # ---- wall thickness along the endocardium; solved so the MYO area is conserved ----
    taper = p.wall_apex_factor + (1.0 - p.wall_apex_factor) * np.clip(s_open / 0.3, 0.0, 1.0)
    thick = p.wall_mm * taper * np.where(side_open < 0, p.septal_wall_factor, 1.0)
    scar = np.zeros_like(s_open)
    if p.infarct is not None:
        scar = _window(s_open, p.infarct[1], p.infarct[2]) * (side_open == p.infarct[0])
        thick = thick * (1.0 - (1.0 - p.infarct[3]) * scar)

    def epi_for(m: float) -> np.ndarray:
        epi = offset(endo_open, thick * m, closed=False, sign=sign)
        epi[:, 1] = np.minimum(epi[:, 1], length)  # the MYO ends at the mitral plane
        return epi

    def myo_area(m: float) -> float:
        return polygon_area(np.vstack([endo_open, epi_for(m)[::-1]]))

    m = 1.0
    if c > 0:
        target = _ed_myo_area(p) * (1.0 + p.myo_area_change * c)
        m0, m1 = 1.0, 1.4
        a0, a1 = myo_area(m0) - target, myo_area(m1) - target
        for _ in range(6):  # secant: the area is nearly linear in the thickness
            if abs(a1 - a0) < 1e-9:
                break
            m0, m1 = m1, m1 - a1 * (m1 - m0) / (a1 - a0)
            a0, a1 = a1, myo_area(m1) - target
            if abs(a1) < 1e-3 * target:
                break
        m = m1
    epi_open = epi_for(m)
    myo = np.vstack([endo_open, epi_open[::-1]])

    # ---- mitral annulus and LA ----
    ma_sept, ma_lat = endo_open[0], endo_open[-1]
    mitral_mid = 0.5 * (ma_sept + ma_lat)
    ma_half = 0.5 * float(np.linalg.norm(ma_lat - ma_sept))
    # The LA grows from its ED size, which is at least as wide as the ED annulus (dilated hearts
    # have wide annuli); the annulus itself narrows in systole.
    ma_half_ed = (
        0.5
        * p.lv_half_width
        * prof[-1]
        * (2.0 + _series(s[-1:], p.pert_septal)[0] + _series(s[-1:], p.pert_lateral)[0])
    )
    la = _atrium(
        mitral_mid,
        p.la_length * (1.0 + p.la_growth_length * c),
        max(p.la_half_width, 1.08 * ma_half_ed) * (1.0 + p.la_growth_width * c),
        ma_half,
        p.la_tilt,
        p.pert_la,
    )

    place = p.placement.apply
    if not detail:
        return HeartShape(
            contraction=c,
            lv=place(endo_open),
            epi=place(epi_open),
            myo=place(myo),
            la=place(la),
            endo_open=place(endo_open),
            epi_open=place(epi_open),
            lv_apex=place(np.zeros((1, 2)))[0],
            mitral_mid=place(mitral_mid[None, :])[0],
            layers=(),
        )

    # ---- RV: crescent on the septal side, from its apex to the tricuspid plane ----
    # The tricuspid annulus descends towards the apex a little more than the mitral one
    # (TAPSE > MAPSE), but never below the mitral plane.
    z_rva = p.rv_apex_s * p.lv_length
    rv_len_ed = p.lv_length - p.tv_offset - z_rva
    z_tv = min(z_rva + rv_len_ed * (1.0 - p.rv_shortening * c), length - 2.0)
    epi_left = epi_open[:_N_SIDE][::-1]  # septal epicardium, apex -> base (t increasing)
    zs = np.maximum.accumulate(epi_left[:, 1])
    z = np.linspace(z_rva, z_tv, 40)
    v_sept = np.interp(z, zs, epi_left[:, 0]) + 1.5  # overlap into the septum (covered by MYO)
    kappa_rv = math.sqrt(max(1.0 - p.rv_base_ratio**2, 0.05))
    ur = (z - z_rva) / (z_tv - z_rva) * (1.0 + kappa_rv)
    rv_w = p.rv_width * (1.0 - c * (1.0 - p.rv_width_factor_es))
    width = rv_w * np.sqrt(np.clip(ur * (2.0 - ur), 0.0, None))
    width *= 1.0 + _series((z - z_rva) / (z_tv - z_rva), p.pert_lateral[::-1])
    v_free = v_sept - width
    rv = np.vstack([np.stack([v_free, z], 1)[::-1], np.stack([v_sept, z], 1)[1:]])
    tv_sept, tv_free = np.array([v_sept[-1], z_tv]), np.array([v_free[-1], z_tv])
    tv_mid = 0.5 * (tv_sept + tv_free)
    tv_half = 0.5 * float(np.linalg.norm(tv_sept - tv_free))

    # ---- RA: under the tricuspid plane, sheared towards the LA across a thin septum ----
    ra_len = p.ra_length * (1.0 + 0.08 * c)
    ra_half = p.ra_half_width * (1.0 + 0.06 * c)
    b_ra = max(ra_half, 1.08 * tv_half)
    q = math.sqrt(1.0 - (tv_half / b_ra) ** 2)
    ra_centre_t = ra_len - ra_len / (1.0 + q)  # t of the RA's widest level below the TV plane
    z_w = z_tv + max(ra_centre_t, 1.0)
    la_left = la[: len(la) // 2 + 1]  # left side of the LA, top -> bottom
    la_left_v = float(np.interp(z_w, la_left[:, 1], la_left[:, 0])) - p.la_wall
    shear = (la_left_v - p.ra_gap - b_ra - tv_mid[0]) / max(ra_centre_t, 1.0)
    ra_tilt = float(np.clip(math.atan(shear), math.radians(-35.0), math.radians(35.0)))
    ra = _atrium(tv_mid, ra_len, ra_half, tv_half, ra_tilt, None)

    # ---- details ----
    thickness = p.valve_thickness
    coapt = mitral_mid + np.array([0.0, -p.mv_tenting])
    deg10 = math.radians(10.0)
    mitral = [
        _leaflet(
            ma_sept,
            coapt,
            np.array([math.sin(deg10), -math.cos(deg10)]),
            p.mv_anterior,
            o,
            thickness,
        ),
        _leaflet(
            ma_lat,
            coapt,
            np.array([-math.sin(deg10), -math.cos(deg10)]),
            p.mv_posterior,
            o,
            thickness,
        ),
    ]
    t_coapt = tv_mid + np.array([0.0, -2.0])
    tricuspid = [
        _leaflet(
            tv_sept,
            t_coapt,
            np.array([-math.sin(deg10), -math.cos(deg10)]),
            0.8 * p.mv_anterior,
            o,
            thickness,
        ),
        _leaflet(
            tv_free,
            t_coapt,
            np.array([math.sin(deg10), -math.cos(deg10)]),
            0.8 * p.mv_posterior,
            o,
            thickness,
        ),
    ]
    annuli = [
        ellipse((float(q_[0]), float(q_[1])), 2.2, 2.2, 0.0, 16)
        for q_ in (ma_sept, ma_lat, tv_sept, tv_free)
    ]

    # Anterolateral papillary muscle: a finger rooted in the lateral wall, pointing towards the
    # mitral valve; shorter and thicker in systole.
    s_p, len_p, wid_p, lean = p.papillary
    root = np.array([float(np.interp(s_p, s, h_right)) + 1.0, s_p * length])
    direction = np.array([-math.sin(lean), math.cos(lean)])
    len_c, wid_c = len_p * (1.0 - 0.15 * c), wid_p * (1.0 + 0.25 * c)
    centre = root + direction * 0.5 * len_c
    pap = ellipse((float(centre[0]), float(centre[1])), 0.5 * wid_c, 0.5 * len_c, lean, 24)
    trabeculae = []
    for s_t, side, radius, inset in p.trabeculae:
        h_t = float(np.interp(s_t, s, h_left if side < 0 else h_right))
        trabeculae.append(
            ellipse((side * max(h_t - inset, 0.0), s_t * length), radius, 1.6 * radius, 0.0, 12)
        )

    moderator = []
    if p.moderator_band is not None:
        i = int(p.moderator_band * (len(z) - 1))
        band = np.array([[v_sept[i] - 1.0, z[i]], [v_free[i] + 1.0, z[i] + 4.0]])
        moderator.append(thick_polyline(np.linspace(band[0], band[1], 8), 3.0))

    veins = []
    la_sign = outward_sign_of(la)
    la_normals = offset(la, 1.0, True, la_sign) - la
    half_n = len(la) // 2
    for side, frac, width_v, length_v in p.pulmonary_veins:
        idx = int(frac * half_n) if side < 0 else len(la) - 1 - int(frac * half_n)
        start = la[idx] - la_normals[idx] * 2.0
        direction = la_normals[idx] + np.array([0.0, 0.6])
        direction /= np.linalg.norm(direction)
        veins.append(thick_polyline(np.linspace(start, start + direction * length_v, 6), width_v))

    aorta_wall: list[np.ndarray] = []
    aorta_lumen: list[np.ndarray] = []
    if p.aorta is not None:
        dv, dz, radius = p.aorta
        la_bottom = mitral_mid[1] + p.la_length * (1.0 + p.la_growth_length)
        centre = (float(mitral_mid[0] + dv), float(la_bottom + dz + radius))
        aorta_wall.append(ellipse(centre, radius + 2.2, radius + 2.2, 0.0, 40))
        aorta_lumen.append(ellipse(centre, radius, radius, 0.0, 40))

    scar_poly: list[np.ndarray] = []
    if p.infarct is not None:
        idx = np.nonzero(scar > 0.5)[0]
        if len(idx) > 2:
            scar_poly.append(np.vstack([endo_open[idx], epi_open[idx][::-1]]))

    # Interatrial septum: thin wall tissue filling the gap between the RA and the LA, so that the
    # pericardium painted around each atrium does not show between them.
    la_left = la[: len(la) // 2 + 1]
    ra_right = ra[len(ra) // 2 :][::-1]
    z_top = max(float(la_left[0, 1]), float(ra_right[0, 1])) + 1.0
    z_bottom = min(float(la_left[-1, 1]), float(ra_right[-1, 1])) - 2.0
    septum: list[np.ndarray] = []
    if z_bottom > z_top + 5.0:
        zz = np.linspace(z_top, z_bottom, 24)
        v_la = np.interp(zz, la_left[:, 1], la_left[:, 0]) + 0.5
        v_ra = np.interp(zz, ra_right[:, 1], ra_right[:, 0]) - 0.5
        septum.append(np.vstack([np.stack([v_ra, zz], 1), np.stack([v_la, zz], 1)[::-1]]))

    # ---- painting order: later layers cover earlier ones ----
    rv_wall = offset_polygon(rv, p.rv_wall)
    ra_wall = offset_polygon(ra, p.ra_wall)
    la_wall = offset_polygon(la, p.la_wall)
    epi_closed = epi_open
    peri = p.pericardium
    local_layers: list[tuple[np.ndarray, Tissue]] = [
        # Around the atria: fat and thin fibrous tissue, not the bright ventricular pericardium.
        (offset_polygon(la_wall, 0.5 * peri), Tissue.WALL),
        (offset_polygon(ra_wall, 0.5 * peri), Tissue.WALL),
        (offset_polygon(rv_wall, peri), Tissue.PERICARDIUM),
        (offset_polygon(epi_closed, peri), Tissue.PERICARDIUM),
        (ra_wall, Tissue.WALL),
        (rv_wall, Tissue.WALL),
        *((sp, Tissue.WALL) for sp in septum),
        *((a, Tissue.WALL) for a in aorta_wall),
        (rv, Tissue.BLOOD),
        (ra, Tissue.BLOOD),
        *((a, Tissue.BLOOD) for a in aorta_lumen),
        *((m_, Tissue.WALL) for m_ in moderator),
        *((leaf, Tissue.VALVE) for leaf in tricuspid),
        (la_wall, Tissue.WALL),
        *((v_, Tissue.BLOOD) for v_ in veins),
        (la, Tissue.BLOOD),
        (epi_closed, Tissue.MYOCARDIUM),
        *((sc, Tissue.SCAR) for sc in scar_poly),
        (endo_open, Tissue.BLOOD),
        (pap, Tissue.TRABECULA),
        *((tr, Tissue.TRABECULA) for tr in trabeculae),
        *((leaf, Tissue.VALVE) for leaf in mitral),
        *((an, Tissue.FIBROUS) for an in annuli),
    ]
    return HeartShape(
        contraction=c,
        lv=place(endo_open),
        epi=place(epi_closed),
        myo=place(myo),
        la=place(la),
        endo_open=place(endo_open),
        epi_open=place(epi_open),
        lv_apex=place(np.array([[0.0, 0.0]]))[0],
        mitral_mid=place(mitral_mid[None, :])[0],
        layers=tuple((place(poly), tissue) for poly, tissue in local_layers),
    )


def _ed_myo_area(p: HeartParams) -> float:
    """MYO area at ED in local (unscaled) mm²: the reference that ES conserves."""
    return _ed_myo_area_local(dataclasses.replace(p, placement=_IDENTITY))


_IDENTITY = Placement((0.0, 0.0), 0.0, 1.0)


@functools.lru_cache(maxsize=256)
def _ed_myo_area_local(p: HeartParams) -> float:
    # Cached: every frame of a clip (and every fitting step) needs the same ED reference.
    return polygon_area(heart_at(p, 0.0, detail=False).myo)


# ---------------------------------------------------------------------------------------------
# Placement in the fan


def fit_to_sector(
    p: HeartParams,
    geometry: SectorGeometry,
    max_depth_mm: float | None = None,
    contractions: tuple[float, ...] = (0.0, 1.0),
    margin_deg: float = 2.5,
    margin_mm: float = 3.0,
    la_in_view: float = 1.0,
) -> tuple[HeartParams, SectorGeometry]:
    """Aim the probe at the heart: returns the placed heart and the (maybe deeper) geometry.

    A sonographer centres the LV and keeps the LA in view. This turns the heart about the probe
    until the LV, MYO and LA lie at least ``margin_deg`` inside the sector edges, increases the
    depth up to ``max_depth_mm`` when the LA reaches below the fan, and beyond that scales the
    heart down about its apex. The RV and RA may leave the fan, as they often do.
    ``la_in_view`` < 1 keeps only that fraction of the LA's extent (in depth, from its top, the
    mitral side) in view: the rest may fall below the fan.
    """
    half = geometry.half_angle - math.radians(margin_deg)
    max_depth = max(max_depth_mm or geometry.depth_mm, geometry.depth_mm)
    for _ in range(10):
        shapes = [heart_at(p, c, detail=False) for c in contractions]
        pts = np.vstack([np.vstack([sh.epi, _la_kept(sh.la, la_in_view)]) for sh in shapes])
        theta = np.arctan2(pts[:, 0], pts[:, 1])
        deepest = float(np.hypot(pts[:, 0], pts[:, 1]).max())
        lo, hi = float(theta.min()), float(theta.max())
        ok_angle = lo >= -half and hi <= half
        ok_depth = deepest <= geometry.depth_mm - margin_mm
        if ok_angle and ok_depth:
            break
        if hi - lo > 2 * half:
            p = p.with_placement(dataclasses.replace(p.placement, scale=p.placement.scale * 0.95))
            continue
        if not ok_angle:
            turn = -(hi - half) if hi > half else (-half - lo)
            p = p.with_placement(p.placement.rotated_about_probe(turn))
        if not ok_depth:
            wanted = deepest + margin_mm + 1.0
            if wanted <= max_depth:
                geometry = SectorGeometry(wanted, geometry.sector_deg)
                continue
            geometry = SectorGeometry(max_depth, geometry.sector_deg)
            r_apex = math.hypot(*p.placement.apex)
            factor = (max_depth - margin_mm - r_apex) / max(deepest - r_apex, 1.0)
            p = p.with_placement(
                dataclasses.replace(p.placement, scale=p.placement.scale * min(factor, 0.99))
            )
    return p, geometry


def _la_kept(la: np.ndarray, fraction: float) -> np.ndarray:
    """The LA outline's points within ``fraction`` of its depth range from its top."""
    if fraction >= 1.0:
        return la
    r = np.hypot(la[:, 0], la[:, 1])
    return la[r <= r.min() + fraction * (r.max() - r.min())]


# ---------------------------------------------------------------------------------------------
# Timing of a clip


def cycle_phases(n_frames: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Contraction and valve opening of each frame of a clip, and the ED / ES frame indices.

    Two frames: ``[ED, ES]``. More: one cycle starting shortly before ED, with systole taking
    35 % of the cycle (contraction 0 -> 1 with a cosine), isovolumic relaxation, rapid filling
    (valves open), diastasis and the atrial kick (valves open again). Returns
    ``(contraction (T,), valve_opening (T,), ed, es)``.
    """
    if n_frames < 2:
        raise ValueError(f"n_frames must be >= 2 (ED and ES), got {n_frames}")
    if n_frames == 2:
        return np.array([0.0, 1.0]), np.zeros(2), 0, 1
    ed = round(0.1 * (n_frames - 1))
    es = ed + max(1, round(0.35 * (n_frames - 1)))
    es = min(es, n_frames - 1)
    phase = np.mod((np.arange(n_frames) - ed) * 0.35 / (es - ed), 1.0)
    contraction = np.interp(
        phase,
        [0.0, 0.35, 0.42, 0.52, 0.65, 0.85, 0.97, 1.0],
        [0.0, 1.0, 1.0, 0.55, 0.15, 0.10, 0.0, 0.0],
    )
    systole = phase <= 0.35
    contraction[systole] = 0.5 - 0.5 * np.cos(math.pi * phase[systole] / 0.35)
    opening = np.interp(
        phase,
        [0.0, 0.42, 0.47, 0.55, 0.65, 0.85, 0.9, 0.97, 1.0],
        [0.0, 0.0, 1.0, 0.8, 0.3, 0.3, 0.8, 0.0, 0.0],
    )
    contraction[ed], contraction[es], opening[ed], opening[es] = 0.0, 1.0, 0.0, 0.0
    return contraction, opening, ed, es
