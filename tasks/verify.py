"""Step 8: what the deploy must prove, as pure checks over collected facts.

The seed ends with a look at a dashboard; here each property is a :class:`Check` (name, passed, expected, actual,
detail) computed by a PURE function from facts gathered once (:func:`collect_facts`), the load test's result and
the timeline:

``placement``       every serving pod is Running on a Node of the elastic pool: the Node carries
                    ``alibabacloud.com/nodepool-id=<pool id>`` and the pool's labels, and is no virtual node
                    (``type=virtual-kubelet``); reports how the pods spread over the nodes.
``scale_out``       during the test the HPA went above ``minReplicas`` (timeline) and the pool added ECS instances
                    (more nodes at the peak / at the end than in the first sample, taken before the load).
``mix``             ESS's mix rule (docs/alibaba-apis.md) over the instances ACK reports (DescribeClusterNodes, the authority): with N
                    instances, base B and percentage P the pool holds ``min(N,B) + x`` pay-as-you-go where x is floor
                    or ceil of ``P% * max(0, N-B)`` (both accepted, the one that matched is reported). A count off the
                    rule is a *deviation*, reported with numbers (how far, which instances) and explained only by
                    what the flow can observe (:func:`mix_deviation`); ``verification.fail_on_unexplained_mix``
                    decides whether an unexplained one fails the run. Both kinds must be present
                    (``verification.require_mix``). Node labels are checked only where they exist (see
                    :func:`label_disagreements`).
``slo_error_rate``  failed share of the FINAL stage's predictions <= ``verification.max_error_rate``.
``slo_p95``         p95 latency of the final stage <= ``verification.p95_ms``.

:func:`verify` returns a :class:`VerificationReport`; the caller writes the report first and then calls
:func:`raise_if_failed`, which raises :class:`VerificationFailed` naming the failed checks.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from clients.ack import AckApi, Node, NodePoolCondition
from clients.kube import KubeClients
from clients.logs import run_logger
from clients.waiting import poll_until
from core.spec import DeploySpec
from tasks.cost import billing_of
from tasks.loadtest import LoadTestResult
from tasks.serving import selector as serving_selector
from tasks.timeline import (
    CHARGE_LABEL,
    NODEPOOL_LABEL,
    SPOT_LABEL,
    TimelineSample,
    label_selector,
    node_ready,
)

VIRTUAL_NODE_LABEL = ("type", "virtual-kubelet")
INSTANCE_ID_LABEL = "alibabacloud.com/ecs-instance-id"
ZONE_LABEL = "topology.kubernetes.io/zone"
INACTIVE_STATES = frozenset({"removing", "removed", "deleting", "failed", "stopping", "stopped"})


# --- shapes -------------------------------------------------------------------------------------------------------
class Check(BaseModel):
    name: str
    passed: bool
    expected: str
    actual: str
    detail: str = ""


class VerificationReport(BaseModel):
    checks: list[Check]
    passed: bool

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @classmethod
    def of(cls, checks: list[Check]) -> VerificationReport:
        return cls(checks=checks, passed=all(c.passed for c in checks))


class VerificationFailed(RuntimeError):
    """One or more checks failed; the message names each with what was expected and seen."""

    def __init__(self, report: VerificationReport, where: str | None = None) -> None:
        self.report = report
        self.failed_checks = [c.name for c in report.failed]
        lines = [f"verification failed: {', '.join(self.failed_checks)}" + (f" (report: {where})" if where else "")]
        for c in report.failed:
            lines.append(f"  {c.name}: expected {c.expected}; actual {c.actual}" + (f" ({c.detail})" if c.detail else ""))
        super().__init__("\n".join(lines))


def raise_if_failed(report: VerificationReport, where: str | None = None) -> None:
    """Raise :class:`VerificationFailed` when any check failed (call it AFTER writing the report)."""
    if not report.passed:
        raise VerificationFailed(report, where)


class PodFact(BaseModel):
    name: str
    phase: str | None
    ready: bool
    node_name: str | None


class NodeFact(BaseModel):
    name: str
    labels: dict[str, str]
    ready: bool
    instance_id: str | None = None
    zone: str | None = None


class HpaFact(BaseModel):
    min_replicas: int | None = None
    max_replicas: int | None = None
    current_replicas: int | None = None
    desired_replicas: int | None = None


class Facts(BaseModel):
    """What the cluster and ACK said at the end of the test (secret-free: no object bodies are kept)."""

    collected_at: str
    nodepool_id: str
    pods: list[PodFact]
    nodes: list[NodeFact] = Field(description="Every Node of the cluster (to tell pool, other pool and virtual)")
    hpa: HpaFact | None = None
    ack_nodes: list[Node] = Field(default_factory=list, description="DescribeClusterNodes of the pool")
    pool_state: str | None = None
    pool_conditions: list[NodePoolCondition] = Field(default_factory=list)


# --- helpers ------------------------------------------------------------------------------------------------------
def pod_fact(obj: dict[str, Any]) -> PodFact:
    status = obj.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return PodFact(
        name=obj["metadata"]["name"], phase=status.get("phase"), ready=ready,
        node_name=(obj.get("spec") or {}).get("nodeName"),
    )


def node_fact(obj: dict[str, Any]) -> NodeFact:
    labels = dict((obj.get("metadata") or {}).get("labels") or {})
    iid = labels.get(INSTANCE_ID_LABEL)
    provider = (obj.get("spec") or {}).get("providerID") or ""
    if not iid and provider:
        iid = provider.rsplit(".", 1)[-1].rsplit("/", 1)[-1] or None  # ACK: <region>.<instance id>
    return NodeFact(name=obj["metadata"]["name"], labels=labels, ready=node_ready(obj), instance_id=iid,
                    zone=labels.get(ZONE_LABEL))


def active_instances(nodes: list[Node]) -> list[Node]:
    return [n for n in nodes if (n.state or "").lower() not in INACTIVE_STATES]


def is_virtual(node: NodeFact) -> bool:
    return node.labels.get(VIRTUAL_NODE_LABEL[0]) == VIRTUAL_NODE_LABEL[1]


def expected_pay_as_you_go(n: int, base: int, percentage: int) -> tuple[int, int]:
    """(floor, ceil) pay-as-you-go counts for ``n`` instances under ESS's mix rule (integer arithmetic)."""
    above = max(0, n - base)
    return min(n, base) + (percentage * above) // 100, min(n, base) + -((-percentage * above) // 100)


def _fmt_labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


# --- the checks (pure) --------------------------------------------------------------------------------------------
def check_placement(facts: Facts, pool_labels: dict[str, str]) -> Check:
    nodes = {n.name: n for n in facts.nodes}
    expected = (
        f"every serving pod Running on a node of pool {facts.nodepool_id} "
        f"({NODEPOOL_LABEL}={facts.nodepool_id}, {_fmt_labels(pool_labels)}); no virtual node, no other pool"
    )
    wrong: list[str] = []
    not_running: list[str] = []
    spread: Counter[str] = Counter()
    for p in facts.pods:
        if not p.node_name:
            not_running.append(f"{p.name} not scheduled (phase {p.phase})")
            continue
        node = nodes.get(p.node_name)
        if node is None:
            wrong.append(f"{p.name} on {p.node_name}, a node that does not exist")
            continue
        if is_virtual(node):
            wrong.append(f"{p.name} on virtual node {node.name}")
            continue
        pool = node.labels.get(NODEPOOL_LABEL)
        if pool != facts.nodepool_id:
            wrong.append(f"{p.name} on {node.name} of {'pool ' + pool if pool else 'no node pool'}")
            continue
        missing = {k: v for k, v in pool_labels.items() if node.labels.get(k) != v}
        if missing:
            wrong.append(f"{p.name} on {node.name} without the pool labels {_fmt_labels(missing)}")
            continue
        if p.phase != "Running":
            not_running.append(f"{p.name} on {node.name} is {p.phase}")
            continue
        spread[node.name] += 1
    running = sum(spread.values())
    spread_text = ", ".join(f"{n}: {c}" for n, c in sorted(spread.items())) or "none"
    actual = (
        f"{running}/{len(facts.pods)} pods Running on {len(spread)} pool node(s)"
        + (f"; {len(wrong)} elsewhere" if wrong else "")
        + (f"; {len(not_running)} not running" if not_running else "")
    )
    details = [f"spread: {spread_text}"]
    if wrong:
        details.append("off the pool: " + "; ".join(wrong))
    if not_running:
        details.append("not running: " + "; ".join(not_running))
    if not facts.pods:
        details.append("no serving pod found")
    passed = bool(facts.pods) and not wrong and not not_running
    return Check(name="placement", passed=passed, expected=expected, actual=actual, detail="; ".join(details))


def check_scale_out(
    timeline: list[TimelineSample], facts: Facts, min_replicas: int, required: bool = True,
    min_instances: int | None = None,
) -> Check:
    """The HPA went above ``min_replicas`` and the pool added ECS instances for the new replicas.

    A pool already scaled out beyond its ``min_instances`` when the test began (an earlier run's scale-out that the
    cluster-autoscaler has not yet taken back: it removes a node only after it has been unneeded for
    ``scale-down-unneeded-time``, 10 minutes by default) may need no new instance: that passes when every replica
    the HPA asked for at its peak was Ready at once, and the detail says that the pool was warm."""
    expected = f"HPA above minReplicas {min_replicas} during the test, and the pool adds ECS instances"
    desired = [v for s in timeline for v in (s.hpa_desired, s.hpa_current) if v is not None]
    peak_replicas = max(desired, default=None)
    counts = [s.nodes_total for s in timeline if s.nodes_total is not None]
    before = counts[0] if counts else None
    end_instances = len(active_instances(facts.ack_nodes))
    peak_nodes = max([*counts[1:], end_instances], default=end_instances)
    hpa_ok = peak_replicas is not None and peak_replicas > min_replicas
    nodes_ok = before is not None and peak_nodes > before
    actual = (
        f"HPA peak {peak_replicas if peak_replicas is not None else 'unknown'} replicas; pool nodes "
        f"{before if before is not None else 'unknown'} before → {peak_nodes} at peak ({end_instances} ECS "
        f"instances at the end)"
    )
    problems = []
    if not hpa_ok:
        problems.append(
            "the HPA never went above minReplicas" if peak_replicas is not None else "no HPA status was sampled"
        )
    warm = ""
    if hpa_ok and not nodes_ok and before is not None and min_instances is not None and before > min_instances:
        ready_peak = max((s.pods_ready for s in timeline if s.pods_ready is not None), default=0)
        if peak_replicas is not None and ready_peak >= peak_replicas:
            nodes_ok = True
            warm = (f"the pool was already scaled out to {before} instances (min_instances {min_instances}) when the "
                    f"test began, and all {peak_replicas} replicas were Ready on it: no instance needed adding")
    if not nodes_ok:
        problems.append(
            "the pool added no instance" if before is not None else "the pool's nodes were not sampled before the test"
        )
    if not timeline:
        problems.append("no timeline was recorded")
    if not required:
        return Check(name="scale_out", passed=True, expected="not required (verification.require_scale_out=false)",
                     actual=actual, detail="; ".join(problems))
    return Check(name="scale_out", passed=hpa_ok and nodes_ok, expected=expected, actual=actual,
                 detail="; ".join([*problems, warm] if warm else problems))


def label_disagreements(instances: list[Node], facts: Facts) -> tuple[list[str], list[str], list[str]]:
    """Node labels against DescribeClusterNodes: (disagreements, instances without a node, nodes missing labels).

    cloud-controller-manager sets ``node.alibabacloud.com/instance-charge-type`` only when ECS returns an
    InstanceChargeType and ``node.alibabacloud.com/spot-strategy`` only when ECS returns a SpotStrategy, and the
    latter only since CCM v2.10.2 (ACK's CCM release notes; kubernetes/cloud-provider-alibaba-cloud
    ``pkg/controller/node/manager.go``: ``if ins.SpotStrategy != "" { n.Labels[LabelSpotStrategy] = ... }``, added
    by commit 7e892d7 "add spot strategy label to node", 2024-11-14). A missing label is therefore no evidence of
    anything: only a label that is present and says something else than ACK is a disagreement.
    """
    by_id = {nf.instance_id: nf for nf in facts.nodes if nf.instance_id}
    by_name = {nf.name: nf for nf in facts.nodes}
    disagree: list[str] = []
    unregistered: list[str] = []
    unlabelled: list[str] = []
    for inst in instances:
        nf = by_id.get(inst.instance_id) or (by_name.get(inst.node_name) if inst.node_name else None)
        if nf is None:
            unregistered.append(inst.instance_id)
            continue
        charge, strategy = nf.labels.get(CHARGE_LABEL), nf.labels.get(SPOT_LABEL)
        wrong = []
        if charge is not None and inst.instance_charge_type and charge != inst.instance_charge_type:
            wrong.append(f"{CHARGE_LABEL}={charge} but ACK {inst.instance_charge_type}")
        if strategy is not None and inst.spot_strategy and strategy != inst.spot_strategy:
            wrong.append(f"{SPOT_LABEL}={strategy} but ACK {inst.spot_strategy}")
        if wrong:
            disagree.append(f"{inst.instance_id} ({nf.name}): {'; '.join(wrong)}")
        missing = [k for k in (CHARGE_LABEL, SPOT_LABEL) if k not in nf.labels]
        if missing:
            unlabelled.append(f"{nf.name} (no {', '.join(missing)})")
        if nf.labels.get(NODEPOOL_LABEL) != facts.nodepool_id:
            disagree.append(f"{inst.instance_id} ({nf.name}): labelled pool {nf.labels.get(NODEPOOL_LABEL)}")
    known = {i.instance_id for i in instances} | {i.node_name for i in instances if i.node_name}
    for nf in facts.nodes:
        if nf.labels.get(NODEPOOL_LABEL) == facts.nodepool_id and nf.instance_id not in known and nf.name not in known:
            disagree.append(f"node {nf.name} is labelled with the pool but ACK does not list it")
    return disagree, unregistered, unlabelled


def _ids(instances: list[Node]) -> str:
    newest = sorted(instances, key=lambda i: i.creation_time or "", reverse=True)
    return ", ".join(f"{i.instance_id}" + (f" ({i.node_name})" if i.node_name else "") for i in newest)


def mix_deviation(
    instances: list[Node], base: int, percentage: int, timeline: list[TimelineSample] | None,
    compensate_with_on_demand: bool,
) -> tuple[int, str, str | None]:
    """(deviation, what it is, explanation or None) of the pay-as-you-go count from the mix rule.

    ``deviation`` is 0 on the rule, > 0 for pay-as-you-go above ``ceil``, < 0 below ``floor``. What can explain it,
    from what the flow observes (ACK's DescribeClusterNodes and the timeline of the pool's Nodes):

    * **Scale-in of particular instances.** The cluster-autoscaler removes the nodes it chose (least needed), by
      instance id: kubernetes/autoscaler ``cluster-autoscaler/cloudprovider/alicloud/alicloud_manager.go``
      ``DeleteInstances`` calls ESS ``RemoveInstances`` with each instance id; ESS removes exactly those and
      rebalances nothing. Removing k instances from a pool on the rule moves the pay-as-you-go count at most k off
      the rule at the new size, so a deviation of at most k, where k is how far the pool shrank from its sampled
      peak, is explained.
    * **Compensation for spot** (``compensate_with_on_demand``, ESS CompensateWithOnDemand: pay-as-you-go when spot
      cannot be had) and **spot remedy** replacements are recorded only as ESS scaling activities
      (DescribeScalingActivities). The flow holds an ACK and a Kubernetes client, no ESS client, and no ACK API
      returns those activities (DescribeClusterNodePoolDetail ``status`` has counts and ``conditions`` of no
      documented type), so such a deviation is reported as unexplained, with that hint.
    """
    n = len(instances)
    payg = [i for i in instances if billing_of(i.instance_charge_type, i.spot_strategy) != "spot"]
    spot = [i for i in instances if billing_of(i.instance_charge_type, i.spot_strategy) == "spot"]
    lo, hi = expected_pay_as_you_go(n, base, percentage)
    if lo <= len(payg) <= hi:
        return 0, "", None
    if len(payg) > hi:
        dev = len(payg) - hi
        what = (f"{dev} pay-as-you-go instance(s) above the rule (ceil {hi} for N={n}); pay-as-you-go, newest first: "
                f"{_ids(payg)}")
    else:
        dev = len(payg) - lo
        what = (f"{-dev} pay-as-you-go instance(s) short of the rule (floor {lo} for N={n}); spot, newest first: "
                f"{_ids(spot)}")
    counts = [s.nodes_total for s in timeline or [] if s.nodes_total is not None]
    peak = max(counts, default=n)
    shrunk = max(0, peak - n)
    if shrunk and abs(dev) <= shrunk:
        return dev, what, (f"the pool shrank from {peak} to {n} node(s) during the run; the cluster-autoscaler removes "
                           f"the instances it picks (ESS RemoveInstances by id) and nothing rebalances, which moves "
                           f"the count up to {shrunk} off the rule")
    hint = f" (the pool shrank by {shrunk}, less than {abs(dev)})" if shrunk else ""
    if dev > 0 and compensate_with_on_demand:
        hint += ("; compensate_with_on_demand is on: ESS may have launched pay-as-you-go for missing spot, which only "
                 "the scaling group's activities (ESS DescribeScalingActivities) can confirm, and the flow has no ESS "
                 "client")
    return dev, what + hint, None


def check_mix(
    facts: Facts,
    billing: str,
    base: int,
    percentage: int,
    compensate_with_on_demand: bool,
    require_both: bool = True,
    timeline: list[TimelineSample] | None = None,
    fail_on_unexplained: bool = True,
) -> Check:
    instances = active_instances(facts.ack_nodes)
    n = len(instances)
    kinds = Counter(billing_of(i.instance_charge_type, i.spot_strategy) for i in instances)
    payg = kinds["pay-as-you-go"] + kinds["subscription"]
    spot = kinds["spot"]
    problems: list[str] = []
    notes: list[str] = []

    disagree, unregistered, unlabelled = label_disagreements(instances, facts)
    if disagree:
        problems.append("node labels and DescribeClusterNodes disagree: " + "; ".join(disagree))
    if unregistered:
        notes.append(f"{len(unregistered)} instance(s) not registered as nodes yet: {', '.join(unregistered)}")
    if unlabelled:
        notes.append(f"{len(unlabelled)} node(s) without the CCM billing labels (CCM before v2.10.2 sets no "
                     f"spot-strategy label; none is set when ECS returns no value), billing taken from "
                     f"DescribeClusterNodes: {', '.join(unlabelled)}")

    if billing != "spot":
        expected = "every instance pay-as-you-go (billing on-demand)"
        if spot:
            problems.append(f"{spot} spot instance(s) in an on-demand pool")
        actual = f"N={n}: {payg} pay-as-you-go, {spot} spot"
        if n == 0:
            problems.append("the pool has no instance")
        return Check(name="mix", passed=not problems, expected=expected, actual=actual,
                     detail="; ".join(problems + notes))

    lo, hi = expected_pay_as_you_go(n, base, percentage)
    want = f"{lo}" if lo == hi else f"{lo} (floor) or {hi} (ceil)"
    expected = (
        f"pay-as-you-go = min(N,{base}) + floor|ceil({percentage}% × max(0, N-{base})) = {want} for N={n}, or a "
        "deviation the observed scale-in explains"
        + ("" if fail_on_unexplained else " (an unexplained deviation is reported, not failed)")
        + ("; both pay-as-you-go and spot present" if require_both else "")
        + "; node labels, where set, agree with DescribeClusterNodes"
    )
    rule = {lo: "floor", hi: "ceil"}.get(payg) if lo != hi else ("exact" if payg == lo else None)
    dev, what, why = mix_deviation(instances, base, percentage, timeline, compensate_with_on_demand)
    if rule:
        notes.insert(0, f"matches the rule ({rule})")
    elif why:
        rule = "drift"
        notes.insert(0, f"deviation {dev:+d}, explained: {what}; {why}")
    elif fail_on_unexplained:
        problems.append(f"deviation {dev:+d}, unexplained: {what}")
    else:
        rule = "unexplained deviation"
        notes.insert(0, f"deviation {dev:+d}, unexplained (not failed: verification.fail_on_unexplained_mix is "
                        f"false): {what}")
    if n == 0:
        problems.append("the pool has no instance")
    if require_both and (payg == 0 or spot == 0):
        problems.append(f"not both kinds: {payg} pay-as-you-go, {spot} spot")
    actual = f"N={n}: {payg} pay-as-you-go, {spot} spot" + (f" (rule: {rule})" if rule else "")
    return Check(name="mix", passed=not problems, expected=expected, actual=actual,
                 detail="; ".join(problems + notes))


def check_slo_error_rate(load: LoadTestResult | None, max_error_rate: float) -> Check:
    expected = f"final stage error rate <= {100 * max_error_rate:g}%"
    if load is None:
        return Check(name="slo_error_rate", passed=True, expected=expected, actual="no load test ran",
                     detail="load_test.enabled is false")
    final = load.final_stage
    if final is None or final.requests == 0:
        return Check(name="slo_error_rate", passed=False, expected=expected, actual="no request in the final stage",
                     detail=f"{load.metadata_failures} metadata failures" if load.metadata_failures else "")
    top = "; ".join(f"{e.error} x{e.occurrences}" for e in load.errors[:3])
    return Check(
        name="slo_error_rate",
        passed=final.error_rate <= max_error_rate,
        expected=expected,
        actual=f"{100 * final.error_rate:.2f}% ({final.failures}/{final.requests}) in stage {final.index}",
        detail=f"whole test {100 * load.error_rate:.2f}%" + (f"; errors: {top}" if top else ""),
    )


def check_slo_p95(load: LoadTestResult | None, p95_ms: float) -> Check:
    expected = f"final stage p95 <= {p95_ms:g} ms"
    if load is None:
        return Check(name="slo_p95", passed=True, expected=expected, actual="no load test ran",
                     detail="load_test.enabled is false")
    final = load.final_stage
    if final is None or final.p95_ms is None:
        return Check(name="slo_p95", passed=False, expected=expected, actual="no latency measured in the final stage")
    return Check(
        name="slo_p95",
        passed=final.p95_ms <= p95_ms,
        expected=expected,
        actual=f"{final.p95_ms:g} ms in stage {final.index} ({final.users} users)",
        detail=f"p50 {final.p50_ms:g} ms, p99 {final.p99_ms:g} ms; whole test p95 {load.p95_ms:g} ms"
        if final.p50_ms is not None and final.p99_ms is not None and load.p95_ms is not None else "",
    )


def run_checks(
    facts: Facts, spec: DeploySpec, load: LoadTestResult | None, timeline: list[TimelineSample]
) -> VerificationReport:
    """Every check, pure."""
    pool = spec.node_pool
    v = spec.verification
    return VerificationReport.of([
        check_placement(facts, pool.labels),
        check_scale_out(timeline, facts, spec.autoscaling.min_replicas, v.require_scale_out,
                        spec.node_pool.min_instances),
        check_mix(facts, pool.billing, pool.on_demand_base_capacity, pool.on_demand_percentage_above_base,
                  pool.compensate_with_on_demand, v.require_mix, timeline, v.fail_on_unexplained_mix),
        check_slo_error_rate(load, v.max_error_rate),
        check_slo_p95(load, v.p95_ms),
    ])


# --- the tasks ----------------------------------------------------------------------------------------------------
def _pods(kube: KubeClients, spec: DeploySpec) -> list[PodFact]:
    items = kube.list("Pod", spec.names.namespace, label_selector=label_selector(serving_selector(spec))).get("items") or []
    live = [
        p for p in items
        if not (p.get("metadata") or {}).get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    return [pod_fact(p) for p in live]


def _settled(pods: list[PodFact]) -> bool:
    return bool(pods) and all(p.node_name and p.phase == "Running" and p.ready for p in pods)


@task(name="collect_facts", cache_policy=NO_CACHE)
def collect_facts(
    kube: KubeClients,
    ack: AckApi,
    spec: DeploySpec,
    nodepool_id: str,
    settle_timeout_s: float = 120.0,
    poll_s: float = 2.0,
) -> Facts:
    """Gather the facts the checks need: the serving pods (after waiting up to ``settle_timeout_s`` for them to
    be Running and Ready), every Node, the HPA, DescribeClusterNodes of the pool and the pool's status."""
    logger = run_logger()
    seen: list[list[Any]] = []

    def settled() -> list[Any] | None:
        seen[:] = [_pods(kube, spec)]
        return seen[0] if _settled(seen[0]) else None

    poll_until(settled, settle_timeout_s, interval=poll_s, max_interval=poll_s)
    pods = seen[0]
    if not _settled(pods):
        logger.warning("serving pods not all Running and Ready after %.0fs: %s", settle_timeout_s,
                       ", ".join(f"{p.name}={p.phase}" for p in pods) or "none")
    nodes = kube._call("LIST Node", kube.core.list_node).get("items") or []
    hpa_obj = kube.get("HorizontalPodAutoscaler", spec.names.hpa, spec.names.namespace)
    hpa = None
    if hpa_obj is not None:
        s, st = hpa_obj.get("spec") or {}, hpa_obj.get("status") or {}
        hpa = HpaFact(min_replicas=s.get("minReplicas"), max_replicas=s.get("maxReplicas"),
                      current_replicas=st.get("currentReplicas"), desired_replicas=st.get("desiredReplicas"))
    ack_nodes = ack.describe_nodes(nodepool_id=nodepool_id)
    pool = ack.describe_node_pool(nodepool_id)
    facts = Facts(
        collected_at=datetime.now(UTC).isoformat(timespec="seconds"),
        nodepool_id=nodepool_id,
        pods=pods,
        nodes=[node_fact(n) for n in nodes],
        hpa=hpa,
        ack_nodes=ack_nodes,
        pool_state=pool.state,
        pool_conditions=pool.status.conditions,
    )
    logger.info("facts: %d serving pods, %d nodes in the cluster, %d instances in pool %s (%s)",
                len(pods), len(nodes), len(ack_nodes), nodepool_id, pool.status.summary())
    return facts


@task(name="verify", cache_policy=NO_CACHE)
def verify(
    facts: Facts, spec: DeploySpec, load: LoadTestResult | None, timeline: list[TimelineSample]
) -> VerificationReport:
    """Run every check; returns the report (it does not raise: write the report, then :func:`raise_if_failed`)."""
    report = run_checks(facts, spec, load, timeline)
    logger = run_logger()
    for c in report.checks:
        (logger.info if c.passed else logger.error)(
            "check %s: %s; expected %s; actual %s%s", c.name, "PASSED" if c.passed else "FAILED", c.expected,
            c.actual, f" ({c.detail})" if c.detail else "",
        )
    return report
