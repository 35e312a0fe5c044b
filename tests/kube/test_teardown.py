"""The teardown flow against the session sandbox: what a deploy creates is gone afterwards, also after a deploy
that stopped midway, and running it again is fine. Also: the timeline sampler reads those objects.

The objects are applied with tasks/kube exactly as the deploy renders them (tasks/plan.render_all with the real
AccessKey secret in the OSS Secret), and the pool is created with tasks/nodepool.ensure_node_pool. The flow runs on
the session's Prefect server, with blocks saved from the sandbox's sandbox.json.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import oss2
import pytest
from kubernetes import client
from polling import wait_for
from pydantic import SecretStr

from cli.sandbox_profile import credentials_from_sandbox, save_sandbox_blocks
from clients.ack import AckApi
from clients.kube import KubeClients
from core.spec import DeploySpec
from flows.teardown import TeardownFailed, objects_to_delete, teardown
from tasks.nodepool import ensure_node_pool
from tasks.plan import render_all
from tasks.rollout.state import state_name
from tasks.timeline import TimelineSampler

WAIT = {"timeout": 300.0, "poll_interval": 0.2, "max_poll_interval": 1.0}


@pytest.fixture(scope="module")
def kube(sandbox_info) -> KubeClients:
    k = KubeClients.from_kubeconfig_file(sandbox_info["kubeconfig"], backoff_s=0.05, backoff_max_s=0.2)
    yield k
    k.close()


@pytest.fixture(scope="module")
def block(sandbox_info, prefect_api) -> str:
    return save_sandbox_blocks(sandbox_info, name="teardown-" + uuid.uuid4().hex[:6])


@pytest.fixture
def spec(sandbox_info, kube) -> DeploySpec:
    suffix = uuid.uuid4().hex[:6]
    s = DeploySpec.parse({
        "cluster_id": sandbox_info["cluster_id"],
        "node_pool": {"name": f"np-td-{suffix}", "labels": {"inference": f"tf-{suffix}"}, "key_pair": "sandbox-key",
                      "max_instances": 2},
        "storage": {"pv_name": f"model-pv-{suffix}", "oss_url": sandbox_info["oss_endpoint"],
                    "bucket": f"td-{suffix}"},
        "serving": {"version": "202107141745", "namespace": f"td-{suffix}", "gpus": 1},
        "autoscaling": {"max_replicas": 2},
    })
    yield s
    core = client.CoreV1Api(kube.api_client)
    with contextlib.suppress(client.exceptions.ApiException):
        core.delete_namespace(s.names.namespace, _preload_content=False).release_conn()


def apply_all(kube: KubeClients, spec: DeploySpec, info: dict[str, Any], only: set[str] | None = None) -> list[dict]:
    manifests = render_all(spec, info["cluster_id"], info["access_key_id"], oss_url=info["oss_endpoint"],
                           access_key_secret=SecretStr(info["access_key_secret"]))
    applied = [m for m in manifests if only is None or m["kind"] in only or m["kind"] == "Namespace"]
    for m in applied:
        kube.apply(m)
    return applied


def leftovers(kube: KubeClients, spec: DeploySpec) -> list[str]:
    return [f"{kind}/{name}" for kind, name, ns, _ in objects_to_delete(spec) if kube.get(kind, name, ns) is not None]


def test_teardown_removes_everything_and_is_idempotent(kube, spec, sandbox_info, block):
    creds = credentials_from_sandbox(sandbox_info)
    applied = apply_all(kube, spec, sandbox_info)
    assert {m["kind"] for m in applied} >= {"Secret", "PersistentVolume", "PersistentVolumeClaim", "ConfigMap",
                                            "Deployment", "Service", "HorizontalPodAutoscaler", "Ingress"}
    pool = ensure_node_pool.fn(spec.node_pool, creds, sandbox_info["cluster_id"], **WAIT)
    assert len(leftovers(kube, spec)) == 8

    # the sampler reads the same objects (before teardown): no failed read, the pool's nodes counted
    sampler = TimelineSampler(kube, spec, pool.nodepool_id, interval_s=0.1)
    with sampler:
        pass
    samples = sampler.samples
    assert len(samples) >= 2 and sampler.failures == 0, [s.errors for s in samples]
    last = samples[-1]
    assert last.replicas is not None and last.pods_ready is not None
    assert last.nodes_total is not None and last.nodes_total == (last.nodes_pay_as_you_go + last.nodes_spot)

    first = teardown(spec, cluster_block=block, timeout_s=300)
    outcomes = {s.step.split("/")[0]: s.outcome for s in first.steps}
    assert outcomes == {k: "deleted" for k in (
        "Ingress", "HorizontalPodAutoscaler", "Service", "Deployment", "ConfigMap", "PersistentVolumeClaim",
        "PersistentVolume", "Secret", "NodePool")}
    assert leftovers(kube, spec) == []
    api = AckApi(creds, sandbox_info["cluster_id"])
    assert api.find_node_pool(spec.node_pool.name) is None
    sel = f"release={spec.names.release}"
    assert kube.list("Pod", spec.names.namespace, label_selector=sel)["items"] == []
    assert kube.list("ReplicaSet", spec.names.namespace, label_selector=sel)["items"] == []

    again = teardown(spec, cluster_block=block, timeout_s=300)
    assert {s.outcome for s in again.steps} == {"absent"}
    assert sandbox_info["access_key_secret"] not in first.model_dump_json() + again.model_dump_json()


def test_teardown_after_a_deploy_that_stopped_midway(kube, spec, sandbox_info, block):
    # the deploy got as far as storage: no pool, no serving objects
    apply_all(kube, spec, sandbox_info, only={"Secret", "PersistentVolume", "PersistentVolumeClaim"})
    assert sorted(leftovers(kube, spec)) == sorted(
        [f"Secret/{spec.names.oss_secret}", f"PersistentVolume/{spec.names.pv}",
         f"PersistentVolumeClaim/{spec.names.pvc}"])
    result = teardown(spec, cluster_block=block, timeout_s=300)
    by_kind = {s.step.split("/")[0]: s.outcome for s in result.steps}
    assert by_kind["Secret"] == by_kind["PersistentVolume"] == by_kind["PersistentVolumeClaim"] == "deleted"
    assert by_kind["Deployment"] == by_kind["Ingress"] == by_kind["NodePool"] == "absent"
    assert leftovers(kube, spec) == []


def test_a_failing_step_does_not_stop_the_others(kube, spec, sandbox_info, block, prefect_api):
    # a block for a cluster the sandbox does not know: no kubeconfig, no pool API; every step is named
    from blocks import AckCluster

    bad = "teardown-bad-" + uuid.uuid4().hex[:6]
    cluster = AckCluster.load(block)
    AckCluster(cluster_id="c0000000000deadbeef", credentials=cluster.credentials).save(bad, overwrite=True)
    spec = spec.model_copy(update={"cluster_id": None})
    with pytest.raises(TeardownFailed) as exc:
        teardown(spec, cluster_block=bad, timeout_s=30)
    failed = [s.step for s in exc.value.result.failed]
    assert failed == ["kubeconfig"]
    # with no cluster access nothing can show that no live version runs on the pool: it is kept
    (pool,) = [s for s in exc.value.result.steps if s.step.startswith("NodePool/")]
    assert pool.outcome == "kept" and "no cluster access" in pool.detail
    skipped = [s.step for s in exc.value.result.steps if s.outcome == "skipped"]
    assert len(skipped) == len(objects_to_delete(spec)) == 9  # every Kubernetes object, the rollout state too
    assert "kubeconfig" in str(exc.value) and sandbox_info["access_key_secret"] not in str(exc.value)


def test_teardown_fetches_its_kubeconfig_with_the_blocks_settings(kube, spec, sandbox_info, block, prefect_api):
    # teardown once asked for a fixed 60 minutes (and the public address) whatever the block said; the block's
    # lifetime is visible in ACK's `expiration` of the kubeconfig it was given
    from blocks import AckCluster

    days = "teardown-3d-" + uuid.uuid4().hex[:6]
    cluster = AckCluster.load(block)
    AckCluster(cluster_id=cluster.cluster_id, credentials=cluster.credentials, kubeconfig_minutes=4320,
               private_ip=True).save(days, overwrite=True)
    result = teardown(spec, cluster_block=days, timeout_s=300, delete_pool=False)
    assert not result.failed
    # a kubeconfig of 60 minutes fetched afterwards expires before the one the teardown was given
    _, one_hour_later = AckApi(cluster.credentials, cluster.cluster_id).user_kubeconfig(60)
    assert result.kubeconfig_expires is not None and result.kubeconfig_expires > one_hour_later


def test_teardown_of_a_version_that_does_not_serve_keeps_what_the_live_version_uses(kube, spec, sandbox_info, block):
    # v1 serves the host/path; v2 got as far as its own Deployment, Service and ConfigMap
    ensure_node_pool.fn(spec.node_pool, credentials_from_sandbox(sandbox_info), sandbox_info["cluster_id"])
    apply_all(kube, spec, sandbox_info)
    release = f"release={spec.names.release}"
    wait_for(lambda: any(p["spec"].get("nodeName") for p in kube.list("Pod", spec.names.namespace,
                                                                      label_selector=release)["items"]),
             "a v1 pod placed on the pool", timeout=300)
    v2 = spec.model_copy(update={"serving": spec.serving.model_copy(update={"version": "202107150000"})})
    apply_all(kube, v2, sandbox_info, only={"ConfigMap", "Deployment", "Service"})
    result = teardown(v2, cluster_block=block, timeout_s=300)
    outcome = {s.step.split("/")[0]: s.outcome for s in result.steps}
    assert {k for k, o in outcome.items() if o == "deleted"} == {"Deployment", "Service", "ConfigMap"}
    # each version has its own HPA (<release>-hpa): v2 never made one, so the live one's is not even in question
    assert outcome["HorizontalPodAutoscaler"] == "absent"
    assert {k for k, o in outcome.items() if o == "kept"} == {
        "Ingress", "PersistentVolumeClaim", "PersistentVolume", "Secret", "NodePool"}
    assert all("202107141745" in s.detail for s in result.steps if s.outcome == "kept")
    assert sorted(leftovers(kube, spec)) == sorted(f"{kind}/{name}" for kind, name, *_ in objects_to_delete(spec)
                                                   if name != state_name(spec))  # no rollout ran: no state
    assert AckApi(credentials_from_sandbox(sandbox_info), sandbox_info["cluster_id"]).find_node_pool(
        spec.node_pool.name) is not None
    teardown(spec, cluster_block=block, timeout_s=300)  # the live version itself, deliberately: all goes


def test_teardown_after_a_failed_run_leaves_the_live_version_alone(kube, spec, sandbox_info, block):
    apply_all(kube, spec, sandbox_info)
    before = sorted(leftovers(kube, spec))
    result = teardown(spec, cluster_block=block, timeout_s=300, keep_live=True, delete_pool=False)
    assert {s.outcome for s in result.steps} == {"kept"} and sorted(leftovers(kube, spec)) == before
    teardown(spec, cluster_block=block, timeout_s=300)


def test_teardown_deletes_its_own_releases_model_and_never_one_a_kept_release_reads(kube, spec, sandbox_info, block):
    """Issue 20 (1): each release has its own model prefix. Tearing down a version that does not serve deletes its
    model only; a teardown that keeps the live version (after a failed run) keeps the model its pods read, read from
    its pod template and model config in the cluster; the deliberate teardown of the live version deletes it."""
    creds = credentials_from_sandbox(sandbox_info)
    bucket = creds.get_oss_bucket(spec.storage.bucket)
    bucket.create_bucket()
    v2 = spec.model_copy(update={"serving": spec.serving.model_copy(update={"version": "202107150000"})})
    for s in (spec, v2):
        bucket.put_object(f"{s.names.model_oss_prefix}1/saved_model.pb", s.names.release.encode())

    def keys(s: DeploySpec) -> list[str]:
        return [o.key for o in oss2.ObjectIteratorV2(bucket, prefix=s.names.model_oss_prefix)]

    def model_step(result: Any) -> Any:
        return next(s for s in result.steps if s.step.startswith("Model/"))

    apply_all(kube, spec, sandbox_info)  # v1 serves the host and path
    apply_all(kube, v2, sandbox_info, only={"ConfigMap", "Deployment", "Service"})
    done = model_step(teardown(v2, cluster_block=block, timeout_s=300, delete_model=True, delete_pool=False))
    assert (done.outcome, done.step) == ("deleted", f"Model/oss://{spec.storage.bucket}/{v2.names.model_oss_prefix}")
    assert keys(v2) == [] and keys(spec) == [f"{spec.names.model_oss_prefix}1/saved_model.pb"]

    kept = model_step(teardown(spec, cluster_block=block, timeout_s=300, keep_live=True, delete_model=True,
                               delete_pool=False))
    assert kept.outcome == "kept" and f"{spec.names.namespace}/{spec.names.deployment} reads it" in kept.detail
    assert keys(spec) == [f"{spec.names.model_oss_prefix}1/saved_model.pb"]

    gone = model_step(teardown(spec, cluster_block=block, timeout_s=300, delete_model=True, delete_pool=False))
    assert gone.outcome == "deleted" and keys(spec) == []
