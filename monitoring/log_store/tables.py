"""The two tables, defined once for both backends and for the writer and the reader.

Times are ISO 8601 text in UTC with milliseconds ("2026-12-08T02:15:00.123+00:00"): the same
bytes on both backends, and ordered as text as they are in time.
"""

from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column("time", String(32), nullable=False),
    Column("request_id", Text, nullable=False),
    Column("item", Integer, nullable=False),
    Column("route", Text, nullable=False),
    Column("replica", Text, nullable=False),
    Column("model_version", Text, nullable=False),
    Column("sentiment", Text, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("text_length", Integer),
    Column("known_term_ratio", Float),
    Column("text", Text),
    # SHA-256 of the review, kept even when its text is not: feedback may then send the text
    # it labels, and only the text that was answered is accepted.
    Column("text_digest", String(64)),
    Index("predictions_request_id", "request_id"),
    # Expiry and a period's read on PostgreSQL (SQLite files expire whole).
    Index("predictions_time", "time"),
)

feedback = Table(
    "feedback",
    metadata,
    # The order labels arrived in, whichever replica stored them: counting resumes after the
    # last one counted instead of reading the whole table.
    # An identity, not a serial: inserting needs no right on a sequence.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), Identity(), primary_key=True),
    Column("request_id", Text, nullable=False),
    Column("item", Integer, nullable=False),
    Column("label", Text, nullable=False),
    Column("text", Text),
    Column("time", String(32), nullable=False),
    Column("model_version", Text, nullable=False),
    Column("sentiment", Text, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("replica", Text, nullable=False),
    # One label per prediction.
    UniqueConstraint("request_id", "item", name="feedback_one_label"),
    # The texts still kept, by time: expiry reads only those past retention.
    Index(
        "feedback_text_time",
        "time",
        sqlite_where=text("text IS NOT NULL"),
        postgresql_where=text("text IS NOT NULL"),
    ),
)


@dataclass(frozen=True)
class Prediction:
    """One row of `predictions` (one prediction; a batch answer is several)."""

    time: str
    request_id: str
    item: int
    route: str
    replica: str
    model_version: str
    sentiment: str
    confidence: float
    text_length: int | None
    known_term_ratio: float | None
    text: str | None = None
    text_digest: str | None = None


@dataclass(frozen=True)
class Feedback:
    """One row of `feedback`: a true label and the answer it is about."""

    request_id: str
    item: int
    label: str
    text: str | None
    time: str
    model_version: str
    sentiment: str
    confidence: float
    replica: str

    @property
    def correct(self) -> bool:
        return self.label == self.sentiment


PREDICTION_COLUMNS = [field.name for field in fields(Prediction)]
FEEDBACK_COLUMNS = [field.name for field in fields(Feedback)]
# A row's values in column order (`dataclasses.astuple` deep-copies each: 20x slower).
prediction_values = operator.attrgetter(*PREDICTION_COLUMNS)


def iso(moment: float | datetime) -> str:
    """A Unix time or an aware datetime as the tables keep time."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def storable(value: str) -> str:
    """``value`` as both backends can store it: a lone surrogate (valid JSON) and NUL (which
    PostgreSQL's text refuses) become "?"."""
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "?")


def digest(review: str) -> str:
    """The review's SHA-256, as the log keeps it."""
    return hashlib.sha256(storable(review).encode("utf-8")).hexdigest()
