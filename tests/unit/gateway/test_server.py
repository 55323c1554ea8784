"""The HTTP server's limits, on a real uvicorn on loopback with a tiny app: the read deadline
closes clients that do not send a whole request, and the connection limit makes room by
closing waiting connections, never one whose request is being answered."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from contextlib import contextmanager

import uvicorn

from gateway.server import bounded_protocol
from gateway.settings import Settings

RELEASE = threading.Event()
SLOW_STARTED: list[str] = []


async def app(scope, receive, send):
    """Answers at once, except /slow, which answers once RELEASE is set."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/slow":
        SLOW_STARTED.append(scope["path"])
        while not RELEASE.is_set():
            await asyncio.sleep(0.01)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def server(read_timeout: float, max_connections: int):
    settings = Settings(
        tracking_uri="http://127.0.0.1:9",
        request_read_timeout=read_timeout,
        max_client_connections=max_connections,
        _env_file=None,
    )
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=bounded_protocol(settings),
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = running.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        RELEASE.set()
        running.should_exit = True
        thread.join(10)
        RELEASE.clear()
        SLOW_STARTED.clear()


def connect(port: int, send: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(send)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (reading past any answer), or None."""
    started = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - started < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    return None


def until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.005)


def request(path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def test_clients_that_never_send_a_whole_request_are_closed_at_the_deadline():
    with server(read_timeout=0.5, max_connections=100) as port:
        idle = connect(port)
        half_headers = connect(port, b"GET / HTTP/1.1\r\nHost: t\r\n")
        half_body = connect(port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        trickle = connect(port, b"GET / HTTP/1.1\r\n")
        served = connect(port, request())
        assert served.recv(65536).startswith(b"HTTP/1.1 200")
        for _ in range(5):  # a byte every 0.2 s does not extend the deadline
            time.sleep(0.2)
            try:
                trickle.sendall(b"X")
            except OSError:
                break
        for sock in (idle, half_headers, half_body, trickle):
            assert closed_within(sock, 5.0) is not None
        # A client that got its answer is idle on keep-alive: closed after the deadline too.
        assert closed_within(served, 5.0) is not None


def test_over_the_limit_waiting_connections_make_room_never_busy_ones():
    with server(read_timeout=30, max_connections=3) as port:
        busy = connect(port, request("/slow"))  # being answered: never closed for room
        until(lambda: len(SLOW_STARTED) == 1)
        keep_alive = connect(port, request())
        assert keep_alive.recv(65536).startswith(b"HTTP/1.1 200")
        idle = connect(port)
        newcomer = connect(port)  # one too many: the oldest that never sent a request goes
        assert closed_within(idle, 5.0) is not None
        another = connect(port)  # again: now the newcomer, not the client it answered
        assert closed_within(newcomer, 5.0) is not None
        keep_alive.sendall(request())
        assert keep_alive.recv(65536).startswith(b"HTTP/1.1 200")
        RELEASE.set()
        assert busy.recv(65536).startswith(b"HTTP/1.1 200"), "the busy one was closed"
        another.sendall(request())
        assert another.recv(65536).startswith(b"HTTP/1.1 200")
        for sock in (busy, keep_alive, idle, newcomer, another):
            sock.close()


def test_when_every_connection_is_busy_the_newcomer_is_refused():
    with server(read_timeout=30, max_connections=2) as port:
        busy = [connect(port, request("/slow")) for _ in range(2)]
        until(lambda: len(SLOW_STARTED) == 2)
        newcomer = connect(port)
        assert closed_within(newcomer, 5.0) is not None
        RELEASE.set()
        for sock in busy:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            sock.close()


def test_headers_over_64_kib_get_431_and_the_connection_closes():
    with server(read_timeout=30, max_connections=100) as port:
        huge = connect(port, b"GET / HTTP/1.1\r\nHost: t\r\n")
        for _ in range(20):  # 20 x 8 KiB of one header, never finished
            try:
                huge.sendall(b"X-Filler: " + b"a" * 8192 + b"\r\n")
            except OSError:
                break
        answer = huge.recv(65536)
        assert answer.startswith(b"HTTP/1.1 431 ")
        assert answer.endswith(b'{"detail": "Request headers exceed 64 KiB."}')
        assert closed_within(huge, 5.0) is not None
        # A large body is not a large header, even in the same packets.
        body = b"x" * 1_000_000
        head = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
        post = connect(port, head + body)
        assert post.recv(65536).startswith(b"HTTP/1.1 200")
        post.close()
