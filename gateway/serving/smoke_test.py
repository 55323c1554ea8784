"""The smoke test a new scoring server passes before it gets traffic.

Its answers are checked exactly as the scorer checks every answer (`predictions`), so a
version that answers anything else (an error, a dict, a scalar, other columns) is refused
with the reason, and a clear positive and a clear negative review must come back right.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.serving.scoring import Answer, BadPredictions, predictions


class SmokeFailed(Exception):
    """The server answers, but not as a working model would: the version is broken."""


EXPECTED = ["positive", "negative"]


async def smoke_test(
    client: aiohttp.ClientSession,
    url: str,
    example: dict[str, Any] | None,
    positive: str,
    negative: str,
) -> None:
    """The version's own input example must score, and ``positive`` and ``negative`` must
    come back as such. Raises SmokeFailed saying what was wrong."""
    invocations = f"{url}/invocations"
    rows = _rows_in(example)
    if rows is not None:
        _checked(await _post(client, invocations, example), rows)
    body = {"dataframe_split": {"columns": ["text"], "data": [[positive], [negative]]}}
    got = [row["sentiment"] for row in _checked(await _post(client, invocations, body), 2)]
    if got != EXPECTED:
        raise SmokeFailed(f"smoke test expected {EXPECTED}, got {got}")


async def _post(client: aiohttp.ClientSession, url: str, body: Any) -> Answer:
    async with client.post(url, json=body) as response:
        return Answer(response.status, await response.read(), response.content_type)


def _checked(answer: Answer, expected: int) -> list[dict[str, Any]]:
    if answer.status != 200:
        text = answer.content.decode("utf-8", "replace")[:150]
        raise SmokeFailed(f"smoke test got HTTP {answer.status}: {text}")
    try:
        return predictions(answer, expected)
    except BadPredictions as error:
        raise SmokeFailed(f"smoke test: {error}") from None


def _rows_in(example: dict[str, Any] | None) -> int | None:
    """How many rows an MLflow input example holds (None: no example, or a shape not known)."""
    if not isinstance(example, dict):
        return None
    if isinstance(split := example.get("dataframe_split"), dict):
        data = split.get("data")
        return len(data) if isinstance(data, list) else None
    for key in ("dataframe_records", "instances", "inputs"):
        value = example.get(key)
        if isinstance(value, list):
            return len(value)
        if isinstance(value, dict) and value:
            first = next(iter(value.values()))
            return len(first) if isinstance(first, list) else None
    return None
