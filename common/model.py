"""The segmentation network: a MONAI 2-D U-Net with 1 input channel and 4 output classes."""

from __future__ import annotations

from monai.networks.nets import UNet
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from common.labels import NUM_CLASSES


class ModelConfig(BaseModel):
    """U-Net size. The default (~0.2 M parameters) trains at ~100-200 img/s on 2 CPU cores at
    96-128 px; ``channels=(16, 32, 64, 128, 256), num_res_units=2`` (~1.6 M) suits a GPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: tuple[int, ...] = Field(default=(8, 16, 32, 64, 128), min_length=2)
    num_res_units: int = Field(default=1, ge=0, le=4)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    norm: str = "batch"

    @field_validator("channels")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(c <= 0 for c in value):
            raise ValueError(f"channels must be positive, got {value}")
        return value


def build_unet(config: ModelConfig | None = None) -> nn.Module:
    """A fresh U-Net: input (B, 1, H, W) normalised image, output (B, 4, H, W) logits.

    H and W must be divisible by ``2 ** (len(channels) - 1)`` (16 for the default).
    """
    config = config or ModelConfig()
    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=NUM_CLASSES,
        channels=config.channels,
        strides=(2,) * (len(config.channels) - 1),
        num_res_units=config.num_res_units,
        dropout=config.dropout,
        norm=config.norm,
    )


def required_divisor(config: ModelConfig | None = None) -> int:
    """Image sides must be multiples of this."""
    config = config or ModelConfig()
    return 2 ** (len(config.channels) - 1)
