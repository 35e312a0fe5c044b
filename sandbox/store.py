"""The sandbox's persistent state: one SQLite database under the state directory.

Each emulated service owns its tables (created with :meth:`Store.ensure`) and, for bulk data, files under its own
folder of the state directory. A single connection guarded by a lock is shared by the sandbox's threads; every
statement is short, so contention is negligible next to network I/O.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _private(db: Path) -> None:
    """The database holds the AccessKey secret and the API tokens in clear: its folder is 0700 and the database,
    with its -wal and -shm, 0600, on a new state directory and on an existing one alike. The database file is
    created 0600 before SQLite opens it; SQLite creates -wal and -shm with the database file's own mode
    (sqlite3 os_unix.c findCreateFileMode)."""
    db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(db.parent, 0o700)
    os.close(os.open(db, os.O_RDWR | os.O_CREAT, 0o600))
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if path.exists():
            os.chmod(path, 0o600)


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        _private(self.path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self.ensure("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def ensure(self, *ddl: str) -> None:
        """Create tables/indexes if missing (idempotent DDL)."""
        with self._lock:
            for stmt in ddl:
                self._db.execute(stmt)

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, params)

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute(sql, params).fetchone()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all statements inside commit together or not at all."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    # --- small key/value helpers for settings that must survive a restart ---
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.one("SELECT value FROM meta WHERE key = ?", (key,))
        return default if row is None else json.loads(row["value"])

    def set_meta(self, key: str, value: Any) -> None:
        self.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()
