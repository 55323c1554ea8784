"""Named presets: the vectorizer and classifier settings a run can be asked for."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from model.length_aware import LengthAwareClassifier
from model.nb_weighting import NaiveBayesWeighting
from model.ngrams import SentenceNgrams
from model.preprocess import function_words
from pipelines import segments

PRESETS: dict[str, dict[str, Any]] = {
    # The highest mean 5-fold CV accuracy on train+val among the candidates of
    # `python -m benchmarks.selection` (make bench-selection; benchmarks/results/selection.md).
    # "refit": after the train-only fit is scored on validation, the published model is the same
    # recipe fitted again on train+val (more labelled rows still help: see the learning curve).
    "best": {
        "ngram_range": (1, 3),
        # 3, not 2, since function words are kept: half the vocabulary (10 MB, not 16), the
        # same accuracy and cost per review (make bench-short, docs/training.md).
        "min_df": 3,
        "max_df": 1.0,
        "max_features": None,
        "binary": False,
        "sublinear_tf": True,
        "nb_weighting": True,
        "nb_alpha": 0.05,
        "nb_norm": False,
        "C": 64.0,
        "solver": "liblinear",
        "class_weight": None,
        "refit": True,
        # The sentence head's C (regularisation; `None`: no sentence head, no calibration):
        # a LengthAwareClassifier, calibrated on validation (docs/training.md, short texts).
        "sentence_C": 1.0,
        # Function words stay in the text the model reads (docs/training.md, short texts).
        "function_words": True,
    },
    # The original service's hyperparameters, kept reproducible for comparison.
    "seed": {
        "ngram_range": (1, 2),
        "min_df": 2,
        "max_df": 0.95,
        "max_features": 5000,
        "binary": False,
        "sublinear_tf": False,
        "nb_weighting": False,
        "nb_alpha": None,
        "nb_norm": False,
        "C": 1.0,
        "solver": "lbfgs",
        "class_weight": "balanced",
        "refit": False,
        "sentence_C": None,
        # As the original service read its text: without NLTK's stopwords.
        "function_words": False,
    },
}


def build_pipeline(params: dict[str, Any], seed: int = 42) -> Pipeline:
    """A scikit-learn pipeline over already-cleaned text."""
    steps = [
        (
            "tfidf",
            TfidfVectorizer(
                # n-grams per sentence of the cleaned text (clean_text marks the breaks)
                analyzer=SentenceNgrams(
                    params["ngram_range"],
                    skip=frozenset() if params.get("function_words", True) else function_words(),
                ),
                token_pattern=None,
                min_df=params["min_df"],
                max_df=params["max_df"],
                max_features=params["max_features"],
                binary=params["binary"],
                sublinear_tf=params["sublinear_tf"],
                dtype=np.float32,
            ),
        )
    ]
    if params["nb_weighting"]:
        steps.append(("nb", NaiveBayesWeighting(alpha=params["nb_alpha"], norm=params["nb_norm"])))
    review = review_head(params, seed)
    if not params.get("sentence_C"):
        return Pipeline([*steps, ("clf", review)])
    # No intercept: a sentence's prior is the calibration's to set, by length.
    sentence = LogisticRegression(
        C=params["sentence_C"],
        solver="liblinear",
        fit_intercept=False,
        max_iter=2000,
        random_state=seed,
    )
    return Pipeline([*steps, ("clf", LengthAwareClassifier(review, sentence))])


def review_head(params: dict[str, Any], seed: int = 42) -> LogisticRegression:
    """The classifier of whole reviews (the only one of a preset without a sentence head)."""
    return LogisticRegression(
        C=params["C"],
        solver=params["solver"],
        class_weight=params["class_weight"],
        max_iter=2000,
        random_state=seed,
    )


# Without validation rows given, a length-aware pipeline keeps this share of its rows apart to
# calibrate on (tests, benchmarks); training always gives its validation split.
CALIBRATION_SHARE = 0.15


def fit_pipeline(
    params: dict[str, Any],
    texts: list[str],
    labels,
    seed: int = 42,
    validation: tuple[list[str], Any] | None = None,
    calibration: LogisticRegression | None = None,
) -> Pipeline:
    """``build_pipeline(params)`` fitted on cleaned ``texts``, for every preset.

    A length-aware classifier fits its review head on the reviews and its sentence head on their
    sentences (``pipelines.segments.sentences``), then its calibration on rows neither saw:
    ``validation`` (cleaned texts, labels) and their closing segments
    (``pipelines.segments.closing_segments``), the reviews and the segments weighing alike; or
    takes ``calibration`` as it is (a refit keeps the train-only fit's); or, with neither, fits
    on all but a stratified ``CALIBRATION_SHARE`` and calibrates on it.
    """
    pipeline = build_pipeline(params, seed)
    labels = np.asarray(labels)
    classifier = pipeline[-1]
    if not isinstance(classifier, LengthAwareClassifier):
        return pipeline.fit(texts, labels)
    if validation is None and calibration is None:
        texts, held_texts, labels, held_labels = train_test_split(
            list(texts), labels, test_size=CALIBRATION_SHARE, stratify=labels, random_state=seed
        )
        validation = (held_texts, held_labels)
    features = pipeline[:-1]
    X = features.fit_transform(texts, labels)
    sentence_texts, sentence_labels = segments.sentences(texts, labels)
    classifier.fit(X, labels, features.transform(sentence_texts), sentence_labels)
    if calibration is not None:
        classifier.calibration = calibration
        return pipeline
    assert validation is not None
    held_texts, held_labels = validation
    short = segments.closing_segments(list(held_texts), held_labels)
    rows = list(held_texts) + short["text"].tolist()
    review_weight = max(len(short), 1) / max(len(held_texts), 1)
    weights = np.concatenate([np.full(len(held_texts), review_weight), np.ones(len(short))])
    classifier.calibrate(
        features.transform(rows),
        np.concatenate([np.asarray(held_labels), short["label"].to_numpy()]),
        sample_weight=weights,
    )
    return pipeline


def slim(pipeline: Pipeline) -> Pipeline:
    """Drop the vectorizer's pruned-terms set: large, and only kept for introspection."""
    vectorizer = pipeline.named_steps["tfidf"]
    if hasattr(vectorizer, "stop_words_"):
        del vectorizer.stop_words_
    return pipeline
