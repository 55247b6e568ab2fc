"""What a checkpoint needs beside its weights to be applied correctly: the model card.

A global-model checkpoint's sidecar (``common.security.checkpoint``, signed with the weights)
carries, from sidecar format 2 on: the U-Net settings, the preprocessing (training size and
intensity normalisation) and the label map (mask value -> structure). A model applied with
another normalisation or read with another label map segments wrongly without any error, so a
checkpoint whose sidecar lacks them is refused by :func:`card_from_sidecar` with a message that
says so, instead of guessing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from common.data.preprocess import PreprocessConfig
from common.errors import DataError
from common.labels import BACKGROUND, Structure
from common.recipe import Recipe
from common.training.model import ModelConfig

CARD_FORMAT = 2  # sidecar format: 1 had model + image_size only
LABEL_MAP: dict[str, str] = {
    str(BACKGROUND): "background",
    **{str(int(s)): s.name for s in Structure},
}


class ModelCard(BaseModel):
    """How to apply a checkpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelConfig
    preprocess: PreprocessConfig
    labels: dict[str, str]


def card_meta(recipe: Recipe) -> dict[str, Any]:
    """The sidecar fields of the model card for weights trained with ``recipe``."""
    return {
        "format": CARD_FORMAT,
        "model": recipe.model.model_dump(mode="json"),
        "preprocess": recipe.preprocess.model_dump(mode="json"),
        "labels": dict(LABEL_MAP),
        "image_size": recipe.preprocess.size[0],  # read by format-1 tools
    }


def card_from_sidecar(path: Path, sidecar: dict[str, Any]) -> ModelCard:
    """The model card of a checkpoint; :class:`DataError` naming ``path`` when the sidecar is
    from before format 2, or its card is malformed, or its label map is not this echofl's."""
    missing = [k for k in ("preprocess", "labels", "model") if k not in sidecar]
    if missing or sidecar.get("format", 1) < CARD_FORMAT:
        raise DataError(
            path,
            f"checkpoint sidecar format {sidecar.get('format', 1)} lacks "
            f"{', '.join(missing) or 'the model card'}: it was written by an earlier echofl, "
            "which did not record how images were normalised or what each mask value means, so "
            "it cannot be applied safely; use a checkpoint written by this version",
        )
    try:
        card = ModelCard.model_validate({k: sidecar[k] for k in ("model", "preprocess", "labels")})
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise DataError(
            path, f"invalid model card in the sidecar: {where}: {problem['msg']}"
        ) from None
    if card.labels != LABEL_MAP:
        raise DataError(
            path,
            f"the checkpoint's label map {card.labels} is not echofl's {LABEL_MAP}: its mask "
            "values would be read as the wrong structures",
        )
    return card
