"""A site's preprocessed samples in memory: the data type every training and scoring path uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from common.labels import LabelledSet, labelled_from_vector

RECORD_FIELDS = ("case_id", "view", "phase", "split", "frame", "quality", "spacing_mm")


@dataclass
class SiteData:
    """A site's preprocessed samples, in memory.

    images: float32 (N, h, w) normalised; masks: uint8 (N, h, w) training labels (only labelled
    structures); labelled: bool (N, 4), column 0 always True; full_masks: uint8 (N, h, w) full
    ground truth or None; records: per-sample metadata dicts (see ``RECORD_FIELDS``).
    """

    site: str
    images: np.ndarray
    masks: np.ndarray
    labelled: np.ndarray
    full_masks: np.ndarray | None
    records: list[dict[str, Any]]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def labelled_set(self) -> LabelledSet:
        """Structures annotated in at least one sample of this site."""
        if len(self) == 0:
            return frozenset()
        return labelled_from_vector(self.labelled.any(axis=0))

    def select(self, indices: np.ndarray | list[int]) -> SiteData:
        idx = np.asarray(indices, dtype=np.int64)
        return SiteData(
            site=self.site,
            images=self.images[idx],
            masks=self.masks[idx],
            labelled=self.labelled[idx],
            full_masks=None if self.full_masks is None else self.full_masks[idx],
            records=[self.records[i] for i in idx],
        )

    def fully_labelled(self) -> SiteData:
        """The same samples trained on their full ground truth (the synthetic upper bound)."""
        if self.full_masks is None:
            raise ValueError(f"site {self.site} has no full ground truth")
        labelled = np.ones_like(self.labelled)
        return SiteData(
            self.site, self.images, self.full_masks.copy(), labelled, self.full_masks, self.records
        )

    def split(self, name: str) -> SiteData:
        """The samples of one split (``train``, ``val`` or ``test``)."""
        return self.select([i for i, r in enumerate(self.records) if r["split"] == name])
