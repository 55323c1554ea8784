"""The fitted vectorizer's transform, with the per-term work done in C.

scikit-learn's ``transform`` counts terms in a Python loop (one dict lookup and one counter
update per n-gram), which is most of a prediction's cost. Here the n-grams are joined by
``map``/``zip``, looked up with ``map(vocabulary.get, ...)`` and counted by scipy; the counts
then go through the vectorizer's own TF-IDF step, so the features are the same floats as
scikit-learn's, column for column. Anything this does not reproduce exactly (another
analyzer, another vectorizer class, a vocabulary given by hand) goes through scikit-learn.
"""

from __future__ import annotations

from itertools import compress, repeat
from operator import and_

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l2

from model.ngrams import SentenceNgrams
from model.preprocess import SENTENCE_BREAK

_SPACED_BREAK = f" {SENTENCE_BREAK} "
_FOUND = (-1).__ne__


class Vectorize:
    """``vectorizer.transform(texts)``, plus each text's number of distinct single words
    (``None`` where scikit-learn's own transform ran: then they are not counted here)."""

    def __init__(self, vectorizer):
        self.vectorizer = vectorizer
        analyzer = getattr(vectorizer, "analyzer", None)
        self.fast = (
            type(vectorizer) in (TfidfVectorizer, CountVectorizer)
            and type(analyzer) is SentenceNgrams
            and vectorizer.input == "content"
            # A learnt vocabulary never holds the sentence break: n-grams across it miss.
            and vectorizer.vocabulary is None
            and hasattr(vectorizer, "vocabulary_")
            and (type(vectorizer) is CountVectorizer or hasattr(vectorizer, "_tfidf"))
        )
        if self.fast:
            self.low, self.high = analyzer.ngram_range
            # Pruned by document frequency alone (min_df), a vocabulary holds an n-gram only
            # if it holds both (n-1)-grams inside it: each is in every review the n-gram is
            # in. The longest n-grams are then looked up only where both of those were found.
            max_df = vectorizer.max_df
            self.prune = (
                isinstance(max_df, float)
                and max_df == 1.0
                and vectorizer.max_features is None
                and self.high >= 3
                and self.high - 1 >= self.low
            )

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

        Each text becomes one token list with the sentence break kept as a token: an n-gram
        across two sentences holds the break, which no learnt term does, so it is not found,
        exactly as if the n-grams were built sentence by sentence.
        """
        get = self.vectorizer.vocabulary_.get
        low, high = self.low, self.high
        columns: list[int] = []
        ends = np.empty(len(texts) + 1, dtype=np.int64)
        ends[0] = 0
        words = np.empty(len(texts), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [
                token
                for token in text.replace(SENTENCE_BREAK, _SPACED_BREAK).split()
                if len(token) > 1 or token == SENTENCE_BREAK
            ]
            distinct = set(tokens)
            words[row] = len(distinct) - (SENTENCE_BREAK in distinct)
            level: list[int] = []
            if low == 1:
                level = list(map(get, tokens, repeat(-1)))
                columns.extend(level)
            for n in range(max(low, 2), high + 1):
                grams = zip(*(tokens[i:] for i in range(n)), strict=False)
                if n == high and self.prune:
                    found = list(map(_FOUND, level))
                    grams = compress(grams, map(and_, found, found[1:]))
                level = list(map(get, map(" ".join, grams), repeat(-1)))
                columns.extend(level)
            ends[row + 1] = len(columns)
        found = np.fromiter(columns, dtype=np.int64, count=len(columns))
        known = found >= 0
        # Row pointers counted over the found terms only.
        before = np.concatenate(([0], np.cumsum(known)))
        indptr = before[ends]
        matrix = sparse.csr_matrix(
            (np.ones(int(indptr[-1]), dtype=self.vectorizer.dtype), found[known], indptr),
            shape=(len(texts), len(self.vectorizer.vocabulary_)),
        )
        matrix.sum_duplicates()
        return _int32(matrix), words


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
