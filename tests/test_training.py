"""The shared train/evaluate loop: it learns, it is deterministic, it honours labelled sets."""

import pytest
import torch

from common.labels import Structure, partially_labelled
from common.recipe import LabelDropoutSettings, Recipe
from common.training.label_dropout import LabelDropout
from common.training.loop import (
    ProximalTerm,
    SegmentationTensors,
    evaluate,
    label_dropout_for,
    train,
    train_one_epoch,
)
from common.training.losses import SegmentationLoss
from common.training.model import ModelConfig, build_unet
from tests.helpers import blob_site

SMALL = ModelConfig(channels=(8, 16, 32), num_res_units=1)
CPU = torch.device("cpu")


def recipe(**sections: dict) -> Recipe:
    return Recipe.model_validate({"model": SMALL.model_dump(), **sections})


def pooled(sites: list, config: Recipe, seed: int) -> tuple[torch.nn.Module, object]:
    """A pooled run as the baselines do it: seeded U-Net, then the one train entry point."""
    torch.manual_seed(seed)
    model = build_unet(config.model)
    partial = partially_labelled(s.labelled_set for s in sites)
    history = train(
        model, SegmentationTensors.from_sites(sites), config, seed=seed, device=CPU, partial=partial
    )
    return model, history


def test_training_learns_blobs() -> None:
    torch.set_num_threads(2)
    site = blob_site(96, seed=1)
    test = SegmentationTensors.from_sites([blob_site(24, seed=2)])
    config = recipe(
        optimiser={"lr": 3e-3}, train={"epochs": 12, "batch_size": 8, "augment": {"enabled": False}}
    )
    model, history = pooled([site], config, seed=0)
    assert history.epochs[-1].loss < history.epochs[0].loss
    scores = evaluate(model, test, device=CPU).scores
    assert scores.dice[Structure.LV] > 0.85
    assert scores.dice[Structure.LA] > 0.7


def test_same_seed_gives_identical_weights() -> None:
    site = blob_site(16, seed=3)
    config = recipe(train={"batch_size": 4}, label_dropout={"p": 0.5, "structures": ["MYO"]})
    runs = [pooled([site], config, seed=7)[0].state_dict() for _ in range(2)]
    other = pooled([site], config, seed=8)[0].state_dict()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], other[k]) for k in runs[0])


def test_dropout_structures_come_from_the_sites_labelled_sets() -> None:
    full = blob_site(4, labelled=frozenset(Structure), name="A")
    lv_only = blob_site(4, labelled=frozenset({Structure.LV}), name="B")
    partial = partially_labelled([full.labelled_set, lv_only.labelled_set])
    dropout = label_dropout_for(LabelDropoutSettings(p=0.5), partial)
    assert dropout is not None
    assert set(dropout.probabilities) == {Structure.MYO, Structure.LA}
    assert label_dropout_for(LabelDropoutSettings(p=0.0), partial) is None
    named = label_dropout_for(LabelDropoutSettings(p=0.5, structures=("MYO",)), partial)
    assert named is not None and set(named.probabilities) == {Structure.MYO}


def test_evaluate_scores_only_labelled_structures_without_full_truth() -> None:
    site = blob_site(6, labelled=frozenset({Structure.MYO}))
    site.full_masks = None
    data = SegmentationTensors.from_sites([site])
    model = build_unet(SMALL)
    res = evaluate(model, data, device=CPU)
    assert res.scores.count == {Structure.LV: 0, Structure.MYO: 6, Structure.LA: 0}
    with pytest.raises(ValueError, match="no full ground truth"):
        evaluate(model, data, device=CPU, score_on="full")


def test_proximal_term_pulls_towards_the_global_weights() -> None:
    torch.manual_seed(0)
    model = build_unet(SMALL)
    prox = ProximalTerm(model, mu=0.1)
    assert float(prox(model).detach()) == 0.0
    with torch.no_grad():
        first = next(model.parameters())
        first.add_(1.0)
    assert float(prox(model).detach()) == pytest.approx(0.5 * 0.1 * first.numel(), rel=1e-5)


def test_epoch_reports_data_time_and_sample_count() -> None:
    site = blob_site(10)
    model = build_unet(SMALL)
    config = recipe(train={"batch_size": 4})
    stats = train_one_epoch(
        model,
        SegmentationTensors.from_sites([site]),
        config.optimiser.build(model.parameters()),
        SegmentationLoss(config.loss.name, dice_weight=config.loss.dice_weight),
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
        device=CPU,
        dropout=LabelDropout.for_partial([Structure.LA], 0.5),
        augmentation=config.train.augment,
    )
    assert stats.samples == 10
    assert 0 < stats.data_seconds < stats.seconds


def test_epoch_loss_is_the_sample_weighted_mean_of_the_batches_losses() -> None:
    """The loss is summed on the device and read once per epoch: it must equal the mean over
    samples of each batch's loss, computed batch by batch in the same order (lr 0: the model
    does not move; 10 samples in batches of 4 -> 4, 4, 2)."""
    site = blob_site(10)
    data = SegmentationTensors.from_sites([site])
    torch.manual_seed(0)
    model = build_unet(SMALL)
    model.eval()  # batch norm uses its running statistics: a batch's loss does not move them
    loss_fn = SegmentationLoss("adaptive", dice_weight=1.0)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    expected = 0.0
    with torch.no_grad():
        for start in range(0, 10, 4):
            idx = order[start : start + 4]
            loss = loss_fn(model(data.images[idx]), data.masks[idx].long(), data.labelled[idx])
            expected += float(loss) * len(idx)
    model.train = lambda mode=True: model  # keep eval mode inside train_one_epoch
    stats = train_one_epoch(
        model,
        data,
        torch.optim.SGD(model.parameters(), lr=0.0),
        loss_fn,
        batch_size=4,
        generator=torch.Generator().manual_seed(3),
        device=CPU,
    )
    assert stats.steps == 3
    assert stats.loss == pytest.approx(expected / 10, rel=1e-6)
