"""The scheduler (``default-scheduler``): binds pending pods without ``spec.nodeName`` to a node.

Per pass, pending pods are taken oldest first (priority, then creation time; ``PrioritySort``) and for each:

1. PreFilter ``VolumeBinding``: a PVC that does not exist -> ``persistentvolumeclaim "x" not found``; an unbound
   PVC -> ``pod has unbound immediate PersistentVolumeClaims`` (the sandbox's PVCs bind immediately; no
   WaitForFirstConsumer class exists). Both are UnschedulableAndUnresolvable for every node.
2. Filter every node (:func:`sandbox.controllers.matching.filter_reasons`): unschedulable, taints
   (the lifecycle taints ``node.kubernetes.io/not-ready``/``unreachable`` keep pods off nodes that are not Ready),
   nodeSelector + required node affinity, then requests (cpu, memory, ``nvidia.com/gpu``, any extended resource,
   pod count) against allocatable minus the requests of the pods already bound there (also those bound earlier
   in the same pass).
3. Score the feasible nodes, highest wins, ties to the node name: ``LeastAllocated`` (mean free fraction of cpu
   and memory with the non-zero defaults 100m/200Mi, and of GPUs when the pod asks for them) x 100, minus 10 per
   pod of the same owner already on the node (spreading replicas like ``PodTopologySpread``'s default
   constraints), plus preferred node affinity weights, minus 50 for an untolerated PreferNoSchedule taint.
4. Bind through ``pods/binding`` and record ``Scheduled`` ("Successfully assigned ns/pod to node").

When no node fits, the pod gets ``PodScheduled=False`` reason ``Unschedulable`` and a Warning ``FailedScheduling``
event with kube-scheduler's message (``pkg/scheduler/framework/types.go`` ``FitError.Error``: ``0/N nodes are
available: <prefilter msg>. <sorted "count reason" histogram>.`` then the PostFilter message of
``DefaultPreemption`` (``pkg/scheduler/framework/preemption/preemption.go``): ``preemption: 0/N nodes are available:
<histogram>.`` where nodes that failed an UnschedulableAndUnresolvable filter count as ``Preemption is not helpful
for scheduling`` and nodes short of resources as ``No preemption victims found for incoming pod`` (no pod in the
sandbox has a lower priority to evict). The same message is re-recorded at most every ``scheduler_event_repeat``
simulated seconds (the event correlator bumps ``count``); a new message is recorded at once. Pods are retried
whenever nodes, pods or PVCs change, and every ``scheduler_resync`` seconds.
"""

from __future__ import annotations

import copy
from typing import Any

from ..kube.errors import KubeError
from .base import Controller
from .matching import filter_reasons, preferred_affinity_score, untolerated_taint
from .resources import DEFAULT_MEMORY, DEFAULT_MILLI_CPU, node_allocatable, pod_requests
from .util import condition, controller_of

SCHEDULER = "default-scheduler"
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"
MAX_PER_PASS = 500


def _histogram(counts: dict[str, int]) -> str:
    return ", ".join(sorted(f"{v} {k}" for k, v in counts.items()))


def fit_error_message(n_nodes: int, prefilter: str, reasons: dict[str, int], preemption: dict[str, int]) -> str:
    msg = f"0/{n_nodes} nodes are available:"
    if prefilter:
        msg += f" {prefilter}."
    elif reasons:
        msg += f" {_histogram(reasons)}."
    post = f"preemption: 0/{n_nodes} nodes are available:"
    if preemption:
        post += f" {_histogram(preemption)}."
    return f"{msg} {post}"


def _is_terminal(pod: dict[str, Any]) -> bool:
    return ((pod.get("status") or {}).get("phase")) in ("Succeeded", "Failed")


class Scheduler(Controller):
    name = SCHEDULER
    topics = ("kube/pods", "kube/nodes", "kube/persistentvolumeclaims")
    resync_key = "scheduler_resync"

    def __init__(self, svc) -> None:
        super().__init__(svc)
        self._last_event: dict[str, tuple[str, float]] = {}  # pod uid -> (message, when recorded)

    def reconcile(self) -> float | None:
        pending = [p for p in self.indexed("pods", "unassigned", (SCHEDULER,))
                   if not p["metadata"].get("deletionTimestamp") and not _is_terminal(p)]
        live = {p["metadata"]["uid"] for p in pending}
        for uid in list(self._last_event):
            if uid not in live:
                del self._last_event[uid]
        if not pending:
            return None
        nodes = sorted(self.objects("nodes"), key=lambda n: n["metadata"]["name"])
        alloc = {n["metadata"]["name"]: node_allocatable(n) for n in nodes}
        used: dict[str, dict[str, int]] = {n: {} for n in alloc}
        count: dict[str, int] = dict.fromkeys(alloc, 0)
        owners: dict[str, dict[str, int]] = {n: {} for n in alloc}
        for p in self.indexed("pods", "spec.nodeName", alloc):
            if not _is_terminal(p):
                self._account(p, p["spec"]["nodeName"], used, count, owners)
        pvcs = {(c["metadata"].get("namespace"), c["metadata"]["name"]): c
                for c in self.objects("persistentvolumeclaims")}
        pending.sort(key=lambda p: (-int((p.get("spec") or {}).get("priority") or 0),
                                    p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
        now = self.clock.now()
        due: list[float] = []
        for pod in pending[:MAX_PER_PASS]:
            try:
                d = self._schedule_one(pod, nodes, alloc, used, count, owners, pvcs, now)
            except KubeError:  # the pod changed or went meanwhile: look again soon
                d = now + 1.0
            if d is not None:
                due.append(d)
        if len(pending) > MAX_PER_PASS:
            self.wake.set()
        return min(due) if due else None

    @staticmethod
    def _account(p: dict[str, Any], node: str, used: dict, count: dict, owners: dict) -> None:
        for k, v in pod_requests(p).items():
            used[node][k] = used[node].get(k, 0) + v
        count[node] += 1
        ref = controller_of(p)
        if ref:
            owners[node][ref.get("uid", "")] = owners[node].get(ref.get("uid", ""), 0) + 1

    def _prefilter(self, pod: dict[str, Any], pvcs: dict) -> str:
        ns = pod["metadata"].get("namespace")
        for v in (pod.get("spec") or {}).get("volumes") or []:
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim:
                continue
            pvc = pvcs.get((ns, claim))
            if pvc is None:
                return f'persistentvolumeclaim "{claim}" not found'
            if pvc["metadata"].get("deletionTimestamp"):
                return f'persistentvolumeclaim "{claim}" is being deleted'
            if ((pvc.get("status") or {}).get("phase")) != "Bound":
                return "pod has unbound immediate PersistentVolumeClaims"
        return ""

    def _schedule_one(self, pod: dict[str, Any], nodes: list[dict[str, Any]], alloc: dict, used: dict, count: dict,
                      owners: dict, pvcs: dict, now: float) -> float | None:
        n_nodes = len(nodes)
        prefilter = self._prefilter(pod, pvcs)
        reasons: dict[str, int] = {}
        preemption: dict[str, int] = {}
        feasible: list[tuple[float, str]] = []
        if prefilter:
            if n_nodes:
                preemption[NOT_HELPFUL] = n_nodes
        else:
            req = pod_requests(pod)
            owner = (controller_of(pod) or {}).get("uid", "")
            for node in nodes:
                name = node["metadata"]["name"]
                why, resolvable = filter_reasons(pod, node, alloc[name], used[name], count[name])
                if why:
                    for r in why:
                        reasons[r] = reasons.get(r, 0) + 1
                    key = NO_VICTIMS if resolvable else NOT_HELPFUL
                    preemption[key] = preemption.get(key, 0) + 1
                    continue
                feasible.append((self._score(pod, node, req, alloc[name], used[name], owners[name].get(owner, 0)),
                                 name))
        if feasible:
            feasible.sort(key=lambda s: (-s[0], s[1]))
            target = feasible[0][1]
            m = pod["metadata"]
            try:
                bound = self.store.bind(m.get("namespace"), m["name"], target)
            except KubeError:
                return None
            self._account(bound, target, used, count, owners)
            self._last_event.pop(m["uid"], None)
            self.event(pod, "Normal", "Scheduled", f"Successfully assigned {m.get('namespace')}/{m['name']} to "
                       f"{target}", SCHEDULER)
            return None
        message = "no nodes available to schedule pods" if n_nodes == 0 and not prefilter else \
            fit_error_message(n_nodes, prefilter, reasons, preemption)
        return self._unschedulable(pod, message, now)

    def _score(self, pod: dict[str, Any], node: dict[str, Any], req: dict[str, int], alloc: dict[str, int],
               used: dict[str, int], same_owner: int) -> float:
        fractions = []
        for res, default in (("cpu", DEFAULT_MILLI_CPU), ("memory", DEFAULT_MEMORY)):
            cap = alloc.get(res, 0)
            want = req.get(res) or default
            if cap > 0:
                fractions.append(max(0.0, (cap - used.get(res, 0) - want) / cap))
        if req.get("nvidia.com/gpu"):
            cap = alloc.get("nvidia.com/gpu", 0)
            if cap > 0:
                fractions.append(max(0.0, (cap - used.get("nvidia.com/gpu", 0) - req["nvidia.com/gpu"]) / cap))
        score = 100.0 * (sum(fractions) / len(fractions) if fractions else 0.0)
        score -= 10.0 * same_owner
        score += preferred_affinity_score(pod, node)
        if untolerated_taint(pod, node, effects=("PreferNoSchedule",)) is not None:
            score -= 50.0
        return score

    def _unschedulable(self, pod: dict[str, Any], message: str, now: float) -> float | None:
        m = pod["metadata"]
        cond = condition(pod, "PodScheduled") or {}
        if cond.get("status") != "False" or cond.get("reason") != "Unschedulable" or cond.get("message") != message:
            new = copy.deepcopy(pod)
            st = new.setdefault("status", {})
            conds = [c for c in st.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                          "lastProbeTime": None,
                          "lastTransitionTime": cond.get("lastTransitionTime") if cond.get("status") == "False"
                          else self.clock.iso(now)})
            st["conditions"] = conds
            st.setdefault("phase", "Pending")
            try:
                self.store.update_status("pods", new, field_manager=SCHEDULER)
            except KubeError:
                return None
        last = self._last_event.get(m["uid"])
        repeat = self.timings["scheduler_event_repeat"]
        if last is None or last[0] != message or now - last[1] >= repeat:
            self.event(pod, "Warning", "FailedScheduling", message, SCHEDULER)
            self._last_event[m["uid"]] = (message, now)
            return now + repeat
        return last[1] + repeat
