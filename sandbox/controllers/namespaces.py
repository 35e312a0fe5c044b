"""The namespace controller (kube-controller-manager's ``namespace`` controller): emptying terminating namespaces.

``DELETE`` of a namespace only marks it (``deletionTimestamp``, ``status.phase: Terminating``; the API server then
refuses new content in it). On each pass, for every terminating namespace (one without the garbage collector's
``foregroundDeletion``/``orphan`` finalizers, which that controller handles first), this controller deletes every
object in it that is not already being deleted, and its pods at once (grace period 0, as upstream's namespaced
resources deleter does for pods); when a pass finds nothing left, the namespace is finalized and removed
(``namespaces/finalize``, upstream ``pkg/controller/namespace/deletion``). It wakes on the store's change feed: a
namespace changed, or anything was deleted.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..kube.errors import KubeError
from ..kube.resources import resolve
from ..kube.storage import Change
from .base import Controller


class NamespaceController(Controller):
    name = "namespace-controller"
    min_interval = 0.2  # a pass looks at every object: at most five a second, however many deletions

    def wants(self, key: str, change: Change) -> bool:
        return key == "namespaces" or change.type == "DELETED"

    def reconcile(self) -> float | None:
        terminating = [n["metadata"]["name"] for n in self.objects("namespaces")
                       if n["metadata"].get("deletionTimestamp")
                       and not {"foregroundDeletion", "orphan"} & set(n["metadata"].get("finalizers") or [])]
        if not terminating:
            return None
        contents: dict[str, list[tuple[str, dict[str, Any]]]] = {ns: [] for ns in terminating}
        for key, obj in self.store.everything():
            ns = obj["metadata"].get("namespace")
            if ns in contents and resolve(key).namespaced:
                contents[ns].append((key, obj))
        for ns, objs in contents.items():
            for key, obj in objs:
                m = obj["metadata"]
                if not m.get("deletionTimestamp") or key == "pods":
                    with contextlib.suppress(KubeError):
                        self.store.delete(key, ns, m["name"], grace_period_seconds=0 if key == "pods" else None)
            if not objs:
                self.store.finalize_namespace(ns)
        return None
