"""The garbage collector (kube-controller-manager's ``garbagecollector``): ownerReferences and deletion propagation.

Following upstream's semantics (``pkg/controller/garbagecollector``; "Garbage Collection" in the Kubernetes docs),
over the whole store on each pass:

- **Dangling owners.** An object whose ownerReferences all name objects that no longer exist (by uid) is deleted
  (propagation Background).
- **Foreground.** An object being deleted with the ``foregroundDeletion`` finalizer (the API server adds it on
  ``propagationPolicy=Foreground`` when the object has dependents) has its dependents deleted, Foreground too; once
  none is left the finalizer is removed and the API server finishes the delete.
- **Orphan.** An object being deleted with the ``orphan`` finalizer (``propagationPolicy=Orphan``) has its
  reference removed from every dependent's ownerReferences, then the finalizer is removed.
- **Background** (the default) needs nothing more: the owner goes at once, its dependents as dangling objects.

Writes go through the store's verbs as the real controller's go through the API (patches with the object's
resourceVersion as precondition, field manager ``garbage-collector``); a conflict is retried on the next pass.
It wakes on the store's change feed (:meth:`GarbageCollector.wants`): a deletion, an object being deleted, an
object created or re-owned with ownerReferences.
"""

from __future__ import annotations

import logging
from typing import Any

from ..kube.errors import KubeError
from ..kube.storage import Change
from .base import Controller

log = logging.getLogger("sandbox.controllers")

MANAGER = "garbage-collector"


class GarbageCollector(Controller):
    name = "garbage-collector"
    min_interval = 0.2  # a pass looks at every object: at most five a second, however many deletions

    def wants(self, key: str, change: Change) -> bool:
        if change.type == "DELETED":
            return True
        meta = change.obj["metadata"]
        if meta.get("deletionTimestamp"):
            return True
        refs = meta.get("ownerReferences")
        return bool(refs) and (change.type == "ADDED" or change.old is None
                               or refs != change.old["metadata"].get("ownerReferences"))

    def reconcile(self) -> float | None:
        graph = self.store.everything()
        live = {obj["metadata"]["uid"] for _, obj in graph}
        dependents: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for key, obj in graph:
            for ref in obj["metadata"].get("ownerReferences") or ():
                dependents.setdefault(ref.get("uid"), []).append((key, obj))
        for key, obj in graph:
            meta = obj["metadata"]
            try:
                refs = meta.get("ownerReferences") or []
                if refs and not meta.get("deletionTimestamp") and all(r.get("uid") not in live for r in refs):
                    self.store.delete(key, meta.get("namespace"), meta["name"], propagation_policy="Background")
                    continue
                if not meta.get("deletionTimestamp"):
                    continue
                fins = meta.get("finalizers") or []
                if "foregroundDeletion" in fins:
                    self._foreground(key, obj, dependents.get(meta["uid"], []))
                elif "orphan" in fins:
                    self._orphan(key, obj, dependents.get(meta["uid"], []))
            except KubeError as e:  # gone meanwhile, or a conflict: the next pass looks again
                log.debug("garbage collector: %s %s: %s", key, meta.get("name"), e)
        return None

    def _foreground(self, key: str, obj: dict[str, Any], deps: list[tuple[str, dict[str, Any]]]) -> None:
        if not deps:
            self._remove_finalizer(key, obj, "foregroundDeletion")
            return
        for dkey, dep in deps:
            dm = dep["metadata"]
            if not dm.get("deletionTimestamp"):
                self.store.delete(dkey, dm.get("namespace"), dm["name"], propagation_policy="Foreground")

    def _orphan(self, key: str, obj: dict[str, Any], deps: list[tuple[str, dict[str, Any]]]) -> None:
        uid = obj["metadata"]["uid"]
        for dkey, dep in deps:
            dm = dep["metadata"]
            cur = self.store.try_get(dkey, dm.get("namespace"), dm["name"])
            if cur:
                refs = [r for r in cur["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
                self.store.patch(dkey, dm.get("namespace"), dm["name"],
                                 {"metadata": {"ownerReferences": refs or None,
                                               "resourceVersion": cur["metadata"]["resourceVersion"]}},
                                 "merge", field_manager=MANAGER)
        self._remove_finalizer(key, obj, "orphan")

    def _remove_finalizer(self, key: str, obj: dict[str, Any], finalizer: str) -> None:
        """Patch ``finalizer`` away (the API server removes the object when it was the last one)."""
        m = obj["metadata"]
        rest = [f for f in m.get("finalizers") or [] if f != finalizer]
        self.store.patch(key, m.get("namespace"), m["name"],
                         {"metadata": {"finalizers": rest or None, "resourceVersion": m["resourceVersion"]}},
                         "merge", field_manager=MANAGER)
