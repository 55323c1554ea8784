"""Credentials never leave the gateway: the one place that takes them out of text.

A tracking URI may carry a user and password (`http://user:pass@host`); MLflow's errors quote
it. Every log record goes through `scrub`, and so does every registry error where it enters
the gateway (and so /info, rollout reasons and error details).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

# `scheme://user:password@` or `scheme://token@`: the user part of any URL.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/@\s\"'<>]+@")
_secrets: set[str] = set()


def remember(uri: str) -> None:
    """Also take out, wherever it appears, the password this URI carries (in any encoding)."""
    parts = urlsplit(uri)
    if parts.password:
        for form in (parts.password, unquote(parts.password), quote(unquote(parts.password))):
            if len(form) >= 4:  # a one-letter "password" would blank ordinary words
                _secrets.add(form)


def scrub(text: str) -> str:
    text = _USERINFO.sub(r"\1", text)
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


def without_credentials(uri: str) -> str:
    """The URI as it may be shown: no user, no password."""
    parts = urlsplit(uri)
    if not (parts.username or parts.password):
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
