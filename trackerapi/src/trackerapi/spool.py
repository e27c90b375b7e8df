"""The durable local spool: what could not be delivered yet, in order, in a SQLite file.

Background batches are written here before they are sent and deleted once the API has answered
them, so a batch in flight survives the process dying; when the API stays unreachable, events
and job creations wait here for the next flush, in this process or the next (`trackerapi flush`).
Resending is safe because every entry keeps its `event_id` (or `provider_job_id`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

EntryKind = Literal["event", "job"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    base_url TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    spooled_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS spool_by_url ON spool (base_url, seq);
"""


def default_spool_path() -> Path:
    """The user's cache directory, as each platform names it."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "trackerapi" / "spool.sqlite3"


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: EntryKind
    body: str

    def data(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


class Spool:
    """Entries per API base URL, oldest first. Thread-safe; several processes may share it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Autocommit; WAL so that a reader never waits for a writer, NORMAL sync so that an
        # append costs no fsync of its own yet survives the process dying.
        self._db = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def append(self, base_url: str, entries: Iterable[tuple[EntryKind, str]]) -> None:
        now = datetime.now(timezone.utc).isoformat()
        rows = [(base_url, kind, body, now) for kind, body in entries]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO spool (base_url, kind, body, spooled_at) VALUES (?, ?, ?, ?)", rows
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def head(self, base_url: str, limit: int) -> list[Entry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, body FROM spool WHERE base_url = ? ORDER BY seq LIMIT ?",
                (base_url, limit),
            ).fetchall()
        return [Entry(seq, kind, body) for seq, kind, body in rows]

    def delete(self, entries: Iterable[Entry]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM spool WHERE seq = ?", [(e.seq,) for e in entries])

    def count(self, base_url: str | None = None) -> int:
        with self._lock:
            if base_url is None:
                row = self._db.execute("SELECT count(*) FROM spool").fetchone()
            else:
                row = self._db.execute(
                    "SELECT count(*) FROM spool WHERE base_url = ?", (base_url,)
                ).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
