"""Model selection: k-fold cross-validation on the training and validation reviews.

Every choice of the `best` preset is made here, on train+val only: each candidate's mean
accuracy over the folds. The test split is then scored once, for the chosen candidate and for
the previous `best`, with an exact McNemar test on the reviews where the two disagree.

Cheap by construction: the texts are cleaned once and counted once (1-3-grams, every term of
two or more reviews); each fold then keeps the columns its training rows would have produced
(a term's document frequency within the fold), so a candidate costs only its TF-IDF, NB
weighting and logistic regression.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from scipy.stats import binomtest
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from sklearn.model_selection import StratifiedKFold

from model.nb_weighting import NaiveBayesWeighting
from model.ngrams import SentenceNgrams
from pipelines.data import load_reviews, split
from pipelines.features import fit_pipeline, review_head
from pipelines.training import clean

RESULTS = Path(__file__).resolve().parent / "results"
FOLDS = 5
SEED = 42
# The `best` preset before this selection, scored on test beside the chosen one.
PREVIOUS = {
    "ngram_range": (1, 3),
    "min_df": 2,
    "max_df": 1.0,
    "max_features": None,
    "binary": False,
    "sublinear_tf": True,
    "nb_weighting": True,
    "nb_alpha": 0.25,
    "nb_norm": False,
    "C": 32.0,
    "solver": "liblinear",
    "class_weight": None,
}
# What varies; every other setting is the previous `best`. The first candidate is the
# previous `best` itself.
GRID: list[dict[str, Any]] = [
    {"binary": True},
    {"nb_norm": True},
    {"binary": True, "nb_norm": True},
    {"sublinear_tf": False},
    {"ngram_range": (1, 2)},
    {"min_df": 3},
    {"max_df": 0.5},
    {"C": 16.0},
    {"C": 64.0},
    {"nb_alpha": 0.05},
    {"nb_alpha": 0.1},
    {"nb_alpha": 0.5},
    {"nb_alpha": 1.0},
    {"nb_norm": True, "C": 64.0},
    {"nb_norm": True, "C": 128.0},
    {"nb_alpha": 0.1, "C": 64.0},
    {"nb_alpha": 0.1, "C": 128.0},
    {"nb_alpha": 0.05, "C": 64.0},
]
# Shares of each fold's training rows for the learning curve of the previous `best`: how much
# accuracy more labelled reviews would buy.
CURVE = (0.64, 0.8)


@dataclass
class Counts:
    """Term counts of every train+val review, and each column's n-gram order."""

    matrix: sparse.csr_matrix
    order: np.ndarray
    labels: np.ndarray


def count(texts: list[str], labels: np.ndarray) -> Counts:
    vectorizer = CountVectorizer(analyzer=SentenceNgrams((1, 3)), min_df=2, dtype=np.int32)
    matrix = vectorizer.fit_transform(texts).tocsr()
    terms = vectorizer.get_feature_names_out()
    order = np.fromiter((term.count(" ") + 1 for term in terms), np.int8, len(terms))
    return Counts(matrix, order, labels)


@dataclass
class Fold:
    train: np.ndarray
    test: np.ndarray
    df: np.ndarray  # document frequency of each column in the fold's training rows


def folds(counts: Counts) -> list[Fold]:
    cut = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)
    out = []
    for train, test in cut.split(np.zeros(len(counts.labels)), counts.labels):
        df = np.bincount(counts.matrix[train].indices, minlength=counts.matrix.shape[1])
        out.append(Fold(train, test, df))
    return out


def features(params: dict[str, Any], counts: Counts, fold: Fold):
    """The fold's train and held-out matrices as `build_pipeline(params)` would make them."""
    low, high = params["ngram_range"]
    keep = (fold.df >= params["min_df"]) & (counts.order >= low) & (counts.order <= high)
    if params["max_df"] < 1.0:
        keep &= fold.df <= params["max_df"] * len(fold.train)
    columns = np.flatnonzero(keep)
    x = counts.matrix[:, columns]
    if params["binary"]:
        x = x.copy()
        x.data[:] = 1
    x = x.astype(np.float32)
    x_train, x_test = x[fold.train], x[fold.test]
    tfidf = TfidfTransformer(sublinear_tf=params["sublinear_tf"]).fit(x_train)
    x_train, x_test = tfidf.transform(x_train), tfidf.transform(x_test)
    if params["nb_weighting"]:
        nb = NaiveBayesWeighting(alpha=params["nb_alpha"], norm=params["nb_norm"])
        nb.fit(x_train, counts.labels[fold.train])
        x_train, x_test = nb.transform(x_train), nb.transform(x_test)
    return x_train, x_test


def cross_validate(params: dict[str, Any], counts: Counts, cut: list[Fold]) -> list[float]:
    scores = []
    for fold in cut:
        x_train, x_test = features(params, counts, fold)
        clf = review_head(params, SEED).fit(x_train, counts.labels[fold.train])
        scores.append(float((clf.predict(x_test) == counts.labels[fold.test]).mean()))
    return scores


def mcnemar(truth: np.ndarray, before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """Exact McNemar: of the reviews exactly one model gets right, is either side favoured?"""
    only_after = int(((after == truth) & (before != truth)).sum())
    only_before = int(((before == truth) & (after != truth)).sum())
    discordant = only_after + only_before
    p = binomtest(only_after, discordant, 0.5).pvalue if discordant else 1.0
    return {"only_after_right": only_after, "only_before_right": only_before, "p_value": p}


def label(params: dict[str, Any]) -> str:
    varied = {k: v for k, v in params.items() if PREVIOUS.get(k) != v}
    return ", ".join(f"{k}={v}" for k, v in varied.items()) or "previous best"


def subsample(cut: list[Fold], counts: Counts, share: float) -> list[Fold]:
    """The same folds with a fixed random ``share`` of each one's training rows."""
    rng = np.random.default_rng(SEED)
    out = []
    for fold in cut:
        train = np.sort(rng.choice(fold.train, round(share * len(fold.train)), replace=False))
        df = np.bincount(counts.matrix[train].indices, minlength=counts.matrix.shape[1])
        out.append(Fold(train, fold.test, df))
    return out


def summary(scores: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(scores)), "sd": float(np.std(scores, ddof=1))}


def choose(rows: list[dict]) -> dict:
    """The highest mean CV accuracy; the earlier (simpler) candidate on a tie."""
    return max(rows, key=lambda row: round(row["cv"]["mean"], 6))


def on_test(params: dict[str, Any], splits, cleaned) -> np.ndarray:
    """Fitted on the training split as `make train` fits it (calibrated on validation, when the
    preset is length-aware); its answers on the test split."""
    validation = (cleaned["val"], splits.val["label"].to_numpy())
    train = splits.train["label"].to_numpy()
    pipeline = fit_pipeline(params, cleaned["train"], train, SEED, validation=validation)
    return pipeline.predict(cleaned["test"])


def markdown(result: dict) -> str:
    lines = [
        f"{FOLDS}-fold cross-validation on the {result['rows']} training and validation reviews "
        f"(seed {SEED}); every candidate is the previous `best` with the changes named.",
        "",
        "| candidate | mean CV accuracy | sd |",
        "|---|---|---|",
    ]
    chosen = result["chosen"]["candidate"]
    for row in result["candidates"]:
        name = (
            f"**{row['candidate']}** (chosen)" if row["candidate"] == chosen else row["candidate"]
        )
        lines.append(f"| {name} | {row['cv']['mean']:.4f} | {row['cv']['sd']:.4f} |")
    lines += [
        "",
        "Learning curve of the previous `best` (share of each fold's training rows):",
        "",
        "| training rows per fold | mean CV accuracy | sd |",
        "|---|---|---|",
    ]
    for point in result["curve"]:
        lines.append(
            f"| {point['rows']} ({point['share']:.0%}) | {point['cv']['mean']:.4f} | "
            f"{point['cv']['sd']:.4f} |"
        )
    test = result["test"]
    lines += [
        "",
        f"Test split ({test['rows']} reviews), scored once: previous `best` "
        f"{test['previous_accuracy']:.4f}, chosen {test['chosen_accuracy']:.4f}; "
        f"exact McNemar on the reviews only one of them gets right: chosen "
        f"{test['only_after_right']}, previous {test['only_before_right']}, "
        f"p = {test['p_value']:.3g}.",
    ]
    return "\n".join(lines)


def select(max_rows: int = 0) -> dict:
    splits = split(load_reviews(max_rows=max_rows, seed=SEED), SEED)
    cleaned = clean(splits)
    texts = cleaned["train"] + cleaned["val"]
    labels = np.concatenate([splits.train["label"].to_numpy(), splits.val["label"].to_numpy()])
    counts = count(texts, labels)
    cut = folds(counts)
    print(f"{len(texts)} train+val reviews, {counts.matrix.shape[1]} terms, {FOLDS} folds")
    rows = []
    for params in [PREVIOUS, *({**PREVIOUS, **change} for change in GRID)]:
        cv = summary(cross_validate(params, counts, cut))
        rows.append({"candidate": label(params), "params": params, "cv": cv})
        print(f"  {cv['mean']:.4f} ± {cv['sd']:.4f}  {label(params)}", flush=True)
    curve = []
    for share in CURVE:
        cv = summary(cross_validate(PREVIOUS, counts, subsample(cut, counts, share)))
        rows_per_fold = round(share * len(cut[0].train))
        curve.append({"share": share, "rows": rows_per_fold, "cv": cv})
        print(f"  {cv['mean']:.4f} ± {cv['sd']:.4f}  previous best on {share:.0%} of the rows")
    curve.append({"share": 1.0, "rows": len(cut[0].train), "cv": rows[0]["cv"]})
    chosen = choose(rows)
    print(f"Chosen: {chosen['candidate']}; scoring it and the previous best on test, once")
    truth = splits.test["label"].to_numpy()
    before = on_test(PREVIOUS, splits, cleaned)
    after = on_test(chosen["params"], splits, cleaned)
    test = {
        "rows": len(truth),
        "previous_accuracy": float((before == truth).mean()),
        "chosen_accuracy": float((after == truth).mean()),
        **mcnemar(truth, before, after),
    }
    return {"rows": len(texts), "candidates": rows, "curve": curve, "chosen": chosen, "test": test}


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__)
    cli.add_argument("--max-rows", type=int, default=0, help="a stratified sample, for a try")
    args = cli.parse_args()
    started = time.process_time()
    result = select(args.max_rows)
    table = markdown(result)
    print("\n" + table)
    meta = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "command": "make bench-selection",
        "cpu_seconds": round(time.process_time() - started),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if args.max_rows:
        return  # a try on a sample is not the result
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "selection.json").write_text(json.dumps({**meta, **result}, indent=2) + "\n")
    (RESULTS / "selection.md").write_text(
        f"Measured {meta['measured_at']} with `{meta['command']}` "
        f"({meta['cpu_seconds']} s of CPU).\n\n{table}\n"
    )


if __name__ == "__main__":
    main()
