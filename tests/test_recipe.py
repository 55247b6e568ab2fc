"""The training recipe: one source for every setting, its flat run-config form, its errors."""

import tomllib
from pathlib import Path

import pytest

from common.config import validate_config
from common.errors import ConfigError
from common.federation.run_settings import RunSettings, parse_run_settings, to_run_config
from common.recipe import RECIPE_KEYS, Recipe, recipe_from_flat, recipe_to_flat
from simulations.experiment import ExperimentConfig

REPO = Path(__file__).resolve().parents[1]

EXPERIMENT = {
    "name": "t",
    "recipe": {"optimiser": {"lr": 0.002}, "train": {"epochs": 2}},
    "budget": {"rounds": 3},
    "sites": [{"name": "A", "vendor": "A", "format": "camus-nifti", "cases": 2}],
    "conditions": [
        {"name": "fed", "kind": "federated"},
        {"name": "ld", "kind": "centralised", "recipe": {"label_dropout": {"p": 0.5}}},
    ],
}


def test_pyproject_defaults_are_the_recipe_and_run_option_defaults() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    defaults = pyproject["tool"]["flwr"]["app"]["config"]
    assert defaults == to_run_config(RunSettings())
    assert parse_run_settings(defaults) == RunSettings()


def test_a_changed_recipe_survives_the_flat_round_trip() -> None:
    recipe = Recipe.model_validate(
        {
            "model": {"channels": [4, 8, 16], "norm": "instance"},
            "preprocess": {"size": [64, 64], "normalisation": "unit"},
            "optimiser": {"name": "sgd", "lr": 0.05, "momentum": 0.6},
            "loss": {"name": "naive", "dice_weight": 0.0},
            "label_dropout": {"p": 0.25, "structures": ["MYO", "LA"]},
            "train": {"epochs": 3, "batch_size": 4, "augment": {"enabled": False, "shift": 0.1}},
            "aggregation": {"strategy": "fedprox", "proximal_mu": 0.01},
        }
    )
    flat = recipe_to_flat(recipe)
    assert flat["model-channels"] == "4,8,16" and flat["image-size"] == 64
    assert flat["label-dropout-structures"] == "MYO,LA" and flat["augment-shift"] == 0.1
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())
    assert recipe_from_flat(flat) == recipe
    assert recipe.aggregation.site_proximal_mu == 0.01
    assert Recipe().aggregation.model_copy(update={"proximal_mu": 0.5}).site_proximal_mu == 0.0


def test_every_leaf_has_one_flat_key() -> None:
    paths = list(RECIPE_KEYS.values())
    assert len(set(paths)) == len(paths) == len(recipe_to_flat(Recipe()))
    assert RECIPE_KEYS["lr"] == ("optimiser", "lr")
    assert RECIPE_KEYS["local-epochs"] == ("train", "epochs")


@pytest.mark.parametrize(
    ("flat", "message"),
    [
        ({"lr": 5}, "run config: lr: Input should be less than or equal to 1"),
        ({"lr": float("nan")}, "run config: lr: Input should be a finite number"),
        ({"label-dropout-p": -0.1}, "label-dropout-p: Input should be greater than or equal to 0"),
        ({"model-channels": "8,x"}, "model-channels must be comma-separated integers"),
        ({"lrr": 0.1}, "run config: lrr: unknown key (typo?)"),
        ({"local-epochs": 0}, "local-epochs: Input should be greater than or equal to 1"),
        ({"optimiser": "rmsprop"}, "optimiser: Input should be 'adam' or 'sgd'"),
        ({"label-dropout-mode": "site-sets"}, "a federated site sees only its own"),
        ({"label-dropout-mode": "sites"}, "Input should be 'structures' or 'site-sets'"),
    ],
)
def test_bad_values_name_their_flat_key(flat: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_settings(flat)
    assert message in str(info.value)


def test_conditions_change_the_experiment_recipe() -> None:
    config = validate_config(ExperimentConfig, EXPERIMENT, "t.toml")
    fed, ld = config.conditions
    assert config.recipe_for(fed).optimiser.lr == 0.002
    assert config.recipe_for(ld).label_dropout.p == 0.5
    assert config.recipe_for(ld).optimiser.lr == 0.002  # the rest is the experiment's
    assert config.epochs == 6  # rounds x local epochs, the pooled budget


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"budget": {"rounds": 3, "lr": 0.1}},
            "budget.lr is now recipe.optimiser.lr",
        ),
        (
            {"conditions": [{"name": "x", "kind": "federated", "label_dropout_p": 0.5}]},
            "conditions.0.label_dropout_p is now conditions.0.recipe.label_dropout.p",
        ),
        (
            {"conditions": [{"name": "x", "kind": "federated", "recipe": {"loss": {"nme": "a"}}}]},
            "condition 'x': recipe.loss.nme: unknown key",
        ),
        (
            {"conditions": [{"name": "x", "kind": "local", "recipe": {"preprocess": {}}}]},
            "recipe.preprocess cannot change per condition",
        ),
    ],
)
def test_experiment_recipe_errors_say_what_to_change(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(ExperimentConfig, {**EXPERIMENT, **change}, "t.toml")
    assert message in str(info.value)
