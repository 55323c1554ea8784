"""MLflow's scoring formats as the prediction log reads them: the texts of an `/invocations`
request (CSV, or JSON in any of MLflow's input layouts) and the rows of its answer.

Anything that cannot be read gives no texts or no rows: the log then keeps less about that
call rather than fail it.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any


def answer_rows(answer: bytes) -> list[Any]:
    try:
        body = json.loads(answer)
    except ValueError:
        return []
    rows = body.get("predictions") if isinstance(body, dict) else None
    return rows if isinstance(rows, list) else []


def request_texts(body: bytes, content_type: str) -> list[Any]:
    """The `text` column of an `/invocations` request in any of MLflow's input formats; []
    when it cannot be read (the rows are logged without their lengths)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "text/csv":
        try:
            reader = csv.DictReader(io.StringIO(body.decode("utf-8")))
            return [row.get("text") for row in reader]
        except (UnicodeDecodeError, csv.Error):
            return []
    try:
        request = json.loads(body)
    except ValueError:
        return []
    if not isinstance(request, dict):
        return []
    split = request.get("dataframe_split")
    if isinstance(split, dict):
        columns, data = split.get("columns"), split.get("data")
        if isinstance(columns, list) and "text" in columns and isinstance(data, list):
            at = columns.index("text")
            return [row[at] if isinstance(row, list) and len(row) > at else None for row in data]
        return []
    for key in ("dataframe_records", "instances", "inputs"):
        value = request.get(key)
        if isinstance(value, dict) and isinstance(value.get("text"), list):
            return value["text"]
        if isinstance(value, list):
            return [row.get("text") if isinstance(row, dict) else row for row in value]
    return []
