"""Modules that a process's first training step or first network would import on the spot,
imported ahead of time by the processes that live long enough to gain from it.

* ``TRAINING_IMPORTS``: ``torch.optim.Optimizer.__init__`` imports ``torch._dynamo`` on its
  first call (torch 2.13; ~800 modules, sympy among them): 1.5-1.7 s of CPU and ~70 MB in every
  process that builds its first optimiser. The site worker imports it once, so that the tasks it
  forks do not (a deployed site trains in a fresh task every round); a simulated site (a Ray
  actor that lives for the run) imports it in the background after its query, while the
  coordinator prepares the first round, and loads (or, the first time for a cache, builds) its
  TorchScript network then too (:func:`common.training.model.load_unet`).
* ``NETWORK_IMPORTS``: MONAI, which :func:`common.training.model.build_unet` imports (~2-3 s);
  the ServerApp imports it in the background while the sites start and answer their query.

Only *when* a module is imported changes, never what runs: the numbers are the same.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Callable, Iterable

TRAINING_IMPORTS = ("torch._dynamo",)
NETWORK_IMPORTS = ("monai.networks.nets",)

log = logging.getLogger("echofl.warmup")


def import_now(names: Iterable[str]) -> None:
    for name in names:
        importlib.import_module(name)


def _quietly(work: Callable[[], object]) -> None:
    try:
        work()
    except Exception:  # whoever needs it later does it again and reports the failure properly
        log.debug("warm-up step failed", exc_info=True)


def in_background(work: Callable[[], object]) -> threading.Thread:
    """Run ``work`` in a daemon thread; its failure is only logged (the caller's own later
    call of the same step raises it where it is handled)."""
    thread = threading.Thread(target=_quietly, args=(work,), name="echofl-warmup", daemon=True)
    thread.start()
    return thread


def import_in_background(names: Iterable[str]) -> threading.Thread | None:
    """Import ``names`` in a daemon thread (an importer that needs one meanwhile waits for it:
    Python locks each module while it is imported); ``None`` when all are imported already."""
    missing = tuple(n for n in names if n not in sys.modules)
    if not missing:
        return None
    return in_background(lambda: import_now(missing))


__all__ = [
    "NETWORK_IMPORTS",
    "TRAINING_IMPORTS",
    "import_in_background",
    "import_now",
    "in_background",
]
