"""Node pool step, pure parts: the CreateClusterNodePool body, redaction, drift classification, the Modify body."""

from __future__ import annotations

import json

import pytest

from blocks.alibaba import AlibabaCloudCredentials
from clients.ack import AckApi, AckApiError, with_retries
from core.spec import DeploySpec, NodePoolSpec
from tasks.nodepool import (
    NodePoolDrift,
    diff_node_pool,
    drift_error_message,
    redacted,
    render_create_nodepool_request,
    render_modify_request,
)

SEED_BODY = {
    "nodepool_info": {"name": "elastic-inference", "type": "ess"},
    "scaling_group": {
        "instance_types": ["ecs.gn6i-c4g1.xlarge", "ecs.gn6i-c8g1.2xlarge", "ecs.gn7i-c8g1.2xlarge"],
        "vswitch_ids": ["vsw-sandbox0zone0h", "vsw-sandbox0zone0i"],
        "instance_charge_type": "PostPaid",
        "spot_strategy": "SpotAsPriceGo",
        "spot_instance_pools": 3,
        "spot_instance_remedy": True,
        "on_demand_base_capacity": 0,
        "on_demand_percentage_above_base_capacity": 30,
        "compensate_with_on_demand": True,
        "multi_az_policy": "COST_OPTIMIZED",
        "system_disk_category": "cloud_essd",
        "system_disk_size": 120,
    },
    "auto_scaling": {"enable": True, "min_instances": 0, "max_instances": 10, "type": "gpu"},
    "kubernetes_config": {
        "labels": [{"key": "inference", "value": "tensorflow"}],
        "taints": [],
        "runtime": "containerd",
    },
}


def spec(**kw) -> NodePoolSpec:
    return NodePoolSpec(**kw)


def test_seed_spec_renders_the_exact_body():
    body = render_create_nodepool_request(DeploySpec().node_pool)
    assert body == SEED_BODY
    json.dumps(body)  # the SDK sends it with json.dumps: every value must serialize


def test_on_demand_billing_is_nospot_without_spot_or_mix_settings():
    sg = render_create_nodepool_request(spec(billing="on-demand"))["scaling_group"]
    assert sg["spot_strategy"] == "NoSpot"
    assert sg["instance_charge_type"] == "PostPaid"
    for key in (
        "spot_price_limit",
        "spot_instance_pools",
        "spot_instance_remedy",
        "on_demand_base_capacity",
        "on_demand_percentage_above_base_capacity",
        "compensate_with_on_demand",
    ):
        assert key not in sg


def test_price_limits_are_a_list_of_string_prices_per_type():
    s = spec(
        spot_strategy="SpotWithPriceLimit",
        spot_price_limits=[
            {"instance_type": "ecs.gn6i-c4g1.xlarge", "price_limit": 0.5},
            {"instance_type": "ecs.gn7i-c8g1.2xlarge", "price_limit": 2},
        ],
    )
    sg = render_create_nodepool_request(s)["scaling_group"]
    assert sg["spot_strategy"] == "SpotWithPriceLimit"
    # alibabacloud_cs20151215 CreateClusterNodePoolRequestScalingGroupSpotPriceLimit.price_limit: str
    assert sg["spot_price_limit"] == [
        {"instance_type": "ecs.gn6i-c4g1.xlarge", "price_limit": "0.5"},
        {"instance_type": "ecs.gn7i-c8g1.2xlarge", "price_limit": "2"},
    ]


def test_price_limits_are_left_out_when_following_the_market_price():
    s = spec(spot_price_limits=[{"instance_type": "ecs.gn6i-c4g1.xlarge", "price_limit": 0.5}])
    assert "spot_price_limit" not in render_create_nodepool_request(s)["scaling_group"]


def test_taints_labels_and_login():
    s = spec(
        labels={"inference": "tensorflow", "team": "ml"},
        taints=[{"key": "dedicated", "value": "inference", "effect": "NoExecute"}, {"key": "gpu"}],
        key_pair="deploy-key",
        security_group_ids=["sg-abc"],
    )
    body = render_create_nodepool_request(s)
    assert body["kubernetes_config"]["labels"] == [
        {"key": "inference", "value": "tensorflow"},
        {"key": "team", "value": "ml"},
    ]
    assert body["kubernetes_config"]["taints"] == [
        {"key": "dedicated", "value": "inference", "effect": "NoExecute"},
        {"key": "gpu", "value": "", "effect": "NoSchedule"},
    ]
    assert body["scaling_group"]["key_pair"] == "deploy-key"
    assert "login_password" not in body["scaling_group"]
    assert body["scaling_group"]["security_group_ids"] == ["sg-abc"]


def test_password_goes_into_the_request_only_and_is_redacted_for_display():
    s = spec(login_password="Sup3r-Secret-Pw!")
    assert "Sup3r-Secret-Pw!" not in repr(s)
    body = render_create_nodepool_request(s)
    assert body["scaling_group"]["login_password"] == "Sup3r-Secret-Pw!"
    shown = redacted(body)
    assert shown["scaling_group"]["login_password"] == "******"
    assert "Sup3r-Secret-Pw!" not in json.dumps(shown)
    assert body["scaling_group"]["login_password"] == "Sup3r-Secret-Pw!"  # the original is untouched
    assert redacted(render_create_nodepool_request(spec())) == render_create_nodepool_request(spec())


# --- drift ----------------------------------------------------------------------------------------------------------
def described(body: dict, **sections) -> dict:
    """A DescribeClusterNodePoolDetail answer for a pool created from ``body`` (how ACK echoes it)."""
    out = json.loads(json.dumps(body))
    out["scaling_group"].pop("login_password", None)
    out["nodepool_info"].update(nodepool_id="np0123456789abcdef", is_default=False, region_id="cn-hangzhou")
    out["scaling_group"]["scaling_group_id"] = "asg-0123"
    out["status"] = {"state": "active", "total_nodes": 0}
    for section, values in sections.items():
        out[section].update(values)
    return out


def test_same_spec_is_in_sync_even_when_ack_reorders_labels_and_returns_numbers_as_floats():
    body = render_create_nodepool_request(spec(labels={"a": "1", "b": "2"}))
    actual = described(
        body,
        kubernetes_config={"labels": [{"key": "b", "value": "2"}, {"key": "a", "value": "1"}]},
        auto_scaling={"max_instances": 10.0},
    )
    drift = diff_node_pool(body, actual)
    assert drift.in_sync and drift.unknown == []


def test_password_is_never_compared():
    body = render_create_nodepool_request(spec(login_password="Sup3r-Secret-Pw!"))
    assert diff_node_pool(body, described(body)).in_sync


def test_mutable_changes_are_classified_and_rendered_as_a_partial_modify_body():
    old = render_create_nodepool_request(spec())
    new = render_create_nodepool_request(
        spec(
            max_instances=12, on_demand_percentage_above_base=50, labels={"inference": "tensorflow", "x": "y"}
        )
    )
    drift = diff_node_pool(new, described(old))
    assert not drift.immutable
    assert sorted(c.field for c in drift.mutable) == [
        "auto_scaling.max_instances",
        "kubernetes_config.labels",
        "scaling_group.on_demand_percentage_above_base_capacity",
    ]
    assert render_modify_request(new, drift) == {
        "auto_scaling": {"enable": True, "min_instances": 0, "max_instances": 12},
        "scaling_group": {"on_demand_percentage_above_base_capacity": 50},
        "kubernetes_config": {
            "labels": [{"key": "inference", "value": "tensorflow"}, {"key": "x", "value": "y"}]
        },
        "update_nodes": True,
    }


def test_spot_to_on_demand_is_an_in_place_change_of_the_strategy():
    drift = diff_node_pool(
        render_create_nodepool_request(spec(billing="on-demand")),
        described(render_create_nodepool_request(spec())),
    )
    assert [c.field for c in drift.mutable] == ["scaling_group.spot_strategy"]
    assert drift.mutable[0].desired == "NoSpot"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"auto_scaling_type": "cpu"}, "auto_scaling.type"),
        ({"runtime": "docker"}, "kubernetes_config.runtime"),
    ],
)
def test_immutable_changes_are_refused_with_a_message_naming_the_field(change, field):
    old = render_create_nodepool_request(spec())
    drift = diff_node_pool(render_create_nodepool_request(spec(**change)), described(old))
    assert [c.field for c in drift.immutable] == [field]
    msg = drift_error_message("elastic-inference", "np0123", drift)
    assert field in msg and "node_pool.name" in msg and "delete" in msg


def test_a_pool_of_another_type_is_immutable_drift():
    body = render_create_nodepool_request(spec())
    drift = diff_node_pool(body, described(body, nodepool_info={"type": "edge"}))
    assert [(c.field, c.actual, c.desired) for c in drift.immutable] == [
        ("nodepool_info.type", "edge", "ess")
    ]


def test_fields_ack_does_not_report_are_unknown_not_drift():
    body = render_create_nodepool_request(spec())
    actual = described(body)
    del actual["scaling_group"]["spot_instance_remedy"]
    drift = diff_node_pool(body, actual)
    assert drift.in_sync and drift.unknown == ["scaling_group.spot_instance_remedy"]


def test_taints_compare_with_the_default_effect():
    body = render_create_nodepool_request(spec(taints=[{"key": "gpu", "value": "true"}]))
    actual = described(body, kubernetes_config={"taints": [{"key": "gpu", "value": "true"}]})
    assert diff_node_pool(body, actual).in_sync
    actual = described(
        body, kubernetes_config={"taints": [{"key": "gpu", "value": "true", "effect": "NoExecute"}]}
    )
    assert [c.field for c in diff_node_pool(body, actual).mutable] == ["kubernetes_config.taints"]


def test_empty_drift_renders_an_empty_modify_body():
    assert render_modify_request(SEED_BODY, NodePoolDrift()) == {}


# --- error classification (no wire: the SDK's exception objects are translated) ------------------------------------
def test_error_classification():
    assert AckApiError("Throttling.User", "slow down", http_status=400).throttled
    assert AckApiError("ServiceUnavailable", "x", http_status=503).throttled
    assert AckApiError("TooManyRequests", "x", http_status=429).throttled
    internal = AckApiError("InternalError", "x", http_status=500)
    assert internal.transient and not internal.throttled
    assert AckApiError("SDK.HttpError", "Read timed out").transient
    assert not AckApiError("ErrorNodePoolNotFound", "x", http_status=404).transient
    text = str(
        AckApiError("ErrorCheckAcl", "denied", request_id="RID-1", http_status=403, action="DescribeX")
    )
    assert text == "DescribeX: ErrorCheckAcl: denied (HTTP 403, RequestId RID-1)"


def test_errors_never_carry_the_secret():
    secret = "s3cr3tS3cr3tS3cr3tS3cr3tS3cr3t"
    api = AckApi(
        AlibabaCloudCredentials(
            access_key_id="LTAIexample", access_key_secret=secret, cs_endpoint="http://127.0.0.1:9"
        ),
        "c0123456789abcdef",
    )
    assert secret not in repr(api)
    # Even if a server echoed it, the text we surface is scrubbed.
    assert api._scrub(f"bad signature for {secret}") == "bad signature for ******"


def test_ids_are_checked_before_they_reach_the_uri():
    creds = AlibabaCloudCredentials(access_key_id="LTAIexample", access_key_secret="x" * 30)
    with pytest.raises(ValueError, match="cluster_id"):
        AckApi(creds, "../../etc")
    api = AckApi(creds, "c0123456789abcdef")
    with pytest.raises(ValueError, match="nodepool_id"):
        api.describe_node_pool("np/../../x")


# --- the retry policy (what is retried, and how often), with the errors raised in-process -------------------------
@pytest.mark.parametrize(
    ("error", "idempotent", "calls"),
    [
        (AckApiError("Throttling.User", "slow down", http_status=400), False, 4),
        (AckApiError("ServiceUnavailable", "busy", http_status=503), False, 4),
        (AckApiError("InternalError", "oops", http_status=500), True, 4),
        (AckApiError("InternalError", "oops", http_status=500), False, 1),  # a create may have happened
        (AckApiError("SDK.HttpError", "Read timed out"), True, 4),
        (AckApiError("SDK.HttpError", "Read timed out"), False, 1),
        (AckApiError("ErrorNodePoolNotFound", "gone", http_status=404), True, 1),
        (AckApiError("InvalidParameter", "bad", http_status=400), True, 1),
    ],
)
def test_retry_policy(error, idempotent, calls):
    creds = AlibabaCloudCredentials(access_key_id="LTAIexample", access_key_secret="x" * 30)
    api = AckApi(creds, "c0123456789abcdef", max_attempts=4, backoff=0, backoff_max=0)
    seen = []

    def fail():
        seen.append(1)
        raise error

    with pytest.raises(AckApiError) as err:
        with_retries(api, fail, idempotent=idempotent)
    assert err.value is error and len(seen) == calls


def test_retry_recovers_after_throttling():
    creds = AlibabaCloudCredentials(access_key_id="LTAIexample", access_key_secret="x" * 30)
    api = AckApi(creds, "c0123456789abcdef", max_attempts=4, backoff=0, backoff_max=0)
    answers = iter([AckApiError("Throttling", "x", http_status=429), {"ok": True}])

    def call():
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    assert with_retries(api, call, idempotent=False) == {"ok": True}
