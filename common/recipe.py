"""The training recipe: every setting that decides how a model is trained, in one typed model.

One nested :class:`Recipe` (model, preprocessing, optimiser, loss, label dropout, local
training, aggregation) is used by every path: the federated run config, the centralised and
local-only baselines and the research harness's experiment configs. Flower's run config is
flat (hyphenated keys, scalar values); :func:`recipe_to_flat` and :func:`recipe_from_flat`
convert in one place, by a rule, so a new setting is one field here:

* the flat key of a leaf is its field name hyphenated (``weight_decay`` -> ``weight-decay``),
  unless :data:`FLAT_NAMES` names it (``optimiser.lr`` -> ``lr``);
* tuples and optional lists travel as comma-separated strings, a square image as one side.

The defaults of ``pyproject.toml`` ``[tool.flwr.app.config]`` are the flat form of
``Recipe()`` plus :class:`common.federation.run_settings.RunOptions` (a test checks it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.config import format_validation_error
from common.data.preprocess import PreprocessConfig
from common.errors import ConfigError
from common.training.augment import Augmentation
from common.training.losses import LossName
from common.training.model import ModelConfig

StrategyName = Literal[
    "fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "fedavgm", "fedadam", "fedyogi"
]
SERVER_OPTIMISERS = ("fedavgm", "fedadam", "fedyogi")
ROBUST = ("fedmedian", "fedtrimmedavg")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class OptimiserSettings(_Section):
    """Local optimiser of every site (and of the pooled baselines)."""

    name: Literal["adam", "sgd"] = "adam"
    lr: float = Field(default=1e-3, gt=0, le=1)
    weight_decay: float = Field(default=0.0, ge=0, le=1)  # L2 penalty of Adam / SGD
    momentum: float = Field(default=0.9, ge=0, lt=1)  # SGD only
    # the learning rate over the run: "constant", or "cosine": from lr down to
    # lr x final_lr_fraction at the run's last epoch (half a cosine; Loshchilov & Hutter, SGDR,
    # 2017, without restarts), one value per epoch; a federated run's epochs are its rounds x
    # local epochs, so a site's lr follows the round the coordinator names
    lr_schedule: Literal["constant", "cosine"] = "constant"
    final_lr_fraction: float = Field(default=0.05, ge=0, le=1)

    def lr_at(self, epoch: int, epochs: int) -> float:
        """The learning rate of epoch ``epoch`` (1-based) of a run of ``epochs`` epochs."""
        if not 1 <= epoch <= epochs:
            raise ValueError(f"epoch {epoch} is outside the run's 1..{epochs}")
        if self.lr_schedule == "constant" or epochs == 1:
            return self.lr
        progress = (epoch - 1) / (epochs - 1)
        floor = self.lr * self.final_lr_fraction
        return floor + (self.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def build(self, parameters: Iterator[torch.nn.Parameter]) -> torch.optim.Optimizer:
        if self.name == "sgd":
            return torch.optim.SGD(
                parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        return torch.optim.Adam(parameters, lr=self.lr, weight_decay=self.weight_decay)


class LossSettings(_Section):
    """``name``: adaptive (marginal) CE or naive CE; ``dice_weight``: marginal Dice term."""

    name: LossName = "adaptive"
    dice_weight: float = Field(default=1.0, ge=0)


class LabelDropoutSettings(_Section):
    """``p``: drop probability of each partially labelled structure (0 = off). ``structures``:
    None = every structure partially labelled across the training sites (the paper's rule)."""

    p: float = Field(default=0.0, ge=0.0, le=1.0)
    structures: tuple[str, ...] | None = None
    # "structures": each structure dropped independently (the paper); "site-sets": a sample's
    # labelled set replaced by another site's smaller set (pooled runs; see SiteSetDropout)
    mode: Literal["structures", "site-sets"] = "structures"

    @model_validator(mode="after")
    def _site_sets_take_no_structures(self) -> LabelDropoutSettings:
        if self.mode == "site-sets" and self.structures is not None:
            raise ValueError(
                "label_dropout.structures cannot be combined with mode 'site-sets' (a sample "
                "takes another site's whole labelled set, not a chosen structure's absence)"
            )
        return self


class LocalTraining(_Section):
    """Passes over a site's data per round (or per epoch of a pooled run), batches, AMP."""

    epochs: int = Field(default=1, ge=1, le=10_000)
    batch_size: int = Field(default=16, ge=1, le=4096)
    augment: Augmentation = Field(default_factory=Augmentation)
    amp: bool = True  # only takes effect on CUDA


class DistillationSettings(_Section):
    """Conditional distillation on unannotated structures (ConDistFL; federated runs only):
    ``weight`` 0 = off; reached linearly over ``ramp_rounds`` rounds; ``temperature`` T."""

    weight: float = Field(default=0.0, ge=0, le=100)
    temperature: float = Field(default=2.0, gt=0, le=100)
    ramp_rounds: int = Field(default=0, ge=0, le=10_000)


class AggregationSettings(_Section):
    """How the coordinator combines the sites' updates, and which updates it accepts.

    ``strategy``: Flower's FedAvg, FedProx, FedMedian, FedTrimmedAvg, or a server optimiser on
    the averaged update (FedAvgM: ``server_lr``, ``server_momentum``; FedAdam / FedYogi:
    ``server_lr``, ``server_beta1``, ``server_beta2``, ``server_tau``; normalisation buffers are
    always averaged plainly). ``label_aware``: each output class's own weights are averaged over
    the sites that annotate it. ``step_normalised``: a site's change is divided by its local
    steps (FedNova-like). See :mod:`fl_server.aggregation`.
    """

    # The default is the best federated recipe measured on fedecho with partial labels
    # (docs/study.md): the step-normalised mean with server momentum 0.7 (FedAvgM).
    strategy: StrategyName = "fedavgm"
    proximal_mu: float = Field(default=0.0, ge=0)  # FedProx only
    trim_beta: float = Field(default=0.2, ge=0, lt=0.5)  # FedTrimmedAvg only
    label_aware: bool = False
    step_normalised: bool = True
    server_lr: float = Field(default=1.0, gt=0, le=10)
    server_momentum: float = Field(default=0.7, ge=0, lt=1)
    server_beta1: float = Field(default=0.9, ge=0, lt=1)
    server_beta2: float = Field(default=0.99, ge=0, lt=1)
    server_tau: float = Field(default=1e-3, gt=0, le=1)

    @property
    def uses_mean(self) -> bool:
        """Label-aware and step-normalised averaging change the mean that FedAvg, FedProx and
        the server optimisers start from; the robust strategies use no mean, so with them the
        two settings do not apply (the coordinator says so when a run starts)."""
        return self.strategy not in ROBUST

    @property
    def effective_label_aware(self) -> bool:
        return self.label_aware and self.uses_mean

    @property
    def effective_step_normalised(self) -> bool:
        return self.step_normalised and self.uses_mean

    @property
    def site_proximal_mu(self) -> float:
        """The proximal term a site adds (FedProx only)."""
        return self.proximal_mu if self.strategy == "fedprox" else 0.0


class Recipe(_Section):
    """Everything that decides how a model is trained (see the module docstring)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    optimiser: OptimiserSettings = Field(default_factory=OptimiserSettings)
    loss: LossSettings = Field(default_factory=LossSettings)
    label_dropout: LabelDropoutSettings = Field(default_factory=LabelDropoutSettings)
    train: LocalTraining = Field(default_factory=LocalTraining)
    distillation: DistillationSettings = Field(default_factory=DistillationSettings)
    aggregation: AggregationSettings = Field(default_factory=AggregationSettings)


# Flat names that are not the hyphenated field name (kept as the run config always spelled them).
FLAT_NAMES: dict[tuple[str, ...], str] = {
    ("model", "channels"): "model-channels",
    ("model", "num_res_units"): "model-res-units",
    ("model", "dropout"): "model-dropout",
    ("model", "norm"): "model-norm",
    ("model", "head"): "model-head",
    ("model", "context"): "model-context",
    ("preprocess", "size"): "image-size",
    ("optimiser", "name"): "optimiser",
    ("loss", "name"): "loss",
    ("label_dropout", "p"): "label-dropout-p",
    ("label_dropout", "structures"): "label-dropout-structures",
    ("label_dropout", "mode"): "label-dropout-mode",
    ("train", "epochs"): "local-epochs",
    ("train", "augment", "enabled"): "augment",
}


def _leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _leaves(annotation, (*prefix, name))
        else:
            yield (*prefix, name)


# Sections whose leaves carry a prefix in the flat form (``distillation.weight`` ->
# ``distillation-weight``).
FLAT_PREFIXES: dict[tuple[str, ...], str] = {
    ("train", "augment"): "augment-",
    ("distillation",): "distillation-",
}


def _flat_name(path: tuple[str, ...]) -> str:
    if path in FLAT_NAMES:
        return FLAT_NAMES[path]
    prefix = FLAT_PREFIXES.get(path[:-1], "")
    return prefix + path[-1].replace("_", "-")


RECIPE_KEYS: dict[str, tuple[str, ...]] = {_flat_name(p): p for p in _leaves(Recipe)}
if len(RECIPE_KEYS) != len(list(_leaves(Recipe))):  # pragma: no cover - a programming error
    raise RuntimeError("two recipe settings map to the same run-config key")


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        obj = getattr(obj, part)
    return obj


def _to_flat(path: tuple[str, ...], value: Any) -> bool | int | float | str:
    if path == ("preprocess", "size"):
        return int(value[0])
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    if value is None:
        return ""
    return value


def _from_flat(path: tuple[str, ...], value: Any) -> Any:
    if path == ("preprocess", "size"):
        return (value, value) if isinstance(value, int) else value
    if path == ("model", "channels") and isinstance(value, str):
        try:
            return tuple(int(c) for c in value.split(","))
        except ValueError:
            raise ValueError(
                f"model-channels must be comma-separated integers, got {value!r}"
            ) from None
    if path == ("label_dropout", "structures") and isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip()) or None
    return value


def recipe_to_flat(recipe: Recipe) -> dict[str, bool | int | float | str]:
    """The recipe as flat run-config entries (``{"lr": 0.001, "model-channels": "8,16"...}``)."""
    if recipe.preprocess.size[0] != recipe.preprocess.size[1]:
        raise ValueError(f"the run config carries square images only, got {recipe.preprocess.size}")
    return {key: _to_flat(path, _get(recipe, path)) for key, path in RECIPE_KEYS.items()}


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat recipe entries -> the nested dict :class:`Recipe` validates (keys not in
    :data:`RECIPE_KEYS` are ignored)."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        path = RECIPE_KEYS.get(key)
        if path is None:
            continue
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _from_flat(path, value)
    return nested


def recipe_from_flat(flat: Mapping[str, Any], source: str = "run config") -> Recipe:
    """Flat run-config entries -> :class:`Recipe`; a bad value is a :class:`ConfigError` that
    names the flat key (``lr: Input should be less than or equal to 1``)."""
    try:
        return Recipe.model_validate(nest(flat))
    except ValidationError as exc:
        names = {path: key for key, path in RECIPE_KEYS.items()}
        raise format_validation_error(source, exc, names) from None
    except ValueError as exc:  # a flat value that does not parse (model-channels)
        raise ConfigError(source, str(exc)) from None


def merge(base: Recipe, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` as a nested dict with ``overrides`` (nested) merged in, for validation."""

    def deep(into: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
        for key, value in update.items():
            if isinstance(value, Mapping) and isinstance(into.get(key), dict):
                into[key] = deep(dict(into[key]), value)
            else:
                into[key] = value
        return into

    return deep(base.model_dump(), overrides)
