"""The segmentation network: a MONAI 2-D U-Net with 1 input channel (2 with the partner frame,
:mod:`common.data.context`) and 4 output classes."""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from common.data.context import Context, input_channels
from common.files import write_atomic
from common.labels import NUM_CLASSES

log = logging.getLogger(__name__)


class ModelConfig(BaseModel):
    """U-Net size. The default (~0.2 M parameters) trains at ~100-200 img/s on 2 CPU cores at
    96-128 px; ``channels=(16, 32, 64, 128, 256), num_res_units=2`` (~1.6 M) suits a GPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: tuple[int, ...] = Field(default=(8, 16, 32, 64, 128), min_length=2)
    num_res_units: int = Field(default=1, ge=0, le=4)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    norm: str = "batch"
    # "unet": MONAI's top block outputs the classes (a 4-channel transposed conv, its
    # BatchNorm and a 4->4 conv: the class channels share a normalisation and mix);
    # "pointwise": the U-Net outputs channels[0] features and a 1x1 conv maps them to the
    # classes, so each class owns exactly one row of the last layer.
    head: Literal["unet", "pointwise"] = "unet"
    # what the network sees besides the frame it segments (common.data.context): "none", or
    # "partner": the frame of the same recording that differs most from it (for ED, ES), as a
    # second input channel
    context: Context = "none"

    @field_validator("channels")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(c <= 0 for c in value):
            raise ValueError(f"channels must be positive, got {value}")
        return value


def build_unet(config: ModelConfig | None = None) -> nn.Module:
    """A fresh U-Net: input (B, C, H, W) normalised image (C = 1, or 2 with the partner frame),
    output (B, 4, H, W) logits.

    H and W must be divisible by ``2 ** (len(channels) - 1)`` (16 for the default).
    """
    from monai.networks.nets import UNet  # imported here: importing MONAI takes seconds

    config = config or ModelConfig()
    pointwise = config.head == "pointwise"
    unet = UNet(
        spatial_dims=2,
        in_channels=input_channels(config.context),
        out_channels=config.channels[0] if pointwise else NUM_CLASSES,
        channels=config.channels,
        strides=(2,) * (len(config.channels) - 1),
        num_res_units=config.num_res_units,
        dropout=config.dropout,
        norm=config.norm,
    )
    if not pointwise:
        return unet
    return nn.Sequential(unet, nn.Conv2d(config.channels[0], NUM_CLASSES, kernel_size=1))


def required_divisor(config: ModelConfig | None = None) -> int:
    """Image sides must be multiples of this."""
    config = config or ModelConfig()
    return 2 ** (len(config.channels) - 1)


def load_unet(config: ModelConfig | None, cache_dir: Path) -> nn.Module:
    """The same U-Net as :func:`build_unet`, compiled to TorchScript once and kept in
    ``cache_dir``: later processes load it without importing MONAI.

    A deployed site starts a fresh process for every Flower message, and importing MONAI is
    about half of that process's start-up (see docs/benchmarks.md). The TorchScript module has
    the same parameters, names, layers and numerics; its initial weights are whatever the
    first build drew, so callers load the weights they train from (the global model). The file
    name carries a digest of the configuration and of the torch and MONAI versions; a file that
    does not load is rebuilt. One process builds it at a time (a lock file beside it): the
    simulated sites sharing a cache, or a site's warm-up thread and its first task, wait for the
    first build and load it instead of each building their own (~3 s of CPU each).
    """
    config = config or ModelConfig()
    key = f"{config.model_dump_json()}|torch {torch.__version__}|monai {version('monai')}"
    path = Path(cache_dir) / f"unet-{hashlib.sha256(key.encode()).hexdigest()[:16]}.torchscript"
    path.parent.mkdir(parents=True, exist_ok=True)
    # one builder at a time (processes sharing the cache, or a warm-up thread and its process):
    # the others wait, then load what it wrote
    with open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated; it works
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
            if path.is_file():
                try:
                    return torch.jit.load(str(path), map_location="cpu")
                except (RuntimeError, OSError) as exc:  # corrupt or truncated: build it again
                    log.warning("%s does not load (%s); building the network again", path, exc)
            model = torch.jit.script(build_unet(config))
            buffer = io.BytesIO()
            torch.jit.save(model, buffer)
        write_atomic(path, buffer.getvalue())
    return model
