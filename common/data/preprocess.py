"""Resampling to the training size and intensity normalisation (done once, into the cache)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from common.data.sample import Sample
from common.labels import NUM_CLASSES, LabelledSet, Structure


class PreprocessConfig(BaseModel):
    """Training-size images: ``size`` (H, W) in pixels; ``normalisation``:

    * ``zscore``: per image, zero mean and unit variance (robust to vendor gain differences);
    * ``unit``: divide by 255 (keeps each vendor's gain/contrast as the scanner exported it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: tuple[int, int] = (128, 128)
    normalisation: Literal["zscore", "unit"] = "zscore"

    def model_post_init(self, _context: object) -> None:
        if min(self.size) < 16 or max(self.size) > 1024:
            raise ValueError(f"size must be within 16..1024 pixels per side, got {self.size}")


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (H, W) float image, antialiased when shrinking."""
    if tuple(image.shape) == tuple(size):
        return image.astype(np.float32, copy=False)
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    antialias = size[0] < image.shape[0] or size[1] < image.shape[1]
    out = F.interpolate(
        tensor, size=size, mode="bilinear", align_corners=False, antialias=antialias
    )
    return out[0, 0].numpy()


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a (H, W) label map by per-class planes: every class's indicator is resampled
    bilinearly (area-averaged when shrinking) and each output pixel takes the class with the
    largest value, so a pixel follows the area it covers rather than one sampled point."""
    if tuple(labels.shape) == tuple(size):
        return labels.astype(np.uint8, copy=False)
    planes = F.one_hot(torch.from_numpy(labels.astype(np.int64)), NUM_CLASSES)
    planes = planes.permute(2, 0, 1)[None].float()
    antialias = size[0] < labels.shape[0] or size[1] < labels.shape[1]
    out = F.interpolate(
        planes, size=size, mode="bilinear", align_corners=False, antialias=antialias
    )
    return out[0].argmax(0).numpy().astype(np.uint8)


def normalise(image: np.ndarray, how: str) -> np.ndarray:
    """Normalise a float32 (H, W) image (see :class:`PreprocessConfig`)."""
    if how == "unit":
        return (image / 255.0).astype(np.float32)
    if how == "zscore":
        std = float(image.std())
        return ((image - float(image.mean())) / (std if std > 1e-6 else 1.0)).astype(np.float32)
    raise ValueError(f"unknown normalisation {how!r}")


def restrict_labels(mask: np.ndarray, keep: LabelledSet) -> np.ndarray:
    """Set every structure not in ``keep`` to background (a site that annotates less)."""
    out = mask.copy()
    for s in Structure:
        if s not in keep:
            out[out == int(s)] = 0
    return out


def prepare(
    sample: Sample, config: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Sample -> (normalised image float32 (h, w), mask uint8 (h, w), full mask or None)."""
    image = normalise(resize_image(sample.image, config.size), config.normalisation)
    mask = resize_labels(sample.mask, config.size)
    full = None if sample.full_mask is None else resize_labels(sample.full_mask, config.size)
    return image, mask, full
