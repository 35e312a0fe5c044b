"""Object storage: an in-memory index written through to SQLite, the global resourceVersion, and the watch hub.

- Objects are kept per storage key (``pods``, ``deployments.apps``) as ``(namespace, name) -> Entry`` where an entry
  holds the object and its JSON serialization (lists are answered by joining the stored bytes).
- ``resourceVersion`` is one counter for the whole store (as etcd's revision), persisted with every write, so it
  keeps increasing across a restart.
- Secondary indexes (:mod:`.indexes`: namespace, a pod's node, its controller ...) are updated with every write,
  so readers that need a slice of a resource do not go over all of it.
- Every change is kept in a bounded per-resource history (the "watch window"); a watch from an older
  resourceVersion gets ``410 Expired`` (as apiserver's watch cache, ``storage/cacher/watch_cache.go``).
- Watchers live on an asyncio loop; writers may be on any thread, delivery uses ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..store import Store
from .indexes import Index, indexes_for, known

HISTORY = 20000


@dataclass(slots=True)
class Entry:
    obj: dict[str, Any]
    blob: bytes
    rv: int


@dataclass(slots=True)
class Change:
    rv: int
    type: str  # ADDED MODIFIED DELETED
    obj: dict[str, Any]
    blob: bytes
    old: dict[str, Any] | None


@dataclass(eq=False)
class Watcher:
    key: str
    accept: Callable[[dict[str, Any]], bool]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    thread: int = field(default_factory=threading.get_ident)

    def deliver(self, item: Any) -> None:
        if threading.get_ident() == self.thread:
            self.queue.put_nowait(item)
        else:
            with contextlib.suppress(RuntimeError):  # loop closed
                self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class Storage:
    def __init__(self, store: Store) -> None:
        self.db = store
        self.lock = threading.RLock()
        store.ensure(
            "CREATE TABLE IF NOT EXISTS kube_objects (rkey TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,"
            " rv INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (rkey, namespace, name))"
        )
        self.objects: dict[str, dict[tuple[str, str], Entry]] = {}
        self.uids: dict[str, tuple[str, str, str]] = {}
        self.indexes: dict[str, dict[str, Index]] = {}
        self.rv = int(store.get_meta("kube_rv", 0) or 0)
        for row in store.query("SELECT rkey, namespace, name, rv, body FROM kube_objects"):
            obj = orjson.loads(row["body"])
            self.objects.setdefault(row["rkey"], {})[(row["namespace"], row["name"])] = Entry(obj, bytes(row["body"]),
                                                                                             row["rv"])
            self.uids[obj["metadata"]["uid"]] = (row["rkey"], row["namespace"], row["name"])
            self._index(row["rkey"], (row["namespace"], row["name"]), obj)
            self.rv = max(self.rv, row["rv"])
        self.history: dict[str, deque[Change]] = {}
        # highest resourceVersion no longer in a resource's history: watches from before it are expired
        self.compacted: dict[str, int] = {}
        self.start_rv = self.rv
        self.watchers: dict[str, set[Watcher]] = {}
        self.listeners: list[Callable[[str, Change], None]] = []

    # ---- reads ---------------------------------------------------------------------------------------------------
    def entry(self, key: str, namespace: str, name: str) -> Entry | None:
        return self.objects.get(key, {}).get((namespace, name))

    def entries(self, key: str, namespace: str | None = None) -> list[Entry]:
        if namespace is None:
            bucket = self.objects.get(key, {})
            return [bucket[k] for k in sorted(bucket)]
        return self.indexed(key, "namespace", (namespace,))

    def indexed(self, key: str, index: str, values: Any = None) -> list[Entry]:
        """Entries filed under any of ``values`` in ``index`` (None: all entries in the index), by namespace/name."""
        if not known(key, index):
            raise KeyError(f"no index {index!r} of {key}")
        idx = self.indexes.get(key, {}).get(index)
        if idx is None:
            return []
        bucket = self.objects.get(key, {})
        return [bucket[k] for k in sorted(idx.lookup(values))]

    def by_uid(self, uid: str) -> tuple[str, str, str] | None:
        return self.uids.get(uid)

    # ---- writes (callers hold self.lock) ---------------------------------------------------------------------------
    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def put(self, key: str, obj: dict[str, Any]) -> Entry:
        meta = obj["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        with self.lock:
            rv = self.next_rv()
            meta["resourceVersion"] = str(rv)
            blob = orjson.dumps(obj)
            bucket = self.objects.setdefault(key, {})
            old = bucket.get((ns, name))
            entry = Entry(obj, blob, rv)
            with self.db.tx() as db:
                db.execute("INSERT OR REPLACE INTO kube_objects(rkey, namespace, name, rv, body) VALUES (?,?,?,?,?)",
                           (key, ns, name, rv, blob))
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('kube_rv', ?)", (str(rv),))
            bucket[(ns, name)] = entry
            self.uids[meta["uid"]] = (key, ns, name)
            self._index(key, (ns, name), obj)
            self._publish(key, Change(rv, "MODIFIED" if old else "ADDED", obj, blob, old.obj if old else None))
            return entry

    def remove(self, key: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        with self.lock:
            rv = self.next_rv()
            obj = dict(obj)
            obj["metadata"] = dict(meta, resourceVersion=str(rv))
            with self.db.tx() as db:
                db.execute("DELETE FROM kube_objects WHERE rkey=? AND namespace=? AND name=?", (key, ns, name))
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('kube_rv', ?)", (str(rv),))
            self.objects.get(key, {}).pop((ns, name), None)
            self.uids.pop(meta.get("uid", ""), None)
            self._index(key, (ns, name), None)
            self._publish(key, Change(rv, "DELETED", obj, orjson.dumps(obj), None))
            return obj

    def _index(self, key: str, okey: tuple[str, str], obj: dict[str, Any] | None) -> None:
        idx = self.indexes.get(key)
        if idx is None:
            idx = self.indexes[key] = indexes_for(key)
        for i in idx.values():
            i.update(okey, obj)

    def _publish(self, key: str, change: Change) -> None:
        hist = self.history.get(key)
        if hist is None:
            hist = self.history[key] = deque()
        hist.append(change)
        if len(hist) > HISTORY:
            self.compacted[key] = hist.popleft().rv
        for w in self.watchers.get(key, ()):
            w.deliver(change)
        for fn in self.listeners:
            fn(key, change)

    # ---- watch registration ----------------------------------------------------------------------------------------
    def since(self, key: str, rv: int) -> list[Change] | None:
        """Changes after ``rv`` (None: too old, the history no longer reaches back that far)."""
        floor = self.compacted.get(key, self.start_rv)
        if rv < floor:
            return None
        return [c for c in self.history.get(key, ()) if c.rv > rv]

    def add_watcher(self, w: Watcher) -> None:
        self.watchers.setdefault(w.key, set()).add(w)

    def remove_watcher(self, w: Watcher) -> None:
        with self.lock:
            self.watchers.get(w.key, set()).discard(w)
