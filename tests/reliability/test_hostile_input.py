"""Hostile and odd input, case by case, each with the status it must get; after every case
the service must still be healthy and scoring."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from urllib.parse import urlsplit

import httpx
import pytest

from tests.load import REPORT, Load, Row
from tests.reliability.conftest import AUTH

JSON = "application/json"
SCRIPT = '<script>alert("x")</script><img src=x onerror=alert(1)> A <b>great</b> film.'


def body(value) -> bytes:
    return json.dumps(value).encode()


def padded(size: int) -> bytes:
    """A /predict body of exactly ``size`` bytes."""
    raw = body({"text": ""})
    return body({"text": "a" * (size - len(raw))})


def chunks(total: int, size: int = 65536):
    """A body streamed without Content-Length (chunked)."""
    sent = 0
    while sent < total:
        yield b"a" * min(size, total - sent)
        sent += size


# (name, path, content, content type, expected status)
CASES = [
    ("empty body", "/predict", b"", JSON, 422),
    ("empty text", "/predict", body({"text": ""}), JSON, 400),
    ("whitespace only", "/predict", body({"text": " \t\n\r\u3000 "}), JSON, 400),
    ("exactly 5,000 characters", "/predict", body({"text": "good " * 1000}), JSON, 200),
    ("5,001 characters", "/predict", body({"text": "good " * 1000 + "!"}), JSON, 400),
    ("5,000 emoji (non-BMP) characters", "/predict", body({"text": "😀" * 5000}), JSON, 200),
    ("1 MB body (at the limit)", "/predict", padded(1_000_000), JSON, 400),
    ("1 MiB body (over the limit)", "/predict", padded(1_048_576), JSON, 413),
    ("10 MB body", "/predict", padded(10_000_000), JSON, 413),
    ("10 MB body, chunked", "/predict", chunks(10_000_000), JSON, 413),
    ("invalid UTF-8", "/predict", b'{"text": "caf\xe9 \xff\xfe"}', JSON, 400),
    ("invalid JSON", "/predict", b'{"text": "unclosed', JSON, 422),
    ("wrong content type", "/predict", body({"text": "A fine film."}), "text/plain", 415),
    (
        "form content type",
        "/predict",
        b"text=A+fine+film",
        "application/x-www-form-urlencoded",
        415,
    ),
    ("null body", "/predict", b"null", JSON, 422),
    ("null text", "/predict", body({"text": None}), JSON, 422),
    ("number body", "/predict", b"42", JSON, 422),
    ("number text", "/predict", body({"text": 42}), JSON, 422),
    ("NaN text", "/predict", b'{"text": NaN}', JSON, 422),
    ("boolean text", "/predict", body({"text": True}), JSON, 422),
    ("list body", "/predict", body(["A fine film."]), JSON, 422),
    ("nested object text", "/predict", body({"text": {"a": {"b": ["c"]}}}), JSON, 422),
    ("100,000 levels of nesting", "/predict", b"[" * 100_000 + b"]" * 100_000, JSON, 400),
    (
        "explain not a boolean",
        "/predict",
        body({"text": "A fine film.", "explain": "yes"}),
        JSON,
        422,
    ),
    (
        "unknown fields ignored",
        "/predict",
        body({"text": "A fine film.", "admin": True}),
        JSON,
        200,
    ),
    ("emoji", "/predict", body({"text": "Loved it 😍🎬🍿👍🏽 best film 🔥"}), JSON, 200),
    ("right-to-left", "/predict", body({"text": "فيلم رائع جدا \u202eevil\u202c שלום"}), JSON, 200),
    (
        "CJK",
        "/predict",
        body({"text": "这部电影非常好看。素晴らしい映画でした。정말 좋은 영화"}),
        JSON,
        200,
    ),
    (
        "zero-width characters",
        "/predict",
        body({"text": "gr\u200beat\u200c fi\u200dlm\ufeff"}),
        JSON,
        200,
    ),
    ("only zero-width characters", "/predict", body({"text": "\u200b\u200c\u200d"}), JSON, 200),
    ("control characters", "/predict", body({"text": "bad\x00\x01\x1b[31m film\x7f"}), JSON, 200),
    ("HTML and script tags", "/predict", body({"text": SCRIPT}), JSON, 200),
    (
        "HTML and script tags, explained",
        "/predict",
        body({"text": SCRIPT, "explain": True}),
        JSON,
        200,
    ),
    ("1,000-item batch", "/predict/batch", body({"texts": ["A fine film."] * 1000}), JSON, 200),
    ("1,001-item batch", "/predict/batch", body({"texts": ["A fine film."] * 1001}), JSON, 400),
    (
        "batch with one empty item",
        "/predict/batch",
        body({"texts": ["Good.", "", "Bad."]}),
        JSON,
        400,
    ),
    ("empty batch", "/predict/batch", body({"texts": []}), JSON, 400),
    ("batch of numbers", "/predict/batch", body({"texts": [1, 2.5]}), JSON, 400),
    ("batch of objects", "/predict/batch", body({"texts": [{"text": "x"}]}), JSON, 400),
    ("batch of script tags", "/predict/batch", body({"texts": [SCRIPT] * 3}), JSON, 200),
    ("invocations: invalid JSON", "/invocations", b"{nope", JSON, 400),
    ("invocations: wrong content type", "/invocations", b"x", "text/plain", 415),
    ("invocations: 10 MB body", "/invocations", chunks(10_000_000), JSON, 413),
]

SEEN: Counter = Counter()
LONGEST = [0.0]


def healthy(gw) -> None:
    assert gw.health()["status"] == "healthy"
    assert gw.predict("A fine film.").status_code == 200


@pytest.fixture(scope="module", autouse=True)
def report(gw):
    yield
    if SEEN:
        REPORT.append(
            Row(
                f"hostile input: {len(CASES)} named cases",
                sum(SEEN.values()),
                SEEN,
                LONGEST[0],
                note="each followed by a health check and a prediction",
            )
        )


@pytest.mark.parametrize(
    "path,content,content_type,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_named_case(gw, path, content, content_type, expected):
    started = time.monotonic()
    answer = gw.http.post(path, content=content, headers={"content-type": content_type})
    LONGEST[0] = max(LONGEST[0], time.monotonic() - started)
    SEEN[answer.status_code] += 1
    assert answer.status_code == expected, answer.text[:300]
    if path != "/invocations":
        assert answer.headers["content-type"] == JSON
        answer_body = answer.json()
        if expected == 200:
            assert set(answer_body) >= {"model_version"}
        else:
            assert set(answer_body) == {"detail"} and isinstance(answer_body["detail"], str)
    # Input is data: never echoed back as markup.
    assert "<script" not in answer.text and "<img" not in answer.text
    healthy(gw)


@pytest.mark.parametrize("held_count", [200, pytest.param(1000, marks=pytest.mark.soak)])
def test_many_connections_held_open(gw, held_count):
    """Idle and half-sent connections are held open while real traffic is still served."""
    address = urlsplit(gw.url)
    held: list[socket.socket] = []
    try:
        for i in range(held_count):
            sock = socket.create_connection((address.hostname, address.port), timeout=5)
            if i % 2:  # half of them send an unfinished request and stall
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
            held.append(sock)
        statuses, seconds = asyncio.run(concurrent_predictions(gw.url, held_count))
        assert gw.health()["status"] == "healthy"
    finally:
        for sock in held:
            sock.close()
    REPORT.append(
        Row(
            f"{held_count} connections held open + {held_count} concurrent predictions",
            held_count,
            statuses,
            seconds,
        )
    )
    assert statuses == {200: held_count}
    healthy(gw)


async def concurrent_predictions(url: str, count: int) -> tuple[Counter, float]:
    """``count`` predictions at once; their statuses and the longest one's seconds."""
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as client:

        async def one(i: int) -> tuple[int | str, float]:
            started = time.monotonic()
            try:
                answer = await client.post("/predict", json={"text": f"Review {i}: fine."})
                status = answer.status_code
            except httpx.HTTPError as error:
                status = type(error).__name__
            return status, time.monotonic() - started

        answers = await asyncio.gather(*(one(i) for i in range(count)))
    return Counter(status for status, _ in answers), max(seconds for _, seconds in answers)


# Valid 5,000-character reviews built to make text cleaning slow: long runs of the
# characters its patterns look for (e-mail addresses, tags, URLs, entities, punctuation).
ADVERSARIAL = {
    "a@ x2500": "a@" * 2500,
    "@ x5000": "@" * 5000,
    "< x5000": "<" * 5000,
    "<a x2500": "<a" * 2500,
    "</ x2500": "</" * 2500,
    "<br x1250": "<br " * 1250,
    "a@b. x1250": "a@b." * 1250,
    "x.@ x1666": "x.@" * 1666 + "xx",
    "http:// x714": "http://" * 714 + "ab",
    "&# x2500": "&#" * 2500,
    "!' x2500": "!'" * 2500,
    "a:/ x1666": "a:/" * 1666 + "aa",
}


def test_adversarial_texts_are_answered_while_others_are_served(gw):
    """Each adversarial text, all at once and beside normal traffic, is answered 200, and the
    normal requests keep being answered. The gateway's own deadline (10 s here) makes a slow
    cleaning fail as 504s rather than hang."""
    assert all(len(text) == 5000 for text in ADVERSARIAL.values()), "each must be valid"

    async def adversaries() -> list[tuple[str, int | str, float]]:
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH, timeout=60) as client:

            async def one(name: str, text: str, explain: bool):
                started = time.monotonic()
                try:
                    answer = await client.post("/predict", json={"text": text, "explain": explain})
                    status = answer.status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                return name, status, time.monotonic() - started

            return await asyncio.gather(
                *(
                    one(name, text, explain)
                    for name, text in ADVERSARIAL.items()
                    for explain in (False, True)
                )
            )

    with Load(gw.url, headers=AUTH, max_seconds=180) as load:
        load.wait(1.0)
        started = time.monotonic()
        answers = asyncio.run(adversaries())
        ended = time.monotonic()
        load.wait(1.0)
    beside = load.between(started, ended)
    statuses = Counter(status for _, status, _ in answers)
    longest = max(seconds for _, _, seconds in answers)
    REPORT.append(
        Row(
            f"adversarial 5,000-character texts ({len(ADVERSARIAL)} kinds, with and without "
            "explain, at once) beside normal traffic",
            len(answers) + len(beside),
            statuses + load.statuses(beside),
            max(longest, max((a.seconds for a in beside), default=0.0)),
            note=f"longest adversarial answer {longest * 1000:,.0f} ms",
        )
    )
    assert {name: status for name, status, _ in answers if status != 200} == {}
    assert beside, "no normal request was answered meanwhile"
    assert load.statuses(beside) == {200: len(beside)}
    healthy(gw)
