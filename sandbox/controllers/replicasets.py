"""The ReplicaSet controller (``replicaset-controller``), after ``pkg/controller/replicaset/replica_set.go``.

For each ReplicaSet: the active pods it controls (ownerReference ``controller: true`` with its uid, not terminating,
not Succeeded/Failed) are compared with ``spec.replicas``; missing pods are created from the template with
``generateName: <rs>-`` (event ``SuccessfulCreate`` "Created pod: x"), surplus pods deleted in upstream's order of
preference (``pkg/controller/controller_utils.go`` ``ActivePods``/``ActivePodsWithRanks``: unassigned before
assigned, Pending before Unknown before Running, not ready before ready, ready for less time first, more restarts
first, newer first; event ``SuccessfulDelete`` "Deleted pod: x"). Status: ``replicas``, ``fullyLabeledReplicas``,
``readyReplicas``, ``availableReplicas`` (ready for ``minReadySeconds``), ``observedGeneration``.
"""

from __future__ import annotations

import copy
from typing import Any

from ..kube.errors import KubeError
from ..kube.selectors import match_labels, selector_from_label_selector
from .base import Controller
from .util import condition, ts

COMPONENT = "replicaset-controller"
MAX_BURST = 500  # pods created or deleted per ReplicaSet per pass (upstream: BurstReplicas 500)


def pod_ready(pod: dict[str, Any]) -> bool:
    c = condition(pod, "Ready")
    return bool(c) and c.get("status") == "True"


def pod_available(pod: dict[str, Any], min_ready: float, now: float) -> bool:
    c = condition(pod, "Ready")
    if not c or c.get("status") != "True":
        return False
    return min_ready <= 0 or ts(c.get("lastTransitionTime")) + min_ready <= now


def is_active(pod: dict[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and \
        ((pod.get("status") or {}).get("phase")) not in ("Succeeded", "Failed")


def _deletion_rank(pod: dict[str, Any]) -> tuple:
    spec, st = pod.get("spec") or {}, pod.get("status") or {}
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(st.get("phase") or "Pending", 0)
    ready = pod_ready(pod)
    ready_since = ts((condition(pod, "Ready") or {}).get("lastTransitionTime")) if ready else 0.0
    restarts = sum(int(c.get("restartCount") or 0) for c in st.get("containerStatuses") or [])
    created = ts(pod["metadata"].get("creationTimestamp"))
    return (1 if spec.get("nodeName") else 0, phase_rank, 1 if ready else 0, -ready_since, -restarts, -created)


class ReplicaSetController(Controller):
    name = COMPONENT
    topics = ("kube/replicasets.apps", "kube/pods")

    def reconcile(self) -> float | None:
        return self.reconcile_each("replicasets", self._sync)

    def _sync(self, rs: dict[str, Any], now: float) -> float | None:
        m, spec = rs["metadata"], rs.get("spec") or {}
        owned = self.owned("pods", rs)
        active = [p for p in owned if is_active(p)]
        want = int(spec.get("replicas", 1) or 0)
        if not m.get("deletionTimestamp"):
            diff = len(active) - want
            if diff < 0:
                for _ in range(min(-diff, MAX_BURST)):
                    created = self.create_owned_pod(rs, "apps/v1", "ReplicaSet", COMPONENT)
                    if created is None:
                        break
                    active.append(created)
                    owned.append(created)
            elif diff > 0:
                victims = sorted(active, key=_deletion_rank)[:min(diff, MAX_BURST)]
                for p in self.delete_owned_pods(rs, victims, COMPONENT):
                    active.remove(p)
        return self._status(rs, active, now)

    def _status(self, rs: dict[str, Any], active: list[dict[str, Any]], now: float) -> float | None:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0) * self.timings["pod_seconds"]  # the pods' own seconds
        tmpl_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        reqs = selector_from_label_selector({"matchLabels": tmpl_labels})
        ready = [p for p in active if pod_ready(p)]
        available = [p for p in ready if pod_available(p, min_ready, now)]
        status = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(1 for p in active if match_labels(reqs, p["metadata"].get("labels"))),
            "readyReplicas": len(ready),
            "availableReplicas": len(available),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        old = rs.get("status") or {}
        cur = {k: old.get(k, 0) for k in status}
        if cur != status:
            new = copy.deepcopy(rs)
            new["status"] = {**{k: v for k, v in old.items() if k not in status}, **status}
            for k in ("readyReplicas", "availableReplicas", "fullyLabeledReplicas"):
                if new["status"][k] == 0:
                    new["status"].pop(k)  # omitempty in the Go type
            try:
                self.store.update_status("replicasets", new, field_manager=COMPONENT)
            except KubeError:
                return now + 1.0
        if min_ready > 0 and len(available) < len(ready):
            waits = [ts((condition(p, "Ready") or {}).get("lastTransitionTime")) + min_ready for p in ready
                     if p not in available]
            return min(waits) if waits else None
        return None
