"""echofl-export: ONNX (run with onnxruntime) and TorchScript agree with the PyTorch model; the
card says how to apply them (common.export)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.export import main
from common.model_card import card_meta
from common.recipe import Recipe
from common.security.checkpoint import save_checkpoint
from common.training.model import build_unet


@pytest.fixture()
def checkpoint(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    recipe = Recipe.model_validate({"preprocess": {"size": [48, 64]}})
    torch.manual_seed(3)
    model = build_unet(recipe.model).eval()
    path = tmp_path / "final.pt"
    save_checkpoint(path, model.state_dict(), {"run": "r1", "round": 7, **card_meta(recipe)})
    return path, model


def test_the_exports_compute_what_the_checkpoint_computes(
    checkpoint: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    import onnxruntime

    path, model = checkpoint
    out = tmp_path / "exported"
    assert main(["--checkpoint", str(path), "--allow-unsigned", "--out", str(out)]) == 0
    card = json.loads((out / "model-card.json").read_text())
    assert card["input"]["shape"] == ["N", 1, 48, 64] and card["input"]["normalisation"] == "zscore"
    assert card["labels"]["2"] == "MYO" and card["source"]["round"] == 7
    assert card["source"]["signature_verified"] is False
    images = torch.randn(3, 1, 48, 64, generator=torch.Generator().manual_seed(9))  # batch of 3
    with torch.no_grad():
        want = model(images).numpy()
    session = onnxruntime.InferenceSession(
        str(out / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    assert np.abs(session.run(None, {"image": images.numpy()})[0] - want).max() < 1e-4
    scripted = torch.jit.load(str(out / "model.torchscript.pt"))
    assert (scripted(images) - torch.from_numpy(want)).abs().max().item() < 1e-4
    assert all(v < 1e-4 for v in card["max_abs_difference_to_pytorch"].values())


def test_an_unverifiable_checkpoint_or_an_existing_folder_is_refused(
    checkpoint: tuple[Path, torch.nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = checkpoint
    assert main(["--checkpoint", str(path), "--out", str(tmp_path / "x")]) == 2
    assert "give --verify-key" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    assert (
        main(["--checkpoint", str(path), "--allow-unsigned", "--out", str(tmp_path / "exists")])
        == 2
    )
    assert "the output folder exists" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
