"""Shadow benchmark: what mirroring the traffic to a challenger costs the user.

One gateway, one run: /predict latency at concurrency 1 and 8 with the shadow off (no
challenger alias) and on (the alias set, every request mirrored), alternating off and on
twice so that drift of the machine affects both alike. Also the CPU seconds each side's
scoring servers used, which is what the shadow takes from the user on a small machine.
Results go to benchmarks/results/shadow.{json,md}.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from mlflow import MlflowClient

from model.names import ALIAS, CHALLENGER, MODEL_NAME
from pipelines.data import load_reviews
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

RESULTS = Path(__file__).resolve().parent / "results"
REQUESTS = 400  # per measurement
SAMPLE = 2000  # reviews each version is trained on: two quick models that answer differently


def train(tracking_uri: str, seed: int, log: Path) -> str:
    """One version of the `seed` preset on a sample, trained and registered as a user would
    (not promoted); returns its version."""
    args = [sys.executable, "-m", "pipelines.train", "--preset", "seed",
            "--max-rows", str(SAMPLE), "--seed", str(seed), "--promote", "never"]  # fmt: skip
    env = environment(drop=("MLFLOW_",), MLFLOW_TRACKING_URI=tracking_uri)
    with open(log, "w") as out:
        subprocess.run(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    versions = MlflowClient(tracking_uri).search_model_versions(f"name='{MODEL_NAME}'")
    return str(max(int(v.version) for v in versions))


def new_reviews(count: int) -> list[str]:
    """Packaged reviews neither version was trained on, of at most 5,000 characters."""
    trained = {t for seed in (42, 7) for t in load_reviews(max_rows=SAMPLE, seed=seed)["text"]}
    others = load_reviews(max_rows=8000, seed=1042)["text"]
    return [t for t in others if t not in trained and len(t) <= 5000][:count]


def measure(url: str, texts: list[str], concurrency: int, requests: int) -> list[float]:
    """Seconds per /predict, ``concurrency`` clients at once."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            for i in range(index, requests, concurrency):
                began = time.perf_counter()
                answer = http.post("/predict", json={"text": texts[i % len(texts)]})
                elapsed = time.perf_counter() - began
                answer.raise_for_status()
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def wait(condition, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway did not get there in time")
        time.sleep(0.5)


def main() -> None:
    state = Path(tempfile.mkdtemp(prefix="shadow-bench-"))
    with tracking_server(state / "tracking", env=environment(drop=("MLFLOW_",))) as uri:
        v1 = train(uri, 42, state / "train-v1.log")
        v2 = train(uri, 7, state / "train-v2.log")
        client = MlflowClient(uri)
        client.set_registered_model_alias(MODEL_NAME, ALIAS, v1)
        port = free_port()
        env = environment(
            drop=("MLFLOW_", "GATEWAY_"),
            MLFLOW_TRACKING_URI=uri,
            GATEWAY_PORT=str(port),
            GATEWAY_POLL_INTERVAL="1",
            GATEWAY_STANDBY="false",
            GATEWAY_API_KEYS="",
            GATEWAY_MODEL_CACHE_DIR=str(state / "models"),
            GATEWAY_SCORING_LOG_DIR=str(state / "logs"),
            GATEWAY_MONITOR_DIR=str(state / "monitoring"),
            PYTHONPATH=str(ROOT),
        )
        proc = start(["python", "-m", "gateway"], log=state / "gateway.log", env=env, cwd=state)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{url}/ready", timeout=180, proc=proc)
            info = lambda: httpx.get(f"{url}/info").json()  # noqa: E731
            texts = new_reviews(500)
            measure(url, texts, 4, 100)  # warm up
            rows = []
            for round_ in (1, 2):
                for shadow in (False, True):
                    if shadow:
                        client.set_registered_model_alias(MODEL_NAME, CHALLENGER, v2)
                        wait(lambda: info()["challenger"] is not None)
                    else:
                        client.delete_registered_model_alias(MODEL_NAME, CHALLENGER)
                        wait(lambda: info()["challenger"] is None)
                    time.sleep(2)  # let the stopped or started server settle
                    for concurrency in (1, 8):
                        servers = [psutil.Process(proc.pid), *descendants(proc.pid)]
                        cpu_before = cpu_seconds(servers)
                        began = time.perf_counter()
                        latencies = measure(url, texts, concurrency, REQUESTS)
                        wall = time.perf_counter() - began
                        cpu = cpu_seconds(servers) - cpu_before
                        latencies.sort()
                        rows.append(
                            {
                                "round": round_,
                                "shadow": shadow,
                                "concurrency": concurrency,
                                "median_ms": 1000 * statistics.median(latencies),
                                "p95_ms": 1000 * latencies[int(0.95 * len(latencies)) - 1],
                                "requests_per_s": len(latencies) / wall,
                                "cpu_s_per_100": 100 * cpu / len(latencies),
                            }
                        )
                        print(rows[-1], flush=True)
            compared = info()["challenger"]
        finally:
            stop(proc)
    write(rows, compared)


def write(rows: list[dict], challenger: dict | None) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "shadow.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    lines = [
        "| concurrency | shadow | median ms | p95 ms | requests/s | CPU s per 100 requests |",
        "|---|---|---|---|---|---|",
    ]
    for concurrency in (1, 8):
        for shadow in (False, True):
            mine = [r for r in rows if r["concurrency"] == concurrency and r["shadow"] == shadow]
            mean = {
                k: statistics.mean(r[k] for r in mine)
                for k in mine[0]
                if k.endswith(("ms", "s", "100"))
            }
            lines.append(
                f"| {concurrency} | {'on' if shadow else 'off'} | {mean['median_ms']:.1f} | "
                f"{mean['p95_ms']:.1f} | {mean['requests_per_s']:.0f} | "
                f"{mean['cpu_s_per_100']:.2f} |"
            )
    (RESULTS / "shadow.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
