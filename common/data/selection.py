"""Which samples of a site are used, and how they become arrays: the ``max_cases`` limit, the
``labelled`` restriction of a site spec, and preprocessing into a :class:`SiteData`."""

from __future__ import annotations

import numpy as np

from common.config import SiteSpec
from common.data.preprocess import PreprocessConfig, prepare, restrict_labels
from common.data.sample import Sample
from common.data.site_data import SiteData
from common.errors import ConfigError
from common.labels import LabelledSet, format_labelled_set, labelled_vector


def limit_cases(samples: list[Sample], max_cases: int | None) -> list[Sample]:
    if max_cases is None:
        return samples
    keep: set[tuple[str, str]] = set()
    for split in sorted({s.meta.split for s in samples}):
        cases = sorted({s.meta.case_id for s in samples if s.meta.split == split})
        keep.update((split, c) for c in cases[:max_cases])
    return [s for s in samples if (s.meta.split, s.meta.case_id) in keep]


def _restrict(samples: list[Sample], spec: SiteSpec) -> list[tuple[Sample, LabelledSet]]:
    if spec.labelled is None:
        return [(s, s.labelled) for s in samples]
    provided = frozenset().union(*(s.labelled for s in samples))
    missing = spec.labelled - provided
    if missing:
        raise ConfigError(
            f"site {spec.name}",
            f"labelled = {format_labelled_set(spec.labelled)} but its {spec.format} data at "
            f"{spec.root} annotate only {format_labelled_set(provided)}",
        )
    return [(s, s.labelled & spec.labelled) for s in samples]


def build_site_arrays(
    samples: list[Sample], spec: SiteSpec, preprocess: PreprocessConfig
) -> SiteData:
    """Preprocess loaded samples into a :class:`SiteData` (no disk access)."""
    samples = limit_cases(samples, spec.max_cases)
    pairs = _restrict(samples, spec)
    n, (h, w) = len(pairs), preprocess.size
    images = np.empty((n, h, w), np.float32)
    masks = np.empty((n, h, w), np.uint8)
    labelled = np.empty((n, 4), bool)
    has_full = all(s.full_mask is not None for s, _ in pairs) and n > 0
    full = np.empty((n, h, w), np.uint8) if has_full else None
    records = []
    for i, (sample, keep) in enumerate(pairs):
        image, mask, full_mask = prepare(sample, preprocess)
        images[i] = image
        masks[i] = restrict_labels(mask, keep)
        labelled[i] = labelled_vector(keep)
        if full is not None and full_mask is not None:
            full[i] = full_mask
        meta = sample.meta
        records.append(
            {
                "case_id": meta.case_id,
                "view": meta.view,
                "phase": meta.phase,
                "split": meta.split,
                "frame": meta.frame,
                "quality": meta.quality,
                "spacing_mm": None if meta.spacing_mm is None else list(meta.spacing_mm),
            }
        )
    return SiteData(spec.name, images, masks, labelled, full, records)
