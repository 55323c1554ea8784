"""Child processes of the stack, the tests and the benchmarks: start, wait ready, stop, inspect.

Each child starts in a session of its own, so that one signal to its process group reaches
everything it started there. Descendants that leave the group (the gateway starts each
scoring server in a session of its own) are followed as `psutil` processes, which know
their start time: a pid the system has since given to another process is never signalled.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Kept when a prefix in ``drop`` covers it (dropped only when named in full): the operator's
# choice about MLflow's usage telemetry, not a server or a store of the calling shell.
KEPT = frozenset({"MLFLOW_DISABLE_TELEMETRY"})


def environment(drop: Iterable[str] = (), **extra: str) -> dict[str, str]:
    """This process's environment for a child: the venv first on PATH (MLflow runs `python`
    and `uvicorn` from PATH), unbuffered output, variables starting with any prefix in
    ``drop`` removed (those in KEPT only when named in full), then ``extra``."""
    prefixes = tuple(drop)
    variables = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(prefixes) or (k in KEPT and k not in prefixes)
    }
    variables["PATH"] = f"{BIN}{os.pathsep}{variables.get('PATH', '')}"
    variables["PYTHONUNBUFFERED"] = "1"
    variables.update(extra)
    return variables


# The kernel's range of local ports for outgoing connections (32768-60999 by default).
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Free ports are drawn from this many ports just below it (20000-32767 by default).
FREE_BAND = 12768


def free_port() -> int:
    """A loopback port that was free a moment ago, drawn at random below the kernel's
    ephemeral range: a port inside it can be taken by any client connection on the machine
    before the server it is meant for binds it. The kernel's choice if that fails."""
    low = _ephemeral_start()
    if low is not None and low > 1024 + 100:
        for _ in range(100):
            port = random.randint(max(1024, low - FREE_BAND), low - 1)
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ephemeral_start() -> int | None:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def start(
    args: list[str],
    *,
    log: Path | None = None,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start ``args`` in a session of its own; output is appended to ``log`` if given."""
    handle = log.open("ab") if log else None
    try:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT if handle else None,
            start_new_session=True,
        )
    finally:
        if handle:
            handle.close()  # the child has its own copy


def wait_until_up(
    url: str,
    timeout: float = 90.0,
    proc: subprocess.Popen | None = None,
    every: float = 0.25,
) -> float:
    """Wait until GET ``url`` answers 200 and return the seconds it took.

    Raises RuntimeError as soon as ``proc`` exits (no point waiting for a dead server),
    and TimeoutError after ``timeout`` seconds."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(every)
    raise TimeoutError(f"{url} not up after {timeout:.0f}s")


def descendants(pid: int) -> list[psutil.Process]:
    """Every process below ``pid`` now (none if it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def running(process: psutil.Process) -> bool:
    """False once the process has exited or is a zombie (nothing left to stop)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    """User + system CPU time these processes have used so far (gone ones count as 0)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def stop(
    proc: subprocess.Popen,
    timeout: float = 20.0,
    also: Iterable[psutil.Process] = (),
) -> None:
    """Stop ``proc`` and everything it started: SIGTERM to its process group, SIGKILL to
    what is left after ``timeout``.

    Descendants that left the group (found now, or passed in ``also`` because they were
    seen earlier) get the leader's own shutdown to stop them first; any still running
    afterwards get SIGTERM, then SIGKILL after ``timeout``.
    """
    known = {*also, *descendants(proc.pid)}
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    left = [p for p in known if running(p)]
    for process in left:
        _signal(process, signal.SIGTERM)
    killed = _wait_gone(left, timeout)
    for process in killed:
        _signal(process, signal.SIGKILL)
    _wait_gone(killed, timeout)


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _signal(process: psutil.Process, signum: int) -> None:
    with suppress(psutil.Error):
        process.send_signal(signum)  # checks the pid still names the same process


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of ``processes`` still running after at most ``timeout`` seconds.

    Polls rather than psutil.wait_procs: a zombie that nobody reaps counts as gone here."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in processes if running(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)
