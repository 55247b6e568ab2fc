"""The hospital side of echofl: a Flower ClientApp with three thin handlers.

* ``query``: the site's name, labelled set and sample counts per split, nothing else;
* ``train``: load the global weights, train one round with the run's recipe (label dropout on
  the structures the coordinator says are partially labelled), reply weights + scalar metrics
  (``num-examples`` = training images);
* ``evaluate``: Dice per structure and loss of the global weights on one split;
* ``query.final_model``: the run's signed final model, verified against the coordinator's key
  the site configured and kept for ``fl-client predict`` (:mod:`fl_client.models`).

Message layouts are :mod:`common.federation.protocol`'s; the ML is
:mod:`common.federation.site_round`'s. Handlers decode, call, encode. Failures are caught: the
coordinator receives a short reason, the site's log keeps the detail.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from common.config import SiteSpec
from common.data.site_data import SiteData
from common.errors import ConfigError, EchoflError
from common.federation import protocol
from common.federation.protocol import (
    ARRAYS,
    CONFIG,
    METRICS,
    MODEL_CARD,
    MODEL_FILE,
    EvaluateInstruction,
    FinalModel,
    SiteDescription,
    TrainInstruction,
)
from common.federation.run_settings import RunSettings, parse_run_settings
from common.federation.site_round import evaluate_site, train_site
from common.security.pki import load_verify_key
from common.training.loop import resolve_device
from common.training.model import load_unet
from common.training.warmup import TRAINING_IMPORTS, import_now, in_background
from common.version import software
from fl_client.faults import before_training, corrupt, inflate_claims, parse_faults
from fl_client.models import store_final_model
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
    module (:func:`common.training.model.load_unet`), and on CPU the optimising executor trained it
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
    cache = cache_dir_for(context.node_config, settings)
    data = site_data(spec, settings.recipe.preprocess, cache)
    return spec, data.fully_labelled() if settings.full_labels else data


def _global_model(msg: Message, context: Context, settings: RunSettings) -> torch.nn.Module:
    cache = cache_dir_for(context.node_config, settings)
    model = load_unet(settings.recipe.model, cache / "models")
    state = protocol.decode_weights(msg.content[ARRAYS], protocol.reference_of(model.state_dict()))
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    return model


@app.query()
@_guarded
def query(msg: Message, context: Context) -> Message:
    settings, _ = _setup(context)
    spec, data = _data(context, settings)
    counts = {split: len(data.split(split)) for split in protocol.SPLITS}
    site = SiteDescription(spec.name, data.labelled_set, counts, software())
    log.info("site %s: labelled %s", site.describe(), counts)
    if "partition-id" in context.node_config:  # a simulated site: this process lives for the run
        models = cache_dir_for(context.node_config, settings) / "models"
        in_background(  # while the coordinator prepares round 1
            lambda: (import_now(TRAINING_IMPORTS), load_unet(settings.recipe.model, models))
        )
    records = site.to_records()
    content = RecordDict(
        {
            protocol.SITE: ConfigRecord(records[protocol.SITE]),
            protocol.COUNTS: MetricRecord(records[protocol.COUNTS]),
        }
    )
    return Message(content=content, reply_to=msg)


@app.train()
@_guarded
def train(msg: Message, context: Context) -> Message:
    settings, device = _setup(context)
    spec, data = _data(context, settings)
    instruction = TrainInstruction.from_config(msg.content[CONFIG])
    faults = parse_faults(settings.inject_faults)
    before_training(spec.name, instruction.server_round, faults)
    model = _global_model(msg, context, settings)
    reference = {k: v.clone() for k, v in model.state_dict().items()} if faults else {}
    metrics = train_site(
        model, data.split("train"), settings.recipe, instruction, seed=settings.seed, device=device
    )
    state = model.state_dict()
    if faults:
        state = corrupt(spec.name, state, faults, reference)
    log.info(
        "site %s round %d: trained %d images, loss %.4f",
        spec.name,
        instruction.server_round,
        int(metrics[protocol.NUM_EXAMPLES]),
        metrics["train-loss"],
    )
    arrays = protocol.encode_weights(
        state, packed=settings.pack_weights, dtype=settings.transfer_dtype
    )
    content = RecordDict(
        {
            ARRAYS: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            METRICS: MetricRecord(inflate_claims(spec.name, metrics, faults)),
        }
    )
    return Message(content=content, reply_to=msg)


@app.query(protocol.FINAL_MODEL_ACTION)
@_guarded
def final_model(msg: Message, context: Context) -> Message:
    _site_log(context.node_config.get("log-file"))
    key_file = str(context.node_config.get("model-verify-key", ""))
    models_dir = str(context.node_config.get("models-dir", ""))
    if not key_file or not models_dir:
        raise ConfigError(
            "site config", "no model_verify_key / models_dir: the final model is not stored"
        )
    model = FinalModel.from_records(msg.content[MODEL_FILE], msg.content[MODEL_CARD])
    stored = store_final_model(model, load_verify_key(Path(key_file)), Path(models_dir))
    log.info("final model of run %s verified and stored: %s", model.sidecar.get("run"), stored)
    content = RecordDict({protocol.STORED: ConfigRecord({"sha256": model.sidecar["sha256"]})})
    return Message(content=content, reply_to=msg)


@app.evaluate()
@_guarded
def evaluate(msg: Message, context: Context) -> Message:
    settings, device = _setup(context)
    spec, data = _data(context, settings)
    instruction = EvaluateInstruction.from_config(msg.content[CONFIG])
    model = _global_model(msg, context, settings)
    metrics = evaluate_site(model, data.split(instruction.split), settings.recipe, device=device)
    metrics = inflate_claims(spec.name, metrics, parse_faults(settings.inject_faults))
    return Message(content=RecordDict({METRICS: MetricRecord(metrics)}), reply_to=msg)
