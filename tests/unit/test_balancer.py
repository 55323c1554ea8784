"""The nginx config the stack writes for several gateways."""

from __future__ import annotations

import json
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from stack.balancer import Balancer, find_nginx, render
from stack.processes import free_port
from stack.settings import StackSettings
from stack.up import Stack

NGINX_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"


def servers(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("server 127")]


def test_gateways_that_are_not_ready_are_marked_down(tmp_path):
    text = render("127.0.0.1", 8000, {8002: False, 8001: True}, tmp_path, tmp_path)
    assert servers(text) == [
        "server 127.0.0.1:8001 max_fails=2 fail_timeout=5s;",
        "server 127.0.0.1:8002 max_fails=2 fail_timeout=5s down;",
    ]


def test_with_no_gateway_ready_every_one_gets_its_chance(tmp_path):
    """Clients then get a gateway's own answer (503: no model yet), not nginx's."""
    text = render("127.0.0.1", 8000, {8001: False, 8002: False}, tmp_path, tmp_path)
    assert not [line for line in servers(text) if "down" in line]


def test_every_path_nginx_writes_is_in_the_state_dir(tmp_path):
    balancer = Balancer("nginx", "127.0.0.1", 8000, [8001], tmp_path / "run", tmp_path / "logs")
    text = balancer.config.read_text()
    words = [word.rstrip(";") for word in text.split() if word.startswith("/")]
    paths = [word for word in words if word not in ("/", "/feedback")]  # not locations
    assert paths and all(path.startswith(str(tmp_path)) for path in paths), paths
    assert "daemon off;" in text
    assert balancer.command()[1:] == [
        "-p", str(tmp_path / "run"), "-c", str(balancer.config),
        "-e", str(tmp_path / "logs" / "nginx-error.log"),
    ]  # fmt: skip


@pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (.ci/run installs it)")
def test_nginx_accepts_the_config_and_reloads_on_a_change(tmp_path):
    nginx = find_nginx()
    balancer = Balancer(nginx, "127.0.0.1", 8000, [8001, 8002], tmp_path, tmp_path / "logs")
    assert balancer.check() is None
    # Stands in for nginx: only the signal matters. SIGHUP's default action is restored in
    # it, as a shell started under `nohup` would have it ignored.
    done = subprocess.Popen(
        ["sleep", "30"], preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL)
    )
    try:
        assert balancer.update({8001: True, 8002: True}, done) is False, "nothing changed"
        assert balancer.update({8001: True, 8002: False}, done) is True
        assert done.wait(10) == -1  # SIGHUP ends `sleep`; nginx reloads instead
        assert "8002 max_fails=2 fail_timeout=5s down;" in balancer.config.read_text()
        assert balancer.check() is None
    finally:
        done.kill()
        done.wait()


def test_several_gateways_without_nginx_stop_make_up_before_anything_starts():
    settings = StackSettings(gateway_replicas=2, nginx_bin="no-such-nginx")
    with pytest.raises(SystemExit) as refused:
        Stack(settings).nginx()
    assert "apt-get install nginx" in str(refused.value)
    assert "GATEWAY_REPLICAS=1" in str(refused.value)
    assert Stack(StackSettings(gateway_replicas=1, nginx_bin="no-such-nginx")).nginx() is None


class Stub:
    """A gateway on a local port that reads each request and hands it to ``answer``."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.paths: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                head, body = _read_request(conn)
                if head:
                    self.paths.append(head.split(b" ")[1].decode())
                    self.answer(conn, body)

    def answer(self, conn: socket.socket, body: bytes) -> None:
        """Close without answering, as a gateway killed mid-request does."""


class ResetsFirst(Stub):
    """Resets its first connection once the request has arrived, as a replica going away
    does; answers the next ones with the body it was sent."""

    def answer(self, conn: socket.socket, body: bytes) -> None:
        if len(self.paths) == 1:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        answer = json.dumps({"body": body.decode()}).encode()
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode()
            + answer
        )


def _read_request(conn: socket.socket) -> tuple[bytes, bytes]:
    """The request's head and body (b"", b"" if the connection closed first)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b"", b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\ncontent-length: *(\d+)", head)
    while length and len(body) < int(length[1]):
        body += conn.recv(65536)
    return head, body


def listening(nginx: subprocess.Popen, port: int, error_log: Path) -> None:
    """Wait until the nginx just started accepts connections on ``port``."""
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert nginx.poll() is None, error_log.read_text()
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.1)


@pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (.ci/run installs it)")
def test_a_prediction_is_sent_again_but_a_label_that_reached_a_gateway_is_not(tmp_path):
    """Once a gateway has a label it may have stored it: sent again, the client would get
    409 for a stored label. A prediction has no side effects and is retried elsewhere."""
    gateways = [Stub(), Stub()]
    port = free_port()
    ports = [g.port for g in gateways]
    balancer = Balancer(find_nginx(), "127.0.0.1", port, ports, tmp_path, tmp_path / "logs")
    nginx = subprocess.Popen(balancer.command(), stderr=subprocess.DEVNULL)
    try:
        listening(nginx, port, tmp_path / "logs" / "nginx-error.log")
        label = {"request_id": "r1", "label": "positive"}
        assert httpx.post(f"{balancer.url}/feedback", json=label).status_code == 503
        sent = sorted(p for g in gateways for p in g.paths)
        assert sent == ["/feedback"], "a label reaches one gateway only"
        assert httpx.post(f"{balancer.url}/predict", json={"text": "x"}).status_code == 503
        sent = sorted(p for g in gateways for p in g.paths)
        assert sent == ["/feedback", "/predict", "/predict"], "a prediction is sent again"
    finally:
        nginx.terminate()
        nginx.wait(10)
        for gateway in gateways:
            gateway.sock.close()


@pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (.ci/run installs it)")
def test_a_prediction_nginx_gave_up_on_is_sent_once_more_with_its_body(tmp_path):
    """deploy/nginx.conf on this machine's nginx, its one upstream a local gateway: when
    every try of a request fails (502), the request goes once more to the replicas as they
    are then (`@again`), method and body included. With Docker's DNS this is a replica's
    address removed while the request was trying it."""
    gateway, port = ResetsFirst(), free_port()
    config = NGINX_CONF.read_text()
    config = re.sub(r"\n\s*resolver(_timeout)? [^;]*;", "", config)
    config = config.replace("server gateway:8000 resolve", f"server 127.0.0.1:{gateway.port}")
    config = config.replace("listen 8000;", f"listen 127.0.0.1:{port};")
    config = config.replace(
        "error_log /dev/stderr", f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log"
    )
    config = config.replace("access_log /dev/stdout", f"access_log {tmp_path}/access.log")
    (tmp_path / "nginx.conf").write_text(config)
    nginx = subprocess.Popen(
        [find_nginx(), "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
         "-e", str(tmp_path / "error.log"), "-g", "daemon off;"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        listening(nginx, port, tmp_path / "error.log")
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"text": "a fine film"})
        assert answer.status_code == 200, answer.text
        assert json.loads(answer.json()["body"]) == {"text": "a fine film"}
        assert gateway.paths == ["/predict", "/predict"], "tried once, then once more"
    finally:
        nginx.terminate()
        nginx.wait(10)
        gateway.sock.close()
