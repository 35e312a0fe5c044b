"""Secondary indexes of the stored objects, kept current on every write (as client-go's ``cache.Indexer``).

Controllers ask for "the pods bound to these nodes", "the pods this ReplicaSet controls", "the unassigned pods of
this scheduler" through an index instead of going over every object of the resource on each pass, so a write costs
them work in proportion to what it touches, not to the size of the cluster. Every resource is indexed by
``namespace``; the other indexes are per resource (:data:`INDEXES`). An index function returns the values an object
is filed under (none: the object is not in that index).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

Key = tuple[str, str]  # (namespace, name) as in the storage buckets
IndexFunc = Callable[[dict[str, Any]], tuple[Hashable, ...]]

DEFAULT_SCHEDULER = "default-scheduler"


def _namespace(obj: dict[str, Any]) -> tuple[Hashable, ...]:
    return (obj["metadata"].get("namespace", ""),)


def _node_name(pod: dict[str, Any]) -> tuple[Hashable, ...]:
    node = (pod.get("spec") or {}).get("nodeName")
    return (node,) if node else ()


def _unassigned(pod: dict[str, Any]) -> tuple[Hashable, ...]:
    """Pods without a node, by the scheduler they name."""
    spec = pod.get("spec") or {}
    return () if spec.get("nodeName") else (spec.get("schedulerName", DEFAULT_SCHEDULER),)


def _unschedulable(pod: dict[str, Any]) -> tuple[Hashable, ...]:
    """Pods without a node whose PodScheduled condition says Unschedulable (what the cluster autoscaler helps)."""
    if (pod.get("spec") or {}).get("nodeName"):
        return ()
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == "PodScheduled":
            return (True,) if c.get("status") == "False" and c.get("reason") == "Unschedulable" else ()
    return ()


def _controller(obj: dict[str, Any]) -> tuple[Hashable, ...]:
    """The uid of the owner reference with ``controller: true``."""
    return tuple(r.get("uid") for r in obj["metadata"].get("ownerReferences") or () if r.get("controller"))


def _involved_uid(event: dict[str, Any]) -> tuple[Hashable, ...]:
    return ((event.get("involvedObject") or {}).get("uid"),)


INDEXES: dict[str, dict[str, IndexFunc]] = {
    "pods": {"spec.nodeName": _node_name, "unassigned": _unassigned, "unschedulable": _unschedulable,
             "controller": _controller},
    "replicasets.apps": {"controller": _controller},
    "events": {"involvedObject.uid": _involved_uid},
}


class Index:
    """One index of one resource: value -> keys of the objects filed under it, and the reverse."""

    __slots__ = ("fn", "keys", "values")

    def __init__(self, fn: IndexFunc) -> None:
        self.fn = fn
        self.keys: dict[Hashable, set[Key]] = {}
        self.values: dict[Key, tuple[Hashable, ...]] = {}

    def update(self, key: Key, obj: dict[str, Any] | None) -> None:
        """File ``obj`` (stored under ``key``; None: removed) under its current values."""
        after = self.fn(obj) if obj is not None else ()
        before = self.values.get(key, ())
        if after == before:
            return
        for v in before:
            keys = self.keys.get(v)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.keys[v]
        for v in after:
            self.keys.setdefault(v, set()).add(key)
        if after:
            self.values[key] = after
        else:
            self.values.pop(key, None)

    def lookup(self, values: Iterable[Hashable] | None) -> set[Key] | Iterable[Key]:
        """Keys of the objects filed under any of ``values`` (None: every object in the index)."""
        if values is None:
            return self.values.keys()
        out: set[Key] = set()
        for v in values:
            out |= self.keys.get(v, set())
        return out


def indexes_for(key: str) -> dict[str, Index]:
    return {"namespace": Index(_namespace), **{name: Index(fn) for name, fn in INDEXES.get(key, {}).items()}}


def known(key: str, name: str) -> bool:
    return name == "namespace" or name in INDEXES.get(key, {})
