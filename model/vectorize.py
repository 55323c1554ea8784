"""The fitted vectorizer's transform, with the per-term work done in numpy.

scikit-learn's ``transform`` counts terms in a Python loop (one string join, one dict lookup
and one counter update per n-gram), which is most of a prediction's cost. Here each token is
looked up once, as a word (``map(dict.get, ...)`` over the whole batch), and every n-gram
becomes one integer made of its words' numbers (``model.vocabulary.TermKeys``), built for the
whole batch at once with numpy: single words are found by indexing an array, longer n-grams
in a hash table of the vocabulary's keys (``pandas.Index.get_indexer``). A token that is in
no term (a word the vocabulary never saw, or the sentence break) stops every n-gram it would
be part of, exactly as a missing term would. The counts then go through the vectorizer's own
TF-IDF step, so the features are the same floats as scikit-learn's, column for column.
Anything this does not reproduce exactly (another analyzer, another vectorizer class, a
vocabulary given by hand, keys too long for 64 bits) goes through scikit-learn.

``compact`` prepares a fitted pipeline before it is saved: its vocabulary as a
``model.vocabulary.Vocabulary``, with the term keys built here where this looks terms up by them.
"""

from __future__ import annotations

from itertools import chain, repeat

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l2

from model.ngrams import SentenceNgrams
from model.preprocess import SENTENCE_BREAK
from model.vocabulary import TermKeys, Vocabulary

_SPACED_BREAK = f" {SENTENCE_BREAK} "


def _distinct_words(tokens: list[str]) -> int:
    """How many distinct tokens, the sentence break not counted."""
    distinct = set(tokens)
    return len(distinct) - (SENTENCE_BREAK in distinct)


# From this many tokens in a batch, longer n-grams are looked up only where pruning allows.
_PRUNE_FROM = 2000


class Vectorize:
    """``vectorizer.transform(texts)``, plus each text's number of distinct single words
    (``None`` where scikit-learn's own transform ran: then they are not counted here).

    ``fast=False`` always runs scikit-learn's transform (the model as it predicted before).
    """

    def __init__(self, vectorizer, fast: bool = True):
        self.vectorizer = vectorizer
        analyzer = getattr(vectorizer, "analyzer", None)
        self.keys: TermKeys | None = None
        self.fast = (
            fast
            and type(vectorizer) in (TfidfVectorizer, CountVectorizer)
            and type(analyzer) is SentenceNgrams
            and vectorizer.input == "content"
            # A learnt vocabulary never holds the sentence break: n-grams across it miss.
            and vectorizer.vocabulary is None
            and hasattr(vectorizer, "vocabulary_")
            and (type(vectorizer) is CountVectorizer or hasattr(vectorizer, "_tfidf"))
        )
        if not self.fast or not isinstance(analyzer, SentenceNgrams):
            return
        self.low, self.high = analyzer.ngram_range
        self.skip = analyzer.skipped()
        # Pruned by document frequency alone (min_df), a vocabulary holds an n-gram only
        # if it holds both (n-1)-grams inside it: each is in every review the n-gram is
        # in. Longer n-grams are then looked up only where both of those were found.
        max_df = vectorizer.max_df
        self.prune = (
            isinstance(max_df, float)
            and max_df == 1.0
            and vectorizer.max_features is None
            and self.high >= 3
            and self.high - 1 >= self.low
        )
        self.keys = keys = term_keys(vectorizer.vocabulary_)
        self.fast = keys is not None and keys.fits(self.high)
        if keys is not None and self.fast:
            # Words are numbered 1..base-1, any other token (the sentence break too) 0.
            self._number = keys.numbers.get
            # Every term's key, in a hash table. pandas builds it on the first lookup (~7 ms);
            # done here, before any call: a scoring server runs calls in several threads, and
            # that lazy build is not safe to race (pandas-dev/pandas#21150).
            self._columns = pd.Index(keys.keys)
            self._columns.get_indexer(keys.keys[:1])

    def __call__(self, texts: list[str]) -> tuple[sparse.csr_matrix, np.ndarray | None]:
        if not self.fast:
            return self.vectorizer.transform(texts), None
        counts, words = self.counts(texts)
        vectorizer = self.vectorizer
        if vectorizer.binary:
            counts.data.fill(1)
        if type(vectorizer) is TfidfVectorizer:
            counts = tfidf(vectorizer._tfidf, counts)
        return counts, words

    def counts(self, texts: list[str]) -> tuple[sparse.csr_matrix, np.ndarray]:
        """The term-count matrix (sorted columns, the vectorizer's dtype) and distinct words.

        All texts become one token sequence with the sentence break kept as a token: an
        n-gram across two sentences holds the break, and one across two texts is cut where
        the row changes, so neither is counted, exactly as if the n-grams were built
        sentence by sentence.
        """
        vocabulary_keys = self.keys
        if not self.fast or vocabulary_keys is None:
            raise ValueError("this vectorizer is not one whose terms are counted here")
        spaced = map(str.replace, texts, repeat(SENTENCE_BREAK), repeat(_SPACED_BREAK))
        skip = self.skip
        split = [
            [
                token
                for token in text.split()
                if (len(token) > 1 and token not in skip) or token == SENTENCE_BREAK
            ]
            for text in spaced
        ]
        lengths = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
        tokens = list(chain.from_iterable(split))
        numbers = np.fromiter(map(self._number, tokens, repeat(0)), np.int64, len(tokens))
        rows = np.repeat(np.arange(len(texts)), lengths)
        words = np.fromiter(map(_distinct_words, split), dtype=np.int64, count=len(split))
        found_rows, found_columns = [], []
        # Level n: each position's n-gram key, whether it is made of words of one text
        # (``valid``), and whether it is a term (``found``).
        keys = numbers
        valid = numbers > 0
        columns = vocabulary_keys.single[numbers]
        found = columns >= 0
        if self.low == 1:
            found_rows.append(rows[found])
            found_columns.append(columns[found])
        same_row = rows[1:] == rows[:-1]
        # A lookup costs ~25 µs whatever its size: a few texts look every level up at once,
        # a large batch one level after the other, to skip what pruning rules out.
        prune = self.prune and len(numbers) >= _PRUNE_FROM
        wanted_rows, wanted_keys = [], []
        for n in range(2, self.high + 1):
            keys = keys[:-1] * vocabulary_keys.base + numbers[n - 1 :]
            valid = valid[:-1] & valid[1:]
            if n == 2:
                valid &= same_row
            if n < self.low:
                continue
            positions = np.flatnonzero(
                valid & found[:-1] & found[1:] if prune and n > self.low else valid
            )
            if not prune:
                wanted_rows.append(rows[positions])
                wanted_keys.append(keys[positions])
                continue
            at = self._columns.get_indexer(keys[positions])
            hit = at >= 0
            positions = positions[hit]
            found = np.zeros(len(keys), dtype=bool)
            found[positions] = True
            found_rows.append(rows[positions])
            found_columns.append(at[hit])
        if wanted_keys:
            at = self._columns.get_indexer(np.concatenate(wanted_keys))
            hit = at >= 0
            found_rows.append(np.concatenate(wanted_rows)[hit])
            found_columns.append(at[hit])
        return self._matrix(len(texts), found_rows, found_columns), words

    def _matrix(
        self, count: int, row_parts: list[np.ndarray], column_parts: list[np.ndarray]
    ) -> sparse.csr_matrix:
        rows = np.concatenate(row_parts) if row_parts else np.empty(0, dtype=np.int64)
        columns = np.concatenate(column_parts) if column_parts else np.empty(0, dtype=np.int64)
        # Each level's entries are in row order: a stable sort merges them.
        order = np.argsort(rows, kind="stable")
        indptr = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=count), out=indptr[1:])
        matrix = sparse.csr_matrix(
            (np.ones(len(columns), dtype=self.vectorizer.dtype), columns[order], indptr),
            shape=(count, len(self.vectorizer.vocabulary_)),
        )
        matrix.sum_duplicates()
        return _int32(matrix)


def tfidf(transformer, counts: sparse.csr_matrix) -> sparse.csr_matrix:
    """``transformer.transform(counts, copy=False)``: the same steps on the same arrays, in
    place, without scikit-learn's input checks, which cost ~0.3 ms a call (most of a one-review
    prediction). Settings this does not reproduce go through scikit-learn."""
    if type(transformer) is not TfidfTransformer or transformer.norm not in (None, "l2"):
        return transformer.transform(counts, copy=False)
    data = counts.data
    if transformer.sublinear_tf:
        np.log(data, data)
        data += 1.0
    if transformer.use_idf:
        data *= transformer.idf_[counts.indices]
    if transformer.norm == "l2":
        inplace_csr_row_normalize_l2(counts)
    return counts


def _int32(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    """Index arrays as scikit-learn makes them (32-bit while they fit)."""
    if matrix.nnz <= np.iinfo(np.int32).max:
        matrix.indices = matrix.indices.astype(np.int32, copy=False)
        matrix.indptr = matrix.indptr.astype(np.int32, copy=False)
    return matrix


def term_keys(vocabulary: dict) -> TermKeys | None:
    """The vocabulary's term keys: pickled with a compact vocabulary, else built (and kept
    on a ``Vocabulary``, so that it is pickled with them)."""
    keys = getattr(vocabulary, "term_keys", None)
    if keys is None:
        keys = TermKeys.build(vocabulary)
        if isinstance(vocabulary, Vocabulary):
            vocabulary.term_keys = keys
    return keys


def compact(pipeline):
    """The pipeline with its vectorizer's vocabulary pickling compactly, with its term keys
    where the model looks terms up by them (changed in place)."""
    for _, step in getattr(pipeline, "steps", []):
        vocabulary = getattr(step, "vocabulary_", None)
        if type(vocabulary) is dict:
            step.vocabulary_ = vocabulary = Vocabulary(vocabulary)
        if type(vocabulary) is Vocabulary and vocabulary.term_keys is None:
            # Built by Vectorize (and kept on the vocabulary) when it looks terms up by key.
            Vectorize(step)
    return pipeline
