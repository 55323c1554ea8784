"""The one text-cleaning function, shared by training and serving.

It ships inside every logged model (``code_paths``), so a review is cleaned
the same way when the model learns from it and when it is scored.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from importlib import resources

_HTML_TAG = re.compile(r"<[^>]*>")
# Line and paragraph breaks end a sentence (IMDB reviews use <br /> between paragraphs).
_BREAK_TAG = re.compile(r"<\s*(?:br|p|hr)\b[^>]*>")
_URL = re.compile(r"(?:https?://|www\.)\S+")
_EMAIL = re.compile(r"\S+@\S+\.\S+")
# "don't" -> "do not", "can't" -> "ca not": the negation survives as its own token.
_NEGATION = re.compile(r"n['’]t\b")
# Words, plus the punctuation that ends a clause; punctuation itself never reaches the output.
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|[.!?;:,()\"]")
_SENTENCE_END = frozenset(".!?")
_CLAUSE_END = frozenset(".!?;:,()\"")
NEGATIONS = frozenset({"not", "no", "never", "nor", "cannot"})
# Up to this many (non-stopword) words after a negation, within its clause, get a "not_" prefix.
NEGATION_SCOPE = 3
# Written between sentences; not a word, so n-grams are built per sentence (see model.ngrams).
SENTENCE_BREAK = "|"


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """English stopwords without negations, read from the shipped list."""
    text = resources.files(__package__).joinpath("stopwords.txt").read_text("utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def clean_text(text: object) -> str:
    """Lowercase, drop HTML, URLs, e-mails, numbers, punctuation and stopwords.

    Negations are kept and mark their scope: the next ``NEGATION_SCOPE`` words of the same
    clause get a ``not_`` prefix ("not good, fun" -> "not not_good fun"). Sentences (and
    ``<br />`` breaks) are separated by ``SENTENCE_BREAK`` so that no n-gram spans two of them.
    Never raises: anything that is not a string cleans to an empty string.
    """
    if not isinstance(text, str):
        return ""
    # Each pattern runs only when its trigger character is present: same result, and the
    # cleaning is about a third faster on real reviews (it is part of every prediction).
    if "&" in text:
        text = html.unescape(text)
    text = text.lower()
    if "<" in text:
        text = _HTML_TAG.sub(" ", _BREAK_TAG.sub(" . ", text))
    if "http" in text or "www." in text:
        text = _URL.sub(" ", text)
    if "@" in text:
        text = _EMAIL.sub(" ", text)
    text = _NEGATION.sub(" not", text)
    stop = stopwords()
    # Tokens are runs of ASCII letters, so numbers fall away here; punctuation only ends
    # a negation's scope (any clause mark) or a sentence (. ! ?), and is not kept.
    words: list[str] = []
    scope = 0
    for token in _TOKEN.findall(text):
        if token in _CLAUSE_END:
            scope = 0
            if token in _SENTENCE_END and words and words[-1] != SENTENCE_BREAK:
                words.append(SENTENCE_BREAK)
        elif token in NEGATIONS:
            words.append(token)
            scope = NEGATION_SCOPE
        elif token not in stop:
            token = token.replace("'", "")
            if scope:
                scope -= 1
                token = "not_" + token
            words.append(token)
    if words and words[-1] == SENTENCE_BREAK:
        words.pop()
    return " ".join(words)
