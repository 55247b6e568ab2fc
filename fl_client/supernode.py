"""``python -m fl_client.supernode [flower-supernode arguments]``: Flower's SuperNode, asking the
coordinator for messages more often while idle.

Flower 1.42's SuperNode (``flwr.supernode.start_client_internal``) sleeps a fixed 3 s whenever it
asked the SuperLink for a message and there was none, and 0.5 s between looks for a finished
reply: a message sent to an idle site waits 0-3 s before the site even sees it (1.5 s on average,
for every message of every round), and a finished reply waits 0-0.5 s before it is sent. There is
no setting for either. This launcher replaces the ``time`` that module sees with one whose
``sleep`` waits at most ``ECHOFL_POLL_S`` seconds between asks to the SuperLink (``fl-client``
sets it from the site config's ``poll_interval_s``, default 0.5) and at most 0.05 s between
looks at the SuperNode's own state (local, no request). Likewise, when
the SuperNode sees a message before the coordinator has finished uploading its arrays, Flower
retries the download after 1 s (doubling); here after 0.05 s (doubling up to 0.5 s). Then it
runs Flower's own ``flower-supernode`` entry point unchanged: same arguments, same behaviour,
same exit codes. Nothing else of Flower is touched. ``tests/deploy/test_supernode_launcher.py``
checks that the 1.42 source still has what this shortens.
"""

from __future__ import annotations

import functools
import os
import sys
import time as _time
import types

POLL_ENV = "ECHOFL_POLL_S"
PULL_BACKOFF_S, PULL_BACKOFF_CAP_S = 0.05, 0.5  # Flower's defaults: 1 s and 10 s


LOCAL_LOOK_S = 0.05  # between looks at the SuperNode's own state (no network)
LOCAL_WAITS_BELOW_S = 1.0  # Flower's local waits are 0.5 s; its network wait is 3 s


def prompt_time(poll_s: float, local_s: float = LOCAL_LOOK_S) -> types.SimpleNamespace:
    """The ``time`` module, with ``sleep`` capped: Flower's 3 s idle wait between asks to the
    SuperLink (a network request) at ``poll_s``, its 0.5 s waits between looks at its own state
    for a finished reply (in memory, no network) at ``local_s``."""

    def sleep(seconds: float) -> None:
        cap = local_s if seconds < LOCAL_WAITS_BELOW_S else poll_s
        _time.sleep(min(seconds, cap))

    names = {n: getattr(_time, n) for n in dir(_time) if not n.startswith("__")}
    return types.SimpleNamespace(**{**names, "sleep": sleep})


def main() -> None:
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli.flower_supernode import flower_supernode

    poll_s = float(os.environ.get(POLL_ENV, "0.5"))
    loop.time = prompt_time(poll_s)  # type: ignore[assignment]
    loop.pull_objects = functools.partial(  # type: ignore[assignment]
        loop.pull_objects, initial_backoff=PULL_BACKOFF_S, backoff_cap=PULL_BACKOFF_CAP_S
    )
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
