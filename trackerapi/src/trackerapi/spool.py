"""The durable local spool: what could not be delivered yet, in order, in a SQLite file.

Background batches are written here before they are sent and deleted once the API has answered
them, so a batch in flight survives the process dying; when the API stays unreachable, events
and job creations wait here for the next flush, in this process or the next (`trackerapi flush`).
Resending is safe because every entry keeps its `event_id` (or `provider_job_id`).
"""

from __future__ import annotations

import hashlib
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
    key_id TEXT,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    spooled_at TEXT NOT NULL
)
"""
# A file written before entries recorded their key: its rows keep key_id NULL ("legacy"), sent
# only when a flush adopts them explicitly (`adopt_legacy`), never by whichever key comes first.
_ADD_KEY_ID = "ALTER TABLE spool ADD COLUMN key_id TEXT"
_INDEXES = """
DROP INDEX IF EXISTS spool_by_url;
CREATE INDEX IF NOT EXISTS spool_by_key ON spool (base_url, key_id, seq);
"""


def key_id(api_key: str | None) -> str:
    """Which key an entry is sent with, without the key itself in the file."""
    return hashlib.sha256((api_key or "").encode()).hexdigest()[:16]


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
    """Entries per API base URL and API key (by its id), oldest first. Thread-safe; several
    processes may share it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # The entries hold the scripts' metadata: only the user may read them. A directory
        # made here is the user's alone; one that exists (/tmp, say) is left as it is.
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        if os.name == "posix":
            os.chmod(self.path, 0o600)  # a file an older client made readable to all
        self._lock = threading.Lock()
        # Autocommit; WAL so that a reader never waits for a writer, NORMAL sync so that an
        # append costs no fsync of its own yet survives the process dying.
        self._db = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # In one write transaction, so two processes opening an old file migrate it once.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(_SCHEMA)
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(spool)")}
                if "key_id" not in columns:
                    self._db.execute(_ADD_KEY_ID)
                for statement in filter(str.strip, _INDEXES.split(";")):
                    self._db.execute(statement)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def append(self, base_url: str, key: str, entries: Iterable[tuple[EntryKind, str]]) -> None:
        now = datetime.now(timezone.utc).isoformat()
        rows = [(base_url, key, kind, body, now) for kind, body in entries]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO spool (base_url, key_id, kind, body, spooled_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def head(self, base_url: str, key: str, limit: int) -> list[Entry]:
        """The oldest entries to send to `base_url` with the key whose id is `key`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, body FROM spool WHERE base_url = ? AND key_id = ?"
                " ORDER BY seq LIMIT ?",
                (base_url, key, limit),
            ).fetchall()
        return [Entry(seq, kind, body) for seq, kind, body in rows]

    def delete(self, entries: Iterable[Entry]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM spool WHERE seq = ?", [(e.seq,) for e in entries])

    def count(self, base_url: str | None = None, key: str | None = None) -> int:
        """Entries for `base_url` and the key id `key` (all of them without either)."""
        query, parameters = "SELECT count(*) FROM spool WHERE 1 = 1", []
        if base_url is not None:
            query += " AND base_url = ?"
            parameters.append(base_url)
        if key is not None:
            query += " AND key_id = ?"
            parameters.append(key)
        with self._lock:
            row = self._db.execute(query, parameters).fetchone()
        return int(row[0])

    def count_legacy(self, base_url: str) -> int:
        """Entries for `base_url` spooled by a client that recorded no key."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM spool WHERE base_url = ? AND key_id IS NULL", (base_url,)
            ).fetchone()
        return int(row[0])

    def adopt_legacy(self, base_url: str, key: str) -> int:
        """Give the entries that recorded no key to the key id `key`; answers how many."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE spool SET key_id = ? WHERE base_url = ? AND key_id IS NULL",
                (key, base_url),
            )
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
