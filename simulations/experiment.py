"""Experiment configs of the research harness: sites, conditions, budget, resources.

A site is either synthetic (``vendor`` + native ``format`` + number of ``cases``: generated
once, reused) or a real dataset folder (``root`` + ``format`` [+ ``labelled``]). ``role =
"test"`` marks an evaluation-only site (the unseen vendor). ``[recipe]`` is the training
recipe every condition starts from (:class:`common.recipe.Recipe`: model, preprocessing,
optimiser, loss,
label dropout, local training, aggregation). A condition says how a model is trained:
``federated`` (Flower simulation), ``local`` (one model per site, on its own data) or
``centralised`` (one model on the pooled sites), and what it changes in the recipe, written as
nested keys (``recipe.loss.name = "naive"``, ``recipe.label_dropout.p = 0.5``,
``recipe.aggregation.strategy = "fedprox"``); ``labels = "full"`` trains on every structure of
synthetic sites (the fully labelled upper bound). Every condition gets the same budget:
``rounds x recipe.train.epochs`` passes over each site's training data.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from common.config import (
    FormatName,
    OptionalLabelledSet,
    SiteName,
    SiteSpec,
    StrictModel,
    format_validation_error,
)
from common.data.synthetic.federation import FederationConfig, SyntheticSiteConfig
from common.data.synthetic.knobs import SynthesisKnobs
from common.data.synthetic.shift import DomainShift, site_dump
from common.data.synthetic.vendors import VendorName
from common.recipe import Recipe, merge


class ExperimentSite(StrictModel):
    name: SiteName
    format: FormatName
    role: Literal["train", "test"] = "train"
    # synthetic
    vendor: VendorName | None = None
    cases: int | None = Field(default=None, ge=1)
    frames: int = Field(default=2, ge=2)
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    shift: DomainShift | None = None  # on the shift-strength axis (common.data.synthetic.shift)
    # real data
    root: Path | None = None
    max_cases: int | None = Field(default=None, ge=1)
    options: dict[str, object] = Field(default_factory=dict)
    # both: the structures the site annotates (folder format / restriction of a real dataset)
    labelled: OptionalLabelledSet = None

    @model_validator(mode="after")
    def _synthetic_or_real(self) -> ExperimentSite:
        synthetic = self.vendor is not None
        if synthetic == (self.root is not None):
            raise ValueError(
                f"site {self.name}: give either vendor (synthetic) or root (real data)"
            )
        if synthetic and self.cases is None:
            raise ValueError(f"site {self.name}: a synthetic site needs 'cases'")
        if self.shift is not None and not synthetic:
            raise ValueError(f"site {self.name}: 'shift' is a setting of synthetic sites only")
        return self

    @property
    def synthetic(self) -> bool:
        return self.vendor is not None


class Condition(StrictModel):
    name: str = Field(min_length=1, max_length=80)
    kind: Literal["federated", "local", "centralised"]
    labels: Literal["partial", "full"] = "partial"
    recipe: dict[str, Any] = Field(default_factory=dict)  # nested changes to [recipe]

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


DEFAULT_CONDITIONS: list[Condition] = [
    Condition(name="FedAvg + adaptive CE", kind="federated"),
    Condition(
        name="FedAvg + adaptive CE + label dropout",
        kind="federated",
        recipe={"label_dropout": {"p": 0.5}},
    ),
    Condition(name="FedAvg + naive CE", kind="federated", recipe={"loss": {"name": "naive"}}),
    Condition(name="local only", kind="local"),
    Condition(name="centralised pooled", kind="centralised"),
]


class Budget(StrictModel):
    """Federated rounds; a pooled run trains ``rounds x recipe.train.epochs`` epochs."""

    rounds: int = Field(default=10, ge=1)


_MOVED = {  # [budget] keys of earlier configs -> where they live now
    "local_epochs": "recipe.train.epochs",
    "lr": "recipe.optimiser.lr",
    "batch_size": "recipe.train.batch_size",
    "dice_weight": "recipe.loss.dice_weight",
    "augment": "recipe.train.augment.enabled",
    "image_size": "recipe.preprocess.size",
    "model": "recipe.model",
}
_MOVED_CONDITION = {
    "loss": "recipe.loss.name",
    "label_dropout_p": "recipe.label_dropout.p",
    "strategy": "recipe.aggregation.strategy",
    "proximal_mu": "recipe.aggregation.proximal_mu",
}


class ResourcesConfig(StrictModel):
    cpus_per_site: float = Field(default=1.0, gt=0)
    gpus_per_site: float = Field(default=0.0, ge=0)
    threads: int = Field(default=0, ge=0)  # torch threads per process; 0 = cores / parallel
    parallel_runs: int = Field(default=0, ge=0)  # federated runs at once; 0 = one per core
    device: str = "auto"
    # an existing Ray cluster for the simulated sites ("host:port" of its head, as `ray start
    # --head` prints); empty: Flower starts Ray on this machine. RAY_ADDRESS works too.
    # no ray_address: one local Ray head for the whole study, joined by every run (instead of a
    # Ray started and stopped inside each run); the runs then go one at a time (see below)
    keep_ray: bool = False
    ray_address: str = Field(
        default="", pattern=r"^$|^(auto|[A-Za-z0-9_.\[\]:-]+:\d{1,5}|ray://\S+)$"
    )

    @property
    def shares_ray(self) -> bool:
        """Whether every run joins one Ray (kept for the study, or a cluster's)."""
        return self.keep_ray or bool(self.ray_address) or bool(os.environ.get("RAY_ADDRESS"))

    @model_validator(mode="after")
    def _one_run_per_shared_ray(self) -> ResourcesConfig:
        if self.parallel_runs > 1 and (self.keep_ray or self.ray_address):
            raise ValueError(
                f"parallel_runs = {self.parallel_runs} with "
                f"{'keep_ray' if self.keep_ray else 'ray_address'}: runs that join one Ray each "
                "size their Flower actor pool to the whole of it and then wait on each other's "
                "actors (a deadlock, measured with 4 runs on 2 cores); set parallel_runs = 1, "
                "or leave keep_ray / ray_address out to overlap runs"
            )
        return self

    def federated_workers(self) -> int:
        """How many federated runs go at once: ``parallel_runs`` (0: one per core), but one at a
        time where the runs share a Ray."""
        if self.shares_ray:
            return 1
        return self.parallel_runs or os.cpu_count() or 1


class ShiftAxis(StrictModel):
    """``[shift]``: run the experiment once per level of the shift-strength axis
    (``common.data.synthetic.shift``), moving ``sites`` from ``reference``'s domain (s = 0) to
    their own vendor with the structure shift (s = 1); every other site stays as it is."""

    levels: list[float] = Field(min_length=1)
    sites: list[SiteName] = Field(min_length=1)
    reference: VendorName = "A"

    @model_validator(mode="after")
    def _check(self) -> ShiftAxis:
        if any(not 0.0 <= s <= 1.0 for s in self.levels):
            raise ValueError(f"levels must lie in [0, 1], got {self.levels}")
        tags = [level_tag(s) for s in self.levels]
        if len(set(tags)) != len(tags):
            raise ValueError(
                f"levels must differ in their first two decimals (each names its run folder, "
                f"s<100 s>), got {self.levels}"
            )
        return self


def level_tag(level: float) -> str:
    """``s050`` for s = 0.5: the suffix of a level's experiment name and data folder."""
    return f"s{round(level * 100):03d}"


class QuickOverrides(StrictModel):
    """``[quick]``: a smaller variant of the same study (``--quick``)."""

    seeds: list[int] | None = Field(default=None, min_length=1)
    rounds: int | None = Field(default=None, ge=1)
    local_epochs: int | None = Field(default=None, ge=1)
    image_size: int | None = Field(default=None, ge=16)  # recipe.preprocess.size
    cases: dict[str, int] = Field(default_factory=dict)  # per site: cases, or max_cases (real)
    shift_levels: list[float] | None = Field(default=None, min_length=1)  # [shift] levels


# Recipe settings added after runs were keyed, with the value that behaves as before they
# existed: left out of a run's key at that value, so finished runs stay valid.
ADDED_SETTINGS: dict[tuple[str, ...], object] = {
    ("label_dropout", "mode"): "structures",
    **{("train", "augment", name): 0.0 for name in ("gamma", "speckle", "blur", "noise")},
}


def recipe_dump(recipe: Recipe) -> dict[str, Any]:
    """The recipe as a run's key sees it (see :data:`ADDED_SETTINGS`)."""
    dumped = recipe.model_dump(mode="json")
    for path, neutral in ADDED_SETTINGS.items():
        section = dumped
        for part in path[:-1]:
            section = section.get(part, {})
        if section.get(path[-1], neutral) == neutral:
            section.pop(path[-1], None)
    return dumped


def payload_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class TrackingConfig(StrictModel):
    """``[tracking]``: every federated run of the study also to MLflow (one MLflow run per
    condition and seed, named ``<condition>/seed-<n>``; needs ``echofl[mlflow]``). TensorBoard
    files are written in each run's folder either way."""

    mlflow_tracking_uri: str = ""  # e.g. "sqlite:///mlflow.db" or "http://host:5000"
    mlflow_experiment: str = ""  # empty: the experiment's name


class ExperimentConfig(StrictModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    data_dir: Path = Path("data/experiments")
    output_dir: Path = Path("runs")
    cache_dir: Path = Path(".cache/echofl")
    knobs: SynthesisKnobs = Field(default_factory=SynthesisKnobs)
    budget: Budget = Field(default_factory=Budget)
    recipe: Recipe = Field(default_factory=Recipe)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    conditions: list[Condition] = Field(default_factory=lambda: list(DEFAULT_CONDITIONS))
    sites: list[ExperimentSite] = Field(min_length=1)
    quick: QuickOverrides | None = None
    shift: ShiftAxis | None = None

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        """Name the new place of a key that earlier configs had elsewhere."""
        if not isinstance(data, dict):
            return data
        budget = data.get("budget") if isinstance(data.get("budget"), dict) else {}
        moved = [f"budget.{k} is now {v}" for k, v in _MOVED.items() if k in budget]
        for i, c in enumerate(data.get("conditions") or []):
            if isinstance(c, dict):
                moved += [
                    f"conditions.{i}.{k} is now conditions.{i}.{v}"
                    for k, v in _MOVED_CONDITION.items()
                    if k in c
                ]
        if moved:
            raise ValueError("; ".join(moved))
        return data

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        for condition in self.conditions:
            if "preprocess" in condition.recipe:
                raise ValueError(
                    f"condition {condition.name!r}: recipe.preprocess cannot change per condition "
                    "(every condition is scored on the same preprocessed data); set [recipe."
                    "preprocess] for the whole experiment"
                )
            recipe = self.recipe_for(condition)
            if recipe.label_dropout.mode == "site-sets" and condition.kind != "centralised":
                raise ValueError(
                    f"condition {condition.name!r}: label_dropout.mode 'site-sets' needs the "
                    "labelled sets of every site in one training run: centralised conditions "
                    f"only (this one is {condition.kind})"
                )
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError("site names must be unique")
        if not any(s.role == "train" for s in self.sites):
            raise ValueError("at least one site must have role 'train'")
        slugs = [c.slug for c in self.conditions]
        if len(set(slugs)) != len(slugs):
            raise ValueError("condition names must be unique")
        if self.quick is not None:
            unknown = sorted(set(self.quick.cases) - set(names))
            if unknown:
                raise ValueError(f"quick.cases names unknown site(s): {', '.join(unknown)}")
        if self.shift is not None:
            by_name = {s.name: s for s in self.sites}
            for name in self.shift.sites:
                if name not in by_name:
                    raise ValueError(f"shift.sites names unknown site {name!r}")
                if not by_name[name].synthetic or by_name[name].shift is not None:
                    raise ValueError(
                        f"shift.sites: site {name!r} must be synthetic, without its own 'shift'"
                    )
        if any(c.labels == "full" for c in self.conditions) and not all(
            s.synthetic for s in self.sites if s.role == "train"
        ):
            raise ValueError("a fully labelled condition needs synthetic training sites")
        return self

    def quick_variant(self) -> ExperimentConfig:
        """The ``[quick]`` version: its own name and data folder, so nothing is mixed up."""
        if self.quick is None:
            raise ValueError(f"experiment {self.name!r} has no [quick] section")
        q = self.quick
        budget = self.budget.model_copy(update={"rounds": q.rounds} if q.rounds else {})
        changes: dict[str, Any] = {}
        if q.local_epochs is not None:
            changes["train"] = {"epochs": q.local_epochs}
        if q.image_size is not None:
            changes["preprocess"] = {"size": (q.image_size, q.image_size)}
        recipe = Recipe.model_validate(merge(self.recipe, changes))
        sites = [  # a synthetic site generates fewer cases; a real one reads fewer
            s.model_copy(update={"cases" if s.synthetic else "max_cases": q.cases[s.name]})
            if s.name in q.cases
            else s
            for s in self.sites
        ]
        shift = self.shift
        if q.shift_levels is not None:
            if shift is None:
                raise ValueError("quick.shift_levels needs a [shift] section")
            shift = ShiftAxis.model_validate({**shift.model_dump(), "levels": q.shift_levels})
        return self.model_copy(
            update={
                "shift": shift,
                "name": f"{self.name}-quick",
                "data_dir": self.data_dir.with_name(self.data_dir.name + "-quick"),
                "seeds": q.seeds or self.seeds,
                "budget": budget,
                "recipe": recipe,
                "sites": sites,
                "quick": None,
            }
        )

    def at_level(self, level: float) -> ExperimentConfig:
        """One level of ``[shift]``: its own name and data folder, the shifted sites set."""
        if self.shift is None:
            raise ValueError(f"experiment {self.name!r} has no [shift] section")
        shift = DomainShift(strength=level, reference=self.shift.reference)
        tag = level_tag(level)
        return self.model_copy(
            update={
                "name": f"{self.name}-{tag}",
                "data_dir": self.data_dir / tag,
                "sites": [
                    s.model_copy(update={"shift": shift}) if s.name in self.shift.sites else s
                    for s in self.sites
                ],
                "shift": None,
            }
        )

    def recipe_for(self, condition: Condition) -> Recipe:
        """``[recipe]`` with the condition's changes; a bad change names the condition."""
        try:
            return Recipe.model_validate(merge(self.recipe, condition.recipe))
        except ValidationError as exc:
            error = format_validation_error(f"condition {condition.name!r}", exc)
            raise ValueError(f"{error.source}: recipe.{error.problem}") from None

    @property
    def epochs(self) -> int:
        """The budget of a pooled run: the same passes over the data as a federated one."""
        return self.budget.rounds * self.recipe.train.epochs

    @property
    def train_sites(self) -> list[ExperimentSite]:
        return [s for s in self.sites if s.role == "train"]

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name

    def synthetic_federation(self) -> FederationConfig | None:
        synthetic = [s for s in self.sites if s.synthetic]
        if not synthetic:
            return None
        return FederationConfig(
            seed=0,
            output_dir=self.data_dir,
            knobs=self.knobs,
            sites=[
                SyntheticSiteConfig(
                    name=s.name,
                    vendor=s.vendor,
                    format=s.format,
                    cases=s.cases,  # type: ignore[arg-type]
                    labelled=s.labelled if s.format == "folder" else None,
                    frames=s.frames,
                    split=s.split,
                    role=s.role,
                    shift=s.shift,
                )
                for s in synthetic
            ],
        )

    def site_spec(self, site: ExperimentSite) -> SiteSpec:
        """How the data layer reads a site (a folder-format synthetic site already carries its
        labelled set; other formats are restricted to ``labelled`` when it is given)."""
        root = self.data_dir / site.name if site.synthetic else site.root
        labelled = None if (site.synthetic and site.format == "folder") else site.labelled
        return SiteSpec(
            name=site.name,
            format=site.format,
            root=root,  # type: ignore[arg-type]
            labelled=labelled,
            max_cases=site.max_cases,
            options=site.options,
        )

    def run_payload(self, condition: Condition, seed: int) -> dict[str, Any]:
        """Everything that determines one run's result."""
        return {
            "condition": {"kind": condition.kind, "labels": condition.labels},
            "recipe": recipe_dump(self.recipe_for(condition)),
            "seed": seed,
            "budget": self.budget.model_dump(mode="json"),
            "sites": [site_dump(s) for s in self.sites],
            "knobs": self.knobs.model_dump(mode="json"),
        }

    def run_key(self, condition: Condition, seed: int) -> str:
        """Hash of :meth:`run_payload` (for resuming; see simulations/rekey.py)."""
        return payload_key(self.run_payload(condition, seed))
