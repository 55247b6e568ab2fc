"""Conditional distillation (ConDistFL-style): exact value, masking, gradients, the ramp."""

import math

import pytest
import torch

from common.training.distillation import ConditionalDistillation, ramped_weight


def softmax(values: list[float]) -> list[float]:
    e = [math.exp(v) for v in values]
    return [x / sum(e) for x in e]


def kl(q: list[float], p: list[float]) -> float:
    return sum(qi * (math.log(qi) - math.log(pi)) for qi, pi in zip(q, p, strict=True))


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two samples of 1 x 3 pixels. Sample 0 annotates LV only (merged: bg, MYO, LA); sample 1
    annotates everything. Pixel 0: background truth, teacher says LA (merged): counted. Pixel 1:
    truth LV: masked out. Pixel 2: background truth but the teacher says LV (annotated here):
    masked out."""
    student = torch.zeros(2, 4, 1, 3)
    teacher = torch.zeros(2, 4, 1, 3)
    student[0, :, 0, 0] = torch.tensor([0.0, 1.0, 0.5, -0.5])
    teacher[0, :, 0, 0] = torch.tensor([0.2, 0.0, 0.0, 1.0])
    teacher[0, :, 0, 2] = torch.tensor([0.0, 3.0, 0.0, 0.0])
    student[1] = torch.randn(4, 1, 3)
    teacher[1] = torch.randn(4, 1, 3)
    target = torch.tensor([[[0, 1, 0]], [[0, 0, 0]]])
    labelled = torch.tensor([[True, True, False, False], [True, True, True, True]])
    return student, teacher, target, labelled


def test_value_matches_a_hand_computation() -> None:
    student, teacher, target, labelled = batch()
    t = 2.0
    # pixel 0 of sample 0 over the merged classes (bg, MYO, LA), softened by T
    q = softmax([0.2 / t, 0.0 / t, 1.0 / t])
    p = softmax([0.0 / t, 0.5 / t, -0.5 / t])
    expected = t * t * kl(q, p)
    got = ConditionalDistillation(temperature=t)(student, teacher, target, labelled)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_annotated_pixels_and_fully_labelled_samples_do_not_count() -> None:
    student, teacher, target, labelled = batch()
    loss = ConditionalDistillation(2.0)
    base = float(loss(student, teacher, target, labelled))
    changed = student.clone()
    changed[0, :, 0, 1] += torch.tensor([5.0, -3.0, 2.0, 1.0])  # the LV pixel
    changed[0, :, 0, 2] += torch.tensor([1.0, 2.0, 3.0, -4.0])  # teacher says LV
    changed[1] += 7.0 * torch.randn(4, 1, 3)  # the fully labelled sample
    assert float(loss(changed, teacher, target, labelled)) == pytest.approx(base, rel=1e-6)
    # no counted pixel at all: zero, and a gradient of zeros
    student.requires_grad_(True)
    none = loss(student, teacher, target, torch.ones_like(labelled))
    none.backward()
    assert float(none) == 0.0 and float(student.grad.abs().sum()) == 0.0


def test_gradient_reaches_only_the_merged_classes_and_is_finite() -> None:
    student, teacher, target, labelled = batch()
    student.requires_grad_(True)
    ConditionalDistillation(2.0)(student, teacher, target, labelled).backward()
    grad = student.grad
    assert torch.isfinite(grad).all()
    assert float(grad[0, 1, 0, 0]) == 0.0  # LV is annotated at this sample: not distilled
    assert float(grad[0, [0, 2, 3], 0, 0].abs().sum()) > 0
    assert float(grad[0, :, 0, 1:].abs().sum()) == 0.0  # masked pixels
    # identical distributions: zero loss
    same = ConditionalDistillation(2.0)(teacher, teacher, target, labelled)
    assert float(same) == pytest.approx(0.0, abs=1e-7)


def test_weight_ramp_and_bad_arguments() -> None:
    assert ramped_weight(1.0, 0, 1) == 1.0
    assert ramped_weight(2.0, 4, 1) == 0.5
    assert ramped_weight(2.0, 4, 9) == 2.0
    with pytest.raises(ValueError, match="temperature must be > 0"):
        ConditionalDistillation(0.0)
    student, teacher, target, labelled = batch()
    with pytest.raises(ValueError, match="teacher logits"):
        ConditionalDistillation()(student, teacher[:, :3], target, labelled)
