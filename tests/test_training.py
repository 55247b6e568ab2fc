"""The shared train/evaluate loop: it learns, it is deterministic, it honours labelled sets."""

import pytest
import torch

from common.augment import Augmentation
from common.label_dropout import LabelDropout
from common.labels import Structure
from common.model import ModelConfig, build_unet
from common.pooled import LabelDropoutConfig, dropout_for, train_pooled
from common.training import (
    ProximalTerm,
    SegmentationTensors,
    TrainConfig,
    evaluate,
    make_loss,
    make_optimiser,
    train_one_epoch,
)
from tests.helpers import blob_site

SMALL = ModelConfig(channels=(8, 16, 32), num_res_units=1)
CPU = torch.device("cpu")


def test_training_learns_blobs() -> None:
    torch.set_num_threads(2)
    train = blob_site(96, seed=1)
    test = SegmentationTensors.from_sites([blob_site(24, seed=2)])
    config = TrainConfig(epochs=12, batch_size=8, lr=3e-3, augment=Augmentation(enabled=False))
    model, history = train_pooled(
        [train],
        train=config,
        model_config=SMALL,
        label_dropout=LabelDropoutConfig(),
        seed=0,
        device=CPU,
    )
    assert history.epochs[-1].loss < history.epochs[0].loss
    scores = evaluate(model, test, device=CPU).scores
    assert scores.dice[Structure.LV] > 0.85
    assert scores.dice[Structure.LA] > 0.7


def test_same_seed_gives_identical_weights() -> None:
    site = blob_site(16, seed=3)
    config = TrainConfig(epochs=1, batch_size=4)
    drop = LabelDropoutConfig(p=0.5, structures=["MYO"])
    runs = [
        train_pooled(
            [site], train=config, model_config=SMALL, label_dropout=drop, seed=7, device=CPU
        )[0].state_dict()
        for _ in range(2)
    ]
    other = train_pooled(
        [site], train=config, model_config=SMALL, label_dropout=drop, seed=8, device=CPU
    )[0].state_dict()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], other[k]) for k in runs[0])


def test_dropout_structures_come_from_the_sites_labelled_sets() -> None:
    full = blob_site(4, labelled=frozenset(Structure), name="A")
    lv_only = blob_site(4, labelled=frozenset({Structure.LV}), name="B")
    dropout = dropout_for([full, lv_only], LabelDropoutConfig(p=0.5))
    assert dropout is not None
    assert set(dropout.probabilities) == {Structure.MYO, Structure.LA}
    assert dropout_for([full, lv_only], LabelDropoutConfig(p=0.0)) is None


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
    config = TrainConfig(batch_size=4)
    stats = train_one_epoch(
        model,
        SegmentationTensors.from_sites([site]),
        make_optimiser(model, config),
        make_loss(config),
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
        device=CPU,
        dropout=LabelDropout.for_partial([Structure.LA], 0.5),
        augmentation=config.augment,
    )
    assert stats.samples == 10
    assert 0 < stats.data_seconds < stats.seconds
