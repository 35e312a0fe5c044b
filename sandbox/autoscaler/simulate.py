"""The cluster-autoscaler's simulation as PURE functions over wire-format dicts (no store, no clock, no I/O).

What upstream does and where (kubernetes/autoscaler, ``cluster-autoscaler/``):

- **Template node** (``cloudprovider.NodeGroup.TemplateNodeInfo``; the Alibaba provider builds it from the scaling
  group's instance type in ``cloudprovider/alicloud/alicloud_manager.go``): a node as the group would create it:
  labels, taints and allocatable. An ESS group may launch ANY of its instance types (cost-optimized mixed
  instances), so the sandbox takes the **smallest** type of the group (fewest GPUs, then vCPUs, then memory) as
  the template: a pod that fits the smallest type fits whatever ESS launches when the types grow together, and
  the estimate errs on the side of one node too many, which the next scan corrects against the real nodes.
  Upcoming instances whose type is already known (launching) use their own type.
- **Fit predicate**: the scheduler's own filters, shared with the sandbox scheduler
  (:func:`sandbox.controllers.matching.filter_reasons`: unschedulable, taints/tolerations, nodeSelector and
  required node affinity, cpu/memory/``nvidia.com/gpu``/extended resources, pod count). Upstream runs the real
  scheduler framework the same way (``simulator/clustersnapshot``, ``simulator/scheduling/hinting_simulator.go``).
- **Bin packing** (``estimator/binpacking_estimator.go``): pods sorted by decreasing size
  (``estimator/decreasing_pod_orderer.go``: cpu + memory relative to the template), each tried on the new nodes
  opened so far (first fit), else a new template node is opened; the node count is capped by the room left in the
  group (``max - target size``).
- **Least waste** (``expander/waste/waste.go``): for each option, ``wasted = (avail - requested) / avail`` for cpu
  and for memory, with ``avail = template capacity x node count``; the score is their sum, lowest wins; upstream
  breaks ties at random, the sandbox by group id so that runs are reproducible.
- **Utilization** for scale-down (``simulator/utilization/info.go`` ``Calculate``): requests of the pods on the
  node over its allocatable, the max of cpu and memory; a node with GPUs is judged by GPU utilization only.
- **Movable pods** (``simulator/drainability`` rules, ``utils/drain``): DaemonSet and mirror pods are ignored;
  a pod without a controller (``NotReplicated``), a non-DaemonSet pod in ``kube-system`` that no PDB covers
  (``UnmovableKubeSystemPod``) and a pod with ``cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`` block the
  node's removal (checked in ``rules/rules.go``'s order, messages as upstream's rules); a pod annotated
  ``safe-to-evict: "true"`` can always move.
- **PodDisruptionBudgets** (:class:`PdbTracker`): ``simulator/drainability/rules/pdb/rule.go`` over
  ``core/scaledown/pdb/basic.go``'s ``RemainingPdbTracker``, see there.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..controllers.matching import filter_reasons
from ..controllers.nodes import capacity_of
from ..controllers.resources import amount, node_allocatable, pod_requests
from ..fleet import catalogue
from ..kube.selectors import LabelReq, match_labels, selector_from_label_selector

GPU = "nvidia.com/gpu"
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
SCALE_DOWN_DISABLED = "cluster-autoscaler.kubernetes.io/scale-down-disabled"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler"

Pod = dict[str, Any]
Node = dict[str, Any]


# ---- template nodes ----------------------------------------------------------------------------------------------
def smallest_type(instance_types: Iterable[str]) -> str | None:
    """The group's smallest instance type known to the catalogue: fewest GPUs, then vCPUs, then memory."""
    known = [catalogue.get(t) for t in instance_types]
    known = [t for t in known if t is not None]
    if not known:
        return None
    return min(known, key=lambda t: (t.gpus, t.vcpu, t.memory_gib, t.name)).name


def template_node(
    name: str,
    instance_type: str,
    labels: dict[str, str],
    taints: Sequence[dict[str, Any]] = (),
    unschedulable: bool = False,
) -> Node:
    """A Node as a new instance of the group would register (capacity from the instance type)."""
    cap, alloc = capacity_of(instance_type)
    all_labels = {"kubernetes.io/hostname": name, "node.kubernetes.io/instance-type": instance_type,
                  "beta.kubernetes.io/instance-type": instance_type, **labels}
    spec: dict[str, Any] = {"taints": [dict(t) for t in taints]}
    if unschedulable:
        spec["unschedulable"] = True
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": all_labels}, "spec": spec,
            "status": {"capacity": cap, "allocatable": alloc}}


def pool_template_labels(template: dict[str, Any], region: str, cluster_id: str, spot_strategy: str) -> dict[str, str]:
    """The labels every node of a pool gets from kubelet/CCM/ACK (not zone or host specific) + the pool's own."""
    pool_id = template.get("nodepool_id", "")
    labels = {
        "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64", "topology.kubernetes.io/region": region,
        "failure-domain.beta.kubernetes.io/region": region,
        "alibabacloud.com/nodepool-id": pool_id, "node.alibabacloud.com/nodepool-id": pool_id,
        "node.alibabacloud.com/instance-charge-type": "PostPaid",
        "node.alibabacloud.com/spot-strategy": spot_strategy,
        "ack.aliyun.com": cluster_id, "k8s.aliyun.com": "true",
    }
    for kv in template.get("labels") or []:
        if kv.get("key"):
            labels[kv["key"]] = str(kv.get("value") or "")
    return labels


def pool_template_taints(template: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for t in template.get("taints") or []:
        if not t.get("key"):
            continue
        taint = {"key": t["key"], "effect": t.get("effect") or "NoSchedule"}
        if t.get("value"):
            taint["value"] = str(t["value"])
        out.append(taint)
    return out


# ---- a simulated node ------------------------------------------------------------------------------------------
@dataclass
class SimNode:
    """A node in the simulation: the wire-format node, what is allocatable and what is already requested."""

    node: Node
    group: str | None = None
    upcoming: bool = False
    alloc: dict[str, int] = field(default_factory=dict)
    used: dict[str, int] = field(default_factory=dict)
    pods: int = 0

    def __post_init__(self) -> None:
        if not self.alloc:
            self.alloc = node_allocatable(self.node)

    @property
    def name(self) -> str:
        return self.node["metadata"]["name"]

    def reasons(self, pod: Pod) -> list[str]:
        """Why ``pod`` cannot go here (empty: it fits)."""
        why, _ = filter_reasons(pod, self.node, self.alloc, self.used, self.pods)
        return why

    def fits(self, pod: Pod) -> bool:
        return not self.reasons(pod)

    def add(self, pod: Pod) -> None:
        for k, v in pod_requests(pod).items():
            self.used[k] = self.used.get(k, 0) + v
        self.pods += 1

    def copy(self) -> SimNode:
        return SimNode(self.node, self.group, self.upcoming, dict(self.alloc), dict(self.used), self.pods)


def pod_key(pod: Pod) -> str:
    m = pod["metadata"]
    return f"{m.get('namespace', '')}/{m['name']}"


def place_first_fit(pods: Sequence[Pod], nodes: list[SimNode]) -> tuple[list[Pod], list[Pod]]:
    """Put each pod on the first node it fits (mutating ``nodes``): (placed, left over).

    This is upstream's "filter out schedulable" step (``core/podlistprocessor/filter_out_schedulable.go``): pods
    that fit on existing or upcoming nodes need no scale-up."""
    placed, left = [], []
    for pod in pods:
        for n in nodes:
            if n.fits(pod):
                n.add(pod)
                placed.append(pod)
                break
        else:
            left.append(pod)
    return placed, left


# ---- bin packing ---------------------------------------------------------------------------------------------------
def _size(pod: Pod, alloc: dict[str, int]) -> float:
    req = pod_requests(pod)
    score = 0.0
    for res in ("cpu", "memory", GPU):
        if alloc.get(res):
            score += req.get(res, 0) / alloc[res]
    return score


@dataclass
class Estimate:
    nodes: int
    scheduled: list[Pod]
    unschedulable: list[Pod]
    node_pods: list[list[str]] = field(default_factory=list)


def binpack(pods: Sequence[Pod], make_node: Callable[[int], Node], max_nodes: int) -> Estimate:
    """How many new template nodes (at most ``max_nodes``) the pods need: first fit decreasing.

    ``make_node(i)`` returns the i-th new template node. Pods that do not fit an empty template node, or that
    find no room once ``max_nodes`` nodes are open, are returned as unschedulable."""
    probe = SimNode(make_node(0))
    order = sorted(pods, key=lambda p: (-_size(p, probe.alloc), pod_key(p)))
    opened: list[SimNode] = []
    scheduled: list[Pod] = []
    left: list[Pod] = []
    node_pods: list[list[str]] = []
    for pod in order:
        target = next((i for i, n in enumerate(opened) if n.fits(pod)), None)
        if target is None:
            if len(opened) >= max_nodes:
                left.append(pod)
                continue
            fresh = SimNode(make_node(len(opened)))
            if not fresh.fits(pod):
                left.append(pod)
                continue
            opened.append(fresh)
            node_pods.append([])
            target = len(opened) - 1
        opened[target].add(pod)
        node_pods[target].append(pod_key(pod))
        scheduled.append(pod)
    return Estimate(len(opened), scheduled, left, node_pods)


# ---- expander ------------------------------------------------------------------------------------------------------
@dataclass
class Option:
    """One way to scale up: add ``node_count`` nodes to ``group`` to run ``pods``."""

    group: str
    node_count: int
    pods: list[Pod]
    template: Node

    def waste(self) -> float:
        """``expander/waste``: wasted cpu fraction + wasted memory fraction (template capacity x node count)."""
        cap = ((self.template.get("status") or {}).get("capacity")) or {}
        cpu_cap = amount("cpu", cap.get("cpu", "0"))
        mem_cap = amount("memory", cap.get("memory", "0"))
        avail_cpu = cpu_cap * self.node_count
        avail_mem = mem_cap * self.node_count
        req_cpu = sum(pod_requests(p).get("cpu", 0) for p in self.pods)
        req_mem = sum(pod_requests(p).get("memory", 0) for p in self.pods)
        wasted_cpu = (avail_cpu - req_cpu) / avail_cpu if avail_cpu else 1.0
        wasted_mem = (avail_mem - req_mem) / avail_mem if avail_mem else 1.0
        return wasted_cpu + wasted_mem


def least_waste(options: Sequence[Option]) -> Option | None:
    """The option wasting the least cpu + memory fraction (ties: the group id, for reproducibility)."""
    viable = [o for o in options if o.node_count > 0 and o.pods]
    if not viable:
        return None
    return min(viable, key=lambda o: (round(o.waste(), 9), o.group))


# ---- scale-down ----------------------------------------------------------------------------------------------------
def is_daemonset_pod(pod: Pod) -> bool:
    return any(r.get("kind") == "DaemonSet" and r.get("controller")
               for r in pod["metadata"].get("ownerReferences") or [])


def is_mirror_pod(pod: Pod) -> bool:
    return MIRROR_ANNOTATION in (pod["metadata"].get("annotations") or {})


def is_terminal(pod: Pod) -> bool:
    return ((pod.get("status") or {}).get("phase")) in ("Succeeded", "Failed")


def utilization(node: Node, pods: Iterable[Pod]) -> float:
    """Requested share of the node: max(cpu, memory); GPU nodes are judged by their GPUs only."""
    alloc = node_allocatable(node)
    used: dict[str, int] = {}
    for p in pods:
        if is_terminal(p) or is_mirror_pod(p):
            continue
        for k, v in pod_requests(p).items():
            used[k] = used.get(k, 0) + v
    if alloc.get(GPU):
        return used.get(GPU, 0) / alloc[GPU]
    fracs = [used.get(r, 0) / alloc[r] for r in ("cpu", "memory") if alloc.get(r)]
    return max(fracs) if fracs else 0.0


def blocking_reason(pod: Pod, pdbs: PdbTracker | None = None) -> str | None:
    """Why this pod keeps its node from being removed (None: it can be moved or ignored), in the order of
    upstream's ``rules.Default``: replicated, system (a ``kube-system`` pod a PDB covers may move), not-safe-to-evict.
    The PDB rule itself is :meth:`PdbTracker.pod_block` (see :func:`drain_block`)."""
    if is_daemonset_pod(pod) or is_mirror_pod(pod) or is_terminal(pod):
        return None
    ann = pod["metadata"].get("annotations") or {}
    if ann.get(SAFE_TO_EVICT) == "true":
        return None
    owners = [r for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")]
    if not owners:
        return "NotReplicated"
    if pod["metadata"].get("namespace") == "kube-system" and not (pdbs and pdbs.matching(pod)):
        return "UnmovableKubeSystemPod"
    if ann.get(SAFE_TO_EVICT) == "false":
        return "NotSafeToEvictAnnotation"
    return None


def blocking_message(pod: Pod, reason: str) -> str:
    """The error upstream's drainability rule gives with ``reason`` (what ``node <n> cannot be removed: ...`` logs)."""
    m = pod["metadata"]
    return {
        "NotReplicated": f"{pod_key(pod)} is not replicated",
        "UnmovableKubeSystemPod": f"non-daemonset, non-mirrored, non-pdb-assigned kube-system pod present: {m['name']}",
        "NotSafeToEvictAnnotation": f"pod annotated as not safe to evict present: {m['name']}",
        NOT_ENOUGH_PDB: f"not enough pod disruption budget to move {pod_key(pod)}",
    }.get(reason, f"{reason}: {pod_key(pod)}")


# ---- pod disruption budgets ----------------------------------------------------------------------------------------
NOT_ENOUGH_PDB = "NotEnoughPdb"  # utils/drain BlockingPodReason


@dataclass
class _Budget:
    namespace: str
    name: str
    selector: list[LabelReq]
    allowed: int  # status.disruptionsAllowed as read at the start of the loop
    remaining: int  # ... minus the disruptions planned since

    def matches(self, pod: Pod) -> bool:
        m = pod["metadata"]
        return m.get("namespace", "") == self.namespace and match_labels(self.selector, m.get("labels"))


@dataclass
class PdbBlock:
    """A pod whose PDB has no disruption left for it (upstream ``drain.BlockingPod{Reason: NotEnoughPdb}``)."""

    pod: Pod
    pdb: str
    planned: bool  # True: the PDB's own status allowed it; disruptions planned earlier in this loop used it up

    @property
    def message(self) -> str:
        return blocking_message(self.pod, NOT_ENOUGH_PDB)


class PdbTracker:
    """How many disruptions each PodDisruptionBudget has left in this scale-down loop: upstream's
    ``RemainingPdbTracker`` (``cluster-autoscaler/core/scaledown/pdb/basic.go``), filled from every PDB's
    ``status.disruptionsAllowed`` at the start of the loop (``static_autoscaler.go`` ``SetPdbs``).

    - ``matching`` (``MatchingPdbs``): the PDBs of the pod's namespace whose selector matches its labels (policy/v1:
      an empty selector matches every pod of the namespace, a missing one none).
    - ``blocking``: upstream's PDB drainability rule (``simulator/drainability/rules/pdb/rule.go``): a pod to move
      with a matching PDB whose remaining disruptions are below 1 blocks the node, error ``not enough pod disruption
      budget to move <ns>/<pod>``. Pods annotated ``safe-to-evict: "true"`` skip that rule upstream
      (``safetoevict`` decides before ``pdb`` in ``rules.Default``) but still count below.
      Upstream's planner then asks ``CanRemovePods`` whether ALL the node's pods fit the budgets at once and, when
      they do not, only marks the node "risky" (``planner.go`` ``categorizeNodes``): its drain goes through the
      Eviction API, which refuses evictions beyond the budget and is retried for ``--max-pod-eviction-time``.
      The sandbox drains by deleting the pods (it does not serve ``pods/eviction``), so such a node is blocked
      here instead, by the first pod over the budget: the sandbox never deletes pods beyond a budget.
    - ``remove`` (``RemovePods``): a node planned for removal uses up one disruption per pod of each matching PDB
      for the rest of the loop, so two nodes cannot spend the same budget.
    """

    def __init__(self, pdbs: Iterable[dict[str, Any]] = ()) -> None:
        self.budgets: list[_Budget] = []
        for pdb in pdbs:
            sel = (pdb.get("spec") or {}).get("selector")
            if sel is None:
                continue
            allowed = int((pdb.get("status") or {}).get("disruptionsAllowed") or 0)
            m = pdb["metadata"]
            self.budgets.append(_Budget(m.get("namespace", ""), m["name"], selector_from_label_selector(sel),
                                        allowed, allowed))

    def matching(self, pod: Pod) -> list[_Budget]:
        return [b for b in self.budgets if b.matches(pod)]

    def pod_block(self, pod: Pod) -> PdbBlock | None:
        """The PDB drainability rule for one pod to move."""
        if (pod["metadata"].get("annotations") or {}).get(SAFE_TO_EVICT) == "true":
            return None
        for b in self.matching(pod):
            if b.remaining < 1:
                return PdbBlock(pod, b.name, planned=b.allowed >= 1)
        return None

    def over_budget(self, pods: Iterable[Pod]) -> PdbBlock | None:
        """``CanRemovePods``' ``inParallel``: the first pod that would take a PDB below zero if all go at once."""
        used: dict[int, int] = {}
        for pod in pods:
            for b in self.matching(pod):
                used[id(b)] = used.get(id(b), 0) + 1
                if used[id(b)] > b.remaining:
                    return PdbBlock(pod, b.name, planned=used[id(b)] <= b.allowed)
        return None

    def blocking(self, pods: Iterable[Pod]) -> PdbBlock | None:
        """The first of ``pods`` (the pods a drain would evict) the budgets do not let go, or None."""
        pods = list(pods)
        for pod in pods:
            block = self.pod_block(pod)
            if block is not None:
                return block
        return self.over_budget(pods)

    def remove(self, pods: Iterable[Pod]) -> None:
        for pod in pods:
            for b in self.matching(pod):
                b.remaining -= 1


def drain_block(pods: Iterable[Pod], pdbs: PdbTracker) -> tuple[str, Pod, str, bool] | None:
    """Why a drain of a node running ``pods`` is not possible now (upstream ``simulator/drain.go`` ``GetPodsToMove``:
    the rules pod by pod, the PDB rule last), then the whole-node budget check (see :class:`PdbTracker`).
    ``(reason, pod, message, planned)`` for the first blocking pod, ``planned`` True when only disruptions planned
    earlier in this loop stand in the way; None: every pod may go."""
    pods = list(pods)
    moving = pods_to_move(pods)
    ids = {id(p) for p in moving}
    for p in pods:
        reason = blocking_reason(p, pdbs)
        if reason:
            return reason, p, blocking_message(p, reason), False
        block = pdbs.pod_block(p) if id(p) in ids else None
        if block is not None:
            return NOT_ENOUGH_PDB, p, block.message, block.planned
    block = pdbs.over_budget(moving)
    if block is not None:
        return NOT_ENOUGH_PDB, block.pod, block.message, block.planned
    return None


def pods_to_move(pods: Iterable[Pod]) -> list[Pod]:
    """The pods a drain would evict (DaemonSet, mirror and finished pods stay)."""
    return [p for p in pods if not (is_daemonset_pod(p) or is_mirror_pod(p) or is_terminal(p)
                                    or p["metadata"].get("deletionTimestamp"))]


def can_move(pods: Sequence[Pod], others: list[SimNode]) -> tuple[bool, list[Pod]]:
    """Whether every pod finds room on ``others`` (mutated: the pods are added where they land)."""
    _, left = place_first_fit(pods, others)
    return not left, left


def has_taint(node: Node, key: str) -> bool:
    return any(t.get("key") == key for t in (node.get("spec") or {}).get("taints") or [])


def strip_taints(node: Node, keys: Iterable[str] = (), patterns: Iterable[str] = ()) -> Node:
    """A copy of ``node`` without the taints of ``keys`` (or matching the glob ``patterns``)."""
    keys, patterns = set(keys), list(patterns)
    out = copy.deepcopy(node)
    taints = [t for t in (out.get("spec") or {}).get("taints") or []
              if t.get("key") not in keys and not any(fnmatch.fnmatch(t.get("key", ""), p) for p in patterns)]
    out.setdefault("spec", {})["taints"] = taints
    return out


def not_trigger_message(reasons: dict[str, int]) -> str:
    """``pod didn't trigger scale-up: 1 max node group size reached, 2 node(s) didn't match ...``
    (``core/scaleup/orchestrator`` ``ReasonsMessage``: ``<count> <reason>`` sorted, comma separated)."""
    return "pod didn't trigger scale-up: " + ", ".join(sorted(f"{n} {r}" for r, n in reasons.items()))


def triggered_message(infos: Sequence[tuple[str, int, int, int]]) -> str:
    """``pod triggered scale-up: [{<group> 0->2 (max: 10)}]`` (``ScaleUpInfo.String``)."""
    return "pod triggered scale-up: [" + " ".join(f"{{{g} {a}->{b} (max: {m})}}" for g, a, b, m in infos) + "]"
