"""A fitted vectorizer's vocabulary that pickles as one string, with its n-grams as integers.

A vocabulary of hundreds of thousands of n-grams pickles as as many string and integer
objects, each read back one by one when a scoring server loads the model. Stored as its
terms in column order, joined into one string, it loads as one object; the dict is rebuilt
from it in one pass of C (``dict(zip(...))``). The terms and columns are the same, so is
every prediction.

Its ``TermKeys`` (each term as one integer made of its words' numbers, see
``model.vectorize``) take half a second of Python to build from the terms; they are pickled
with them, as the words (one string) and one array of keys, and load in a few milliseconds.
A pickle without them (made before they existed) loads as before, and they are built when
the model is prepared.
"""

from __future__ import annotations

import operator
from itertools import chain

import numpy as np

SEPARATOR = "\n"
# The largest key must fit in a signed 64-bit integer.
_MAX_KEY = np.iinfo(np.int64).max


class TermKeys:
    """The terms of a word n-gram vocabulary as integers, for lookups in numpy.

    Words are numbered 1..base-1 (``numbers``); the term ``w1 w2 w3`` is the number
    ``(n1 * base + n2) * base + n3``, and ``keys[column]`` is the number of the column's
    term. Numbers start at 1, so two different terms never share a key, and the single
    words are the keys below ``base``.
    """

    def __init__(self, words: list[str], keys: np.ndarray):
        self.words = words
        self.base = len(words) + 1
        self.numbers = dict(zip(words, range(1, self.base), strict=True))
        self.keys = keys
        # Indexed by word number: the column of that single word, else -1.
        self.single = np.full(self.base + 1, -1, dtype=np.int64)
        singles = np.flatnonzero(keys < self.base)
        self.single[keys[singles]] = singles

    def fits(self, longest: int) -> bool:
        """Whether keys of n-grams up to ``longest`` words fit in 64 bits."""
        return self.base**longest <= _MAX_KEY

    @classmethod
    def build(cls, vocabulary: dict) -> TermKeys | None:
        """From ``vocabulary`` (term -> column, terms of words joined by one space, columns
        0..len-1); ``None`` for anything else, or keys too long for 64 bits."""
        terms = list(vocabulary)
        columns = np.fromiter(vocabulary.values(), dtype=np.int64, count=len(terms))
        if not np.array_equal(np.sort(columns), np.arange(len(terms))):
            return None
        parts = [term.split(" ") for term in terms]
        lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        flat = list(chain.from_iterable(parts))
        if not all(flat) or any(SEPARATOR in word for word in flat):
            return None
        # New strings, next to each other in memory as when read from a pickle: every token of
        # every text is compared with one of them, and scattered they cost a cache miss each.
        words = SEPARATOR.join(sorted(set(flat))).split(SEPARATOR) if flat else []
        base = len(words) + 1
        if len(terms) and base ** int(lengths.max()) > _MAX_KEY:
            return None
        numbers = dict(zip(words, range(1, base), strict=True))
        ids = np.fromiter(map(numbers.__getitem__, flat), dtype=np.int64, count=len(flat))
        starts = np.cumsum(lengths) - lengths
        keys = np.zeros(len(terms), dtype=np.int64)
        for position in range(int(lengths.max()) if len(terms) else 0):
            longer = lengths > position
            keys[longer] = keys[longer] * base + ids[starts[longer] + position]
        in_column_order = np.empty_like(keys)
        in_column_order[columns] = keys
        return cls(words, in_column_order)

    def __reduce__(self):
        return (_keys_from_state, (SEPARATOR.join(self.words), len(self.words), self.keys))


def _keys_from_state(words: str, count: int, keys: np.ndarray) -> TermKeys:
    return TermKeys(words.split(SEPARATOR) if count else [], keys)


class Vocabulary(dict):
    """``vocabulary_`` (term -> column) with a compact pickle; otherwise a plain dict.

    ``term_keys``, when set, is pickled with it."""

    term_keys: TermKeys | None = None
    # The terms joined by SEPARATOR, when read from the compact form.
    _terms: str | None = None

    def __reduce__(self):
        terms = sorted(self, key=self.__getitem__)
        columns_in_order = all(map(operator.eq, map(self.__getitem__, terms), range(len(terms))))
        if not columns_in_order or any(SEPARATOR in term for term in terms):
            return (Vocabulary, (dict(self),))
        if self.term_keys is None:
            return (_from_terms, (SEPARATOR.join(terms), len(terms)))
        return (_from_terms, (SEPARATOR.join(terms), len(terms), self.term_keys))

    def is_word(self) -> np.ndarray | None:
        """Per column, 1 where its term is a single word (no space in it); ``None`` unless
        this vocabulary was read from its compact form."""
        if self.term_keys is not None:
            is_word = np.zeros(len(self), dtype=np.int64)
            is_word[self.term_keys.keys < self.term_keys.base] = 1
            return is_word
        text = self._terms
        if text is None:
            return None
        data = np.frombuffer(text.encode(), dtype=np.uint8)
        ends = np.flatnonzero(data == ord(SEPARATOR))
        spaced = np.searchsorted(ends, np.flatnonzero(data == ord(" ")))
        is_word = np.ones(len(self), dtype=np.int64)
        is_word[spaced] = 0
        return is_word


def _from_terms(text: str, count: int, term_keys: TermKeys | None = None) -> Vocabulary:
    terms = text.split(SEPARATOR) if count else []
    vocabulary = Vocabulary(zip(terms, range(count), strict=True))
    vocabulary._terms = text
    vocabulary.term_keys = term_keys
    return vocabulary
