"""A site keeps the coordinator's final model only when it verifies (fl_client.models), and
``fl-client predict`` applies the kept model offline; every refusal names the problem and
writes nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives import serialization
from PIL import Image

from common.errors import DataError
from common.federation.protocol import FinalModel, ProtocolError
from common.model_card import card_meta
from common.recipe import Recipe
from common.security.checkpoint import load_checkpoint, save_checkpoint
from common.security.pki import make_signing_keys
from common.training.model import build_unet
from fl_client.cli import main as fl_client
from fl_client.models import LATEST, store_final_model, stored_model, stored_runs
from tests.helpers import minimal_site_config

RECIPE = Recipe.model_validate({"preprocess": {"size": [32, 32]}})


def keypair() -> tuple[object, object, bytes]:
    private, public = make_signing_keys()
    key = serialization.load_pem_private_key(private, password=None)
    return key, key.public_key(), public


@pytest.fixture()
def coordinator(tmp_path: Path) -> dict:
    """A coordinator's signed final.pt and round-0001.pt of run ``run-1``, as it writes them."""
    key, verify, public = keypair()
    torch.manual_seed(0)
    state = build_unet(RECIPE.model).state_dict()
    out = tmp_path / "coordinator"
    meta = {"run": "run-1", "round": 2, **card_meta(RECIPE)}
    save_checkpoint(out / "final.pt", state, {**meta, "role": "final"}, key)
    save_checkpoint(out / "round-0001.pt", state, {**meta, "role": "round", "round": 1}, key)
    (tmp_path / "model-signing.pub").write_bytes(public)
    return {"out": out, "key": key, "verify": verify, "state": state, "meta": meta}


def message(path: Path) -> FinalModel:
    """What the coordinator sends, read back as the site reads it (through the records)."""
    sent = FinalModel(path.read_bytes(), json.loads(Path(f"{path}.json").read_text()))
    records = sent.to_records()
    return FinalModel.from_records(records["model-file"], records["model-card"])


def test_a_verified_final_model_is_kept_byte_for_byte(coordinator: dict, tmp_path: Path) -> None:
    models = tmp_path / "models"
    final = coordinator["out"] / "final.pt"
    kept = store_final_model(message(final), coordinator["verify"], models)
    assert kept == models / "run-1" / "final.pt"
    assert kept.read_bytes() == final.read_bytes()
    state, sidecar = load_checkpoint(kept, coordinator["verify"])
    assert sidecar["round"] == 2 and sidecar["role"] == "final"
    assert all(torch.equal(state[k], v) for k, v in coordinator["state"].items())
    assert (models / LATEST).read_text() == "run-1\n"
    assert stored_model(models) == kept and stored_runs(models) == ["run-1"]
    assert sorted(p.name for p in models.iterdir()) == [LATEST, "run-1"]  # no staging left


def test_the_same_run_delivered_again_replaces_its_model(coordinator: dict, tmp_path: Path) -> None:
    models = tmp_path / "models"
    final = coordinator["out"] / "final.pt"
    store_final_model(message(final), coordinator["verify"], models)
    changed = {k: v + 1 if v.is_floating_point() else v for k, v in coordinator["state"].items()}
    save_checkpoint(final, changed, {**coordinator["meta"], "role": "final"}, coordinator["key"])
    kept = store_final_model(message(final), coordinator["verify"], models)
    assert kept.read_bytes() == final.read_bytes()
    assert sorted(p.name for p in models.iterdir()) == [LATEST, "run-1"]


def refused(model: FinalModel, verify: object, models: Path, expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        store_final_model(model, verify, models)
    assert not models.exists() or list(models.iterdir()) == []  # nothing written


def test_another_coordinators_model_is_refused(coordinator: dict, tmp_path: Path) -> None:
    _, stranger, _ = keypair()
    model = message(coordinator["out"] / "final.pt")
    refused(model, stranger, tmp_path / "models", "invalid checkpoint signature")


def test_altered_weights_are_refused(coordinator: dict, tmp_path: Path) -> None:
    model = message(coordinator["out"] / "final.pt")
    raw = bytearray(model.weights)
    raw[len(raw) // 2] ^= 0x01
    altered = FinalModel(bytes(raw), model.sidecar)
    refused(altered, coordinator["verify"], tmp_path / "models", "do not match the signed digest")


def test_an_unsigned_model_is_refused(coordinator: dict, tmp_path: Path) -> None:
    model = message(coordinator["out"] / "final.pt")
    unsigned = FinalModel(
        model.weights, {k: v for k, v in model.sidecar.items() if k != "signature"}
    )
    refused(unsigned, coordinator["verify"], tmp_path / "models", "unsigned checkpoint")


def test_a_replayed_round_checkpoint_is_not_a_final_model(
    coordinator: dict, tmp_path: Path
) -> None:
    model = message(coordinator["out"] / "round-0001.pt")
    refused(model, coordinator["verify"], tmp_path / "models", "signed as 'round-0001.pt'")


def test_a_signed_run_name_that_is_a_path_is_refused(coordinator: dict, tmp_path: Path) -> None:
    """Even the coordinator's own key cannot make a site write outside its models folder."""
    meta = {**coordinator["meta"], "run": "../../etc", "role": "final"}
    path = tmp_path / "evil" / "final.pt"
    save_checkpoint(path, coordinator["state"], meta, coordinator["key"])
    refused(message(path), coordinator["verify"], tmp_path / "models", "invalid run name")
    assert not (tmp_path / "etc").exists()


def test_a_model_card_this_version_cannot_apply_is_refused(
    coordinator: dict, tmp_path: Path
) -> None:
    meta = {k: v for k, v in coordinator["meta"].items() if k not in ("preprocess", "labels")}
    path = tmp_path / "old" / "final.pt"
    save_checkpoint(path, coordinator["state"], {**meta, "role": "final"}, coordinator["key"])
    with pytest.raises(DataError):
        store_final_model(message(path), coordinator["verify"], tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_hostile_records_are_refused_before_anything_is_read() -> None:
    with pytest.raises(ProtocolError, match="not uint8"):
        FinalModel.from_records({"bytes": np.zeros(4, np.float32)}, {"sidecar": "{}"})
    with pytest.raises(ProtocolError, match="expected one array"):
        FinalModel.from_records({"bytes": np.zeros(4, np.uint8), "x": 1}, {"sidecar": "{}"})
    with pytest.raises(ProtocolError, match="unreadable sidecar"):
        FinalModel.from_records({"bytes": np.zeros(4, np.uint8)}, {"sidecar": "{not json"})
    with pytest.raises(ProtocolError, match="not a JSON object"):
        FinalModel.from_records({"bytes": np.zeros(4, np.uint8)}, {"sidecar": "[1]"})


# -- fl-client predict ---------------------------------------------------------------------------
def site_config(tmp_path: Path, **changes: object) -> Path:
    defaults = {"model_verify_key": "model-signing.pub", "models_dir": "models"}
    return minimal_site_config(tmp_path, **{**defaults, **changes})


def images(tmp_path: Path) -> Path:
    folder = tmp_path / "new-studies" / "rec-1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for t in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8)).save(folder / f"{t}.png")
    return folder.parent


def test_fl_client_predict_uses_the_kept_model_offline(
    coordinator: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = site_config(tmp_path)
    store_final_model(
        message(coordinator["out"] / "final.pt"), coordinator["verify"], tmp_path / "models"
    )
    out = tmp_path / "predicted"
    code = fl_client(
        ["predict", "--site", "A", "--config", str(config), "--input", str(images(tmp_path)),
         "--out", str(out), "--spacing-mm", "0.3,0.3"]
    )  # fmt: skip
    assert code == 0
    assert "run run-1, round 2, signature verified" in capsys.readouterr().err
    rows = list(csv.DictReader((out / "measurements.csv").open()))
    assert [r["recording"] for r in rows] == ["rec-1"]
    assert sorted(p.name for p in (out / "masks" / "rec-1").iterdir()) == [
        "0000.png",
        "0001.png",
        "0002.png",
    ]


def test_fl_client_predict_refuses_without_a_model_or_a_key(
    coordinator: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--input", str(images(tmp_path)), "--out", str(tmp_path / "out")]
    config = site_config(tmp_path)
    assert fl_client(["predict", "--site", "A", "--config", str(config), *args]) == 2
    assert "no final model stored yet" in capsys.readouterr().err
    store_final_model(
        message(coordinator["out"] / "final.pt"), coordinator["verify"], tmp_path / "models"
    )
    assert (
        fl_client(["predict", "--site", "A", "--config", str(config), "--run", "run-9", *args]) == 2
    )
    assert "no final model of run 'run-9' stored here (stored: run-1)" in capsys.readouterr().err
    keyless = site_config(tmp_path, model_verify_key=None)
    text = keyless.read_text()
    assert "model_verify_key" not in text
    assert fl_client(["predict", "--site", "A", "--config", str(keyless), *args]) == 2
    assert "model_verify_key is not set" in capsys.readouterr().err
    # a kept model whose weights were altered on disk afterwards is refused at use
    config = site_config(tmp_path)
    kept = tmp_path / "models" / "run-1" / "final.pt"
    raw = bytearray(kept.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    kept.write_bytes(bytes(raw))
    assert fl_client(["predict", "--site", "A", "--config", str(config), *args]) == 2
    assert "digest mismatch" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
