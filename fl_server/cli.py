"""``fl-server``: the coordinator's tool.

    fl-server init --home H --host coordinator.example.org --site A --site B --site C
    fl-server start --home H                  # the SuperLink: TLS, node auth, state on disk
    fl-server register --home H --site A      # allow a site's key (unregister to revoke)
    fl-server status --home H                 # sites online, runs
    fl-server run --home H --rounds 10 [--run-config "label-dropout-p=0.5 ..."]
    fl-server verify CHECKPOINT --key H/pki/signing/model-signing.pub
    fl-server add-site --home H --site D [--rotate]
    fl-server firewall --home H

Every command that talks to the SuperLink goes through Flower's own CLI (``flwr``) with a
connection file in ``<home>/flwr`` (loopback + the federation's CA).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import tomli_w
from cryptography.hazmat.primitives import serialization

from common.app_bundle import stage_app
from common.errors import ConfigError, EchoflError
from common.federation.run_settings import parse_run_settings
from common.files import write_atomic, write_secret
from common.names import run_name_arg, site_name_arg
from common.security.checkpoint import load_checkpoint
from common.security.pki import (
    add_site_keys,
    check_ca_certificate,
    check_signed_by,
    init_pki,
    load_certificate,
    load_signing_key,
    load_verify_key,
    make_server_cert,
)
from common.version import add_version
from fl_server import proxy
from fl_server.audit import app_digest, file_digest
from fl_server.coordinator import CONNECTION, DEFAULT_APP_DIR, CoordinatorHome
from fl_server.metrics_log import absolute_tracking_uri

EXPOSED = """\
WARNING: --expose-control-api: the SuperLink itself listens on {host}:{port}. It serves the
Fleet API AND the Control API, which has NO authentication in open-source Flower: anyone who
reaches {host}:{port} can register a key and launch a run whose code executes on this
coordinator (which holds the CA and checkpoint-signing keys) and inside every hospital that
runs it. Use it only on a network where nobody but the coordinator's operators and the sites'
SuperNodes can reach that port. The default (no flag) publishes only the Fleet API through a
fleet-only proxy and keeps the SuperLink on loopback.
"""

FIREWALL = """\
Firewall / exposure rules for this coordinator (the sites' port {port}):

  * Sites need ONLY the Fleet API: allow inbound TCP {port} from the hospitals' addresses,
    and only for the URL paths /v1/fleet/* (plus /health if you monitor it).
  * The Control API (/v1/control/*: submitting runs, registering keys) has NO authentication in
    open-source Flower: whoever reaches it can push code that every site executes. Keep it on
    the coordinator's own admin network.
  * The Runtime API (/v1/runtime/*) is for the coordinator's own processes (ServerApp): never
    expose it.
  The SuperLink serves all three on one port, so bind it to 127.0.0.1 or an internal address
  and publish only /v1/fleet/ through a path-filtering TLS reverse proxy
  (deploy/nginx/fleet-only.conf), or give sites a network path that cannot reach the others.
  Sites open no inbound port: a site's SuperNode only connects out to the coordinator.
"""


def _say(message: str) -> None:
    print(f"[fl-server] {message}", flush=True)


def _flwr_env(home: CoordinatorHome) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(home.flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        }
    )
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _flwr(home: CoordinatorHome, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    home.write_connection(home.config().control_port)
    proc = subprocess.run(
        ["flwr", *args], env=_flwr_env(home), capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise EchoflError(
            f"flwr {' '.join(args[:2])} failed: " + (proc.stdout + proc.stderr).strip()[-800:]
        )
    return proc


def site_template(site: str, coordinator: str) -> str:
    """A hospital's config template; values written by a TOML writer, the guidance as comments."""
    identity = tomli_w.dumps(
        {
            "site": site,
            "coordinator": coordinator,
            "ca_certificate": "ca.crt",
            "private_key": "site.key",
            # the final model the coordinator sends is kept only if it verifies with this key
            "model_verify_key": "model-signing.pub",
        }
    )
    return (
        f"# echofl site configuration for {site} (see docs/hospital-quickstart.md).\n"
        + identity
        + """# Fill these in: the dataset in its native layout and its format
# (camus-nifti | camus-mhd | echonet-dynamic | hmc-qu | folder).
data_dir = "/path/to/your/dataset"
format = "camus-nifti"
# labelled = ["LV", "MYO", "LA"]   # optional: the structures your masks annotate
cache_dir = "cache"              # preprocessing cache (absolute paths under a service manager)
flwr_home = "flwr"               # where Flower unpacks the app it receives (must be writable)
runtime_port = 9094
log_file = "logs/fl-client.log"
audit_log = "logs/audit.jsonl"   # every task this site executed or refused, with the app's hash
models_dir = "models"            # the verified final models, for `fl-client predict`
# The only app bundles this site executes (SHA-256). Compute the hash yourself from the echofl
# release you reviewed (`fl-server app-hash --app-dir /path/to/echofl`) and check that it is the
# one the coordinator announces; until an app is listed here, every task is refused.
trusted_apps = []
"""
    )


def write_bundle(home: CoordinatorHome, site: str, host: str, port: int) -> Path:
    """What a hospital receives: the CA certificate, its key, the model-signing public key and a
    config template."""
    bundle = home.bundle(site)
    bundle.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(home.pki.ca_cert, bundle / "ca.crt")
    write_atomic(bundle / "site.key", home.pki.site_key(site).read_bytes(), private=True)
    shutil.copyfile(home.pki.site_pub(site), bundle / "site.pub")
    shutil.copyfile(home.pki.signing_pub, bundle / "model-signing.pub")
    write_atomic(bundle / f"{site}.toml", site_template(site, f"{host}:{port}").encode())
    return bundle


def cmd_init(args: argparse.Namespace) -> int:
    home = CoordinatorHome(args.home)
    if home.config_file.exists() and not args.force:
        raise ConfigError(home.config_file, "already initialised (use --force to start over)")
    app_dir = (args.app_dir or DEFAULT_APP_DIR).resolve()
    check_app_dir(app_dir)  # before anything is written
    home.root.mkdir(parents=True, exist_ok=True)
    init_pki(home.pki.root, args.host, args.site, force=args.force)
    if args.superlink_port == args.port and not args.expose_control_api:
        raise ConfigError(
            home.config_file, f"--superlink-port {args.superlink_port} is the sites' --port"
        )
    config = {
        "hosts": args.host,
        "listen_host": args.listen_host,
        "port": args.port,
        "superlink_port": args.superlink_port,
        "expose_control_api": args.expose_control_api,
        "min_sites": args.min_sites,
        "app_dir": str(app_dir),
    }
    write_atomic(home.config_file, tomli_w.dumps(config).encode())
    for site in args.site:
        write_bundle(home, site, args.host[0], args.port)
    _say(
        f"initialised {home.root}: CA, server certificate for {', '.join(args.host)} "
        "(+127.0.0.1, ::1), checkpoint-signing key"
    )
    for site in args.site:
        _say(
            f"  site {site}: give the hospital {home.bundle(site)} (ca.crt, site.key, "
            f"model-signing.pub, {site}.toml); then: fl-server register --home {home.root} "
            f"--site {site}"
        )
    if args.expose_control_api:
        print(EXPOSED.format(host=args.listen_host, port=args.port))
    else:
        print(FIREWALL.format(port=args.port))
    return 0


def cmd_add_site(args: argparse.Namespace) -> int:
    home = CoordinatorHome(args.home)
    config = home.config()
    if args.rotate and args.site in home.registered():
        _unregister(home, args.site)
    add_site_keys(home.pki, args.site, force=args.rotate)
    write_bundle(home, args.site, config.hosts[0], config.port)
    _say(
        f"site {args.site}: new key pair; bundle in {home.bundle(args.site)}; "
        f"now run: fl-server register --home {home.root} --site {args.site}"
    )
    return 0


def superlink_command(home: CoordinatorHome) -> list[str]:
    config = home.config()
    pki = home.pki
    check_signed_by(
        load_certificate(pki.server_cert, what="server certificate"),
        check_ca_certificate(pki.ca_cert),
        pki.server_cert,
    )
    # Flower's flower-superlink, or the same with its per-round traffic in memory (see there)
    launcher = (
        [sys.executable, "-m", "fl_server.superlink"]
        if config.message_store == "memory"
        else ["flower-superlink"]
    )
    return [
        *launcher,
        "--ssl-ca-certfile",
        str(pki.ca_cert),
        "--ssl-certfile",
        str(pki.server_cert),
        "--ssl-keyfile",
        str(pki.server_key),
        "--enable-supernode-auth",
        "--database",
        str(home.database),
        "--disable-runtime-dependency-installation",
        "--host",
        config.superlink_address[0],
        "--port",
        str(config.superlink_address[1]),
        "--log-file",
        str(home.log_file),
        # ServerApps are started by the SuperExec below, which holds the shared secret: the
        # SuperLink's Runtime API gives a task to nobody else
        "--isolation",
        "process",
        "--superexec-auth-secret-file",
        str(home.superexec_secret),
    ]


def superexec_command(home: CoordinatorHome) -> list[str]:
    """Flower's own SuperExec: takes the SuperLink's ServerApp tasks (signed with the secret)
    and runs each in a ``flwr-serverapp`` process, connecting over TLS on loopback."""
    return [
        "flower-superexec",
        "--runtime-api-address",
        f"127.0.0.1:{home.config().superlink_address[1]}",
        "--root-certificates",
        str(home.pki.ca_cert),
        "--superexec-auth-secret-file",
        str(home.superexec_secret),
    ]


def proxy_server_block(home: CoordinatorHome) -> str:
    config, pki = home.config(), home.pki
    return proxy.server_block(
        listen_host=config.listen_host,
        port=config.port,
        superlink_port=config.superlink_port,
        server_name=" ".join(config.hosts),
        server_cert=pki.server_cert,
        server_key=pki.server_key,
        ca_cert=pki.ca_cert,
    )


def cmd_start(args: argparse.Namespace) -> int:
    """The SuperLink (loopback), Flower's SuperExec for its ServerApps (with a fresh shared
    secret) and the fleet-only proxy (the sites' address), supervised: SIGTERM/SIGINT stop
    them all; when one ends, the others are stopped and its exit code returned. With
    ``expose_control_api`` no proxy: the SuperLink itself listens on the sites' address."""
    home = CoordinatorHome(args.home)
    config = home.config()
    command = superlink_command(home)
    home.database.parent.mkdir(parents=True, exist_ok=True)
    home.log_file.parent.mkdir(parents=True, exist_ok=True)
    home.write_connection(config.control_port)
    write_secret(home.superexec_secret)
    env = _flwr_env(home)
    if config.expose_control_api:
        print(EXPOSED.format(host=config.listen_host, port=config.port), flush=True)
        _say(f"starting the SuperLink on {config.listen_host}:{config.port} (Control API OPEN)")
        return supervise([command, superexec_command(home)], env)
    conf = proxy.write_main_config(home.proxy_dir, home.root, proxy_server_block(home))
    nginx = proxy.nginx_command(conf, home.proxy_dir)
    check = subprocess.run([*nginx[:-2], "-t"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise ConfigError(conf, "nginx refuses the proxy configuration: " + check.stderr.strip())
    _say(
        f"starting the SuperLink on 127.0.0.1:{config.superlink_port} (TLS, node "
        f"authentication, state {home.database}) and the fleet-only proxy on "
        f"{config.listen_host}:{config.port} (nginx; {conf})"
    )
    print(FIREWALL.format(port=config.port), flush=True)
    return supervise([command, superexec_command(home), nginx], env)


def supervise(commands: list[list[str]], env: dict[str, str]) -> int:
    """Run ``commands`` side by side until one ends or a stop signal arrives; stop the rest."""
    import signal
    import time

    procs = [subprocess.Popen(c, env=env) for c in commands]
    stopping = {"signal": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stopping["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    while not stopping["signal"] and all(p.poll() is None for p in procs):
        time.sleep(0.2)
    ended = next((p for p in procs if p.poll() is not None), None)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 20
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if ended is not None and not stopping["signal"]:
        _say(f"{Path(ended.args[0]).name} ended (exit {ended.returncode}); stopped the rest")
        return ended.returncode or 1
    return 0


def cmd_proxy_config(args: argparse.Namespace) -> int:
    """The proxy's server block, for a system nginx (http context) instead of fl-server start's."""
    print(proxy_server_block(CoordinatorHome(args.home)), end="")
    return 0


def _json_reply(proc: subprocess.CompletedProcess, what: str) -> dict:
    """The JSON object a ``flwr ... --format json`` command printed (the whole output, or its
    last line that is one)."""
    for line in [proc.stdout, *reversed(proc.stdout.strip().splitlines())]:
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(reply, dict):
            return reply
    raise EchoflError(f"{what}: no JSON reply from flwr: {(proc.stdout + proc.stderr)[-300:]}")


def cmd_register(args: argparse.Namespace) -> int:
    home = CoordinatorHome(args.home)
    pub = home.pki.site_pub(args.site)
    if not pub.is_file():
        raise ConfigError(pub, f"no public key for site {args.site} (fl-server add-site first)")
    proc = _flwr(
        home, "supernode", "register", str(pub), CONNECTION, "--name", args.site, "--format", "json"
    )
    reply = _json_reply(proc, f"registering site {args.site}")
    if not reply.get("success") or not isinstance(reply.get("node-id"), int):
        raise EchoflError(f"flwr supernode register did not register site {args.site}: {reply}")
    node = reply["node-id"]
    registry = home.registered() | {args.site: node}
    write_atomic(home.registry, json.dumps(registry, indent=2).encode())
    home.audit.record("site-registered", site=args.site, node=node, key_sha256=file_digest(pub))
    _say(f"site {args.site} registered as node {node}")
    return 0


def _unregister(home: CoordinatorHome, site: str) -> None:
    registry = home.registered()
    if site not in registry:
        raise ConfigError(home.registry, f"site {site} is not registered")
    node = registry.pop(site)
    _flwr(home, "supernode", "unregister", str(node), CONNECTION)
    write_atomic(home.registry, json.dumps(registry, indent=2).encode())
    home.audit.record("site-unregistered", site=site, node=node)


def cmd_unregister(args: argparse.Namespace) -> int:
    home = CoordinatorHome(args.home)
    _unregister(home, args.site)
    _say(f"site {args.site} unregistered: its key can no longer connect")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """The registered sites and whether each is connected, and the runs; exit 1 when the
    SuperLink does not answer (not started, or stopped)."""
    home = CoordinatorHome(args.home)
    nodes = _flwr(home, "supernode", "list", CONNECTION, "--format", "json", check=False)
    try:
        reply = _json_reply(nodes, "status")
    except EchoflError:
        reply = {}
    if nodes.returncode != 0 or not reply.get("success"):
        detail = str(reply.get("error-message") or nodes.stdout + nodes.stderr).strip()
        detail = detail.splitlines()[-1] if detail else "no answer"
        port = home.config().control_port
        print(
            f"the coordinator's SuperLink does not answer on 127.0.0.1:{port} (start it with: "
            f"fl-server start --home {home.root}): {detail}",
            file=sys.stderr,
        )
        return 1
    by_node = {v: k for k, v in home.registered().items()}
    print(f"{'site':<12}{'node id':>22}  status")
    for node in reply.get("nodes", []):
        node_id = int(node.get("node-id", node.get("node_id", 0)))
        print(f"{by_node.get(node_id, '?'):<12}{node_id:>22}  {node.get('status', '?')}")
    runs = _flwr(home, "ls", CONNECTION, "--format", "json", check=False)
    try:
        listed = _json_reply(runs, "runs").get("runs", [])
    except EchoflError:
        listed = []
    print(f"\n{'run id':>20}  {'status':<22}{'app bundle':<16}elapsed")
    for run in listed:
        print(
            f"{run.get('run-id', '?'):>20}  {run.get('status', '?'):<22}"
            f"{str(run.get('fab-hash', '?'))[:12]:<16}{run.get('elapsed', '')}"
        )
    return 0


_OVERRIDE = re.compile(r"""\s*([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|'[^']*'|[^\s"']*)\s*""")


def parse_overrides(text: str | None) -> dict[str, str]:
    """``'k=v k2="a b"'`` -> {k: v, k2: '"a b"'}: TOML values kept as written."""
    out: dict[str, str] = {}
    position, text = 0, text or ""
    while position < len(text.rstrip()):
        match = _OVERRIDE.match(text, position)
        if match is None or match.end() == position:
            raise ConfigError("--run-config", f"expected key=value at {text[position:]!r}")
        out[match.group(1)] = match.group(2)
        position = match.end()
    return out


def run_config_overrides(text: str | None) -> dict[str, str]:
    """``--run-config``: ``key=value`` pairs, or (as ``flwr run`` takes it) a TOML file of flat
    ``key = value`` lines, each value kept as TOML text."""
    if text and text.strip().endswith(".toml") and "=" not in text:
        path = Path(text.strip())
        try:
            values = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(
                path, f"--run-config file unreadable ({exc.strerror or exc})"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(path, f"--run-config file is not valid TOML ({exc})") from None
        nested = sorted(k for k, v in values.items() if isinstance(v, dict | list))
        if nested:
            raise ConfigError(
                path, f"run config values are scalars; {', '.join(nested)} is a table or array"
            )
        return {k: json.dumps(v) for k, v in values.items()}  # JSON scalars are TOML scalars
    return parse_overrides(text)


def check_run_config(values: dict[str, str], app_dir: Path) -> None:
    """Every value valid TOML and the whole run config valid for echofl (a typo in a key, a
    string without quotes, an impossible value): refused here, with the key named."""
    parsed = {}
    for key, text in values.items():
        try:
            parsed[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            raise ConfigError(
                "--run-config",
                f'{key}={text} is not a TOML value (strings need quotes: {key}="{text}")',
            ) from None
    defaults = tomllib.loads((app_dir / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    parse_run_settings({**defaults.get("config", {}), **parsed}, source="--run-config")


def check_app_dir(app_dir: Path) -> None:
    pyproject = app_dir / "pyproject.toml"
    try:
        tool = tomllib.loads(pyproject.read_text()).get("tool", {})
    except (OSError, tomllib.TOMLDecodeError):
        tool = {}
    if "app" not in tool.get("flwr", {}):
        raise ConfigError(
            pyproject,
            "app_dir must be the echofl source folder (its pyproject.toml declares the Flower "
            "app): give it with fl-server init --app-dir, or set app_dir in coordinator.toml",
        )


def cmd_run(args: argparse.Namespace) -> int:
    home = CoordinatorHome(args.home)
    config = home.config()
    check_app_dir(config.app_dir)
    if args.resume:
        name = args.resume
        out = home.run_dir(name)
        if not (out / "metrics.jsonl").is_file():
            raise ConfigError(out, "no run to resume here (no metrics.jsonl)")
    else:
        name = args.name or dt.datetime.now().strftime("run-%Y%m%d-%H%M%S")
        out = home.run_dir(name)
        if out.exists() and any(out.iterdir()):
            raise ConfigError(
                out, "a run with this name already has outputs (choose --name, or --resume it)"
            )
    load_signing_key(home.pki.signing_key)
    values = {
        "output-dir": json.dumps(str(out)),
        "signing-key": json.dumps(str(home.pki.signing_key)),
        "site-registry": json.dumps(str(home.registry)),
        "audit-log": json.dumps(str(home.audit.path)),
        "min-sites": str(args.min_sites or config.min_sites),
    }
    if args.rounds:
        values["num-server-rounds"] = str(args.rounds)
    overrides = run_config_overrides(args.run_config)
    # fl-server run finds and verifies the final model through these: they are not options
    fixed = sorted(set(overrides) & {"output-dir", "signing-key", "resume", "audit-log"})
    if fixed:
        raise ConfigError(
            "--run-config",
            f"{', '.join(fixed)} {'is' if len(fixed) == 1 else 'are'} set by fl-server run "
            "(choose the run folder with --name, continue a run with --resume)",
        )
    saved = out / "run-config.json"
    if args.resume and saved.is_file():  # the stopped run's own options, then today's changes
        values.update(json.loads(saved.read_text()))
    values.update(overrides)  # the operator's values win over the defaults
    if "mlflow-tracking-uri" in overrides:  # a relative SQLite file: where the operator is
        try:
            uri = tomllib.loads(f"v = {overrides['mlflow-tracking-uri']}").get("v")
        except tomllib.TOMLDecodeError:
            uri = None  # check_run_config below names the key and the problem
        if isinstance(uri, str):
            values["mlflow-tracking-uri"] = json.dumps(absolute_tracking_uri(uri, Path.cwd()))
    if args.resume:
        values["resume"] = "true"
    check_run_config(values, config.app_dir)  # before anything is launched or written
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume or not saved.is_file():
        write_atomic(
            saved, json.dumps({k: v for k, v in values.items() if k != "resume"}, indent=2).encode()
        )
    run_config = " ".join(f"{k}={v}" for k, v in values.items())
    home.write_connection(config.control_port)
    # the bundle's files copied aside: flwr run bundles them in milliseconds (not the whole
    # source folder's walk), and what is submitted is what was hashed and audited
    staged = Path(tempfile.mkdtemp(prefix="echofl-app-")) / "app"
    try:
        fab = stage_app(config.app_dir, staged)  # what every site will be asked to execute
        write_atomic(out / "app.sha256", f"{fab}\n".encode())
        verb = "resuming" if args.resume else "launching"
        _say(f"{verb} run {name} (outputs in {out}); app bundle sha256 {fab}")
        home.audit.record(
            "run-resumed" if args.resume else "run-launched",
            run=name,
            app_sha256=fab,
            app_dir=str(config.app_dir),
            run_config=values,
        )
        returncode = stream_run(home, name, staged, run_config)
    finally:
        shutil.rmtree(staged.parent, ignore_errors=True)
    if returncode == EXIT_INTERRUPTED:
        return returncode
    final = out / "checkpoints" / "final.pt"
    if returncode == 0 and final.is_file():
        load_checkpoint(final, verify_key=load_verify_key(home.pki.signing_pub))
        home.audit.record("run-finished", run=name, exit=0, final_sha256=file_digest(final))
        _say(f"run {name} finished; final model signed and verified: {final}")
        return 0
    home.audit.record("run-stopped", run=name, exit=returncode)
    _say(
        f"run {name} did not finish (exit {returncode}); see {out} and {home.log_file}; "
        f"continue it with: fl-server run --home {home.root} --resume {name}"
    )
    return returncode or 1


EXIT_INTERRUPTED = 130  # Ctrl-C: the run was stopped on the SuperLink too
_STARTED = re.compile(r"Successfully started run (\d+)")


def flwr_run_argv(app_dir: Path, run_config: str) -> list[str]:
    """The ``flwr run`` command line of a coordinator's run."""
    return ["flwr", "run", str(app_dir), CONNECTION, "--stream", "--run-config", run_config]


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def stream_run(home: CoordinatorHome, name: str, app_dir: Path, run_config: str) -> int:
    """``flwr run --stream``, its output passed through; Ctrl-C (or SIGTERM) stops the run on the
    SuperLink as well (``flwr stop``), so that no run goes on unseen after this command ends."""
    proc = subprocess.Popen(
        flwr_run_argv(app_dir, run_config),
        env=_flwr_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,  # in this process's group: whoever stops the group stops it too
    )
    run_id: str | None = None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if run_id is None and (match := _STARTED.search(line)):
                run_id = match.group(1)
        return proc.wait()
    except KeyboardInterrupt:
        _say(f"interrupted: stopping run {name} (Flower run {run_id or '?'}) on the SuperLink")
        if run_id is not None:
            stopped = _flwr(home, "stop", run_id, CONNECTION, check=False)
            print((stopped.stdout + stopped.stderr).strip()[-300:], flush=True)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        home.audit.record("run-interrupted", run=name, flower_run=run_id)
        _say(
            f"run {name} stopped; its checkpoints are kept: continue it with "
            f"fl-server run --home {home.root} --resume {name}"
        )
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_renew_cert(args: argparse.Namespace) -> int:
    """A new server certificate from the existing CA (sites keep their ca.crt and keys)."""
    home = CoordinatorHome(args.home)
    config = home.config()
    hosts = args.host or config.hosts
    pki = home.pki
    ca_cert = check_ca_certificate(pki.ca_cert)
    if not pki.ca_key.is_file():
        raise ConfigError(
            pki.ca_key,
            "the CA private key is needed to sign a new server "
            "certificate (bring it back from where it is kept offline)",
        )
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    key, cert = make_server_cert(ca_key, ca_cert, hosts, days=args.days)  # type: ignore[arg-type]
    write_atomic(
        pki.server_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        private=True,
    )
    write_atomic(pki.server_cert, cert.public_bytes(serialization.Encoding.PEM))
    _say(
        f"new server certificate for {', '.join(hosts)} (+ loopback), valid "
        f"{args.days} days; restart the SuperLink (fl-server start) to use it"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """A run's report (tables and curves) from its folder, offline."""
    from fl_server.run_report import write_run_report

    run = CoordinatorHome(args.home).run_dir(args.run)
    if not run.is_dir():
        raise ConfigError(run, f"no run {args.run!r} in this home")
    path = write_run_report(run)
    print(path.read_text())
    _say(f"report: {path} (and curves.png beside it)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A real TLS federation of three synthetic hospitals on loopback, then everything stopped."""
    from fl_server.demo import main as demo

    return demo(args.dir, args.keep, args.rounds, args.cases, args.image_size)


def cmd_app_hash(args: argparse.Namespace) -> int:
    """The SHA-256 of the app bundle built from an echofl source folder: what a hospital pins
    in ``trusted_apps`` (computed by the hospital itself from the release it reviewed, or
    announced by the coordinator: the two must agree)."""
    app_dir = (
        args.app_dir.resolve() if args.app_dir else CoordinatorHome(args.home).config().app_dir
    )
    check_app_dir(app_dir)
    print(app_digest(app_dir))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    _, sidecar = load_checkpoint(args.checkpoint, verify_key=load_verify_key(args.key))
    _say(f"{args.checkpoint}: digest and signature valid (round {sidecar.get('round')})")
    return 0


def cmd_firewall(args: argparse.Namespace) -> int:
    print(FIREWALL.format(port=CoordinatorHome(args.home).config().port))
    return 0


def host_arg(text: str) -> str:
    """A DNS name or an IP address (what goes into the server certificate)."""
    import ipaddress

    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    if (
        not text
        or len(text) > 253
        or not all(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", x) for x in labels)
    ):
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name or an IP address")
    return text


def _whole(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_int(text: str) -> int:
    value = _whole(text, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port_arg(text: str) -> int:
    value = _whole(text, "a port number")
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1-65535, got {value}")
    return value


class ShowDefaults(argparse.HelpFormatter):
    """``(default: X)`` after an option's help where it has a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: {action.default})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fl-server", description="echofl coordinator tool")
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    formatted = sub.add_parser

    def add_parser(name: str, **kwargs: object) -> argparse.ArgumentParser:
        """Every subcommand shows its options' defaults in --help."""
        return formatted(name, formatter_class=ShowDefaults, **kwargs)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    def with_home(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--home",
            type=Path,
            default=Path(os.environ.get("ECHOFL_COORDINATOR_HOME", "coordinator")),
            help="the coordinator's folder",
        )
        return p

    p = with_home(sub.add_parser("init", help="create the PKI, config and site bundles"))
    p.add_argument(
        "--host",
        action="append",
        required=True,
        type=host_arg,
        help="a name or IP the sites use for the coordinator (repeatable)",
    )
    p.add_argument(
        "--site", action="append", default=[], type=site_name_arg, help="a site name (repeatable)"
    )
    p.add_argument(
        "--port", type=port_arg, default=9092, help="the port the sites connect to (TLS)"
    )
    p.add_argument(
        "--listen-host",
        type=host_arg,
        default="0.0.0.0",
        help="address the sites' port listens on (the fleet-only proxy)",
    )
    p.add_argument(
        "--superlink-port",
        type=port_arg,
        default=9192,
        help="loopback port of the SuperLink behind the proxy (never exposed)",
    )
    p.add_argument(
        "--expose-control-api",
        action="store_true",
        help="no proxy: the SuperLink itself (with its unauthenticated Control API) listens on "
        "--listen-host:--port",
    )
    p.add_argument(
        "--min-sites",
        type=positive_int,
        default=2,
        help="sites a run waits for before its first round (fl-server run --min-sites overrides)",
    )
    p.add_argument(
        "--app-dir",
        type=Path,
        help="the echofl source folder (the Flower app); default: the installed checkout",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing home's PKI and config (every site then needs a new bundle)",
    )
    p.set_defaults(fn=cmd_init)
    p = with_home(sub.add_parser("add-site", help="keys + bundle for a new site, or rotate"))
    p.add_argument("--site", required=True, type=site_name_arg, help="the new site's name")
    p.add_argument("--rotate", action="store_true", help="replace the site's keys")
    p.set_defaults(fn=cmd_add_site)
    with_home(sub.add_parser("start", help="run the SuperLink (foreground)")).set_defaults(
        fn=cmd_start
    )
    for name, fn in (("register", cmd_register), ("unregister", cmd_unregister)):
        p = with_home(sub.add_parser(name, help=f"{name} a site's public key"))
        p.add_argument("--site", required=True, type=site_name_arg, help="the site's name")
        p.set_defaults(fn=fn)
    with_home(sub.add_parser("status", help="sites and runs")).set_defaults(fn=cmd_status)
    with_home(
        sub.add_parser("proxy-config", help="the fleet-only nginx server block, for a system nginx")
    ).set_defaults(fn=cmd_proxy_config)
    p = with_home(sub.add_parser("run", help="launch a federated training run"))
    p.add_argument(
        "--rounds", type=positive_int, help="rounds of this run (default: the run config's)"
    )
    p.add_argument(
        "--resume",
        metavar="NAME",
        type=run_name_arg,
        help="continue a stopped run from its last completed round",
    )
    p.add_argument(
        "--min-sites", type=positive_int, help="sites to wait for (default: coordinator.toml's)"
    )
    p.add_argument("--name", type=run_name_arg, help="run folder name (default: run-<timestamp>)")
    p.add_argument(
        "--run-config",
        help='overrides, "label-dropout-p=0.5 lr=0.002", or a TOML file of key = value lines '
        "(keys: docs/federation.md)",
    )
    p.set_defaults(fn=cmd_run)
    p = with_home(sub.add_parser("report", help="a run's tables and validation curves"))
    p.add_argument("run", type=run_name_arg, help="the run's name (its folder in H/runs/)")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser(
        "demo",
        help="a real TLS federation of 3 synthetic hospitals on loopback, a few rounds, cleaned up",
    )
    p.add_argument("--dir", type=Path, help="keep everything here (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--rounds", type=positive_int, default=2, help="federated rounds")
    p.add_argument("--cases", type=positive_int, default=10, help="synthetic cases per hospital")
    p.add_argument("--image-size", type=positive_int, default=64, help="training image size (px)")
    p.set_defaults(fn=cmd_demo)
    p = with_home(
        sub.add_parser("app-hash", help="the app bundle's SHA-256, for the sites' trusted_apps")
    )
    p.add_argument("--app-dir", type=Path, help="an echofl source folder (default: the home's)")
    p.set_defaults(fn=cmd_app_hash)
    p = sub.add_parser("verify", help="check a checkpoint's digest and signature")
    p.add_argument("checkpoint", type=Path, help="the .pt file (its .pt.json sidecar beside it)")
    p.add_argument("--key", type=Path, required=True, help="model-signing.pub")
    p.set_defaults(fn=cmd_verify)
    with_home(sub.add_parser("firewall", help="print the exposure rules")).set_defaults(
        fn=cmd_firewall
    )
    p = with_home(sub.add_parser("renew-cert", help="new server certificate, same CA"))
    p.add_argument("--host", action="append", help="names/IPs (default: coordinator.toml hosts)")
    p.add_argument("--days", type=int, default=825, help="validity of the new certificate")
    p.set_defaults(fn=cmd_renew_cert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except EchoflError as exc:
        print(f"[fl-server] error: {exc}", file=sys.stderr)
        return 2
    except tomllib.TOMLDecodeError as exc:
        print(f"[fl-server] error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"[fl-server] error: {exc.filename or 'a file'}: {exc.strerror or exc}", file=sys.stderr
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
