"""Settings of a federated run, parsed once from Flower's flat run config.

Flower hands both the ServerApp and every ClientApp ``context.run_config``: a flat mapping of
hyphenated keys to scalars (defaults in ``pyproject.toml`` ``[tool.flwr.app.config]``,
overridable with ``flwr run . --run-config "k=v"``). :func:`parse_run_settings` turns it into one
validated, typed object; an unknown key (a typo) or a bad value is a :class:`ConfigError` naming
the key. This module does not import Flower.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from common.config import StrictModel, validate_config
from common.losses import LossName
from common.model import ModelConfig
from common.preprocess import PreprocessConfig

StrategyName = Literal["fedavg", "fedprox", "fedmedian", "fedtrimmedavg"]


class RunSettings(StrictModel):
    """Every knob of a federated run (hyphenated names in the run config)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    num_server_rounds: int = Field(3, ge=1, le=10_000, alias="num-server-rounds")
    local_epochs: int = Field(1, ge=1, le=1000, alias="local-epochs")
    lr: float = Field(1e-3, gt=0, le=1)
    batch_size: int = Field(16, ge=1, le=4096, alias="batch-size")
    loss: LossName = "adaptive"
    dice_weight: float = Field(1.0, ge=0, alias="dice-weight")
    augment: bool = True
    label_dropout_p: float = Field(0.0, ge=0, le=1, alias="label-dropout-p")
    strategy: StrategyName = "fedavg"
    proximal_mu: float = Field(0.0, ge=0, alias="proximal-mu")
    trim_beta: float = Field(0.2, ge=0, lt=0.5, alias="trim-beta")
    update_norm_factor: float = Field(10.0, ge=0, alias="update-norm-factor")  # 0: off
    sites_timeout: float = Field(600.0, gt=0, alias="sites-timeout")  # wait for min-sites
    pack_weights: bool = Field(True, alias="pack-weights")  # two flat arrays on the wire
    federated_evaluation: bool = Field(True, alias="federated-evaluation")  # off: benchmarks
    transfer_dtype: Literal["float32", "float16"] = Field("float32", alias="transfer-dtype")
    resume: bool = False  # continue the run in output-dir from its last completed round
    inject_faults: str = Field("", alias="inject-faults")  # tests only: "SITE:KIND[@p],..."
    fraction_train: float = Field(1.0, gt=0, le=1, alias="fraction-train")
    fraction_evaluate: float = Field(1.0, ge=0, le=1, alias="fraction-evaluate")
    min_sites: int = Field(2, ge=1, alias="min-sites")
    round_timeout: float = Field(3600.0, gt=0, alias="round-timeout")
    image_size: int = Field(128, ge=16, le=1024, alias="image-size")
    normalisation: Literal["zscore", "unit"] = "zscore"
    model_channels: str = Field("8,16,32,64,128", alias="model-channels")
    model_res_units: int = Field(1, ge=0, le=4, alias="model-res-units")
    seed: int = 0
    device: str = "auto"
    client_threads: int = Field(0, ge=0, alias="client-threads")
    output_dir: str = Field("runs/federated", alias="output-dir")
    cache_dir: str = Field(".cache/echofl", alias="cache-dir")
    sim_sites: str = Field("", alias="sim-sites")
    save_updates: bool = Field(False, alias="save-updates")
    full_labels: bool = Field(False, alias="full-labels")  # research: train on full truth
    signing_key: str = Field("", alias="signing-key")  # coordinator: sign every checkpoint
    verify_key: str = Field("", alias="verify-key")  # public key for initial-checkpoint
    initial_checkpoint: str = Field("", alias="initial-checkpoint")  # fine-tune from a model
    site_registry: str = Field("", alias="site-registry")  # coordinator: name -> node id

    @field_validator("model_channels")
    @classmethod
    def _channels(cls, value: str) -> str:
        try:
            channels = [int(c) for c in value.split(",")]
        except ValueError:
            raise ValueError(
                f"model-channels must be comma-separated integers, got {value!r}"
            ) from None
        if len(channels) < 2 or min(channels) <= 0:
            raise ValueError(f"model-channels needs >= 2 positive sizes, got {value!r}")
        return value

    @property
    def model(self) -> ModelConfig:
        channels = tuple(int(c) for c in self.model_channels.split(","))
        return ModelConfig(channels=channels, num_res_units=self.model_res_units)

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(
            size=(self.image_size, self.image_size), normalisation=self.normalisation
        )

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)


def parse_run_settings(run_config: Mapping[str, Any], source: str = "run config") -> RunSettings:
    """Validate Flower's flat run config (hyphenated keys)."""
    return validate_config(RunSettings, dict(run_config), source)
