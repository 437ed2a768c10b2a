"""Log output for `fuelswitch serve`: text for people (the default) or JSON, one object per line.

Every line has `ts` (UTC, ISO 8601 with milliseconds), `level`, `logger` and `message`. A line about an
RPC (logger `fuelswitch.request`, switch/observe.py) carries its request fields too: `request_id`,
`service`, `method`, `terminal_id`, `stan`, `response_code`, `latency_ms`, `masked_pan`. A card number
is only ever logged masked; a PIN or PIN block never. docs/operations.md lists the fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOG_FORMATS = ("text", "json")
FIELDS_ATTR = "fs"  # LogRecord attribute holding a line's structured fields (logging's `extra=`)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, FIELDS_ATTR, None)
    return fields if isinstance(fields, dict) else {}


def iso_utc(created: float) -> str:
    whole = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((created - whole) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(fields_of(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """The classic one-line format, with a line's structured fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        text = super().formatMessage(record)
        fields = fields_of(record)
        if fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items() if value not in ("", None))
        return text


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Replace the root logger's handlers with one on stderr in `log_format`."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
