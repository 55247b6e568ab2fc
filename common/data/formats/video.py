"""Grayscale AVI clips as the echo video datasets store them (EchoNet, HMC-QU).

Echo AVIs hold three identical colour channels; frames are read back as channel 0. Written clips
use the Motion-JPEG codec (lossy, like the exports they imitate).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from common.errors import DataError


def read_gray_video(path: Path) -> np.ndarray:
    """All frames of an AVI as uint8 (T, H, W), channel 0 of each decoded frame.

    Raises :class:`DataError` naming ``path`` when the file is missing, cannot be decoded or
    holds no frame.
    """
    if not path.is_file():
        raise DataError(path, "missing video file")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DataError(path, "unreadable video (OpenCV cannot open it)")
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame[..., 0] if frame.ndim == 3 else frame)
    finally:
        capture.release()
    if not frames:
        raise DataError(path, "unreadable video: no frame could be decoded")
    return np.stack(frames).astype(np.uint8, copy=False)


def write_gray_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """Write uint8 (T, H, W) frames as a Motion-JPEG AVI with three identical channels."""
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W), got {frames.dtype} {frames.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:]
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (width, height), True
    )
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot open an MJPG AVI writer")
    try:
        for frame in frames:
            writer.write(cv2.merge([frame, frame, frame]))
    finally:
        writer.release()
