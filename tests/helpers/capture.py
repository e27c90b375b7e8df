"""What the app logs and sends to the database inside a block."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from config import config


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured_records(logger_name: str) -> Iterator[list[logging.LogRecord]]:
    """The records a logger emits inside the block, whatever its configured level."""
    logger = logging.getLogger(logger_name)
    handler, level = _ListHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def captured_statements() -> Iterator[list[str]]:
    """The SQL the app sends inside the block, less the tests' own savepoint handling."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statement: str = args[2]
        if not statement.startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO")):
            statements.append(statement)

    event.listen(config.database.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(config.database.engine, "before_cursor_execute", record)
