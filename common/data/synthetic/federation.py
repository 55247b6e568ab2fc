"""A whole synthetic federation from one config: every site rendered and written natively.

Each site is one vendor profile written in its natural native format (CAMUS-like NIfTI tree,
EchoNet-like AVI + tracings, HMC-QU-like .mat, generic folder), with the full ground truth
beside it. A site folder records the hash of the settings that made it
(``.echofl-synthetic.json``); a later call with the same settings reuses it, so studies that
share sites generate them once. Sites are rendered case-parallel in worker processes and
written to a temporary folder that is renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from common.config import (
    FormatName,
    OptionalLabelledSet,
    SiteName,
    SiteSpec,
    StrictModel,
)
from common.data.formats import write_site
from common.data.formats.recording import Recording
from common.data.synthetic.generator import assign_splits, case_seed, generate_recording
from common.data.synthetic.knobs import SynthesisKnobs
from common.data.synthetic.shift import DomainShift, site_dump
from common.data.synthetic.vendors import VendorName, get_vendor
from common.progress import progress_bar

MARKER = ".echofl-synthetic.json"
GENERATOR_VERSION = 2  # bump when the rendering changes, so old sites are regenerated


class SyntheticSiteConfig(StrictModel):
    """One synthetic site.

    role: ``train`` sites are split into train/val/test by ``split``; ``test`` sites (an unseen
    vendor) put every case in the test split and are never trained on.
    labelled: only for the ``folder`` format (the others carry their format's labelled set).
    shift: where the site sits on the shift-strength axis (``common.data.synthetic.shift``); None
        renders its vendor as designed.
    """

    name: SiteName
    vendor: VendorName
    format: FormatName
    cases: int = Field(ge=1, le=100_000)
    labelled: OptionalLabelledSet = None
    frames: int = Field(default=2, ge=2, le=200)
    size: tuple[int, int] | None = None
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    role: Literal["train", "test"] = "train"
    shift: DomainShift | None = None

    @model_validator(mode="after")
    def _labelled_only_for_folder(self) -> SyntheticSiteConfig:
        if self.labelled is not None and self.format != "folder":
            raise ValueError(
                f"site {self.name}: 'labelled' can only be chosen for the folder format; "
                f"{self.format} carries its own labelled set"
            )
        return self


class FederationConfig(StrictModel):
    """A synthetic federation: sites, seed, calibration knobs and where to write."""

    seed: int = 0
    output_dir: Path = Path("data/synthetic")
    workers: int = Field(default=0, ge=0)  # 0 = one per CPU core
    knobs: SynthesisKnobs = Field(default_factory=SynthesisKnobs)
    sites: list[SyntheticSiteConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> FederationConfig:
        names = [s.name for s in self.sites]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"site names must be unique; repeated: {', '.join(dupes)}")
        return self


@dataclass(frozen=True)
class GeneratedSite:
    config: SyntheticSiteConfig
    root: Path
    reused: bool
    seconds: float

    @property
    def spec(self) -> SiteSpec:
        """The site as the data layer sees it (format + root)."""
        return SiteSpec(name=self.config.name, format=self.config.format, root=self.root)


def site_seed(seed: int, name: str) -> int:
    """Seed of one site, derived from the federation seed and the site's name."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def settings_hash(site: SyntheticSiteConfig, seed: int, knobs: SynthesisKnobs) -> str:
    payload = {
        "site": site_dump(site),
        "seed": site_seed(seed, site.name),
        "knobs": knobs.model_dump(mode="json"),
        "generator": GENERATOR_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _render(
    args: tuple[str, int, str, tuple[int, int] | None, int, str, dict, dict | None],
) -> Recording:
    vendor, seed, case_id, size, frames, split, knobs, shift = args
    return generate_recording(
        get_vendor(vendor),
        seed=seed,
        case_id=case_id,
        size=size,
        n_frames=frames,
        split=split,  # type: ignore[arg-type]
        knobs=SynthesisKnobs.model_validate(knobs),
        shift=None if shift is None else DomainShift.model_validate(shift),
    )


def render_site(
    site: SyntheticSiteConfig,
    seed: int,
    knobs: SynthesisKnobs,
    workers: int,
    advance: Callable[[int], None] = lambda n: None,
) -> list[Recording]:
    """All recordings of one site (deterministic whatever the number of workers);
    ``advance(1)`` after each case."""
    sseed = site_seed(seed, site.name)
    splits = (
        ["test"] * site.cases
        if site.role == "test"
        else assign_splits(site.cases, site.split, sseed)
    )
    prefix = f"{site.name.lower()}"
    jobs = [
        (
            site.vendor,
            case_seed(sseed, site.vendor, i),
            f"{prefix}{i + 1:04d}",
            site.size,
            site.frames,
            splits[i],
            knobs.model_dump(),
            None if site.shift is None else site.shift.model_dump(),
        )
        for i in range(site.cases)
    ]
    if workers <= 1 or len(jobs) < 4:
        return _counted(map(_render, jobs), advance)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        chunks = max(1, len(jobs) // (4 * workers))
        return _counted(pool.map(_render, jobs, chunksize=chunks), advance)


def _counted(recordings: Iterable[Recording], advance: Callable[[int], None]) -> list[Recording]:
    """The recordings as they arrive, ``advance(1)`` after each."""
    out = []
    for recording in recordings:
        out.append(recording)
        advance(1)
    return out


def generate_federation(
    config: FederationConfig,
    *,
    force: bool = False,
    progress: Callable[[str], None] = print,
) -> list[GeneratedSite]:
    """Render and write every site of ``config`` (reusing up-to-date sites unless ``force``)."""
    workers = config.workers or os.cpu_count() or 1
    out = []
    config.output_dir.mkdir(parents=True, exist_ok=True)
    for site in config.sites:
        root = config.output_dir / site.name
        digest = settings_hash(site, config.seed, config.knobs)
        marker = root / MARKER
        if not force and marker.is_file() and json.loads(marker.read_text()).get("hash") == digest:
            out.append(GeneratedSite(site, root, True, 0.0))
            progress(f"site {site.name}: up to date ({root})")
            continue
        started = time.perf_counter()
        with progress_bar(f"site {site.name}: rendering", site.cases) as advance:
            recordings = render_site(site, config.seed, config.knobs, workers, advance)
        tmp = config.output_dir / f".{site.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        labelled = sorted(s.name for s in site.labelled) if site.labelled else None
        write_site(site.format, tmp, recordings, labelled=labelled)
        (tmp / MARKER).write_text(
            json.dumps(
                {
                    "hash": digest,
                    "vendor": site.vendor,
                    "format": site.format,
                    "cases": site.cases,
                    "role": site.role,
                    "seed": config.seed,
                },
                indent=2,
            )
        )
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
        seconds = time.perf_counter() - started
        frames = sum(r.frames.shape[0] for r in recordings)
        progress(
            f"site {site.name}: vendor {site.vendor}, {site.format}, {site.cases} cases, "
            f"{frames} frames in {seconds:.1f}s -> {root}"
        )
        out.append(GeneratedSite(site, root, False, seconds))
    return out
