"""The disruption controller (``disruption-controller``): PodDisruptionBudget status, after
``pkg/controller/disruption/disruption.go``.

For each PDB: the pods of its namespace its selector matches (policy/v1: an empty selector matches every pod);
``currentHealthy`` counts those not being deleted and Ready. Expected pods and desired healthy as upstream's
``getExpectedPodCount``:

- ``minAvailable`` as an integer: ``expectedPods`` = the matched pods, ``desiredHealthy`` = minAvailable;
- ``maxUnavailable`` or a percentage ``minAvailable``: ``expectedPods`` = the scale of the pods' controllers
  (a ReplicaSet's ``spec.replicas``, or its Deployment's when it has one; ``getExpectedScale``), ``desiredHealthy``
  = expected - maxUnavailable, or minAvailable% of expected, percentages rounded up
  (``GetScaledValueFromIntOrPercent(.., true)``). Upstream fails the sync for a pod without a scalable controller;
  here such a pod counts as one expected pod.

``disruptionsAllowed`` = max(0, currentHealthy - desiredHealthy); condition ``DisruptionAllowed`` (True
``SufficientPods`` / False ``InsufficientPods``); ``observedGeneration``. ``disruptedPods`` (written by the
eviction subresource, which the sandbox does not serve) stays empty.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from ..kube.errors import KubeError
from ..kube.selectors import match_labels, selector_from_label_selector
from .base import Controller, log
from .replicasets import pod_ready
from .util import controller_of

COMPONENT = "disruption-controller"


def scaled(v: Any, total: int) -> int:
    """An IntOrString against ``total`` (a percentage rounded up)."""
    if isinstance(v, str) and v.endswith("%"):
        return math.ceil(int(v[:-1] or 0) * total / 100)
    return int(v)


def selected_pods(pdb: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sel = (pdb.get("spec") or {}).get("selector")
    if sel is None:
        return []
    reqs = selector_from_label_selector(sel)
    return [p for p in pods if match_labels(reqs, p["metadata"].get("labels"))]


def healthy(pod: dict[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and pod_ready(pod)


class DisruptionController(Controller):
    name = COMPONENT
    topics = ("kube/poddisruptionbudgets.policy", "kube/pods", "kube/replicasets.apps", "kube/deployments.apps")

    def reconcile(self) -> float | None:
        for pdb in self.objects("poddisruptionbudgets"):
            try:
                self._sync(pdb)
            except KubeError as e:
                log.debug("pdb %s: %s", pdb["metadata"]["name"], e)
        return None

    def _expected_scale(self, pods: list[dict[str, Any]], ns: str) -> int:
        """Sum of the scales of the pods' controllers (each counted once)."""
        seen: set[str] = set()
        total = 0
        for p in pods:
            ref = controller_of(p)
            if ref is None:
                total += 1
                continue
            if ref.get("uid") in seen:
                continue
            seen.add(ref.get("uid"))
            scale = None
            if ref.get("kind") == "ReplicaSet":
                rs = self.store.try_get("replicasets", ns, ref.get("name", ""))
                if rs is not None:
                    scale = (rs.get("spec") or {}).get("replicas", 1)
                    dref = controller_of(rs)
                    if dref and dref.get("kind") == "Deployment":
                        dep = self.store.try_get("deployments", ns, dref.get("name", ""))
                        if dep is not None:
                            scale = (dep.get("spec") or {}).get("replicas", 1)
            total += 1 if scale is None else int(scale)
        return total

    def _sync(self, pdb: dict[str, Any]) -> None:
        m, spec = pdb["metadata"], pdb.get("spec") or {}
        ns = m.get("namespace") or "default"
        pods = selected_pods(pdb, self.indexed("pods", "namespace", (ns,)))
        current = sum(1 for p in pods if healthy(p))
        min_av, max_un = spec.get("minAvailable"), spec.get("maxUnavailable")
        if max_un is not None:
            expected = self._expected_scale(pods, ns)
            desired = max(0, expected - scaled(max_un, expected))
        elif isinstance(min_av, str) and min_av.endswith("%"):
            expected = self._expected_scale(pods, ns)
            desired = scaled(min_av, expected)
        else:
            expected, desired = len(pods), int(min_av or 0)
        allowed = max(0, current - desired)
        old = pdb.get("status") or {}
        gen = m.get("generation", 1)
        ok = allowed > 0
        cond = {"type": "DisruptionAllowed", "status": "True" if ok else "False",
                "reason": "SufficientPods" if ok else "InsufficientPods", "message": "", "observedGeneration": gen}
        prev = next((c for c in old.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), None)
        cond["lastTransitionTime"] = prev["lastTransitionTime"] if prev and prev.get("status") == cond["status"] \
            else self.store.now()
        status = {**old, "observedGeneration": gen, "disruptionsAllowed": allowed, "currentHealthy": current,
                  "desiredHealthy": desired, "expectedPods": expected, "conditions": [cond]}
        if status != old:
            new = copy.deepcopy(pdb)
            new["status"] = status
            self.store.update_status("poddisruptionbudgets", new, field_manager=COMPONENT)
