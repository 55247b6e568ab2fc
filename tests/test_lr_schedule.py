"""The learning-rate schedule: its values, the loop applying them per epoch, and a federated
site following the round the coordinator names (the run's epochs are rounds x local epochs)."""

import itertools
import math

import pytest
import torch

from common.config import validate_config
from common.errors import ConfigError
from common.federation.protocol import ProtocolError, TrainInstruction
from common.federation.site_round import round_schedule, train_site
from common.recipe import OptimiserSettings, Recipe, recipe_from_flat, recipe_to_flat
from common.training.loop import SegmentationTensors, train
from common.training.model import ModelConfig, build_unet
from tests.helpers import blob_site

CPU = torch.device("cpu")
SMALL = {"model": ModelConfig(channels=(4, 8)).model_dump(), "preprocess": {"size": [32, 32]}}


def cosine(**train: object) -> Recipe:
    return Recipe.model_validate(
        {
            **SMALL,
            "optimiser": {"lr": 0.01, "lr_schedule": "cosine", "final_lr_fraction": 0.1},
            "train": {"batch_size": 8, "augment": {"enabled": False}, **train},
        }
    )


def test_cosine_runs_from_lr_to_its_final_fraction() -> None:
    opt = OptimiserSettings(lr=0.01, lr_schedule="cosine", final_lr_fraction=0.1)
    assert opt.lr_at(1, 5) == pytest.approx(0.01)
    assert opt.lr_at(3, 5) == pytest.approx(0.0055)  # halfway: the mean of 0.01 and 0.001
    assert opt.lr_at(5, 5) == pytest.approx(0.001)
    # half a cosine: 0.001 + 0.009 * (1 + cos(pi / 4)) / 2 at a quarter of the way
    assert opt.lr_at(2, 5) == pytest.approx(0.001 + 0.009 * (1 + math.cos(math.pi / 4)) / 2)
    assert opt.lr_at(1, 1) == 0.01  # a one-epoch run trains at lr
    values = [opt.lr_at(e, 50) for e in range(1, 51)]
    assert all(a > b for a, b in itertools.pairwise(values))  # strictly falling
    with pytest.raises(ValueError, match=r"epoch 6 is outside the run's 1\.\.5"):
        opt.lr_at(6, 5)


def test_constant_is_the_default_and_ignores_the_position() -> None:
    opt = OptimiserSettings(lr=0.003)
    assert opt.lr_schedule == "constant"
    assert {opt.lr_at(e, 40) for e in (1, 17, 40)} == {0.003}


def test_a_bad_schedule_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="lr_schedule"):
        validate_config(Recipe, {"optimiser": {"lr_schedule": "linear"}}, "recipe.toml")
    with pytest.raises(ConfigError, match="final_lr_fraction"):
        validate_config(Recipe, {"optimiser": {"final_lr_fraction": 1.5}}, "recipe.toml")


def test_the_schedule_travels_in_the_flat_run_config() -> None:
    recipe = cosine()
    flat = recipe_to_flat(recipe)
    assert flat["lr-schedule"] == "cosine" and flat["final-lr-fraction"] == 0.1
    assert recipe_from_flat(flat) == recipe


def _lr_per_epoch(monkeypatch: pytest.MonkeyPatch, run: object) -> list[float]:
    """The learning rates the optimiser stepped with while ``run`` trained, each change once
    (one value per epoch when the schedule changes it every epoch)."""
    seen: list[float] = []
    original = torch.optim.Adam.step

    def step(self: torch.optim.Optimizer, *args: object, **kwargs: object) -> object:
        lr = self.param_groups[0]["lr"]
        if not seen or seen[-1] != lr:
            seen.append(lr)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    run()  # type: ignore[operator]
    return seen


def test_a_pooled_run_steps_the_rate_every_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = cosine(epochs=3)
    data = SegmentationTensors.from_sites([blob_site(16, seed=1, size=32)])
    model = build_unet(recipe.model)
    lrs = _lr_per_epoch(monkeypatch, lambda: train(model, data, recipe, seed=0, device=CPU))
    assert lrs == pytest.approx([0.01, 0.0055, 0.001])


def test_a_site_follows_the_coordinators_round(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = cosine(epochs=2)  # a run of 3 rounds x 2 local epochs = 6 epochs
    site = blob_site(16, seed=1, size=32)
    model = build_unet(recipe.model)
    instruction = TrainInstruction.from_config(
        TrainInstruction(2, server_rounds=3).to_config()  # as the message carries it
    )
    lrs = _lr_per_epoch(
        monkeypatch,
        lambda: train_site(model, site, recipe, instruction, seed=0, device=CPU),
    )
    opt = recipe.optimiser
    assert lrs == pytest.approx([opt.lr_at(3, 6), opt.lr_at(4, 6)])
    assert round_schedule(recipe, TrainInstruction(3, server_rounds=3)) == (4, 6)
    assert round_schedule(Recipe(), TrainInstruction(3)) is None  # constant: no position needed


def test_a_schedule_without_the_runs_rounds_is_refused() -> None:
    with pytest.raises(ProtocolError, match="needs the run's number of rounds"):
        round_schedule(cosine(), TrainInstruction(2))
    with pytest.raises(ProtocolError, match=r"server-round 4 outside the run's 1\.\.3"):
        TrainInstruction.from_config({"server-round": 4, "server-rounds": 3})


def test_a_resume_that_changes_the_rounds_of_a_cosine_run_is_named() -> None:
    """Each start logs its rounds in ``negotiated``; a resume with other rounds than the start
    before is named for a cosine schedule (its lr would jump), never for a constant one."""
    from fl_server.resume import schedule_change

    first = {"event": "negotiated", "server_rounds": 50}
    rows = [
        first,
        {"event": "round-done", "round": 1},
        {"event": "negotiated", "server_rounds": 80},
    ]
    reason = schedule_change(rows, 80, "cosine")
    assert reason is not None and "80 rounds instead of the 50" in reason
    assert schedule_change(rows, 80, "constant") is None
    same = [first, {"event": "negotiated", "server_rounds": 50}]
    assert schedule_change(same, 50, "cosine") is None
    assert schedule_change([first], 50, "cosine") is None  # a first start: nothing to compare
    older = [{"event": "negotiated"}, {"event": "negotiated", "server_rounds": 80}]
    assert schedule_change(older, 80, "cosine") is None  # a log from before the field
