"""Logging: readable lines locally, one JSON object per line in production.

Paths, request ids and error messages can hold whatever a client sent, so no value may end a
line or start a new one: JSON escapes every control character, and the text format escapes them
too (a traceback's own lines are indented, so none of them reads as a record of its own).
"""

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

LOGGER_NAME = "tracker"

# Attributes every LogRecord has; anything else was passed with `extra=` and belongs in the line.
_RECORD_ATTRIBUTES = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

# C0 and C1 controls, DEL, and the separators some viewers break lines at.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_control(match: re.Match[str]) -> str:
    character = match.group()
    return _NAMED_ESCAPES.get(character) or f"\\u{ord(character):04x}"


def escape(value: object) -> str:
    """`value` as text on one line: control characters written as escapes (`\\n`, `\\u001b`)."""
    return _CONTROL.sub(_escape_control, str(value))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(
            (key, value) for key, value in record.__dict__.items() if key not in _RECORD_ATTRIBUTES
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # ensure_ascii also escapes U+2028 and U+2029, which JSON itself allows raw.
        return json.dumps(entry, default=str, ensure_ascii=True)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        line = escape(self.formatMessage(record))
        extras = " ".join(
            f"{key}={_field_value(value)}"
            for key, value in record.__dict__.items()
            if key not in _RECORD_ATTRIBUTES
        )
        lines = [f"{line} {extras}" if extras else line]
        if record.exc_info:
            lines.append(_indented(self.formatException(record.exc_info)))
        if record.stack_info:
            lines.append(_indented(self.formatStack(record.stack_info)))
        return "\n".join(lines)


_PLAIN_FIELD = re.compile(r'[^\s"=\\]+')


def _field_value(value: object) -> str:
    """A `key=value` field's value, quoted when a space or `=` in it could fake another field."""
    text = str(value)
    if _PLAIN_FIELD.fullmatch(text) and not _CONTROL.search(text):
        return text
    return '"' + escape(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _indented(text: str) -> str:
    """A traceback's lines, each escaped and indented: none can pass for a record."""
    return "\n".join(f"    {escape(line)}" for line in text.splitlines())


def configure_logging(*, level: str, log_format: str) -> None:
    """Give the application's loggers one handler; safe to call again with other values."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    logger.propagate = False
    handler = logger.handlers[0] if logger.handlers else logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    if not logger.handlers:
        logger.addHandler(handler)
