"""Short texts and other domains: the model's variants side by side, in one run.

Each variant is fitted on the packaged training split (seed 42; a length-aware one calibrated
on the validation split) and measured only where choices may be made: validation accuracy and
ECE, the closing segments of the validation reviews, the Rotten Tomatoes sentences' choose
half (accuracy, ECE, share answered positive), the behavioural suite's short, domains,
negation and invariance pass rates, and the served model's CPU µs per review (pyfunc
``predict`` on 1,000 validation reviews, best of 7, the variants in turn once all are
fitted). The test split and the report half are scored once, for the published model, by its
training run (``make bench-training``).

A variant without function words (``function_words: False``) skips NLTK's stopwords before
its n-grams are built, as the model of 2026-12-06 read its text (its cleaning dropped them;
a negation's scope passes over them either way). Results:
benchmarks/results/short_texts.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.model import cpu_us
from model.preprocess import clean_text
from model.sentiment_model import SentimentModel
from pipelines import behaviour, evaluate, segments
from pipelines.data import CHOOSE, load_reviews, rotten_tomatoes, split, without_near_duplicates
from pipelines.features import PRESETS, fit_pipeline

RESULTS = Path(__file__).resolve().parent / "results"
# The `best` preset of 2026-12-06: no sentence head, min_df 2, no function words.
BEFORE = {"sentence_C": None, "min_df": 2, "function_words": False}
REPEATS = 7


@dataclass(frozen=True)
class Variant:
    name: str
    params: dict[str, Any] = field(default_factory=dict)  # over PRESETS["best"]


VARIANTS = (
    Variant("best of 2026-12-06: review head only", BEFORE),
    Variant("+ sentence head and calibration by length", {"min_df": 2, "function_words": False}),
    Variant("+ function words kept", {"min_df": 2}),
    Variant("+ min_df 3 (best)"),
    Variant("best, sentence head C 0.5", {"sentence_C": 0.5}),
    Variant("best, sentence head C 2", {"sentence_C": 2.0}),
)
CAPABILITIES = ("short", "domains", "negation", "invariance")


def measure(
    variant: Variant, texts: dict[str, list[str]], labels: dict[str, np.ndarray]
) -> tuple[dict, SentimentModel]:
    cleaned = {name: [clean_text(text) for text in rows] for name, rows in texts.items()}
    started = time.perf_counter()
    pipeline = fit_pipeline(
        PRESETS["best"] | variant.params,
        cleaned["train"],
        labels["train"],
        validation=(cleaned["val"], labels["val"]),
    )
    row: dict[str, Any] = {"variant": variant.name, "fit_seconds": time.perf_counter() - started}
    model = SentimentModel(pipeline)

    def positive(rows: list[str]) -> np.ndarray:
        return evaluate.answered_positive(model.predict(None, pd.DataFrame({"text": rows})))

    for name in ("val", "segments", "rt_choose"):
        p = positive(texts[name])
        row[f"{name}_accuracy"] = float(np.mean((p >= 0.5) == labels[name]))
        row[f"{name}_ece"] = evaluate.ece(labels[name], p)
        row[f"{name}_positive"] = float(np.mean(p >= 0.5))
    outcomes = behaviour.run(positive)
    row |= {f"behaviour_{name}": outcomes[name].rate for name in CAPABILITIES}
    row["vocabulary"] = len(pipeline[0].vocabulary_)
    return row, model


def costs(models: dict[str, SentimentModel], texts: list[str]) -> dict[str, float]:
    """CPU µs per review of each served model, the variants in turn, best of ``REPEATS``."""
    frame = pd.DataFrame({"text": texts})

    def predict(model: SentimentModel) -> Callable[[], object]:
        return lambda: model.predict(None, frame)

    return cpu_us({name: predict(model) for name, model in models.items()}, len(texts), REPEATS)


def markdown(rows: list[dict]) -> str:
    first = rows[0]["us_per_review"]
    lines = [
        "| variant | val acc | val ECE | segments acc | RT choose acc | RT ECE | RT positive | "
        + " | ".join(CAPABILITIES)
        + " | µs/review | × first | vocabulary |",
        "|---|" + "---:|" * (9 + len(CAPABILITIES)),
    ]
    for r in rows:
        rates = " | ".join(f"{100 * r[f'behaviour_{name}']:.1f}%" for name in CAPABILITIES)
        lines.append(
            f"| {r['variant']} | {r['val_accuracy']:.4f} | {r['val_ece']:.3f} | "
            f"{r['segments_accuracy']:.4f} | {r['rt_choose_accuracy']:.4f} | "
            f"{r['rt_choose_ece']:.3f} | {100 * r['rt_choose_positive']:.0f}% | {rates} | "
            f"{r['us_per_review']:.0f} | {r['us_per_review'] / first:.2f} | {r['vocabulary']} |"
        )
    return "\n".join(lines)


def data() -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """The splits training uses (near duplicates kept once), validation's closing segments and
    the choose half."""
    frame = load_reviews()
    frame, _ = without_near_duplicates(frame, [clean_text(t) for t in frame["text"]])
    splits = split(frame, 42)
    closing = segments.closing_segments(splits.val["text"].tolist(), splits.val["label"])
    choose = rotten_tomatoes(CHOOSE)
    frames = {"train": splits.train, "val": splits.val, "segments": closing, "rt_choose": choose}
    texts = {name: part["text"].tolist() for name, part in frames.items()}
    labels = {name: part["label"].to_numpy() for name, part in frames.items()}
    return texts, labels


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__)
    names = [variant.name for variant in VARIANTS]
    cli.add_argument("--variants", nargs="+", type=int, help=f"indexes into {names}")
    args = cli.parse_args()
    chosen = [VARIANTS[i] for i in args.variants] if args.variants else list(VARIANTS)
    texts, labels = data()
    rows, models = [], {}
    for variant in chosen:
        print(f"[{variant.name}] fitting and measuring...", flush=True)
        row, model = measure(variant, texts, labels)
        rows.append(row)
        models[variant.name] = model
    print("[cost] predict per review, the variants in turn...", flush=True)
    for row, us in zip(rows, costs(models, texts["val"][:1000]).values(), strict=True):
        row["us_per_review"] = us
    table = markdown(rows)
    print("\n" + table)
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "command": "make bench-short",
    }
    (RESULTS / "short_texts.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    (RESULTS / "short_texts.md").write_text(
        f"# Short texts and other domains: the variants\n\nMeasured {meta['measured_at']} "
        f"with `{meta['command']}`; fitted on train, calibrated and measured on validation, "
        f"the Rotten Tomatoes choose half and the behavioural suite. µs/review: CPU of the "
        f"served predict, best of 7, the variants in turn; this run's first variant = 1."
        f"\n\n{table}\n"
    )


if __name__ == "__main__":
    main()
