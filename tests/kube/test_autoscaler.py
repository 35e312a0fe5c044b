"""The cluster-autoscaler and spot reclaim end to end, each test on a fresh sandbox (it changes cluster state).

The node pool is created through the ACK OpenAPI (the project's ``AckApi`` and the ``render_create_nodepool_request``
of the node pool step), the workload through the official Kubernetes client, reclaim notices through the admin
endpoint; waits poll with deadlines (real seconds) and nothing asserts durations.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config
from polling import wait_for  # tests/polling.py

from blocks.alibaba import AlibabaCloudCredentials
from clients.ack import AckApi
from core.spec import NodePoolSpec
from sandbox.fleet import mix
from sandbox.runner import Sandbox
from tasks.nodepool import render_create_nodepool_request

SPEED = 100.0
POOL_LABEL = "alibabacloud.com/nodepool-id"


class Env:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.info = sb.info
        creds = AlibabaCloudCredentials(access_key_id=self.info["access_key_id"],
                                        access_key_secret=self.info["access_key_secret"],
                                        region_id=self.info["region"], cs_endpoint=self.info["cs_endpoint"])
        self.ack = AckApi(creds, self.info["cluster_id"], backoff=0.05, backoff_max=0.5)
        self.api = config.new_client_from_config(self.info["kubeconfig"])
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)

    def create_pool(self, name: str, **kw: Any) -> str:
        spec = NodePoolSpec(name=name, key_pair="sandbox-key", **kw)
        return self.ack.create_node_pool(render_create_nodepool_request(spec)).nodepool_id

    def pool_nodes(self, np: str) -> list:
        return self.core.list_node(label_selector=f"{POOL_LABEL}={np}").items

    def pods(self, ns: str = "default", app: str = "serving") -> list:
        return [p for p in self.core.list_namespaced_pod(ns, label_selector=f"app={app}").items
                if p.metadata.deletion_timestamp is None]

    def events(self, reason: str, kind: str | None = None) -> list:
        return [e for e in self.core.list_event_for_all_namespaces().items
                if e.reason == reason and (kind is None or e.involved_object.kind == kind)]

    def condition(self, np: str, type_: str = "ClusterAutoscaler"):
        pool = self.ack.describe_node_pool(np)
        return next((c for c in pool.status.conditions if c.type == type_), None)

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.info["admin_endpoint"] + path,
                             headers={"Authorization": f"Bearer {self.info['admin_token']}"}, **kw)

    def close(self) -> None:
        self.api.close()


@pytest.fixture
def env(tmp_path: Path):
    sb = Sandbox(tmp_path / "sb", speed=SPEED)
    sb.start()
    e = Env(sb)
    yield e
    e.close()
    sb.stop()


FAST_SCALE_DOWN = 60.0  # simulated s: --scale-down-unneeded-time and --scale-down-delay-after-add (default 600)


@pytest.fixture
def fast_env(tmp_path: Path):
    sb = Sandbox(tmp_path / "sb", speed=SPEED, options={"timings": {
        "ca_scale_down_unneeded": FAST_SCALE_DOWN, "ca_scale_down_delay_after_add": FAST_SCALE_DOWN}})
    sb.start()
    e = Env(sb)
    yield e
    e.close()
    sb.stop()


def pool_deployment(name: str, replicas: int, container: dict) -> dict:
    """A Deployment whose pods only fit the ``inference=tensorflow`` pools."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"nodeSelector": {"inference": "tensorflow"}, "terminationGracePeriodSeconds": 5,
                     "containers": [{"image": "nginx:1.25", **container}]}}},
    }


def gpu_deployment(name: str = "serving", replicas: int = 4) -> dict:
    return pool_deployment(name, replicas, {"name": "serving", "resources": {
        "requests": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}})


def running_on_pool(env: Env, np: str, n: int) -> list | None:
    pods = env.pods()
    if len(pods) != n or any(p.status.phase != "Running" for p in pods):
        return None
    nodes = {x.metadata.name: x for x in env.pool_nodes(np)}
    if all(p.spec.node_name in nodes for p in pods):
        return pods
    return None


def pending_unschedulable(env: Env) -> list:
    out = []
    for p in env.pods():
        for c in p.status.conditions or []:
            if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
                out.append(p)
    return out


def test_scale_up_with_mix_then_scale_down_after_the_unneeded_window(env: Env):
    np = env.create_pool("elastic", max_instances=10)
    env.apps.create_namespaced_deployment("default", gpu_deployment(replicas=4))
    # no GPU node anywhere: the pods go Pending/Unschedulable first
    wait_for(lambda: len(pending_unschedulable(env)) == 4, "unschedulable pods", timeout=120)
    pods = wait_for(lambda: running_on_pool(env, np, 4), "4 pods Running on the elastic pool", timeout=180)
    nodes = env.pool_nodes(np)
    assert len(nodes) == 4
    assert all(n.metadata.labels["inference"] == "tensorflow" for n in nodes)
    assert {p.spec.node_name for p in pods} == {n.metadata.name for n in nodes}  # one GPU each
    payg = [n for n in nodes if n.metadata.labels["node.alibabacloud.com/spot-strategy"] == "NoSpot"]
    assert len(payg) == mix.on_demand_target(4, 0, 30) == 2  # 30% above base 0, ceil
    assert len(nodes) - len(payg) == 2
    triggered = env.events("TriggeredScaleUp", "Pod")
    assert triggered and all(re.fullmatch(rf"pod triggered scale-up: \[\{{{np} \d+->\d+ \(max: 10\)\}}\]", e.message)
                             for e in triggered)
    assert any(f"{np} 0->" in e.message for e in triggered)
    # launching nodes are counted as upcoming: the target never went past what the pods need
    assert max(int(m) for e in triggered for m in re.findall(r"->(\d+)", e.message)) == 4
    assert env.condition(np).reason in ("ScaledUp", "Idle")
    status = env.core.read_namespaced_config_map("cluster-autoscaler-status", "kube-system")
    assert "autoscalerStatus: Running" in status.data["status"] and np in status.data["status"]
    assert not env.events("NotTriggerScaleUp", "Pod") or all(
        e.message.startswith("pod didn't trigger scale-up:") for e in env.events("NotTriggerScaleUp", "Pod"))

    # scale the workload down: after delay-after-add and the unneeded window, the idle nodes go
    env.apps.patch_namespaced_deployment_scale("serving", "default", {"spec": {"replicas": 1}})
    wait_for(lambda: len(env.pool_nodes(np)) == 1, "the pool back to one node", timeout=180)
    assert running_on_pool(env, np, 1) or wait_for(lambda: running_on_pool(env, np, 1), "the last pod Running", timeout=120)
    pool = env.ack.describe_node_pool(np)
    assert wait_for(lambda: env.ack.describe_node_pool(np).status.total_nodes == 1, "instances released", timeout=120)
    assert pool.status.total_nodes >= 1
    scale_down = env.events("ScaleDown", "Node")
    assert any(e.message == "marked the node as toBeDeleted/unschedulable" for e in scale_down)
    assert env.condition(np).reason == "ScaledDown"


def test_max_size_reached_is_reported_on_pods_and_pool(env: Env):
    np = env.create_pool("small", max_instances=2)
    env.apps.create_namespaced_deployment("default", gpu_deployment(replicas=3))

    def two_running_one_blocked():
        pods = env.pods()
        running = [p for p in pods if p.status.phase == "Running"]
        blocked = [e for e in env.events("NotTriggerScaleUp", "Pod") if "max node group size reached" in e.message]
        return (len(running) == 2 and blocked) or None

    blocked = wait_for(two_running_one_blocked, "2 Running and a NotTriggerScaleUp", timeout=180)
    assert blocked[-1].message == "pod didn't trigger scale-up: 1 max node group size reached"
    assert len(env.pool_nodes(np)) == 2
    cond = wait_for(lambda: (c := env.condition(np)) and c.reason == "MaxSizeReached"
                    and c, "MaxSizeReached on the pool", timeout=120)
    assert cond.status == "False" and "max" in cond.message


def test_spot_reclaim_reschedules_pods_and_remedy_restores_capacity(env: Env):
    np = env.create_pool("elastic", max_instances=10, spot_instance_remedy=True)
    env.apps.create_namespaced_deployment("default", gpu_deployment(replicas=3))
    pods = wait_for(lambda: running_on_pool(env, np, 3), "3 pods Running", timeout=180)
    nodes = {n.metadata.name: n for n in env.pool_nodes(np)}
    spot = next(n for n in nodes.values() if n.metadata.labels["node.alibabacloud.com/spot-strategy"] != "NoSpot")
    victim_pod = next(p for p in pods if p.spec.node_name == spot.metadata.name)
    iid = spot.metadata.labels["alibabacloud.com/ecs-instance-id"]
    # the notice, scheduled through the faults API at "now"
    r = env.admin("PUT", "/faults", json={"reclaims": [{"at": 0, "instance_id": iid}]})
    assert r.status_code == 200, r.text

    def expired():
        n = env.core.read_node(spot.metadata.name)
        c = next((c for c in n.status.conditions if c.type == "InstanceExpired"), None)
        return c if c is not None and c.status == "True" else None

    cond = wait_for(expired, "InstanceExpired=True", timeout=60)
    assert cond.reason == "InstanceToBeTerminated"
    assert wait_for(lambda: [e for e in env.events("InstanceToBeTerminated", "Node")
                             if e.involved_object.name == spot.metadata.name],
                    "the InstanceToBeTerminated event", timeout=120)
    # remedy: a replacement is bought at the notice; the noticed node goes when the instance is released
    wait_for(lambda: spot.metadata.name not in {n.metadata.name for n in env.pool_nodes(np)},
             "the reclaimed node removed", timeout=120)
    pods = wait_for(lambda: running_on_pool(env, np, 3), "3 pods Running again", timeout=120)
    assert victim_pod.metadata.name not in {p.metadata.name for p in pods}
    assert spot.metadata.name not in {p.spec.node_name for p in pods}
    assert len(env.pool_nodes(np)) == 3
    status = env.admin("GET", "/faults").json()
    assert status["reclaims_done"] == [True]


def test_failed_scale_up_backs_off_and_is_reported(env: Env):
    # every launch of the pool's types fails: ESS reports the activity Failed, the autoscaler sets the size back
    r = env.admin("PUT", "/faults", json={"boot_failures": [{"instance_type": "ecs.gn*", "rate": 1.0}]})
    assert r.status_code == 200, r.text
    np = env.create_pool("broken", max_instances=5)
    env.apps.create_namespaced_deployment("default", gpu_deployment(replicas=2))
    failed = wait_for(lambda: env.events("FailedScaleUp", "Pod"), "FailedScaleUp on the pods", timeout=120)
    assert "InstanceLaunchFailed" in failed[0].message and "Pod is at risk of not being scheduled" in failed[0].message
    cond = wait_for(lambda: (c := env.condition(np)) and c.reason in ("ScaleUpFailed", "BackOff") and c,
                    "ScaleUpFailed/BackOff on the pool", timeout=120)
    assert cond.status == "False"
    backoff = wait_for(lambda: [
        e for e in env.events("NotTriggerScaleUp", "Pod") if "in backoff after failed scale-up" in e.message], "NotTriggerScaleUp in backoff", timeout=120)
    assert backoff[-1].message == "pod didn't trigger scale-up: 1 in backoff after failed scale-up"
    assert env.ack.describe_node_pool(np).status.total_nodes == 0
    # the fault is lifted: after the backoff the next scale-up succeeds
    assert env.admin("PUT", "/faults", content="").status_code == 200
    wait_for(lambda: running_on_pool(env, np, 2), "2 pods Running", timeout=180)


def cpu_deployment(name: str, replicas: int, cpu: str) -> dict:
    return pool_deployment(name, replicas, {"name": "web", "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}}})


def test_scale_down_respects_pod_disruption_budgets(fast_env: Env):
    env = fast_env
    policy = client.PolicyV1Api(env.api)
    clock = env.sb.ctx.clock
    # one GPU and 3820m allocatable cpu per node: the GPU pods take two nodes, then one 1500m "web" pod fits beside
    # each (not two), and once the GPU pods are gone both web pods fit on either node
    np = env.create_pool("elastic", instance_types=["ecs.gn6i-c4g1.xlarge"], max_instances=4)
    env.apps.create_namespaced_deployment("default", gpu_deployment(replicas=2))
    wait_for(lambda: running_on_pool(env, np, 2), "2 GPU pods Running on the pool", timeout=120)
    env.apps.create_namespaced_deployment("default", cpu_deployment("web", replicas=2, cpu="1500m"))

    def web_running():
        pods = env.pods(app="web")
        return pods if len(pods) == 2 and all(p.status.phase == "Running" for p in pods) else None

    webs = wait_for(web_running, "2 web pods Running", timeout=60)
    nodes = {n.metadata.name for n in env.pool_nodes(np)}
    assert len(nodes) == 2 and {p.spec.node_name for p in webs} == nodes  # one on each node
    policy.create_namespaced_pod_disruption_budget("default", {
        "metadata": {"name": "web"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})
    wait_for(lambda: (s := policy.read_namespaced_pod_disruption_budget("web", "default").status)
             and s.current_healthy == 2 and s.disruptions_allowed == 0 and s, "the PDB at 0 disruptions allowed",
             timeout=60)

    # the GPU pods go: both nodes are idle (GPU nodes are judged by GPU) and each web pod fits on the other node,
    # but the PDB allows no disruption: neither node is removed, and the pool says why
    env.apps.patch_namespaced_deployment_scale("serving", "default", {"spec": {"replicas": 0}})
    cond = wait_for(lambda: (c := env.condition(np)) and c.reason == "ScaleDownBlocked" and c,
                    "ScaleDownBlocked on the pool", timeout=120)
    assert cond.status == "False"
    m = re.fullmatch(r"node (\S+) cannot be removed: not enough pod disruption budget to move default/(web-\S+) "
                     r"\(NotEnoughPdb\); underutilized for 60s or more; 1 more node\(s\) of the pool blocked",
                     cond.message)
    assert m and m.group(1) in nodes and m.group(2) in {p.metadata.name for p in webs}, cond.message
    # twice the unneeded window later (simulated time), still both nodes, none marked, no candidate in the status
    later = clock.now() + 2 * FAST_SCALE_DOWN
    wait_for(lambda: clock.now() >= later, "two unneeded windows of simulated time", timeout=30)
    assert {n.metadata.name for n in env.pool_nodes(np)} == nodes
    assert not env.events("ScaleDown", "Node")
    assert env.condition(np).reason == "ScaleDownBlocked"
    status = yaml.safe_load(env.core.read_namespaced_config_map("cluster-autoscaler-status", "kube-system")
                            .data["status"])
    group = next(g for g in status["nodeGroups"] if g["name"] == np)
    assert group["scaleDown"]["status"] == "NoCandidates"

    # one disruption allowed: one node goes (its web pod moves to the other), the budget is spent on it
    policy.patch_namespaced_pod_disruption_budget("web", "default", {"spec": {"minAvailable": 1}})
    wait_for(lambda: len(env.pool_nodes(np)) == 1, "the pool down to one node", timeout=120)
    (kept,) = env.pool_nodes(np)
    webs = wait_for(lambda: (w := web_running()) and all(p.spec.node_name == kept.metadata.name for p in w) and w,
                    "both web pods Running on the remaining node", timeout=60)
    (removed,) = nodes - {kept.metadata.name}
    msgs = [e.message for e in env.events("ScaleDown") if e.involved_object.kind == "ConfigMap"]
    assert any(x.startswith(f"Scale-down: removing node {removed}, utilization: 0.00, pods to reschedule: default/web-")
               for x in msgs), msgs
    cond = wait_for(lambda: (c := env.condition(np)) and c.reason == "ScaledDown" and c, "ScaledDown", timeout=30)
    assert removed in cond.message
