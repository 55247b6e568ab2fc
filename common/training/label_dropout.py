"""Label dropout (Islam et al., arXiv 2403.07818), applied to a training batch.

For every sample and every structure that is partially labelled across the training sites and
annotated in that sample, the structure is dropped with probability p: its pixels become
background and it leaves the sample's labelled set, so the adaptive loss treats it as unknown.
Label presence then no longer identifies the domain. Structures annotated by every site are never
dropped. Draws come from the caller's ``torch.Generator``, afresh on every use of a sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from common.labels import BACKGROUND, NUM_CLASSES, Structure


@dataclass(frozen=True)
class LabelDropout:
    """Per-structure drop probabilities; a structure not listed is never dropped.

    Build it with :meth:`for_partial` from the federation's partially labelled structures.
    """

    probabilities: Mapping[Structure, float]

    def __post_init__(self) -> None:
        for structure, p in self.probabilities.items():
            if not isinstance(structure, Structure):
                raise ValueError(f"label dropout keys must be structures, got {structure!r}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"drop probability of {structure.name} must be in [0, 1], got {p}")

    @classmethod
    def for_partial(cls, partial: Iterable[Structure], p: float) -> LabelDropout:
        """The paper's setting: the same ``p`` for every partially labelled structure."""
        return cls({s: p for s in partial})

    @property
    def active(self) -> bool:
        return any(p > 0 for p in self.probabilities.values())

    def probability_vector(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``(C,)`` float: drop probability per class (0 for background and unlisted ones)."""
        vec = torch.zeros(NUM_CLASSES, device=device)
        for structure, p in self.probabilities.items():
            vec[int(structure)] = p
        return vec

    def __call__(
        self, mask: torch.Tensor, labelled: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply to a batch: ``mask`` (B, H, W) integer, ``labelled`` (B, C) bool.

        Returns new tensors (the inputs are not modified). The generator must live on the same
        device as ``mask`` (or be None for the global one).
        """
        if mask.ndim != 3 or labelled.ndim != 2 or labelled.shape != (mask.shape[0], NUM_CLASSES):
            raise ValueError(
                f"expected mask (B, H, W) and labelled (B, {NUM_CLASSES}); "
                f"got {tuple(mask.shape)} and {tuple(labelled.shape)}"
            )
        if not self.active:
            return mask, labelled
        draws = torch.rand(labelled.shape, generator=generator, device=mask.device)
        drop = (draws < self.probability_vector(mask.device)) & labelled
        drop[:, BACKGROUND] = False
        pixel_dropped = drop.gather(1, mask.long().flatten(1)).view_as(mask)
        new_mask = mask.masked_fill(pixel_dropped, BACKGROUND)
        return new_mask, labelled & ~drop


@dataclass(frozen=True)
class SiteSetDropout:
    """Label dropout that imitates the other sites' labelled sets (echofl's variant).

    The shortcut adaptive CE can learn is "images of this domain come with this labelled set":
    the set a sample carries identifies its site. Here a sample's labelled set is, with
    probability ``p``, replaced by one of the training sites' labelled sets that is a strict,
    non-empty subset of it (chosen uniformly); the structures it loses become unknown, as in
    :class:`LabelDropout`. Site A's images then also come as "LV only" (site B's set) and "MYO
    only" (site C's), so every set a site has is seen on the fully annotated domain too, and no
    structure is dropped that no site lacks. ``patterns``: the sites' labelled sets as (K, C)
    booleans (background True).
    """

    patterns: torch.Tensor
    p: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"drop probability must be in [0, 1], got {self.p}")
        if self.patterns.ndim != 2 or self.patterns.shape[1] != NUM_CLASSES:
            raise ValueError(
                f"patterns must be (K, {NUM_CLASSES}), got {tuple(self.patterns.shape)}"
            )

    @classmethod
    def from_labelled(cls, labelled: torch.Tensor, p: float) -> SiteSetDropout:
        """From the training samples' labelled vectors (N, C): their distinct sets."""
        patterns = torch.unique(labelled.bool(), dim=0)
        if len(patterns) < 2:
            raise ValueError(
                "site-set label dropout needs training data with at least two different "
                "labelled sets (a pooled run over partially labelled sites); these samples all "
                "carry the same set"
            )
        return cls(patterns, p)

    @property
    def active(self) -> bool:
        return self.p > 0

    def __call__(
        self, mask: torch.Tensor, labelled: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active:
            return mask, labelled
        patterns = self.patterns.to(labelled.device)
        has = labelled[:, None, :]  # (B, 1, C)
        subset = ~(patterns[None] & ~has).any(dim=2)  # pattern within the sample's set
        strict = (patterns[None] != has).any(dim=2)
        nonempty = patterns[:, 1:].any(dim=1)[None]
        candidates = subset & strict & nonempty  # (B, K)
        apply = torch.rand(len(labelled), generator=generator, device=mask.device) < self.p
        scores = torch.rand(candidates.shape, generator=generator, device=mask.device)
        choice = scores.masked_fill(~candidates, -1.0).argmax(dim=1)
        apply &= candidates.any(dim=1)
        new_labelled = torch.where(apply[:, None], patterns[choice], labelled)
        drop = labelled & ~new_labelled
        pixel_dropped = drop.gather(1, mask.long().flatten(1)).view_as(mask)
        return mask.masked_fill(pixel_dropped, BACKGROUND), new_labelled
