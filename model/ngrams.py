"""The vectorizer's analyzer: word n-grams that never cross a sentence break.

``clean_text`` separates sentences with ``SENTENCE_BREAK``; the default word analyzer would
join the last words of one sentence with the first of the next into (meaningless) n-grams.
It is part of the fitted pipeline, hence it lives in the shipped package.
"""

from __future__ import annotations

from model.preprocess import SENTENCE_BREAK


class SentenceNgrams:
    """Callable analyzer for ``TfidfVectorizer(analyzer=...)``: n-grams within each sentence.

    Keeps tokens of two or more characters, like the default ``token_pattern``.
    """

    def __init__(self, ngram_range: tuple[int, int] = (1, 1)):
        self.ngram_range = tuple(ngram_range)

    def __call__(self, doc: str) -> list[str]:
        low, high = self.ngram_range
        grams: list[str] = []
        for sentence in doc.split(SENTENCE_BREAK):
            tokens = [token for token in sentence.split() if len(token) > 1]
            if low == 1:
                grams.extend(tokens)
            for n in range(max(low, 2), min(high, len(tokens)) + 1):
                grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        return grams

    @staticmethod
    def words(doc: str) -> set[str]:
        """The distinct single words of ``doc``: its unigrams, without building a list."""
        return {token for token in doc.replace(SENTENCE_BREAK, " ").split() if len(token) > 1}

    def __repr__(self) -> str:
        return f"SentenceNgrams(ngram_range={self.ngram_range})"
