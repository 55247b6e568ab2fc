"""One task of the site's SuperNode, run under the site's pin check.

Flower 1.42 turns every message a site receives into a *task* of its SuperNode; in process
isolation mode an executor takes the task (with a one-time token) from the SuperNode's Runtime
API and runs it. echofl's site worker (:mod:`fl_client.worker`) is that executor, and this
module is what it runs for each task, in a process of its own (forked from the worker, or a
fresh interpreter):

1. pull the task's input (message, context, run, app bundle bytes) with the token;
2. **pin check**: the SHA-256 of the bundle's bytes must be one of the site's
   ``trusted_apps``. Otherwise the task is refused: nothing of the bundle is unpacked or
   imported, the refusal goes to the site's audit log with the hash, and the coordinator gets
   an error reply that names the hash and the site;
3. otherwise unpack the bundle (Flower's installer, which checks the files' hashes; all at once,
   see :mod:`fl_client.app_install`), make sure the app's own packages are imported *from the
   bundle* (a forked worker has the site's installed copy of echofl in memory), load its
   ClientApp, check that its module's file is inside the bundle's folder, and run it;
4. push the reply and the task's final status; record the outcome in the audit log.

The steps mirror Flower's ``flwr-clientapp`` (``flwr.supernode.runtime.run_clientapp``),
built from the same Flower functions, with the pin check inserted before step 3.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import signal
import sys
import time
from collections.abc import Collection
from pathlib import Path

from common.audit import AuditLog
from common.timing import Stopwatch
from fl_client.app_install import check_origin, install_app

# exit codes of a task process (the worker audits anything else as abnormal)
COMPLETED, REFUSED, FAILED, STOPPED = 0, 10, 11, 12
REFUSED_MARK = "not in trusted_apps"  # the coordinator sees it in the error reply


class TaskStopped(Exception):
    """The site worker stopped this task (its deadline passed, or the site is shutting down)."""


def refusal_reason(site: str, digest: str, app: str) -> str:
    return (
        f"site {site} refused to execute app {app} (bundle sha256 {digest}): it is {REFUSED_MARK} "
        "of the site's configuration, so none of its code was run"
    )


def app_modules(app_dir: Path) -> set[str]:
    """Top-level module and package names an unpacked app bundle provides."""
    names = set()
    for entry in app_dir.iterdir():
        if entry.is_dir() and (entry / "__init__.py").is_file():
            names.add(entry.name)
        elif entry.suffix == ".py":
            names.add(entry.stem)
    return names


def forget_modules(names: Collection[str]) -> list[str]:
    """Drop already-imported modules of these top-level names, so the next import reads the
    bundle's files, not the copies a forked worker inherited."""
    dropped = [m for m in sys.modules if m.split(".", 1)[0] in names]
    for name in dropped:
        del sys.modules[name]
    importlib.invalidate_caches()
    return dropped


def _stop(signum: int, _frame: object) -> None:
    raise TaskStopped(f"stopped by the site worker (signal {signal.Signals(signum).name})")


def run_task(
    runtime_address: str, token: str, site: str, trusted: Collection[str], audit: AuditLog
) -> int:
    """Run one task; the return value is the process's exit code (module constants)."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.clientapp.utils import get_load_client_app_fn
    from flwr.common.config import get_project_dir
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    started = time.perf_counter()
    retry = make_simple_http_retry_invoker()
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_address,
        insecure=True,  # the SuperNode's Runtime API, on loopback
        root_certificates=None,
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ],
        retry_invoker=retry,
    )
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    message = context = reply = None
    status, details, code = SubStatus.FAILED, "task failed before its input was read", FAILED
    facts: dict[str, object] = {"site": site}
    clock = Stopwatch()  # seconds per step, audited (where a task's time goes)
    loaded_from = ""
    try:
        heartbeat.start()
        message, context, run, fab = pull_task_input(client)
        clock.lap("input")
        digest = hashlib.sha256(fab.content).hexdigest()  # of the bytes, not the declared hash
        app = f"{run.fab_id} {run.fab_version}".strip() or "(unnamed)"
        facts.update(
            run=run.run_id,
            app=app,
            app_sha256=digest,
            message_type=message.metadata.message_type,
            message_id=message.metadata.message_id,
            # from the coordinator creating the message to this task holding it: the SuperLink,
            # the SuperNode's poll, the worker's poll, the fork, the pull
            queued_s=round(time.time() - float(message.metadata.created_at), 3),
        )
        if digest not in trusted:
            details = refusal_reason(site, digest, app)
            reply = Message(Error(code=ErrorCode.INVALID_FAB, reason=details), reply_to=message)
            audit.record("task-refused", reason=details, **facts)
            print(f"[fl-client {site}] REFUSED: {details}", file=sys.stderr, flush=True)
            code = REFUSED
            return code
        app_dir = install_app(
            fab.content, digest, get_project_dir(run.fab_id, run.fab_version, digest)
        )
        clock.lap("unpack")
        forget_modules(app_modules(app_dir))
        load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        client_app = load(run.fab_id, run.fab_version, digest)
        loaded_from = _clientapp_file(app_dir)
        check_origin(loaded_from, app_dir)  # the bundle's code, or nothing
        clock.lap("load")
        reply = client_app(message=message, context=context)
        clock.lap("app")
        status, details, code = SubStatus.COMPLETED, "", COMPLETED
        return code
    except TaskStopped as exc:
        details, code = str(exc), STOPPED
        if message is not None:
            error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details)
            reply = Message(error, reply_to=message)
        return code
    except Exception as exc:  # the app's error: reported to the coordinator, as Flower does
        details = f"{type(exc).__name__}: {exc}"
        code = FAILED
        if message is not None:
            error_code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            reply = Message(Error(code=error_code, reason=details), reply_to=message)
        import traceback

        traceback.print_exc()
        return code
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish reporting, then exit
        retry.max_tries = 3
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
            push_task_output(client=client, context=context, sub_status=status, details=details)
            clock.lap("reply")
        except Exception as exc:
            print(f"[fl-client {site}] could not report the task: {exc}", file=sys.stderr)
        if code != REFUSED:
            outcome = {COMPLETED: "completed", STOPPED: "stopped"}.get(code, "failed")
            audit.record(
                # no message, so no app: e.g. the run was stopped before the SuperNode handed
                # the task its input, and the task was stopped waiting for it
                "task-executed" if message is not None else "task-without-input",
                outcome=outcome,
                details=details,
                seconds=round(time.perf_counter() - started, 3),
                phases=clock.steps,
                app_module=loaded_from,
                **facts,
            )
        if heartbeat.is_running:
            heartbeat.stop()
        client.close()


# The SuperNode creates a task as soon as a message arrives, before it has downloaded the
# message's arrays from the coordinator; a task that asks for them too early is told to retry
# after Flower's default backoff of 1 s (doubling). A warm task starts within ~0.1 s, so it
# asks again after 0.05 s instead (doubling up to 0.5 s).
def pull_task_input(client):  # type: ignore[no-untyped-def]
    """Flower's ``run_clientapp.pull_task_input``, with the shorter retry above."""
    from flwr.app import Message
    from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
    from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
    from flwr.proto.runtime_pb2 import (  # pylint: disable=E0611
        PullAppMessagesRequest,
        PullTaskInputRequest,
    )
    from flwr.supercore.inflatable.inflatable_protobuf_utils import (
        make_confirm_message_received_fn_protobuf,
        make_pull_object_fn_protobuf,
    )
    from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
    from flwr.supercore.task_identity import TaskIdentity

    from fl_client import supernode

    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    run = run_from_proto(res.run)
    fab = fab_from_proto(res.fab)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("no message for this task in the SuperNode's Runtime API")
    node = Node(node_id=context.node_id)
    tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree,
        make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(
            client.ConfirmMessageReceived, node, context.run_id
        ),
        return_type=Message,
        initial_backoff=supernode.PULL_BACKOFF_S,
        backoff_cap=supernode.PULL_BACKOFF_CAP_S,
    )
    message.metadata.__dict__["_message_id"] = tree.object_id  # as Flower sets it
    return message, context, run, fab


def _clientapp_file(app_dir: Path) -> str:
    """Where the bundle's ClientApp module (its pyproject's ``clientapp`` reference) was loaded
    from: a file in the bundle's folder, when all is well."""
    from flwr.common.config import get_project_config

    ref = get_project_config(app_dir)["tool"]["flwr"]["app"]["components"]["clientapp"]
    module = sys.modules.get(ref.partition(":")[0])
    return str(getattr(module, "__file__", "") or "")


def main(argv: list[str] | None = None) -> int:
    """``python -m fl_client.task --config SITE.toml``: one task in a fresh interpreter (the
    worker's ``task_start = "spawn"``); the task token is read from standard input."""
    from fl_client.site_config import load_site_config

    parser = argparse.ArgumentParser(prog="fl_client.task")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--site", required=True)
    args = parser.parse_args(argv)
    config = load_site_config(args.site, args.config)
    token = sys.stdin.readline().strip()
    return run_task(
        config.runtime_address,
        token,
        config.site,
        frozenset(config.trusted_apps),
        AuditLog(config.audit_log),
    )


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
