"""Batch augmentation: a small random affine (rotation, scale, shift), intensity jitter and,
when asked for, ultrasound-like perturbations.

Acts on a whole batch at once (one ``affine_grid``/``grid_sample``), images bilinear and label
maps nearest, with every random number drawn from the caller's ``torch.Generator``. The
ultrasound-like perturbations are off by default (0), and then draw nothing from the
generator, so a recipe without them trains exactly as before they existed. Each acts on every
image with a strength drawn per image, in this order after the affine:

* ``gamma`` g: intensities (min-max scaled per image) raised to exp(U(-g, g)) (a different gain
  curve; MONAI's ``RandAdjustContrast`` does the same per image);
* ``speckle`` s: multiplicative noise, (x - min) * (1 + U(0, s) N(0, 1)) + min: speckle is
  multiplicative on the echo envelope;
* ``blur`` b: a Gaussian blur of standard deviation U(0, b) pixels (MONAI's
  ``RandGaussianSmooth``): another probe's or another export's resolution;
* ``noise`` n: additive Gaussian noise of standard deviation U(0, n) in normalised units
  (MONAI's ``RandGaussianNoise``).

They are batched torch code rather than MONAI's per-sample transforms so that they run in one
pass and draw from the same generator as everything else (seeded runs stay reproducible).
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
    gamma: float = Field(default=0.0, ge=0, le=1.5)  # max |log gamma|
    speckle: float = Field(default=0.0, ge=0, le=1)
    blur: float = Field(default=0.0, ge=0, le=3)  # max sigma, pixels
    noise: float = Field(default=0.0, ge=0, le=1)

    @property
    def ultrasound(self) -> bool:
        """Any of the ultrasound-like perturbations on."""
        return any(v > 0 for v in (self.gamma, self.speckle, self.blur, self.noise))

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W) float (C channels transformed alike), masks (B, H, W) integer ->
        augmented copies."""
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
        if self.ultrasound:
            out_images = self.perturb(out_images, generator)
        gain = (1 + uniform(self.contrast)).view(b, 1, 1, 1)
        offset = uniform(self.brightness).view(b, 1, 1, 1)
        return out_images * gain + offset, out_masks

    def perturb(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The ultrasound-like perturbations (module docstring), each only when > 0."""
        b = images.shape[0]

        def per_image(limit: float) -> torch.Tensor:
            return (torch.rand(b, generator=generator) * limit).view(b, 1, 1, 1).to(images.dtype)

        lo = images.amin(dim=(1, 2, 3), keepdim=True)
        hi = images.amax(dim=(1, 2, 3), keepdim=True)
        span = (hi - lo).clamp_min(1e-6)
        if self.gamma > 0:
            log_gamma = (torch.rand(b, generator=generator) * 2 - 1) * self.gamma
            exponent = torch.exp(log_gamma).view(b, 1, 1, 1).to(images.dtype)
            images = ((images - lo) / span).clamp(0, 1) ** exponent * span + lo
        if self.speckle > 0:
            strength = per_image(self.speckle)
            n = torch.randn(images.shape, generator=generator, dtype=images.dtype)
            images = (images - lo) * (1 + strength * n) + lo
        if self.blur > 0:
            images = _gaussian_blur(images, per_image(self.blur).view(b))
        if self.noise > 0:
            n = torch.randn(images.shape, generator=generator, dtype=images.dtype)
            images = images + per_image(self.noise) * n
        return images


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image of (B, C, H, W) blurred with its own sigma (pixels; 0 leaves it as it is),
    separably, in one grouped convolution per axis."""
    b = images.shape[0]
    radius = max(1, math.ceil(3 * float(sigma.max())))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    s = sigma.to(images.dtype).clamp_min(1e-3).view(b, 1)
    kernel = torch.exp(-0.5 * (x.view(1, -1) / s) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)
    flat = images.transpose(0, 1)  # (1, B, H, W): one group per image
    padded = F.pad(flat, (radius, radius, 0, 0), mode="replicate")
    rows = F.conv2d(padded, kernel.view(b, 1, 1, -1), groups=b)
    padded = F.pad(rows, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel.view(b, 1, -1, 1), groups=b).transpose(0, 1)
