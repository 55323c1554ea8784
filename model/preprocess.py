"""The one text-cleaning function, shared by training and serving.

It ships inside every logged model (``code_paths``), so a review is cleaned
the same way when the model learns from it and when it is scored.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from importlib import resources

MAX_CLEANED_CHARS = 20_000
"""The model reads at most this many characters of a text; the rest is ignored.

``/invocations`` takes texts of any size (the gateway's 5,000-character limit does not apply
there), so this bounds the work one text can cause. It is well above the longest review in
the IMDB data (13,704 characters): texts under it clean exactly as if there were no cap.
"""

# Every pattern below runs in time linear in the text, whatever the text (see _before_last_gt
# and the e-mail pattern): a request cannot buy seconds of CPU with a few thousand characters.
_HTML_TAG = re.compile(r"<[^>]*>")
# Line and paragraph breaks end a sentence (IMDB reviews use <br /> between paragraphs).
_BREAK_TAG = re.compile(r"<\s*+(?:br|p|hr)\b[^>]*>")
_URL = re.compile(r"(?:https?://|www\.)\S+")
# A whitespace-delimited word with an "@" after its first character and, at least two
# characters after that "@", a "." that is not the word's last character: what
# ``\S+@\S+\.\S+`` matches (always the whole word), found in one pass over the word instead
# of that pattern's cubic backtracking.
_EMAIL = re.compile(r"(?<!\S)\S[^\s@]*+@\S\S*?\.\S\S*+")
# Numeric character references too long for int() (over 4,300 digits raises), shortened to
# one with the same meaning before html.unescape reads them.
_LONG_CHAR_REF = re.compile(r"&#(?:([xX])([0-9a-fA-F]{8,}+)|([0-9]{8,}+))")
# "don't" -> "do not", "can't" -> "ca not": the negation survives as its own token.
_NEGATION = re.compile(r"n['’]t\b")
# Words, plus the punctuation that ends a clause; punctuation itself never reaches the output.
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|[.!?;:,()\"]")
_SENTENCE_END = frozenset(".!?")
_CLAUSE_END = frozenset('.!?;:,()"')
NEGATIONS = frozenset({"not", "no", "never", "nor", "cannot"})
# Up to this many content words (not function words) after a negation, within its clause, get
# a "not_" prefix; function words inside the scope stay as they are.
NEGATION_SCOPE = 3
# Written between sentences; not a word, so n-grams are built per sentence (see model.ngrams).
SENTENCE_BREAK = "|"


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """English function words (NLTK's stopwords) without negations, read from the shipped list.

    They are kept in the text: "should have been", "so much better than" and "what a" carry
    a short text's sentiment. They only do not count in a negation's scope."""
    text = resources.files(__package__).joinpath("stopwords.txt").read_text("utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


@lru_cache(maxsize=1)
def function_words() -> frozenset[str]:
    """``stopwords`` as tokens and as the cleaned text writes them ("you're", "youre"), never
    a negation or a punctuation mark: what a negation's scope passes over, and what a preset
    that reads no function words skips (``model.ngrams.SentenceNgrams``)."""
    words = stopwords() | {word.replace("'", "") for word in stopwords()}
    return words - NEGATIONS - _CLAUSE_END


def _short_char_ref(match: re.Match[str]) -> str:
    """The same reference with its leading zeros dropped; past U+10FFFF, one that says so."""
    x, hex_digits, digits = match.groups()
    value = (hex_digits or digits).lstrip("0") or "0"
    if len(value) > 7:  # above 0x10FFFF either way: html.unescape gives U+FFFD for both
        value = "110000" if x else "1114112"
    return f"&#{x or ''}{value}"


def _before_last_gt(pattern: re.Pattern[str], replacement: str, text: str) -> str:
    """``pattern.sub`` for a tag pattern (``<...>``), in linear time.

    A tag ends with ">", so no match lies after the last one; left alone, the engine would try
    every "<" there and scan to the end of the text from each (quadratic on "<<<<...").
    """
    end = text.rfind(">") + 1
    return pattern.sub(replacement, text[:end]) + text[end:] if end else text


def clean_text(text: object) -> str:
    """Lowercase, drop HTML, URLs, e-mails, numbers and punctuation.

    Negations mark their scope: the next ``NEGATION_SCOPE`` content words of the same clause
    get a ``not_`` prefix ("not a good one, fun" -> "not a not_good not_one fun"); function
    words (``stopwords``) pass unmarked and do not count. Sentences (and
    ``<br />`` breaks) are separated by ``SENTENCE_BREAK`` so that no n-gram spans two of them.
    Reads at most ``MAX_CLEANED_CHARS`` characters. Never raises: anything that is not a
    string cleans to an empty string.
    """
    if not isinstance(text, str):
        return ""
    text = text[:MAX_CLEANED_CHARS]
    # Each pattern runs only when its trigger character is present: same result, and the
    # cleaning is about a third faster on real reviews (it is part of every prediction).
    if "&" in text:
        if "&#" in text:
            text = _LONG_CHAR_REF.sub(_short_char_ref, text)
        text = html.unescape(text)
    text = text.lower()
    if "<" in text:
        text = _before_last_gt(_BREAK_TAG, " . ", text)
        text = _before_last_gt(_HTML_TAG, " ", text)
    if "http" in text or "www." in text:
        text = _URL.sub(" ", text)
    if "@" in text:
        text = _EMAIL.sub(" ", text)
    text = _NEGATION.sub(" not", text)
    # Tokens are runs of ASCII letters, so numbers fall away here; punctuation only ends
    # a negation's scope (any clause mark) or a sentence (. ! ?), and is not kept.
    function = function_words()
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
        elif scope and token not in function:
            scope -= 1
            words.append("not_" + token)
        else:
            words.append(token)
    if words and words[-1] == SENTENCE_BREAK:
        words.pop()
    cleaned = " ".join(words)
    # Apostrophes only ever sit inside a word ("it's"): dropped once, from the whole text.
    return cleaned.replace("'", "") if "'" in cleaned else cleaned
