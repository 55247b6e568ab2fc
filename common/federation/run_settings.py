"""Settings of a federated run, parsed once from Flower's flat run config.

Flower hands both the ServerApp and every ClientApp ``context.run_config``: a flat mapping of
hyphenated keys to scalars (defaults in ``pyproject.toml`` ``[tool.flwr.app.config]``,
overridable with ``flwr run . --run-config "k=v"``). :func:`parse_run_settings` turns it into one
validated, typed object: the training :class:`~common.recipe.Recipe` (how the model is trained,
the same model the baselines and the harness use) and the run's own options (rounds, deadlines,
transport, paths). :func:`to_run_config` is the inverse. An unknown key (a typo) or a bad value
is a :class:`ConfigError` naming the key. This module does not import Flower.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from common.config import StrictModel, validate_config
from common.errors import ConfigError
from common.recipe import RECIPE_KEYS, Recipe, recipe_from_flat, recipe_to_flat


class RunOptions(StrictModel):
    """What a federated run needs besides the recipe (hyphenated names in the run config)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    num_server_rounds: int = Field(3, ge=1, le=10_000, alias="num-server-rounds")
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
    seed: int = 0
    device: str = "auto"
    client_threads: int = Field(0, ge=0, alias="client-threads")
    output_dir: str = Field("runs/federated", alias="output-dir")
    cache_dir: str = Field(".cache/echofl", alias="cache-dir")
    sim_sites: str = Field("", alias="sim-sites")
    save_updates: bool = Field(False, alias="save-updates")
    full_labels: bool = Field(False, alias="full-labels")  # research: train on full truth
    signing_key: str = Field("", alias="signing-key")  # coordinator: sign every checkpoint
    # send the signed final model to every connected site at the end (fl_server.delivery)
    distribute_model: bool = Field(True, alias="distribute-model")
    # the per-round metrics also as TensorBoard scalars in <output-dir>/tensorboard/
    tensorboard: bool = True
    # ... and to MLflow when a tracking URI is given (sqlite:///mlflow.db, http://host:5000;
    # needs echofl[mlflow]); the MLflow run's name defaults to the output folder's
    mlflow_tracking_uri: str = Field("", alias="mlflow-tracking-uri")
    mlflow_experiment: str = Field("echofl", min_length=1, alias="mlflow-experiment")
    mlflow_run_name: str = Field("", alias="mlflow-run-name")
    verify_key: str = Field("", alias="verify-key")  # public key for initial-checkpoint
    initial_checkpoint: str = Field("", alias="initial-checkpoint")  # fine-tune from a model
    site_registry: str = Field("", alias="site-registry")  # coordinator: name -> node id
    audit_log: str = Field("", alias="audit-log")  # coordinator: its append-only audit trail
    # the update gate (fl_server.validation): the coordinator's, not the training recipe's
    update_norm_factor: float = Field(4.0, ge=0, alias="update-norm-factor")  # 0: off
    update_min_change: float = Field(1e-3, ge=0, lt=1, alias="update-min-change")  # 0: off


class RunSettings(RunOptions):
    """The run's options plus its training recipe (``settings.recipe``)."""

    recipe: Recipe = Field(default_factory=Recipe)

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)


def parse_run_settings(run_config: Mapping[str, Any], source: str = "run config") -> RunSettings:
    """Validate Flower's flat run config (hyphenated keys)."""
    flat = dict(run_config)
    if "recipe" in flat:
        raise ConfigError(source, "recipe: unknown key (typo?)")
    recipe = recipe_from_flat({k: v for k, v in flat.items() if k in RECIPE_KEYS}, source)
    if recipe.label_dropout.mode == "site-sets":
        raise ConfigError(
            source,
            "label-dropout-mode = 'site-sets' needs every site's labelled set in one training "
            "run (pooled runs of the harness only); a federated site sees only its own",
        )
    options = validate_config(
        RunOptions, {k: v for k, v in flat.items() if k not in RECIPE_KEYS}, source
    )
    return RunSettings(**options.model_dump(), recipe=recipe)


def to_run_config(settings: RunSettings) -> dict[str, bool | int | float | str]:
    """The flat run config that :func:`parse_run_settings` reads back into ``settings``."""
    options = RunOptions(**settings.model_dump(exclude={"recipe"}))
    return {**options.model_dump(by_alias=True), **recipe_to_flat(settings.recipe)}
