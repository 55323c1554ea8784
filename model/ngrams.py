"""The vectorizer's analyzer: word n-grams that never cross a sentence break.

``clean_text`` separates sentences with ``SENTENCE_BREAK``; the default word analyzer would
join the last words of one sentence with the first of the next into (meaningless) n-grams.
It is part of the fitted pipeline, hence it lives in the shipped package.
"""

from __future__ import annotations

from model.preprocess import SENTENCE_BREAK


class SentenceNgrams:
    """Callable analyzer for ``TfidfVectorizer(analyzer=...)``: n-grams within each sentence.

    Keeps tokens of two or more characters, like the default ``token_pattern``, and not in
    ``skip`` (words left out before n-grams are built, as if the cleaning had dropped them).
    """

    def __init__(self, ngram_range: tuple[int, int] = (1, 1), skip: frozenset[str] = frozenset()):
        self.ngram_range = tuple(ngram_range)
        self.skip = frozenset(skip)

    def __call__(self, doc: str) -> list[str]:
        low, high = self.ngram_range
        skip = self.skipped()
        grams: list[str] = []
        for sentence in doc.split(SENTENCE_BREAK):
            tokens = [token for token in sentence.split() if len(token) > 1 and token not in skip]
            if low == 1:
                grams.extend(tokens)
            for n in range(max(low, 2), min(high, len(tokens)) + 1):
                grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        return grams

    def skipped(self) -> frozenset[str]:
        """``skip``; analyzers pickled before it existed skip nothing."""
        return getattr(self, "skip", frozenset())

    def words(self, doc: str) -> set[str]:
        """The distinct single words of ``doc``: its unigrams, without building a list."""
        skip = self.skipped()
        tokens = doc.replace(SENTENCE_BREAK, " ").split()
        return {token for token in tokens if len(token) > 1 and token not in skip}

    def __repr__(self) -> str:
        skip = f", skip={len(self.skipped())} words" if self.skipped() else ""
        return f"SentenceNgrams(ngram_range={self.ngram_range}{skip})"
