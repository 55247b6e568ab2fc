"""Batch augmentation: a small random affine (rotation, scale, shift) and intensity jitter.

Acts on a whole batch at once (one ``affine_grid``/``grid_sample``), images bilinear and label
maps nearest, with every random number drawn from the caller's ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field


class Augmentation(BaseModel):
    """rotate_deg: max |rotation|; scale: max relative zoom (0.1 -> 0.9..1.1); shift: max shift
    as a fraction of the image side; contrast/brightness: max multiplicative / additive jitter of
    the normalised intensities."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    rotate_deg: float = Field(default=10.0, ge=0, le=45)
    scale: float = Field(default=0.1, ge=0, lt=0.5)
    shift: float = Field(default=0.05, ge=0, le=0.25)
    contrast: float = Field(default=0.15, ge=0, lt=1)
    brightness: float = Field(default=0.15, ge=0, le=2)

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 1, H, W) float, masks (B, H, W) integer -> augmented copies."""
        b = images.shape[0]

        def uniform(limit: float) -> torch.Tensor:
            return (torch.rand(b, generator=generator) * 2 - 1) * limit

        angle = uniform(math.radians(self.rotate_deg))
        zoom = 1 + uniform(self.scale)
        tx, ty = uniform(2 * self.shift), uniform(2 * self.shift)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1
        ).to(images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out_images = F.grid_sample(
            images, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        out_masks = F.grid_sample(
            masks[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )[:, 0].to(masks.dtype)
        gain = (1 + uniform(self.contrast)).view(b, 1, 1, 1)
        offset = uniform(self.brightness).view(b, 1, 1, 1)
        return out_images * gain + offset, out_masks
