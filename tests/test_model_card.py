"""A checkpoint carries how to apply it (common.model_card)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import DataError
from common.model_card import CARD_FORMAT, LABEL_MAP, card_from_sidecar, card_meta
from common.recipe import Recipe
from common.security.checkpoint import load_checkpoint, save_checkpoint
from common.training.model import build_unet


def test_the_card_travels_with_the_weights_and_rebuilds_the_model(tmp_path: Path) -> None:
    recipe = Recipe.model_validate(
        {"preprocess": {"size": [64, 64], "normalisation": "unit"}, "model": {"norm": "instance"}}
    )
    model = build_unet(recipe.model)
    path = tmp_path / "final.pt"
    save_checkpoint(path, model.state_dict(), {"run": "r", "role": "final", **card_meta(recipe)})
    state, sidecar = load_checkpoint(path)
    card = card_from_sidecar(path, sidecar)
    assert card.preprocess.size == (64, 64) and card.preprocess.normalisation == "unit"
    assert card.model.norm == "instance"
    assert card.labels == {"0": "background", "1": "LV", "2": "MYO", "3": "LA"} == LABEL_MAP
    build_unet(card.model).load_state_dict(state)
    assert sidecar["format"] == CARD_FORMAT and sidecar["image_size"] == 64


def test_an_old_or_foreign_card_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "final.pt"
    old = {"run": "r", "model": Recipe().model.model_dump(mode="json"), "image_size": 96}
    with pytest.raises(DataError, match=r"final\.pt: checkpoint sidecar format 1 lacks preprocess"):
        card_from_sidecar(path, old)
    swapped = {**card_meta(Recipe()), "labels": {**LABEL_MAP, "1": "LA", "3": "LV"}}
    with pytest.raises(DataError, match="would be read as the wrong structures"):
        card_from_sidecar(path, swapped)
    bad = {**card_meta(Recipe()), "preprocess": {"size": [8, 8]}}
    with pytest.raises(DataError, match="invalid model card in the sidecar: preprocess"):
        card_from_sidecar(path, bad)
