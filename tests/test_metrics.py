"""Per-structure Dice on hand-made label maps."""

import math

import pytest
import torch

from common.labels import Structure
from common.training.metrics import DiceAccumulator, dice_per_image


def test_dice_per_image_exact() -> None:
    ref = torch.tensor([[[1, 1, 2, 0], [1, 3, 3, 0]]])
    pred = torch.tensor([[[1, 0, 2, 2], [1, 3, 0, 0]]])
    dice = dice_per_image(pred, ref)[0]
    assert dice[0].item() == pytest.approx(2 * 2 / (2 + 3))  # LV
    assert dice[1].item() == pytest.approx(2 * 1 / (2 + 1))  # MYO
    assert dice[2].item() == pytest.approx(2 * 1 / (1 + 2))  # LA


def test_empty_structure_in_both_scores_one_and_false_positive_scores_zero() -> None:
    ref = torch.zeros(2, 3, 3, dtype=torch.long)
    pred = torch.zeros(2, 3, 3, dtype=torch.long)
    pred[1, 0, 0] = 3
    dice = dice_per_image(pred, ref)
    assert dice[0].tolist() == [1.0, 1.0, 1.0]
    assert dice[1].tolist() == [1.0, 1.0, 0.0]


def test_accumulator_scores_only_what_is_scored() -> None:
    ref = torch.tensor([[[1, 2], [3, 0]], [[1, 1], [0, 0]]])
    pred = torch.tensor([[[1, 2], [0, 0]], [[1, 0], [0, 0]]])
    scored = torch.tensor([[True, True, True], [True, False, False]])
    acc = DiceAccumulator()
    acc.add(pred, ref, scored)
    res = acc.result()
    assert res.dice[Structure.LV] == pytest.approx((1.0 + 2 / 3) / 2)
    assert res.count[Structure.MYO] == 1 and res.dice[Structure.MYO] == pytest.approx(1.0)
    assert res.dice[Structure.LA] == pytest.approx(0.0)
    assert res.area_ratio[Structure.LV] == pytest.approx(2 / 3)  # predicted 2 px of 3 true
    assert res.area_ratio[Structure.LA] == pytest.approx(0.0)
    assert math.isnan(acc.per_image[0][1, 1])
    metrics = res.as_metrics()
    assert metrics["dice-LV"] == pytest.approx(5 / 6) and metrics["n-LA"] == 1.0
