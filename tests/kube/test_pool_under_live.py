"""A rollout must not change the node pool the live version runs on in a way that disrupts it (tasks/nodepool.py):
against the session sandbox's ACK OpenAPI and API server, with a live version whose pods run on the pool, found
as the deploy finds it (tasks/live.live_usage: the live Service's pods, their nodes, the nodes' pool label).

The objects are applied exactly as the deploy renders them (tasks/plan.render_all), the pool is created with
tasks/nodepool.ensure_node_pool; tasks are called with ``.fn``.
"""

from __future__ import annotations

import contextlib
import logging
import uuid

import pytest
from kubernetes import client
from polling import wait_for
from pydantic import SecretStr

from cli.sandbox_profile import credentials_from_sandbox
from clients.ack import AckApi
from clients.kube import KubeClients
from core.spec import DeploySpec
from tasks.live import find_live_version, live_usage
from tasks.nodepool import NodePoolInUseError, delete_node_pool, ensure_node_pool, refuse_disruptive_change
from tasks.plan import render_all

WAIT = {"timeout": 300.0, "poll_interval": 0.2, "max_poll_interval": 1.0}


@pytest.fixture
def kube(kube_clients) -> KubeClients:
    return kube_clients


@pytest.fixture
def spec(sandbox_info, kube) -> DeploySpec:
    suffix = uuid.uuid4().hex[:6]
    s = DeploySpec.parse({
        "cluster_id": sandbox_info["cluster_id"],
        "node_pool": {"name": f"np-live-{suffix}", "labels": {"inference": f"tf-{suffix}"}, "key_pair": "sandbox-key",
                      "max_instances": 3},
        "storage": {"pv_name": f"model-pv-{suffix}", "oss_url": sandbox_info["oss_endpoint"],
                    "bucket": f"live-{suffix}"},
        "serving": {"version": "202107141745", "namespace": f"live-{suffix}", "gpus": 1},
        "autoscaling": {"max_replicas": 2},
    })
    yield s
    core = client.CoreV1Api(kube.api_client)
    with contextlib.suppress(client.exceptions.ApiException):
        core.delete_namespace(s.names.namespace, _preload_content=False).release_conn()
    delete_node_pool.fn(s.node_pool.name, credentials_from_sandbox(sandbox_info), sandbox_info["cluster_id"], **WAIT)


def with_pool(s: DeploySpec, **changes) -> DeploySpec:
    return s.model_copy(update={"node_pool": s.node_pool.model_copy(update=changes)})


def test_a_disruptive_change_to_the_live_versions_pool_is_refused_and_a_harmless_one_applies(
        kube, spec, sandbox_info, caplog):
    creds, cluster_id = credentials_from_sandbox(sandbox_info), sandbox_info["cluster_id"]
    api = AckApi(creds, cluster_id)
    first = ensure_node_pool.fn(spec.node_pool, creds, cluster_id, **WAIT)
    for m in render_all(spec, cluster_id, sandbox_info["access_key_id"], oss_url=sandbox_info["oss_endpoint"],
                        access_key_secret=SecretStr(sandbox_info["access_key_secret"])):
        kube.apply(m)
    release = f"release={spec.names.release}"
    wait_for(lambda: any(p["spec"].get("nodeName") for p in kube.list("Pod", spec.names.namespace,
                                                                      label_selector=release)["items"]),
             "a live pod placed on the pool", timeout=300)

    # the next run (another version, same pool) finds the live version's pool as the deploy does
    live = find_live_version.fn(kube, spec)
    assert live is not None
    pools = live_usage.fn(kube, spec, live).nodepool_ids
    assert pools == {first.nodepool_id}
    before = api.describe_node_pool(first.nodepool_id)

    # a taint on the running nodes and a lower max: refused, naming both fields, before anything changes
    from core.spec import Taint

    bad = with_pool(spec, taints=[Taint(key="dedicated", value="batch", effect="NoSchedule")], max_instances=1)
    for attempt in (lambda: refuse_disruptive_change.fn(bad.node_pool, creds, cluster_id, pools),
                    lambda: ensure_node_pool.fn(bad.node_pool, creds, cluster_id, live_nodepool_ids=pools, **WAIT)):
        with pytest.raises(NodePoolInUseError) as refused:
            attempt()
        text = str(refused.value)
        assert "kubernetes_config.taints" in text and "dedicated=batch:NoSchedule" in text
        assert "auto_scaling.max_instances: 3 -> 1" in text and "Nothing was changed" in text
    after = api.describe_node_pool(first.nodepool_id)
    assert after.kubernetes_config.get("taints") == before.kubernetes_config.get("taints")
    assert after.auto_scaling["max_instances"] == 3

    # a label changed under the live pods' node selector: refused too
    relabelled = with_pool(spec, labels={"inference": "other"})
    with pytest.raises(NodePoolInUseError, match="kubernetes_config.labels.*inference"):
        ensure_node_pool.fn(relabelled.node_pool, creds, cluster_id, live_nodepool_ids=pools, **WAIT)

    # raising max_instances leaves the live pods in place: applied, and the log says why it was allowed
    caplog.set_level(logging.INFO, logger="elastic_inference")
    raised = with_pool(spec, max_instances=5)
    refuse_disruptive_change.fn(raised.node_pool, creds, cluster_id, pools)
    done = ensure_node_pool.fn(raised.node_pool, creds, cluster_id, live_nodepool_ids=pools, **WAIT)
    assert done.updated_fields == ["auto_scaling.max_instances"] and done.max_instances == 5
    assert "runs the live version: applying only changes that leave its pods in place" in caplog.text
    assert api.describe_node_pool(first.nodepool_id).auto_scaling["max_instances"] == 5
    # the same disruptive change on a pool no live version runs on is applied as before
    moved = ensure_node_pool.fn(with_pool(raised, max_instances=4).node_pool, creds, cluster_id, **WAIT)
    assert moved.max_instances == 4
