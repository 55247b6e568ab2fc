"""Adaptive cross-entropy and marginal Dice: exact values on small hand-made tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from common.training.losses import AdaptiveCrossEntropy, MarginalDiceLoss, SegmentationLoss


def labelled_rows(*sets: set[int]) -> torch.Tensor:
    out = torch.zeros(len(sets), 4, dtype=torch.bool)
    out[:, 0] = True
    for i, s in enumerate(sets):
        for c in s:
            out[i, c] = True
    return out


def test_equals_cross_entropy_when_everything_is_labelled() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 9, 7, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 4, (3, 9, 7), generator=gen)
    labelled = labelled_rows({1, 2, 3}, {1, 2, 3}, {1, 2, 3})
    ours = AdaptiveCrossEntropy()(logits, target, labelled)
    reference = F.cross_entropy(logits.float(), target)
    assert abs(float(ours) - float(reference)) < 1e-6


def test_hand_computed_value_with_one_structure_labelled() -> None:
    # One image, two pixels, labelled set {LV}. Pixel 0 reads background, pixel 1 is LV.
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]).view(1, 4, 1, 2)
    target = torch.tensor([[[0, 1]]])
    e = math.e
    # background marginalises MYO and LA (unlabelled): p_bg + p_MYO + p_LA
    loss_pixel0 = -math.log((1 + e**2 + e**3) / (1 + e + e**2 + e**3))
    loss_pixel1 = -math.log(1 / (e + 3))
    expected = (loss_pixel0 + loss_pixel1) / 2
    got = AdaptiveCrossEntropy()(logits, target, labelled_rows({1}))
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_per_sample_labelled_sets_in_one_batch() -> None:
    # Same logits for two images; image 0 labels only MYO, image 1 labels all. Target all bg.
    pixel = torch.tensor([0.5, -1.0, 2.0, 0.0])
    logits = pixel.view(1, 4, 1, 1).repeat(2, 1, 1, 1)
    target = torch.zeros(2, 1, 1, dtype=torch.long)
    p = torch.softmax(pixel.double(), 0)
    loss_img0 = -math.log(float(p[0] + p[1] + p[3]))  # LV and LA merged into background
    loss_img1 = -math.log(float(p[0]))
    got = AdaptiveCrossEntropy()(logits, target, labelled_rows({2}, {1, 2, 3}))
    assert float(got) == pytest.approx((loss_img0 + loss_img1) / 2, abs=1e-6)


def test_gradients_are_finite_even_for_extreme_logits() -> None:
    logits = torch.tensor([[[[-80.0]], [[90.0]], [[-70.0]], [[60.0]]]], requires_grad=True)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    loss = AdaptiveCrossEntropy()(logits, target, labelled_rows({1}))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    # Background merges MYO and LA, so the gradient pushes LV down and leaves LA's share up.
    assert logits.grad[0, 1, 0, 0] > 0


def test_refuses_a_target_outside_the_labelled_set() -> None:
    logits = torch.zeros(1, 4, 1, 1)
    with pytest.raises(ValueError, match="outside its sample's labelled set"):
        AdaptiveCrossEntropy()(logits, torch.full((1, 1, 1), 3), labelled_rows({1}))


def test_shape_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="4 channels"):
        AdaptiveCrossEntropy()(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2), labelled_rows({1}))
    with pytest.raises(ValueError, match="target must be"):
        AdaptiveCrossEntropy()(torch.zeros(1, 4, 2, 2), torch.zeros(1, 3, 2), labelled_rows({1}))


def test_marginal_dice_hand_computed() -> None:
    # Two pixels; probabilities made explicit through huge logits (softmax ~ one-hot).
    big = 50.0
    logits = torch.full((1, 4, 1, 2), -big)
    logits[0, 1, 0, 0] = big  # pixel 0 predicted LV
    logits[0, 2, 0, 1] = big  # pixel 1 predicted MYO
    target = torch.tensor([[[1, 1]]])  # both LV
    # Labelled {LV}: Dice_LV = 2*1/(1+2) = 2/3; MYO is unlabelled and not scored.
    got = MarginalDiceLoss(smooth=1e-9)(logits, target, labelled_rows({1}))
    assert float(got) == pytest.approx(1 - 2 / 3, abs=1e-6)
    # Labelled {LV, MYO}: Dice_MYO = 0 / (1 + 0) = 0 -> mean (2/3 + 0)/2.
    got2 = MarginalDiceLoss(smooth=1e-9)(logits, target, labelled_rows({1, 2}))
    assert float(got2) == pytest.approx(1 - 1 / 3, abs=1e-6)


def test_naive_loss_treats_missing_structures_as_background() -> None:
    pixel = torch.tensor([0.0, 0.0, 3.0, 0.0])
    logits = pixel.view(1, 4, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    naive = SegmentationLoss("naive")(logits, target, labelled_rows({1}))
    adaptive = SegmentationLoss("adaptive")(logits, target, labelled_rows({1}))
    p = torch.softmax(pixel.double(), 0)
    assert float(naive) == pytest.approx(-math.log(float(p[0])), abs=1e-6)
    assert float(adaptive) == pytest.approx(-math.log(float(p[0] + p[2] + p[3])), abs=1e-6)


def test_dice_term_is_added_with_its_weight() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 5, 5, generator=gen)
    target = torch.randint(0, 2, (2, 5, 5), generator=gen)
    labelled = labelled_rows({1}, {1, 2})
    ce = AdaptiveCrossEntropy()(logits, target, labelled)
    dice = MarginalDiceLoss()(logits, target, labelled)
    combined = SegmentationLoss("adaptive", dice_weight=0.5)(logits, target, labelled)
    assert float(combined) == pytest.approx(float(ce + 0.5 * dice), abs=1e-6)
