"""Secrets at rest (issue 14): the sandbox's state.db holds the AccessKey secret and the API tokens in clear, so
the state directory is 0700 and state.db, state.db-wal and state.db-shm are 0600, new or inherited."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from sandbox.store import Store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private(state: Path) -> None:
    assert mode(state) == 0o700
    files = [state / "state.db", state / "state.db-wal", state / "state.db-shm"]
    assert all(f.exists() for f in files), sorted(os.listdir(state))
    assert {f.name: oct(mode(f)) for f in files} == {f.name: "0o600" for f in files}


def test_a_new_state_dir_and_its_database_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: what the old code got, 0755 and 0644
    try:
        state = tmp_path / "sandbox"
        store = Store(state / "state.db")
        store.set_meta("secret", "not-really")
        assert_private(state)
    finally:
        os.umask(old)


def test_an_existing_world_readable_state_dir_is_made_private(tmp_path: Path) -> None:
    state = tmp_path / "sandbox"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    db = sqlite3.connect(state / "state.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        os.chmod(state / name, 0o644)
    store = Store(state / "state.db")
    store.set_meta("secret", "not-really")
    assert_private(state)
    db.close()
