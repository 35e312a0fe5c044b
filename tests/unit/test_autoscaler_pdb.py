"""The cluster-autoscaler's PodDisruptionBudget checks for scale-down (sandbox.autoscaler.simulate.PdbTracker,
after upstream's core/scaledown/pdb/basic.go and simulator/drainability/rules/pdb/rule.go)."""

from __future__ import annotations

from sandbox.autoscaler import simulate as sim


def pod(name: str, labels: dict | None = None, ns: str = "default", owner: str | None = "ReplicaSet",
        annotations: dict | None = None, deleting: bool = False) -> dict:
    meta: dict = {"name": name, "namespace": ns, "uid": f"uid-{name}", "labels": labels or {"app": "web"},
                  "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "o", "uid": "o1", "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"phase": "Running"}}


def pdb(name: str, allowed: int, selector: dict | None = None, ns: str = "default") -> dict:
    spec = {"minAvailable": 1}
    if selector is not None:
        spec["selector"] = selector
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec,
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 2, "desiredHealthy": 1}}


WEB = {"matchLabels": {"app": "web"}}


def test_matching_is_same_namespace_and_selector():
    t = sim.PdbTracker([pdb("web", 1, WEB), pdb("other-ns", 1, WEB, ns="prod"), pdb("all", 1, {}),
                        pdb("none", 1, None), pdb("expr", 1, {"matchExpressions": [
                            {"key": "app", "operator": "In", "values": ["web", "api"]}]})])
    assert [b.name for b in t.matching(pod("w"))] == ["web", "all", "expr"]
    assert [b.name for b in t.matching(pod("a", labels={"app": "api"}))] == ["all", "expr"]
    assert [b.name for b in t.matching(pod("p", ns="prod"))] == ["other-ns"]


def test_a_pdb_without_disruptions_left_blocks_with_upstreams_message():
    t = sim.PdbTracker([pdb("web", 0, WEB)])
    block = t.blocking([pod("web-1")])
    assert block is not None and block.pdb == "web" and not block.planned
    assert block.message == "not enough pod disruption budget to move default/web-1"
    assert t.blocking([pod("api-1", labels={"app": "api"})]) is None
    assert sim.drain_block([pod("web-1")], t) == (
        "NotEnoughPdb", pod("web-1"), "not enough pod disruption budget to move default/web-1", False)


def test_a_planned_node_uses_up_the_budget_for_the_rest_of_the_loop():
    t = sim.PdbTracker([pdb("web", 1, WEB)])
    node_a, node_b = [pod("web-1")], [pod("web-2")]
    assert t.blocking(node_a) is None
    t.remove(node_a)
    block = t.blocking(node_b)
    assert block is not None and block.pod["metadata"]["name"] == "web-2"
    assert block.planned  # the PDB's own status allowed it: the plan used it up
    # a fresh loop reads the status again
    assert sim.PdbTracker([pdb("web", 1, WEB)]).blocking(node_b) is None


def test_pods_of_one_node_beyond_the_budget_keep_the_node():
    # upstream plans such a node as "risky" and lets the Eviction API pace the drain; the sandbox deletes pods
    # directly, so it keeps the node: the second pod would take the PDB below zero
    t = sim.PdbTracker([pdb("web", 1, WEB)])
    block = t.blocking([pod("web-1"), pod("web-2")])
    assert block is not None and block.pod["metadata"]["name"] == "web-2" and not block.planned
    assert sim.PdbTracker([pdb("web", 2, WEB)]).blocking([pod("web-1"), pod("web-2")]) is None
    # every matching PDB must allow it
    t = sim.PdbTracker([pdb("web", 2, WEB), pdb("all", 0, {})])
    assert t.blocking([pod("web-1")]).pdb == "all"


def test_safe_to_evict_skips_the_pod_rule_but_not_the_budget():
    safe = pod("web-1", annotations={sim.SAFE_TO_EVICT: "true"})
    t = sim.PdbTracker([pdb("web", 0, WEB)])
    assert t.pod_block(safe) is None
    assert t.over_budget([safe]) is not None
    assert sim.PdbTracker([pdb("web", 1, WEB)]).blocking([safe]) is None


def test_drain_block_follows_the_rule_order_and_skips_what_a_drain_leaves():
    t = sim.PdbTracker([pdb("web", 0, WEB)])
    bare = pod("bare", owner=None, labels={"app": "x"})
    # pod by pod: the first pod's PDB block comes before the second pod's NotReplicated
    assert sim.drain_block([pod("web-1"), bare], t)[0] == "NotEnoughPdb"
    assert sim.drain_block([bare, pod("web-1")], t)[:3:2] == ("NotReplicated", "default/bare is not replicated")
    # DaemonSet and deleting pods are not evicted by a drain: no budget needed
    assert sim.drain_block([pod("ds", owner="DaemonSet"), pod("web-1", deleting=True)], t) is None


def test_kube_system_pods_may_move_when_a_pdb_covers_them():
    dns = pod("coredns-1", labels={"k8s-app": "kube-dns"}, ns="kube-system")
    assert sim.blocking_reason(dns) == "UnmovableKubeSystemPod"
    assert sim.drain_block([dns], sim.PdbTracker())[2] == (
        "non-daemonset, non-mirrored, non-pdb-assigned kube-system pod present: coredns-1")
    covered = sim.PdbTracker([pdb("dns", 1, {"matchLabels": {"k8s-app": "kube-dns"}}, ns="kube-system")])
    assert sim.blocking_reason(dns, covered) is None
    assert sim.drain_block([dns], covered) is None
    exhausted = sim.PdbTracker([pdb("dns", 0, {"matchLabels": {"k8s-app": "kube-dns"}}, ns="kube-system")])
    assert sim.drain_block([dns], exhausted)[0] == "NotEnoughPdb"
