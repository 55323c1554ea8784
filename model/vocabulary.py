"""A fitted vectorizer's vocabulary that pickles as one string.

A vocabulary of hundreds of thousands of n-grams pickles as as many string and integer
objects, each read back one by one when a scoring server loads the model. Stored as its
terms in column order, joined into one string, it loads as one object; the dict is rebuilt
from it in one pass of C (``dict(zip(...))``). The terms and columns are the same, so is
every prediction.
"""

from __future__ import annotations

import operator

import numpy as np

SEPARATOR = "\n"


class Vocabulary(dict):
    """``vocabulary_`` (term -> column) with a compact pickle; otherwise a plain dict."""

    def __reduce__(self):
        terms = sorted(self, key=self.__getitem__)
        columns_in_order = all(map(operator.eq, map(self.__getitem__, terms), range(len(terms))))
        if not columns_in_order or any(SEPARATOR in term for term in terms):
            return (Vocabulary, (dict(self),))
        return (_from_terms, (SEPARATOR.join(terms), len(terms)))

    def is_word(self) -> np.ndarray | None:
        """Per column, 1 where its term is a single word (no space in it); ``None`` unless
        this vocabulary was read from its compact form."""
        text = getattr(self, "_terms", None)
        if text is None:
            return None
        data = np.frombuffer(text.encode(), dtype=np.uint8)
        ends = np.flatnonzero(data == ord(SEPARATOR))
        spaced = np.searchsorted(ends, np.flatnonzero(data == ord(" ")))
        is_word = np.ones(len(self), dtype=np.int64)
        is_word[spaced] = 0
        return is_word


def _from_terms(text: str, count: int) -> Vocabulary:
    terms = text.split(SEPARATOR) if count else []
    vocabulary = Vocabulary(zip(terms, range(count), strict=True))
    vocabulary._terms = text
    return vocabulary


def compact(pipeline):
    """The pipeline with its vectorizer's vocabulary pickling compactly (changed in place)."""
    for _, step in getattr(pipeline, "steps", []):
        vocabulary = getattr(step, "vocabulary_", None)
        if type(vocabulary) is dict:
            step.vocabulary_ = Vocabulary(vocabulary)
    return pipeline
