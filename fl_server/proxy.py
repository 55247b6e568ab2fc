"""The fleet-only TLS reverse proxy in front of the SuperLink (nginx), closed by default.

Flower 1.42's SuperLink serves the Fleet API (``/v1/fleet/``: what SuperNodes use), the Control
API (``/v1/control/``: registering keys, submitting runs; **no authentication** in open-source
Flower) and the Runtime API (``/v1/runtime/``: the coordinator's own ServerApp processes) on one
port. So the SuperLink listens on loopback only (``127.0.0.1:superlink_port``), and the sites'
address (``listen_host:port``) is served by nginx, which terminates TLS with the coordinator's
server certificate and forwards POST ``/v1/fleet/<method>`` (and GET ``/health``) to the
SuperLink over TLS verified with the federation's CA; every other path answers 404. The Flower
CLI of the coordinator (``fl-server register``, ``fl-server run``) reaches the Control API on
loopback. ``fl-server start`` runs both; :func:`server_block` is also what a system nginx
includes (``fl-server proxy-config``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from common.errors import ConfigError

SERVER_BLOCK = """\
upstream echofl_superlink {{
    server 127.0.0.1:{superlink_port};
    keepalive 16;
}}

server {{
    listen {listen};
    server_name {server_name};

    ssl_certificate     {server_cert};
    ssl_certificate_key {server_key};
    ssl_protocols       TLSv1.2 TLSv1.3;
    ssl_session_cache   shared:echofl_fleet_{port}:1m;

    # model weights travel in Fleet request bodies
    client_max_body_size    512m;
    proxy_request_buffering off;
    proxy_buffering         off;

    # upstream: the SuperLink on loopback over TLS, verified with the federation's CA
    proxy_ssl_trusted_certificate {ca_cert};
    proxy_ssl_verify              on;
    proxy_ssl_verify_depth        2;
    proxy_ssl_name                localhost;
    proxy_ssl_server_name         on;
    proxy_ssl_session_reuse       on;
    proxy_http_version            1.1;
    proxy_set_header Connection   "";
    proxy_set_header Host         $host;
    proxy_read_timeout            120s;
    proxy_send_timeout            120s;

    # the Fleet API: SuperNodes POST protobuf to /v1/fleet/<method>; nothing else is forwarded
    location /v1/fleet/ {{
        limit_except POST {{
            deny all;
        }}
        if ($request_uri !~ "^/v1/fleet/[a-z][a-z-]*$") {{
            return 404;
        }}
        proxy_pass https://echofl_superlink;
    }}

    location = /health {{
        limit_except GET {{
            deny all;
        }}
        proxy_pass https://echofl_superlink;
    }}

    # the Control API, the Runtime API and anything else: not here
    location / {{
        return 404;
    }}
}}
"""

MAIN = """\
# Written by fl-server start from {home}/coordinator.toml; do not edit (it is rewritten).
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 256;
}}

http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

{server}}}
"""


def listen_address(host: str, port: int) -> str:
    """nginx's ``listen`` value (IPv6 literals in brackets), with TLS."""
    return f"[{host}]:{port} ssl" if ":" in host else f"{host}:{port} ssl"


def server_block(
    *,
    listen_host: str,
    port: int,
    superlink_port: int,
    server_name: str,
    server_cert: Path,
    server_key: Path,
    ca_cert: Path,
) -> str:
    return SERVER_BLOCK.format(
        listen=listen_address(listen_host, port),
        port=port,
        superlink_port=superlink_port,
        server_name=server_name,
        server_cert=server_cert,
        server_key=server_key,
        ca_cert=ca_cert,
    )


def write_main_config(prefix: Path, home: Path, server: str) -> Path:
    """A complete nginx configuration under ``prefix`` (pid, logs, temp files there: nginx runs
    as the coordinator's user, without root)."""
    for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    indented = "".join(f"    {line}\n" if line else "\n" for line in server.splitlines())
    path = prefix / "nginx.conf"
    path.write_text(MAIN.format(home=home, prefix=prefix, server=indented))
    return path


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )
    if found is None:
        raise ConfigError(
            Path("nginx"),
            "nginx is not installed: the sites' address is served by a fleet-only nginx proxy "
            "(install it, e.g. `apt-get install nginx-light`), or initialise with "
            "--expose-control-api to publish the SuperLink itself (read what that means first)",
        )
    return found


def nginx_command(config: Path, prefix: Path) -> list[str]:
    return [nginx_binary(), "-p", str(prefix), "-c", str(config), "-g", "daemon off;"]
