"""The hospital side of echofl: a Flower ClientApp with three thin handlers.

* ``query``: the site's name, labelled set and sample counts per split, nothing else;
* ``train``: load the global weights, train the configured local epochs with the adaptive loss
  and label dropout on the structures and probability the coordinator sent, reply weights +
  scalar metrics (``num-examples`` = training images);
* ``evaluate``: Dice per structure and loss of the global weights on one split (``val`` by
  default, ``test`` when the config asks).

The ML lives in :mod:`common.local_training`; handlers decode, call, encode. Failures are
caught: the coordinator receives a short reason, the site's log keeps the detail.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from common.cache import SiteData
from common.config import SiteSpec
from common.errors import EchoflError
from common.labels import format_labelled_set, parse_labelled_set
from common.local_training import LocalTrainSettings, evaluate_local, round_seed, train_local
from common.model import load_unet
from common.packing import is_packed, pack, unpack
from common.run_settings import RunSettings, parse_run_settings
from common.training import resolve_device
from fl_client.faults import before_training, corrupt, parse_faults
from fl_client.site import cache_dir_for, resolve_site, site_data

log = logging.getLogger("echofl.client")
app = ClientApp()

ERROR_CODE_SITE = 4001  # a problem with the site's data or configuration
ERROR_CODE_INTERNAL = 4002  # anything else


def _guarded(
    handler: Callable[[Message, Context], Message],
) -> Callable[[Message, Context], Message]:
    """Turn an exception into an error reply with a short reason (no paths, no traceback).

    The handler runs with TorchScript's graph optimisation off: the network is a TorchScript
    module (:func:`common.model.load_unet`), and on CPU the optimising executor trained it
    10-40% slower than eager PyTorch, while without it the steps are bitwise those of eager.
    """

    @functools.wraps(handler)
    def wrapper(msg: Message, context: Context) -> Message:
        try:
            with torch.jit.optimized_execution(False):
                return handler(msg, context)
        except EchoflError as exc:
            log.exception("site error in %s", handler.__name__)
            return Message(
                Error(
                    ERROR_CODE_SITE, f"{type(exc).__name__} on the site (details in the site's log)"
                ),
                reply_to=msg,
            )
        except Exception as exc:
            log.exception("failure in %s", handler.__name__)
            return Message(
                Error(
                    ERROR_CODE_INTERNAL,
                    f"{type(exc).__name__} on the site (details in the site's log)",
                ),
                reply_to=msg,
            )

    return wrapper


def _setup(context: Context) -> tuple[RunSettings, torch.device]:
    _site_log(context.node_config.get("log-file"))
    settings = parse_run_settings(context.run_config)
    if settings.client_threads:
        torch.set_num_threads(settings.client_threads)
    return settings, resolve_device(settings.device)


def for_transfer(
    state: dict[str, torch.Tensor], dtype: str, packed: bool = False
) -> dict[str, Any]:
    """The weights as they travel: packed into two flat arrays (``pack-weights``, default)
    and/or in float16 (``transfer-dtype``: half the upload; the coordinator casts back to
    float32 before validating and averaging)."""
    if packed:
        return {k: torch.from_numpy(v) for k, v in pack(state, float_dtype=dtype).items()}
    if dtype != "float16":
        return state
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def _site_log(path: object) -> None:
    """Deployment: each message runs in a fresh process; send this process's log records
    (the full detail of any failure) to the site's own log file."""
    if not path or any(getattr(h, "_echofl", False) for h in log.handlers):
        return
    handler = logging.FileHandler(str(path))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._echofl = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def _data(context: Context, settings: RunSettings) -> tuple[SiteSpec, SiteData]:
    spec = resolve_site(context.node_config, settings)
    data = site_data(spec, settings.preprocess, cache_dir_for(context.node_config, settings))
    return spec, data.fully_labelled() if settings.full_labels else data


def _global_model(msg: Message, context: Context, settings: RunSettings) -> torch.nn.Module:
    model = load_unet(settings.model, cache_dir_for(context.node_config, settings) / "models")
    record = msg.content["arrays"]
    if is_packed(record.keys()):
        reference = {k: v.numpy() for k, v in model.state_dict().items()}
        arrays = unpack({k: v.numpy() for k, v in record.items()}, reference)
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in arrays.items()})
    else:
        model.load_state_dict(record.to_torch_state_dict())
    return model


@app.query()
@_guarded
def query(msg: Message, context: Context) -> Message:
    settings, _ = _setup(context)
    spec, data = _data(context, settings)
    labelled = sorted(s.name for s in data.labelled_set)
    counts = {f"num-{split}": float(len(data.split(split))) for split in ("train", "val", "test")}
    log.info("site %s: labelled %s, %s", spec.name, format_labelled_set(data.labelled_set), counts)
    content = RecordDict(
        {
            "site": ConfigRecord({"name": spec.name, "labelled": ",".join(labelled)}),
            "counts": MetricRecord(counts),
        }
    )
    return Message(content=content, reply_to=msg)


@app.train()
@_guarded
def train(msg: Message, context: Context) -> Message:
    settings, device = _setup(context)
    spec, data = _data(context, settings)
    config = msg.content["config"]
    partial_text = str(config.get("partial-structures", ""))
    server_round = int(config["server-round"])
    local = LocalTrainSettings(
        epochs=int(config.get("local-epochs", settings.local_epochs)),
        batch_size=int(config.get("batch-size", settings.batch_size)),
        lr=float(config.get("lr", settings.lr)),
        loss=str(config.get("loss", settings.loss)),  # type: ignore[arg-type]
        dice_weight=float(config.get("dice-weight", settings.dice_weight)),
        augment=bool(config.get("augment", settings.augment)),
        dropout_p=float(config.get("label-dropout-p", 0.0)),
        partial=parse_labelled_set(partial_text.split(",")) if partial_text else frozenset(),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        seed=round_seed(int(config.get("seed", settings.seed)), server_round, spec.name),
    )
    faults = parse_faults(settings.inject_faults)
    before_training(spec.name, server_round, faults)
    model = _global_model(msg, context, settings)
    reference = {k: v.clone() for k, v in model.state_dict().items()} if faults else {}
    metrics = train_local(model, data.split("train"), local, device=device)
    state = corrupt(spec.name, model.state_dict(), faults, reference) if faults else None
    log.info(
        "site %s round %d: trained %d images, loss %.4f",
        spec.name,
        server_round,
        int(metrics["num-examples"]),
        metrics["train-loss"],
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord(
                for_transfer(
                    state if state is not None else model.state_dict(),
                    settings.transfer_dtype,
                    settings.pack_weights,
                )
            ),
            "metrics": MetricRecord(metrics),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
@_guarded
def evaluate(msg: Message, context: Context) -> Message:
    settings, device = _setup(context)
    _, data = _data(context, settings)
    config = msg.content["config"]
    split = str(config.get("split", "val"))
    if split not in ("train", "val", "test"):
        raise EchoflError(f"unknown split {split!r}")
    model = _global_model(msg, context, settings)
    metrics = evaluate_local(
        model,
        data.split(split),
        device=device,
        loss=settings.loss,
        dice_weight=settings.dice_weight,
    )
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
