"""Serving benchmark: what the gateway costs and what it buys, measured side by side.

One run starts everything on free loopback ports: a throwaway tracking server, one model
trained on the packaged data and promoted, the gateway (which starts `mlflow models serve`)
with its default settings and again with batching off, the in-process baseline
(benchmarks/inprocess.py) and a bare pass-through proxy (benchmarks/passthrough.py). wrk then
posts the same real IMDB reviews to each target:

- direct: POST /invocations on the gateway's scoring server, one review per request;
- pass-through hop: the same bodies through the bare proxy to that same scoring server, the
  floor of any extra Python hop (what the gateway adds beyond it is its own work);
- gateway: POST /predict;
- in-process: POST /predict on a FastAPI app that calls pyfunc predict itself.

Latency at concurrency 1, throughput and latency at concurrency 32, and reviews/s for
batches of 1,000 (gateway /predict/batch against direct /invocations). Results go to
benchmarks/results/serving.{json,md,png}, each watched figure with its value in every round;
before they are written, the figures are judged against the committed ones
(benchmarks/serving_guard.py). Everything started here is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

from benchmarks import log_backends, serving_guard
from benchmarks.serving_guard import HOP
from model.names import ALIAS, MODEL_NAME
from stack.processes import (
    ROOT,
    cpu_seconds,
    descendants,
    environment,
    free_port,
    start,
    stop,
    wait_until_up,
)
from stack.tracking import tracking_server

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SCRIPT = HERE / "wrk" / "post_bodies.lua"
# The gateway runs with its defaults, except: the registry is polled rarely (nothing is
# promoted during the run) and authentication is off. GATEWAY_* variables of the calling
# shell are not passed on, and it runs outside the repo so that no `.env` file applies.
GATEWAY_ENV = {"GATEWAY_POLL_INTERVAL": "60", "GATEWAY_API_KEYS": ""}


# --------------------------------------------------------------------------- processes


class Processes:
    """Everything this run starts, so that all of it is stopped, whatever happens.

    Each process starts in its own session and is stopped with its process group. Its
    descendants are remembered too (the gateway starts its scoring servers in sessions of
    their own), so that any left after a stop are stopped as well.
    """

    def __init__(self, logs: Path):
        self.logs = logs
        self.procs: list[subprocess.Popen] = []
        self.known: dict[int, set[psutil.Process]] = {}  # leader pid -> descendants seen

    def spawn(self, name: str, args: list[str], **extra: str) -> subprocess.Popen:
        variables = environment(drop=("MLFLOW_", "GATEWAY_"), **extra)
        variables["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT), variables.get("PYTHONPATH")])
        )
        proc = start(args, log=self.logs / f"{name}.log", cwd=self.logs, env=variables)
        self.procs.append(proc)
        self.remember()
        return proc

    def remember(self) -> None:
        for proc in self.procs:
            self.known.setdefault(proc.pid, set()).update(descendants(proc.pid))

    def stop_all(self) -> None:
        self.remember()
        for proc in reversed(self.procs):
            stop(proc, also=self.known[proc.pid])


def _terminate(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------- the stack


@dataclass
class Target:
    name: str
    label: str
    url: str
    bodies: Path
    components: dict[str, list[psutil.Process]] = field(default_factory=dict)


def train(procs: Processes, tracking_uri: str, max_rows: int, preset: str, timeout: float) -> str:
    """Train, register and promote one model the way a user would; return its version."""
    started = time.monotonic()
    proc = procs.spawn(
        "train",
        [
            sys.executable,
            "-m",
            "pipelines.train",
            "--preset",
            preset,
            "--max-rows",
            str(max_rows),
            "--promote",
            "always",
        ],
        MLFLOW_TRACKING_URI=tracking_uri,
    )
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        message = f"training took over {timeout:.0f}s; see {procs.logs}/train.log"
        raise RuntimeError(message) from None
    if code != 0:
        tail = (procs.logs / "train.log").read_text(errors="replace").splitlines()[-10:]
        raise RuntimeError("training failed:\n" + "\n".join(tail))
    reply = httpx.get(
        f"{tracking_uri}/api/2.0/mlflow/registered-models/alias",
        params={"name": MODEL_NAME, "alias": ALIAS},
        timeout=10,
    )
    reply.raise_for_status()
    version = reply.json()["model_version"]["version"]
    print(
        f"  model {MODEL_NAME} v{version} trained and promoted in "
        f"{time.monotonic() - started:.0f}s",
        flush=True,
    )
    return version


def start_gateway(procs: Processes, name: str, tracking_uri: str, **settings: str):
    port = free_port()
    proc = procs.spawn(
        name,
        [sys.executable, "-m", "gateway"],
        MLFLOW_TRACKING_URI=tracking_uri,
        GATEWAY_PORT=str(port),
        GATEWAY_SCORING_LOG_DIR=str(procs.logs / f"{name}-scoring"),
        **GATEWAY_ENV,
        **settings,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_for_standby(gateway_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{gateway_url}/info", timeout=10).json().get("standby_server"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"no standby scoring server behind {gateway_url} after {timeout:g}s")


def start_inprocess(procs: Processes, tracking_uri: str, version: str):
    port = free_port()
    proc = procs.spawn(
        "inprocess",
        [
            sys.executable,
            "-m",
            "benchmarks.inprocess",
            "--model-uri",
            f"models:/{MODEL_NAME}/{version}",
            "--port",
            str(port),
        ],
        MLFLOW_TRACKING_URI=tracking_uri,
    )
    return proc, f"http://127.0.0.1:{port}"


def start_passthrough(procs: Processes, upstream: str):
    port = free_port()
    proc = procs.spawn(
        "passthrough",
        [
            sys.executable,
            "-m",
            "benchmarks.passthrough",
            "--upstream",
            upstream,
            "--port",
            str(port),
        ],
    )
    return proc, f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- load


def sample_reviews(
    count: int, batch: int, max_chars: int, seed: int
) -> tuple[list[str], list[str]]:
    """``batch`` real IMDB reviews of at most ``max_chars``; the first ``count`` for singles."""
    from pipelines.data import load_reviews

    reviews = load_reviews()
    short = reviews[reviews["text"].str.len() <= max_chars]
    texts = short.sample(max(count, batch), random_state=seed)["text"].tolist()
    return texts[:count], texts[:batch]


def write_bodies(tmp: Path, singles: list[str], batch: list[str]) -> dict[str, Path]:
    """One JSON body per line, per wire format; the Lua script cycles through the lines."""
    split = lambda texts: {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}  # noqa: E731
    files: dict[str, list[dict]] = {
        "predict": [{"text": t} for t in singles],
        "invocations": [split([t]) for t in singles],
        "predict_batch": [{"texts": batch}],
        "invocations_batch": [split(batch)],
    }
    paths = {}
    for name, bodies in files.items():
        paths[name] = tmp / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(b) + "\n" for b in bodies))
    return paths


def check_target(url: str, bodies: Path) -> None:
    """One request of each kind must succeed before anything is timed."""
    body = bodies.read_text().splitlines()[0]
    reply = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
    if reply.status_code != 200:
        raise RuntimeError(f"{url} answered {reply.status_code}: {reply.text[:300]}")


def wrk(url: str, bodies: Path, connections: int, seconds: float) -> dict:
    """One wrk run (one thread); its summary, latency quantiles and its own CPU time."""
    duration = f"-d{max(1, round(seconds))}s"  # wrk takes whole seconds only
    args = [
        "wrk", "-t1", f"-c{connections}", duration, "--latency", "--timeout", "30s",
        "-s", str(SCRIPT), url, "--", str(bodies),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 90)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRK_JSON ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"wrk failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}"
        )
    raw = json.loads(lines[-1].removeprefix("WRK_JSON "))
    raw["wrk_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return raw


def pooled(runs: list[dict]) -> dict:
    """Several wrk runs of one target as one: totals, and percentiles of all requests.

    Each run's latency comes as 1,000 quantiles; each quantile stands for a thousandth of
    that run's requests, so pooling them weighted by request count gives the percentiles
    of every request measured.
    """
    requests = sum(r["requests"] for r in runs)
    seconds = sum(r["duration_us"] for r in runs) / 1e6
    points = sorted(
        (q, r["requests"] / len(r["quantiles_us"])) for r in runs for q in r["quantiles_us"]
    )
    total = sum(weight for _, weight in points) or 1

    def percentile(p: float) -> float:
        seen = 0.0
        for value, weight in points:
            seen += weight
            if seen >= total * p / 100 - 1e-9:
                return value / 1000
        return points[-1][0] / 1000 if points else float("nan")

    transport = sum(
        r[k] for r in runs for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    non_2xx = sum(r["status_errors"] for r in runs)
    return {
        "requests": requests,
        "seconds": round(seconds, 2),
        "rps": requests / seconds,
        "p50_ms": percentile(50),
        "p90_ms": percentile(90),
        "p99_ms": percentile(99),
        "max_ms": max(r["max_us"] for r in runs) / 1000,
        "mean_ms": sum(r["mean_us"] * r["requests"] for r in runs) / max(requests, 1) / 1000,
        "errors": transport + non_2xx,
        "non_2xx": non_2xx,
        "error_kinds": {
            k: sum(r[k] for r in runs)
            for k in ("connect_errors", "read_errors", "write_errors", "timeouts", "status_errors")
        },
        "wrk_cpu_pct": round(100 * sum(r["wrk_cpu_s"] for r in runs) / seconds, 1),
        "rounds": [
            {
                "rps": round(r["requests"] / (r["duration_us"] / 1e6), 2),
                "p50_ms": r["p50_us"] / 1000,
                "p99_ms": r["p99_us"] / 1000,
            }
            for r in runs
        ],
    }


def measure(
    targets: list[Target], connections: int, seconds: float, warmup: float, rounds: int
) -> dict[str, dict]:
    """Every target at one concurrency, in interleaved rounds so that noise hits all alike.

    Each target is warmed up first; then ``rounds`` runs of ``seconds / rounds`` each go
    round the targets, forwards then backwards. The CPU time each server process used
    during its own runs is charged to it.
    """
    for target in targets:
        if warmup > 0:
            wrk(target.url, target.bodies, connections, warmup)
    runs: dict[str, list[dict]] = {t.name: [] for t in targets}
    cpu: dict[str, dict[str, float]] = {t.name: dict.fromkeys(t.components, 0.0) for t in targets}
    for round_ in range(rounds):
        for target in targets if round_ % 2 == 0 else targets[::-1]:
            before = {name: cpu_seconds(ps) for name, ps in target.components.items()}
            runs[target.name].append(wrk(target.url, target.bodies, connections, seconds / rounds))
            for name, ps in target.components.items():
                cpu[target.name][name] += cpu_seconds(ps) - before[name]
    results = {}
    for target in targets:
        result = pooled(runs[target.name])
        served = max(result["requests"], 1)
        result["server_cpu_ms_per_request"] = {
            name: round(1000 * used / served, 3) for name, used in cpu[target.name].items()
        }
        result["server_cpu_pct"] = {
            name: round(100 * used / result["seconds"], 1)
            for name, used in cpu[target.name].items()
        }
        print(
            f"  {target.name:<22} c={connections:<3} {result['rps']:8.1f} req/s  "
            f"p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
            f"errors {result['errors']}  wrk CPU {result['wrk_cpu_pct']:.0f}%  "
            f"server CPU ms/req {result['server_cpu_ms_per_request']}",
            flush=True,
        )
        results[target.name] = result
    return results


def components(gateway_pid: int | None, root_pid: int) -> dict[str, list[psutil.Process]]:
    """Which processes to charge CPU to: the gateway itself, and the scoring servers below it."""
    if gateway_pid is None:
        return {"server": [psutil.Process(root_pid), *descendants(root_pid)]}
    return {"gateway": [psutil.Process(gateway_pid)], "scoring": descendants(gateway_pid)}


# --------------------------------------------------------------------------- report


def summarise(single: dict[str, dict], batch: dict[str, dict], args) -> dict:
    direct, gateway, inproc = single["direct"], single["gateway"], single["in-process"]
    ratios = {
        "gateway_minus_direct_c1_p50_ms": gateway["c1"]["p50_ms"] - direct["c1"]["p50_ms"],
        "gateway_over_direct_c32_rps": gateway["c32"]["rps"] / direct["c32"]["rps"],
        "gateway_over_inprocess_c32_rps": gateway["c32"]["rps"] / inproc["c32"]["rps"],
        "gateway_over_inprocess_c1_p50": gateway["c1"]["p50_ms"] / inproc["c1"]["p50_ms"],
        "gateway_over_direct_batch": batch["gateway"]["reviews_per_s"]
        / batch["direct"]["reviews_per_s"],
    }
    bars = []
    if HOP in single:
        hop = single[HOP]
        own = "gateway_minus_hop_c1_p50_ms"
        ratios |= {
            "hop_minus_direct_c1_p50_ms": hop["c1"]["p50_ms"] - direct["c1"]["p50_ms"],
            own: gateway["c1"]["p50_ms"] - hop["c1"]["p50_ms"],
            "hop_over_direct_c32_rps": hop["c32"]["rps"] / direct["c32"]["rps"],
            "gateway_over_hop_c1_cpu": gateway["c1"]["server_cpu_ms_per_request"]["gateway"]
            / hop["c1"]["server_cpu_ms_per_request"]["hop"],
        }
        # The same bar for the floor: if the hop alone misses it, so must any gateway.
        delta = ratios["hop_minus_direct_c1_p50_ms"]
        clean = hop["c1"]["errors"] == 0
        bars.append(
            _bar(HOP, "c=1 p50 within 1.5 ms of direct", f"{delta:+.2f} ms", clean and delta <= 1.5)
        )
    for name in ("gateway", "gateway, batching off"):
        if name not in single:
            continue
        row = single[name]
        clean = row["c1"]["errors"] == 0 and row["c32"]["errors"] == 0
        delta = row["c1"]["p50_ms"] - direct["c1"]["p50_ms"]
        vs_direct = row["c32"]["rps"] / direct["c32"]["rps"]
        vs_inproc = row["c32"]["rps"] / inproc["c32"]["rps"]
        bars += [
            _bar(
                name, "c=1 p50 within 1.5 ms of direct", f"{delta:+.2f} ms", clean and delta <= 1.5
            ),
            _bar(name, "c=32 req/s ≥ 4× direct", f"{vs_direct:.2f}×", clean and vs_direct >= 4),
            _bar(name, "c=32 req/s ≥ in-process", f"{vs_inproc:.2f}×", clean and vs_inproc >= 1),
            _bar(
                name,
                "c=32 p99 < 50 ms",
                f"{row['c32']['p99_ms']:.1f} ms",
                clean and row["c32"]["p99_ms"] < 50,
            ),
        ]
    batch_ratio = ratios["gateway_over_direct_batch"]
    batch_clean = all(b["errors"] == 0 for b in batch.values())
    bars.append(
        _bar(
            "gateway",
            "batch reviews/s ≥ direct",
            f"{batch_ratio:.2f}×",
            batch_clean and batch_ratio >= 1.0,
        )
    )
    return {"ratios": ratios, "bars": bars}


def _bar(target: str, bar: str, measured: str, met: bool) -> dict:
    return {"target": target, "bar": bar, "measured": measured, "met": bool(met)}


def markdown(report: dict) -> str:
    lines = [
        *_header(report["meta"]),
        "",
        *_by_target_table(report["single"]),
        "",
        *_batch_table(report["batch"], report["meta"]["batch_size"]),
        "",
        *_ratios_table(report["ratios"]),
        "",
        *hop_table(report["single"]),
        *_bars_table(report["bars"]),
    ]
    if "prediction_log" in report:
        lines += ["", *log_backends.table(report["prediction_log"])]
    if "targets" in report:
        lines += ["", *serving_guard.targets_table(report["targets"])]
    if "guard" in report:
        guard = report["guard"]
        lines += ["", *serving_guard.guard_table(guard["rows"], guard["baseline"])]
    return "\n".join(lines)


def _header(meta: dict) -> list[str]:
    return [
        f"Measured {meta['measured_at']} with `{meta['command']}` on {meta['machine']}.",
        f"Model {MODEL_NAME} v{meta['model_version']} (preset `{meta['preset']}`, "
        f"{meta['training_rows'] or 'all'} training rows). {meta['reviews']['count']} IMDB reviews "
        f"of {meta['reviews']['min_chars']}–{meta['reviews']['max_chars']} characters "
        f"(median {meta['reviews']['median_chars']}), cycled. wrk -t1 per target: c=1 for "
        f"{meta['c1_seconds']:g} s, c=32 for {meta['c32_seconds']:g} s, batches for "
        f"{meta['batch_seconds']:g} s, each split into {meta['rounds']} rounds interleaved "
        f"across targets after a {meta['warmup_seconds']:g} s warm-up; percentiles over all "
        f"requests. Gateway defaults: {meta['gateway_defaults']}.",
    ]


def _by_target_table(single: dict[str, dict]) -> list[str]:
    lines = [
        "| target | c=1 p50 ms | c=1 p99 ms | c=32 req/s | c=32 p50 ms | c=32 p99 ms "
        "| server CPU ms/req at c=1 | server CPU ms/req at c=32 | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in single.items():
        c1, c32 = row["c1"], row["c32"]
        cpu1, cpu = (
            ", ".join(f"{k} {v:.2f}" for k, v in c["server_cpu_ms_per_request"].items())
            for c in (c1, c32)
        )
        lines.append(
            f"| {name} ({row['endpoint']}) | {c1['p50_ms']:.2f} | {c1['p99_ms']:.2f} | "
            f"{c32['rps']:.0f} | {c32['p50_ms']:.1f} | {c32['p99_ms']:.1f} | {cpu1} | {cpu} | "
            f"{c1['errors'] + c32['errors']} |"
        )
    return lines


def _batch_table(batch: dict[str, dict], size: int) -> list[str]:
    lines = [
        f"| batch of {size:,} reviews per call (c=1) | reviews/s | p50 ms per call | errors |",
        "|---|---|---|---|",
    ]
    for name, row in batch.items():
        lines.append(
            f"| {name} ({row['endpoint']}) | {row['reviews_per_s']:.0f} | {row['p50_ms']:.0f} | "
            f"{row['errors']} |"
        )
    return lines


def _ratios_table(r: dict) -> list[str]:
    return [
        "| ratio | gateway / direct | gateway / in-process |",
        "|---|---|---|",
        f"| c=1 p50 | {r['gateway_minus_direct_c1_p50_ms']:+.2f} ms | "
        f"{r['gateway_over_inprocess_c1_p50']:.2f}× |",
        f"| c=32 req/s | {r['gateway_over_direct_c32_rps']:.2f}× | "
        f"{r['gateway_over_inprocess_c32_rps']:.2f}× |",
        f"| batch reviews/s | {r['gateway_over_direct_batch']:.2f}× | – |",
    ]


def _bars_table(bars: list[dict]) -> list[str]:
    lines = ["| bar | target | measured | met |", "|---|---|---|---|"]
    for bar in bars:
        met = "yes" if bar["met"] else "**no**"
        lines.append(f"| {bar['bar']} | {bar['target']} | {bar['measured']} | {met} |")
    return lines


def hop_table(single: dict[str, dict]) -> list[str]:
    """c=1 p50 split into the hop itself (the bare proxy) and the gateway's own work on top."""
    if HOP not in single:
        return []
    direct, hop = single["direct"]["c1"], single[HOP]["c1"]
    lines = [
        "| c=1, one review per request | p50 ms | over direct | over the pass-through hop "
        "| proxy's own CPU ms/req |",
        "|---|---|---|---|---|",
        f"| direct | {direct['p50_ms']:.2f} | – | – | – |",
    ]
    for name, proxy in ((HOP, "hop"), ("gateway", "gateway"), ("gateway, batching off", "gateway")):
        if name not in single:
            continue
        c1 = single[name]["c1"]
        over_hop = "–" if name == HOP else f"{c1['p50_ms'] - hop['p50_ms']:+.2f} ms"
        lines.append(
            f"| {name} | {c1['p50_ms']:.2f} | {c1['p50_ms'] - direct['p50_ms']:+.2f} ms | "
            f"{over_hop} | {c1['server_cpu_ms_per_request'][proxy]:.2f} |"
        )
    return [*lines, ""]


def chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single, batch = report["single"], report["batch"]
    names = list(single)
    colours = ["#4c72b0", "#dd8452", "#c44e52", "#55a868", "#8172b3"][: len(names)]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, key, title in (
        (axes[0, 0], "c1", "Latency at concurrency 1"),
        (axes[0, 1], "c32", "Latency at concurrency 32"),
    ):
        x = range(len(names))
        p50 = [single[n][key]["p50_ms"] for n in names]
        p99 = [single[n][key]["p99_ms"] for n in names]
        ax.bar([i - 0.2 for i in x], p50, 0.4, label="p50", color=colours)
        ax.bar([i + 0.2 for i in x], p99, 0.4, label="p99", color=colours, alpha=0.45)
        for i, (a, b) in enumerate(zip(p50, p99, strict=True)):
            ax.text(i - 0.2, a, f"{a:.1f}", ha="center", va="bottom", fontsize=8)
            ax.text(i + 0.2, b, f"{b:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(x), names, fontsize=8)
        ax.set_ylabel("ms (solid p50, light p99)")
        ax.set_title(title)
    if "c32" in single[names[0]]:
        axes[0, 1].axhline(50, color="grey", ls="--", lw=1)
        axes[0, 1].text(len(names) - 0.5, 50, "p99 bar 50 ms", ha="right", va="bottom", fontsize=8)
    rps = [single[n]["c32"]["rps"] for n in names]
    ax = axes[1, 0]
    ax.bar(names, rps, color=colours)
    for i, v in enumerate(rps):
        ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_title("Throughput at concurrency 32 (one review per request)")
    ax.set_ylabel("requests/s")
    ax.tick_params(axis="x", labelsize=8)
    ax = axes[1, 1]
    bnames = list(batch)
    reviews = [batch[n]["reviews_per_s"] for n in bnames]
    ax.bar(bnames, reviews, color=colours[: len(bnames)])
    for i, v in enumerate(reviews):
        ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_title(f"Batches of {report['meta']['batch_size']:,} reviews (concurrency 1)")
    ax.set_ylabel("reviews/s")
    fig.suptitle(f"Serving benchmark, {report['meta']['measured_at']} (one run, same machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


@dataclass
class Stack:
    """What one run started, and where each part answers."""

    procs: Processes
    tracking_uri: str
    version: str
    gateway: subprocess.Popen
    gateway_url: str
    gateway_off: subprocess.Popen
    gateway_off_url: str
    inprocess: subprocess.Popen
    inprocess_url: str
    hop: subprocess.Popen
    hop_url: str
    direct_url: str


def start_stack(stack: ExitStack, tmp: Path, args) -> Stack:
    """Tracking server, one promoted model, both gateways, the baseline and the hop, all up."""
    logs = tmp / "logs"
    logs.mkdir()
    print("Starting a throwaway tracking server...", flush=True)
    tracking_uri = stack.enter_context(tracking_server(tmp / "mlflow"))
    procs = Processes(logs)
    stack.callback(procs.stop_all)  # runs first on the way out: before the tracking server
    print("Training and promoting one model on the packaged data...", flush=True)
    version = train(procs, tracking_uri, args.max_rows, args.preset, args.train_timeout)

    print(
        "Starting the gateways (and their scoring servers) and the in-process baseline...",
        flush=True,
    )
    gw_on, gw_on_url = start_gateway(procs, "gateway", tracking_uri, GATEWAY_BATCHING="true")
    gw_off, gw_off_url = start_gateway(
        procs, "gateway-nobatch", tracking_uri, GATEWAY_BATCHING="false"
    )
    inproc, inproc_url = start_inprocess(procs, tracking_uri, version)
    for proc, url in ((gw_on, gw_on_url), (gw_off, gw_off_url), (inproc, inproc_url)):
        wait_until_up(f"{url}/ready", timeout=args.start_timeout, proc=proc)
    # Each gateway then starts a standby scoring server: let it finish before measuring.
    for url in (gw_on_url, gw_off_url):
        wait_for_standby(url, timeout=args.start_timeout)
    procs.remember()
    info = httpx.get(f"{gw_on_url}/info", timeout=10).json()
    direct_url = info["scoring_server"].rstrip("/")
    if info["model_version"].lstrip("v") != version:
        raise RuntimeError(f"the gateway serves {info['model_version']}, not v{version}")
    hop, hop_url = start_passthrough(procs, direct_url)
    wait_until_up(f"{hop_url}/ready", timeout=args.start_timeout, proc=hop)
    return Stack(
        procs, tracking_uri, version, gw_on, gw_on_url, gw_off, gw_off_url, inproc, inproc_url,
        hop, hop_url, direct_url,
    )  # fmt: skip


def single_targets(s: Stack, bodies: dict[str, Path]) -> list[Target]:
    """One review per request, to each of the five targets."""
    scoring = descendants(s.gateway.pid)
    return [
        Target(
            "direct",
            "POST /invocations",
            f"{s.direct_url}/invocations",
            bodies["invocations"],
            {"scoring": scoring},
        ),
        Target(
            HOP,
            "POST /invocations via a bare proxy",
            f"{s.hop_url}/invocations",
            bodies["invocations"],
            {"hop": [psutil.Process(s.hop.pid)], "scoring": scoring},
        ),
        Target(
            "gateway",
            "POST /predict",
            f"{s.gateway_url}/predict",
            bodies["predict"],
            components(s.gateway.pid, s.gateway.pid),
        ),
        Target(
            "gateway, batching off",
            "POST /predict",
            f"{s.gateway_off_url}/predict",
            bodies["predict"],
            components(s.gateway_off.pid, s.gateway_off.pid),
        ),
        Target(
            "in-process",
            "POST /predict",
            f"{s.inprocess_url}/predict",
            bodies["predict"],
            components(None, s.inprocess.pid),
        ),
    ]


def batch_targets(s: Stack, bodies: dict[str, Path], singles: list[Target]) -> list[Target]:
    """Batches to direct and the gateway; the hop is left out: its floor is the single one."""
    by_name = {t.name: t for t in singles}
    return [
        Target(
            "direct",
            "POST /invocations",
            f"{s.direct_url}/invocations",
            bodies["invocations_batch"],
            by_name["direct"].components,
        ),
        Target(
            "gateway",
            "POST /predict/batch",
            f"{s.gateway_url}/predict/batch",
            bodies["predict_batch"],
            by_name["gateway"].components,
        ),
    ]


def measure_single(targets: list[Target], args) -> dict[str, dict]:
    single: dict[str, dict] = {t.name: {"endpoint": t.label} for t in targets}
    for key, connections, seconds in (("c1", 1, args.c1_duration), ("c32", 32, args.duration)):
        measured = measure(targets, connections, seconds, args.warmup, args.rounds)
        for name, result in measured.items():
            single[name][key] = result
    return single


def measure_batch(targets: list[Target], batch_size: int, args) -> dict[str, dict]:
    batch: dict[str, dict] = {t.name: {"endpoint": t.label} for t in targets}
    measured = measure(targets, 1, args.batch_duration, args.warmup, args.rounds)
    for name, result in measured.items():
        result["reviews_per_s"] = result["rps"] * batch_size
        batch[name] |= result
    return batch


def run(args) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk (or run `make bench-serving`)")
    started = time.monotonic()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serving-")))
        s = start_stack(stack, tmp, args)
        singles, batch_texts = sample_reviews(
            args.reviews, args.batch_size, args.max_chars, args.seed
        )
        bodies = write_bodies(tmp, singles, batch_texts)
        targets = single_targets(s, bodies)
        batches = batch_targets(s, bodies, targets)
        for target in targets + batches:
            check_target(target.url, target.bodies)
        this = sys.modules[__name__]
        log_gateways = log_backends.start(stack, this, s, args) if args.logs else None
        print(f"Ready after {time.monotonic() - started:.0f}s. Measuring...", flush=True)
        single = measure_single(targets, args)
        batch = measure_batch(batches, len(batch_texts), args)
        if log_gateways:
            logs = log_backends.measure(this, log_gateways, bodies, args)
    figures = serving_guard.figures(single, batch)
    report: dict = {
        "meta": meta(args, s.version, singles, len(batch_texts), started),
        "single": single,
        "batch": batch,
    }
    if log_gateways:
        report["prediction_log"] = logs
    return (
        report
        | summarise(single, batch, args)
        | {
            "figures": figures,
            "targets": serving_guard.targets(figures),
        }
    )


def meta(args, version: str, singles: list[str], batch_size: int, started: float) -> dict:
    """How, when and on what the run was made: the figures mean nothing without it."""
    lengths = sorted(len(t) for t in singles)
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": args.command,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average at start {args.load_at_start}, "
        f"at the end {os.getloadavg()[0]:.1f}",
        "wrk": _wrk_version(),
        "model_version": version,
        "preset": args.preset,
        "training_rows": args.max_rows,
        "reviews": {
            "count": len(singles),
            "min_chars": lengths[0],
            "median_chars": int(statistics.median(lengths)),
            "max_chars": lengths[-1],
        },
        "batch_size": batch_size,
        "c1_seconds": args.c1_duration,
        "c32_seconds": args.duration,
        "batch_seconds": args.batch_duration,
        "warmup_seconds": args.warmup,
        "rounds": args.rounds,
        "gateway_defaults": _gateway_defaults(),
        "total_seconds": round(time.monotonic() - started),
    }


def _gateway_defaults() -> str:
    from gateway.settings import Settings

    fields = Settings.model_fields
    keys = ("batching", "batch_max_rows", "batch_max_calls", "scoring_workers", "max_connections")
    return ", ".join(f"{k}={fields[k].default}" for k in keys if k in fields)


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (done.stdout or done.stderr).splitlines()[0].strip()


def main() -> None:
    args = arguments()
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    # Read before anything is written: --output may be where the committed results are.
    before, before_meta = serving_guard.committed(args.baseline)
    try:
        report = run(args)
    except KeyboardInterrupt:
        print("\nInterrupted: everything started was stopped; no results written.", file=sys.stderr)
        raise SystemExit(130) from None
    report["guard"] = {
        "baseline": {
            "file": _shown(args.baseline),
            "measured_at": before_meta.get("measured_at"),
            "machine": before_meta.get("machine"),
        },
        "rows": serving_guard.compare(before, report["figures"]),
    }
    table = markdown(report)
    print("\n" + table)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "serving.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    )
    (args.output / "serving.md").write_text(table + "\n")
    chart(report, args.output / "serving.png")
    print(
        f"\nWrote {args.output}/serving.json, serving.md and serving.png "
        f"({report['meta']['total_seconds']}s in all)."
    )
    regressed = [r["label"] for r in report["guard"]["rows"] if r["verdict"] == "REGRESSED"]
    print(f"\nREGRESSED: {'; '.join(regressed)}" if regressed else "\nNothing regressed.")


def arguments() -> argparse.Namespace:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--duration", type=float, default=16, help="seconds per c=32 run")
    cli.add_argument("--c1-duration", type=float, default=16, help="seconds per c=1 run")
    cli.add_argument("--batch-duration", type=float, default=24, help="seconds per batch run")
    cli.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per target")
    cli.add_argument(
        "--rounds", type=int, default=8, help="interleaved runs per target: the guard's bands"
    )
    cli.add_argument(
        "--reviews", type=int, default=200, help="distinct reviews for single requests"
    )
    cli.add_argument("--batch-size", type=int, default=1000, help="reviews per batch call")
    cli.add_argument("--max-chars", type=int, default=2000, help="longest review used")
    cli.add_argument("--seed", type=int, default=0, help="which reviews are drawn")
    cli.add_argument("--preset", default="best", help="training preset of the served model")
    cli.add_argument("--max-rows", type=int, default=0, help="training rows; 0 = all")
    cli.add_argument("--train-timeout", type=float, default=300)
    cli.add_argument("--start-timeout", type=float, default=180)
    cli.add_argument("--output", type=Path, default=RESULTS, help="where the results go")
    cli.add_argument(
        "--no-logs",
        dest="logs",
        action="store_false",
        help="skip the prediction log's comparison (files, PostgreSQL, off)",
    )
    cli.add_argument(
        "--baseline",
        type=Path,
        default=RESULTS / "serving.json",
        help="results to compare with (default: the committed ones)",
    )
    args = cli.parse_args()
    args.load_at_start = f"{os.getloadavg()[0]:.1f}"
    given = sys.argv[1:]
    args.command = (
        f"python -m benchmarks.serving {shlex.join(given)}" if given else "make bench-serving"
    )
    return args


def _shown(path: Path) -> str:
    """The path as the reader of the results would name it: from the repository if inside."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    main()
