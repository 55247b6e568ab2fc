"""Synthetic echo generator speed: frames per second on one CPU core.

    OMP_NUM_THREADS=1 python benchmarks/bench_synthetic.py [--cases 12] [--out FILE]

Renders ED/ES recordings (2 frames, the per-case set-up included) of every vendor at 128 x 128
(the goal: >= 10 frames/s per core) and 256 x 256, and 16-frame clips at 128 x 128, all in this
one process with every library limited to one thread. Reports frames per wall-clock second and
per CPU second (the latter is what one core delivers even when the machine is shared), the
ratio to the goal, and writes the table as JSON.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported: one core, as the goal is stated

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402

from common.data.synthetic.generator import generate_recording  # noqa: E402
from common.data.synthetic.vendors import VENDORS  # noqa: E402

GOAL_FPS = 10.0


def measure(vendor: str, size: tuple[int, int], n_frames: int, cases: int) -> dict[str, float]:
    """Render ``cases`` recordings; frames per wall second and per CPU second."""
    profile = VENDORS[vendor]
    generate_recording(profile, seed=10_000, case_id="warm", size=size, n_frames=n_frames)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for seed in range(cases):
        generate_recording(profile, seed=seed, case_id="b", size=size, n_frames=n_frames)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    frames = cases * n_frames
    return {"frames": frames, "fps_wall": frames / wall, "fps_cpu": frames / cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12, help="recordings per vendor and setting")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_synthetic.json"))
    args = parser.parse_args()
    cv2.setNumThreads(1)

    settings = [
        ("128x128 ED/ES", (128, 128), 2),
        ("256x256 ED/ES", (256, 256), 2),
        ("128x128 clip of 16", (128, 128), 16),
    ]
    rows = []
    print(f"{'setting':<20}{'vendor':>7}{'frames/s (wall)':>17}{'frames/s (CPU)':>16}{'x goal':>8}")
    for label, size, n_frames in settings:
        cases = max(args.cases // (n_frames // 2), 2)
        for vendor in VENDORS:
            r = measure(vendor, size, n_frames, cases)
            rows.append(
                {"setting": label, "vendor": vendor, **r, "ratio_to_goal": r["fps_cpu"] / GOAL_FPS}
            )
            print(
                f"{label:<20}{vendor:>7}{r['fps_wall']:>17.1f}{r['fps_cpu']:>16.1f}"
                f"{r['fps_cpu'] / GOAL_FPS:>8.2f}"
            )
    for label, _, _ in settings:
        fps = [r["fps_cpu"] for r in rows if r["setting"] == label]
        print(f"{label:<20}{'all':>7}{'':>17}{min(fps):>12.1f} min{min(fps) / GOAL_FPS:>8.2f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "goal_fps_per_core": GOAL_FPS,
                "threads": 1,
                "machine": f"{platform.processor() or platform.machine()} / {os.cpu_count()} cores",
                "python": platform.python_version(),
                "results": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
