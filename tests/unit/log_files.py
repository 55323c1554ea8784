"""What the unit tests of the log store and its users share: waiting on a background thread,
and a prediction file as the log wrote them before the digest column."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

# The predictions table before `text_digest` (read as it is, never written again).
PRE_DIGEST_TABLE = (
    "CREATE TABLE predictions (time TEXT NOT NULL, request_id TEXT NOT NULL, "
    "item INTEGER NOT NULL, route TEXT NOT NULL, replica TEXT NOT NULL, "
    "model_version TEXT NOT NULL, sentiment TEXT NOT NULL, confidence REAL NOT NULL, "
    "text_length INTEGER, known_term_ratio REAL, text TEXT)"
)


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def pre_digest_file(root: Path, row: tuple) -> Path:
    """Replica `old`'s file under ``root``, holding ``row`` (the 11 columns above)."""
    path = root / "predictions" / "old" / "20260101T000000Z.sqlite"
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.execute(PRE_DIGEST_TABLE)
        db.execute("INSERT INTO predictions VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)
    db.close()
    return path
