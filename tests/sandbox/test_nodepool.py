"""The node pool step against the sandbox's ACK OpenAPI, through aliyunsdkcore over loopback sockets.

Tasks are called with ``.fn(...)``: no Prefect server is involved.
"""

from __future__ import annotations

import logging

import pytest
from polling import wait_for

from blocks.alibaba import AlibabaCloudCredentials
from clients.ack import AckApi, AckApiError
from core.spec import NodePoolSpec
from tasks.nodepool import (
    NodePoolDriftError,
    NodePoolFailedError,
    NodePoolTimeoutError,
    delete_node_pool,
    ensure_node_pool,
)

# Waits inside the tasks are bounded by these (real seconds; the sandbox runs at speed 50).
WAIT = {"timeout": 300.0, "poll_interval": 0.2, "max_poll_interval": 1.0}


@pytest.fixture(scope="module")
def info(sandbox) -> dict:
    return sandbox.info


@pytest.fixture(scope="module")
def creds(info) -> AlibabaCloudCredentials:
    return AlibabaCloudCredentials(
        access_key_id=info["access_key_id"],
        access_key_secret=info["access_key_secret"],
        region_id=info["region"],
        cs_endpoint=info["cs_endpoint"],
    )


@pytest.fixture(scope="module")
def api(creds, info) -> AckApi:
    return AckApi(creds, info["cluster_id"])


def pool_spec(name: str, **kw) -> NodePoolSpec:
    kw.setdefault("key_pair", "sandbox-key")
    return NodePoolSpec(name=name, **kw)


def ensure(spec: NodePoolSpec, creds, info):
    return ensure_node_pool.fn(spec, creds, info["cluster_id"], **WAIT)


def delete(name: str, creds, info):
    return delete_node_pool.fn(name, creds, info["cluster_id"], force=True, **WAIT)


def test_ensure_twice_gives_one_pool(creds, info, api, caplog):
    caplog.set_level(logging.DEBUG)
    password = "Sandbox-Pass-123"
    spec = pool_spec("np-idempotent", key_pair=None, login_password=password)
    first = ensure(spec, creds, info)
    assert first.created and first.state == "active" and first.nodepool_id
    assert first.spot_strategy == "SpotAsPriceGo"
    second = ensure(spec, creds, info)
    assert (second.created, second.updated_fields, second.nodepool_id) == (False, [], first.nodepool_id)
    same_name = [p for p in api.describe_node_pools("np-idempotent") if p.name == "np-idempotent"]
    assert [p.nodepool_id for p in same_name] == [first.nodepool_id]
    # what ACK stored is what the spec says
    pool = api.describe_node_pool(first.nodepool_id)
    assert pool.auto_scaling["type"] == "gpu" and pool.auto_scaling["enable"] is True
    assert pool.scaling_group["on_demand_percentage_above_base_capacity"] == 30
    assert {"key": "inference", "value": "tensorflow"} in pool.kubernetes_config["labels"]
    for secret in (password, info["access_key_secret"]):
        assert secret not in caplog.text
        assert secret not in first.model_dump_json()
    # the create task can be followed
    assert first.task_ids
    assert api.describe_task(first.task_ids[0]).state == "success"


def test_drift_in_mutable_fields_is_updated_in_place(creds, info, api):
    spec = pool_spec("np-drift", max_instances=5)
    created = ensure(spec, creds, info)
    assert created.created
    changed = pool_spec("np-drift", max_instances=7, labels={"inference": "tensorflow", "tier": "gold"})
    updated = ensure(changed, creds, info)
    assert updated.created is False and updated.nodepool_id == created.nodepool_id
    assert sorted(updated.updated_fields) == ["auto_scaling.max_instances", "kubernetes_config.labels"]
    assert updated.max_instances == 7
    pool = api.describe_node_pool(created.nodepool_id)
    assert pool.auto_scaling["max_instances"] == 7
    assert {"key": "tier", "value": "gold"} in pool.kubernetes_config["labels"]
    again = ensure(changed, creds, info)
    assert again.updated_fields == [] and again.created is False


def test_drift_in_an_immutable_field_is_refused(creds, info, api):
    spec = pool_spec("np-immutable")
    created = ensure(spec, creds, info)
    with pytest.raises(NodePoolDriftError) as err:
        ensure(pool_spec("np-immutable", auto_scaling_type="cpu", max_instances=3), creds, info)
    text = str(err.value)
    assert "auto_scaling.type" in text and "'gpu'" in text and "'cpu'" in text
    assert "node_pool.name" in text
    pool = api.describe_node_pool(created.nodepool_id)
    # refused before any change: neither the immutable field nor the mutable one moved
    assert pool.auto_scaling["type"] == "gpu" and pool.auto_scaling["max_instances"] == 10


def test_wrong_secret_is_rejected_and_never_shown(info, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "WrongSecretWrongSecretWrong123"
    bad = AlibabaCloudCredentials(
        access_key_id=info["access_key_id"],
        access_key_secret=wrong,
        region_id=info["region"],
        cs_endpoint=info["cs_endpoint"],
    )
    with pytest.raises(AckApiError) as err:
        AckApi(bad, info["cluster_id"]).describe_node_pools()
    assert err.value.code == "SignatureDoesNotMatch" and err.value.http_status == 400
    assert err.value.request_id
    with pytest.raises(AckApiError) as err2:
        ensure_node_pool.fn(pool_spec("np-never"), bad, info["cluster_id"], **WAIT)
    for e in (err.value, err2.value):
        assert wrong not in str(e) and wrong not in repr(e)
    assert wrong not in caplog.text and info["access_key_secret"] not in caplog.text


def test_unknown_access_key_id(info):
    bad = AlibabaCloudCredentials(
        access_key_id="LTAInobodyHasThisKey0000",
        access_key_secret=info["access_key_secret"],
        region_id=info["region"],
        cs_endpoint=info["cs_endpoint"],
    )
    with pytest.raises(AckApiError) as err:
        AckApi(bad, info["cluster_id"]).describe_cluster()
    assert err.value.code.startswith("InvalidAccessKeyId")
    assert info["access_key_secret"] not in str(err.value)


def test_client_errors_surface_at_once_with_the_real_code(api):
    with pytest.raises(AckApiError) as err:
        api.describe_node_pool("np00000000000000000000000000000000")
    assert err.value.not_found and err.value.code == "ErrorNodePoolNotFound"
    assert not err.value.transient


def test_delete_twice_is_fine(creds, info, api):
    created = ensure(pool_spec("np-delete"), creds, info)
    first = delete("np-delete", creds, info)
    assert first.existed and first.nodepool_id == created.nodepool_id
    assert api.find_node_pool("np-delete") is None
    second = delete("np-delete", creds, info)
    assert second.existed is False


def test_describe_nodes_pages_through_all_nodes(creds, info, api):
    result = ensure(pool_spec("np-pages", min_instances=3, max_instances=4), creds, info)
    nodes = wait_for(lambda: len(n := api.describe_nodes(result.nodepool_id)) >= 3 and n, "three nodes",
                     timeout=120, interval=0.2)
    assert len(nodes) == 3
    paged = api.describe_nodes(result.nodepool_id, page_size=2)
    assert sorted(n.instance_id for n in paged) == sorted(n.instance_id for n in nodes)
    assert {n.nodepool_id for n in paged} == {result.nodepool_id}
    assert all(n.instance_charge_type in ("PostPaid", "PrePaid") for n in paged)
    one_by_one = api.describe_nodes(result.nodepool_id, page_size=1)
    assert len({n.instance_id for n in one_by_one}) == 3
    assert delete("np-pages", creds, info).existed


def test_cluster_and_kubeconfig(api, info):
    cluster = api.describe_cluster()
    assert cluster.get("cluster_id") == info["cluster_id"]
    try:
        config, expiration = api.user_kubeconfig(minutes=15)
    except AckApiError as exc:  # the Kubernetes side of the sandbox may not be there yet
        pytest.skip(f"kubeconfig not available: {exc}")
    assert "clusters" in config and expiration


# --- failures and timeouts, on sandboxes of their own (they change stock and timings) ------------------------------
def _creds_of(sb) -> tuple[AlibabaCloudCredentials, str]:
    i = sb.info
    c = AlibabaCloudCredentials(
        access_key_id=i["access_key_id"],
        access_key_secret=i["access_key_secret"],
        region_id=i["region"],
        cs_endpoint=i["cs_endpoint"],
    )
    return c, i["cluster_id"]


def test_a_failed_task_fails_the_step_with_the_reason(fresh_sandbox):
    c, cluster_id = _creds_of(fresh_sandbox)
    fleet = fresh_sandbox.services.fleet
    for zone in fresh_sandbox.info["zones"]:
        fleet.set_spot_stock("ecs.gn6i-c4g1.xlarge", zone, 0)
    spec = pool_spec(
        "np-nostock",
        instance_types=["ecs.gn6i-c4g1.xlarge"],
        min_instances=2,
        max_instances=2,
        on_demand_percentage_above_base=0,
        compensate_with_on_demand=False,
    )
    with pytest.raises(NodePoolFailedError) as err:
        ensure_node_pool.fn(spec, c, cluster_id, **WAIT)
    assert "OperationDenied.NoStock" in str(err.value) and "np-nostock" in str(err.value)


def test_a_timeout_says_what_was_last_seen(tmp_path):
    from sandbox.runner import Sandbox

    # A pool that never leaves `initial`: a cloud that takes forever, deterministically.
    with Sandbox(tmp_path / "slow", speed=50.0, options={"timings": {"nodepool_create": 1e9}}) as sb:
        c, cluster_id = _creds_of(sb)
        with pytest.raises(NodePoolTimeoutError) as err:
            ensure_node_pool.fn(pool_spec("np-slow"), c, cluster_id, timeout=0.5, poll_interval=0.1)
        text = str(err.value)
        assert "np-slow" in text and "state=initial" in text and "total=0" in text
        assert "state=running" in text  # the create task is still running


# --- issue 12: a cluster whose CCM predates the spot-strategy label and whose node scaling is off -------------------
def test_old_ccm_labels_and_node_scaling_off(tmp_path):
    """CCM before v2.10.2 sets no ``node.alibabacloud.com/spot-strategy`` label: the mix check takes the billing from
    DescribeClusterNodes and passes; with the cluster's node scaling off a pending pod grows the pool by nothing."""
    import time

    from clients.kube import KubeClients
    from sandbox.runner import Sandbox
    from tasks.timeline import list_pool_nodes, node_counts
    from tasks.verify import Facts, check_mix, node_fact

    with Sandbox(tmp_path / "sb", speed=50.0, options={"ccm_version": "v2.9.0", "node_scaling": False}) as sb:
        c, cluster_id = _creds_of(sb)
        api = AckApi(c, cluster_id)
        spec = pool_spec("np-oldccm", instance_types=["ecs.gn6i-c4g1.xlarge"], min_instances=3, max_instances=6,
                         on_demand_percentage_above_base=30)
        pool = ensure_node_pool.fn(spec, c, cluster_id, **WAIT)
        with KubeClients.from_kubeconfig_file(sb.info["kubeconfig"]) as kube:
            nodes = wait_for(lambda: (lambda ns: ns if len(ns) == 3 else None)(list_pool_nodes(kube, pool.nodepool_id)),
                             "3 pool nodes")
            for n in nodes:
                labels = n["metadata"]["labels"]
                assert "node.alibabacloud.com/spot-strategy" not in labels
                assert labels["node.alibabacloud.com/instance-charge-type"] == "PostPaid"
            ack_nodes = api.describe_nodes(pool.nodepool_id)
            facts = Facts(collected_at="", nodepool_id=pool.nodepool_id, pods=[],
                          nodes=[node_fact(n) for n in nodes], ack_nodes=ack_nodes)
            c_mix = check_mix(facts, "spot", 0, 30, True)
            assert c_mix.passed, c_mix
            assert "3 node(s) without the CCM billing labels" in c_mix.detail
            billing = {i.instance_id: ("spot" if i.spot_strategy != "NoSpot" else "pay-as-you-go") for i in ack_nodes}
            counts = node_counts(nodes, billing)
            assert counts["nodes_billing_unknown"] == 0 and counts["nodes_spot"] == 2
            assert node_counts(nodes)["nodes_pay_as_you_go"] == 0  # never guessed from a missing label

            # node scaling off: 4 pods of 3 CPUs on three 4-CPU nodes, one stays Pending and nothing scales
            kube.apply({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "hungry", "namespace": "default"},
                "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "hungry"}},
                         "template": {"metadata": {"labels": {"app": "hungry"}},
                                      "spec": {"nodeSelector": {"alibabacloud.com/nodepool-id": pool.nodepool_id},
                                               "containers": [{"name": "c", "image": "nginx:1.25",
                                                               "resources": {"requests": {"cpu": "3"}}}]}}},
            })

            def pending():
                pods = kube.list("Pod", "default", label_selector="app=hungry").get("items") or []
                return [p for p in pods if not (p.get("spec") or {}).get("nodeName")] if len(pods) == 4 else None
            wait_for(pending, "a pending pod")
            clock = sb.ctx.clock
            start = clock.now()
            while clock.now() - start < 120:  # 12 autoscaler scan intervals of simulated time
                time.sleep(0.1)
            assert len(pending()) == 1
            assert len(api.describe_nodes(pool.nodepool_id)) == 3
            assert kube.get("ConfigMap", "cluster-autoscaler-status", "kube-system") is None
