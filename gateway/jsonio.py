"""JSON on the hot path: orjson where it gives the same result, the standard library where it
does not.

orjson is several times faster, and refuses what it cannot read or write exactly as `json`
would (NaN, numbers out of its range, lone surrogates, UTF-16 text); those fall back to
`json`, so every input reads as before and every answer says the same.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    """`json.loads`; raises what it raises."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value: Any) -> bytes:
    """UTF-8 JSON that `json.loads` reads back as ``value``."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()
