"""Synthetic echo recordings: one case of one vendor, or a whole site.

Deterministic: every random draw comes from ``numpy.random.default_rng`` streams spawned from
the case seed (never the global state), one stream per concern, so that e.g. the same seed gives
the same heart whatever the output size or the number of frames.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from common.data.formats.recording import Recording
from common.data.sample import SPLITS, Split
from common.data.synthetic.acoustics import Scanner, export_frame
from common.data.synthetic.anatomy import (
    HeartParams,
    cycle_phases,
    fit_to_sector,
    heart_at,
    sample_heart,
)
from common.data.synthetic.annotation import exact_contours, rasterise_labels, traced_contours
from common.data.synthetic.geometry import SectorGeometry, polar_grid_for, sector_mask
from common.data.synthetic.knobs import (
    ADULT_PHENOTYPE_PROBS,
    PAEDIATRIC_PHENOTYPE_PROBS,
    Phenotype,
    SynthesisKnobs,
)
from common.data.synthetic.quality import Artefacts, sample_artefacts, sample_quality
from common.data.synthetic.shift import DomainShift
from common.data.synthetic.tissue import sample_echogenicity
from common.data.synthetic.vendors import VendorProfile

_DEFAULT_KNOBS = SynthesisKnobs()
_MAX_DEPTH_FACTOR = 1.15  # how far a sonographer deepens the default depth to keep the LA in view


@dataclass(frozen=True)
class SyntheticCase:
    """A rendered case with what a format writer does not need.

    recording: the :class:`Recording` (``labels`` = the annotation-style labels when
        ``annotation_jitter_mm > 0``, else the rendered anatomy).
    anatomy_labels: uint8 ``(T, H, W)`` labels of the rendered anatomy itself (identical to
        ``recording.labels`` without jitter).
    params / geometry / artefacts: the heart, the fan (depth may exceed the vendor default) and
        the case's artefact levels, for analysis and tests.
    """

    recording: Recording
    anatomy_labels: np.ndarray
    params: HeartParams
    geometry: SectorGeometry
    artefacts: Artefacts


def render_case(
    vendor: VendorProfile,
    *,
    seed: int,
    case_id: str,
    size: tuple[int, int] | None = None,
    n_frames: int = 2,
    split: Split = "train",
    knobs: SynthesisKnobs | None = None,
    shift: DomainShift | None = None,
) -> SyntheticCase:
    """Render one case; see :func:`generate_recording` for the arguments."""
    knobs = knobs or _DEFAULT_KNOBS
    if shift is not None:
        vendor = shift.vendor(vendor)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if n_frames < 2:
        raise ValueError(f"n_frames must be >= 2 (ED and ES), got {n_frames}")
    out_size = tuple(size) if size is not None else vendor.export_size
    if len(out_size) != 2 or min(out_size) < 16:
        raise ValueError(f"size must be (H, W) with both >= 16 pixels, got {size}")
    out_size = (int(out_size[0]), int(out_size[1]))

    anatomy_ss, quality_ss, scanner_ss, frames_ss, annotation_ss = np.random.SeedSequence(
        seed
    ).spawn(5)
    rng_anat = np.random.default_rng(anatomy_ss)

    # Who is scanned, and their heart.
    sex = "M" if rng_anat.random() < 0.5 else "F"
    if vendor.population == "paediatric":
        age = rng_anat.uniform(0.3, 17.9)
        body = (0.38 + 0.24 * (age / 18.0) ** 0.8) * rng_anat.uniform(0.95, 1.05)
        phenotype_probs = PAEDIATRIC_PHENOTYPE_PROBS
    else:
        age = float(np.clip(rng_anat.normal(58.0, 16.0), 18.0, 95.0))
        body = (1.0 if sex == "M" else 0.93) * rng_anat.uniform(0.95, 1.05)
        phenotype_probs = ADULT_PHENOTYPE_PROBS
    if knobs.phenotype_probs is not None:
        phenotype_probs = knobs.phenotype_probs
    if shift is not None:
        phenotype_probs = shift.phenotype_probs(phenotype_probs)
    names = list(phenotype_probs)
    weights = np.array([phenotype_probs[n] for n in names], dtype=float)
    phenotype: Phenotype = names[int(rng_anat.choice(len(names), p=weights / weights.sum()))]
    params = sample_heart(rng_anat, phenotype, body)
    depth, sector, framing = vendor.depth_mm, vendor.sector_deg, {}
    if shift is not None:
        params = shift.heart(params)
        depth, sector = depth * shift.depth_factor, sector * shift.sector_factor
        framing = {"la_in_view": shift.la_in_view, "margin_deg": shift.edge_margin_deg}
    geometry = SectorGeometry(depth * rng_anat.uniform(0.96, 1.04), sector)
    params, geometry = fit_to_sector(params, geometry, depth * _MAX_DEPTH_FACTOR, **framing)

    # How well it images.
    rng_quality = np.random.default_rng(quality_ss)
    quality = sample_quality(rng_quality, vendor, knobs)
    artefacts = sample_artefacts(rng_quality, vendor, quality, knobs)
    echogenicity = sample_echogenicity(rng_quality)

    grid = polar_grid_for(geometry, out_size, vendor.axial_psf_mm)
    scanner = Scanner(
        vendor,
        grid,
        out_size,
        artefacts,
        echogenicity,
        params.chest_wall,
        np.random.default_rng(scanner_ss),
    )
    inside = sector_mask(geometry, out_size)

    contraction, opening, ed, es = cycle_phases(n_frames)
    rng_frames = np.random.default_rng(frames_ss)
    rng_annotation = np.random.default_rng(annotation_ss)
    frames = np.empty((n_frames, *out_size), np.uint8)
    labels = np.empty_like(frames)
    anatomy = np.empty_like(frames) if knobs.annotation_jitter_mm > 0 else labels
    shapes = {}
    for t in range(n_frames):
        shape = heart_at(params, float(contraction[t]), float(opening[t]))
        if t in (ed, es):
            shapes[t] = shape
        image = scanner.frame(shape, rng_frames, continuous=n_frames > 2 and t > 0)
        frames[t] = export_frame(image, vendor, inside)
        labels[t] = rasterise_labels(
            traced_contours(shape, rng_annotation, knobs.annotation_jitter_mm), geometry, out_size
        )
        if anatomy is not labels:
            anatomy[t] = rasterise_labels(exact_contours(shape), geometry, out_size)
    if knobs.flip_lr:
        frames = np.ascontiguousarray(frames[:, :, ::-1])
        labels = np.ascontiguousarray(labels[:, :, ::-1])
        anatomy = (
            labels if knobs.annotation_jitter_mm == 0 else np.ascontiguousarray(anatomy[:, :, ::-1])
        )

    edv, esv = shapes[ed].lv_volume_ml(), shapes[es].lv_volume_ml()
    info = {
        "vendor": vendor.name,
        "quality": quality.capitalize(),
        "phenotype": phenotype,
        "ef": f"{100.0 * (edv - esv) / edv:.1f}",
        "edv_ml": f"{edv:.1f}",
        "esv_ml": f"{esv:.1f}",
        "sex": sex,
        "age": str(int(age)),
        "depth_mm": f"{geometry.depth_mm:.1f}",
        "sector_deg": f"{geometry.sector_deg:.1f}",
        "orientation": "flipped" if knobs.flip_lr else "standard",
        "annotation_jitter_mm": f"{knobs.annotation_jitter_mm:g}",
        "difficulty": f"{knobs.difficulty:g}",
        "shift": "none" if shift is None else f"{shift.strength:g} from {shift.reference}",
        "seed": str(seed),
    }
    recording = Recording(
        case_id=case_id,
        frames=frames,
        labels=labels,
        ed=ed,
        es=es,
        spacing_mm=geometry.spacing_mm(out_size),
        fps=vendor.fps,
        view="4CH",
        split=split,
        info=info,
    )
    return SyntheticCase(recording, anatomy, params, geometry, artefacts)


def generate_recording(
    vendor: VendorProfile,
    *,
    seed: int,
    case_id: str,
    size: tuple[int, int] | None = None,
    n_frames: int = 2,
    split: Split = "train",
    knobs: SynthesisKnobs | None = None,
    shift: DomainShift | None = None,
) -> Recording:
    """One synthetic apical four-chamber acquisition of one case.

    vendor: the scanner profile (see :mod:`common.data.synthetic.vendors`).
    seed: fixes everything (same seed, same arrays).
    size: output ``(H, W)`` in pixels; None = the vendor's natural export size.
    n_frames: 2 gives ``[ED, ES]`` (``ed=0, es=1``); more gives one cardiac cycle starting
        shortly before ED, with ``ed``/``es`` set to the frames where contraction is 0 / 1.
    knobs: calibration knobs (difficulty, quality mix, annotation jitter, orientation ...).
    shift: where the case sits on the shift-strength axis (:mod:`common.data.synthetic.shift`);
        None renders ``vendor`` as designed.

    Returns a :class:`Recording`: uint8 frames and labels ``(T, H, W)``, spacing
    ``(depth / H, sector width / W)`` mm, ``info`` with vendor, quality (Good/Medium/Poor),
    phenotype, ef (%, single-plane area-length), edv_ml/esv_ml, sex, age (years) and settings.
    """
    return render_case(
        vendor,
        seed=seed,
        case_id=case_id,
        size=size,
        n_frames=n_frames,
        split=split,
        knobs=knobs,
        shift=shift,
    ).recording


def case_seed(seed: int, vendor_name: str, index: int) -> int:
    """Seed of case ``index`` of a site: derived from (seed, vendor, index), 63 bits.

    The vendor enters so that two sites built with the same seed do not image the same hearts.
    """
    ss = np.random.SeedSequence([seed, zlib.crc32(vendor_name.encode()), index])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def assign_splits(n_cases: int, fractions: tuple[float, float, float], seed: int) -> list[Split]:
    """Split of every case: ``round(f * n)`` train and val cases, the rest test; shuffled."""
    if (
        len(fractions) != 3
        or min(fractions) < 0
        or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6)
    ):
        raise ValueError(f"split_fractions {fractions} must be three numbers >= 0 summing to 1")
    n_train = round(fractions[0] * n_cases)
    n_val = min(round(fractions[1] * n_cases), n_cases - n_train)
    order: list[Split] = ["train"] * n_train + ["val"] * n_val
    order += ["test"] * (n_cases - len(order))
    perm = np.random.default_rng([seed, 0x5EED]).permutation(n_cases)
    return [order[i] for i in perm]


def generate_site(
    vendor: VendorProfile,
    n_cases: int,
    seed: int,
    size: tuple[int, int] | None = None,
    n_frames: int = 2,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    *,
    knobs: SynthesisKnobs | None = None,
    case_prefix: str = "case",
) -> list[Recording]:
    """``n_cases`` recordings of one vendor, named ``<case_prefix>0001`` ... with their splits.

    Case i uses :func:`case_seed` ``(seed, vendor.name, i)``: its images do not depend on
    ``n_cases`` (generate more cases and the first ones stay the same), while the split
    assignment (see :func:`assign_splits`) is drawn for the whole site.
    """
    if n_cases < 0:
        raise ValueError(f"n_cases must be >= 0, got {n_cases}")
    splits = assign_splits(n_cases, split_fractions, seed)
    return [
        generate_recording(
            vendor,
            seed=case_seed(seed, vendor.name, i),
            case_id=f"{case_prefix}{i + 1:04d}",
            size=size,
            n_frames=n_frames,
            split=splits[i],
            knobs=knobs,
        )
        for i in range(n_cases)
    ]
