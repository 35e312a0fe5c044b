"""The end of a graceful pod deletion that no kubelet finished: pods removed once their grace period has run out.

A pod bound to a node is deleted gracefully (``deletionTimestamp`` = now + grace period); its kubelet stops the
containers and finishes the delete with grace period 0 (:mod:`sandbox.controllers.kubelet`). When no kubelet does
(its node is gone or its kubelet not responding), the sandbox removes the pod once ``deletionTimestamp`` has passed
and it has no finalizers; a pod whose kubelet is alive is left to it (its containers may run until the grace period
ends, counted by the kubelet in the pod's own seconds): a simplification of what kube-controller-manager's pod garbage collector (``pkg/controller/podgc``:
terminating pods on nodes that are gone or out of service) does later. Wakes on changes of pods being deleted and at
the next expiry.
"""

from __future__ import annotations

import contextlib

from ..kube.errors import KubeError
from ..kube.storage import Change
from .base import Controller
from .kubelet import node_kubelet_alive
from .util import ts


class PodGC(Controller):
    name = "pod-garbage-collector"
    min_interval = 0.2  # a pass looks at every pod: at most five a second, however many deletions

    def wants(self, key: str, change: Change) -> bool:
        return key == "pods" and change.type != "DELETED" and bool(change.obj["metadata"].get("deletionTimestamp"))

    def reconcile(self) -> float | None:
        now = self.clock.now()
        due: list[float] = []
        alive = {n["metadata"]["name"] for n in self.objects("nodes") if node_kubelet_alive(n)}
        for pod in self.objects("pods"):
            m = pod["metadata"]
            if not m.get("deletionTimestamp") or m.get("finalizers"):
                continue
            expires = ts(m["deletionTimestamp"])
            if (pod.get("spec") or {}).get("nodeName") in alive:  # its kubelet finishes it; look again if it dies
                due.append(max(expires, now + self.timings["controller_resync"]))
                continue
            if expires <= now:
                with contextlib.suppress(KubeError):  # gone meanwhile (its kubelet was quicker)
                    self.store.delete("pods", m.get("namespace"), m["name"], grace_period_seconds=0)
            else:
                due.append(expires)
        return min(due) if due else None
