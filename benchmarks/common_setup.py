"""Shared set-up of the benchmarks: a small synthetic federation, its cached data, the machine.

Not a benchmark itself. Every benchmark prints its ratios and appends a JSON record to
``benchmarks/results/<name>.json`` (quoted by docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.config import SiteSpec
from common.data.cache import load_site_cached
from common.data.preprocess import PreprocessConfig
from common.data.site_data import SiteData
from common.data.synthetic.federation import FederationConfig, generate_federation
from common.federation.protocol import TrainInstruction
from common.federation.run_settings import parse_run_settings
from common.federation.site_round import train_site
from common.labels import partially_labelled
from common.training.model import build_unet

# where the records go (a test points this elsewhere: the committed results stay as they are)
RESULTS = Path(os.environ.get("ECHOFL_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))
REPO = Path(__file__).resolve().parents[1]

FORMATS = {
    "A": "camus-nifti",
    "B": "echonet-dynamic",
    "C": "hmc-qu",
    "D": "folder",
    "E": "echonet-dynamic",
}


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def federation(
    data_dir: Path, cases: dict[str, int], *, frames: int = 2, seed: int = 0
) -> list[SiteSpec]:
    """Synthetic sites (vendor = site name, its natural format); generated once, reused."""
    sites = []
    for name, n in cases.items():
        vendor = name[0]
        site: dict[str, Any] = {
            "name": name,
            "vendor": vendor,
            "format": FORMATS[vendor],
            "cases": n,
        }
        if vendor == "C":
            site["frames"] = max(frames, 4)
        sites.append(site)
    fed = FederationConfig.model_validate(
        {"seed": seed, "output_dir": str(data_dir), "sites": sites}
    )
    generate_federation(fed, progress=lambda _: None)
    return [SiteSpec(name=s["name"], format=s["format"], root=data_dir / s["name"]) for s in sites]


def load(specs: list[SiteSpec], size: int, cache_dir: Path) -> dict[str, SiteData]:
    pre = PreprocessConfig(size=(size, size))
    return {s.name: load_site_cached(s, pre, cache_dir) for s in specs}


def disc_tensors(n: int, size: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """``n`` random images with disc-shaped LV / ring MYO / LA masks (so the loss is not
    trivial), every structure labelled: in-memory data for the training benchmarks."""
    from common.training.loop import SegmentationTensors

    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, size, size, generator=gen)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        cy, cx = torch.randint(size // 4, 3 * size // 4, (2,), generator=gen)
        d = ((yy - cy) ** 2 + (xx - cx) ** 2).float().sqrt()
        masks[i][d < size / 5] = 1
        masks[i][(d >= size / 5) & (d < size / 4)] = 2
        masks[i][(yy > cy + size / 4) & (d < size / 2.5)] = 3
    labelled = torch.ones(n, 4, dtype=torch.bool)
    return SegmentationTensors(images, masks, labelled)


def slowest_training(rows: list[dict[str, Any]], rounds: Any) -> list[float]:
    """Per round of a deployed or simulated run's metrics log: the slowest site's own
    ``train-seconds`` (the site rows, not the aggregate ``*`` or events)."""
    return [
        max(
            x["train-seconds"]
            for x in rows
            if x.get("phase") == "train"
            and x.get("round") == r
            and x.get("site") != "*"
            and "event" not in x
        )
        for r in rounds
    ]


def pss_mb(pid: int) -> float:
    """A process's proportional set size in MB (shared pages divided among their sharers):
    summed over processes, shared libraries and copy-on-write pages count once."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def record(name: str, payload: dict[str, Any]) -> Path:
    """Write the benchmark's latest result (with the machine and the time)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2))
    return path


def plain_fedavg(
    data: dict[str, SiteData], rounds: int, settings: dict[str, Any], threads: int
) -> tuple[float, list[float], dict[str, torch.Tensor]]:
    """FedAvg without Flower: every site trains one local epoch from the global weights (the
    same function, settings and seeds as a ClientApp), then a weighted mean. Returns (total
    seconds, seconds per round, final global weights)."""
    torch.set_num_threads(threads)
    run = parse_run_settings(settings)
    torch.manual_seed(run.seed)
    model = build_unet(run.recipe.model)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    partial = partially_labelled(d.labelled_set for d in data.values())
    per_round = []
    started = time.perf_counter()
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        states, weights = [], []
        for site in data.values():
            model.load_state_dict(global_state)
            metrics = train_site(
                model,
                site.split("train"),
                run.recipe,
                TrainInstruction(r, partial),
                seed=run.seed,
                device=torch.device("cpu"),
            )
            states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            weights.append(metrics["num-examples"])
        w = np.array(weights) / sum(weights)
        global_state = {
            k: sum(float(wi) * s[k].double() for wi, s in zip(w, states, strict=True)).to(
                global_state[k].dtype
            )
            for k in global_state
        }
        per_round.append(time.perf_counter() - t0)
    return time.perf_counter() - started, per_round, global_state
