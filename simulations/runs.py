"""One run = one condition x one seed. Each writes a small ``result.json`` (committable) and
its model; a finished run (same key) is skipped, so a study can be resumed anywhere.

Every condition is scored the same way: the final model on the test split of every site
(full ground truth on synthetic sites: every structure on every domain; labelled structures on
real data) and on the evaluation-only sites. ``local`` runs train one model per site and score
each on its own site only. Centralised and federated models are also scored as a clinician
would use them (``clinical``: HD95 and mean surface distance in mm, EF error, on the native
test recordings: :mod:`simulations.clinical`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.data.site_data import SiteData
from common.federation import protocol
from common.federation.run_settings import RunSettings, to_run_config
from common.files import write_atomic
from common.labels import partially_labelled
from common.recipe import Recipe
from common.security.checkpoint import load_checkpoint
from common.training.loop import SegmentationTensors, resolve_device, train
from common.training.metrics import STRUCTURES
from common.training.model import build_unet
from common.training.scoring import score_sites
from fl_server.metrics_log import absolute_tracking_uri, read_metrics_log
from simulations.clinical import ClinicalScorer
from simulations.engine import Resources, SimulationEngine
from simulations.experiment import Condition, ExperimentConfig
from simulations.recipes_report import mean_drift

RESULT = "result.json"


@dataclass
class RunContext:
    config: ExperimentConfig
    data: dict[str, SiteData]  # every site, partial labels as annotated
    app_dir: Path
    engine: SimulationEngine | None
    say: Callable[[str], None]
    clinical: ClinicalScorer | None = None  # made on first use: reads the test recordings once

    def clinical_scores(self, model: torch.nn.Module, recipe: Recipe) -> dict[str, Any]:
        if self.clinical is None:
            self.clinical = ClinicalScorer([self.config.site_spec(s) for s in self.config.sites])
        torch.set_num_threads(_threads(self.config))
        return self.clinical.score(model, recipe)


def run_dir(config: ExperimentConfig, condition: Condition, seed: int) -> Path:
    return config.run_dir / "runs" / condition.slug / f"seed-{seed}"


def finished(config: ExperimentConfig, condition: Condition, seed: int) -> dict[str, Any] | None:
    """The stored result of this run if it exists and matches the current settings."""
    path = run_dir(config, condition, seed) / RESULT
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if result.get("key") == config.run_key(condition, seed) else None


def _threads(config: ExperimentConfig) -> int:
    return config.resources.threads or os.cpu_count() or 1


def _labels(data: SiteData, condition: Condition) -> SiteData:
    return data.fully_labelled() if condition.labels == "full" else data


def run_pooled(ctx: RunContext, condition: Condition, seed: int, out: Path) -> dict[str, Any]:
    """``centralised``: one model on every training site pooled; ``local``: one per site."""
    config = ctx.config
    recipe = config.recipe_for(condition)
    torch.set_num_threads(_threads(config))
    device = resolve_device(config.resources.device)
    train_names = [s.name for s in config.train_sites]
    groups = [train_names] if condition.kind == "centralised" else [[n] for n in train_names]
    test: dict[str, dict[str, float]] = {}
    curves: dict[str, list[float]] = {}
    by_structure: dict[str, dict[str, list[float]]] = {}
    for names in groups:
        parts = [_labels(ctx.data[n], condition).split("train") for n in names]
        vals = [_labels(ctx.data[n], condition).split("val") for n in names]
        vals = [v for v in vals if len(v)]
        curve: list[float] = []
        structures: dict[str, list[float]] = {s.name: [] for s in STRUCTURES}

        def on_epoch(  # type: ignore[no-untyped-def]
            epoch: int, stats: Any, val: Any, curve: list[float] = curve, structures=structures
        ) -> None:
            curve.append(_mean_full_dice(val.scores.dice) if val is not None else math.nan)
            for s in STRUCTURES:
                dice = val.scores.dice.get(s, math.nan) if val is not None else math.nan
                structures[s.name].append(float(dice))

        torch.manual_seed(seed)
        model = build_unet(recipe.model)
        train(
            model,
            SegmentationTensors.from_sites(parts, recipe.model.context),
            recipe,
            seed=seed,
            device=device,
            partial=partially_labelled(p.labelled_set for p in parts),  # within this pool
            epochs=config.epochs,
            validation=(
                SegmentationTensors.from_sites(vals, recipe.model.context) if vals else None
            ),
            on_epoch=on_epoch,
        )
        scored = (
            {n: ctx.data[n] for n in ctx.data}
            if condition.kind == "centralised"
            else {names[0]: ctx.data[names[0]]}
        )
        test.update(
            score_sites(model, scored, split="test", device=device, context=recipe.model.context)
        )
        key = "all" if condition.kind == "centralised" else names[0]
        curves[key] = curve
        by_structure[key] = structures
        torch.save(model.state_dict(), out / f"model-{key}.pt")
    return {"test": test, "curves": curves, "curves_by_structure": by_structure}


def _mean_full_dice(dice: Mapping[Any, float]) -> float:
    values = [v for v in dice.values() if not math.isnan(v)]
    return float(sum(values) / len(values)) if values else math.nan


def run_federated(ctx: RunContext, condition: Condition, seed: int, out: Path) -> dict[str, Any]:
    config = ctx.config
    recipe = config.recipe_for(condition)
    assert ctx.engine is not None
    sites = [config.site_spec(s) for s in config.train_sites]
    sites_file = out / "sites.json"
    sites_file.write_text(json.dumps([s.model_dump(mode="json") for s in sites], indent=2))
    parallel = max(1, int((os.cpu_count() or 1) // config.resources.cpus_per_site))
    settings = RunSettings(
        recipe=recipe,
        num_server_rounds=config.budget.rounds,
        min_sites=len(sites),
        seed=seed,
        device=config.resources.device,
        client_threads=config.resources.threads or max(1, (os.cpu_count() or 1) // parallel),
        output_dir=str(out.resolve()),
        cache_dir=str(config.cache_dir.resolve()),
        sim_sites=str(sites_file.resolve()),
        full_labels=condition.labels == "full",
        mlflow_tracking_uri=absolute_tracking_uri(config.tracking.mlflow_tracking_uri, Path.cwd()),
        mlflow_experiment=config.tracking.mlflow_experiment or config.name,
        mlflow_run_name=f"{condition.slug}/seed-{seed}",
    )
    log_file = (out / "flower.log").open("w")

    def on_line(line: str) -> None:
        log_file.write(line + "\n")
        if line.startswith("[echofl]"):
            ctx.say(f"  {condition.name} / seed {seed}: {line.removeprefix('[echofl] ')}")

    try:
        outcome = ctx.engine.run(ctx.app_dir, to_run_config(settings), len(sites), on_line=on_line)
    finally:
        log_file.close()
    if outcome.returncode != 0 or not (out / "checkpoints" / "final.pt").is_file():
        raise RuntimeError(
            f"federated run failed (exit {outcome.returncode}); see {out / 'flower.log'}"
        )
    state, _ = load_checkpoint(out / "checkpoints" / "final.pt")
    model = build_unet(recipe.model)
    model.load_state_dict(state)
    torch.set_num_threads(_threads(config))
    device = resolve_device(config.resources.device)
    rows = read_metrics_log(out / "metrics.jsonl")
    aggregates = sorted(
        (r for r in rows if r.get("phase") == "val" and r.get("site") == "*" and "event" not in r),
        key=lambda r: r["round"],
    )
    dice = [protocol.scored_dice(r, protocol.FULL) for r in aggregates]
    curve = [_mean_full_dice(d) for d in dice]
    structures = {s.name: [float(d.get(s, math.nan)) for d in dice] for s in STRUCTURES}
    torch.save(model.state_dict(), out / "model-all.pt")
    return {
        "drift": mean_drift(out),  # kept in result.json: the metrics log is not committed
        "test": score_sites(
            model, ctx.data, split="test", device=device, context=recipe.model.context
        ),
        "curves": {"all": curve},
        "curves_by_structure": {"all": structures},  # validation Dice per structure and round
    }


def needs_clinical(result: Mapping[str, Any], condition: Condition) -> bool:
    return condition.kind != "local" and "clinical" not in result


def clinical_of(ctx: RunContext, condition: Condition, out: Path) -> dict[str, Any]:
    """The clinical scores (:mod:`simulations.clinical`) of the run's kept ``model-all.pt``."""
    recipe = ctx.config.recipe_for(condition)
    model = build_unet(recipe.model)
    model.load_state_dict(torch.load(out / "model-all.pt", weights_only=True))
    return ctx.clinical_scores(model, recipe)


def execute(ctx: RunContext, condition: Condition, seed: int) -> dict[str, Any]:
    """Run (or reuse) one condition x seed; returns its result dict."""
    done = finished(ctx.config, condition, seed)
    if done is not None and needs_clinical(done, condition):
        # finished before runs were scored natively: score its kept model now (the run's
        # key and every other number stay as they are)
        out = run_dir(ctx.config, condition, seed)
        if (out / "model-all.pt").is_file():
            done["clinical"] = clinical_of(ctx, condition, out)
            write_atomic(out / RESULT, json.dumps(done, indent=2).encode())
            ctx.say(f"{condition.name} / seed {seed}: clinical scores added to its result")
    if done is not None:
        ctx.say(f"{condition.name} / seed {seed}: already done ({done['seconds']:.0f}s), skipped")
        return done
    out = run_dir(ctx.config, condition, seed)
    if out.exists():  # an interrupted attempt: its log and checkpoints must not mix with this one
        ctx.say(f"{condition.name} / seed {seed}: discarding an interrupted attempt's outputs")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ctx.say(f"{condition.name} / seed {seed}: running")
    started = time.perf_counter()
    runner = run_federated if condition.kind == "federated" else run_pooled
    body = runner(ctx, condition, seed, out)
    if condition.kind != "local":  # one model for every site: score it as a clinician uses it
        body["clinical"] = clinical_of(ctx, condition, out)
    result = {
        "condition": condition.name,
        "slug": condition.slug,
        "kind": condition.kind,
        "seed": seed,
        "key": ctx.config.run_key(condition, seed),
        "seconds": round(time.perf_counter() - started, 2),
        **body,
    }
    write_atomic(out / RESULT, json.dumps(result, indent=2).encode())
    ctx.say(f"{condition.name} / seed {seed}: done in {result['seconds']:.0f}s")
    return result


def engine_for(config: ExperimentConfig) -> SimulationEngine:
    r = config.resources
    return SimulationEngine(
        config.run_dir / ".flwr",
        Resources(
            cpus_per_site=r.cpus_per_site,
            gpus_per_site=r.gpus_per_site,
            ray_address=r.ray_address,
            keep_ray=r.keep_ray,
        ),
    )
