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
_URL = re.compile(r"(?:https?://|www\.)\S+")
_EMAIL = re.compile(r"\S+@\S+\.\S+")
# "don't" -> "do not", "can't" -> "ca not": the negation survives as its own token.
_NEGATION = re.compile(r"n['’]t\b")
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """English stopwords without negations, read from the shipped list."""
    text = resources.files(__package__).joinpath("stopwords.txt").read_text("utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def clean_text(text: object) -> str:
    """Lowercase, drop HTML, URLs, e-mails, numbers, punctuation and stopwords.

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
        text = _HTML_TAG.sub(" ", text)
    if "http" in text or "www." in text:
        text = _URL.sub(" ", text)
    if "@" in text:
        text = _EMAIL.sub(" ", text)
    text = _NEGATION.sub(" not", text)
    stop = stopwords()
    # Tokens are runs of ASCII letters, so numbers and punctuation fall away here.
    return " ".join(
        token.replace("'", "") for token in _TOKEN.findall(text) if token not in stop
    )
