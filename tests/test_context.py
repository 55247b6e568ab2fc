"""The partner frame as a second input channel (common.data.context, model.context = "partner"):
which frame is a frame's partner, and that training, prediction, export and the server's class
slices all give the network the two channels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.data.context import box_smoothed, input_channels, model_input, partner_indices
from common.data.site_data import SiteData
from common.model_card import ModelCard, card_meta
from common.predict import segment_scored
from common.recipe import Recipe
from common.security.checkpoint import save_checkpoint
from common.training.class_slices import SHARED, class_owners
from common.training.loop import SegmentationTensors
from common.training.model import build_unet

PARTNER = Recipe.model_validate({"model": {"context": "partner"}, "preprocess": {"size": [32, 32]}})


def flat(values: list[float], side: int = 8) -> np.ndarray:
    return np.stack([np.full((side, side), v, np.float32) for v in values])


def test_the_partner_is_the_most_different_frame_of_the_same_recording() -> None:
    images = flat([0.0, 1.0, 3.0, 5.0, 2.0])
    groups = ["a", "a", "a", "b", "a"]
    # a: 0 -> 3 (distance 9), 1 -> 3 (4 against 1 and 1), 3 -> 0 (9), 2 -> 0 (4 against 1 and 1)
    assert partner_indices(images, groups).tolist() == [2, 2, 0, 3, 0]  # b is alone: itself


def test_a_tie_takes_the_first_frame_and_two_frames_swap() -> None:
    # 1 is as far from 0 as from 2: the first, 0 (index 1); 0 -> 2 (4 against 1); 2 -> 0
    assert partner_indices(flat([1.0, 0.0, 2.0]), [0, 0, 0]).tolist() == [1, 2, 1]
    assert partner_indices(flat([4.0, 7.0]), ["r", "r"]).tolist() == [1, 0]


def test_fine_speckle_does_not_decide_the_partner() -> None:
    """Compared after averaging 4 x 4 blocks: a pixel-level checkerboard of +-1 (mean 0 in every
    block) is closer to a blank frame than a uniform 0.5 is, although pixel by pixel it is
    farther (1 against 0.25)."""
    checker = (np.indices((8, 8)).sum(0) % 2 * 2 - 1).astype(np.float32)
    images = np.stack([np.zeros((8, 8), np.float32), checker, np.full((8, 8), 0.5, np.float32)])
    assert partner_indices(images, [0, 0, 0])[0] == 2


def test_model_input_stacks_each_frame_with_its_partner() -> None:
    images = flat([0.0, 1.0, 3.0])
    assert model_input(images, "none").shape == (3, 1, 8, 8)
    pair = model_input(images, "partner")
    assert pair.shape == (3, 2, 8, 8) and pair.dtype == np.float32
    assert pair[:, 0, 0, 0].tolist() == [0.0, 1.0, 3.0]
    assert pair[:, 1, 0, 0].tolist() == [3.0, 3.0, 0.0]
    assert model_input(images[:1], "partner")[0, 1, 0, 0] == 0.0  # one frame: itself
    assert input_channels("none") == 1 and input_channels("partner") == 2


def test_a_smoothed_partner_is_its_box_average() -> None:
    """5 x 5 boxes, at the borders over the part inside the image: a single bright pixel of 25
    gives 1 at its own place and 25 / 9 in the corner whose box holds 3 x 3 image pixels."""
    spot = np.zeros((6, 6), np.float32)
    spot[2, 2] = 25.0
    smooth = box_smoothed(spot[None])[0]
    assert smooth[2, 2] == pytest.approx(1.0) and smooth[0, 0] == pytest.approx(25 / 9)
    assert smooth[4, 4] == pytest.approx(25 / 16) and smooth[5, 5] == 0.0
    pair = model_input(np.stack([np.ones((6, 6), np.float32), spot]), "smoothed-partner")
    assert (pair[:, 0] == np.stack([np.ones((6, 6)), spot])).all()  # the frame itself as it is
    assert np.allclose(pair[0, 1], smooth) and np.allclose(pair[1, 1], 1.0)
    assert input_channels("smoothed-partner") == 2


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        partner_indices(np.zeros((2, 8)), [0, 0])
    with pytest.raises(ValueError, match="1 group keys for 2 images"):
        partner_indices(flat([0.0, 1.0]), [0])
    with pytest.raises(ValueError, match="unknown context"):
        model_input(flat([0.0]), "neighbours")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="context"):
        Recipe.model_validate({"model": {"context": "neighbours"}})


def site(name: str, values: list[float], cases: list[str]) -> SiteData:
    n = len(values)
    return SiteData(
        site=name,
        images=flat(values),
        masks=np.zeros((n, 8, 8), np.uint8),
        labelled=np.ones((n, 4), bool),
        full_masks=None,
        records=[{"case_id": c, "view": "4CH"} for c in cases],
    )


def test_training_tensors_take_partners_within_a_site_and_case() -> None:
    """Two sites with the same case id: a frame's partner never comes from the other site."""
    a = site("A", [0.0, 1.0, 9.0], ["c1", "c1", "c2"])
    b = site("B", [5.0, 6.0], ["c1", "c1"])
    tensors = SegmentationTensors.from_sites([a, b], "partner")
    assert tuple(tensors.images.shape) == (5, 2, 8, 8)
    assert tensors.images[:, 1, 0, 0].tolist() == [1.0, 0.0, 9.0, 6.0, 5.0]
    assert tuple(SegmentationTensors.from_sites([a, b]).images.shape) == (5, 1, 8, 8)


def test_the_network_takes_two_channels_and_its_class_slices_are_found() -> None:
    model = build_unet(PARTNER.model)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 2
    assert model(torch.zeros(1, 2, 32, 32)).shape == (1, 4, 32, 32)
    owners = class_owners(model)  # probed with the two channels its first convolution takes
    owned = {k for k, v in owners.items() if (v != SHARED).any()}
    assert owned and all(k.startswith("model.2") for k in owned)  # the last block's filters


def test_prediction_feeds_each_frame_with_its_partner() -> None:
    torch.manual_seed(0)
    model = build_unet(PARTNER.model).eval()
    meta = card_meta(PARTNER)
    card = ModelCard.model_validate({k: meta[k] for k in ("model", "preprocess", "labels")})
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (2, 32, 32)).astype(np.uint8)
    labels, _ = segment_scored(model, card, frames)
    x = [(f - f.mean()) / f.std() for f in frames.astype(np.float32)]
    pairs = torch.from_numpy(np.stack([[x[0], x[1]], [x[1], x[0]]]).astype(np.float32))
    with torch.no_grad():
        want = model(pairs).argmax(1).numpy()
    assert (labels == want).all()
    one, _ = segment_scored(model, card, frames[:1])  # a single frame: its own partner
    with torch.no_grad():
        alone = model(pairs[:1, [0, 0]]).argmax(1).numpy()
    assert (one == alone).all()


def test_the_export_takes_two_channels_and_says_what_they_hold(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from common.export import main

    torch.manual_seed(1)
    model = build_unet(PARTNER.model).eval()
    path = tmp_path / "final.pt"
    save_checkpoint(path, model.state_dict(), {"run": "r", "round": 1, **card_meta(PARTNER)})
    out = tmp_path / "exported"
    assert main(["--checkpoint", str(path), "--allow-unsigned", "--out", str(out)]) == 0
    card = json.loads((out / "model-card.json").read_text())
    assert card["input"]["shape"] == ["N", 2, 32, 32]
    assert "partner" in card["input"]["channels"][1] and card["model"]["context"] == "partner"
    assert all(v < 1e-4 for v in card["max_abs_difference_to_pytorch"].values())
