"""Export a verified checkpoint for use outside echofl: ONNX and TorchScript, with its card.

    echofl-export --checkpoint final.pt --verify-key model-signing.pub --out exported/

Writes ``model.onnx`` (opset 17, batch size free), ``model.torchscript.pt`` and
``model-card.json``: how to apply the model (input ``(N, C, H, W)`` float32 at the training
size, C = 1, or 2 for a model that also sees each frame's partner frame
(:mod:`common.data.context`), what each channel holds, the intensity normalisation, the label
map of the ``(N, 4, H, W)`` logits), the source
checkpoint's file, SHA-256, run and round, and the measured agreement of each export with the
PyTorch model on a random batch (an export that disagrees by more than 1e-4 is not written).
ONNX needs the ``export`` extra (``pip install -e ".[export]"``: onnx and onnxruntime).
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from common.data.context import input_channels
from common.errors import EchoflError
from common.files import write_atomic

TOLERANCE = 1e-4
OPSET = 17
CHANNELS = {  # what each input channel holds, per model.context
    "none": ["the frame to segment"],
    "partner": [
        "the frame to segment",
        "its partner: the frame of the same recording whose normalised image, averaged over "
        "4 x 4 pixel blocks, differs most from it in mean squared difference (for ED, ES; a "
        "recording of one frame: the frame itself)",
    ],
    "smoothed-partner": [
        "the frame to segment",
        "its partner (as for context 'partner'), averaged over 5 x 5 pixel boxes centred on each "
        "pixel (at the borders over the part of the box inside the image)",
    ],
}


def _onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> float:
    try:
        import onnxruntime
    except ImportError:
        raise EchoflError(
            'ONNX export needs onnx and onnxruntime: pip install -e ".[export]"'
        ) from None
    with warnings.catch_warnings():  # the TorchScript-based exporter: stable for this network
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": example.numpy()})[0]
    with torch.no_grad():
        want = model(example).numpy()
    return float(np.abs(got - want).max())


def _torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return float((loaded(example) - model(example)).abs().max())


def export(
    checkpoint: Path, verify_key: Path | None, allow_unsigned: bool, out: Path
) -> dict[str, object]:
    """Export into ``out`` (written as ``out.partial`` and renamed); returns the card."""
    from common.predict import load_model
    from common.security.checkpoint import sha256_file

    if out.exists():
        raise EchoflError(f"{out}: the output folder exists; choose a new one")
    model, card, sidecar = load_model(checkpoint, verify_key, allow_unsigned)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    channels = input_channels(card.model.context)
    example = torch.randn(
        2, channels, *card.preprocess.size, generator=torch.Generator().manual_seed(0)
    )
    try:
        agreement = {
            "model.onnx": _onnx(model, example, partial / "model.onnx"),
            "model.torchscript.pt": _torchscript(model, example, partial / "model.torchscript.pt"),
        }
        worst = {k: v for k, v in agreement.items() if not v <= TOLERANCE}
        if worst:
            raise EchoflError(
                f"export disagrees with the PyTorch model beyond {TOLERANCE}: {worst}; not written"
            )
        document = {
            "input": {
                "name": "image",
                "shape": ["N", channels, *card.preprocess.size],
                "dtype": "float32",
                "channels": CHANNELS[card.model.context],
                "resize_to": list(card.preprocess.size),
                "normalisation": card.preprocess.normalisation,
                "normalisation_means": {
                    "zscore": "per image: subtract its mean, divide by its standard deviation",
                    "unit": "divide the 0-255 gray values by 255",
                }[card.preprocess.normalisation],
            },
            "output": {"name": "logits", "shape": ["N", 4, *card.preprocess.size]},
            "labels": card.labels,
            "model": card.model.model_dump(mode="json"),
            "source": {
                "checkpoint": checkpoint.name,
                "sha256": sha256_file(checkpoint),
                "run": sidecar.get("run"),
                "round": sidecar.get("round"),
                "signature_verified": verify_key is not None,
            },
            "max_abs_difference_to_pytorch": agreement,
        }
        write_atomic(partial / "model-card.json", json.dumps(document, indent=2).encode())
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(out)
    return document


def main(argv: Sequence[str] | None = None) -> int:
    from common.predict import model_parser

    parser = model_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        card = export(args.checkpoint, args.verify_key, args.allow_unsigned, args.out)
    except EchoflError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in card["max_abs_difference_to_pytorch"].items())
    print(f"exported to {args.out} (max |difference| to PyTorch: {diffs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
