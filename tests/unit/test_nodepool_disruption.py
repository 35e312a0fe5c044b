"""Which changes to a pool a live version runs on would disrupt it (tasks/nodepool.disruptive_changes): pure, on a
rendered CreateClusterNodePool body against a DescribeClusterNodePoolDetail-shaped answer."""

from __future__ import annotations

import json

import pytest

from core.spec import NodePoolSpec
from tasks.nodepool import (
    diff_node_pool,
    disruptive_changes,
    in_use_error_message,
    render_create_nodepool_request,
)

BASE = {"name": "np", "key_pair": "sandbox-key", "labels": {"inference": "tensorflow"}, "min_instances": 1,
        "max_instances": 4}


def pool(**kw) -> dict:
    """How ACK describes a pool created from the base spec changed by ``kw``."""
    out = json.loads(json.dumps(render_create_nodepool_request(NodePoolSpec(**{**BASE, **kw}))))
    out["nodepool_info"].update(nodepool_id="np0123456789abcdef")
    return out


def changes(nodes: int = 3, was: dict | None = None, **kw) -> list[tuple[str, str]]:
    drift = diff_node_pool(render_create_nodepool_request(NodePoolSpec(**{**BASE, **kw})), pool(**(was or {})))
    return [(d.field, d.why) for d in disruptive_changes(drift, nodes)]


def fields(*args, **kw) -> list[str]:
    return [f for f, _ in changes(*args, **kw)]


@pytest.mark.parametrize("kw", [
    {"max_instances": 6},  # raised: more room to scale out
    {"min_instances": 0},  # lowered: nodes leave only by the autoscaler's usual scale-in
    {"min_instances": 3},  # raised: ESS adds instances
    {"labels": {"inference": "tensorflow", "tier": "gold"}},  # a label added
    {"instance_types": ["ecs.gn6i-c8g1.2xlarge"]},  # new instances only
    {"vswitch_ids": ["vsw-sandbox0zone0i"]},
    {"spot_strategy": "SpotWithPriceLimit", "spot_price_limits": [{"instance_type": "ecs.gn6i-c4g1.xlarge",
                                                                   "price_limit": 2.0}]},
    {"billing": "on-demand"},
    {"system_disk_size": 200},
    {"taints": [{"key": "soft", "value": "x", "effect": "PreferNoSchedule"}]},  # soft
])
def test_changes_that_leave_the_live_pods_in_place(kw):
    drift = diff_node_pool(render_create_nodepool_request(NodePoolSpec(**{**BASE, **kw})), pool())
    assert drift.mutable and disruptive_changes(drift, 3) == []


def test_a_removed_taint_lets_more_pods_in_and_disrupts_nothing():
    assert fields(was={"taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]}) == []


def test_a_lower_max_caps_scale_out_and_below_the_current_nodes_scales_in():
    [(field, why)] = changes(nodes=3, max_instances=3)
    assert field == "auto_scaling.max_instances" and "caps" in why and "removes instances" not in why
    [(field, why)] = changes(nodes=3, max_instances=2, min_instances=1)
    assert "below the pool's 3 nodes, ESS removes instances" in why


def test_labels_removed_or_changed_are_disruptive_and_named():
    [(field, why)] = changes(labels={"inference": "tf2"})
    assert field == "kubernetes_config.labels" and "inference" in why
    assert fields(labels={}) == ["kubernetes_config.labels"]


def test_taints_added_with_no_schedule_hold_back_and_with_no_execute_evict():
    [(_, why)] = changes(taints=[{"key": "gpu", "value": "true", "effect": "NoSchedule"}])
    assert "gpu=true:NoSchedule" in why and "keep the live version's new replicas off" in why
    [(_, why)] = changes(taints=[{"key": "drain", "value": "", "effect": "NoExecute"}])
    assert "drain=:NoExecute" in why and "evict" in why
    # the same key with another effect is a new taint
    assert fields(was={"taints": [{"key": "gpu", "value": "true", "effect": "PreferNoSchedule"}]},
                  taints=[{"key": "gpu", "value": "true", "effect": "NoSchedule"}]) == ["kubernetes_config.taints"]


def test_the_message_names_every_field_with_both_values_and_says_nothing_changed():
    drift = diff_node_pool(render_create_nodepool_request(NodePoolSpec(**{
        **BASE, "max_instances": 2, "taints": [{"key": "gpu", "value": "true"}]})), pool())
    text = in_use_error_message("np", "np0123456789abcdef", disruptive_changes(drift, 3))
    assert "auto_scaling.max_instances: 4 -> 2" in text and "kubernetes_config.taints: [] -> ['gpu=true:NoSchedule']" \
        in text and "Nothing was changed" in text
