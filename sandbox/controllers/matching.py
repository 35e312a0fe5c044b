"""Pod-to-node predicates shared by the scheduler and (next) the cluster-autoscaler's template-node simulation.

Pure functions over wire-format dicts, following kube-scheduler's filter plugins:

- ``NodeAffinity`` (``pkg/scheduler/framework/plugins/nodeaffinity``): ``spec.nodeSelector`` AND the required
  node affinity terms (terms OR-ed, expressions AND-ed; operators In, NotIn, Exists, DoesNotExist, Gt, Lt;
  ``matchFields`` on ``metadata.name``), reason ``node(s) didn't match Pod's node affinity/selector``.
- ``TaintToleration`` (``.../tainttoleration``, ``k8s.io/api/core/v1/toleration.go`` ``ToleratesTaint``): taints
  with effect NoSchedule/NoExecute must be tolerated, reason ``node(s) had untolerated taint {key: value}``;
  PreferNoSchedule only lowers the score.
- ``NodeUnschedulable``: ``spec.unschedulable`` unless tolerated (``node.kubernetes.io/unschedulable``), reason
  ``node(s) were unschedulable``.
- ``NodeResourcesFit`` (``.../noderesources/fit.go``): ``Too many pods`` and ``Insufficient <resource>``, one reason
  per short resource.
"""

from __future__ import annotations

from typing import Any

from .resources import pod_requests

REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_TOO_MANY_PODS = "Too many pods"


def _match_expression(expr: dict[str, Any], value_of: dict[str, str]) -> bool:
    key, op = expr.get("key", ""), expr.get("operator", "")
    vals = list(expr.get("values") or [])
    have = key in value_of
    v = value_of.get(key)
    if op == "In":
        return have and v in vals
    if op == "NotIn":
        return not have or v not in vals
    if op == "Exists":
        return have
    if op == "DoesNotExist":
        return not have
    if op in ("Gt", "Lt"):
        if not have or len(vals) != 1:
            return False
        try:
            lhs, rhs = int(str(v)), int(str(vals[0]))
        except ValueError:
            return False
        return lhs > rhs if op == "Gt" else lhs < rhs
    return False


def _term_matches(term: dict[str, Any], node: dict[str, Any]) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches no objects (v1 NodeSelectorTerm semantics)
    labels = node["metadata"].get("labels") or {}
    if not all(_match_expression(e, labels) for e in exprs):
        return False
    return all(_match_expression(e, {"metadata.name": node["metadata"]["name"]}) for e in fields)


def matches_node_selector(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    labels = node["metadata"].get("labels") or {}
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = ((((spec.get("affinity") or {}).get("nodeAffinity") or {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution")) or {})
    terms = required.get("nodeSelectorTerms")
    if terms is not None:
        return any(_term_matches(t, node) for t in terms)
    return True


def preferred_affinity_score(pod: dict[str, Any], node: dict[str, Any]) -> int:
    spec = pod.get("spec") or {}
    prefs = ((((spec.get("affinity") or {}).get("nodeAffinity") or {})
              .get("preferredDuringSchedulingIgnoredDuringExecution")) or [])
    return sum(int(p.get("weight") or 0) for p in prefs if _term_matches(p.get("preference") or {}, node))


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    effect = toleration.get("effect")
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key")
    if key and key != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    if op == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def untolerated_taint(pod: dict[str, Any], node: dict[str, Any],
                      effects: tuple[str, ...] = ("NoSchedule", "NoExecute")) -> dict[str, Any] | None:
    tols = (pod.get("spec") or {}).get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in effects:
            continue
        if not any(tolerates(t, taint) for t in tols):
            return taint
    return None


def taint_reason(taint: dict[str, Any]) -> str:
    return f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value') or ''}}}"


def unschedulable_blocks(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    if not (node.get("spec") or {}).get("unschedulable"):
        return False
    taint = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    return not any(tolerates(t, taint) for t in (pod.get("spec") or {}).get("tolerations") or [])


def insufficient(pod_req: dict[str, int], allocatable: dict[str, int], used: dict[str, int],
                 pods_on_node: int) -> list[str]:
    """The NodeResourcesFit reasons (empty when the pod fits)."""
    reasons: list[str] = []
    if pods_on_node + 1 > allocatable.get("pods", 110):
        reasons.append(REASON_TOO_MANY_PODS)
    for name, want in pod_req.items():
        if want <= 0:
            continue
        if name not in allocatable and name not in ("cpu", "memory", "ephemeral-storage"):
            reasons.append(f"Insufficient {name}")
            continue
        if want > allocatable.get(name, 0) - used.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return reasons


def filter_reasons(pod: dict[str, Any], node: dict[str, Any], allocatable: dict[str, int],
                   used: dict[str, int], pods_on_node: int) -> tuple[list[str], bool]:
    """(reasons the pod cannot go to the node, resolvable by preemption?) in kube-scheduler's plugin order:
    NodeUnschedulable, TaintToleration, NodeAffinity, then NodeResourcesFit (the default profile's order,
    ``pkg/scheduler/apis/config/v1/default_plugins.go``; the framework stops at the first rejecting filter)."""
    if unschedulable_blocks(pod, node):
        return [REASON_UNSCHEDULABLE], False
    taint = untolerated_taint(pod, node)
    if taint is not None:
        return [taint_reason(taint)], False
    if not matches_node_selector(pod, node):
        return [REASON_AFFINITY], False
    reasons = insufficient(pod_requests(pod), allocatable, used, pods_on_node)
    return reasons, True
