"""The run's machine-readable log: one JSON object per line, appended and flushed at once.

Rows: ``{"round": r, "phase": "train"|"val"|"test", "site": name, "node": id, ...metrics}``
for every site's reply, ``"site": "*"`` for the aggregate of a round, and
``{"event": ...}`` rows for the run's milestones (negotiation, rejected replies, checkpoints).

With ``tensorboard_dir``, the same numbers also go to TensorBoard (run setting ``tensorboard``,
on by default; ``tensorboard --logdir <output-dir>/tensorboard``): every numeric metric of a
site row as ``<phase>/<site>/<metric>`` (the round's aggregate as ``<phase>/all/<metric>``) and
every numeric field of ``round-done`` as ``round/<field>``, at step = round. TensorBoard's writer
queues the scalars to its own thread; the file is flushed once per round.

With an :class:`MlflowTarget` (run settings ``mlflow-tracking-uri``, ``mlflow-experiment``,
``mlflow-run-name``; MLflow is optional: ``pip install 'echofl[mlflow]'``), the same metrics
under the same names go to one MLflow run, a round's metrics when the round is complete (its
``round-done``; round 0's with round 1's, the final test's at the end), logged asynchronously
(MLflow's own queue, off the round loop), with the training recipe (the ``train-config`` event)
as its parameters. The MLflow run's id is kept in ``<output-dir>/mlflow-run-id``, so a resumed
run continues the same MLflow run, and a round the coordinator did not finish is not in MLflow
(as :mod:`fl_server.resume` drops it from the log); it ends FINISHED, or FAILED when the
federated run stopped with an error.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _scalars(row: Mapping[str, Any], skip: frozenset[str]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if k not in skip
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


SITE_FIELDS = frozenset({"round", "phase", "site", "node", "time"})
ROUND_FIELDS = frozenset({"event", "round", "time"})


def tracked_scalars(row: Mapping[str, Any]) -> tuple[int, dict[str, float]] | None:
    """(step, {name: value}) of a metrics-log row for a tracker; ``None`` for rows it skips."""
    step = row.get("round")
    if not isinstance(step, int) or isinstance(step, bool):
        return None
    if "event" not in row and "phase" in row and "site" in row:
        site = "all" if row["site"] == "*" else row["site"]
        scalars = _scalars(row, SITE_FIELDS)
        return step, {f"{row['phase']}/{site}/{k}": v for k, v in scalars.items()}
    if row.get("event") == "round-done":
        return step, {f"round/{k}": v for k, v in _scalars(row, ROUND_FIELDS).items()}
    return None


class TensorBoardSink:
    """The metrics log's rows as TensorBoard scalars (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def row(self, row: Mapping[str, Any]) -> None:
        tracked = tracked_scalars(row)
        if tracked is None:
            return
        step, scalars = tracked
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        if row.get("event") == "round-done":
            self.writer.flush()

    def close(self, status: str = "FINISHED") -> None:
        self.writer.close()


@dataclass(frozen=True)
class MlflowTarget:
    """Where a run's metrics go in MLflow: the tracking URI (``sqlite:///mlflow.db``,
    ``http://host:5000``, ...), the experiment, the MLflow run's name."""

    tracking_uri: str
    experiment: str
    run_name: str


RUN_ID_FILE = "mlflow-run-id"


SQLITE = "sqlite:///"  # + a path: relative, or absolute with a fourth slash


def is_relative_sqlite(uri: str) -> bool:
    return uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/")


def absolute_tracking_uri(uri: str, base: Path) -> str:
    """A relative SQLite store (``sqlite:///mlflow.db``) made absolute against ``base`` (where
    the operator typed it): the ServerApp runs in another folder. Other URIs unchanged."""
    if is_relative_sqlite(uri):
        return SQLITE + str((base / uri[len(SQLITE) :]).resolve())
    return uri


class MlflowSink:
    """The metrics log's rows as the metrics of one MLflow run (see the module docstring)."""

    def __init__(self, target: MlflowTarget, output_dir: Path) -> None:
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise ConfigError(
                "run config",
                "mlflow-tracking-uri is set but MLflow is not installed here: "
                "pip install 'echofl[mlflow]' (or leave mlflow-tracking-uri empty)",
            ) from None
        from mlflow.entities import Metric, Param

        self._metric, self._param = Metric, Param
        self._pending: list[Any] = []  # MLflow's RunOperations of the queued batches
        self._held: list[Any] = []  # the metrics of the round in progress
        self.id_file = output_dir / RUN_ID_FILE
        try:
            self.client = MlflowClient(tracking_uri=target.tracking_uri)
            self.run_id = self._resumed() or self._new_run(target)
        except Exception as exc:  # MLflow raises its own and the transport's errors
            raise ConfigError(
                "run config",
                f"mlflow-tracking-uri {target.tracking_uri!r}: cannot start an MLflow run "
                f"({type(exc).__name__}: {str(exc)[:400]})",
            ) from None

    def _resumed(self) -> str | None:
        """The MLflow run of an earlier start of this federated run (a resume), if any."""
        if not self.id_file.is_file():
            return None
        run_id = self.id_file.read_text().strip()
        try:
            self.client.get_run(run_id)
        except Exception as exc:  # the store has no such run (another store, or deleted)
            raise RuntimeError(
                f"the MLflow run {run_id} recorded in {self.id_file} is not in this store "
                f"({type(exc).__name__}); delete that file to start a new MLflow run"
            ) from None
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def _new_run(self, target: MlflowTarget) -> str:
        experiment = self.client.get_experiment_by_name(target.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(target.experiment)
        )
        run = self.client.create_run(experiment_id, run_name=target.run_name)
        self.id_file.write_text(run.info.run_id + "\n")
        return run.info.run_id

    def row(self, row: Mapping[str, Any]) -> None:
        if row.get("event") == "train-config":
            self._params(row)
            return
        tracked = tracked_scalars(row)
        if tracked is None:
            return
        step, scalars = tracked
        stamp = int(1000 * float(row.get("time", time.time())))
        self._held += [self._metric(k, v, stamp, step) for k, v in scalars.items()]
        if row.get("event") == "round-done":  # the round is complete: now it goes to MLflow
            self._send()

    def _send(self) -> None:
        held, self._held = self._held, []
        for start in range(0, len(held), 1000):  # MLflow takes at most 1000 metrics a batch
            batch = held[start : start + 1000]
            self._pending.append(
                self.client.log_batch(self.run_id, metrics=batch, synchronous=False)
            )

    def _params(self, row: Mapping[str, Any]) -> None:
        if self.client.get_run(self.run_id).data.params:
            return  # written by the run's first start: MLflow parameters are written once
        fields = {k: v for k, v in row.items() if k not in ("event", "time")}
        params = [self._param(k, str(v)[:6000]) for k, v in sorted(fields.items())]
        self._pending.append(self.client.log_batch(self.run_id, params=params, synchronous=False))

    def close(self, status: str = "FINISHED") -> None:
        """Send what is held (when FINISHED), wait for the queued batches (a failed one is
        reported, not raised: the federated run itself is done), then end the MLflow run with
        ``status``."""
        if status == "FINISHED":
            self._send()  # the final test; an unfinished round's rows are dropped otherwise
        failed = 0
        for operations in self._pending:
            try:
                operations.wait()
            except Exception:  # MLflow wraps the store's errors in its own
                failed += 1
        self._pending.clear()
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception:  # the store went away: the federated run's own outputs are complete
            failed += 1
        if failed:
            print(
                f"[echofl] MLflow: {failed} operation(s) on run {self.run_id} failed (metrics "
                "or the end status missing there; metrics.jsonl has everything)",
                flush=True,
            )


class MetricsLog:
    def __init__(
        self,
        path: Path,
        tensorboard_dir: Path | None = None,
        mlflow: MlflowTarget | None = None,
    ) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.sinks: list[TensorBoardSink | MlflowSink] = []
        if tensorboard_dir is not None:
            self.sinks.append(TensorBoardSink(tensorboard_dir))
        if mlflow is not None:
            self.sinks.append(MlflowSink(mlflow, path.parent))

    def write(self, row: Mapping[str, Any]) -> None:
        row = {k: _clean(v) for k, v in row.items()} | {"time": round(time.time(), 3)}
        line = json.dumps(row)
        with self.path.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
        for sink in self.sinks:
            sink.row(row)

    def close(self, status: str = "FINISHED") -> None:
        """Flush and close the trackers (the JSON lines are flushed as written); ``status``:
        how the run ended, for MLflow (``FINISHED`` or ``FAILED``)."""
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close(status)

    def site_row(
        self, server_round: int, phase: str, site: str, node: int, metrics: Mapping[str, float]
    ) -> None:
        self.write(
            {"round": server_round, "phase": phase, "site": site, "node": node, **dict(metrics)}
        )

    def event(self, name: str, **fields: Any) -> None:
        self.write({"event": name, **fields})


def read_metrics_log(path: Path) -> list[dict[str, Any]]:
    """All rows of a metrics log (a missing file is an empty log)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
