"""End to end below Flower: synthetic vendor -> native files -> cache -> centralised training.

The short centralised training on one synthetic vendor must reach LV Dice >= 0.85 on held-out
images of that vendor (the same-vendor calibration run of the README uses more data and epochs).
"""

from pathlib import Path

import pytest
import torch

from common.config import SiteSpec
from common.data.cache import load_site_cached
from common.data.preprocess import PreprocessConfig
from common.data.synthetic.federation import FederationConfig, generate_federation
from common.labels import Structure
from common.recipe import Recipe
from common.training import loop
from common.training.loop import SegmentationTensors, evaluate
from common.training.model import build_unet


@pytest.mark.slow
def test_short_centralised_training_on_one_vendor(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    fed = FederationConfig.model_validate(
        {
            "seed": 1,
            "output_dir": str(tmp_path / "data"),
            "workers": 2,
            "sites": [
                {
                    "name": "A",
                    "vendor": "A",
                    "format": "camus-nifti",
                    "cases": 80,
                    "split": [0.7, 0.0, 0.3],
                }
            ],
        }
    )
    site = generate_federation(fed, progress=lambda _: None)[0]
    data = load_site_cached(
        SiteSpec(name="A", format="camus-nifti", root=site.root),
        PreprocessConfig(size=(128, 128)),
        tmp_path / "cache",
    )
    train, test = data.split("train"), data.split("test")
    assert len(train) == 112 and len(test) == 48
    recipe = Recipe.model_validate(
        {"optimiser": {"lr": 1e-3}, "loss": {"dice_weight": 1.0}, "train": {"batch_size": 16}}
    )
    torch.manual_seed(0)
    model = build_unet(recipe.model)
    history = loop.train(
        model,
        SegmentationTensors.from_sites([train]),
        recipe,
        seed=0,
        device=torch.device("cpu"),
        epochs=25,
    )
    scores = evaluate(
        model, SegmentationTensors.from_sites([test]), device=torch.device("cpu")
    ).scores
    print(
        "same-vendor Dice:",
        {s.name: round(d, 3) for s, d in scores.dice.items()},
        f"train {sum(e.seconds for e in history.epochs):.0f}s",
    )
    assert scores.count[Structure.LV] == 48
    assert scores.dice[Structure.LV] >= 0.85
    assert scores.dice[Structure.MYO] >= 0.6
    assert scores.dice[Structure.LA] >= 0.6
