"""Static checks of the deployment files (deploy/) and the deployment guides, against the code.

Fast: no Docker, no systemd, no nginx, no network. The compose file, the Dockerfiles, the
systemd units and the nginx config are parsed and cross-checked with what echofl and Flower
actually do: console scripts, `fl-server`/`fl-client` subcommands and flags, the coordinator's
home and PKI layout, site files, run-config keys, Flower's Fleet API paths. A few `fl-server`
commands the guides describe (`init --app-dir`, `renew-cert`, what `run` and `run --resume`
pass to `flwr run`) run on a temporary home, with `flwr` itself replaced by a stub.

PyYAML is imported directly: Flower (a runtime dependency) requires it.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import re
import shlex
import tomllib
from collections.abc import Callable
from configparser import ConfigParser
from pathlib import Path

import pytest
import yaml

import common.data.formats
from common.app_bundle import app_digest
from common.config import validate_config
from common.data.formats import format_module
from common.errors import ConfigError
from common.federation.run_settings import parse_run_settings
from common.files import write_atomic
from common.security import pki
from common.security.pki import LOOPBACK, PkiPaths, make_signing_keys
from fl_client import cli as client_cli
from fl_client import site_config
from fl_client.site_config import SiteConfig, load_site_config
from fl_server import cli as server_cli
from fl_server.coordinator import CoordinatorHome
from fl_server.metrics_log import absolute_tracking_uri

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GUIDES = [
    DEPLOY / "README.md",
    ROOT / "docs" / "hospital-quickstart.md",
    ROOT / "docs" / "coordinator-quickstart.md",
]
DEPLOY_FILES = [
    DEPLOY / "compose.yaml",
    DEPLOY / "docker" / "Dockerfile.coordinator",
    DEPLOY / "docker" / "Dockerfile.site",
    DEPLOY / "systemd" / "echofl-coordinator.service",
    DEPLOY / "systemd" / "echofl-site@.service",
    DEPLOY / "nginx" / "fleet-only.conf",
]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = set(PYPROJECT["project"]["scripts"])
SITES = ["A", "B", "D"]


# ---------------------------------------------------------------------------------------------
# What the command-line tools accept


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_flags(main: Callable[[list[str]], int]) -> set[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    return set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", out.getvalue()))


SERVER_SUBCOMMANDS = {
    name: set(sub._option_string_actions)
    for name, sub in _subparsers(server_cli.build_parser()).items()
}


def _tool_flags() -> dict[str, set[str]]:
    from common.data.synthetic import cli as synth_cli

    return {
        "fl-client": _help_flags(client_cli.main),
        "fl-client predict": _help_flags(lambda argv: client_cli.main(["predict", *argv])),
        "echofl-synth": _help_flags(synth_cli.main),
    }


TOOL_FLAGS = _tool_flags()
INVOCATION = re.compile(r"(?<![\w.-])(fl-server|fl-client|echofl-synth)(?=\s)(.*)")
END_OF_COMMAND = re.compile(r"`|&&|\|\||;|\s#|\s\|\s")


def invocations(text: str) -> list[tuple[str, list[str]]]:
    """(tool, argument tokens) of every invocation of an echofl tool in shell-like text."""
    text = re.sub(r"\\\n\s*#?", " ", text)  # line continuations (also in comments)
    found = []
    for line in text.splitlines():
        for match in INVOCATION.finditer(line):
            rest = END_OF_COMMAND.split(match.group(2), maxsplit=1)[0]
            found.append((match.group(1), rest.split()))
    return found


def markdown_code(text: str) -> str:
    """The fenced code blocks and inline code spans of a markdown text, one per line."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    spans = re.findall(r"`([^`\n]+)`", prose)
    return "\n".join(blocks + spans)


def quoted_commands() -> list[tuple[str, str, list[str]]]:
    out = []
    for path in GUIDES:
        out += [(path.name, t, a) for t, a in invocations(markdown_code(path.read_text()))]
    for path in DEPLOY_FILES:
        out += [(path.name, t, a) for t, a in invocations(path.read_text())]
    return out


def test_every_quoted_subcommand_and_flag_exists() -> None:
    commands = quoted_commands()
    assert {t for _, t, _ in commands} >= {"fl-server", "fl-client", "echofl-synth"}
    assert {"fl-server", "fl-client", "echofl-synth"} <= SCRIPTS
    seen = set()
    for where, tool, args in commands:
        if tool == "fl-server":
            assert args, f"{where}: fl-server without a subcommand"
            sub = args[0]
            assert sub in SERVER_SUBCOMMANDS, f"{where}: unknown subcommand fl-server {sub}"
            allowed, flags = SERVER_SUBCOMMANDS[sub], args[1:]
            seen.add(sub)
        elif tool == "fl-client" and args[:1] == ["predict"]:
            allowed, flags = TOOL_FLAGS["fl-client predict"], args[1:]
            seen.add("fl-client predict")
        else:
            allowed, flags = TOOL_FLAGS[tool], args
        for flag in flags:
            if flag.startswith("--"):
                name = flag.split("=")[0]
                assert name in allowed, f"{where}: {tool} {' '.join(args[:1])}: no flag {name}"
    # the guides walk through every subcommand
    assert seen == set(SERVER_SUBCOMMANDS) | {"fl-client predict"}


def coordinator_home(root: Path) -> Path:
    """A coordinator home with what `fl-server run` reads before it calls `flwr run`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "coordinator.toml").write_text(
        f'hosts = ["fl.example.org"]\napp_dir = {json.dumps(str(ROOT))}\n'
    )
    private, public = make_signing_keys()
    paths = CoordinatorHome(root).pki
    write_atomic(paths.signing_key, private, private=True)
    write_atomic(paths.signing_pub, public)
    return root


def launched(
    monkeypatch: pytest.MonkeyPatch, home: Path, *args: str
) -> tuple[int, dict[str, object]]:
    """Exit code of `fl-server run --home HOME ARGS` and the run config it gave `flwr run`,
    as `flwr run` parses it (a repeated key is an error there)."""
    from flwr.common.config import parse_config_args

    calls: list[list[str]] = []
    submitted: list[str] = []

    def fake_stream(_home: object, _name: str, app_dir: Path, run_config: str) -> int:
        calls.append(server_cli.flwr_run_argv(app_dir, run_config))
        submitted.append(app_digest(app_dir))  # the staged copy, while it exists
        return 1

    monkeypatch.setattr(server_cli, "stream_run", fake_stream)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = server_cli.main(["run", "--home", str(home), *args])
    if not calls:
        return code, {}
    (argv,) = calls
    # flwr run gets a copy of the bundle's files (not the source folder), which bundles to
    # the same bytes as the source folder; the copy is gone afterwards
    assert argv[:2] == ["flwr", "run"] and argv[2] != str(ROOT)
    assert submitted == [app_digest(ROOT)] and not Path(argv[2]).exists()
    return code, parse_config_args([argv[argv.index("--run-config") + 1]])


def test_run_config_examples_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.common.config import parse_config_args

    defaults = PYPROJECT["tool"]["flwr"]["app"]["config"]
    examples = []
    for path in GUIDES:
        code = re.sub(r"\\\n\s*", " ", markdown_code(path.read_text()))
        examples += re.findall(r"--run-config\s+(\"[^\"]*\"|'[^']*')", code)
    assert len(examples) >= 6
    home = coordinator_home(tmp_path / "home")
    for i, quoted in enumerate(examples):
        text = shlex.split(quoted)[0]
        overrides = parse_config_args([text])
        assert set(overrides) <= set(defaults), f"unknown run-config key in {quoted}"
        # as `fl-server run --rounds 10` passes it on: valid, and the operator's values win
        args = ["--rounds", "10", "--name", f"x{i}", "--run-config", text]
        _, config = launched(monkeypatch, home, *args)
        # ... except a relative SQLite store, made absolute where the operator typed it
        expected = {
            k: absolute_tracking_uri(v, Path.cwd()) if k == "mlflow-tracking-uri" else v
            for k, v in overrides.items()
        }
        assert {k: config[k] for k in overrides} == expected, quoted
        parse_run_settings({**defaults, **config})


def test_what_fl_server_run_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = coordinator_home(tmp_path / "home")
    coordinator = CoordinatorHome(home)
    _, config = launched(monkeypatch, home, "--rounds", "10", "--name", "a")
    assert config == {
        "output-dir": str(coordinator.runs / "a"),
        "signing-key": str(coordinator.pki.signing_key),
        "site-registry": str(coordinator.registry),
        "audit-log": str(coordinator.audit.path),
        "min-sites": 2,
        "num-server-rounds": 10,
    }
    # --run-config replaces what fl-server run would set
    overrides = 'num-server-rounds=20 min-sites=1 site-registry=""'
    _, config = launched(
        monkeypatch, home, "--rounds", "10", "--name", "b", "--run-config", overrides
    )
    assert [config[k] for k in ("num-server-rounds", "min-sites", "site-registry")] == [20, 1, ""]
    # ... except what fl-server run needs to find and verify the final model
    for key in ('output-dir="/tmp/elsewhere"', 'signing-key=""', "resume=true", 'audit-log=""'):
        code, config = launched(monkeypatch, home, "--name", "c", "--run-config", key)
        assert (code, config) == (2, {}), key
    # a name with outputs is refused; --resume continues it, and needs its metrics log
    (coordinator.runs / "a" / "metrics.jsonl").write_text("")
    code, config = launched(monkeypatch, home, "--name", "a")
    assert (code, config) == (2, {})
    code, config = launched(monkeypatch, home, "--resume", "nothing-here")
    assert (code, config) == (2, {})
    _, config = launched(monkeypatch, home, "--resume", "a", "--rounds", "10")
    assert config["resume"] is True and config["output-dir"] == str(coordinator.runs / "a")
    assert config["num-server-rounds"] == 10
    # without options a resumed run keeps the options it was launched with (the guide says so)
    (coordinator.runs / "b" / "metrics.jsonl").write_text("")
    _, config = launched(monkeypatch, home, "--resume", "b")
    assert (config["num-server-rounds"], config["min-sites"], config["site-registry"]) == (
        20,
        1,
        "",
    )
    _, config = launched(monkeypatch, home, "--resume", "b", "--run-config", "min-sites=3")
    assert (config["num-server-rounds"], config["min-sites"]) == (20, 3)
    guide = " ".join((ROOT / "docs" / "coordinator-quickstart.md").read_text().split())
    assert "without further options the run continues as it was launched" in guide


def test_init_app_dir_and_renew_cert(tmp_path: Path) -> None:
    from cryptography import x509

    def fl_server(*args: str | Path) -> int:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return server_cli.main([str(a) for a in args])

    home = tmp_path / "home"
    assert fl_server("init", "--home", home, "--host", "fl.example.org", "--app-dir", ROOT) == 0
    coordinator = CoordinatorHome(home)
    assert coordinator.config().app_dir == ROOT
    # a folder whose pyproject.toml does not declare the Flower app is refused
    other = tmp_path / "other"
    assert fl_server("init", "--home", other, "--host", "x", "--app-dir", tmp_path) == 2
    assert not CoordinatorHome(other).config_file.exists()

    paths = coordinator.pki
    ca_before, toml_before = paths.ca_cert.read_bytes(), coordinator.config_file.read_text()
    assert fl_server("renew-cert", "--home", home, "--host", "fl2.example.org", "--days", "30") == 0
    assert paths.ca_cert.read_bytes() == ca_before
    assert coordinator.config_file.read_text() == toml_before  # --host is not written back
    cert = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_before))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(n.value) for n in san}
    assert names == {"fl2.example.org", *LOOPBACK}
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days in (29, 30)
    assert oct(paths.server_key.stat().st_mode & 0o777) == "0o600"


def anchors(markdown: str) -> set[str]:
    """GitHub's ids of a markdown file's headings."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    headings = re.findall(r"^#+ (.+)$", prose, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_links_in_guides_resolve() -> None:
    for path in [*GUIDES, ROOT / "docs" / "reliability.md"]:
        for target, anchor in re.findall(r"\]\(([^)#\s]+)(?:#([^)]*))?\)", path.read_text()):
            if "://" not in target:
                assert (path.parent / target).exists(), f"{path.name}: broken link {target}"
                if anchor:
                    heads = anchors((path.parent / target).read_text())
                    assert anchor in heads, f"{path.name}: no heading #{anchor} in {target}"


def test_messages_quoted_in_the_hospital_guide_are_the_clients() -> None:
    guide = (ROOT / "docs" / "hospital-quickstart.md").read_text()
    modules = (client_cli, server_cli, pki, site_config, common.data.formats)
    sources = "".join(inspect.getsource(m) for m in modules)
    sources = re.sub(r"\"\s*\n\s*f?\"", "", sources)  # join implicitly concatenated literals
    for phrase in [
        "certificate and key OK",
        "reachable, certificate verified",
        "starting the SuperNode (TLS, node authentication)",
        "private key is readable by others",
        "this certificate is not a CA certificate",
        "presented a certificate that does not verify against",
        "key is not registered with the coordinator (or was unregistered)",
        "still unreachable after",
        "unknown loader option(s)",
    ]:
        assert phrase in guide and phrase in sources, phrase
    codes = (client_cli.EXIT_CONFIG, client_cli.EXIT_UNREGISTERED, client_cli.EXIT_UNREACHABLE)
    assert codes == (2, 3, 4)


def hospital_toml_blocks() -> list[dict]:
    text = (ROOT / "docs" / "hospital-quickstart.md").read_text()
    return [tomllib.loads(b) for b in re.findall(r"^```toml\n(.*?)^```", text, re.S | re.M)]


def test_site_file_examples_in_the_hospital_guide() -> None:
    template, *fragments = hospital_toml_blocks()
    # the file shown is the one fl-server writes into a bundle
    assert template == tomllib.loads(server_cli.site_template("A", "fl.example.org:9092"))
    for fragment in fragments:
        config = validate_config(SiteConfig, {**template, **fragment}, "example")
        accepted = inspect.signature(format_module(config.format).load).parameters
        assert set(config.loader_options) <= set(accepted) - {"root", "site"}
    # flwr_home: the template's value is the default the guide states
    assert template["flwr_home"] == "flwr"
    assert SiteConfig.model_fields["flwr_home"].default == Path("flwr")
    # the container paths the guide gives are the site image's folders
    (container,) = [f for f in fragments if f.get("data_dir") == "/site/data"]
    made = " ".join(dockerfile("Dockerfile.site")["RUN"])
    for key in ("cache_dir", "log_file", "flwr_home"):
        folder = container[key] if key != "log_file" else str(Path(container[key]).parent)
        assert folder in made, key


# ---------------------------------------------------------------------------------------------
# Docker


def dockerfile(name: str) -> dict[str, list[str]]:
    """Instruction -> argument strings (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "docker" / name).read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, rest = line.strip().partition(" ")
            out.setdefault(instruction.upper(), []).append(rest.strip())
    return out


def exec_form(value: str) -> list[str]:
    argv = json.loads(value)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def healthcheck_code(instructions: dict[str, list[str]]) -> str:
    (value,) = instructions["HEALTHCHECK"]
    argv = exec_form(value[value.index("CMD") + 3 :])
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "HEALTHCHECK", "exec")
    return argv[2]


@pytest.mark.parametrize("name", ["Dockerfile.coordinator", "Dockerfile.site"])
def test_dockerfiles_cpu_python311_non_root(name: str) -> None:
    d = dockerfile(name)
    assert d["FROM"] == ["python:3.11-slim"]
    runs = " ".join(d["RUN"])
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in runs
    assert runs.index("torch==2.13.0") < runs.index("pip install ", runs.index("whl/cpu"))
    assert d["USER"][-1] not in ("root", "0")
    env = " ".join(d["ENV"])
    assert "FLWR_TELEMETRY_ENABLED=0" in env and "FLWR_DISABLE_UPDATE_CHECK=1" in env
    assert (DEPLOY / "docker" / f"{name}.dockerignore").is_file()


def test_coordinator_image_runs_fl_server_start_on_its_home() -> None:
    d = dockerfile("Dockerfile.coordinator")
    argv = exec_form(d["ENTRYPOINT"][0]) + exec_form(d["CMD"][0])
    assert argv == ["fl-server", "start", "--home", "/coordinator"]
    assert exec_form(d["VOLUME"][0]) == ["/coordinator"]
    home = CoordinatorHome(Path("/coordinator"))
    code = healthcheck_code(d)
    assert str(home.config_file.relative_to(home.root)) in code
    assert str(home.pki.ca_cert.relative_to(home.root)) in code and "/health" in code
    assert "pip install ." in " ".join(d["RUN"])


def test_site_image_runs_fl_client_for_its_site() -> None:
    d = dockerfile("Dockerfile.site")
    argv = exec_form(d["ENTRYPOINT"][0])
    assert argv[:2] == ["/bin/sh", "-c"]
    assert shlex.split(argv[2])[:6] == [
        "exec",
        "fl-client",
        "--site",
        "$SITE",
        "--config-dir",
        "/site/config",
    ]
    assert set(exec_form(d["VOLUME"][0])) >= {"/site/config", "/site/data", "/site/cache"}
    code = healthcheck_code(d)
    assert "runtime_port" in code and str(SiteConfig.model_fields["runtime_port"].default) in code


# ---------------------------------------------------------------------------------------------
# Compose

COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def site_services() -> dict[str, dict]:
    return {
        s["environment"]["SITE"]: s for s in SERVICES.values() if "SITE" in s.get("environment", {})
    }


def effective_argv(service: dict) -> list[str]:
    d = dockerfile(Path(service["build"]["dockerfile"]).name)
    entrypoint = service.get("entrypoint") or exec_form(d["ENTRYPOINT"][0])
    command = service.get("command")
    if command is None:
        command = exec_form(d["CMD"][0]) if "CMD" in d and "entrypoint" not in service else []
    return list(entrypoint) + list(command)


def test_compose_has_init_coordinator_and_three_sites() -> None:
    assert {"init", "coordinator"} <= set(SERVICES)
    assert sorted(site_services()) == SITES
    assert len(SERVICES) == 2 + len(SITES)


def test_only_the_coordinator_publishes_its_port() -> None:
    published = {name for name, s in SERVICES.items() if s.get("ports")}
    assert published == {"coordinator"}
    (port,) = SERVICES["coordinator"]["ports"]
    default_port = _subparsers(server_cli.build_parser())["init"].get_default("port")
    assert str(port).rsplit(":", 1)[-1] == str(default_port)


def test_every_service_runs_an_echofl_console_script() -> None:
    for name, service in SERVICES.items():
        argv = effective_argv(service)
        named = {t for a in argv for t in re.findall(r"\b(?:fl|echofl)-[a-z]+\b", a)}
        assert named and named <= SCRIPTS, f"{name}: {argv}"
    coordinator = effective_argv(SERVICES["coordinator"])
    assert coordinator == ["fl-server", "start", "--home", "/coordinator"]
    init = " ".join(effective_argv(SERVICES["init"]))
    assert "fl-server init --home /coordinator --host coordinator" in init
    assert re.findall(r"--site (\w+)", init) == SITES
    # --app-dir: the source tree the coordinator image keeps, which init accepts
    assert "--app-dir /opt/echofl" in init
    assert ". /opt/echofl" in dockerfile("Dockerfile.coordinator")["COPY"]
    server_cli.check_app_dir(ROOT)


def test_compose_environment_and_dependencies() -> None:
    for name, service in SERVICES.items():
        env = service["environment"]
        assert env["FLWR_TELEMETRY_ENABLED"] == "0", name
        assert env["FLWR_DISABLE_UPDATE_CHECK"] == "1", name
    for site, service in site_services().items():
        assert set(service["depends_on"]) == {"init", "coordinator"}, site
        assert service["init"] is True


def mounts(service: dict) -> dict[str, dict]:
    """Container path -> {type, source, read_only, subpath}."""
    out = {}
    for v in service["volumes"]:
        if isinstance(v, str):
            short = re.fullmatch(r"(\$\{[^}]*\}|[^:]+):([^:]+)(?::(\w+))?", v)
            assert short, v
            source, target, mode = short.groups()
            kind = "bind" if source.startswith((".", "/", "$")) else "volume"
            out[target] = {"type": kind, "source": source, "read_only": mode == "ro"}
        else:
            out[v["target"]] = {
                "type": v["type"],
                "source": v["source"],
                "read_only": v.get("read_only", False),
                "subpath": v.get("volume", {}).get("subpath"),
            }
    return out


def test_compose_volumes() -> None:
    declared = set(COMPOSE["volumes"])
    used = set()
    for service in SERVICES.values():
        for m in mounts(service).values():
            if m["type"] == "volume":
                used.add(m["source"])
            elif not m["source"].startswith("$"):
                assert (DEPLOY / m["source"]).exists(), m["source"]
    assert used == declared
    assert mounts(SERVICES["coordinator"])["/coordinator"]["source"] == "coordinator-home"
    federation = tomllib.loads((DEPLOY / "demo" / "federation.toml").read_text())
    for site, service in site_services().items():
        m = mounts(service)
        bundle = m["/site/bundle"]
        assert (bundle["source"], bundle["subpath"], bundle["read_only"]) == (
            "coordinator-home",
            str(CoordinatorHome(Path("/")).bundle(site).relative_to("/")),
            True,
        )
        assert m["/site/config"]["read_only"] and m["/site/data"]["read_only"]
        default = re.fullmatch(r"\$\{ECHOFL_DATA_\w+:-(.+)\}", m["/site/data"]["source"])
        assert default and (DEPLOY / default.group(1)).resolve() == (
            ROOT / federation["output_dir"] / site
        )
        assert m["/site/cache"]["type"] == m["/site/logs"]["type"] == "volume"


def test_demo_site_files_match_compose_and_synthetic_data() -> None:
    from common.data.synthetic.federation import FederationConfig

    federation = validate_config(
        FederationConfig,
        tomllib.loads((DEPLOY / "demo" / "federation.toml").read_text()),
        "federation.toml",
    )
    formats = {s.name: s.format for s in federation.sites}
    assert sorted(formats) == SITES
    port = str(SERVICES["coordinator"]["ports"][0]).rsplit(":", 1)[-1]
    for site, service in site_services().items():
        m = mounts(service)
        config_dir = DEPLOY / m["/site/config"]["source"]
        config = load_site_config(site, config_dir / f"{site}.toml")
        assert config.coordinator == f"coordinator:{port}"
        assert config.format == formats[site]
        assert config.ca_certificate == Path("/site/bundle/ca.crt")
        assert config.private_key == Path("/site/bundle/site.key")
        assert config.data_dir == Path("/site/data")
        assert config.cache_dir == Path("/site/cache")
        assert config.log_file is not None and config.log_file.parent == Path("/site/logs")
        # FLWR_HOME of the SuperNode: a writable folder of the image, not a read-only mount
        assert config.flwr_home == Path("/site/flwr")
        assert not any(
            config.flwr_home.is_relative_to(target) for target, x in m.items() if x["read_only"]
        )
        assert "/site/flwr" in " ".join(dockerfile("Dockerfile.site")["RUN"])
        assert client_cli.supernode_env(config)["FLWR_HOME"] == str(config.flwr_home)


# ---------------------------------------------------------------------------------------------
# systemd


def unit(name: str) -> tuple[ConfigParser, str]:
    text = (DEPLOY / "systemd" / name).read_text()
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser, text


def all_values(text: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", text, flags=re.M)


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("echofl-coordinator.service", ["fl-server", "start", "--home"]),
        ("echofl-site@.service", ["fl-client", "--site", "%i", "--config-dir"]),
    ],
)
def test_systemd_units(name: str, command: list[str]) -> None:
    parser, text = unit(name)
    assert set(parser.sections()) == {"Unit", "Service", "Install"}
    service = parser["Service"]
    argv = shlex.split(service["ExecStart"])
    assert [Path(argv[0]).name, *argv[1 : len(command)]] == command
    assert Path(argv[0]).name in SCRIPTS
    assert service["User"] == "echofl" and service["Restart"] == "on-failure"
    assert service["KillMode"] == "control-group"
    assert service["NoNewPrivileges"] == "true" and service["PrivateTmp"] == "true"
    assert service["ProtectSystem"] == "strict"
    writable = service["ReadWritePaths"].split()
    assert writable
    assert "/etc/echofl/flower.env" in all_values(text, "EnvironmentFile")
    if command[0] == "fl-server":
        home = argv[argv.index("--home") + 1]
        assert home in writable
    else:
        stop = set(service["RestartPreventExitStatus"].split())
        assert stop == {str(client_cli.EXIT_CONFIG), str(client_cli.EXIT_UNREGISTERED)}
        # fl-client sets FLWR_HOME from the site file (flwr_home): the unit cannot, and says
        # which site-file paths it needs, all in its writable folders; the guide gives the same
        assert not [v for v in all_values(text, "Environment") if v.startswith("FLWR_HOME=")]
        needed = dict(re.findall(r'^#\s+(\w+) = "([^"]+)"$', text, flags=re.M))
        assert set(needed) == {"cache_dir", "log_file", "flwr_home", "audit_log", "models_dir"}
        for key, value in needed.items():
            assert any(Path(value).is_relative_to(w) for w in writable), key
        systemd_block = hospital_toml_blocks()[1]
        guide = {k: v.replace("/A/", "/%i/").replace("/A", "/%i") for k, v in systemd_block.items()}
        assert guide == needed


def test_flower_env_file_turns_telemetry_off() -> None:
    values = dict(
        line.split("=", 1)
        for line in (DEPLOY / "systemd" / "flower.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert values["FLWR_TELEMETRY_ENABLED"] == "0"
    assert values["FLWR_DISABLE_UPDATE_CHECK"] == "1"


# ---------------------------------------------------------------------------------------------
# nginx


def nginx_tree(text: str) -> list[tuple[list[str], list | None]]:
    """Directives as (words, children or None), with blocks nested."""
    tokens = re.findall(r'"[^"]*"|[{};]|[^\s{};"]+', re.sub(r"#[^\n]*", "", text))
    stack: list[list] = [[]]
    words: list[str] = []
    for token in tokens:
        if token == "{":
            block: list = []
            stack[-1].append((words, block))
            stack.append(block)
            words = []
        elif token == "}":
            stack.pop()
        elif token == ";":
            stack[-1].append((words, None))
            words = []
        else:
            words.append(token.strip('"'))
    assert len(stack) == 1 and not words, "unbalanced nginx config"
    return stack[0]


def directives(block: list, name: str) -> list[list[str]]:
    return [words[1:] for words, _ in block if words[0] == name]


def test_nginx_publishes_only_the_fleet_api() -> None:
    tree = nginx_tree((DEPLOY / "nginx" / "fleet-only.conf").read_text())
    (upstream,) = [children for words, children in tree if words[0] == "upstream"]
    init = _subparsers(server_cli.build_parser())["init"]
    assert directives(upstream, "server")[0][0] == f"127.0.0.1:{init.get_default('superlink_port')}"
    (server,) = [children for words, children in tree if words[0] == "server"]
    assert "ssl" in directives(server, "listen")[0]
    paths = PkiPaths(Path("pki"))
    assert directives(server, "ssl_certificate")[0][0].endswith(str(paths.server_cert))
    assert directives(server, "ssl_certificate_key")[0][0].endswith(str(paths.server_key))
    assert directives(server, "proxy_ssl_verify") == [["on"]]
    assert directives(server, "proxy_ssl_trusted_certificate")[0][0].endswith(str(paths.ca_cert))
    assert directives(server, "proxy_ssl_name")[0][0] in LOOPBACK  # a SAN of every server cert
    locations = {" ".join(w[1:]): c for w, c in server if w[0] == "location"}
    assert set(locations) == {"/v1/fleet/", "= /health", "/"}
    for where, body in locations.items():
        proxied = directives(body, "proxy_pass")
        assert "/v1/control" not in where and "/v1/runtime" not in where
        if where == "/":
            assert not proxied and directives(body, "return")[0][0] in ("403", "404")
        else:
            assert proxied and proxied[0][0].startswith("https://")
    fleet = locations["/v1/fleet/"]
    assert [w[1:] for w, _ in fleet if w[0] == "limit_except"] == [["POST"]]
    (condition,) = [w for w, _ in fleet if w[0] == "if"]
    allowed = condition[condition.index("!~") + 1].rstrip(")")
    # every Fleet path Flower's SuperNode calls passes the filter; the others do not
    from flwr.supernode import fleet_http_client

    paths = set(re.findall(r'"(/v1/fleet/[^"]+)"', inspect.getsource(fleet_http_client)))
    assert len(paths) >= 10
    assert all(re.fullmatch(allowed.strip("^$"), p) for p in paths), paths
    for other in ["/v1/control/list-runs", "/v1/fleet/../control/x", "/v1/fleet/get-run?x=1"]:
        assert not re.fullmatch(allowed.strip("^$"), other)


def test_firewall_text_names_the_proxy_config() -> None:
    named = re.findall(r"deploy/\S+\.conf", server_cli.FIREWALL)
    assert named and all((ROOT / n).is_file() for n in named)


def test_the_shipped_nginx_file_is_what_proxy_config_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One source for the fleet-only proxy: deploy/nginx/fleet-only.conf is `fl-server
    proxy-config` for a home in /var/lib/echofl/coordinator with the defaults."""
    home = tmp_path / "coordinator"
    assert server_cli.main(["init", "--home", str(home), "--host", "fl.example.org"]) == 0
    capsys.readouterr()
    assert server_cli.main(["proxy-config", "--home", str(home)]) == 0
    printed = capsys.readouterr().out.replace(str(home.resolve()), "/var/lib/echofl/coordinator")
    shipped = (DEPLOY / "nginx" / "fleet-only.conf").read_text()
    assert shipped.endswith(printed)
    assert "location /v1/fleet/" in printed and "server 127.0.0.1:9192;" in printed
    assert "listen 0.0.0.0:9092 ssl;" in printed


def test_status_exits_non_zero_and_says_so_when_the_superlink_is_down(tmp_path: Path) -> None:
    from common.processes import free_port
    from fl_server.loopback import cli

    home = tmp_path / "home"
    init = cli(
        "fl-server", "init", "--home", str(home), "--host", "127.0.0.1", "--site", "A",
        "--port", str(free_port()), "--superlink-port", str(free_port()),
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    status = cli("fl-server", "status", "--home", str(home), timeout=60)
    assert status.returncode == 1
    assert "SuperLink does not answer" in status.stderr
    assert f"fl-server start --home {home}" in status.stderr
    assert "{" not in status.stderr and status.stdout == ""  # a sentence, not raw JSON


def test_every_fl_server_option_has_help_and_shows_its_default() -> None:
    for name, sub in _subparsers(server_cli.build_parser()).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"fl-server {name} {action.option_strings or action.dest}"
    text = _subparsers(server_cli.build_parser())["init"].format_help()
    assert "(default: 9092)" in text and "(default: 2)" in text


def test_run_config_takes_pairs_or_a_toml_file(tmp_path: Path) -> None:
    file = tmp_path / "run.toml"
    file.write_text('label-dropout-p = 0.5\nstrategy = "fedprox"\nlabel-aware = true\n')
    from_file = server_cli.run_config_overrides(str(file))
    assert from_file == {"label-dropout-p": "0.5", "strategy": '"fedprox"', "label-aware": "true"}
    assert from_file == server_cli.run_config_overrides(
        'label-dropout-p=0.5 strategy="fedprox" label-aware=true'
    )
    file.write_text("[recipe]\nlr = 1\n")
    with pytest.raises(ConfigError, match="recipe is a table or array"):
        server_cli.run_config_overrides(str(file))
    with pytest.raises(ConfigError, match="unreadable"):
        server_cli.run_config_overrides(str(tmp_path / "missing.toml"))
