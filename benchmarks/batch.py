"""Batch scoring benchmark: one process calling `predict` in chunks vs Spark local[1] and local[*].

One run: the `best` preset is trained and registered in a throwaway SQLite store; the packaged
reviews are repeated and shuffled into a Parquet corpus; each target scores it in a fresh
process (a new JVM for Spark) while the whole process tree's memory is sampled. The fixed
cost is the time of the same job on a few hundred rows; the scoring rate is the rows beyond
those over the time beyond it. Results: benchmarks/results/batch.md and batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
SMALL = 300
ALONE_BATCH = 1_000
# The one-process baseline reads a file at a time: a bound on the file bounds its memory.
ROWS_PER_FILE = 25_000


def build_corpus(
    folder: Path, rows: int, seed: int = 42, rows_per_file: int = ROWS_PER_FILE
) -> Path:
    """The packaged reviews repeated and shuffled to ``rows``, in Parquet files of at most
    ``rows_per_file`` rows (as Spark writes a large corpus: many parts, none of them huge)."""
    import numpy as np
    import pandas as pd

    from pipelines.data import load_reviews

    texts = load_reviews()["text"].to_numpy()
    picks = np.random.default_rng(seed).permutation(np.resize(np.arange(len(texts)), rows))
    frame = pd.DataFrame({"id": np.arange(rows), "text": texts[picks]})
    folder.mkdir(parents=True)
    for part, rows_of in enumerate(np.array_split(np.arange(rows), -(-rows // rows_per_file))):
        frame.iloc[rows_of].to_parquet(folder / f"part-{part}.parquet", row_group_size=10_000)
    return folder


@contextmanager
def trained_model() -> Iterator[tuple[Path, str, dict[str, str]]]:
    """A folder for the run, the `best` preset registered in a SQLite store in it, and the
    environment each measured process gets (that store, this interpreter first on PATH)."""
    from pipelines.batch_score import MODEL_NAME

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as folder:
        tmp = Path(folder)
        tracking_uri = f"sqlite:///{tmp}/mlflow.db"
        print("Training the best preset...", flush=True)
        model_uri = f"models:/{MODEL_NAME}/{train(tracking_uri)}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONWARNINGS": "ignore"}
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
        yield tmp, model_uri, env


def train(tracking_uri: str) -> str:
    import mlflow

    from pipelines.train import run
    from pipelines.training import EXPERIMENT

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="bench-batch-model"):
        return run(None, "best", "always")


# --- what each fresh process runs -------------------------------------------------------------


def worker_baseline(corpus: str, model_uri: str, batch_size: int) -> dict:
    import mlflow
    import pandas as pd

    started = time.perf_counter()
    model = mlflow.pyfunc.load_model(model_uri)
    loaded = time.perf_counter()
    rows = 0
    for path in sorted(Path(corpus).glob("*.parquet")):  # one file (<= ROWS_PER_FILE) at a time
        texts = pd.read_parquet(path, columns=["text"])
        for start in range(0, len(texts), batch_size):
            rows += len(model.predict(texts.iloc[start : start + batch_size]))
    return {"rows": rows, "load_s": loaded - started, "score_s": time.perf_counter() - loaded}


def worker_alone(corpus: str, model_uri: str) -> dict:
    """`predict` alone, in batches of 1,000: the texts are read first and not timed, and
    nothing is written. What the model costs on one core with no input or output around it."""
    import mlflow
    import pandas as pd

    model = mlflow.pyfunc.load_model(model_uri)
    files = sorted(Path(corpus).glob("*.parquet"))
    texts = pd.concat([pd.read_parquet(f, columns=["text"]) for f in files], ignore_index=True)
    model.predict(texts.iloc[:ALONE_BATCH])  # first-call costs are not the rate
    started = time.perf_counter()
    for start in range(0, len(texts), ALONE_BATCH):
        model.predict(texts.iloc[start : start + ALONE_BATCH])
    return {"rows": len(texts), "predict_s": time.perf_counter() - started}


def worker_spark(corpus: str, model_uri: str, batch_size: int, master: str, out: str) -> dict:
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    from pipelines import batch_score

    gc_log = f"{out}.gc.log"
    conf = {
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": f"-Xlog:gc:file={gc_log}",
    }
    started = time.perf_counter()
    spark = batch_score.session(master, batch_size, **conf)
    ready = time.perf_counter()
    result = batch_score.score(spark, batch_score.Job(corpus, out, model_uri=model_uri))
    done = time.perf_counter()
    spark._jvm.java.lang.System.gc()  # a full collection: what the finished job left live
    spark.stop()
    heap = heap_after_gc(Path(gc_log).read_text())
    return {"rows": result.rows_read, "session_s": ready - started, "job_s": done - ready, **heap}


_GC = re.compile(r"GC\(\d+\) (.*?) (\d+)([KMG])->(\d+)([KMG])\((\d+)([KMG])\)")


def heap_after_gc(log: str) -> dict:
    """The JVM's heap from its GC log: the most left after a collection, the most committed.

    What a collection leaves bounds what the JVM holds on to; its RSS also carries garbage not
    yet collected, which grows with the time run and says nothing about what is retained.
    """
    mb = {"K": 1 / 1024, "M": 1, "G": 1024}
    after = committed = live = 0.0
    count = 0
    for match in _GC.finditer(log):
        kind, _, _, left, left_unit, size, size_unit = match.groups()
        if not kind.startswith(("Pause Young", "Pause Full")):  # a remark frees nothing yet
            continue
        after = max(after, int(left) * mb[left_unit])
        if kind.startswith("Pause Full (System.gc())"):
            live = int(left) * mb[left_unit]
        committed = max(committed, int(size) * mb[size_unit])
        count += 1
    return {
        "heap_after_gc_mb": after,
        "heap_committed_mb": committed,
        "gcs": count,
        "heap_live_after_job_mb": live,
    }


def breakdown(corpus: str, model_uri: str, sample: int = 10_000) -> dict:
    """Per-row cost of the model's own steps on one core: cleaning, vectorizing, classifying."""
    import mlflow
    import pandas as pd

    from model.preprocess import clean_text
    from model.sentiment_model import positive_probability

    texts = pd.read_parquet(next(Path(corpus).glob("*.parquet")))["text"].tolist()[:sample]
    model = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    model._prepare()
    t0 = time.perf_counter()
    cleaned = [clean_text(t) for t in texts]
    t1 = time.perf_counter()
    # The model's own path (model/vectorize.py), not scikit-learn's slower transform.
    features, _ = model._vectorize(cleaned)
    features = model.pipeline[1:-1].transform(features).tocsr()
    t2 = time.perf_counter()
    positive_probability(model.pipeline[-1], features)
    t3 = time.perf_counter()
    n = len(texts) / 1e6
    return {"clean_us": (t1 - t0) / n, "vectorize_us": (t2 - t1) / n, "classify_us": (t3 - t2) / n}


# --- the parent --------------------------------------------------------------------------------


def measure(args_list: list[str], env: dict) -> dict:
    """Run one target in a fresh process; wall time and the peak memory of its whole tree."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.batch", *args_list],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    root = psutil.Process(proc.pid)
    peaks = dict.fromkeys(("total", *PARTS), 0)
    cpu: dict[int, tuple[str, float]] = {}  # pid -> its kind, its CPU seconds when last seen
    while proc.poll() is None:
        sample = dict.fromkeys(peaks, 0)
        try:
            for p in [root, *root.children(recursive=True)]:
                kind = _kind(p, root.pid)  # not cached: spark-submit's bash execs java
                rss = p.memory_info().rss
                sample["total"] += rss
                sample[kind] += rss
                times = p.cpu_times()
                cpu[p.pid] = (kind, times.user + times.system)
        except psutil.Error:
            pass
        peaks = {part: max(peaks[part], sample[part]) for part in peaks}
        time.sleep(0.2)
    wall = time.perf_counter() - started
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{args_list} failed with {proc.returncode}: {out[-2000:]}")
    report = json.loads(out.strip().splitlines()[-1])
    parts = {f"{part}_peak_mb": peaks[part] / 2**20 for part in PARTS}
    # CPU seconds by kind, as last sampled (a process's final 0.2 s may be missed).
    used = {f"{part}_cpu_s": sum(c for k, c in cpu.values() if k == part) for part in PARTS}
    return {**report, "wall_s": wall, "peak_mb": peaks["total"] / 2**20, **parts, **used}


# Where a process tree's memory is: the driver Python, Spark's JVM, the Python workers it forks.
PARTS = ("driver", "jvm", "workers", "other")


def _kind(process: psutil.Process, root: int) -> str:
    if process.pid == root:
        return "driver"
    name = process.name()
    if name == "java":
        return "jvm"
    return "workers" if name.startswith("python") else "other"


def run(rows: int, batch_size: int) -> dict:
    report: dict = {
        "rows": rows,
        "small_rows": SMALL,
        "batch_size": batch_size,
        "cores": os.cpu_count(),
        "load_before": os.getloadavg(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
    }
    with trained_model() as (tmp, model_uri, env):
        big, small = build_corpus(tmp / "big", rows), build_corpus(tmp / "small", SMALL)
        print("predict alone on the large corpus...", flush=True)
        report["alone"] = measure(["--worker", big.as_posix(), model_uri, "0", "--alone"], env)
        print(f"  {report['alone']}", flush=True)
        targets: dict[str, dict] = {}
        for name, extra in [("pyfunc", []), ("local[1]", ["local[1]"]), ("local[*]", ["local[*]"])]:
            for size, corpus in (("small", small), ("big", big)):
                print(f"{name} on {size} corpus...", flush=True)
                out = str(tmp / f"out-{len(targets)}-{size}")
                cli = ["--worker", corpus.as_posix(), model_uri, str(batch_size), *extra, out]
                targets.setdefault(name, {})[size] = measure(cli, env)
                print(f"  {targets[name][size]}", flush=True)
        report["targets"] = targets
        report["per_row"] = breakdown(str(big), model_uri)  # train() set the tracking URI
    report["load_after"] = os.getloadavg()
    return summarise(report)


def scan(sizes: list[int], batch_size: int, keep=lambda report: None) -> dict:
    """Peak memory of the one process and of Spark local[*] at each corpus size, in one run.

    ``keep`` is handed the report after each size: a long scan cut short keeps what it measured.
    """
    report: dict = {
        "sizes": sizes,
        "batch_size": batch_size,
        "cores": os.cpu_count(),
        "load_before": os.getloadavg(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    with trained_model() as (tmp, model_uri, env):
        points = report["points"] = []
        for rows in sizes:
            corpus = build_corpus(tmp / f"corpus-{rows}", rows).as_posix()
            point: dict = {"rows": rows, "files": len(list(Path(corpus).glob("*.parquet")))}
            for name, extra in [("pyfunc", []), ("local[*]", ["local[*]"])]:
                print(f"{name} on {rows:,} rows...", flush=True)
                out = str(tmp / f"out-{rows}-{len(point)}")
                cli = ["--worker", corpus, model_uri, str(batch_size), *extra, out]
                point[name] = measure(cli, env)
                print(f"  {point[name]}", flush=True)
            points.append(point)
            shutil.rmtree(corpus)
            report["load_after"] = os.getloadavg()
            keep(report)
    return report


def batch_scan(sizes: list[int], rows: int) -> dict:
    """Spark `local[*]` at each Arrow batch size, against `predict` alone, in one run."""
    report: dict = {
        "rows": rows,
        "sizes": sizes,
        "cores": os.cpu_count(),
        "load_before": os.getloadavg(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    with trained_model() as (tmp, model_uri, env):
        big, small = build_corpus(tmp / "big", rows), build_corpus(tmp / "small", SMALL)
        report["alone"] = measure(["--worker", big.as_posix(), model_uri, "0", "--alone"], env)
        points = report["points"] = []
        for size in sizes:
            print(f"local[*], batches of {size:,}...", flush=True)
            point: dict = {"batch_size": size}
            for name, corpus in (("small", small), ("big", big)):
                out = str(tmp / f"out-{size}-{name}")
                cli = ["--worker", corpus.as_posix(), model_uri, str(size), "local[*]", out]
                point[name] = measure(cli, env)
            print(f"  {point}", flush=True)
            points.append(_beyond(point, rows))
    report["load_after"] = os.getloadavg()
    return report


def _beyond(target: dict, rows: int) -> dict:
    """A target's rate and CPU per row beyond its fixed cost (the job on SMALL rows)."""
    big, small = target["big"], target["small"]
    more = rows - SMALL
    target["fixed_s"] = small["wall_s"]
    target["scoring_rows_per_s"] = more / max(big["wall_s"] - small["wall_s"], 1e-9)
    target["cpu_us_per_row"] = {
        part: (big[f"{part}_cpu_s"] - small[f"{part}_cpu_s"]) / more * 1e6
        for part in PARTS
        if f"{part}_cpu_s" in big
    }
    return target


def _alone_rate(report: dict) -> float:
    alone = report["alone"]
    return alone["rows"] / alone["predict_s"]


def batch_scan_markdown(r: dict) -> str:
    alone = _alone_rate(r)
    lines = [
        f"### Spark `local[*]` by Arrow batch size (one run, {r['date']}; load average before "
        f"{r['load_before'][0]:.2f}, after {r['load_after'][0]:.2f})",
        "",
        f"`python -m benchmarks.batch --batch-scan {','.join(map(str, r['sizes']))}` on "
        f"{r['rows']:,} reviews. Rates and CPU are beyond the fixed cost (the same job on "
        f"{SMALL} rows). `predict` alone, in batches of {ALONE_BATCH:,} in one process with "
        f"nothing read or written while timed: {alone:,.0f} rows/s "
        f"({1e6 / alone:.0f} µs per row).",
        "",
        "| rows per Arrow batch | scoring rows/s | × `predict` alone | JVM µs/row | "
        "Python workers µs/row | peak MB |",
        "|---|---|---|---|---|---|",
    ]
    for x in r["points"]:
        cpu = x["cpu_us_per_row"]
        lines.append(
            f"| {x['batch_size']:,} | {x['scoring_rows_per_s']:,.0f} | "
            f"{x['scoring_rows_per_s'] / alone:.2f}× | {cpu['jvm']:.0f} | "
            f"{cpu['workers']:.0f} | {x['big']['peak_mb']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def scan_markdown(r: dict) -> str:
    points = r["points"]
    first, last = points[0], points[-1]

    def growth(name: str, key: str = "peak_mb") -> str:
        return f"{last[name][key] - first[name][key]:+,.0f} MB"

    def live(x: dict) -> str:
        return f"{x['heap_live_after_job_mb']:,.0f}" if x.get("heap_live_after_job_mb") else "—"

    lines = [
        f"### Peak memory by corpus size (one run, {r['date']}; load average before "
        f"{r['load_before'][0]:.2f}, after {r['load_after'][0]:.2f})",
        "",
        "`python -m benchmarks.batch --memory-scan "
        f"{','.join(str(x['rows']) for x in points)}`. Peak resident memory of the whole "
        "process tree, sampled every 0.2 s; corpus files of at most "
        f"{ROWS_PER_FILE:,} rows, Arrow batches of {r['batch_size']:,} rows. Spark's peak is "
        "split into its JVM, the Python workers it forks (their RSS counts pages shared with "
        "the worker daemon once per process) and the driver Python (each part's own peak, so "
        "the parts may add up to more than the whole). From the JVM's GC log: the most heap "
        "committed, the most left after a young collection (old-generation garbage included: "
        "an upper bound on what is live), and what a full collection at the end of the job "
        "left (— where not measured). Rates are not shown: other work was using the CPU.",
        "",
        "| rows | files | one process MB | Spark `local[*]` MB | JVM MB | Python workers MB | "
        "driver Python MB | JVM heap committed MB | heap after young GC, most MB | "
        "heap live after the job MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in points:
        s = x["local[*]"]
        lines.append(
            f"| {x['rows']:,} | {x['files']} | {x['pyfunc']['peak_mb']:,.0f} | "
            f"{s['peak_mb']:,.0f} | {s['jvm_peak_mb']:,.0f} | {s['workers_peak_mb']:,.0f} | "
            f"{s['driver_peak_mb']:,.0f} | {s['heap_committed_mb']:,.0f} | "
            f"{s['heap_after_gc_mb']:,.0f} | {live(s)} |"
        )
    ratio = last["rows"] / first["rows"]
    lines += [
        "",
        f"- From {first['rows']:,} to {last['rows']:,} rows ({ratio:.0f}× the corpus): one "
        f"process {growth('pyfunc')}; Spark `local[*]` {growth('local[*]')} (JVM "
        f"{growth('local[*]', 'jvm_peak_mb')}, Python workers "
        f"{growth('local[*]', 'workers_peak_mb')}, driver Python "
        f"{growth('local[*]', 'driver_peak_mb')}).",
        *SCAN_NOTES,
    ]
    return "\n".join(lines) + "\n"


# What the scan showed; rewrite when a new scan says otherwise.
SCAN_NOTES = [
    "- One process: flat; it holds one file (at most 25,000 rows) and one batch. With 8 files "
    "whatever the corpus size (each 1/8 of it), as before, it grew with the corpus: 433 MB at "
    "25,000 rows and 536 MB at 100,000 (an earlier scan, cut short), 602 MB at 200,000 (the "
    "rate run above).",
    "- Spark: the driver Python and the Python workers are flat (the corpus never reaches the "
    "driver, only per-label counts; each worker holds the model and one Arrow batch). The "
    "growth is the JVM's, and it slows: +453 MB from 25,000 to 100,000 rows, +207 MB from "
    "100,000 to 400,000. G1 commits heap lazily up to `-Xmx` (`spark.driver.memory`, 1 GB by "
    "default) and the JVM's RSS follows the committed heap; the rest of its RSS (RSS minus "
    "the committed heap: 280-470 MB) is memory outside the heap, not split further here. What "
    "a finished job leaves live on the heap is the same 70 MB at 200,000 and 400,000 rows: "
    "nothing is kept per row, and the heap cannot pass `spark.driver.memory`.",
    "- The same 400,000 rows with `spark.driver.memory` 512m (a separate run, 18:43 UTC, load "
    "2.7 → 3.6; `PYSPARK_SUBMIT_ARGS='--driver-memory 512m pyspark-shell'` in the "
    "environment): the job completes; Spark `local[*]` 2,086 MB, JVM 978 MB, heap committed "
    "512 MB, live after the job 67 MB, 166 collections instead of 78. The JVM takes the heap "
    "it is given; a smaller `spark.driver.memory` lowers the peak.",
]


def summarise(report: dict) -> dict:
    rows = report["rows"]
    for t in report["targets"].values():
        _beyond(t, rows)
        t["rows_per_s_total"] = rows / t["big"]["wall_s"]
        t["memory_growth_mb"] = t["big"]["peak_mb"] - t["small"]["peak_mb"]
    targets = report["targets"]
    alone = _alone_rate(report)
    report["alone_rows_per_s"] = alone
    report["vs_alone"] = targets["local[*]"]["scoring_rows_per_s"] / alone
    report["one_core_vs_alone"] = targets["local[1]"]["scoring_rows_per_s"] / alone
    report["scaling_ratio"] = (
        targets["local[*]"]["scoring_rows_per_s"] / targets["local[1]"]["scoring_rows_per_s"]
    )
    report["vs_baseline"] = (
        targets["local[*]"]["scoring_rows_per_s"] / targets["pyfunc"]["scoring_rows_per_s"]
    )
    model_us = sum(report["per_row"].values())
    report["per_row"]["model_us"] = model_us
    report["per_row"]["spark_overhead_us"] = 1e6 / targets["local[1]"]["scoring_rows_per_s"] - (
        model_us
    )
    return report


def markdown(r: dict) -> str:
    t = r["targets"]
    lines = [
        f"Batch scoring, {r['rows']:,} reviews (packaged IMDB reviews repeated and shuffled), "
        f"preset `best`, Arrow batches of {r['batch_size']:,}; {r['cores']} cores, "
        f"{r['date']}; load average before {r['load_before'][0]:.2f}, after "
        f"{r['load_after'][0]:.2f} (other work was running on the machine).",
        "",
        "| target | total s | rows/s overall | fixed cost s (job on "
        f"{r['small_rows']} rows) | scoring rows/s (beyond the fixed cost) | peak MB "
        f"({r['small_rows']} rows → {r['rows']:,}) |",
        "|---|---|---|---|---|---|",
    ]
    for name, x in t.items():
        lines.append(
            f"| {_label(name)} | {x['big']['wall_s']:.1f} | {x['rows_per_s_total']:,.0f} | "
            f"{x['fixed_s']:.1f} | {x['scoring_rows_per_s']:,.0f} | "
            f"{x['small']['peak_mb']:,.0f} → {x['big']['peak_mb']:,.0f} |"
        )
    p = r["per_row"]
    per_core = t["local[*]"]["scoring_rows_per_s"] / r["cores"]
    spark_fixed = {
        name: f"session {x['small']['session_s']:.1f} s, job {x['small']['job_s']:.1f} s"
        for name, x in t.items()
        if name != "pyfunc"
    }
    lines += [
        "",
        f"- Scaling `local[*]` / `local[1]` (scoring rates): **{r['scaling_ratio']:.2f}×**; "
        f"`local[*]` / one process: **{r['vs_baseline']:.2f}×** (bar: 1.5×).",
        f"- Against `predict` alone (one process, batches of {ALONE_BATCH:,}, the texts read "
        f"before timing and nothing written: {r['alone_rows_per_s']:,.0f} rows/s): `local[*]` "
        f"beyond its fixed cost **{r['vs_alone']:.2f}×** (bar: 1.2×), `local[1]` "
        f"{r['one_core_vs_alone']:.2f}×.",
        "- CPU per row beyond the fixed cost, `local[*]`: "
        + _cpu(t["local[*]"]["cpu_us_per_row"])
        + "; `local[1]`: "
        + _cpu(t["local[1]"]["cpu_us_per_row"])
        + f". The model alone: {1e6 / r['alone_rows_per_s']:.0f} µs. The JVM reads Parquet, "
        "moves Arrow batches to and from the Python workers and writes Parquet; with two "
        "tasks on two cores it takes its share from the cores the workers run on.",
        f"- Fixed cost of a Spark job: local[1] {spark_fixed['local[1]']}; local[*] "
        f"{spark_fixed['local[*]']} (the rest of the wall time is starting Python and "
        "importing MLflow). The job part is starting the Python workers, importing MLflow in "
        "each and loading the model once per task.",
        f"- One process: model load {t['pyfunc']['big']['load_s']:.1f} s.",
        f"- Per row on one core: cleaning {p['clean_us']:.0f} µs, vectorizing "
        f"{p['vectorize_us']:.0f} µs, classifying {p['classify_us']:.1f} µs (model "
        f"{p['model_us']:.0f} µs); Spark's share at local[1] (reading Parquet, Arrow to and "
        f"from the Python worker, writing Parquet): {_overhead(p['spark_overhead_us'])}.",
        "- Memory: the corpus never reaches the driver (only per-label counts do); the growth "
        "from the small to the large job is in the JVM (its heap is bounded by "
        "`spark.driver.memory`, 1 GB by default) and the Python workers (one Arrow batch "
        "each). The memory scan below measures it at several corpus sizes.",
        f"- A cluster of N executors with c cores each: about N × c × "
        f"{per_core:,.0f} rows/s after a fixed cost of about "
        f"{max(t['local[*]']['fixed_s'], t['local[1]']['fixed_s']):.0f} s "
        "(plus the cluster's own scheduling), e.g. "
        f"10 executors × 4 cores ≈ {40 * per_core:,.0f} rows/s, 10 million reviews in "
        f"{1e7 / (40 * per_core) / 60:.0f} min.",
    ]
    return "\n".join(lines) + "\n"


def _cpu(us: dict) -> str:
    return f"JVM {us['jvm']:.0f} µs, Python workers {us['workers']:.0f} µs"


def _overhead(us: float) -> str:
    return f"{us:.0f} µs" if us > 0 else "none measurable (within the run-to-run noise)"


def _label(name: str) -> str:
    return "one process, `pyfunc.predict` in chunks" if name == "pyfunc" else f"Spark `{name}`"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        corpus, model_uri, batch_size, *rest = sys.argv[2:]
        if rest == ["--alone"]:
            report = worker_alone(corpus, model_uri)
        elif len(rest) == 1:
            report = worker_baseline(corpus, model_uri, int(batch_size))
        else:
            report = worker_spark(corpus, model_uri, int(batch_size), rest[0], rest[1])
        print(json.dumps(report), flush=True)
        return
    cli = argparse.ArgumentParser(description=__doc__)
    cli.add_argument("--rows", type=int, default=200_000)
    cli.add_argument("--batch-size", type=int, default=10_000)
    cli.add_argument(
        "--memory-scan",
        type=lambda value: [int(rows) for rows in value.split(",")],
        metavar="ROWS,ROWS,...",
        help="measure peak memory at these corpus sizes only; the rate results are kept",
    )
    cli.add_argument(
        "--batch-scan",
        type=lambda value: [int(size) for size in value.split(",")],
        metavar="SIZE,SIZE,...",
        help="Spark local[*] at these Arrow batch sizes only; the other results are kept",
    )
    cli.add_argument("--table-only", action="store_true", help="rewrite batch.md from batch.json")
    args = cli.parse_args()
    RESULTS.mkdir(exist_ok=True)
    saved = RESULTS / "batch.json"
    if args.table_only:
        report = json.loads(saved.read_text())
    elif args.batch_scan:
        report = json.loads(saved.read_text()) if saved.exists() else {}
        report["batch_scan"] = batch_scan(args.batch_scan, args.rows)
    elif args.memory_scan:
        report = json.loads(saved.read_text()) if saved.exists() else {}
        report["memory_scan"] = scan(
            args.memory_scan, args.batch_size, lambda part: _save({**report, "memory_scan": part})
        )
    else:
        report = run(args.rows, args.batch_size)
        kept = json.loads(saved.read_text()) if saved.exists() else {}
        report |= {key: kept[key] for key in ("memory_scan", "batch_scan") if key in kept}
    _save(report)
    print(page(report))


def _save(report: dict) -> None:
    (RESULTS / "batch.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "batch.md").write_text(page(report))


def page(report: dict) -> str:
    """batch.md: the rate run, the batch-size scan and the memory scan, those that ran."""
    parts = [markdown(report)] if "targets" in report else []
    if "batch_scan" in report:
        parts.append(batch_scan_markdown(report["batch_scan"]))
    if "memory_scan" in report:
        parts.append(scan_markdown(report["memory_scan"]))
    return "\n".join(parts)


if __name__ == "__main__":
    main()
