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
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.config import read_toml, validate_config
from common.data.cache import load_site_cached
from common.data.synthetic.federation import generate_federation
from common.errors import EchoflError
from common.version import add_version
from simulations.experiment import ExperimentConfig
from simulations.runs import RunContext, engine_for, execute, finished

APP_DIR = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = APP_DIR / "simulations" / "configs" / "smoke.toml"


def _say_factory(started: float):  # type: ignore[no-untyped-def]
    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)

    return say


class RunsFailed(EchoflError):
    """Some runs of the study failed (the others are kept)."""


def _attempt(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except Exception as exc:
        return exc


class Progress:
    """``k of N runs`` after each run of a study, with an ETA from the wall time of the runs
    this invocation executed (finished runs it skipped count as done, not in the rate)."""

    def __init__(self, total: int, say) -> None:  # type: ignore[no-untyped-def]
        self.total, self.say = total, say
        self.done = self.executed = 0
        self.started: float | None = None
        self.lock = threading.Lock()

    def run(self, fn, ctx, condition, seed):  # type: ignore[no-untyped-def]
        skipped = finished(ctx.config, condition, seed) is not None
        with self.lock:
            if not skipped and self.started is None:
                self.started = time.perf_counter()
        try:
            return fn(ctx, condition, seed)
        finally:
            with self.lock:
                self.done += 1
                self.executed += 0 if skipped else 1
                left = self.total - self.done
                eta = ""
                if self.executed and self.started is not None and left:
                    rate = (time.perf_counter() - self.started) / self.executed
                    eta = f", about {rate * left / 60:.0f} min left"
                self.say(f"progress: {self.done} of {self.total} runs done{eta}")


def _command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python simulations/run.py", *args])


def run_experiment(
    config: ExperimentConfig,
    *,
    report: bool = True,
    report_dir: Path | None = None,
    command: str = "",
) -> list[dict]:
    say = _say_factory(time.perf_counter())
    fed = config.synthetic_federation()
    if fed is not None:
        generate_federation(fed, progress=say)
    pre = config.recipe.preprocess  # every condition trains and is scored on these data
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
    jobs = [(c, seed) for seed in config.seeds for c in config.conditions]
    outcomes: dict[tuple[str, int], dict | BaseException] = {}
    try:
        ctx = RunContext(config, data, APP_DIR, engine, say)
        progress = Progress(len(jobs), say)
        # Local and centralised runs train in this process first, one after the other, with
        # every core; then the federated runs (Flower + Ray subprocesses) go several at once,
        # which overlaps their start-up and I/O.
        for c, seed in jobs:
            if c.kind != "federated":
                outcomes[(c.name, seed)] = _attempt(progress.run, execute, ctx, c, seed)
        federated = [(c, seed) for c, seed in jobs if c.kind == "federated"]
        workers = config.resources.federated_workers()
        if workers == 1 and len(federated) > 1 and config.resources.shares_ray:
            say("the federated runs share one Ray: they go one at a time")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                (c.name, seed): pool.submit(_attempt, progress.run, execute, ctx, c, seed)
                for c, seed in federated
            }
            try:
                for key, future in futures.items():
                    outcomes[key] = future.result()
            except BaseException:  # Ctrl-C or SIGTERM: stop the runs the threads wait on
                for future in futures.values():
                    future.cancel()
                if engine is not None:
                    engine.interrupt()
                raise
    finally:
        if engine is not None:
            engine.close()
    failed = {k: v for k, v in outcomes.items() if isinstance(v, BaseException)}
    for (name, seed), exc in failed.items():
        say(f"FAILED {name} / seed {seed}: {exc}")
    results = [outcomes[(c.name, seed)] for c, seed in jobs if (c.name, seed) not in failed]
    if failed:
        raise RunsFailed(
            f"{len(failed)} of {len(jobs)} run(s) failed; finished runs are kept "
            "and a new invocation continues from them"
        )
    if report:
        from simulations.report import write_report

        for folder in [config.run_dir / "report", *([report_dir] if report_dir else [])]:
            paths = write_report(config, results, data, folder, command=command)
            say(f"report: {folder}")
        print("\n" + paths["markdown"].read_text())
    return results


def run_shift_study(
    config: ExperimentConfig,
    *,
    report_dir: Path | None = None,
    command: str = "",
    report_only: bool = False,
) -> dict[float, list[dict]]:
    """``[shift]``: the experiment at every level (each its own resumable experiment, with its
    own report), then the report across levels (``simulations/shift_report.py``)."""
    assert config.shift is not None
    per_level = {}
    expected = len(config.shift.levels) * len(config.conditions) * len(config.seeds)
    # the two ends of the axis first: a study stopped half-way still tells whether there is an
    # effect at all; the levels in between then locate where it opens
    ends = sorted({min(config.shift.levels), max(config.shift.levels)})
    order = ends + [s for s in config.shift.levels if s not in ends]
    for level in order:
        at = config.at_level(level)
        if report_only:
            found = [finished(at, c, seed) for seed in at.seeds for c in at.conditions]
            per_level[level] = [r for r in found if r is not None]
            continue
        print(f"\n=== shift strength s = {level:g} ===", flush=True)
        per_level[level] = run_experiment(at, command=command)
    done = sum(len(r) for r in per_level.values())
    if report_only:
        print(f"report from the {done} of {expected} runs finished so far (nothing run)")
    from simulations.shift_report import write_shift_report

    for folder in [config.run_dir / "report", *([report_dir] if report_dir else [])]:
        paths = write_shift_report(
            config, per_level, folder, command=command, progress=(done, expected)
        )
        print(f"shift report: {folder}")
    print("\n" + paths["markdown"].read_text())
    return per_level


def _interrupt(signum: int, _frame: object) -> None:
    signal.signal(signum, signal.SIG_IGN)  # a second one must not cut the clean-up short
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    # SIGTERM (a scheduler's time limit, `timeout`, `kill`) ends the study like Ctrl-C: the
    # SuperLink, the Ray head and the runs in flight are stopped, finished runs stay on disk
    # (Python's default for SIGTERM would leave the Flower and Ray processes running)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return _main(argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description="echofl research harness")
    add_version(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="experiment TOML file")
    source.add_argument("--smoke", action="store_true", help=f"run {SMOKE_CONFIG.name}")
    parser.add_argument("--seeds", help="comma-separated seeds (override the config)")
    parser.add_argument("--output-dir", type=Path, help="override output_dir")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="run the config's [quick] variant (smaller, same conditions)",
    )
    parser.add_argument(
        "--report-dir", type=Path, help="also write the report here (e.g. docs/results/<name>)"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="a [shift] study: write its report from the runs finished so far, run nothing",
    )
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
        if args.quick:
            try:
                config = config.quick_variant()
            except ValueError as exc:
                raise EchoflError(f"{path}: {exc}") from None
        if config.shift is None:
            run_experiment(config, report_dir=args.report_dir, command=_command_line(argv))
        else:
            run_shift_study(
                config,
                report_dir=args.report_dir,
                command=_command_line([a for a in (argv or sys.argv[1:]) if a != "--report-only"]),
                report_only=args.report_only,
            )
    except EchoflError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(
            f"interrupted ({str(exc) or 'Ctrl-C'}): every Flower and Ray process of the study was "
            "stopped; finished runs are kept and the same command continues from them",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
