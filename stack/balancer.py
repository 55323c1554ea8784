"""The load balancer in front of several gateways: nginx, configured and run by the stack.

nginx runs in the foreground as a child of the stack, with `-p`/`-c`/`-e` pointing into the
state dir: its config, pid file, temporary folders and logs live there, so it needs no
root-owned path and no daemon.

Open-source nginx has no active health checks, so the stack does them: it asks each
gateway's /ready every second, marks the ones that are not ready `down` in the config and
reloads nginx (SIGHUP: new workers take the new config, the old ones finish their requests).
A gateway without a model therefore gets no traffic. Between two checks nginx's passive
checks cover a gateway that dies or loses its model: a connection error, a timeout or a 503
counts as a failure (`max_fails` of them take it out for `fail_timeout`), and the request is
sent once more to another gateway. POSTs are retried too (`non_idempotent`): a prediction
has no side effects, so answering it from another gateway is safe. A label (`/feedback`) is
stored once, so it is sent again only if it never reached a gateway. nginx retries only while
nothing of the answer has reached the client.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

# Debian installs nginx in /usr/sbin, which is not on every user's PATH.
SBIN = os.pathsep.join(["/usr/local/sbin", "/usr/sbin", "/sbin"])
# A body is read whole before it is forwarded (so that it can be sent again); it stays in
# memory up to this size, above the gateway's own default limit (1 MB, answered with 413).
MAX_BODY = "2m"
MAX_FAILS, FAIL_TIMEOUT = 2, "5s"

CONFIG = """\
# Written by `make up` (stack/balancer.py) and rewritten when a gateway's readiness changes.
daemon off;
master_process on;
worker_processes 1;
pid {run}/nginx.pid;
error_log {logs}/nginx-error.log notice;

events {{
    worker_connections 4096;
}}

http {{
    log_format upstream '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
                        '$request_time upstream=$upstream_addr '
                        'upstream_status=$upstream_status';
    access_log {logs}/nginx-access.log upstream;
    client_body_temp_path {run}/client_body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    # Bodies and answers stay in memory: nothing is written to the temporary folders.
    client_max_body_size {max_body};
    client_body_buffer_size {max_body};
    proxy_max_temp_file_size 0;
    server_tokens off;

    upstream gateways {{
        # The gateway with the fewest requests in progress; no stickiness by client address.
        least_conn;
{servers}
        keepalive 32;
        # Below the gateway's own keep-alive (5 s), so nginx never reuses a closing connection.
        keepalive_timeout 4s;
    }}

    server {{
        listen {host}:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_connect_timeout 2s;
        proxy_read_timeout 60s;
        proxy_next_upstream_tries {tries};

        location / {{
            proxy_pass http://gateways;
            # Predictions have no side effects: a request that met a dead gateway, a timeout
            # or a 503 is sent to another gateway once, POSTs included.
            proxy_next_upstream error timeout http_503 non_idempotent;
        }}

        # A label is stored once. Once a gateway has it, a timeout or a dropped answer does not
        # mean it was not stored, and a second try would answer 409 for a stored label: only a
        # request that never reached a gateway (connection refused or timed out) goes to another.
        location = /feedback {{
            proxy_pass http://gateways;
            proxy_next_upstream error timeout;
        }}

        # nginx's own errors (no gateway could answer) in the gateway's format.
        error_page 502 503 =503 @unavailable;
        error_page 504 @timeout;
        error_page 413 @too_large;
        location @unavailable {{
            default_type application/json;
            add_header Retry-After 1 always;
            return 503 '{{"detail": "No gateway is available. Please try again later."}}\\n';
        }}
        location @timeout {{
            default_type application/json;
            return 504 '{{"detail": "The gateway did not answer in time."}}\\n';
        }}
        location @too_large {{
            default_type application/json;
            return 413 '{{"detail": "Request body is too large."}}\\n';
        }}
    }}
}}
"""


def find_nginx(name: str = "nginx") -> str | None:
    """The nginx executable: ``name`` on PATH, then in the sbin folders."""
    return shutil.which(name) or shutil.which(name, path=SBIN)


def render(host: str, port: int, gateways: dict[int, bool], run: Path, logs: Path) -> str:
    """The config for gateways on ``host`` at these ports (port: ready). The ones not ready
    are marked down, unless none is ready: then every one gets its chance (and clients get
    a gateway's own answer, 503 without a model, rather than nginx's)."""
    anyone = any(gateways.values())
    servers = "\n".join(
        f"        server {host}:{port} max_fails={MAX_FAILS} fail_timeout={FAIL_TIMEOUT}"
        + (" down;" if anyone and not ready else ";")
        for port, ready in sorted(gateways.items())
    )
    return CONFIG.format(
        host=host,
        port=port,
        servers=servers,
        run=run,
        logs=logs,
        max_body=MAX_BODY,
        tries=min(len(gateways), 2),
    )


class Balancer:
    """nginx on ``host:port`` in front of gateways on ``host`` at ``ports``; its files are in
    ``folder`` (config, pid, temporary folders) and ``logs``."""

    def __init__(
        self, nginx: str, host: str, port: int, ports: list[int], folder: Path, logs: Path
    ):
        self.nginx, self.host, self.port = nginx, host, port
        self.folder, self.logs = folder.resolve(), logs.resolve()
        self.config = self.folder / "nginx.conf"
        self.ready = dict.fromkeys(ports, True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._write()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self, *extra: str) -> list[str]:
        error_log = str(self.logs / "nginx-error.log")
        return [self.nginx, "-p", str(self.folder), "-c", str(self.config), "-e", error_log, *extra]

    def check(self) -> str | None:
        """None if nginx accepts the config, else what it said."""
        done = subprocess.run(self.command("-t", "-q"), capture_output=True, text=True)
        return None if done.returncode == 0 else (done.stderr or done.stdout).strip()

    def update(self, ready: dict[int, bool], proc: subprocess.Popen) -> bool:
        """Rewrite the config and reload nginx if a gateway's readiness changed."""
        if ready == self.ready:
            return False
        self.ready = dict(ready)
        self._write()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGHUP)
        return True

    def _write(self) -> None:
        text = render(self.host, self.port, self.ready, self.folder, self.logs)
        partial = self.config.with_suffix(".tmp")
        partial.write_text(text)
        partial.replace(self.config)  # nginx never reads half a file
