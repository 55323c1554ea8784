"""Structured logs: one JSON object per line, each carrying the id of the request it serves."""

from __future__ import annotations

import logging
from contextvars import ContextVar

from gateway import jsonio
from gateway.redact import scrub

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")


class JsonLogs(logging.Formatter):
    """One JSON object per line, with the request id; messages never carry review text, and
    every record (ours, uvicorn's, MLflow's) is scrubbed of credentials."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": REQUEST_ID.get(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["error"] = self.formatStack(record.stack_info)
        for key, value in line.items():
            if isinstance(value, str) and key not in _OWN:
                line[key] = scrub(value)
        return jsonio.dumps(_plain(line)).decode()


# Fields the formatter writes itself, never from a message or a request: nothing to scrub.
_OWN = frozenset({"ts", "level", "logger"})


def _plain(value):
    """``value`` with anything JSON has no type for as its (scrubbed) text."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return scrub(str(value))


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogs())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    for name in ("aiohttp",):
        logging.getLogger(name).setLevel(logging.WARNING)
