"""Synthetic "vendors": how each scanner images and exports a heart.

A :class:`VendorProfile` holds the acquisition physics (sector, depth, frequency, point-spread
function, time-gain compensation), the display chain (dynamic range, gain, gray map, speckle
reduction) and the export (size, JPEG) of one scanner family, plus how often its cases are of
good/medium/poor image quality. Values for A-E follow the design table in
``docs/echo-data.md`` ("Synthetic echo that looks like echo"); they are invented to differ the way
vendors differ, not measured specifications.

``U`` is a held-out vendor for generalisation tests; it differs in the physics and the look, not
only in a setting or two: harmonic imaging (a narrow, clean beam, little near-field clutter but
more attenuation), two-look compounding plus edge-preserving speckle reduction (a smooth, "waxy"
texture), a sigmoid gray map with a wide dynamic range, over-compensated TGC (a bright far field),
persistence, and a 100° sector wider than any training vendor's.
"""

from __future__ import annotations

import types
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from common.labels import Structure

QualityProbs = tuple[float, float, float]
"""Probabilities of the image-quality strata (good, medium, poor); they sum to 1."""


class VendorProfile(BaseModel):
    """Physics, display and export parameters of one synthetic scanner family.

    Lengths in mm, angles in degrees, levels in dB, frequencies in MHz, sizes in pixels as
    ``(H, W)``. Echogenicity levels elsewhere are relative to the myocardium, whose rms
    amplitude is the 0-dB reference of the display chain.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=16)
    description: str = ""

    # Geometry of the fan.
    sector_deg: float = Field(gt=20.0, le=120.0, description="full sector opening")
    depth_mm: float = Field(gt=30.0, le=300.0, description="imaging depth at default settings")

    # Transducer and beam.
    frequency_mhz: float = Field(gt=0.5, le=15.0, description="transmit centre frequency")
    harmonic: bool = Field(False, description="tissue-harmonic imaging (receive at 2f)")
    axial_psf_mm: float = Field(gt=0.0, le=3.0, description="axial PSF sigma")
    lateral_psf0_mm: float = Field(gt=0.0, le=5.0, description="lateral PSF sigma at the probe")
    lateral_psf_slope: float = Field(ge=0.0, le=0.1, description="lateral sigma growth, mm per mm")
    compounding_looks: int = Field(1, ge=1, le=4, description="incoherently averaged looks")

    # Receive chain.
    tgc_compensation: float = Field(ge=0.5, le=1.2, description="fraction of attenuation undone")
    tgc_error_db: float = Field(3.0, ge=0.0, le=10.0, description="max random TGC curve error")
    noise_db: float = Field(-62.0, le=-20.0, description="electronic noise pre-TGC vs myocardium")
    sidelobe_db: float = Field(-30.0, le=-10.0, description="side-lobe clutter vs local echo")

    # Display chain.
    dynamic_range_db: float = Field(ge=20.0, le=90.0)
    gain_db: float = Field(ge=-20.0, le=20.0)
    gray_map: Literal["gamma", "sigmoid"] = "gamma"
    gamma: float = Field(1.0, gt=0.2, le=3.0, description="gamma of the gray map, or sigmoid slope")
    display_top_db: float = Field(20.0, ge=0.0, le=40.0, description="level shown white at 0 gain")
    speckle_reduction: float = Field(0.0, ge=0.0, le=1.0, description="edge-preserving smoothing")
    persistence: float = Field(0.0, ge=0.0, lt=1.0, description="frame averaging in clips")
    frame_correlation: float = Field(0.6, ge=0.0, lt=1.0, description="speckle kept frame to frame")

    # Artefacts (medium-quality values; quality strata and the difficulty knob scale them).
    haze: float = Field(ge=0.0, le=1.0, description="near-field clutter amplitude vs myocardium")
    smoothing_px: float = Field(ge=0.0, le=5.0, description="export smoothing sigma, output pixels")
    wall_dropout_prob: float = Field(ge=0.0, le=1.0)
    shadow_prob: float = Field(ge=0.0, le=1.0)
    quality_probs: QualityProbs = (0.35, 0.45, 0.20)

    # Export.
    export_size: tuple[int, int] = Field(description="natural (H, W) of the exported frames")
    export_format: str = ""
    jpeg_quality: int | None = Field(None, ge=10, le=100, description="None: lossless export")
    fps: float = Field(50.0, gt=0.0, le=500.0)

    # Who is scanned.
    population: Literal["adult", "paediatric"] = "adult"
    default_labelled: frozenset[Structure] = frozenset(Structure)

    @model_validator(mode="after")
    def _check(self) -> VendorProfile:
        probs = np.asarray(self.quality_probs, dtype=float)
        if (probs < 0).any() or abs(probs.sum() - 1.0) > 1e-6:
            raise ValueError(
                f"quality_probs {self.quality_probs} must be three numbers >= 0 summing to 1"
            )
        if min(self.export_size) < 16:
            raise ValueError(f"export_size {self.export_size} is too small (min 16 pixels)")
        return self

    def lateral_psf_mm(self, depth_mm: np.ndarray | float) -> np.ndarray:
        """Lateral PSF sigma (mm) at ``depth_mm``: ``lat0 + slope * depth``."""
        return self.lateral_psf0_mm + self.lateral_psf_slope * np.asarray(depth_mm, dtype=float)

    @property
    def attenuation_mhz(self) -> float:
        """Frequency that sets the attenuation: harmonic echoes come back at 2f (mean 1.5f)."""
        return self.frequency_mhz * (1.5 if self.harmonic else 1.0)


_LV = frozenset({Structure.LV})

_PROFILES = (
    VendorProfile(
        name="A",
        description="cart-based scanner, CAMUS-like export (NIfTI), fully annotated",
        sector_deg=80,
        depth_mm=150,
        frequency_mhz=2.5,
        axial_psf_mm=0.35,
        lateral_psf0_mm=0.8,
        lateral_psf_slope=0.012,
        tgc_compensation=0.95,
        noise_db=-64,
        sidelobe_db=-30,
        dynamic_range_db=55,
        gain_db=0,
        gamma=1.0,
        display_top_db=20,
        haze=0.15,
        smoothing_px=0.0,
        wall_dropout_prob=0.3,
        shadow_prob=0.10,
        quality_probs=(0.35, 0.45, 0.20),
        export_size=(320, 256),
        export_format="CAMUS NIfTI",
        jpeg_quality=None,
        fps=30,
        default_labelled=frozenset(Structure),
    ),
    VendorProfile(
        name="B",
        description="bright, soft-looking cart scanner, EchoNet-like 112 x 112 AVI export",
        sector_deg=90,
        depth_mm=160,
        frequency_mhz=2.0,
        axial_psf_mm=0.45,
        lateral_psf0_mm=1.0,
        lateral_psf_slope=0.015,
        tgc_compensation=0.90,
        noise_db=-62,
        sidelobe_db=-27,
        dynamic_range_db=60,
        gain_db=3,
        gamma=0.8,
        display_top_db=24,
        haze=0.25,
        smoothing_px=0.6,
        wall_dropout_prob=0.4,
        shadow_prob=0.15,
        quality_probs=(0.30, 0.45, 0.25),
        export_size=(112, 112),
        export_format="EchoNet AVI",
        jpeg_quality=75,
        fps=50,
        default_labelled=_LV,
    ),
    VendorProfile(
        name="C",
        description="high-frequency, dark, contrasty scanner, HMC-QU-like 224 x 224 export",
        sector_deg=75,
        depth_mm=140,
        frequency_mhz=3.0,
        axial_psf_mm=0.30,
        lateral_psf0_mm=0.7,
        lateral_psf_slope=0.010,
        tgc_compensation=1.00,
        noise_db=-64,
        sidelobe_db=-31,
        dynamic_range_db=50,
        gain_db=-3,
        gamma=1.2,
        display_top_db=20,
        haze=0.10,
        smoothing_px=0.3,
        wall_dropout_prob=0.2,
        shadow_prob=0.10,
        quality_probs=(0.25, 0.45, 0.30),
        export_size=(224, 224),
        export_format="HMC-QU AVI",
        jpeg_quality=85,
        fps=25,
        default_labelled=frozenset({Structure.MYO}),
    ),
    VendorProfile(
        name="D",
        description="handheld probe: wide PSF, narrow sector, weak TGC, hazy, JPEG 256 export",
        sector_deg=70,
        depth_mm=170,
        frequency_mhz=2.0,
        axial_psf_mm=0.60,
        lateral_psf0_mm=1.5,
        lateral_psf_slope=0.022,
        tgc_compensation=0.80,
        noise_db=-56,
        sidelobe_db=-24,
        dynamic_range_db=45,
        gain_db=5,
        gamma=1.0,
        display_top_db=16,
        haze=0.45,
        smoothing_px=1.2,
        wall_dropout_prob=0.6,
        shadow_prob=0.30,
        quality_probs=(0.15, 0.40, 0.45),
        export_size=(256, 256),
        export_format="PNG/JPEG folder",
        jpeg_quality=70,
        fps=30,
        default_labelled=frozenset({Structure.LV, Structure.LA}),
    ),
    VendorProfile(
        name="E",
        description="paediatric: 4 MHz, shallow 90 mm, fine speckle, small hearts, "
        "EchoNet-Pediatric-like export",
        sector_deg=85,
        depth_mm=90,
        frequency_mhz=4.0,
        axial_psf_mm=0.25,
        lateral_psf0_mm=0.5,
        lateral_psf_slope=0.010,
        tgc_compensation=0.95,
        noise_db=-62,
        sidelobe_db=-31,
        dynamic_range_db=55,
        gain_db=0,
        gamma=1.0,
        display_top_db=17,
        haze=0.10,
        smoothing_px=0.3,
        wall_dropout_prob=0.2,
        shadow_prob=0.05,
        quality_probs=(0.45, 0.40, 0.15),
        export_size=(112, 112),
        export_format="EchoNet-Pediatric AVI",
        jpeg_quality=80,
        fps=50,
        population="paediatric",
        default_labelled=_LV,
    ),
    VendorProfile(
        name="U",
        description=(
            "held-out: harmonic imaging, 2-look compounding + speckle reduction, sigmoid gray map, "
            "over-compensated TGC, persistence, 100° sector"
        ),
        sector_deg=100,
        depth_mm=155,
        frequency_mhz=1.7,
        harmonic=True,
        axial_psf_mm=0.40,
        lateral_psf0_mm=0.6,
        lateral_psf_slope=0.009,
        compounding_looks=2,
        tgc_compensation=1.08,
        tgc_error_db=2.0,
        noise_db=-60,
        sidelobe_db=-40,
        dynamic_range_db=70,
        gain_db=-2,
        gray_map="sigmoid",
        gamma=1.6,
        display_top_db=26,
        speckle_reduction=0.85,
        persistence=0.4,
        frame_correlation=0.8,
        haze=0.05,
        smoothing_px=0.0,
        wall_dropout_prob=0.35,
        shadow_prob=0.12,
        quality_probs=(0.35, 0.45, 0.20),
        export_size=(240, 320),
        export_format="DICOM-like 4:3",
        jpeg_quality=92,
        fps=60,
        default_labelled=frozenset(Structure),
    ),
)

VENDORS: types.MappingProxyType[str, VendorProfile] = types.MappingProxyType(
    {p.name: p for p in _PROFILES}
)
"""Built-in profiles by name: ``A``-``E`` (training vendors) and ``U`` (held out)."""

TRAINING_VENDORS: tuple[str, ...] = ("A", "B", "C", "D", "E")
UNSEEN_VENDOR = "U"


def get_vendor(name: str) -> VendorProfile:
    """The built-in profile called ``name`` (case-insensitive); ``ValueError`` lists the names."""
    key = name.strip().upper() if isinstance(name, str) else name
    try:
        return VENDORS[key]
    except KeyError:
        raise ValueError(
            f"unknown synthetic vendor {name!r}: known vendors are {', '.join(VENDORS)} "
            "(A-E for training, U held out)"
        ) from None


def _known_vendor(name: str) -> str:
    get_vendor(name)  # raises ValueError listing the known vendors
    return name


VendorName = Annotated[str, AfterValidator(_known_vendor)]
