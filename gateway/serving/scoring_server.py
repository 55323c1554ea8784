"""One `mlflow models serve` process: started in a process group of its own, waited on until
it answers, pinged, and stopped with everything it started.

Every server's output goes to one size-rotated file, `scoring.log` in the log directory, each
line prefixed with the server's version and port, so the logs of a long-running gateway that
starts many servers stay bounded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

import aiohttp

from gateway.serving.scoring import Upstream
from gateway.settings import Settings

log = logging.getLogger("gateway.scoring_server")


class StartFailed(Exception):
    """The server did not come up (it exited, or did not answer in time): worth another try."""


class PortTaken(StartFailed):
    """The server exited because something else held its port: another port will do."""


# What uvicorn says when its port is held ("[Errno 98] error while attempting to bind on
# address ('127.0.0.1', 5001): address already in use").
BIND_FAILED = re.compile(r"address already in use|\[Errno 98\]", re.IGNORECASE)


class OutputLog:
    """The scoring servers' output, in one file rotated by size."""

    def __init__(self, directory: Path, max_bytes: int, backups: int):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "scoring.log"
        self._handler = RotatingFileHandler(
            self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
        )
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))

    def write(self, source: str, line: str) -> None:
        self._handler.handle(logging.makeLogRecord({"msg": f"[{source}] {line}"}))

    def close(self) -> None:
        self._handler.close()


# `mlflow models serve` (MLflow's CLI, and the uvicorn it starts, in one process group) run so
# that they go when the gateway goes, even when it is SIGKILLed and cannot stop them: the
# kernel sends the CLI SIGTERM when its parent dies (PR_SET_PDEATHSIG), and the CLI passes it
# to its whole group. Otherwise an orphaned server keeps its port, and a gateway started again
# on the same ports cannot serve.
WITH_THE_GATEWAY = """\
import ctypes, os, signal, sys
def stop(signum=None, frame=None):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.killpg(0, signal.SIGTERM)
signal.signal(signal.SIGTERM, stop)
if sys.platform == "linux":
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
gateway = int(sys.argv.pop(1))
if os.getppid() != gateway:  # it died before the line above
    stop()
from mlflow.cli import cli
sys.argv[0] = "mlflow"
cli()
"""


class ScoringServer:
    """One `mlflow models serve` child, in its own process group so all of it can be stopped."""

    def __init__(
        self, settings: Settings, version: str, port: int, model_path: Path, output: OutputLog
    ):
        self.settings = settings
        self.version = version
        self.port = port
        self.model_path = model_path
        self._host = (
            "127.0.0.1" if settings.scoring_host in ("0.0.0.0", "") else settings.scoring_host
        )
        self.upstream = Upstream(f"http://{self._host}:{port}", version)
        self.process: asyncio.subprocess.Process | None = None
        self._output = output
        self._last_lines: deque[str] = deque(maxlen=5)
        self.bind_failed: str | None = None  # its line saying its port was in use, if any
        self._copying: asyncio.Task | None = None

    def __repr__(self) -> str:
        return f"<scoring server v{self.version} at {self.upstream.url}>"

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.returncode is not None

    @property
    def _started(self) -> asyncio.subprocess.Process:
        if self.process is None:
            raise RuntimeError(f"{self!r} used before start()")
        return self.process

    async def start(self) -> None:
        process = self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WITH_THE_GATEWAY,
            str(os.getpid()),
            "models",
            "serve",
            "-m",
            str(self.model_path),
            "--env-manager",
            "local",
            "--host",
            self.settings.scoring_host,
            "--port",
            str(self.port),
            "--workers",
            str(self.settings.scoring_workers),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.settings.child_env(),
            start_new_session=True,
        )
        assert process.stdout is not None  # stdout=PIPE above
        self._copying = asyncio.create_task(self._copy_output(process.stdout))

    async def wait_ready(self, client: aiohttp.ClientSession | None) -> None:
        """Ping until it answers; StartFailed if it exits first or time runs out."""
        deadline = time.monotonic() + self.settings.start_timeout
        while time.monotonic() < deadline:
            code = self._started.returncode
            if code is not None:
                await self._output_read()
                if self.bind_failed is not None:
                    raise PortTaken(f"scoring server could not bind its port: {self.bind_failed}")
                raise StartFailed(f"scoring server exited with code {code}: {self.last_line()}")
            if await self.ping(client, self.settings.ping_timeout):
                return
            await asyncio.sleep(0.25)
        raise StartFailed(f"scoring server not ready after {self.settings.start_timeout:g}s")

    async def ping(self, client: aiohttp.ClientSession | None, timeout: float) -> bool | None:
        """Whether GET /ping answers 200 within ``timeout``; None when the gateway itself could
        not ask (no free file descriptor or local port): that says nothing about the server.

        ``client`` is the rollout's, None until the rollout starts (only the state machine's
        tests, with fake servers, run it unstarted)."""
        return await ping(require_client(client), self.upstream.url, timeout)

    def refuses(self) -> bool:
        """Whether a connection to its port is refused right now: nothing listens there.

        On loopback the kernel refuses at once; any other failure (out of file descriptors,
        of local ports, a full backlog) is no evidence that the server is gone."""
        try:
            with socket.create_connection((self._host, self.port), timeout=0.05):
                return False
        except ConnectionRefusedError:
            return True
        except OSError:
            return False

    def input_example(self) -> dict[str, Any] | None:
        """The version's `serving_input_example.json`, or None if it has none."""
        try:
            return json.loads((self.model_path / "serving_input_example.json").read_text())
        except (OSError, ValueError):
            return None

    async def wait(self) -> int:
        return await self._started.wait()

    async def stop(self, kill: bool = False) -> None:
        """SIGTERM the whole group, SIGKILL what is left after the grace period.

        ``kill``: SIGKILL at once (a stopped or hung process never handles SIGTERM)."""
        if self.process is None:
            return
        steps = [(signal.SIGKILL, 5.0)] if kill else [(signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)]
        for sig, grace in steps:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                continue
            if not _group_alive(self.process.pid):
                break
        if self._copying is not None:
            try:
                await asyncio.wait_for(self._copying, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._copying.cancel()

    async def _output_read(self, timeout: float = 2.0) -> None:
        """Wait (a little) until the exited server's output is all read."""
        if self._copying is not None:
            await asyncio.wait([self._copying], timeout=timeout)

    def last_line(self) -> str:
        """Its last line of output (the reason a start failed, most often)."""
        return self._last_lines[-1][:200] if self._last_lines else "no output"

    async def _copy_output(self, stdout: asyncio.StreamReader) -> None:
        source = f"v{self.version}:{self.port}"
        pending = b""
        try:
            while chunk := await stdout.read(65536):
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    self._line(source, raw)
                if len(pending) > 65536:  # a line without end: written in pieces
                    self._line(source, pending)
                    pending = b""
            if pending:
                self._line(source, pending)
        except (OSError, ValueError) as error:
            log.warning("output of %s lost: %s", source, error)

    def _line(self, source: str, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            if self.bind_failed is None and BIND_FAILED.search(line):
                self.bind_failed = line[:200]
            self._last_lines.append(line)
            self._output.write(source, line)


Factory = Callable[[str, int, Path], ScoringServer]


def factory(settings: Settings) -> Factory:
    """Makes a server for (version, port, model directory); all share one output log."""
    output = OutputLog(
        settings.scoring_log_dir, settings.scoring_log_max_bytes, settings.scoring_log_backups
    )
    return lambda version, port, path: ScoringServer(settings, version, port, path, output)


def require_client(client: aiohttp.ClientSession | None) -> aiohttp.ClientSession:
    """The rollout's HTTP client, which it opens when it starts."""
    if client is None:
        raise RuntimeError("scoring server called before the rollout's start(): no HTTP client")
    return client


async def ping(client: aiohttp.ClientSession, url: str, timeout: float) -> bool | None:
    """GET /ping answers 200 (HEAD gets 405 from MLflow's scoring server)."""
    try:
        async with client.get(f"{url}/ping", timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            return r.status == 200
    except TimeoutError:
        return False
    except aiohttp.ClientConnectorError as error:
        # Refused: nothing listens. Anything else at connect time is the gateway's own trouble.
        return False if isinstance(error.os_error, ConnectionRefusedError) else None
    except (aiohttp.ClientError, ConnectionError):
        return False  # it hung up, reset or answered garbage
    except OSError:
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
