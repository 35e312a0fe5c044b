"""Each verification check passes, and fails for the right reason, on hand-made facts (pure functions)."""

from __future__ import annotations

import pytest

from clients.ack import Node, NodePoolCondition
from core.spec import DeploySpec
from tasks.loadtest import ErrorCount, LoadTestResult, StageStats
from tasks.timeline import TimelineSample, metric_sum, node_counts
from tasks.verify import (
    Check,
    Facts,
    NodeFact,
    PodFact,
    VerificationFailed,
    VerificationReport,
    check_mix,
    check_placement,
    check_scale_out,
    check_slo_error_rate,
    check_slo_p95,
    expected_pay_as_you_go,
    node_fact,
    raise_if_failed,
    run_checks,
)

POOL = "np-elastic"
LABELS = {"inference": "tensorflow"}


def k8s_node(name: str, iid: str, spot: bool, pool: str = POOL, extra: dict | None = None) -> NodeFact:
    labels = {
        "alibabacloud.com/nodepool-id": pool,
        "alibabacloud.com/ecs-instance-id": iid,
        "node.alibabacloud.com/instance-charge-type": "PostPaid",
        "node.alibabacloud.com/spot-strategy": "SpotAsPriceGo" if spot else "NoSpot",
        **(LABELS if pool == POOL else {}),
        **(extra or {}),
    }
    return NodeFact(name=name, labels=labels, ready=True, instance_id=iid)


def ack_node(name: str, iid: str, spot: bool, state: str = "running") -> Node:
    return Node(instance_id=iid, node_name=name, instance_type="ecs.gn6i-c4g1.xlarge", instance_charge_type="PostPaid",
                spot_strategy="SpotAsPriceGo" if spot else "NoSpot", nodepool_id=POOL, state=state)


def pool_facts(spots: list[bool], pods: list[PodFact] | None = None, conditions=None, extra_nodes=()) -> Facts:
    nodes = [k8s_node(f"n{i}", f"i-{i}", s) for i, s in enumerate(spots)]
    return Facts(
        collected_at="2026-01-01T00:00:00+00:00",
        nodepool_id=POOL,
        pods=pods if pods is not None else [PodFact(name="p0", phase="Running", ready=True, node_name="n0")],
        nodes=[*nodes, *extra_nodes],
        ack_nodes=[ack_node(f"n{i}", f"i-{i}", s) for i, s in enumerate(spots)],
        pool_conditions=conditions or [],
    )


def running(name: str, node: str | None, phase: str = "Running") -> PodFact:
    return PodFact(name=name, phase=phase, ready=phase == "Running", node_name=node)


# --- placement ------------------------------------------------------------------------------------------------------
def test_placement_passes_and_reports_the_spread():
    f = pool_facts([False, True], pods=[running("a", "n0"), running("b", "n1"), running("c", "n1")])
    c = check_placement(f, LABELS)
    assert c.passed, c
    assert c.actual.startswith("3/3 pods Running on 2 pool node(s)")
    assert "n0: 1, n1: 2" in c.detail


@pytest.mark.parametrize(
    ("node", "reason"),
    [
        (k8s_node("other", "i-x", False, pool="np-default"), "of pool np-default"),
        (k8s_node("vk", "i-v", False, extra={"type": "virtual-kubelet"}), "virtual node vk"),
        (NodeFact(name="bare", labels={"alibabacloud.com/nodepool-id": POOL}, ready=True), "without the pool labels"),
        (NodeFact(name="nolabel", labels={}, ready=True), "of no node pool"),
    ],
)
def test_placement_fails_for_a_pod_off_the_pool(node, reason):
    f = pool_facts([False], pods=[running("a", "n0"), running("b", node.name)], extra_nodes=[node])
    c = check_placement(f, LABELS)
    assert not c.passed
    assert reason in c.detail and "b on" in c.detail
    assert "1 elsewhere" in c.actual


def test_placement_fails_for_pending_pods_and_for_no_pods():
    c = check_placement(pool_facts([False], pods=[running("a", "n0"), running("b", None, "Pending")]), LABELS)
    assert not c.passed and "b not scheduled" in c.detail
    c = check_placement(pool_facts([False], pods=[running("a", "n0", "Pending")]), LABELS)
    assert not c.passed and "a on n0 is Pending" in c.detail
    c = check_placement(pool_facts([False], pods=[]), LABELS)
    assert not c.passed and "no serving pod" in c.detail


# --- scale out ------------------------------------------------------------------------------------------------------
def sample(t: float, desired: int | None, nodes: int | None) -> TimelineSample:
    return TimelineSample(t=t, timestamp="x", unix=t, hpa_current=desired, hpa_desired=desired, nodes_total=nodes)


def test_scale_out_passes_when_the_hpa_and_the_pool_grow():
    tl = [sample(0, 1, 1), sample(5, 4, 1), sample(10, 4, 3)]
    c = check_scale_out(tl, pool_facts([False, True, True]), min_replicas=1)
    assert c.passed, c
    assert "HPA peak 4" in c.actual and "1 before → 3 at peak" in c.actual


def test_scale_out_fails_when_the_load_is_too_small():
    tl = [sample(0, 1, 1), sample(5, 1, 1)]
    c = check_scale_out(tl, pool_facts([False]), min_replicas=1)
    assert not c.passed
    assert "never went above minReplicas" in c.detail and "added no instance" in c.detail
    # HPA scaled but the pool did not grow (pods fit on the existing node): still a failure, named
    c = check_scale_out([sample(0, 1, 1), sample(5, 3, 1)], pool_facts([False]), min_replicas=1)
    assert not c.passed and "added no instance" in c.detail and "minReplicas" not in c.detail
    # not required: passes, but says what it saw
    c = check_scale_out(tl, pool_facts([False]), min_replicas=1, required=False)
    assert c.passed and "not required" in c.expected and "added no instance" in c.detail


def test_scale_out_on_a_pool_an_earlier_run_left_scaled_out():
    def warm(t: float, desired: int, ready: int) -> TimelineSample:
        return TimelineSample(t=t, timestamp="x", unix=t, hpa_current=desired, hpa_desired=desired, nodes_total=3,
                              pods_ready=ready)

    facts = pool_facts([False, True, True])
    # three instances already, above min_instances 0, and all 4 replicas Ready on them: nothing needed adding
    c = check_scale_out([warm(0, 1, 1), warm(5, 4, 2), warm(10, 4, 4)], facts, min_replicas=1, min_instances=0)
    assert c.passed, c
    assert "already scaled out to 3 instances (min_instances 0)" in c.detail and "all 4 replicas were Ready" in c.detail
    # the replicas never all ran: the pool should have grown and did not
    c = check_scale_out([warm(0, 1, 1), warm(5, 4, 2), warm(10, 4, 3)], facts, min_replicas=1, min_instances=0)
    assert not c.passed and "added no instance" in c.detail
    # a pool at its floor proves nothing by fitting the replicas: it must grow
    c = check_scale_out([warm(0, 1, 1), warm(10, 4, 4)], facts, min_replicas=1, min_instances=3)
    assert not c.passed and "added no instance" in c.detail
    # and without the HPA scaling out there is nothing to excuse
    c = check_scale_out([warm(0, 1, 1), warm(10, 1, 1)], facts, min_replicas=1, min_instances=0)
    assert not c.passed and "never went above minReplicas" in c.detail


def test_scale_out_counts_instances_acks_reports_at_the_end():
    # the last node registered after the last sample: DescribeClusterNodes at the end shows it
    c = check_scale_out([sample(0, 1, 1), sample(5, 3, 1)], pool_facts([False, True]), min_replicas=1)
    assert c.passed, c


# --- mix ------------------------------------------------------------------------------------------------------------
def test_mix_rule_arithmetic():
    assert expected_pay_as_you_go(4, 0, 30) == (1, 2)
    assert expected_pay_as_you_go(10, 0, 30) == (3, 3)
    assert expected_pay_as_you_go(1, 2, 30) == (1, 1)
    assert expected_pay_as_you_go(5, 2, 50) == (3, 4)
    assert expected_pay_as_you_go(0, 0, 30) == (0, 0)
    assert expected_pay_as_you_go(3, 0, 100) == (3, 3)


@pytest.mark.parametrize(("spots", "rule"), [
    ([False, False, True, True], "ceil"),   # N=4, 30%: 1.2 → 2
    ([False, True, True, True], "floor"),   # → 1
    ([False, False, False] + [True] * 7, "exact"),  # N=10: 3
])
def test_mix_accepts_floor_or_ceil_and_says_which(spots, rule):
    c = check_mix(pool_facts(spots), "spot", 0, 30, True)
    assert c.passed, c
    assert f"(rule: {rule})" in c.actual


def test_mix_fails_for_a_wrong_ratio():
    c = check_mix(pool_facts([True, True, True, True]), "spot", 0, 30, True)
    assert not c.passed and "deviation -1, unexplained" in c.detail and "not both kinds" in c.detail
    assert "short of the rule (floor 1 for N=4); spot, newest first: i-0 (n0)" in c.detail
    c = check_mix(pool_facts([False, False, False, True]), "spot", 0, 30, True)
    assert not c.passed and "deviation +1, unexplained: 1 pay-as-you-go instance(s) above the rule" in c.detail
    assert "i-0 (n0), i-1 (n1), i-2 (n2)" in c.detail  # which instances, by name
    # compensation cannot be confirmed without ESS: said so, still unexplained
    assert "ESS DescribeScalingActivities" in c.detail


def test_a_pool_condition_explains_nothing():
    """Issue 12 (1): no ACK condition documents compensation; a pool condition no longer excuses a deviation."""
    cond = NodePoolCondition(type="InstanceMix", status="False", reason="CompensatedWithOnDemand",
                             message="spot stock exhausted in cn-hangzhou-h")
    c = check_mix(pool_facts([False, False, False, True], conditions=[cond]), "spot", 0, 30, True)
    assert not c.passed and "unexplained" in c.detail


def _sizes(*counts: int) -> list[TimelineSample]:
    return [TimelineSample(t=float(i), timestamp="", unix=float(i), nodes_total=n) for i, n in enumerate(counts)]


def test_mix_drift_after_scale_in_is_explained_by_the_timeline():
    """Issue 12 (7): the autoscaler removed 2 of 6 instances (by id, ESS RemoveInstances): up to 2 off the rule."""
    facts = pool_facts([False, False, False, True])  # N=4, 30%: 1 or 2 pay-as-you-go; 3 is +1
    c = check_mix(facts, "spot", 0, 30, True, timeline=_sizes(2, 6, 6, 4))
    assert c.passed, c
    assert "(rule: drift)" in c.actual and "deviation +1, explained" in c.detail
    assert "shrank from 6 to 4" in c.detail
    # a deviation larger than the shrink stays unexplained
    facts = pool_facts([False, False, False, False, True])  # N=5: 1 or 2; 4 is +2
    c = check_mix(facts, "spot", 0, 30, True, timeline=_sizes(2, 6, 5))
    assert not c.passed and "deviation +2, unexplained" in c.detail and "shrank by 1, less than 2" in c.detail


def test_the_spec_decides_whether_an_unexplained_deviation_fails():
    facts = pool_facts([False, False, False, True])
    c = check_mix(facts, "spot", 0, 30, True, fail_on_unexplained=False)
    assert c.passed and "(rule: unexplained deviation)" in c.actual
    assert "deviation +1, unexplained (not failed: verification.fail_on_unexplained_mix is false)" in c.detail
    spec = DeploySpec.model_validate({"verification": {"fail_on_unexplained_mix": False}})
    assert spec.verification.fail_on_unexplained_mix is False


def test_mix_requires_both_kinds_unless_told_otherwise():
    # N=1, 30%: floor → 0 pay-as-you-go (1 spot) matches the rule but not "both kinds"
    c = check_mix(pool_facts([True]), "spot", 0, 30, True)
    assert not c.passed and "not both kinds" in c.detail and "(rule: floor)" in c.actual
    assert check_mix(pool_facts([True]), "spot", 0, 30, True, require_both=False).passed


def test_mix_base_capacity_and_inactive_instances():
    facts = pool_facts([False, False, False, True, True])  # B=2, 50% of 3 → 1.5: 3 (floor) or 4 (ceil)
    assert check_mix(facts, "spot", 2, 50, True).passed
    facts.ack_nodes.append(ack_node("gone", "i-gone", False, state="removing"))  # being released: not counted
    c = check_mix(facts, "spot", 2, 50, True)
    assert c.passed and c.actual.startswith("N=5:")


def test_mix_fails_when_labels_and_ack_disagree():
    facts = pool_facts([False, True, True])
    facts.nodes[1].labels["node.alibabacloud.com/spot-strategy"] = "NoSpot"
    c = check_mix(facts, "spot", 0, 30, True)
    assert not c.passed and "disagree" in c.detail and "i-1 (n1)" in c.detail
    stray = k8s_node("stray", "i-stray", True)
    c = check_mix(pool_facts([False, True, True], extra_nodes=[stray]), "spot", 0, 30, True)
    assert not c.passed and "stray is labelled with the pool but ACK does not list it" in c.detail


def test_mix_notes_instances_not_registered_yet():
    facts = pool_facts([False, True, True])
    facts.nodes.pop()
    c = check_mix(facts, "spot", 0, 30, True)
    assert c.passed and "not registered as nodes yet: i-2" in c.detail


def test_label_less_nodes_are_not_a_disagreement():
    """Issue 12 (2): CCM before v2.10.2 sets no spot-strategy label; ECS may return no charge type."""
    facts = pool_facts([False, True, True])
    for nf in facts.nodes:
        del nf.labels["node.alibabacloud.com/spot-strategy"]
    del facts.nodes[0].labels["node.alibabacloud.com/instance-charge-type"]
    c = check_mix(facts, "spot", 0, 30, True)
    assert c.passed, c
    assert "3 node(s) without the CCM billing labels" in c.detail and "billing taken from DescribeClusterNodes" in c.detail
    facts.nodes[1].labels["node.alibabacloud.com/instance-charge-type"] = "PrePaid"  # present and wrong: fails
    assert not check_mix(facts, "spot", 0, 30, True).passed


def test_on_demand_pool():
    assert check_mix(pool_facts([False, False]), "on-demand", 0, 30, True).passed
    c = check_mix(pool_facts([False, True]), "on-demand", 0, 30, True)
    assert not c.passed and "spot instance(s) in an on-demand pool" in c.detail


# --- SLOs -----------------------------------------------------------------------------------------------------------
def load(stages: list[tuple[int, int, float | None]]) -> LoadTestResult:
    st = [StageStats(index=i, users=10, start_s=i * 10, end_s=(i + 1) * 10, requests=r, failures=f,
                     error_rate=f / r if r else 0, rps=r / 10, p50_ms=p and p / 2, p95_ms=p, p99_ms=p and p * 2)
          for i, (r, f, p) in enumerate(stages)]
    total = sum(s.requests for s in st)
    fails = sum(s.failures for s in st)
    return LoadTestResult(requests=total, failures=fails, error_rate=fails / total if total else 0, rps=1,
                          p50_ms=10, p95_ms=50, p99_ms=90, avg_ms=12, max_ms=100, started_at=0, ended_at=20,
                          duration_s=20, stages=st, errors=[ErrorCount(name="predict [stage 1]", error="HTTP 503",
                                                                       occurrences=fails)])


def test_slos_judge_the_final_stage():
    lt = load([(100, 50, 5000), (1000, 5, 200)])  # a bad warm-up does not count
    assert check_slo_error_rate(lt, 0.01).passed
    c = check_slo_p95(lt, 1000)
    assert c.passed and c.actual.startswith("200 ms in stage 1")


def test_slos_fail_when_too_tight_or_violated():
    lt = load([(1000, 20, 900)])
    c = check_slo_error_rate(lt, 0.01)
    assert not c.passed and "2.00% (20/1000)" in c.actual and "HTTP 503" in c.detail
    c = check_slo_p95(lt, 1)  # impossibly tight
    assert not c.passed and "900 ms" in c.actual and "<= 1 ms" in c.expected
    empty = load([(10, 0, 100), (0, 0, None)])
    assert not check_slo_error_rate(empty, 0.5).passed
    assert not check_slo_p95(empty, 1e9).passed


# --- report and failure ---------------------------------------------------------------------------------------------
def test_run_checks_and_verification_failed_names_the_failed_checks(tmp_path):
    spec = DeploySpec.parse({"cluster_id": "cabcdef0123", "serving": {"version": "202107141745"},
                             "verification": {"p95_ms": 1}})
    facts = pool_facts([False, False, True, True], pods=[running("a", "n0"), running("b", "n2")])
    tl = [sample(0, 1, 1), sample(5, 3, 4)]
    report = run_checks(facts, spec, load([(1000, 0, 300)]), tl)
    assert [c.name for c in report.checks] == ["placement", "scale_out", "mix", "slo_error_rate", "slo_p95"]
    assert not report.passed and [c.name for c in report.failed] == ["slo_p95"]
    with pytest.raises(VerificationFailed) as exc:
        raise_if_failed(report, where="reports/x")
    assert exc.value.failed_checks == ["slo_p95"]
    assert "verification failed: slo_p95 (report: reports/x)" in str(exc.value)
    raise_if_failed(VerificationReport.of([Check(name="x", passed=True, expected="", actual="")]))


# --- facts and timeline helpers -------------------------------------------------------------------------------------
def test_node_fact_and_counts_from_node_objects():
    def obj(name, spot, ready, provider=None, labels=None):
        lab = {"node.alibabacloud.com/spot-strategy": "SpotAsPriceGo" if spot else "NoSpot",
               "node.alibabacloud.com/instance-charge-type": "PostPaid", **(labels or {})}
        return {"metadata": {"name": name, "labels": lab}, "spec": {"providerID": provider} if provider else {},
                "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    nodes = [obj("a", False, True), obj("b", True, True), obj("c", True, False)]
    assert node_counts(nodes) == {
        "nodes_total": 3, "nodes_ready": 2, "nodes_pay_as_you_go": 1, "nodes_spot": 2, "nodes_subscription": 0,
        "nodes_billing_unknown": 0, "nodes_pay_as_you_go_ready": 1, "nodes_spot_ready": 1}
    assert node_fact(obj("x", True, True, provider="cn-hangzhou.i-abc")).instance_id == "i-abc"
    nf = node_fact(obj("y", True, True, labels={"alibabacloud.com/ecs-instance-id": "i-lab",
                                                  "topology.kubernetes.io/zone": "cn-hangzhou-h"}))
    assert (nf.instance_id, nf.zone, nf.ready) == ("i-lab", "cn-hangzhou-h", True)


def test_timeline_does_not_count_label_less_nodes_as_pay_as_you_go():
    """Issue 12 (2): without the spot-strategy label the billing comes from DescribeClusterNodes, else unknown."""
    def obj(name, iid, labels):
        return {"metadata": {"name": name, "labels": {"alibabacloud.com/ecs-instance-id": iid, **labels}},
                "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    charge = {"node.alibabacloud.com/instance-charge-type": "PostPaid"}
    nodes = [obj("a", "i-a", charge), obj("b", "i-b", {}), obj("c", "i-c", {**charge, "node.alibabacloud.com/spot-strategy": "NoSpot"})]
    counts = node_counts(nodes)
    assert (counts["nodes_pay_as_you_go"], counts["nodes_spot"], counts["nodes_billing_unknown"]) == (1, 0, 2)
    counts = node_counts(nodes, {"i-a": "spot", "i-b": "spot"})
    assert (counts["nodes_pay_as_you_go"], counts["nodes_spot"], counts["nodes_billing_unknown"]) == (1, 2, 0)


def test_metric_sum_parses_quantities():
    assert metric_sum({"items": [{"value": "10"}, {"value": "2500m"}]}) == 12.5
    assert metric_sum({"items": []}) is None
