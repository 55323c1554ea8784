"""Loopback ports for the scoring servers: chosen where no outgoing connection can take them.

The kernel gives outgoing connections (the gateway's own calls to its scoring servers, any
client on the machine) local ports from `net.ipv4.ip_local_port_range`. A scoring server
takes 10-15 s between being told its port and binding it; a port in that range can be taken
by a connection meanwhile, and the server then exits with "address already in use". So:

- with GATEWAY_SCORING_PORT=0 a port is drawn at random below that range (or above it, if
  there is no room below), never from it;
- with a fixed first port P the servers use P to P+2, skipping one held by anything else;
- from the choice until the server answers, the gateway itself keeps the port bound (with
  SO_REUSEADDR, not listening): the kernel never hands an explicitly bound port to an
  outgoing connection, and the server, which binds with SO_REUSEADDR too, still can;
- a server that could not bind its port anyway is started again at once on another port
  (gateway/serving/launcher.py), the port it lost being left alone for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from pathlib import Path

from gateway.settings import Settings

log = logging.getLogger("gateway.rollout")

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Fixed ports: P to P+2 (live, standby, next version).
WINDOW = 3
# Free ports drawn from, on the side of the ephemeral range with room for this many.
BAND = 16384
LOWEST = 1024  # below it, ports need privileges
# A port a server failed to bind is not chosen again for this many seconds.
AVOID_FOR = 60.0


def ephemeral_range(path: Path | None = None) -> tuple[int, int] | None:
    """The kernel's range of local ports for outgoing connections (EPHEMERAL_RANGE unless
    ``path``); None if it cannot be read (not Linux, or /proc not mounted)."""
    try:
        low, high = (int(part) for part in (path or EPHEMERAL_RANGE).read_text().split())
    except (OSError, ValueError):
        return None
    return (low, high) if 0 < low <= high <= 65535 else None


def band(ephemeral: tuple[int, int] | None) -> tuple[int, int] | None:
    """Where free ports are drawn from: the BAND ports just below the ephemeral range, or just
    above it if there is less room below; None (the kernel's choice) if there is room on
    neither side, or the range is unknown."""
    if ephemeral is None:
        return None
    low, high = ephemeral
    below = (max(LOWEST, low - BAND), low - 1)
    above = (high + 1, min(65535, high + BAND))
    best = max(below, above, key=lambda b: b[1] - b[0])
    return best if best[1] - best[0] + 1 >= 100 else None


def overlap(settings: Settings, ephemeral: tuple[int, int] | None) -> list[int]:
    """The scoring ports the settings name that fall in the ephemeral range (for the fixed
    ones, P to P+2; with port 0, all of them when there is no room outside the range)."""
    if ephemeral is None:
        return []
    low, high = ephemeral
    if settings.scoring_port:
        return [p for p in fixed_ports(settings.scoring_port) if low <= p <= high]
    return [] if band(ephemeral) is not None else [low, high]


def fixed_ports(first: int) -> range:
    return range(first, min(first + WINDOW, 65536))


def warn_if_ephemeral(settings: Settings, path: Path | None = None) -> bool:
    """Log one warning if the scoring ports can collide with outgoing connections; whether it
    did."""
    path = path or EPHEMERAL_RANGE
    ephemeral = ephemeral_range(path)
    ports = overlap(settings, ephemeral)
    if not ports or ephemeral is None:
        return False
    low, high = ephemeral
    if settings.scoring_port:
        which = f"GATEWAY_SCORING_PORT={settings.scoring_port} (scoring ports " + ", ".join(
            map(str, ports)
        )
        fix = f"set GATEWAY_SCORING_PORT below {low}"
    else:
        which = "GATEWAY_SCORING_PORT=0 (no free band outside the range: the kernel's choice"
        fix = "narrow the range"
    log.warning(
        "%s) overlaps the kernel's ephemeral port range %d-%d (%s): an outgoing connection "
        "can hold a scoring port and a server then fails to start; %s, or reserve the ports "
        "with sysctl net.ipv4.ip_local_reserved_ports",
        which,
        low,
        high,
        path,
        fix,
    )
    return True


class Ports:
    """Ports for new servers (see the module's docstring). A server still stopping keeps its
    port: with fixed ports, a new one waits for it."""

    def __init__(self, settings: Settings, ephemeral: Path | None = None):
        self._host = settings.scoring_host
        self._first = settings.scoring_port
        self._band = band(ephemeral_range(ephemeral))
        self._taken: set[int] = set()
        self._held: dict[int, socket.socket] = {}  # bound by us until the server has bound it
        self._avoid: dict[int, float] = {}  # a port a server failed to bind: until when
        self._freed = asyncio.Event()

    async def take(self) -> int:
        """A port no server of ours has, that was bindable just now; held until ``bound``."""
        if not self._first:
            return self._any()
        waited = False
        while True:
            now = time.monotonic()
            for port in fixed_ports(self._first):
                if port in self._taken or self._avoid.get(port, 0.0) > now:
                    continue
                if self._hold(port):
                    return port
            if not waited:
                log.warning(
                    "every scoring port from %d to %d is in use or failed lately: waiting",
                    self._first,
                    self._first + WINDOW - 1,
                )
                waited = True
            self._freed.clear()
            with contextlib.suppress(TimeoutError):  # held by something else: look again
                await asyncio.wait_for(self._freed.wait(), 1.0)

    def bound(self, port: int) -> None:
        """The server listens on ``port`` now (or will never): stop holding it."""
        held = self._held.pop(port, None)
        if held is not None:
            held.close()

    def avoid(self, port: int) -> None:
        """A server failed to bind ``port``: choose others for a while."""
        self._avoid[port] = time.monotonic() + AVOID_FOR

    def release(self, port: int) -> None:
        self.bound(port)
        self._taken.discard(port)
        self._freed.set()

    def _any(self) -> int:
        now = time.monotonic()
        self._avoid = {p: until for p, until in self._avoid.items() if until > now}
        if self._band is not None:
            low, high = self._band
            for _ in range(200):
                port = random.randint(low, high)
                if port not in self._taken and port not in self._avoid and self._hold(port):
                    return port
        port = self._hold(0)  # the kernel's choice, from the ephemeral range: held at once
        if not port:
            raise OSError(f"no free port on {self._host}")
        return port

    def _hold(self, port: int) -> int:
        """Bind ``port`` as uvicorn will (SO_REUSEADDR: one in TIME_WAIT counts as free) and
        keep it bound; the port, or 0 if it is in use."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, port))
        except OSError:
            sock.close()
            return 0
        port = sock.getsockname()[1]
        self._held[port] = sock
        self._taken.add(port)
        return port
