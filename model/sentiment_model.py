"""The served model: cleaning, TF-IDF features and a linear classifier in one pyfunc.

Logged as "models from code": MLflow runs this file at load time, and
``load_context`` reads the fitted scikit-learn pipeline from the model's artifacts.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable
from typing import Any

import joblib
import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel
from mlflow.pyfunc.model import PythonModelContext
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from model.length_aware import LengthAwareClassifier
from model.ngrams import SentenceNgrams
from model.preprocess import clean_text
from model.signature import LABELS
from model.vectorize import Vectorize
from model.vocabulary import Vocabulary

PIPELINE_ARTIFACT = "pipeline"


class SentimentModel(PythonModel):
    """Scores reviews; with ``explain`` it also names the terms behind each decision."""

    def __init__(self, pipeline=None):
        self.pipeline = pipeline
        self._terms: np.ndarray | None = None
        self._words: _Words | None = None
        self._vectorize: Vectorize | None = None

    def load_context(self, context: PythonModelContext) -> None:
        self.pipeline = joblib.load(context.artifacts[PIPELINE_ARTIFACT])
        self._prepare()
        # The vocabulary (hundreds of thousands of terms) never changes once loaded; frozen,
        # the garbage collector stops walking it, and a full collection in a scoring server
        # stops being a 200 ms pause in the middle of requests.
        gc.freeze()

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        params = params or {}
        explain = bool(params.get("explain"))
        if len(model_input) == 0:
            # scikit-learn refuses zero rows with a stack trace; no texts get no answers.
            empty = np.empty(0)
            return _answer(empty, np.empty(0, dtype=np.int64), empty, [] if explain else None)
        vectorize = self._vectorize if self._vectorize is not None else self._prepare()
        cleaned = [clean_text(text) for text in model_input["text"].tolist()]
        features, words = vectorize(cleaned)
        for _, step in self.pipeline.steps[1:-1]:
            if step not in (None, "passthrough"):
                features = step.transform(features)
        features = features.tocsr()
        positive = positive_probability(self.pipeline[-1], features)
        explanations = self.explain(features, int(params.get("top_terms", 5))) if explain else None
        ratio = self.known_term_ratio(cleaned, features, words)
        return _answer(positive, np.diff(features.indptr), ratio, explanations)

    def _prepare(self) -> Vectorize:
        self._vectorize = Vectorize(self.pipeline[0])
        self._words = _Words(self.pipeline[0])
        return self._vectorize

    def known_term_ratio(self, cleaned: list[str], features, words=None) -> np.ndarray:
        """Per text, the share of its distinct words that the vocabulary knows (0 without
        words): text of another kind than the training reviews shows as a falling share long
        before the answers look wrong. Words only, not n-grams: a new phrase of known words is
        not unknown vocabulary. The known words are the text's word columns in ``features``
        (no second vocabulary lookup); ``words``, the distinct words per text, comes with the
        features when the vectorizer counted them, else they are counted here."""
        if self._words is None:
            self._words = _Words(self.pipeline[0])
        return self._words.ratio(cleaned, features, words)

    def explain(self, features, top: int) -> list[list[dict[str, Any]]]:
        """Per row, the ``top`` terms with the largest contribution (feature value × weight).

        A positive weight pushes towards "positive", a negative one towards "negative".
        """
        if self._terms is None:
            self._terms = self.pipeline[:-1].get_feature_names_out()
        classifier = self.pipeline[-1]
        if isinstance(classifier, LengthAwareClassifier):
            contributions = classifier.contributions(features)
        else:
            contributions = features.tocsr().multiply(np.ravel(classifier.coef_)).tocsr()
        explanations = []
        for row in range(contributions.shape[0]):
            start, end = contributions.indptr[row], contributions.indptr[row + 1]
            columns, values = contributions.indices[start:end], contributions.data[start:end]
            order = np.argsort(-np.abs(values))[: max(top, 0)]
            explanations.append(
                [
                    {"term": str(self._terms[columns[i]]), "weight": round(float(values[i]), 4)}
                    for i in order
                ]
            )
        return explanations


def positive_probability(classifier, features) -> np.ndarray:
    """``classifier.predict_proba(features)[:, 1]``. For a two-class logistic regression the
    same product and sigmoid, without scikit-learn's input checks (~0.1 ms a call)."""
    if type(classifier) is LogisticRegression and classifier.coef_.shape[0] == 1:
        scores = features @ classifier.coef_.T + classifier.intercept_
        return expit(scores.reshape(-1))
    if type(classifier) is LengthAwareClassifier:
        return expit(classifier.decision_function(features))
    return classifier.predict_proba(features)[:, 1]


class _Words:
    """Counts a text's distinct words, and those of them in the vocabulary, as the
    vectorizer tokenizes them."""

    def __init__(self, vectorizer):
        vocabulary = vectorizer.vocabulary_
        # Read from the compact form's one string when there is one (numpy, not a loop).
        is_word = vocabulary.is_word() if isinstance(vocabulary, Vocabulary) else None
        if is_word is None:
            is_word = np.zeros(len(vocabulary), dtype=np.int64)
            columns = np.fromiter(vocabulary.values(), dtype=np.int64, count=len(vocabulary))
            is_word[columns] = np.fromiter(
                (" " not in term for term in vocabulary), dtype=bool, count=len(vocabulary)
            )
        self.is_word: np.ndarray = is_word
        analyzer = vectorizer.analyzer
        self.words: Callable[[str], set[str]]
        if isinstance(analyzer, SentenceNgrams):
            self.words = analyzer.words
        else:
            single = copy.copy(vectorizer)
            single.ngram_range = (1, 1)
            analyze = single.build_analyzer()
            self.words = lambda text: set(analyze(text))

    def ratio(self, cleaned: list[str], features, words=None) -> np.ndarray:
        if words is None:
            words = np.fromiter((len(self.words(text)) for text in cleaned), float, len(cleaned))
        running = np.concatenate([[0], np.cumsum(self.is_word[features.indices])])
        known = running[features.indptr[1:]] - running[features.indptr[:-1]]
        return np.divide(known, words, out=np.zeros(len(cleaned)), where=words > 0)


def _answer(
    positive: np.ndarray,
    known_terms: np.ndarray,
    known_term_ratio: np.ndarray,
    explanations: list | None,
) -> pd.DataFrame:
    """One row per text: the label, its probability, how many known terms it rests on, and
    the share of its words the model knows.

    A text without a single term of the vocabulary (another language, emoji, only stopwords)
    leaves the classifier nothing but its intercept: it keeps the label the intercept favours
    (its prior), with confidence 0.5, so that a guess does not pass for a decision.
    """
    is_positive = positive >= 0.5
    confidence = np.where(is_positive, positive, 1.0 - positive).astype(float)
    confidence[known_terms == 0] = 0.5
    result = pd.DataFrame(
        {
            "sentiment": np.where(is_positive, LABELS[1], LABELS[0]).astype(object),
            "confidence": confidence,
            "known_terms": known_terms.astype(np.int64),
            "known_term_ratio": known_term_ratio.astype(float),
        }
    )
    if explanations is not None:
        result["explanation"] = explanations
    return result


set_model(SentimentModel())
