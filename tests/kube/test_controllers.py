"""The sandbox cluster's controllers, observed through the official kubernetes client and the ACK SDK.

Nodes for every running ECS instance, Deployments -> ReplicaSets -> Pods, the scheduler (nodeSelector, GPUs,
FailedScheduling with kube-scheduler's message shape), the kubelet's pod lifecycle, the PV/PVC binder, the OSS CSI
mount check (FailedMount until the Secret holds working keys), Endpoints, and what happens when an instance goes.
Every wait polls with a deadline; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import oss2
import polling  # tests/polling.py
import pytest
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest
from kubernetes import client, config

from sandbox.controllers.runtime import ContainerSpec, ContainerState, runs_binary

GPU_TYPES = ["ecs.gn6i-c4g1.xlarge", "ecs.gn7i-c8g1.2xlarge"]
TF_IMAGE = "tensorflow/serving:1.15.0-gpu"


# ---- helpers -----------------------------------------------------------------------------------------------------
# 404s before an object exists are "not yet"
wait_for = partial(polling.wait_for, timeout=30.0, interval=0.05, tolerate=(client.exceptions.ApiException,))


def events_for(core: client.CoreV1Api, ns: str, name: str, reason: str | None = None) -> list[Any]:
    evs = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    return [e for e in evs if reason is None or e.reason == reason]


def drop(delete: Callable[..., Any], *args: Any) -> None:
    """Delete through a typed call whose answer may be a Status the typed model cannot parse: read it raw."""
    r = delete(*args, _preload_content=False)
    _ = r.data
    r.release_conn()


def cond(obj: Any, typ: str) -> Any:
    return next((c for c in (obj.status.conditions or []) if c.type == typ), None)


def pods_of(core: client.CoreV1Api, ns: str, app: str) -> list[Any]:
    return [p for p in core.list_namespaced_pod(ns, label_selector=f"app={app}").items
            if not p.metadata.deletion_timestamp]


def deployment(name: str, image: str = "nginx:1.25", replicas: int = 1, **pod_spec: Any) -> dict[str, Any]:
    labels = {"app": name}
    container = {"name": "main", "image": image, "ports": [{"containerPort": 80, "name": "http"}]}
    container.update(pod_spec.pop("container", {}))
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [container], "terminationGracePeriodSeconds": 5, **pod_spec}}},
    }


def available(apps: client.AppsV1Api, ns: str, name: str, n: int) -> Any:
    d = apps.read_namespaced_deployment(name, ns)
    ok = (d.status.available_replicas or 0) == n and (d.status.updated_replicas or 0) == n and \
        (d.status.replicas or 0) == n and d.status.observed_generation == d.metadata.generation
    return d if ok else None


class Cs:
    """ACK OpenAPI through the classic SDK (CommonRequest), as tasks/ use it."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.host = info["cs_endpoint"].split("//", 1)[1]
        self.cluster_id = info["cluster_id"]
        self.client = AcsClient(info["access_key_id"], info["access_key_secret"], info["region"], auto_retry=False)

    def call(self, method: str, uri: str, body: Any = None, query: dict | None = None, **paths: str) -> Any:
        r = CommonRequest(domain=self.host, version="2015-12-15", uri_pattern=uri, product="CS")
        r.set_protocol_type("http")
        r.set_method(method)
        r.add_path_param("ClusterId", self.cluster_id)
        for k, v in paths.items():
            r.add_path_param(k, v)
        for k, v in (query or {}).items():
            r.add_query_param(k, v)
        if body is not None:
            r.set_content_type("application/json")
            r.set_content(json.dumps(body).encode())
        return json.loads(self.client.do_action_with_exception(r))

    def nodes(self, np: str) -> list[dict[str, Any]]:
        return self.call("GET", "/clusters/[ClusterId]/nodes", query={"nodepool_id": np, "pageSize": "100"})["nodes"]


def gpu_pool(name: str) -> dict[str, Any]:
    return {
        "nodepool_info": {"name": name, "type": "ess"},
        "scaling_group": {
            "instance_types": GPU_TYPES, "vswitch_ids": ["vsw-sandbox0a", "vsw-sandbox0b"],
            "instance_charge_type": "PostPaid", "spot_strategy": "SpotAsPriceGo", "multi_az_policy": "COST_OPTIMIZED",
            "on_demand_base_capacity": 0, "on_demand_percentage_above_base_capacity": 30, "spot_instance_pools": 2,
            "compensate_with_on_demand": True, "system_disk_category": "cloud_essd", "system_disk_size": 120,
            "key_pair": "sandbox-key",
        },
        "auto_scaling": {"enable": False},
        "kubernetes_config": {"labels": [{"key": "inference", "value": "tensorflow"}],
                              "taints": [{"key": "sandbox.test/dedicated", "value": "gpu", "effect": "PreferNoSchedule"}],
                              "runtime": "containerd"},
    }


def serving(name: str, replicas: int = 1) -> dict[str, Any]:
    """Shaped like arena's TF Serving chart: the model server binary, nodeSelector, one GPU."""
    d = deployment(name, image=TF_IMAGE, replicas=replicas, nodeSelector={"inference": "tensorflow"}, container={
        "command": ["/usr/bin/tensorflow_model_server"],
        "args": ["--port=8500", "--rest_api_port=8501", "--model_config_file=/etc/config/model.conf"],
        "ports": [{"containerPort": 8500, "name": "serving"}, {"containerPort": 8501, "name": "http-serving"}],
        "resources": {"limits": {"nvidia.com/gpu": "1"}}})
    return d


@pytest.fixture(scope="module")
def cluster(sandbox, kubeconfig):
    api = config.new_client_from_config(kubeconfig)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    wait_for(lambda: len(ready_nodes(core)) >= 2, "the default pool's nodes to be Ready")
    yield core, apps
    api.close()


def ready_nodes(core: client.CoreV1Api, selector: str | None = None) -> list[Any]:
    nodes = core.list_node(label_selector=selector).items if selector else core.list_node().items
    return [n for n in nodes if getattr(cond(n, "Ready"), "status", None) == "True"]


@pytest.fixture
def elastic(tmp_path):
    """A sandbox of its own, faster, with short cloud delays (pool creation, ECS boot, spot notice)."""
    from sandbox.runner import Sandbox

    sb = Sandbox(tmp_path / "sb", speed=100.0, options={"timings": {
        "nodepool_create": 10, "ecs_create": 10, "ecs_boot": 20, "spot_reclaim_notice": 120}})
    info = sb.start()
    api = config.new_client_from_config(info["kubeconfig"])
    yield sb, info, client.CoreV1Api(api), client.AppsV1Api(api)
    api.close()
    sb.stop()


# ---- nodes -------------------------------------------------------------------------------------------------------
def test_default_pool_nodes_carry_ack_labels_capacity_and_status(cluster, sandbox_info):
    core, _ = cluster
    nodes = ready_nodes(core)
    assert len(nodes) == 2
    region, cluster_id = sandbox_info["region"], sandbox_info["cluster_id"]
    for n in nodes:
        labels = n.metadata.labels
        ip = next(a.address for a in n.status.addresses if a.type == "InternalIP")
        assert n.metadata.name == f"{region}.{ip}" and labels["kubernetes.io/hostname"] == n.metadata.name
        assert labels["kubernetes.io/os"] == "linux" and labels["kubernetes.io/arch"] == "amd64"
        assert labels["node.kubernetes.io/instance-type"] == labels["beta.kubernetes.io/instance-type"] == \
            "ecs.g7.xlarge"
        assert labels["topology.kubernetes.io/region"] == labels["failure-domain.beta.kubernetes.io/region"] == region
        assert labels["topology.kubernetes.io/zone"] in sandbox_info["zones"]
        assert labels["ack.aliyun.com"] == cluster_id
        assert labels["alibabacloud.com/nodepool-id"] == labels["node.alibabacloud.com/nodepool-id"]
        assert labels["node.alibabacloud.com/instance-charge-type"] == "PostPaid"
        assert labels["node.alibabacloud.com/spot-strategy"] == "NoSpot"
        assert n.spec.provider_id == f"{region}.{labels['alibabacloud.com/ecs-instance-id']}"
        assert n.spec.pod_cidr and not n.spec.taints
        assert n.status.capacity["cpu"] == "4" and n.status.capacity["pods"] == "64"
        assert n.status.capacity["memory"].endswith("Ki") and "ephemeral-storage" in n.status.capacity
        assert "nvidia.com/gpu" not in n.status.capacity
        assert n.status.allocatable["cpu"].endswith("m")
        types = {c.type: (c.status, c.reason) for c in n.status.conditions}
        assert types == {"MemoryPressure": ("False", "KubeletHasSufficientMemory"),
                         "DiskPressure": ("False", "KubeletHasNoDiskPressure"),
                         "PIDPressure": ("False", "KubeletHasSufficientPID"),
                         "Ready": ("True", "KubeletReady"),
                         "InstanceExpired": ("False", "InstanceNotToBeTerminated")}
        info = n.status.node_info
        assert info.kubelet_version.startswith("v1.33.") and info.kubelet_version.endswith("-aliyun.1")
        assert info.container_runtime_version.startswith("containerd://1.6.")
        assert info.os_image.startswith("Alibaba Cloud Linux 3")
        assert {a.type for a in n.status.addresses} == {"InternalIP", "Hostname"}


# ---- workloads on the default pool ---------------------------------------------------------------------------------
def test_deployment_creates_replicaset_and_pods_that_run(cluster, ns):
    core, apps = cluster
    apps.create_namespaced_deployment(ns, deployment("web", replicas=2))
    d = wait_for(lambda: available(apps, ns, "web", 2), "web to be available")
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    assert {c.type: (c.status, c.reason) for c in d.status.conditions} == {
        "Available": ("True", "MinimumReplicasAvailable"), "Progressing": ("True", "NewReplicaSetAvailable")}
    (rs,) = apps.list_namespaced_replica_set(ns).items
    h = rs.metadata.labels["pod-template-hash"]
    assert rs.metadata.name == f"web-{h}" and len(h) >= 8 and rs.spec.selector.match_labels["pod-template-hash"] == h
    assert rs.metadata.owner_references[0].kind == "Deployment" and rs.metadata.owner_references[0].controller
    assert rs.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    assert rs.status.ready_replicas == 2 and rs.status.available_replicas == 2
    pods = pods_of(core, ns, "web")
    assert len(pods) == 2
    for p in pods:
        assert p.metadata.generate_name == f"{rs.metadata.name}-" and p.metadata.owner_references[0].uid == rs.metadata.uid
        assert p.status.phase == "Running" and p.status.pod_ip and p.status.host_ip and p.status.start_time
        assert {c.type: c.status for c in p.status.conditions} == dict.fromkeys(
            ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"], "True")
        (cs,) = p.status.container_statuses
        assert cs.ready and cs.started and cs.restart_count == 0 and cs.state.running.started_at
        assert cs.image == "docker.io/library/nginx:1.25" and cs.image_id.startswith("docker.io/library/nginx@sha256:")
        assert cs.container_id.startswith("containerd://")
        assert p.status.qos_class == "BestEffort"
        reasons = [e.reason for e in sorted(events_for(core, ns, p.metadata.name), key=lambda e: e.first_timestamp)]
        assert reasons[0] == "Scheduled" and {"Pulled", "Created", "Started"} <= set(reasons)
        (created,) = events_for(core, ns, p.metadata.name, "Created")
        assert created.message == "Created container: main" and created.source.component == "kubelet"
        (sched,) = events_for(core, ns, p.metadata.name, "Scheduled")
        assert sched.message == f"Successfully assigned {ns}/{p.metadata.name} to {p.spec.node_name}"
        assert sched.source.component == "default-scheduler"
    # two replicas of one owner spread over the two nodes
    assert len({p.spec.node_name for p in pods}) == 2
    scaled = [e.message for e in events_for(core, ns, "web", "ScalingReplicaSet")]
    assert scaled == [f"Scaled up replica set {rs.metadata.name} from 0 to 2"]
    created = [e.message for e in events_for(core, ns, rs.metadata.name, "SuccessfulCreate")]
    assert sorted(created) == sorted(f"Created pod: {p.metadata.name}" for p in pods)


def test_rolling_update_replaces_every_pod_and_keeps_the_old_replicaset_at_zero(cluster, ns):
    core, apps = cluster
    apps.create_namespaced_deployment(ns, deployment("roll", replicas=3))
    wait_for(lambda: available(apps, ns, "roll", 3), "roll to be available")
    first = {p.metadata.name for p in pods_of(core, ns, "roll")}
    seen_min_available = []

    apps.patch_namespaced_deployment("roll", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "nginx:1.26"}]}}}})

    def rolled() -> Any:
        d = apps.read_namespaced_deployment("roll", ns)
        seen_min_available.append(d.status.available_replicas or 0)
        return available(apps, ns, "roll", 3)

    d = wait_for(rolled, "the rollout to finish")
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    rss = {rs.metadata.annotations["deployment.kubernetes.io/revision"]: rs
           for rs in apps.list_namespaced_replica_set(ns).items}
    assert set(rss) == {"1", "2"} and rss["1"].spec.replicas == 0 and rss["2"].spec.replicas == 3
    pods = pods_of(core, ns, "roll")
    assert len(pods) == 3 and not first & {p.metadata.name for p in pods}
    assert {p.spec.containers[0].image for p in pods} == {"nginx:1.26"}
    assert all(p.metadata.labels["pod-template-hash"] == rss["2"].metadata.labels["pod-template-hash"] for p in pods)
    # maxUnavailable 25% of 3 rounds down to 0: availability never dropped below 3 while rolling
    assert min(seen_min_available) >= 3
    msgs = [e.message for e in events_for(core, ns, "roll", "ScalingReplicaSet")]
    new, old = rss["2"].metadata.name, rss["1"].metadata.name
    assert f"Scaled up replica set {new} from 0 to 1" in msgs and f"Scaled down replica set {old} from 1 to 0" in msgs


def test_recreate_strategy_stops_old_pods_before_new_ones(cluster, ns):
    core, apps = cluster
    body = deployment("rec", replicas=2)
    body["spec"]["strategy"] = {"type": "Recreate"}
    apps.create_namespaced_deployment(ns, body)
    wait_for(lambda: available(apps, ns, "rec", 2), "rec to be available")
    apps.patch_namespaced_deployment("rec", ns, {"spec": {"template": {"metadata": {"labels": {"app": "rec",
                                                                                               "v": "2"}}}}})
    wait_for(lambda: available(apps, ns, "rec", 2), "the recreate rollout")
    msgs = [e.message for e in sorted(events_for(core, ns, "rec", "ScalingReplicaSet"),
                                      key=lambda e: (e.first_timestamp, e.metadata.creation_timestamp))]
    assert [m.split(" from ")[1] for m in msgs] == ["0 to 2", "2 to 0", "0 to 2"]


def test_scale_subresource_adds_and_removes_pods(cluster, ns):
    core, apps = cluster
    apps.create_namespaced_deployment(ns, deployment("sc", replicas=1))
    wait_for(lambda: available(apps, ns, "sc", 1), "sc to be available")
    apps.patch_namespaced_deployment_scale("sc", ns, {"spec": {"replicas": 4}})
    wait_for(lambda: available(apps, ns, "sc", 4), "4 replicas")
    assert len(pods_of(core, ns, "sc")) == 4
    apps.replace_namespaced_deployment_scale("sc", ns, {"metadata": {"name": "sc", "namespace": ns},
                                                        "spec": {"replicas": 2}})
    wait_for(lambda: available(apps, ns, "sc", 2) and len(pods_of(core, ns, "sc")) == 2, "2 replicas")
    assert apps.read_namespaced_deployment_scale("sc", ns).status.replicas == 2
    (rs,) = apps.list_namespaced_replica_set(ns).items
    deleted = events_for(core, ns, rs.metadata.name, "SuccessfulDelete")
    assert len(deleted) == 2 and all(e.message.startswith("Deleted pod: sc-") for e in deleted)
    # a deleted pod is stopped by its kubelet (Killing) before it goes
    victim = deleted[0].message.split(": ", 1)[1]
    assert [e.message for e in events_for(core, ns, victim, "Killing")] == ["Stopping container main"]


def test_deleting_a_deployment_collects_its_replicasets_and_pods(cluster, ns):
    core, apps = cluster
    apps.create_namespaced_deployment(ns, deployment("gone", replicas=2))
    wait_for(lambda: available(apps, ns, "gone", 2), "gone to be available")
    apps.delete_namespaced_deployment("gone", ns, body={"propagationPolicy": "Background"})
    wait_for(lambda: not apps.list_namespaced_replica_set(ns).items, "the ReplicaSet to be collected")
    wait_for(lambda: not core.list_namespaced_pod(ns).items, "the pods to be gone")


def test_pod_without_owner_runs_and_its_logs_come_from_the_runtime(cluster, sandbox, ns):
    core, _ = cluster
    core.create_namespaced_pod(ns, {"metadata": {"name": "solo"}, "spec": {"containers": [
        {"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"],
         "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}}]}})
    p = wait_for(lambda: (lambda x: x if x.status.phase == "Running" and cond(x, "Ready").status == "True" else None)(
        core.read_namespaced_pod("solo", ns)), "solo to run")
    assert p.status.qos_class == "Guaranteed"
    pulled = events_for(core, ns, "solo", "Pulled")
    assert pulled, "no Pulled event"
    msg = pulled[0].message
    assert msg.startswith('Successfully pulled image "busybox:1.36" in ') and "including waiting). Image size: " in msg \
        or msg == 'Container image "busybox:1.36" already present on machine'
    assert sandbox.services.controllers.logs(ns, "solo", "c") == ""


# ---- the scheduler, node pools and GPUs ----------------------------------------------------------------------------
def test_gpu_serving_waits_for_a_labelled_pool_then_lands_only_there(elastic):
    sb, info, core, apps = elastic
    ns = "default"
    wait_for(lambda: len(ready_nodes(core)) == 2, "the default pool's nodes")
    apps.create_namespaced_deployment(ns, serving("tf"))
    (pod,) = wait_for(lambda: pods_of(core, ns, "tf"), "the serving pod")
    name = pod.metadata.name
    want = ("0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. "
            "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")
    p = wait_for(lambda: (lambda x: x if cond(x, "PodScheduled") else None)(core.read_namespaced_pod(name, ns)),
                 "PodScheduled")
    c = cond(p, "PodScheduled")
    assert (c.status, c.reason, c.message) == ("False", "Unschedulable", want) and p.status.phase == "Pending"
    (ev,) = wait_for(lambda: events_for(core, ns, name, "FailedScheduling"), "FailedScheduling")
    assert ev.type == "Warning" and ev.message == want and ev.source.component == "default-scheduler"
    d = wait_for(lambda: (lambda x: x if cond(x, "Available") else None)(apps.read_namespaced_deployment("tf", ns)),
                 "the Deployment's Available condition")
    assert cond(d, "Available").status == "False" and cond(d, "Available").reason == "MinimumReplicasUnavailable"

    # a GPU pool labelled inference=tensorflow, scaled by hand
    cs = Cs(info)
    np = cs.call("POST", "/clusters/[ClusterId]/nodepools", gpu_pool("gpu-elastic"))["nodepool_id"]
    wait_for(lambda: cs.call("GET", "/clusters/[ClusterId]/nodepools/[NP]", NP=np)["status"]["state"] == "active",
             "the pool to be active")
    cs.call("POST", "/clusters/[ClusterId]/nodepools/[NP]", {"count": 2}, NP=np)
    gpu_nodes = wait_for(lambda: (lambda ns_: ns_ if len(ns_) == 2 else None)(
        ready_nodes(core, f"alibabacloud.com/nodepool-id={np}")), "two Ready GPU nodes")
    described = {n["node_name"]: n for n in cs.nodes(np)}
    for n in gpu_nodes:
        labels = n.metadata.labels
        assert labels["inference"] == "tensorflow" and labels["node.alibabacloud.com/nodepool-id"] == np
        ack = described[n.metadata.name]
        assert labels["node.alibabacloud.com/instance-charge-type"] == ack["instance_charge_type"]
        assert labels["node.alibabacloud.com/spot-strategy"] == ack["spot_strategy"]
        assert labels["node.kubernetes.io/instance-type"] == ack["instance_type"]
        assert n.spec.provider_id == f"{info['region']}.{ack['instance_id']}"
        assert n.status.capacity["nvidia.com/gpu"] == "1" and n.status.allocatable["nvidia.com/gpu"] == "1"
        assert labels["aliyun.accelerator/nvidia_count"] == "1" and labels["aliyun.accelerator/nvidia_name"]
        assert [(t.key, t.value, t.effect) for t in n.spec.taints] == [
            ("sandbox.test/dedicated", "gpu", "PreferNoSchedule")]
    assert sorted(labels["node.alibabacloud.com/spot-strategy"] for labels in
                  (n.metadata.labels for n in gpu_nodes)) == ["NoSpot", "SpotAsPriceGo"]  # 30 % of 2 -> 1 PAYG

    # the pending pod is scheduled on one of them and the Deployment becomes Available
    wait_for(lambda: available(apps, ns, "tf", 1), "tf to be available", timeout=60)
    (pod,) = pods_of(core, ns, "tf")
    assert pod.spec.node_name in {n.metadata.name for n in gpu_nodes}
    pulled = events_for(core, ns, pod.metadata.name, "Pulled")[0].message
    assert pulled.startswith(f'Successfully pulled image "{TF_IMAGE}" in ') and pulled.endswith(
        "Image size: 1745000000 bytes.")

    # three replicas on two one-GPU nodes: the third waits with the Insufficient message
    apps.patch_namespaced_deployment_scale("tf", ns, {"spec": {"replicas": 3}})
    want3 = ("0/4 nodes are available: 2 Insufficient nvidia.com/gpu, 2 node(s) didn't match Pod's node "
             "affinity/selector. preemption: 0/4 nodes are available: 2 No preemption victims found for incoming "
             "pod, 2 Preemption is not helpful for scheduling.")

    def third_pending() -> Any:
        pods = pods_of(core, ns, "tf")
        pending = [p for p in pods if not p.spec.node_name and cond(p, "PodScheduled")]
        running = [p for p in pods if p.status.phase == "Running"]
        return pending if len(running) == 2 and len(pending) == 1 else None

    (pending,) = wait_for(third_pending, "two running replicas and one pending", timeout=60)
    assert cond(pending, "PodScheduled").message == want3
    assert len({p.spec.node_name for p in pods_of(core, ns, "tf") if p.spec.node_name}) == 2

    # a spot reclaim notice marks the node; when the instance goes, the node and its pod go
    spot = next(n for n in gpu_nodes if n.metadata.labels["node.alibabacloud.com/spot-strategy"] != "NoSpot")
    fleet = sb.services.fleet
    fleet.reclaim(spot.metadata.labels["alibabacloud.com/ecs-instance-id"])
    marked = wait_for(lambda: (lambda n: n if cond(n, "InstanceExpired").status == "True" else None)(
        core.read_node(spot.metadata.name)), "InstanceExpired=True")
    assert cond(marked, "InstanceExpired").reason == "InstanceToBeTerminated"
    assert events_for(core, "default", spot.metadata.name, "InstanceToBeTerminated")
    victim = next(p.metadata.name for p in pods_of(core, ns, "tf") if p.spec.node_name == spot.metadata.name)
    wait_for(lambda: spot.metadata.name not in {n.metadata.name for n in core.list_node().items},
             "the reclaimed node to be removed", timeout=60)
    wait_for(lambda: victim not in {p.metadata.name for p in core.list_namespaced_pod(ns).items},
             "the reclaimed node's pod to be deleted")
    # ESS keeps the group at its desired capacity (2): a replacement instance joins by itself and takes the
    # reclaimed node's replica; the third replica still waits. (ACK DeleteClusterNodes: "If a node pool has the
    # Expected Nodes parameter configured, the node pool automatically scales other ECS instances to maintain the
    # expected number of nodes.")
    replacement = wait_for(lambda: (lambda ns_: ns_ if len(ns_) == 2 else None)(
        ready_nodes(core, f"alibabacloud.com/nodepool-id={np}")), "a replacement GPU node", timeout=60)
    assert spot.metadata.name not in {n.metadata.name for n in replacement}
    (pending,) = wait_for(third_pending, "two replicas running again and one pending", timeout=60)
    assert cond(pending, "PodScheduled").reason == "Unschedulable"
    # a node bought by hand (scale adds to the desired size) runs the third
    cs.call("POST", "/clusters/[ClusterId]/nodepools/[NP]", {"count": 1}, NP=np)
    wait_for(lambda: len([p for p in pods_of(core, ns, "tf") if p.status.phase == "Running"]) == 3,
             "three replicas running", timeout=60)
    assert len(ready_nodes(core, f"alibabacloud.com/nodepool-id={np}")) == 3
    assert all(p.spec.node_name != spot.metadata.name for p in pods_of(core, ns, "tf"))


def test_taints_tolerations_and_node_affinity(cluster, sandbox, ns):
    core, _ = cluster
    nodes = sorted(n.metadata.name for n in ready_nodes(core))
    # required node affinity with NotIn pins the pod to the other node; an unmatched In keeps it pending
    core.create_namespaced_pod(ns, {"metadata": {"name": "aff"}, "spec": {
        "containers": [{"name": "c", "image": "nginx:1.25"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [nodes[0]]},
                                  {"key": "node.alibabacloud.com/spot-strategy", "operator": "Exists"}]}]}}}}})
    p = wait_for(lambda: (lambda x: x if x.spec.node_name else None)(core.read_namespaced_pod("aff", ns)), "aff")
    assert p.spec.node_name == nodes[1]
    core.create_namespaced_pod(ns, {"metadata": {"name": "nope"}, "spec": {
        "containers": [{"name": "c", "image": "nginx:1.25", "resources": {"requests": {"cpu": "64"}}}]}})
    p = wait_for(lambda: (lambda x: x if cond(x, "PodScheduled") else None)(core.read_namespaced_pod("nope", ns)),
                 "nope to be judged")
    assert cond(p, "PodScheduled").message == (
        "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: "
        "2 No preemption victims found for incoming pod.")


# ---- volumes -----------------------------------------------------------------------------------------------------
def _pv(name: str, bucket: str, info: dict[str, Any], secret: str | None, ns: str, **attrs: str) -> dict[str, Any]:
    csi: dict[str, Any] = {"driver": "ossplugin.csi.alibabacloud.com", "volumeHandle": name,
                           "volumeAttributes": {"bucket": bucket, "url": info["oss_endpoint"], "path": "/models",
                                                "otherOpts": "-o max_stat_cache_size=0 -o allow_other", **attrs}}
    if secret:
        csi["nodePublishSecretRef"] = {"name": secret, "namespace": ns}
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadOnlyMany"],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "", "csi": csi}}


def _pvc(name: str, pv: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "5Gi"}},
                            "storageClassName": ""}
    if pv:
        spec["volumeName"] = pv
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
def bucket(sandbox_info):
    b = oss2.Bucket(oss2.Auth(sandbox_info["access_key_id"], sandbox_info["access_key_secret"]),
                    sandbox_info["oss_endpoint"], f"models-{uuid.uuid4().hex[:10]}")
    b.create_bucket()
    return b.bucket_name


def test_static_pv_and_pvc_bind_and_an_unmatched_claim_waits(cluster, sandbox_info, bucket, ns):
    core, _ = cluster
    pv = f"pv-{ns}"
    core.create_persistent_volume(_pv(pv, bucket, sandbox_info, None, ns, authType="public"))
    core.create_namespaced_persistent_volume_claim(ns, _pvc("model", pv))
    claim = wait_for(lambda: (lambda c: c if c.status.phase == "Bound" else None)(
        core.read_namespaced_persistent_volume_claim("model", ns)), "the claim to bind")
    assert claim.status.capacity == {"storage": "5Gi"} and claim.status.access_modes == ["ReadOnlyMany"]
    assert claim.metadata.annotations["pv.kubernetes.io/bind-completed"] == "yes"
    vol = core.read_persistent_volume(pv)
    assert vol.status.phase == "Bound"
    assert (vol.spec.claim_ref.namespace, vol.spec.claim_ref.name, vol.spec.claim_ref.uid) == (
        ns, "model", claim.metadata.uid)
    # no PV for this one: Pending with the binder's warning, and a pod using it is unschedulable (its access mode
    # is one no PV of these tests offers: an unbound claim takes any matching PV that appears, as upstream's does)
    orphan = _pvc("orphan", None)
    orphan["spec"]["accessModes"] = ["ReadWriteOncePod"]
    core.create_namespaced_persistent_volume_claim(ns, orphan)
    ev = wait_for(lambda: events_for(core, ns, "orphan", "FailedBinding"), "FailedBinding")
    assert ev[0].message == "no persistent volumes available for this claim and no storage class is set"
    assert ev[0].source.component == "persistentvolume-controller"
    assert core.read_namespaced_persistent_volume_claim("orphan", ns).status.phase == "Pending"
    core.create_namespaced_pod(ns, {"metadata": {"name": "needs-orphan"}, "spec": {
        "containers": [{"name": "c", "image": "nginx:1.25"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "orphan"}}]}})
    p = wait_for(lambda: (lambda x: x if cond(x, "PodScheduled") else None)(
        core.read_namespaced_pod("needs-orphan", ns)), "the pod to be judged")
    assert cond(p, "PodScheduled").message == (
        "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. "
        "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")
    drop(core.delete_namespaced_persistent_volume_claim, "orphan", ns)
    drop(core.delete_persistent_volume, pv)


def test_wrong_oss_key_leaves_the_pod_creating_until_the_secret_is_fixed(cluster, sandbox, sandbox_info, bucket, ns):
    core, apps = cluster
    pv = f"model-csi-pv-{ns}"
    core.create_namespaced_secret(ns, {"metadata": {"name": "oss-secret"}, "stringData": {
        "akId": sandbox_info["access_key_id"], "akSecret": "not-the-secret"}})
    core.create_persistent_volume(_pv(pv, bucket, sandbox_info, "oss-secret", ns))
    core.create_namespaced_persistent_volume_claim(ns, _pvc("model-pvc", pv))
    body = deployment("mnt", volumes=[{"name": "model", "persistentVolumeClaim": {"claimName": "model-pvc"}}],
                      container={"volumeMounts": [{"name": "model", "mountPath": "/models"}]})
    apps.create_namespaced_deployment(ns, body)
    def state() -> Any:
        return {"pvc": core.read_namespaced_persistent_volume_claim("model-pvc", ns).status.phase,
                "pv": core.read_persistent_volume(pv).status.phase,
                "pods": [(p.metadata.name, p.spec.node_name, [(c.type, c.status, c.message) for c in
                                                              p.status.conditions or []])
                         for p in core.list_namespaced_pod(ns).items],
                "events": [(e.involved_object.name, e.reason, e.message) for e in
                           core.list_namespaced_event(ns).items]}

    (pod,) = wait_for(lambda: [p for p in pods_of(core, ns, "mnt") if p.spec.node_name], "the pod to be scheduled",
                      state=state)
    name = pod.metadata.name
    ev = wait_for(lambda: events_for(core, ns, name, "FailedMount"), "FailedMount")[0]
    host = sandbox_info["oss_endpoint"].split("//", 1)[1]
    assert ev.type == "Warning" and ev.source.component == "kubelet"
    assert ev.message == (f'MountVolume.SetUp failed for volume "{pv}" : rpc error: code = Unknown desc = Create OSS '
                          f"volume fail: ossfs exited with error: invalid credentials(host={host}) - result of "
                          "checking service.")
    p = core.read_namespaced_pod(name, ns)
    assert p.status.phase == "Pending" and p.status.container_statuses[0].state.waiting.reason == "ContainerCreating"
    assert not events_for(core, ns, name, "Started")
    # fix the key (data, base64, as kubectl would write it): the kubelet's next retry mounts it and the pod starts
    core.patch_namespaced_secret("oss-secret", ns, {"stringData": None, "data": {
        "akId": base64.b64encode(sandbox_info["access_key_id"].encode()).decode(),
        "akSecret": base64.b64encode(sandbox_info["access_key_secret"].encode()).decode()}})
    wait_for(lambda: available(apps, ns, "mnt", 1), "mnt to be available", timeout=60)
    vols = sandbox.services.controllers.volumes_of(ns, name)
    assert vols["model"].kind == "oss" and vols["model"].bucket == bucket and vols["model"].path == "/models"
    assert vols["model"].pv == pv and vols["model"].pvc == "model-pvc"
    apps.delete_namespaced_deployment("mnt", ns)
    drop(core.delete_persistent_volume, pv)


def test_missing_bucket_and_missing_secret_fail_the_mount(cluster, sandbox_info, ns):
    core, _ = cluster
    for pv, secret, want in (
        (f"nobucket-{ns}", None, "bucket not found("),
        (f"nosecret-{ns}", "absent", f"kubernetes.io/csi: failed to find the secret absent in the namespace {ns} "
                                     'with error: secrets "absent" not found'),
    ):
        attrs = {"authType": "rrsa", "roleName": "oss-reader"} if secret is None else {}
        core.create_persistent_volume(_pv(pv, f"no-such-{uuid.uuid4().hex[:8]}", sandbox_info, secret, ns, **attrs))
        core.create_namespaced_persistent_volume_claim(ns, _pvc(pv, pv))
        core.create_namespaced_pod(ns, {"metadata": {"name": pv}, "spec": {
            "containers": [{"name": "c", "image": "nginx:1.25"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": pv}}]}})
        ev = wait_for(lambda pv=pv: events_for(core, ns, pv, "FailedMount"), f"FailedMount for {pv}")[0]
        assert ev.message.startswith(f'MountVolume.SetUp failed for volume "{pv}" : ') and want in ev.message
        core.delete_namespaced_pod(pv, ns)
        drop(core.delete_persistent_volume, pv)


# ---- endpoints and the runtime seam --------------------------------------------------------------------------------
class FlipHandle:
    def __init__(self, spec: ContainerSpec, rt: FlipRuntime) -> None:
        self.spec, self.rt = spec, rt

    def state(self) -> ContainerState:
        if self.spec.pod_name in self.rt.exit:
            return ContainerState(ready=False, exit_code=1, reason="Error", message="model not found")
        ready = self.spec.pod_name not in self.rt.unready
        return ContainerState(ready=ready, message="" if ready else "HTTP probe failed with statuscode: 503")

    def logs(self) -> str:
        return f"serving {self.spec.argv} on {self.spec.pod_ip}\n"

    async def stop(self) -> None:
        self.rt.stopped.append(self.spec.pod_name)


class FlipRuntime:
    """A test runtime claiming containers that run ``flip-server``; tests flip their readiness and exits."""

    name = "flip"

    def __init__(self) -> None:
        self.unready: set[str] = set()
        self.exit: set[str] = set()
        self.stopped: list[str] = []

    def claims(self, pod: dict[str, Any], container: dict[str, Any]) -> bool:
        return runs_binary(container, "flip-server")

    def start(self, spec: ContainerSpec) -> FlipHandle:
        return FlipHandle(spec, self)


@pytest.fixture
def flip(sandbox):
    rt = FlipRuntime()
    registry = sandbox.services.controllers.runtimes
    registry.register(rt, first=True)
    yield rt
    registry.unregister("flip")


def _poke(sandbox) -> None:
    """Tell the kubelet that a runtime changed (from the sandbox's loop, as a runtime would)."""
    loop = sandbox._loop
    loop.call_soon_threadsafe(sandbox.services.controllers.runtimes.changed)
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)


def test_endpoints_follow_readiness_reported_by_a_runtime(cluster, sandbox, flip, ns):
    core, apps = cluster
    body = deployment("ep", replicas=2, container={"command": ["/bin/flip-server"], "args": ["--port=80"],
                                                   "readinessProbe": {"httpGet": {"path": "/", "port": 80}}})
    apps.create_namespaced_deployment(ns, body)
    core.create_namespaced_service(ns, {"metadata": {"name": "ep"}, "spec": {
        "selector": {"app": "ep"}, "ports": [{"name": "web", "port": 8080, "targetPort": "http"}]}})
    wait_for(lambda: available(apps, ns, "ep", 2), "ep to be available")

    def endpoints() -> tuple[set[str], set[str]]:
        e = core.read_namespaced_endpoints("ep", ns)
        ready, unready = set(), set()
        for s in e.subsets or []:
            assert [(p.name, p.port, p.protocol) for p in s.ports] == [("web", 80, "TCP")]
            ready |= {a.target_ref.name for a in s.addresses or []}
            unready |= {a.target_ref.name for a in s.not_ready_addresses or []}
        return ready, unready

    pods = sorted(p.metadata.name for p in pods_of(core, ns, "ep"))
    wait_for(lambda: endpoints() == (set(pods), set()), "both pods ready in the Endpoints")
    assert sandbox.services.controllers.logs(ns, pods[0], "main").startswith(
        "serving ['/bin/flip-server', '--port=80'] on 172.20.")
    flip.unready.add(pods[0])
    _poke(sandbox)
    wait_for(lambda: endpoints() == ({pods[1]}, {pods[0]}), "the unready pod to move to notReadyAddresses")
    assert events_for(core, ns, pods[0], "Unhealthy")[0].message == \
        "Readiness probe failed: HTTP probe failed with statuscode: 503"
    d = wait_for(lambda: (lambda x: x if (x.status.available_replicas or 0) == 1 else None)(
        apps.read_namespaced_deployment("ep", ns)), "the deployment to count one available")
    # maxUnavailable 25% of 2 rounds down to 0: one unready replica makes the Deployment unavailable
    assert (cond(d, "Available").status, cond(d, "Available").reason) == ("False", "MinimumReplicasUnavailable")
    flip.unready.discard(pods[0])
    _poke(sandbox)
    wait_for(lambda: endpoints() == (set(pods), set()), "the pod to come back")
    # a container that exits is restarted after CrashLoopBackOff
    flip.exit.add(pods[1])
    _poke(sandbox)
    p = wait_for(lambda: (lambda x: x if x.status.container_statuses[0].last_state.terminated else None)(
        core.read_namespaced_pod(pods[1], ns)), "the container to be terminated")
    assert p.status.container_statuses[0].last_state.terminated.exit_code == 1
    assert events_for(core, ns, pods[1], "BackOff")
    flip.exit.discard(pods[1])
    wait_for(lambda: core.read_namespaced_pod(pods[1], ns).status.container_statuses[0].restart_count == 1
             and core.read_namespaced_pod(pods[1], ns).status.container_statuses[0].ready, "the restart")
    apps.delete_namespaced_deployment("ep", ns)
    wait_for(lambda: not pods_of(core, ns, "ep") and not core.list_namespaced_pod(ns).items, "the pods to go")
    assert set(pods) <= set(flip.stopped)
    drop(core.delete_namespaced_service, "ep", ns)
    wait_for(lambda: not core.list_namespaced_endpoints(ns).items, "the Endpoints to be deleted")
