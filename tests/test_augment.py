"""The batch augmentation's ultrasound-like perturbations: off by default without drawing a
single random number (so recipes without them train exactly as before), each one doing what
it says when on, label maps untouched by the intensity ones."""

from __future__ import annotations

import pytest
import torch

from common.recipe import Recipe
from common.training.augment import Augmentation, _gaussian_blur
from simulations.experiment import recipe_dump

B, H, W = 4, 24, 20


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(B, 1, H, W, generator=g) * 3 - 1
    masks = torch.randint(0, 4, (B, H, W), generator=g)
    return images, masks


def test_off_by_default_and_drawing_nothing_extra() -> None:
    aug = Augmentation()
    assert not aug.ultrasound
    images, masks = batch()
    g = torch.Generator().manual_seed(7)
    aug(images, masks, g)
    reference = torch.Generator().manual_seed(7)
    for _ in range(6):  # rotation, zoom, two shifts, gain, offset: one draw per image each
        torch.rand(B, generator=reference)
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=reference))
    # and a run's key does not see the new settings at their neutral value
    assert "gamma" not in recipe_dump(Recipe())["train"]["augment"]
    on = Recipe.model_validate({"train": {"augment": {"noise": 0.1}}})
    assert recipe_dump(on)["train"]["augment"]["noise"] == 0.1


@pytest.mark.parametrize("field", ["gamma", "speckle", "blur", "noise"])
def test_each_perturbation_changes_the_images_only(field: str) -> None:
    images, masks = batch()
    plain = Augmentation(rotate_deg=0, scale=0, shift=0, contrast=0, brightness=0)
    perturbed = plain.model_copy(update={field: 0.8})
    same_images, same_masks = plain(images, masks, torch.Generator().manual_seed(3))
    out_images, out_masks = perturbed(images, masks, torch.Generator().manual_seed(3))
    assert torch.allclose(same_images, images, atol=1e-5)  # the identity affine
    assert torch.equal(out_masks, same_masks)
    assert not torch.allclose(out_images, images, atol=1e-3)
    assert torch.isfinite(out_images).all()


def test_gamma_keeps_each_images_range() -> None:
    images, _ = batch()
    out = Augmentation(gamma=1.0).perturb(images, torch.Generator().manual_seed(0))
    assert torch.allclose(out.amin(dim=(1, 2, 3)), images.amin(dim=(1, 2, 3)), atol=1e-5)
    assert torch.allclose(out.amax(dim=(1, 2, 3)), images.amax(dim=(1, 2, 3)), atol=1e-5)


def test_blur_is_a_normalised_gaussian() -> None:
    flat = torch.full((2, 1, 9, 9), 2.5)
    assert torch.allclose(_gaussian_blur(flat, torch.tensor([0.0, 2.0])), flat)
    spike = torch.zeros(2, 1, 15, 15)
    spike[:, 0, 7, 7] = 1.0
    out = _gaussian_blur(spike, torch.tensor([0.0, 1.0]))
    assert torch.allclose(out[0], spike[0], atol=1e-6)  # sigma 0: unchanged
    assert out[1].sum() == pytest.approx(1.0, abs=1e-5)  # mass kept
    # a 1-pixel Gaussian: the centre's weight is (1 / sum of exp(-x^2/2) over x = -3..3)^2
    weights = torch.exp(-0.5 * torch.arange(-3.0, 4.0) ** 2)
    assert out[1, 0, 7, 7] == pytest.approx(float((1 / weights.sum()) ** 2), rel=1e-5)
