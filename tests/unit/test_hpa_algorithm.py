"""The HPA algorithm (sandbox.hpa.algorithm) against hand-computed cases from upstream's formulas."""

from __future__ import annotations

import pytest

from sandbox.hpa import algorithm as A
from sandbox.hpa.algorithm import Recommendation, ScaleEvent, Tolerances


# ---- quantities -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "milli"), [("10", 10000), ("500m", 500), ("1.5", 1500), ("1k", 1000000),
                                             ("0.0001", 1)])
def test_milli_value_rounds_up(text, milli):
    assert A.milli_value(text) == milli


@pytest.mark.parametrize(("milli", "text"), [(0, "0"), (10000, "10"), (3334, "3334m"), (1000000, "1k"),
                                             (2500000000, "2500k"), (1500, "1500m")])
def test_format_milli_canonical(milli, text):
    assert A.format_milli(milli) == text


# ---- tolerance ------------------------------------------------------------------------------------------------------
def test_tolerance_bounds_inclusive():
    t = Tolerances()
    assert t.is_within(0.9) and t.is_within(1.1) and t.is_within(1.0)
    assert not t.is_within(0.89) and not t.is_within(1.11)
    assert not t.is_within(float("nan"))


# ---- AverageValue (GetExternalPerPodMetricReplicas) -----------------------------------------------------------------
def test_average_value_scale_up():
    # 35 QPS over 1 replica, target 10 per pod: ratio 3.5 -> ceil(35/10) = 4; per-pod usage 35
    assert A.external_per_pod_replicas(1, 10000, [35000]) == (4, 35000, 35000)


def test_average_value_within_tolerance_keeps_status_replicas():
    # 31 QPS over 3 replicas, target 10: ratio 31/30 = 1.033 -> keep 3; per pod ceil(31000/3) = 10334m
    assert A.external_per_pod_replicas(3, 10000, [31000]) == (3, 31000, 10334)


def test_average_value_sums_all_series_and_scales_down():
    # two series 4 + 3 = 7 QPS over 4 replicas: ratio 0.175 -> ceil(7/10) = 1
    assert A.external_per_pod_replicas(4, 10000, [4000, 3000]) == (1, 7000, 1750)


def test_average_value_zero_status_replicas():
    # no replicas reported: ratio +Inf -> ceil(usage/target); per-pod usage 0 (no division by zero)
    assert A.external_per_pod_replicas(0, 10000, [25000]) == (3, 25000, 0)
    # 0/0 is NaN, never within tolerance: ceil(0/10) = 0
    assert A.external_per_pod_replicas(0, 10000, [0]) == (0, 0, 0)


# ---- Value (GetExternalMetricReplicas) ------------------------------------------------------------------------------
def test_value_target_uses_ready_pods():
    # usage 45 vs target 10: ratio 4.5, 2 ready pods -> ceil(9) = 9
    assert A.external_value_replicas(3, 10000, [45000], ready_pods=2) == (9, 45000)
    # within tolerance -> current
    assert A.external_value_replicas(3, 10000, [10500], ready_pods=2) == (3, 10500)
    # from zero replicas: ceil(ratio)
    assert A.external_value_replicas(0, 10000, [25000], ready_pods=0) == (3, 25000)


# ---- no-behavior normalization ---------------------------------------------------------------------------------------
def test_no_behavior_scale_up_limit_and_max():
    # current 1: limit max(2*1, 4) = 4 < max 10 -> ScaleUpLimit
    assert A.convert_desired_with_rules(1, 7, 1, 10) == (
        4, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
    # current 5: limit 10, max 8 -> TooManyReplicas
    assert A.convert_desired_with_rules(5, 9, 1, 8)[:2] == (8, "TooManyReplicas")
    assert A.convert_desired_with_rules(5, 0, 2, 8)[:2] == (2, "TooFewReplicas")
    assert A.convert_desired_with_rules(5, 6, 1, 8)[:2] == (6, "DesiredWithinRange")


def test_no_behavior_downscale_stabilization_window():
    hist: list[Recommendation] = []
    n, hist = A.normalize(hist, 1, 4, 1, 10, now=0)
    assert (n.replicas, n.able_reason, n.limited) == (4, "ReadyForNewScale", False)
    # load gone at t=15: recommendation 1, but 4 was recommended within the last 300 s
    n, hist = A.normalize(hist, 4, 1, 1, 10, now=15)
    assert (n.replicas, n.able_reason) == (4, "ScaleDownStabilized")
    n, hist = A.normalize(hist, 4, 1, 1, 10, now=299)
    assert n.replicas == 4
    # at t=301 the t=0 sample is older than the window; the t=15 .. t=299 samples said 1
    n, hist = A.normalize(hist, 4, 1, 1, 10, now=301)
    assert (n.replicas, n.able_reason) == (1, "ReadyForNewScale")
    # the stale sample's slot was reused, not appended
    assert len(hist) == 3


# ---- behavior ------------------------------------------------------------------------------------------------------
def test_fill_behavior_defaults():
    assert A.fill_behavior(None) is None
    b = A.fill_behavior({})
    assert b["scaleUp"] == {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                         {"type": "Percent", "value": 100, "periodSeconds": 15}]}
    assert b["scaleDown"] == {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
                              "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}
    b = A.fill_behavior({"scaleDown": {"stabilizationWindowSeconds": 60}})
    assert b["scaleDown"]["stabilizationWindowSeconds"] == 60 and b["scaleDown"]["policies"][0]["value"] == 100


def test_default_scale_up_policies_select_max():
    b = A.fill_behavior({})
    # current 1: Pods 1+4 = 5, Percent ceil(1*2) = 2 -> Max = 5
    assert A.scale_up_limit_with_rules(1, [], [], b["scaleUp"], now=0) == 5
    # current 10: Pods 14, Percent 20 -> 20
    assert A.scale_up_limit_with_rules(10, [], [], b["scaleUp"], now=0) == 20
    # 4 added 10 s ago from 1 (current 5): period start 1 -> Pods 5, Percent 2 -> 5: no more growth in this period
    ev = [ScaleEvent(4, 10)]
    assert A.scale_up_limit_with_rules(5, ev, [], b["scaleUp"], now=20) == 5
    # 16 s later the event left the 15 s period: start 5 -> max(9, 10) = 10
    assert A.scale_up_limit_with_rules(5, ev, [], b["scaleUp"], now=26) == 10


def test_select_policy_min_and_disabled():
    rules = {"selectPolicy": "Min", "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                                 {"type": "Percent", "value": 100, "periodSeconds": 15}]}
    assert A.scale_up_limit_with_rules(10, [], [], rules, 0) == 14
    assert A.scale_up_limit_with_rules(10, [], [], {"selectPolicy": "Disabled", "policies": []}, 0) == 10
    down = {"selectPolicy": "Min", "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60},
                                                {"type": "Percent", "value": 50, "periodSeconds": 60}]}
    # Min change on the way down: Pods 10-2 = 8, Percent int(10*0.5) = 5 -> max = 8
    assert A.scale_down_limit_with_rules(10, [], [], down, 0) == 8
    down["selectPolicy"] = "Max"
    assert A.scale_down_limit_with_rules(10, [], [], down, 0) == 5


def test_behavior_rate_limit_conditions():
    b = A.fill_behavior({})
    # 1 -> 9 wanted, limit 5: ScaleUpLimit
    assert A.convert_with_behavior_rate(1, 9, 1, 10, b, [], [], 0) == (
        5, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
    # limit 20 above max 10: TooManyReplicas
    assert A.convert_with_behavior_rate(10, 30, 1, 10, b, [], [], 0)[:2] == (10, "TooManyReplicas")
    # scale down policy Percent 100: may drop to 0, clamped by min: TooFewReplicas
    assert A.convert_with_behavior_rate(10, 0, 2, 10, b, [], [], 0)[:2] == (2, "TooFewReplicas")
    down = {"scaleUp": b["scaleUp"], "scaleDown": {"selectPolicy": "Max", "stabilizationWindowSeconds": 0,
                                                   "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}
    assert A.convert_with_behavior_rate(10, 2, 1, 10, down, [], [], 0)[:2] == (9, "ScaleDownLimit")
    # one pod already removed 30 s ago: period start 10 -> limit 9 = current 9: no further removal
    assert A.convert_with_behavior_rate(9, 2, 1, 10, down, [], [ScaleEvent(1, 0)], 30)[:2] == (9, "ScaleDownLimit")


def test_behavior_stabilization_windows():
    b = A.fill_behavior({"scaleUp": {"stabilizationWindowSeconds": 60}})
    hist: list[Recommendation] = []
    # a spike of 1 sample does not scale up with a 60 s up window: min over window of {initial 2, new 8} = 2
    hist = [Recommendation(2, 0)]
    n, hist = A.normalize_with_behaviors(hist, b, 2, 8, 1, 10, [], [], now=15)
    assert (n.replicas, n.able_reason) == (2, "ScaleUpStabilized")
    # the down window (300 s) keeps the highest recent recommendation when load drops
    n, hist = A.normalize_with_behaviors(hist, b, 2, 1, 1, 10, [], [], now=30)
    assert (n.replicas, n.able_reason) == (2, "ScaleDownStabilized")
    # at t=100 every older sample (0, 15, 30) left the 60 s up window: 8 is recommended as is, then the default
    # rate limit applies: max(Pods 2+4, Percent 2*2) = 6
    n, hist = A.normalize_with_behaviors(hist, b, 2, 8, 1, 10, [], [], now=100)
    assert (n.replicas, n.able_reason, n.limited, n.limited_reason) == (6, "ReadyForNewScale", True, "ScaleUpLimit")


def test_store_scale_event_reuses_outdated():
    b = A.fill_behavior({})
    up, down = A.store_scale_event(b, [], [], 1, 5, now=0)
    assert [(e.change, e.timestamp) for e in up] == [(4, 0)] and down == []
    up, down = A.store_scale_event(b, up, down, 5, 7, now=5)
    assert len(up) == 2
    up, down = A.store_scale_event(b, up, down, 7, 9, now=100)  # both older than 15 s: one slot reused
    assert len(up) == 2 and (up[-1].change, up[-1].timestamp) == (2, 100)
    up, down = A.store_scale_event(b, up, down, 9, 3, now=101)
    assert [(e.change, e.timestamp) for e in down] == [(6, 101)]
    assert A.store_scale_event(None, [], [], 1, 5, 0) == ([], [])


# ---- conditions ----------------------------------------------------------------------------------------------------
def test_condition_transition_time_only_on_flip():
    conds = A.set_condition([], "AbleToScale", "True", "SucceededGetScale", "m1", "T1")
    assert conds == [{"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale", "message": "m1",
                      "lastTransitionTime": "T1"}]
    conds = A.set_condition(conds, "AbleToScale", "True", "ReadyForNewScale", "m2", "T2")
    assert conds[0]["lastTransitionTime"] == "T1" and conds[0]["reason"] == "ReadyForNewScale"
    conds = A.set_condition(conds, "AbleToScale", "False", "FailedGetScale", "m3", "T3")
    assert conds[0]["lastTransitionTime"] == "T3"


def test_label_selector_string_like_go():
    sel = {"matchLabels": {"sls.project": "k8s-log-c1", "sls.logstore": "nginx-ingress"}}
    assert A.label_selector_string(sel) == ("&LabelSelector{MatchLabels:map[string]string{sls.logstore: nginx-ingress,"
                                            "sls.project: k8s-log-c1,},MatchExpressions:[]LabelSelectorRequirement{},}")
