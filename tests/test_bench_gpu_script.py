"""benchmarks/bench_gpu.py stays runnable without a GPU (its figures need one: docs/benchmarks.md
section 7): the quick CPU check prints the AMP ratio and the sites-per-device rounds, and writes
its record where it is told."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_runs_on_a_cpu(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--quick", "--device", "cpu"],
        env={**os.environ, "ECHOFL_BENCH_RESULTS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert any(line.startswith("AMP: ") and "(CPU: AMP is off)" in line for line in lines)
    assert any(line.startswith("1 site(s) on one cpu: round ") for line in lines)
    assert any(line.startswith("2 site(s) on one cpu: round ") and "x one site / round" in line
               for line in lines)  # fmt: skip
    record = json.loads((tmp_path / "gpu_script_on_cpu.json").read_text())
    assert set(record["sites_per_device"]) == {"1", "2"}
    assert record["amp"]["fp32_img_s"] > 0 and record["amp"]["amp_img_s"] > 0
