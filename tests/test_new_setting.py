"""A setting added to the recipe reaches every path: a federated site (through Flower's run
config and the real ClientApp handler), a local-only run and a centralised run of the harness.

``weight-decay`` was added by editing ``common/recipe.py`` (the field and its use in the
optimiser) and one default line in ``pyproject.toml``; this test checks that nothing else was
needed.
"""

from pathlib import Path
from typing import Any

import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

import fl_client.client_app as client_app
from common.config import SiteSpec
from common.data.synthetic.federation import FederationConfig, generate_federation
from common.federation.protocol import TrainInstruction, encode_weights
from common.federation.run_settings import RunSettings, to_run_config
from common.recipe import OptimiserSettings, Recipe
from common.training.model import build_unet
from simulations import centralised
from simulations.experiment import Condition, ExperimentConfig
from simulations.runs import RunContext, run_pooled
from tests.helpers import blob_site

DECAY = 0.0123


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The weight decay of every optimiser built, in order."""
    seen: list[float] = []
    original = OptimiserSettings.build

    def spy(self: OptimiserSettings, parameters: Any) -> torch.optim.Optimizer:
        optimiser = original(self, parameters)
        seen.append(optimiser.param_groups[0]["weight_decay"])
        return optimiser

    monkeypatch.setattr(OptimiserSettings, "build", spy)
    return seen


@pytest.fixture(scope="module")
def site_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    fed = FederationConfig.model_validate(
        {
            "seed": 0,
            "output_dir": str(out),
            "sites": [{"name": "A", "vendor": "A", "format": "camus-nifti", "cases": 4}],
        }
    )
    return generate_federation(fed, progress=lambda _: None)[0].root


def small_recipe() -> Recipe:
    return Recipe.model_validate(
        {
            "model": {"channels": [4, 8]},
            "preprocess": {"size": [32, 32]},
            "optimiser": {"weight_decay": DECAY},
            "train": {"batch_size": 4},
        }
    )


def test_a_federated_site_receives_it(
    built: list[float], site_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for field in ("_run_id", "_node_id", "_task_id"):  # outside a run, messages need one
        monkeypatch.setattr(TaskIdentity, field, 1)
    settings = RunSettings(recipe=small_recipe(), cache_dir=str(tmp_path / "cache"))
    model = build_unet(settings.recipe.model)
    arrays = encode_weights(model.state_dict(), packed=True)
    message = Message(
        RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                "config": ConfigRecord(TrainInstruction(1).to_config()),
            }
        ),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )
    context = Context(
        run_id=1,
        node_id=1,
        node_config={"site": "A", "format": "camus-nifti", "data-dir": str(site_root)},
        state=RecordDict(),
        run_config=to_run_config(settings),  # what Flower hands every ClientApp
    )
    reply = client_app.train.__wrapped__(message, context)
    assert not reply.has_error()
    assert built == [DECAY]


def test_local_and_centralised_runs_receive_it(
    built: list[float], site_root: Path, tmp_path: Path
) -> None:
    config = ExperimentConfig.model_validate(
        {
            "name": "t",
            "recipe": small_recipe().model_dump(),
            "budget": {"rounds": 1},
            "sites": [{"name": "A", "vendor": "A", "format": "camus-nifti", "cases": 4}],
            "conditions": [{"name": "local", "kind": "local"}],
        }
    )
    ctx = RunContext(config, {"A": blob_site(8, size=32, name="A")}, tmp_path, None, print)
    run_pooled(ctx, Condition(name="local", kind="local"), 0, tmp_path)
    assert built == [DECAY]

    built.clear()
    pooled = centralised.CentralisedConfig(
        epochs=1,
        recipe=small_recipe(),
        cache_dir=tmp_path / "cache",
        output_dir=tmp_path / "central",
        sites=[SiteSpec(name="A", format="camus-nifti", root=site_root)],
    )
    centralised.run(pooled)
    assert built == [DECAY]
