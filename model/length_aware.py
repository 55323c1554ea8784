"""The served classifier: a review head, a sentence head, and a calibration by length.

A head fitted on whole reviews (about 230 words) reads a one-sentence text through a few dozen
of its n-grams: the score is several times smaller than a review's, so the intercept and the
film-only n-grams weigh more, and short texts lean positive. The sentence head is fitted on the
sentences of the training reviews, each labelled as its review is, so it learns what a term
says on its own. The calibration, fitted on validation rows only (the reviews and their closing
segments), weighs each head by an amount that moves linearly with the text's length, from a
one-term text to a long review, plus a bias by length: ``confidence`` is then a probability
whatever the length, and the sentence head leads where texts are short. The weights are held
at zero or above: a head's evidence never counts against its own sign, however short or long
the text (an unconstrained fit gave "Just excellent." 0.20 by extrapolating).

The length is ``t = min(ln(1 + known terms) / ln(1 + LONG), 1)``, read from the row's stored
features: the classifier needs nothing but the feature matrix. Everything is linear in the
features, so each term's contribution to an answer is exact (``contributions``). It is part of
the served pipeline, hence it lives in the shipped package.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

# Known terms at which a text counts as fully long (t = 1); longer ones stay at 1.
LONG = 5000


class LengthAwareClassifier(ClassifierMixin, BaseEstimator):
    """Two logistic-regression heads over the same features, combined by a calibration."""

    def __init__(self, review=None, sentence=None, calibration=None):
        self.review = review
        self.sentence = sentence
        self.calibration = calibration

    def fit(self, X, y, sentences=None, sentence_labels=None):
        """Fit the review head on ``X``, the sentence head on ``sentences``; the calibration
        stays as given (``calibrate`` fits it, on other rows)."""
        if sentences is None or sentence_labels is None:
            raise ValueError("the sentence head needs sentences and their labels")
        self.review = self.review if self.review is not None else LogisticRegression()
        self.sentence = self.sentence if self.sentence is not None else LogisticRegression()
        self.review.fit(X, y)
        self.sentence.fit(sentences, sentence_labels)
        self.classes_ = self.review.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def calibrate(self, X, y, sample_weight=None):
        """Fit the calibration on rows neither head has seen (validation)."""
        check_is_fitted(self, "classes_")
        self.calibration = Calibration().fit(self.inputs(X), y, sample_weight)
        return self

    def inputs(self, X) -> np.ndarray:
        """Per row, the calibration's inputs: each head's score weighed towards short and towards
        long texts (``1 - t``, ``t``), and the length ``t``."""
        review, sentence = self._scores(X)
        t = length(X)
        return np.column_stack([review * (1 - t), review * t, sentence * (1 - t), sentence * t, t])

    def decision_function(self, X) -> np.ndarray:
        calibration = self.calibration
        if calibration is None:
            raise ValueError("this classifier is not calibrated yet (calibrate)")
        return self.inputs(X) @ calibration.coef_.ravel() + calibration.intercept_[0]

    def predict_proba(self, X) -> np.ndarray:
        positive = expit(self.decision_function(X))
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.decision_function(X) >= 0).astype(int)]

    def contributions(self, X) -> sparse.csr_matrix:
        """Each stored feature times its weight in this row's answer: the heads' weights, each
        scaled by the calibration's weight of that head at this row's length."""
        review_short, review_long, sentence_short, sentence_long, _ = self.calibration.coef_.ravel()
        t = length(X)
        X = sparse.csr_matrix(X)
        review = sparse.diags(review_short * (1 - t) + review_long * t) @ X.multiply(
            self.review.coef_.ravel()
        )
        sentence = sparse.diags(sentence_short * (1 - t) + sentence_long * t) @ X.multiply(
            self.sentence.coef_.ravel()
        )
        return sparse.csr_matrix(review + sentence)

    def _scores(self, X) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.asarray(X @ self.review.coef_.ravel()).ravel() + _intercept(self.review),
            np.asarray(X @ self.sentence.coef_.ravel()).ravel() + _intercept(self.sentence),
        )


class Calibration:
    """Logistic regression over the calibration's inputs, with the heads' four weights held
    at zero or above (scikit-learn's has no bounds; L-BFGS-B from SciPy takes them)."""

    coef_: np.ndarray
    intercept_: np.ndarray

    def __init__(self, alpha: float = 1e-4):
        self.alpha = alpha  # L2 penalty on the weights, per row

    def fit(self, inputs: np.ndarray, y, sample_weight=None) -> Calibration:
        y = np.asarray(y, dtype=np.float64)
        weights = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
        weights = weights / weights.sum()
        columns = inputs.shape[1]

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            z = inputs @ theta[:-1] + theta[-1]
            residual = weights * (expit(z) - y)
            value = weights @ (np.logaddexp(0, z) - y * z) + self.alpha * theta[:-1] @ theta[:-1]
            gradient = np.append(inputs.T @ residual + 2 * self.alpha * theta[:-1], residual.sum())
            return float(value), gradient

        bounds = [(0.0, None)] * 4 + [(None, None)] * (columns - 4 + 1)
        start = np.append(np.full(columns, 0.1), 0.0)
        theta = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds).x
        self.coef_, self.intercept_ = theta[:-1].reshape(1, -1), theta[-1:]
        return self


def length(X) -> np.ndarray:
    """``t`` per row of a CSR matrix (see the module docstring)."""
    X = sparse.csr_matrix(X)
    known = np.diff(X.indptr).astype(np.float64)
    return np.minimum(np.log1p(known) / np.log1p(LONG), 1.0)


def _intercept(classifier) -> float:
    intercept = getattr(classifier, "intercept_", 0.0)
    return float(np.ravel(intercept)[0]) if np.ndim(intercept) else float(intercept)
