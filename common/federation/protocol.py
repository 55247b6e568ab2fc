"""The wire protocol between the coordinator and the sites, in one place.

Both Flower apps build and read their messages with this module only; it does not import
Flower (records are plain mappings here: a Flower ``ConfigRecord`` / ``MetricRecord`` is a
mapping of scalars, an ``ArrayRecord`` a mapping of arrays with ``.numpy()``).

Message layouts (record name: contents):

* query, coordinator -> site: nothing. Site -> coordinator: ``site`` (name, labelled as
  ``"LA,LV"``, ``software``: its installed echofl / flwr / torch / monai versions as JSON) and
  ``counts`` (``num-train``, ``num-val``, ``num-test``):
  :class:`SiteDescription`.
* train, coordinator -> site: ``arrays`` (global weights) and ``config``
  (:class:`TrainInstruction`). Site -> coordinator: ``arrays`` (trained weights) and
  ``metrics`` (``num-examples``, ``train-loss``, ``train-seconds`` and the score keys).
* evaluate, coordinator -> site: ``arrays`` and ``config`` (:class:`EvaluateInstruction`).
  Site -> coordinator: ``metrics`` (``num-examples``, ``loss`` and the score keys, plain and
  ``full-``).
* query.final_model (once, after the last round, when the coordinator signs its models),
  coordinator -> site: ``model-file`` (one uint8 array ``bytes``: ``final.pt`` exactly as
  written) and ``model-card`` (``sidecar``: its signed JSON sidecar): :class:`FinalModel`.
  Site -> coordinator: ``stored`` (``sha256`` of what it verified and kept).

Only what the coordinator decides per round travels in ``config`` (round number, the
structures partially labelled across the federation, the split to score); everything else is
the run config's recipe, which every site reads itself.

Score keys: ``dice-X``, ``n-X`` (images that scored X) and ``area-X`` (predicted / true area)
for X in LV, MYO, LA; ``full-`` prefixed on the full ground truth (synthetic research data).
Every site sends every key (a Flower round needs identical keys): a structure it does not score
has ``n-X = 0`` and aggregation weights by ``n-X``.

Weights travel either as one array per tensor or packed into two flat arrays
(:mod:`common.federation.packing`), in float32 or float16; :func:`decode_weights` restores the
model's names, shapes and dtypes and refuses anything else with :class:`ProtocolError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.federation.packing import PACKED_FLOAT, PACKED_INT, is_packed, pack, unpack
from common.labels import LabelledSet, Structure, format_labelled_set, parse_labelled_set
from common.names import check_name
from common.training.metrics import STRUCTURES, SegmentationScores

ARRAYS, CONFIG, METRICS = "arrays", "config", "metrics"
SITE, COUNTS = "site", "counts"
FINAL_MODEL_ACTION = "final_model"  # message type query.final_model
MODEL_FILE, MODEL_CARD, STORED = "model-file", "model-card", "stored"
MAX_MODEL_BYTES = 512 << 20  # a final model larger than this is refused, not written
SPLITS = ("train", "val", "test")
NUM_EXAMPLES = "num-examples"
FULL = "full-"
SCORE_PREFIXES = ("", FULL)
TRANSFER_DTYPES = ("float32", "float16")


class ProtocolError(ValueError):
    """A message that does not follow the layout above (named field, what was wrong)."""


# -- metric keys ---------------------------------------------------------------------------------
def dice_key(structure: Structure, prefix: str = "") -> str:
    return f"{prefix}dice-{structure.name}"


def count_key(structure: Structure, prefix: str = "") -> str:
    return f"{prefix}n-{structure.name}"


def area_key(structure: Structure, prefix: str = "") -> str:
    return f"{prefix}area-{structure.name}"


def score_keys(prefix: str = "") -> set[str]:
    return {k(s, prefix) for s in STRUCTURES for k in (dice_key, count_key, area_key)}


def scores_to_metrics(scores: SegmentationScores | None, prefix: str = "") -> dict[str, float]:
    """``{prefix}dice-X``, ``{prefix}n-X`` and ``{prefix}area-X`` for every structure (zeros
    where nothing was scored, so every site sends the same keys)."""
    out: dict[str, float] = {}
    for s in STRUCTURES:
        n = 0 if scores is None else scores.count.get(s, 0)
        dice = float(scores.dice[s]) if n else 0.0  # type: ignore[union-attr]
        ratio = scores.area_ratio.get(s, math.nan) if n else math.nan  # type: ignore[union-attr]
        out[dice_key(s, prefix)] = dice
        out[count_key(s, prefix)] = float(n)
        out[area_key(s, prefix)] = float(ratio) if not math.isnan(ratio) else 0.0
    return out


def scored_prefix(metrics: Mapping[str, Any]) -> str:
    """``full-`` when the metrics carry full-ground-truth scores, else the labelled ones."""
    return FULL if float(metrics.get(count_key(Structure.LV, FULL), 0)) > 0 else ""


def scored_dice(metrics: Mapping[str, Any], prefix: str | None = None) -> dict[Structure, float]:
    """Dice of the structures that were scored (``n-X > 0``); ``prefix`` None picks
    :func:`scored_prefix`."""
    prefix = scored_prefix(metrics) if prefix is None else prefix
    return {
        s: float(metrics[dice_key(s, prefix)])
        for s in STRUCTURES
        if float(metrics.get(count_key(s, prefix), 0)) > 0
    }


def mean_dice(metrics: Mapping[str, Any], prefix: str = "") -> float:
    """Mean of the per-structure Dice present in a site's or an aggregate's metrics (NaN when
    none): what the coordinator selects ``best.pt`` by (``prefix=""``: the sites' own labels)."""
    values = list(scored_dice(metrics, prefix).values())
    return float(np.mean(values)) if values else math.nan


def aggregate_metrics(rows: list[Mapping[str, Any]], weight_key: str = NUM_EXAMPLES) -> dict:
    """The sites' metrics combined: Dice and area per structure weighted by how many images
    scored it (``n-X``), counts summed, every other metric weighted by ``weight_key``."""
    if not rows:
        return {}
    out: dict[str, float] = {}
    total = sum(float(r.get(weight_key, 0.0)) for r in rows)
    structure_keys: set[str] = set()
    for prefix in SCORE_PREFIXES:
        for s in STRUCTURES:
            n_key, d_key, a_key = count_key(s, prefix), dice_key(s, prefix), area_key(s, prefix)
            if n_key not in rows[0]:
                continue
            structure_keys |= {n_key, d_key, a_key}
            n = sum(float(r[n_key]) for r in rows)
            out[n_key] = n
            if n > 0:
                out[d_key] = sum(float(r[d_key]) * float(r[n_key]) for r in rows) / n
                out[a_key] = sum(float(r[a_key]) * float(r[n_key]) for r in rows) / n
    for key in rows[0]:
        if key in structure_keys:
            continue
        if key == weight_key:
            out[key] = total
        elif total > 0:
            out[key] = sum(float(r[key]) * float(r.get(weight_key, 0.0)) for r in rows) / total
    return out


def metrics_to_row(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A site's evaluate metrics as a score-table row (:mod:`common.training.scoring`): Dice
    per scored structure, ``area-X``, ``n`` and ``full`` (1.0 on the full ground truth)."""
    prefix = scored_prefix(metrics)
    row: dict[str, float] = {
        "n": float(metrics.get(NUM_EXAMPLES, 0)),
        "full": float(prefix == FULL),
    }
    for s, dice in scored_dice(metrics, prefix).items():
        row[s.name] = dice
        row[f"area-{s.name}"] = float(metrics[area_key(s, prefix)])
    return row


# -- message contents ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SiteDescription:
    """A site's answer to the query: its name, what it annotates, how many images per split."""

    name: str
    labelled: LabelledSet
    counts: dict[str, int] = field(default_factory=dict)
    software: dict[str, str] = field(default_factory=dict)  # installed versions (flwr, torch...)

    def to_records(self) -> dict[str, dict[str, Any]]:
        return {
            SITE: {
                "name": self.name,
                "labelled": ",".join(sorted(s.name for s in self.labelled)),
                "software": json.dumps(self.software, sort_keys=True),
            },
            COUNTS: {f"num-{split}": float(self.counts.get(split, 0)) for split in SPLITS},
        }

    @classmethod
    def from_records(cls, site: Mapping[str, Any], counts: Mapping[str, Any]) -> SiteDescription:
        name = str(site.get("name", ""))
        if not name:
            raise ProtocolError("query reply without a site name")
        try:
            check_name(name)
        except ValueError as exc:
            raise ProtocolError(f"query reply: {exc}") from None
        text = str(site.get("labelled", ""))
        try:
            labelled = parse_labelled_set(text.split(",")) if text else frozenset()
        except ValueError as exc:
            raise ProtocolError(f"query reply of {name!r}: {exc}") from None
        try:
            parsed = {split: int(float(counts.get(f"num-{split}", 0))) for split in SPLITS}
        except (TypeError, ValueError):
            raise ProtocolError(f"query reply of {name!r}: sample counts are not numbers") from None
        try:
            software = json.loads(str(site.get("software", "{}")))
        except json.JSONDecodeError:
            raise ProtocolError(f"query reply of {name!r}: software is not JSON") from None
        if not isinstance(software, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) < 64 for k, v in software.items()
        ):
            raise ProtocolError(f"query reply of {name!r}: software must map names to versions")
        return cls(name=name, labelled=labelled, counts=parsed, software=software)

    def describe(self) -> str:
        return f"{self.name} {format_labelled_set(self.labelled)}"


@dataclass(frozen=True)
class TrainInstruction:
    """What the coordinator decides for one round of local training."""

    server_round: int
    partial: LabelledSet = frozenset()  # partially labelled across the federation
    server_rounds: int | None = None  # the run's rounds (a learning-rate schedule needs them)

    def to_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "server-round": self.server_round,
            "partial-structures": ",".join(s.name for s in sorted(self.partial)),
        }
        if self.server_rounds is not None:
            config["server-rounds"] = self.server_rounds
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrainInstruction:
        if "server-round" not in config:
            raise ProtocolError("train instruction without server-round")
        text = str(config.get("partial-structures", ""))
        try:
            partial = parse_labelled_set(text.split(",")) if text else frozenset()
        except ValueError as exc:
            raise ProtocolError(f"train instruction: partial-structures: {exc}") from None
        rounds = config.get("server-rounds")
        server_round = int(config["server-round"])
        if rounds is not None and not 1 <= server_round <= int(rounds):
            raise ProtocolError(
                f"train instruction: server-round {server_round} outside the run's 1..{rounds}"
            )
        return cls(
            server_round=server_round,
            partial=partial,
            server_rounds=None if rounds is None else int(rounds),
        )


@dataclass(frozen=True)
class EvaluateInstruction:
    """Which split of its data a site scores the global model on."""

    split: str = "val"
    server_round: int = 0

    def to_config(self) -> dict[str, Any]:
        return {"split": self.split, "server-round": self.server_round}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EvaluateInstruction:
        split = str(config.get("split", "val"))
        if split not in SPLITS:
            raise ProtocolError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
        return cls(split=split, server_round=int(config.get("server-round", 0)))


@dataclass(frozen=True)
class FinalModel:
    """The run's final model as the coordinator wrote and signed it: the bytes of its weights
    file and its sidecar (``common.security.checkpoint``). The site verifies both itself."""

    weights: bytes
    sidecar: dict[str, Any]

    def to_records(self) -> dict[str, dict[str, Any]]:
        return {
            MODEL_FILE: {"bytes": np.frombuffer(self.weights, dtype=np.uint8)},
            MODEL_CARD: {"sidecar": json.dumps(self.sidecar, sort_keys=True)},
        }

    @classmethod
    def from_records(cls, files: Mapping[str, Any], card: Mapping[str, Any]) -> FinalModel:
        if set(files) != {"bytes"}:
            raise ProtocolError(f"final model: expected one array 'bytes', got {sorted(files)}")
        data = _numpy(files["bytes"])
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ProtocolError(f"final model: bytes are {data.dtype} {data.shape}, not uint8 (n,)")
        if data.size > MAX_MODEL_BYTES:
            raise ProtocolError(
                f"final model of {data.size} bytes refused (limit {MAX_MODEL_BYTES})"
            )
        try:
            sidecar = json.loads(str(card["sidecar"]))
        except (KeyError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"final model: unreadable sidecar ({exc})") from None
        if not isinstance(sidecar, dict):
            raise ProtocolError("final model: the sidecar is not a JSON object")
        return cls(weights=data.tobytes(), sidecar=sidecar)


# -- weights -------------------------------------------------------------------------------------
def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy"):  # Flower Array
        return np.asarray(value.numpy())
    return np.asarray(value)


def encode_weights(
    state: Mapping[str, Any], *, packed: bool = True, dtype: str = "float32"
) -> dict[str, np.ndarray]:
    """A state dict (tensors or arrays) as it travels: packed into two flat arrays or one array
    per tensor, floating-point values in ``dtype`` (float16 halves the bytes)."""
    if dtype not in TRANSFER_DTYPES:
        raise ValueError(f"transfer dtype must be one of {TRANSFER_DTYPES}, got {dtype!r}")
    arrays = {k: _numpy(v) for k, v in state.items()}
    if packed:
        return pack(arrays, float_dtype=dtype)
    if dtype == "float32":
        return arrays
    return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in arrays.items()}


def decode_weights(
    arrays: Mapping[str, Any],
    reference: Mapping[str, np.ndarray],
    *,
    dtype: str | None = None,
) -> dict[str, np.ndarray]:
    """Received weights -> per-tensor arrays with ``reference``'s names, shapes and dtypes.

    ``reference``: the model's state (names, shapes, dtypes in state-dict order). ``dtype``:
    the transfer dtype the run agreed on; packed weights in another one are refused. Packed
    weights must fit the reference exactly (:class:`ProtocolError` naming the problem);
    per-tensor weights come back with float16 tensors cast to their reference dtype.
    """
    values = {k: _numpy(v) for k, v in arrays.items()}
    if is_packed(values.keys()):
        extra = sorted(set(values) - {PACKED_FLOAT, PACKED_INT})
        if extra or PACKED_INT not in values:
            raise ProtocolError(f"packed weights with unexpected arrays {extra or [PACKED_INT]}")
        got = values[PACKED_FLOAT].dtype
        if dtype is not None and got != np.dtype(dtype):
            raise ProtocolError(f"packed weights are {got}, the run transfers {dtype}")
        if got.kind != "f":
            raise ProtocolError(f"packed weights are {got}, not floating point")
        try:
            return unpack(values, reference)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
    # one array per tensor: float16 comes back to the model's dtype; names, shapes and other
    # dtypes are left to the update validation (fl_server.validation), which names each problem
    return {
        name: value.astype(reference[name].dtype)
        if value.dtype == np.float16 and name in reference and reference[name].dtype.kind == "f"
        else value
        for name, value in values.items()
    }


def reference_of(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A state dict as the ``reference`` :func:`decode_weights` needs."""
    return {k: _numpy(v) for k, v in state.items()}
