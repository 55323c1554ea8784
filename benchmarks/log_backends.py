"""The prediction log's cost at c=32, in one run of `make bench-serving`: the same gateway with
its log in SQLite files (the default), in PostgreSQL, and off (GATEWAY_PREDICTION_LOG=false).
Interleaved rounds, as the other targets; the bound is PostgreSQL at 90 % or more of off.

PostgreSQL is a server of the run's own (stack/postgres.py, the machine's binaries), prepared
as a deployment's is; without its binaries the comparison is skipped with a note. ``serving``
is benchmarks.serving, which runs this: its gateways, targets and wrk rounds.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

import httpx
import psutil

from gateway.observability.prediction_log import LINGER
from stack import postgres
from stack.postgres import LogDatabase
from stack.processes import wait_until_up

if TYPE_CHECKING:
    from pathlib import Path

NAMES = {"files": "log in SQLite files", "postgresql": "log in PostgreSQL", "off": "log off"}
# PostgreSQL logging may cost at most this share of the throughput with the log off.
BOUND = 0.10


@dataclass
class Gateways:
    """(pid, URL) of a gateway per backend, and the database the PostgreSQL one writes."""

    by_backend: dict[str, tuple[int, str]]
    database: LogDatabase

    def database_processes(self) -> list[psutil.Process]:
        """The server and its backends: on these two cores, its CPU is the log's cost too."""
        pid = int((self.database.server.data / "postmaster.pid").read_text().split()[0])
        server = psutil.Process(pid)
        return [server, *server.children(recursive=True)]


def start(stack: ExitStack, serving: ModuleType, s, args) -> Gateways | None:
    """The two gateways beside the run's own (its log in files), or None where PostgreSQL is
    not installed."""
    if postgres.postgres_bin() is None:
        print("PostgreSQL's server binaries are missing: no log comparison.", flush=True)
        return None
    database = stack.enter_context(postgres.log_database())
    started = {
        "postgresql": serving.start_gateway(
            s.procs, "gateway-log-postgresql", s.tracking_uri,
            GATEWAY_PREDICTION_LOG_URI=database.writer,
        ),
        "off": serving.start_gateway(
            s.procs, "gateway-log-off", s.tracking_uri, GATEWAY_PREDICTION_LOG="false"
        ),
    }  # fmt: skip
    for proc, url in started.values():
        wait_until_up(f"{url}/ready", timeout=args.start_timeout, proc=proc)
    for _, url in started.values():
        serving.wait_for_standby(url, timeout=args.start_timeout)
    # One answer logged, so that the gateway's connection (a database process whose CPU is
    # charged to the log) exists before the processes are listed.
    httpx.post(f"{started['postgresql'][1]}/predict", json={"text": "A fine film."}, timeout=30)
    time.sleep(2 * LINGER)
    s.procs.remember()
    by_backend = {"files": (s.gateway.pid, s.gateway_url)} | {
        name: (proc.pid, url) for name, (proc, url) in started.items()
    }
    return Gateways(by_backend, database)


def measure(serving: ModuleType, gateways: Gateways, bodies: dict[str, Path], args) -> dict:
    """c=32 on each, in interleaved rounds; each figure also as a share of the log off."""
    targets = []
    for name, (pid, url) in gateways.by_backend.items():
        charged = serving.components(pid, pid)
        if name == "postgresql":
            charged["database"] = gateways.database_processes()
        targets.append(
            serving.Target(
                NAMES[name], "POST /predict", f"{url}/predict", bodies["predict"], charged
            )
        )
    print("The prediction log at c=32: files, PostgreSQL, off...", flush=True)
    measured = serving.measure(targets, 32, args.duration, args.warmup, args.rounds)
    off = measured[NAMES["off"]]["rps"]
    return {
        name: measured[NAMES[name]] | {"share_of_off": measured[NAMES[name]]["rps"] / off}
        for name in gateways.by_backend
    }


def table(result: dict) -> list[str]:
    lines = [
        "### The prediction log at c=32 (one review per request)",
        "",
        "| log | req/s | p50 ms | p99 ms | errors | gateway CPU ms/req | database CPU ms/req "
        "| share of off |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in result.items():
        cpu = row["server_cpu_ms_per_request"]
        database = f"{cpu['database']:.3f}" if "database" in cpu else "—"
        lines.append(
            f"| {NAMES[name]} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['errors']} | {cpu.get('gateway', float('nan')):.3f} | {database} "
            f"| {row['share_of_off']:.1%} |"
        )
    if "postgresql" in result:
        cost = 1 - result["postgresql"]["share_of_off"]
        verdict = "met" if cost <= BOUND else "not met"
        lines += ["", f"PostgreSQL logging costs {cost:.1%} of the throughput with the log off "
                  f"(bound: at most {BOUND:.0%}): **{verdict}**."]  # fmt: skip
    return lines
