"""`make up`: tracking server, first training if needed, then the gateway, in the foreground.

Every process is started in its own session so that Ctrl-C or SIGTERM here
stops it and all its children; nothing is left running afterwards.

With GATEWAY_REPLICAS=N (N > 1), N gateways run behind nginx on GATEWAY_PORT, each with its
own port, scoring servers, model cache and logs. The stack checks each one's /ready every
second and tells nginx which are ready (stack/balancer.py), and starts a gateway that exits
again, after a back-off that doubles while it keeps failing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from stack import processes, tracking
from stack.balancer import Balancer, find_nginx
from stack.processes import BIN
from stack.settings import StackSettings
from tracking_server import store


@dataclass
class Replica:
    """One of several gateways, and its process now."""

    name: str
    port: int
    env: dict[str, str]
    proc: subprocess.Popen
    # Processes it started, seen while it ran: stopped with it if it dies (its scoring
    # servers run in sessions of their own and outlive it).
    seen: set[psutil.Process] = field(default_factory=set)
    ready: bool = False
    failures: int = 0  # exits in a row without being ready in between
    restart_at: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Stack:
    def __init__(self, settings: StackSettings):
        self.settings = settings
        self.procs: list[subprocess.Popen] = []
        self.replicas: list[Replica] = []
        self.balancer: Balancer | None = None
        self.balancer_proc: subprocess.Popen | None = None
        # MLflow runs `python` and `uvicorn` from PATH: this venv's must come first. The store
        # URI (it may hold a password) goes to the tracking server alone. Every child, and
        # whatever it starts, runs with MLflow's usage telemetry off (unless turned on).
        self.env = processes.environment(
            drop=("MLFLOW_BACKEND_STORE_URI",),
            MLFLOW_TRACKING_URI=settings.tracking_uri,
            **settings.telemetry_env,
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
            f"(store: {store.shown(s.backend_store_uri)}; artifacts: {s.artifacts_destination})"
        )
        auth = tracking.auth_env(state, s.passwords_dir) if s.registry_auth else {}
        proc = self.start(
            tracking.command(s.mlflow_port, auth=s.registry_auth),
            "mlflow.log",
            **tracking.server_env(s.backend_store_uri, s.artifacts_destination),
            **auth,
        )
        self.wait_healthy("The tracking server", f"{s.tracking_uri}/health", proc)
        # This process only reads the registry: it signs in as the gateways do.
        os.environ.update(self.credentials("gateway"))

    def credentials(self, account: str) -> dict[str, str]:
        """How a child signs in to the registry as ``account`` (nothing without permissions)."""
        s = self.settings
        return tracking.credentials(s.passwords_dir, account) if s.registry_auth else {}

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
            **self.credentials("trainer"),
        )
        status = proc.wait()
        self.procs.remove(proc)
        if status != 0:
            raise SystemExit("Training failed; see its output above.")

    def gateway(self) -> None:
        s = self.settings
        if s.gateway_replicas > 1:
            return self.gateways()
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
            GATEWAY_MONITOR_DIR=str(s.state_dir.resolve() / "monitoring"),
            **self.credentials("gateway"),
        )
        self.wait_healthy("The gateway", f"{gateway}/ready", proc)

    def gateways(self) -> None:
        """Several gateways, each with its own scoring servers, model cache and logs, behind
        nginx on the gateway port."""
        s = self.settings
        count, url = s.gateway_replicas, f"http://127.0.0.1:{s.gateway_port}"
        nginx = self.required_nginx()
        state = s.state_dir.resolve()
        step(f"3/3 {count} gateways behind nginx on {url}")
        for i in range(1, count + 1):
            name = f"gateway-{i}"
            port = s.replica_port + i - 1 if s.replica_port else processes.free_port()
            if port == s.gateway_port:
                raise SystemExit(
                    f"{name} would listen on GATEWAY_PORT {port}: change REPLICA_PORT."
                )
            scoring = s.scoring_port + 3 * (i - 1) if s.scoring_port else 0
            env = {
                "GATEWAY_REPLICA": name,
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(port),
                "GATEWAY_SCORING_PORT": str(scoring),
                "GATEWAY_MODEL_NAME": s.model_name,
                "GATEWAY_MODEL_ALIAS": s.model_alias,
                "GATEWAY_SCORING_LOG_DIR": str(state / "logs" / name),
                "GATEWAY_MODEL_CACHE_DIR": str(state / "gateways" / name / "models"),
                # One folder for all: each replica logs to predictions/<its name>/, and
                # feedback for an answer of any replica goes to the one feedback.sqlite.
                "GATEWAY_MONITOR_DIR": str(state / "monitoring"),
                **self.credentials("gateway"),
            }
            replica = Replica(name, port, env, self.start_gateway(name, env))
            print(f"    {name} on {replica.url}, scoring servers from port {scoring or 'free'}")
            self.replicas.append(replica)
        for replica in self.replicas:
            self.wait_healthy(f"Gateway {replica.name}", f"{replica.url}/ready", replica.proc)
            replica.ready = True
        self.balancer = Balancer(
            nginx,
            "127.0.0.1",
            s.gateway_port,
            [r.port for r in self.replicas],
            state / "balancer",
            state / "logs",
        )
        problem = self.balancer.check()
        if problem:
            raise SystemExit(f"nginx refused {self.balancer.config}: {problem}")
        self.balancer_proc = self.start(self.balancer.command(), log="nginx.log")
        self.wait_healthy("nginx", f"{url}/ready", self.balancer_proc)

    def nginx(self) -> str | None:
        """The nginx executable when several gateways need it (checked before anything starts)."""
        return None if self.settings.gateway_replicas == 1 else self.required_nginx()

    def required_nginx(self) -> str:
        s = self.settings
        nginx = find_nginx(s.nginx_bin)
        if nginx is None:
            raise SystemExit(
                f"GATEWAY_REPLICAS={s.gateway_replicas} needs nginx as the load balancer, and "
                f"{s.nginx_bin!r} was not found (on PATH or in /usr/sbin). Install it "
                "(Debian/Ubuntu: apt-get install nginx), set NGINX_BIN to its path, or run one "
                "gateway: GATEWAY_REPLICAS=1."
            )
        return nginx

    def start_gateway(self, name: str, env: dict[str, str]) -> subprocess.Popen:
        return self.start([str(BIN / "python"), "-m", "gateway"], log=f"{name}.log", **env)

    def start_replica(self, replica: Replica) -> None:
        """Start a replica again."""
        replica.proc = self.start_gateway(replica.name, replica.env)
        replica.seen = set()

    def supervise(self) -> int:
        """Run until a server the stack cannot do without exits (the tracking server, nginx,
        a lone gateway): start replicas again that exit, keep nginx's list of ready ones."""
        while True:
            replicas = {id(r.proc) for r in self.replicas}
            if any(p.poll() is not None for p in self.procs if id(p) not in replicas):
                print(
                    f"A server exited unexpectedly; {self.logs_hint} Stopping the stack.",
                    file=sys.stderr,
                )
                return 1
            for replica in self.replicas:
                self.watch(replica)
            if self.balancer is not None and self.balancer_proc is not None:
                ready = {r.port: r.ready for r in self.replicas}
                if self.balancer.update(ready, self.balancer_proc):
                    print(f"Balancer: {balance(self.replicas)}", flush=True)
            time.sleep(1)

    def watch(self, replica: Replica) -> None:
        """Note a running replica's readiness and children; stop what a dead one left behind
        and start it again after its back-off."""
        s, proc = self.settings, replica.proc
        if proc.poll() is None:
            alive = {p for p in replica.seen if processes.running(p)}
            replica.seen = alive | set(processes.descendants(proc.pid))
            replica.ready = answers(f"{replica.url}/ready")
            if replica.ready:
                replica.failures = 0
        elif replica.restart_at is None:
            replica.ready = False
            processes.stop(proc, also=replica.seen)
            self.procs.remove(proc)
            delay = min(
                s.replica_restart_backoff * 2**replica.failures, s.replica_restart_backoff_max
            )
            replica.failures += 1
            replica.restart_at = time.monotonic() + delay
            print(
                f"Gateway {replica.name} exited with status {proc.returncode}; starting it again "
                f"in {delay:.0f} s (log: {self.log_path(replica.name + '.log')}).",
                file=sys.stderr,
                flush=True,
            )
        elif time.monotonic() >= replica.restart_at:
            replica.restart_at = None
            print(f"Starting gateway {replica.name} again.", flush=True)
            self.start_replica(replica)

    def stop(self) -> None:
        """Stop every child, the last started first, with whatever each started."""
        for proc in reversed(self.procs):
            processes.stop(proc)


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def balance(replicas: list[Replica]) -> str:
    down = [r.name for r in replicas if not r.ready]
    if not down:
        return "every gateway is ready"
    if len(down) == len(replicas):
        return "no gateway is ready; each still gets requests (503 until it serves a model)"
    return f"no traffic to {', '.join(down)} (not ready)"


def answers(url: str) -> bool:
    """True if GET ``url`` answers 200 within 2 s."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def banner(s: StackSettings) -> None:
    gateway = f"http://127.0.0.1:{s.gateway_port}"
    replicas = (
        f" (nginx in front of {s.gateway_replicas} gateways; logs gateway-N.log, nginx-*.log)"
        if s.gateway_replicas > 1
        else ""
    )
    print(
        f"""
The stack is up. Ctrl-C stops everything.

  Gateway         {gateway}{replicas}
  API docs        {gateway}/docs
  MLflow UI       {s.tracking_uri}
  Tracking store  {store.shown(s.backend_store_uri)}{permissions(s)}
  Artifacts       {s.artifacts_destination} (proxied by the tracking server)
  Scoring server  http://127.0.0.1:{s.scoring_port}/invocations
  Logs            {s.state_dir.resolve() / "logs"}/{{mlflow,gateway}}.log

  curl -s -X POST {gateway}/predict -H 'Content-Type: application/json' \\
       -d '{{"text": "This movie was absolutely amazing!"}}'
""",
        flush=True,
    )


def permissions(s: StackSettings) -> str:
    if not s.registry_auth:
        return ""
    return (
        f"\n  Registry login  the accounts of tracking_server/access.py, passwords in "
        f"{s.passwords_dir}\n                  (the UI: user promoter, or admin)"
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
        stack.nginx()
        stack.tracking_server()
        stack.train_if_needed()
        stack.gateway()
        banner(settings)
        return stack.supervise()
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
