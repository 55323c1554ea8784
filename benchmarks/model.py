"""The model's cost per review and its load time, against a plain scikit-learn pipeline.

One run: the `best` preset and a plain ``TfidfVectorizer(ngram_range=(1, 3), min_df=2,
sublinear_tf=True)`` + ``LogisticRegression`` are fitted on the same training split (seed
42); ``predict`` of the pyfunc and of the plain pipeline then score the same 1,000 test
reviews, interleaved, each figure the best of a few runs of CPU time of this process (other
processes on the machine do not count). The plain pipeline reads the cleaned texts (the
same words the model's vectorizer reads, with no cleaning to pay for) and, as a second
reference, the raw reviews. "Before" is scikit-learn's own transform and the pickled dict
vocabulary, as models were logged until now; "after" is what the model does today (n-grams
as integer keys, the vocabulary pickled as one string with its term keys).

Loading is ``load_context``'s work (unpickling the pipeline, the tables built from it), as
CPU time; the cold start is a fresh ``mlflow models serve --env-manager local`` on a saved
model, until ``/ping`` answers and then one ``/invocations``: wall time (with the load
average) and the CPU time of its processes. Results: benchmarks/results/model.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import joblib
import pandas as pd
import psutil
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from model.preprocess import clean_text
from model.sentiment_model import SentimentModel, _Words, positive_probability
from model.vectorize import Vectorize, compact, tfidf
from pipelines.data import load_reviews, split
from pipelines.features import PRESETS, fit_pipeline, slim
from stack import processes

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def cpu_us(functions: dict[str, Callable[[], object]], rows: int, repeats: int) -> dict[str, float]:
    """Best CPU time per row of each function, in µs, the functions run in turn."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.process_time()
            function()
            best[name] = min(best[name], time.process_time() - start)
    return {name: seconds / rows * 1e6 for name, seconds in best.items()}


def before(pipeline) -> SentimentModel:
    """The model as it predicted until now: scikit-learn's transform, words counted again
    (and no term keys built: they are not part of its cost, nor of its load time)."""
    model = SentimentModel(pipeline)
    model._vectorize = Vectorize(pipeline[0], fast=False)
    model._words = _Words(pipeline[0])
    return model


def fit(train: pd.DataFrame) -> tuple[Pipeline, Pipeline, Pipeline]:
    cleaned = [clean_text(text) for text in train["text"].tolist()]
    labels = train["label"].to_numpy()
    model = slim(fit_pipeline(PRESETS["best"], cleaned, labels))

    def plain() -> Pipeline:
        vectorizer = TfidfVectorizer(ngram_range=(1, 3), min_df=2, sublinear_tf=True)
        return Pipeline([("tfidf", vectorizer), ("clf", LogisticRegression(max_iter=2000))])

    return model, plain().fit(cleaned, labels), plain().fit(train["text"].tolist(), labels)


def per_review(pipeline, plain_cleaned, plain_raw, texts: list[str], repeats: int) -> dict:
    frame = pd.DataFrame({"text": texts})
    after, old = SentimentModel(pipeline), before(pipeline)
    cleaned = [clean_text(text) for text in texts]
    vectorizer, rest = pipeline[0], pipeline[1:-1]
    fast = Vectorize(vectorizer)
    counts, words = fast.counts(cleaned)
    weighted = vectorizer._tfidf.transform(counts.copy(), copy=False)
    features = rest.transform(weighted).tocsr()
    answers = {
        "model_after": after.predict(None, frame),
        "model_before": old.predict(None, frame),
    }
    pd.testing.assert_frame_equal(answers["model_after"], answers["model_before"])
    assert (sparse.csr_matrix(weighted) != vectorizer.transform(cleaned)).nnz == 0
    assert (tfidf(vectorizer._tfidf, counts.copy()) != weighted).nnz == 0
    classifier = pipeline[-1]
    assert (
        positive_probability(classifier, features) == classifier.predict_proba(features)[:, 1]
    ).all()
    word_table = _Words(vectorizer)
    us = cpu_us(
        {
            "model_after": lambda: after.predict(None, frame),
            "model_before": lambda: old.predict(None, frame),
            "plain_cleaned": lambda: plain_cleaned.predict_proba(cleaned),
            "plain_raw": lambda: plain_raw.predict_proba(texts),
            "cleaning": lambda: [clean_text(text) for text in texts],
            "ngrams_counting_after": lambda: fast.counts(cleaned),
            "ngrams_counting_before": lambda: CountVectorizer.transform(vectorizer, cleaned),
            "tfidf_before": lambda: vectorizer._tfidf.transform(counts.copy(), copy=False),
            "tfidf_after": lambda: tfidf(vectorizer._tfidf, counts.copy()),
            "nb": lambda: rest.transform(weighted),
            "classifier_before": lambda: classifier.predict_proba(features),
            "classifier_after": lambda: positive_probability(classifier, features),
            "known_term_ratio_after": lambda: word_table.ratio(cleaned, features, words),
            "known_term_ratio_before": lambda: word_table.ratio(cleaned, features),
        },
        len(texts),
        repeats,
    )
    return {
        "reviews": len(texts),
        "repeats": repeats,
        "us": us,
        "model_us": us["model_after"],
        "model_before_us": us["model_before"],
        "plain_us": us["plain_cleaned"],
        "plain_raw_us": us["plain_raw"],
        "ratio": us["model_after"] / us["plain_cleaned"],
        "ratio_before": us["model_before"] / us["plain_cleaned"],
        "ratio_raw": us["model_after"] / us["plain_raw"],
    }


def per_call(pipeline, plain_cleaned, texts: list[str], repeats: int) -> dict[str, float]:
    """CPU µs per call of one review, as a lone request reaches the scoring server: what a
    call costs whatever its size (input checks, frames) weighs here, not in a batch."""
    frames = [pd.DataFrame({"text": [text]}) for text in texts]
    cleaned = [[clean_text(text)] for text in texts]
    after, old = SentimentModel(pipeline), before(pipeline)
    return cpu_us(
        {
            "model_after": lambda: [after.predict(None, frame) for frame in frames],
            "model_before": lambda: [old.predict(None, frame) for frame in frames],
            "plain_cleaned": lambda: [plain_cleaned.predict_proba(text) for text in cleaned],
        },
        len(texts),
        repeats,
    )


class _Context:
    def __init__(self, path: Path):
        self.artifacts = {"pipeline": str(path)}


def load_seconds(paths: dict[str, Path], repeats: int) -> dict[str, float]:
    """CPU seconds of load_context's work (without its gc.freeze, so that the copies loaded
    here one after the other can be collected); "before" as the model loaded until now,
    without building term keys for its dict vocabulary."""

    def load(path: Path):
        model = SentimentModel(joblib.load(path))
        model._prepare()

    def load_before(path: Path):
        before(joblib.load(path))

    best = dict.fromkeys(paths, float("inf"))
    for _ in range(repeats):
        for name, path in paths.items():
            start = time.process_time()
            (load_before if name == "before" else load)(path)
            best[name] = min(best[name], time.process_time() - start)
    return best


def save_pyfunc(pipeline_path: Path, folder: Path) -> Path:
    import mlflow

    from model.signature import INPUT_EXAMPLE, SIGNATURE

    mlflow.pyfunc.save_model(
        folder,
        python_model=str(ROOT / "model" / "sentiment_model.py"),
        artifacts={"pipeline": str(pipeline_path)},
        code_paths=[str(ROOT / "model")],
        signature=SIGNATURE,
        input_example=INPUT_EXAMPLE,
        pip_requirements=[],
    )
    return folder


def cold_start(model_dir: Path, review: str, log: Path) -> dict[str, float]:
    """A fresh scoring server on ``model_dir``: seconds to /ping, to a first answer, and the
    CPU seconds its processes used by then."""
    port = processes.free_port()
    started = time.monotonic()
    proc = processes.start(
        [
            str(processes.BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            str(model_dir),
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        log=log,
        env=processes.environment(),
    )
    try:
        ping = processes.wait_until_up(
            f"http://127.0.0.1:{port}/ping", timeout=180, proc=proc, every=0.05
        )
        response = httpx.post(
            f"http://127.0.0.1:{port}/invocations", json={"inputs": [review]}, timeout=60
        )
        response.raise_for_status()
        answered = time.monotonic() - started
        cpu = processes.cpu_seconds([psutil.Process(proc.pid), *processes.descendants(proc.pid)])
    finally:
        processes.stop(proc)
    return {"ping_s": ping, "answer_s": answered, "cpu_s": cpu}


def cold_starts(models: dict[str, Path], review: str, rounds: int, log: Path) -> dict:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, folder in models.items():
            runs[name].append(cold_start(folder, review, log))
    best = {
        name: {key: min(run[key] for run in found) for key in found[0]}
        for name, found in runs.items()
    }
    return {"runs": runs, "best": best}


def markdown(result: dict) -> str:
    cost, load, cold = result["cost"], result["load"], result.get("cold_start")
    us, single = cost["us"], cost["single_call_us"]
    lines = [
        "# Model: cost per review and load time",
        "",
        f"Measured {result['meta']['measured_at'][:16]} UTC on {result['meta']['cpus']} cores, "
        f"load average {result['meta']['load_average']}; CPU time of this process, best of "
        f"{cost['repeats']}, {cost['reviews']} test reviews, the variants interleaved. "
        "Before: scikit-learn's transform and the dict vocabulary, with today's cleaning.",
        "",
        "| Step (µs per review) | Before | After |",
        "|---|---:|---:|",
        f"| cleaning | {us['cleaning']:.0f} | {us['cleaning']:.0f} |",
        f"| n-grams + counting | {us['ngrams_counting_before']:.0f} | "
        f"{us['ngrams_counting_after']:.0f} |",
        f"| TF-IDF | {us['tfidf_before']:.1f} | {us['tfidf_after']:.1f} |",
        f"| NB weighting | {us['nb']:.1f} | {us['nb']:.1f} |",
        f"| classifier | {us['classifier_before']:.1f} | {us['classifier_after']:.1f} |",
        f"| known_term_ratio | {us['known_term_ratio_before']:.1f} | "
        f"{us['known_term_ratio_after']:.1f} |",
        f"| **pyfunc predict** | **{us['model_before']:.0f}** | **{us['model_after']:.0f}** |",
        "",
        "| Reference | µs per review | Model after / it | Model before / it |",
        "|---|---:|---:|---:|",
        f"| plain (1,3) TF-IDF + LR on the cleaned texts | {us['plain_cleaned']:.0f} | "
        f"{cost['ratio']:.2f}× | {cost['ratio_before']:.2f}× |",
        f"| plain (1,3) TF-IDF + LR on the raw reviews | {us['plain_raw']:.0f} | "
        f"{cost['ratio_raw']:.2f}× | {us['model_before'] / us['plain_raw']:.2f}× |",
        "",
        "| One review per call (µs per call) | Before | After | Plain, cleaned texts |",
        "|---|---:|---:|---:|",
        f"| predict | {single['model_before']:.0f} | {single['model_after']:.0f} | "
        f"{single['plain_cleaned']:.0f} |",
        "",
        "| Loading | Before | After |",
        "|---|---:|---:|",
        f"| load_context CPU (ms) | {load['before_s'] * 1000:.0f} | "
        f"{load['model_load_s'] * 1000:.0f} |",
        f"| pipeline.joblib (MB) | {load['before_mb']:.1f} | {load['after_mb']:.1f} |",
    ]
    if cold:
        b, a = cold["before"], cold["after"]
        lines += [
            f"| scoring server: /ping (s) | {b['ping_s']:.2f} | {a['ping_s']:.2f} |",
            f"| scoring server: first answer (s) | {b['answer_s']:.2f} | {a['answer_s']:.2f} |",
            f"| scoring server: CPU to first answer (s) | {b['cpu_s']:.2f} | {a['cpu_s']:.2f} |",
            "",
            "The scoring servers run today's code: before, it also builds the term keys of the "
            "dict vocabulary (about 0.6 s of CPU) that a model logged then did not build.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cold-rounds", type=int, default=2, help="0: no cold starts")
    args = parser.parse_args(argv)

    splits = split(load_reviews(), 42)
    print("[fit] the best preset and the plain pipelines on the training split...", flush=True)
    pipeline, plain_cleaned, plain_raw = fit(splits.train)
    texts = splits.test["text"].tolist()[: args.reviews]
    print("[cost] predict per review, interleaved...", flush=True)
    cost = per_review(pipeline, plain_cleaned, plain_raw, texts, args.repeats)
    print("[cost] predict per call of one review, interleaved...", flush=True)
    cost["single_call_us"] = per_call(pipeline, plain_cleaned, texts[:200], args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        paths = {"before": tmp / "before.joblib", "after": tmp / "after.joblib"}
        joblib.dump(pipeline, paths["before"], compress=3)
        joblib.dump(compact(pipeline), paths["after"], compress=3)
        print("[load] load_context, interleaved...", flush=True)
        seconds = load_seconds(paths, repeats=5)
        load = {
            "model_load_s": seconds["after"],
            "before_s": seconds["before"],
            "after_mb": paths["after"].stat().st_size / 1e6,
            "before_mb": paths["before"].stat().st_size / 1e6,
        }
        cold = None
        if args.cold_rounds:
            print("[cold start] mlflow models serve, before and after in turn...", flush=True)
            models = {name: save_pyfunc(path, tmp / name) for name, path in paths.items()}
            cold = cold_starts(models, texts[0], args.cold_rounds, tmp / "serve.log")
    result = {
        "meta": {
            "measured_at": datetime.now(UTC).isoformat(),
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "vocabulary_terms": len(pipeline[0].vocabulary_),
        },
        "cost": cost,
        "load": load,
    }
    if cold:
        best = cold["best"]
        result["cold_start"] = {
            "seconds": best["after"]["answer_s"],
            "before": best["before"],
            "after": best["after"],
            "runs": cold["runs"],
            "note": f"with the vocabulary pickled as a dict: {best['before']['answer_s']:.1f} s",
        }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "model.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (RESULTS / "model.md").write_text(table)
    print(table)
    return result


if __name__ == "__main__":
    main()
