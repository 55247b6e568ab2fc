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
