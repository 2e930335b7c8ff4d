"""Logging: one JSON object per line, each carrying the id of the request it was written for (the
id is set by the HTTP edge, tihuo/edge.py), with the drivers kept quiet below WARNING."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


# what every LogRecord carries by itself; anything else on a record came from `extra=` and is kept
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# loggers whose INFO and DEBUG lines are SQL statements with their parameters (argon2 hashes, phone
# numbers, remarks, client addresses): SQLAlchemy logs statements at INFO, the drivers at DEBUG; and
# the HTTP client's, whose INFO lines are every outbound URL (a receiver's URL may hold its token)
DRIVER_LOGGERS = ("sqlalchemy", "aiosqlite", "asyncpg", "httpx", "httpcore")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id, and every `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """JSON lines on standard error (or `stream`) at `level`; the drivers and SQLAlchemy say only
    warnings and errors whatever the level, since below that they print statements and values."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log would print query strings (download tokens); the request id and our own
    # lines suffice
    logging.getLogger("uvicorn.access").disabled = True
    for name in DRIVER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
