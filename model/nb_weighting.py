"""Naive-Bayes feature weighting (the "NB" of NBSVM, Wang & Manning 2012).

Scales each TF-IDF column by its log-count ratio between positive and negative
reviews, so the linear classifier starts from what each term says about sentiment.
With ``norm=True`` each scaled row is brought back to unit length, so that long and short
reviews weigh alike again after the scaling. It is part of the served pipeline, hence it
lives in the shipped package.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted


class NaiveBayesWeighting(TransformerMixin, BaseEstimator):
    def __init__(self, alpha: float = 1.0, norm: bool = False):
        self.alpha = alpha
        self.norm = norm

    def fit(self, X, y):
        y = np.asarray(y)
        positive = np.asarray(X[y == 1].sum(axis=0)).ravel() + self.alpha
        negative = np.asarray(X[y == 0].sum(axis=0)).ravel() + self.alpha
        self.ratio_ = np.log((positive / positive.sum()) / (negative / negative.sum()))
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "ratio_")
        # Scale the stored values in place of a diagonal product: O(non-zeros), not O(features).
        X = sparse.csr_matrix(X, dtype=np.float64, copy=True)
        X.data *= self.ratio_[X.indices]
        # Pipelines pickled before ``norm`` existed have no such attribute: they never scaled.
        if getattr(self, "norm", False):
            X = normalize(X, copy=False)
        return X

    def get_feature_names_out(self, input_features=None):
        return np.asarray(input_features, dtype=object)
