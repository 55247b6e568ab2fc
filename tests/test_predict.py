"""echofl-predict end to end: a tiny trained, signed checkpoint -> masks, overlays and the
measurements CSV, on a native-format folder and on a folder of images; and its refusals."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives import serialization
from PIL import Image

from common.data.formats import write_site
from common.data.synthetic.generator import case_seed, generate_recording
from common.data.synthetic.vendors import get_vendor
from common.measure.recording import COLUMNS
from common.model_card import card_meta
from common.predict import main
from common.recipe import Recipe
from common.security.checkpoint import save_checkpoint
from common.security.pki import make_signing_keys
from common.training.loop import SegmentationTensors, resolve_device, train
from common.training.model import build_unet


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A U-Net trained 30 epochs on 6 vendor-A cases at 32 px, signed; and a CAMUS-like tree of
    3 other cases."""
    base = tmp_path_factory.mktemp("predict")
    vendor = get_vendor("A")
    recs = [
        generate_recording(vendor, seed=case_seed(7, "A", i), case_id=f"p{i:04d}", size=(64, 64))
        for i in range(9)
    ]
    recipe = Recipe.model_validate({"preprocess": {"size": [32, 32]}, "optimiser": {"lr": 0.01}})
    from common.data.preprocess import normalise, resize_image, resize_labels

    frames = [(r.frames[t], r.labels[t]) for r in recs[:6] for t in (r.ed, r.es)]
    images = np.stack(
        [normalise(resize_image(f.astype(np.float32), (32, 32)), "zscore") for f, _ in frames]
    )
    masks = np.stack([resize_labels(m, (32, 32)) for _, m in frames])
    data = SegmentationTensors(
        torch.from_numpy(images)[:, None],
        torch.from_numpy(masks),
        torch.ones(len(frames), 4, dtype=torch.bool),
    )
    torch.manual_seed(0)
    model = build_unet(recipe.model)
    train(model, data, recipe, seed=0, device=resolve_device("cpu"), epochs=30)
    private, public = make_signing_keys()
    key = serialization.load_pem_private_key(private, password=None)
    (base / "model-signing.pub").write_bytes(public)
    meta = {"run": "tiny", "role": "final", "round": 30, **card_meta(recipe)}
    save_checkpoint(base / "final.pt", model.state_dict(), meta, key)
    save_checkpoint(base / "unsigned.pt", model.state_dict(), meta)
    camus = write_site("camus-nifti", base / "CAMUS_public", recs[6:])
    return {"base": base, "camus": camus, "recordings": recs[6:]}


def _rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_a_camus_folder_gives_masks_overlays_and_a_row_per_recording(trained: dict) -> None:
    base = trained["base"]
    out = base / "out-camus"
    code = main(
        [
            "--checkpoint", str(base / "final.pt"),
            "--verify-key", str(base / "model-signing.pub"),
            "--input", str(trained["camus"]),
            "--format", "camus-nifti",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    rows = _rows(out / "measurements.csv")
    assert [r["recording"] for r in rows] == ["p0006_4CH", "p0007_4CH", "p0008_4CH"]
    assert list(rows[0]) == list(COLUMNS)
    for r in rows:
        assert (r["ed_frame"], r["es_frame"]) == ("0", "1")  # CAMUS names ED and ES
        assert float(r["edv_ml"]) > float(r["esv_ml"]) > 0  # a trained model finds the LV
        assert r["spacing_mm"]
        assert 0.0 <= float(r["lv_undecided"]) < 100  # the model's score at ED/ES, always given
        assert -1.0 <= float(r["lv_contrast"]) <= 1.0  # measured on the frames, always given
    masks = sorted((out / "masks" / "p0006_4CH").glob("*.png"))
    assert len(masks) == 2
    mask = np.asarray(Image.open(masks[0]))
    assert set(np.unique(mask)) <= {0, 1, 2, 3} and (mask == 1).any()
    assert (out / "overlays" / "p0006_4CH.png").is_file()
    assert not (base / "out-camus.partial").exists()


def test_a_folder_of_images_needs_the_spacing_for_volumes(trained: dict, tmp_path: Path) -> None:
    clip = generate_recording(get_vendor("A"), seed=case_seed(7, "A", 20), case_id="c", n_frames=6)
    folder = tmp_path / "images"
    (folder / "clip1").mkdir(parents=True)
    for t, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(folder / "clip1" / f"frame{t:02d}.png")
    Image.fromarray(clip.frames[0]).save(folder / "single.png")
    base = trained["base"]
    args = ["--checkpoint", str(base / "unsigned.pt"), "--allow-unsigned", "--input", str(folder)]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    rows = {r["recording"]: r for r in _rows(tmp_path / "a" / "measurements.csv")}
    assert rows["clip1"]["frames"] == "6" and "no-spacing" in rows["clip1"]["flags"]
    assert rows["clip1"]["edv_ml"] == ""  # no spacing, no millimetres
    assert "ed-es-not-found" in rows["single"]["flags"]  # one frame: no cycle
    spacing = f"{clip.spacing_mm[0]},{clip.spacing_mm[1]}"
    assert main([*args, "--spacing-mm", spacing, "--out", str(tmp_path / "b")]) == 0
    row = {r["recording"]: r for r in _rows(tmp_path / "b" / "measurements.csv")}["clip1"]
    assert float(row["edv_ml"]) > 0 and row["ed_frame"] != row["es_frame"]


def test_refusals_name_the_problem_and_leave_nothing(
    trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = trained["base"]
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(images / "ok.png")
    common = ["--input", str(images), "--out", str(tmp_path / "out")]

    def said(argv: list[str]) -> str:
        assert main(argv) == 2
        return capsys.readouterr().err

    assert "give --verify-key" in said(["--checkpoint", str(base / "unsigned.pt"), *common])
    unsigned = said(
        [
            "--checkpoint",
            str(base / "unsigned.pt"),
            "--verify-key",
            str(base / "model-signing.pub"),
            *common,
        ]
    )
    assert "unsigned checkpoint: refused" in unsigned
    _, other_public = make_signing_keys()
    (tmp_path / "other.pub").write_bytes(other_public)
    other = said(
        [
            "--checkpoint",
            str(base / "final.pt"),
            "--verify-key",
            str(tmp_path / "other.pub"),
            *common,
        ]
    )
    assert "invalid checkpoint signature" in other
    (images / "broken.png").write_bytes(b"not a png")
    broken = said(["--checkpoint", str(base / "unsigned.pt"), "--allow-unsigned", *common])
    assert "broken.png: unreadable image" in broken
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = said(
        [
            "--checkpoint",
            str(base / "unsigned.pt"),
            "--allow-unsigned",
            "--input",
            str(empty),
            "--out",
            str(tmp_path / "o2"),
        ]
    )
    assert "no images" in nothing
    (images / "broken.png").unlink()
    (tmp_path / "exists").mkdir()
    exists = said(
        [
            "--checkpoint",
            str(base / "unsigned.pt"),
            "--allow-unsigned",
            "--input",
            str(images),
            "--out",
            str(tmp_path / "exists"),
        ]
    )
    assert "the output folder exists" in exists
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "exists", "images", "other.pub"]


def test_truth_compares_with_the_inputs_own_masks(trained: dict) -> None:
    """--truth on a labelled CAMUS folder: agreement.csv with Dice, HD95 and MSD (mm) per
    structure and the EF error against the EF measured on the reference masks, which is itself
    within 3 points of the generator's true EF (the method floor)."""
    base = trained["base"]
    out = base / "out-truth"
    argv = ["--checkpoint", str(base / "unsigned.pt"), "--allow-unsigned", "--truth"]
    argv += ["--input", str(trained["camus"]), "--format", "camus-nifti", "--out", str(out)]
    assert main(argv) == 0
    rows = _rows(out / "agreement.csv")
    assert [r["recording"] for r in rows] == ["p0006_4CH", "p0007_4CH", "p0008_4CH"]
    for r, rec in zip(rows, trained["recordings"], strict=True):
        assert 0.3 < float(r["dice-LV"]) <= 1.0 and float(r["hd95-LV"]) > 0
        assert float(r["msd-LV"]) <= float(r["hd95-LV"])
        assert abs(float(r["ef_reference_percent"]) - float(rec.info["ef"])) < 3.0
        error = float(r["ef_percent"]) - float(r["ef_reference_percent"])
        assert float(r["ef_error"]) == pytest.approx(error, abs=0.011)


def test_a_patients_two_views_give_biplane_volumes(trained: dict, tmp_path: Path) -> None:
    """--views 2CH,4CH on a CAMUS tree with both views: each patient's two rows carry the same
    biplane EDV / ESV / EF, which are the biplane method of disks on the saved ED/ES masks."""
    import dataclasses

    from common.measure.recording import biplane

    vendor = get_vendor("A")
    recs = []
    for i in range(2):
        four = generate_recording(
            vendor, seed=case_seed(9, "A", i), case_id=f"q{i:04d}", size=(64, 64)
        )
        other = generate_recording(
            vendor, seed=case_seed(9, "A", 10 + i), case_id="x", size=(64, 64)
        )
        two = dataclasses.replace(other, case_id=four.case_id, view="2CH", split=four.split)
        recs += [four, two]
    root = write_site("camus-nifti", tmp_path / "CAMUS_public", recs)
    base = trained["base"]
    out = tmp_path / "out"
    argv = ["--checkpoint", str(base / "unsigned.pt"), "--allow-unsigned", "--input", str(root)]
    assert main([*argv, "--format", "camus-nifti", "--views", "2CH,4CH", "--out", str(out)]) == 0
    rows = {r["recording"]: r for r in _rows(out / "measurements.csv")}
    assert sorted(rows) == ["q0000_2CH", "q0000_4CH", "q0001_2CH", "q0001_4CH"]
    for case in ("q0000", "q0001"):
        four_row, two_row = rows[f"{case}_4CH"], rows[f"{case}_2CH"]
        keys = ("biplane_edv_ml", "biplane_esv_ml", "biplane_ef_percent")
        assert [four_row[k] for k in keys] == [two_row[k] for k in keys] and four_row[keys[0]]

        def phases(name: str) -> tuple[np.ndarray, np.ndarray]:
            return tuple(
                np.asarray(Image.open(out / "masks" / name / f"{t:04d}.png")) for t in (0, 1)
            )

        spacing = {
            v: tuple(float(x) for x in rows[f"{case}_{v}"]["spacing_mm"].split("x"))
            for v in ("2CH", "4CH")
        }
        # the CSV's spacing is rounded to 4 digits: compare at that precision
        expected = biplane(
            phases(f"{case}_4CH"), phases(f"{case}_2CH"), spacing["4CH"], spacing["2CH"]
        )
        assert float(four_row["biplane_edv_ml"]) == pytest.approx(
            expected["biplane_edv_ml"], rel=2e-3
        )
    single = tmp_path / "single"
    assert main([*argv, "--format", "camus-nifti", "--out", str(single)]) == 0
    assert all(r["biplane_edv_ml"] == "" for r in _rows(single / "measurements.csv"))


class _Ramp(torch.nn.Module):
    """A stand-in network: LV's logit rises from -1.5 to 1.7 across the columns, every other
    class's is 0 (the input is ignored): LV wins from the model's column 8 on, and its
    probability already equals background's just after column 7."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 4, *x.shape[2:])
        logits[:, 1] = torch.linspace(-1.5, 1.7, x.shape[-1])
        return logits


def test_segment_resamples_probabilities_to_the_frames_size_in_chunks() -> None:
    from common.model_card import card_from_sidecar
    from common.predict import segment, segment_scored

    recipe = Recipe.model_validate({"preprocess": {"size": [16, 16]}})
    card = card_from_sidecar(Path("x.pt"), card_meta(recipe))
    frames = np.zeros((5, 24, 40), np.uint8)
    labels = segment(_Ramp(), card, frames, chunk=2)
    assert labels.shape == (5, 24, 40) and labels.dtype == np.uint8
    # resampled probabilities: LV overtakes background at the model's column 7.03 = column
    # 18.3 of 40, so columns 19-39 are LV (resampling the model's label map would put the
    # border half-way between its columns 7 and 8: columns 20-39)
    np.testing.assert_array_equal(labels[3, 7], [0] * 19 + [1] * 21)
    assert (labels == labels[0]).all()  # every frame of every chunk alike
    # at the model's own size nothing is resampled: the argmax itself
    same = segment(_Ramp(), card, np.zeros((1, 16, 16), np.uint8))
    np.testing.assert_array_equal(same[0, 0], [0] * 8 + [1] * 8)
    # the LV score, at the model's size whatever the frames' size: p(LV) = e^l / (e^l + 3)
    # lies in (0.2, 0.8) from column 6 on (l > ln 0.75) and reaches 0.5 from column 13 on
    # (l >= ln 3): 10 undecided columns per 3 called LV
    _, scores = segment_scored(_Ramp(), card, frames, chunk=2)
    np.testing.assert_allclose(scores, [10 / 3] * 5)
    # frames smaller than the model's input: shrunk (antialiased) to their size
    small = segment(_Ramp(), card, np.zeros((1, 8, 8), np.uint8))
    assert small.shape == (1, 8, 8) and small[0, 0, 0] == 0 and small[0, 0, -1] == 1
