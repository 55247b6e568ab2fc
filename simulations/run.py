"""echofl research harness: a multi-site federation on one node, conditions side by side.

    python simulations/run.py --smoke                      # 3 sites, 2 rounds, small images
    python simulations/run.py --config simulations/configs/<experiment>.toml [--seeds 0,1,2]

Generates (or reuses) the synthetic sites, reads real dataset folders where the config names
them, runs every condition x seed (federated conditions on Flower's simulation engine, local
and centralised ones with the same training loop), skips runs already finished, and writes
the report (Markdown + CSV table, learning curves, bar chart, overlays) to
``<output_dir>/<name>/report/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common.cache import load_site_cached
from common.config import read_toml, validate_config
from common.errors import EchoflError
from common.preprocess import PreprocessConfig
from common.synthetic.federation import generate_federation
from simulations.experiment import ExperimentConfig
from simulations.runs import RunContext, engine_for, execute

APP_DIR = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = APP_DIR / "simulations" / "configs" / "smoke.toml"


def _say_factory(started: float):  # type: ignore[no-untyped-def]
    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)

    return say


def run_experiment(config: ExperimentConfig, *, report: bool = True) -> list[dict]:
    say = _say_factory(time.perf_counter())
    fed = config.synthetic_federation()
    if fed is not None:
        generate_federation(fed, progress=say)
    pre = PreprocessConfig(size=(config.budget.image_size, config.budget.image_size))
    data = {
        s.name: load_site_cached(config.site_spec(s), pre, config.cache_dir) for s in config.sites
    }
    for name, site in data.items():
        say(
            f"site {name}: {len(site)} frames, labelled "
            f"{{{', '.join(sorted(s.name for s in site.labelled_set))}}}, "
            f"train/val/test {len(site.split('train'))}/{len(site.split('val'))}/"
            f"{len(site.split('test'))}"
        )
    needs_engine = any(c.kind == "federated" for c in config.conditions)
    engine = engine_for(config) if needs_engine else None
    results = []
    try:
        ctx = RunContext(config, data, APP_DIR, engine, say)
        for seed in config.seeds:
            for condition in config.conditions:
                results.append(execute(ctx, condition, seed))
    finally:
        if engine is not None:
            engine.close()
    if report:
        from simulations.report import write_report

        paths = write_report(config, results, data, config.run_dir / "report")
        print("\n" + paths["markdown"].read_text())
        say(f"report: {paths['markdown'].parent}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="echofl research harness")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="experiment TOML file")
    source.add_argument("--smoke", action="store_true", help=f"run {SMOKE_CONFIG.name}")
    parser.add_argument("--seeds", help="comma-separated seeds (override the config)")
    parser.add_argument("--output-dir", type=Path, help="override output_dir")
    args = parser.parse_args(argv)
    path = SMOKE_CONFIG if args.smoke else args.config
    try:
        raw = read_toml(path)
        if args.seeds:
            try:
                raw["seeds"] = [int(s) for s in args.seeds.split(",")]
            except ValueError:
                raise EchoflError(
                    f"--seeds must be comma-separated integers, got {args.seeds!r}"
                ) from None
        if args.output_dir:
            raw["output_dir"] = str(args.output_dir)
        config = validate_config(ExperimentConfig, raw, path)
        run_experiment(config)
    except EchoflError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
