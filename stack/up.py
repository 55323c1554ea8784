"""`make up`: tracking server, first training if needed, then the gateway, in the foreground.

Every process is started in its own session so that Ctrl-C or SIGTERM here
stops it and all its children; nothing is left running afterwards.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from stack import processes, tracking
from stack.processes import BIN
from stack.settings import StackSettings


class Stack:
    def __init__(self, settings: StackSettings):
        self.settings = settings
        self.procs: list[subprocess.Popen] = []
        # MLflow runs `python` and `uvicorn` from PATH: this venv's must come first. The store
        # URI (it may hold a password) goes to the tracking server alone.
        self.env = processes.environment(
            drop=("MLFLOW_BACKEND_STORE_URI",), MLFLOW_TRACKING_URI=settings.tracking_uri
        )

    def start(self, args: list[str], log: str | None = None, **env: str) -> subprocess.Popen:
        """Start a child in its own session; a server's output goes to its log file."""
        proc = processes.start(
            args, log=self.log_path(log) if log else None, env={**self.env, **env}
        )
        self.procs.append(proc)
        return proc

    def log_path(self, name: str) -> Path:
        logs = self.settings.state_dir.resolve() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return logs / name

    def wait_healthy(self, name: str, url: str, proc: subprocess.Popen) -> None:
        timeout = self.settings.start_timeout
        try:
            processes.wait_until_up(url, timeout=timeout, proc=proc, every=0.5)
        except RuntimeError:
            message = f"{name} exited with status {proc.returncode}; {self.logs_hint}"
            raise SystemExit(message) from None
        except TimeoutError:
            message = f"{name} did not answer {url} within {timeout:.0f}s; {self.logs_hint}"
            raise SystemExit(message) from None

    @property
    def logs_hint(self) -> str:
        return f"see the logs in {self.settings.state_dir.resolve() / 'logs'}."

    def tracking_server(self) -> None:
        s = self.settings
        state = s.state_dir.resolve()
        state.mkdir(parents=True, exist_ok=True)
        step(
            f"1/3 MLflow tracking server on {s.tracking_uri} "
            f"(store: {tracking.shown(s.backend_store_uri)}; artifacts: {s.artifacts_destination})"
        )
        proc = self.start(
            tracking.command(s.mlflow_port),
            "mlflow.log",
            **tracking.server_env(s.backend_store_uri, s.artifacts_destination),
        )
        self.wait_healthy("The tracking server", f"{s.tracking_uri}/health", proc)

    def train_if_needed(self) -> None:
        s = self.settings
        try:
            version = MlflowClient(s.tracking_uri).get_model_version_by_alias(
                s.model_name, s.model_alias
            )
            step(f"2/3 {s.model_name}@{s.model_alias} is v{version.version}: no training needed")
            return
        except MlflowException:
            pass
        step(f"2/3 No {s.model_name}@{s.model_alias} yet: training on the packaged data")
        proc = self.start(
            [
                str(BIN / "mlflow"),
                "run",
                ".",
                "--env-manager",
                "local",
                "--experiment-name",
                s.experiment_name,
            ],
        )
        status = proc.wait()
        self.procs.remove(proc)
        if status != 0:
            raise SystemExit("Training failed; see its output above.")

    def gateway(self) -> None:
        s = self.settings
        gateway = f"http://127.0.0.1:{s.gateway_port}"
        step(f"3/3 Gateway on {gateway}, scoring servers from port {s.scoring_port}")
        proc = self.start(
            [str(BIN / "python"), "-m", "gateway"],
            log="gateway.log",
            GATEWAY_HOST="127.0.0.1",
            GATEWAY_PORT=str(s.gateway_port),
            GATEWAY_SCORING_PORT=str(s.scoring_port),
            GATEWAY_MODEL_NAME=s.model_name,
            GATEWAY_MODEL_ALIAS=s.model_alias,
        )
        self.wait_healthy("The gateway", f"{gateway}/ready", proc)

    def stop(self) -> None:
        """Stop every child, the last started first, with whatever each started."""
        for proc in reversed(self.procs):
            processes.stop(proc)


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def banner(s: StackSettings) -> None:
    gateway = f"http://127.0.0.1:{s.gateway_port}"
    print(
        f"""
The stack is up. Ctrl-C stops everything.

  Gateway         {gateway}
  API docs        {gateway}/docs
  MLflow UI       {s.tracking_uri}
  Tracking store  {tracking.shown(s.backend_store_uri)}
  Artifacts       {s.artifacts_destination} (proxied by the tracking server)
  Scoring server  http://127.0.0.1:{s.scoring_port}/invocations
  Logs            {s.state_dir.resolve() / "logs"}/{{mlflow,gateway}}.log

  curl -s -X POST {gateway}/predict -H 'Content-Type: application/json' \\
       -d '{{"text": "This movie was absolutely amazing!"}}'
""",
        flush=True,
    )


def interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    settings = StackSettings()
    stack = Stack(settings)
    # SIGTERM behaves like Ctrl-C, so `finally` stops every child either way; SIGINT is set
    # too, since a shell that starts us in the background makes us inherit it ignored.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        stack.tracking_server()
        stack.train_if_needed()
        stack.gateway()
        banner(settings)
        while all(proc.poll() is None for proc in stack.procs):
            time.sleep(1)
        print(
            f"A server exited unexpectedly; {stack.logs_hint} Stopping the stack.", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        print("\nStopping...", flush=True)
        return 0
    finally:
        # A second Ctrl-C must not cut the stop short and leave servers behind; it is bounded.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
