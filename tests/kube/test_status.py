"""`status` on the session sandbox: two versions of a serving (Deployments with arena's labels, Services and HPAs as
the deploy renders them), the main Ingress on v1 and a canary Ingress for v2 at weight 30, created with the
kubernetes client; then tasks.status.read_status, the status flow (with its artifact) and `elastic-inference
status` in a subprocess read them back. Real traffic through the sandbox's ingress shows up as the main route's
QPS in the external metrics API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from polling import wait_for

from core.spec import DeploySpec
from tasks.autoscaling import render_hpa
from tasks.ingress import render_ingress
from tasks.rollout.canary import render_canary_hpa, render_canary_ingress
from tasks.serving import chart_labels, render_service, selector
from tasks.status import ServiceStatus, read_status

REPO = Path(__file__).resolve().parents[2]
V1, V2 = "202601010000", "202602020000"


def spec_data(sandbox_info: dict[str, Any], ns: str, version: str, min_replicas: int) -> dict[str, Any]:
    return {"cluster_id": sandbox_info["cluster_id"],
            "serving": {"name": "bert-tfserving", "version": version, "namespace": ns},
            "ingress": {"host": f"{ns}.example.com", "path": "/"},
            # a target no test traffic reaches: the HPAs keep the replicas at their minimum
            "autoscaling": {"min_replicas": min_replicas, "max_replicas": 5, "target_qps": 100000}}


def deployment(spec: DeploySpec, replicas: int) -> dict[str, Any]:
    """A Deployment named and labelled as arena's chart does, running a plain container (no model needed)."""
    labels = chart_labels(spec)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": spec.names.deployment, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": selector(spec)},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "serving", "image": "nginx:1.25", "ports": [{"containerPort": 8501}]}]}}}}


@pytest.fixture
def rollout(sandbox_info, ns, apps, core, api_client) -> tuple[DeploySpec, DeploySpec]:
    """v1 live (2 replicas, HPA min 2), v2 a canary at weight 30 (1 replica, its canary HPA on the main route)."""
    v1 = DeploySpec.parse(spec_data(sandbox_info, ns, V1, 2))
    v2 = DeploySpec.parse(spec_data(sandbox_info, ns, V2, 1))
    auto, net = client.AutoscalingV2Api(api_client), client.NetworkingV1Api(api_client)
    for s, replicas in ((v1, 2), (v2, 1)):
        apps.create_namespaced_deployment(ns, deployment(s, replicas))
        core.create_namespaced_service(ns, render_service(s))
    auto.create_namespaced_horizontal_pod_autoscaler(ns, render_hpa(v1))
    main_route = f"{ns}-{v1.names.service}-8501"
    auto.create_namespaced_horizontal_pod_autoscaler(ns, render_canary_hpa(v2, main_route, 30))
    net.create_namespaced_ingress(ns, render_ingress(v1))
    canary = render_canary_ingress(v2, 30, render_ingress(v1))
    canary["metadata"]["name"] = "named-by-hand"  # found by its annotations, class, host and path, not its name
    net.create_namespaced_ingress(ns, canary)

    def settled() -> bool:
        deps = {d.metadata.name: d.status.ready_replicas for d in apps.list_namespaced_deployment(ns).items}
        hpas = {h.spec.scale_target_ref.name: h.status.current_replicas
                for h in auto.list_namespaced_horizontal_pod_autoscaler(ns).items}
        want = {v1.names.deployment: 2, v2.names.deployment: 1}
        return deps == want and hpas == want

    wait_for(settled, "both versions ready and their HPAs reporting", timeout=120,
             state=lambda: [(d.metadata.name, d.status.ready_replicas) for d in apps.list_namespaced_deployment(ns).items])
    return v1, v2


def check_status(s: ServiceStatus, v1: DeploySpec, v2: DeploySpec) -> None:
    ns = v1.names.namespace
    assert (s.live.ingress, s.live.service, s.live.serving_version) == ("bert-tfserving", v1.names.service, V1)
    c = s.canary
    assert (c.ingress, c.service, c.version, c.weight, c.header, c.header_value) == (
        "named-by-hand", v2.names.service, V2, 30, "X-Canary", V2)
    assert s.route == f"{ns}-{v1.names.service}-8501"
    assert [(v.version, v.role, v.deployment, v.desired_replicas, v.ready_replicas) for v in s.versions] == [
        (V1, "live", v1.names.deployment, 2, 2), (V2, "canary", v2.names.deployment, 1, 1)]
    h1, h2 = s.versions[0].hpa, s.versions[1].hpa
    assert (h1.name, h1.min_replicas, h1.max_replicas, h1.current_replicas) == (v1.names.hpa, 2, 5, 2)
    assert (h2.name, h2.min_replicas, h2.max_replicas, h2.current_replicas) == (v2.names.hpa, 1, 5, 1)
    assert s.notes == []


def test_read_status_reports_live_canary_weight_and_each_versions_replicas(rollout, kube_clients, sandbox_info):
    v1, v2 = rollout
    s = read_status.fn(kube_clients, v2)
    check_status(s, v1, v2)
    assert s.qps == 0.0 and s.qps_error is None  # nothing has been sent to this host yet

    # Users' requests (and header-selected ones, which the canary serves) are all counted on the main route.
    with httpx.Client(base_url=sandbox_info["ingress_endpoint"], headers={"Host": v1.ingress.host}, timeout=10) as h:
        for i in range(60):
            h.get("/v1/models/chnsenticorp", headers={"X-Canary": V2} if i % 2 else {})
    seen = wait_for(lambda: (st := read_status.fn(kube_clients, v2)).qps and st, "the main route's QPS above 0",
                    timeout=120)
    assert seen.qps > 0 and seen.canary.weight == 30


def test_the_status_flow_logs_and_publishes_the_status(rollout, sandbox_info, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from cli.sandbox_profile import cluster_from_sandbox
    from flows.status import ARTIFACT_KEY, status

    v1, v2 = rollout
    state = status(spec=v1, cluster_block=cluster_from_sandbox(sandbox_info), return_state=True)
    result = state.result()
    check_status(result, v1, v2)
    with get_client(sync_client=True) as prefect:
        (artifact,) = prefect.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[ARTIFACT_KEY]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    assert artifact.type == "markdown"
    assert f"| {V1} | live | {v1.names.deployment} | 2 / 2 | {v1.names.hpa} | 2 | 5 | 2 |" in artifact.data
    assert f"| {V2} | canary | {v2.names.deployment} | 1 / 1 | {v2.names.hpa} | 1 | 5 | 1 |" in artifact.data
    assert "weight 30/100 (30% of user requests)" in artifact.data
    assert sandbox_info["access_key_secret"] not in artifact.data


def test_elastic_inference_status_prints_the_lines(rollout, sandbox, sandbox_info, tmp_path):
    v1, v2 = rollout
    spec_file = tmp_path / "spec.yaml"
    data = spec_data(sandbox_info, v1.names.namespace, V2, 1)
    del data["cluster_id"]  # the sandbox's cluster is bound by --sandbox-dir
    spec_file.write_text(yaml.safe_dump(data))
    res = subprocess.run([sys.executable, "-m", "cli.main", "status", str(spec_file), "--sandbox-dir",
                          str(sandbox.state_dir)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[1] == f"live: {V1} (Ingress bert-tfserving -> Service {v1.names.service}:8501)"
    assert lines[2] == (f"canary: {V2} (Ingress named-by-hand -> Service {v2.names.service}:8501), weight 30/100 "
                        f"(30% of user requests), every request with X-Canary: {V2}")
    assert lines[3].startswith(f"traffic: 0 req/s on route {v1.names.namespace}-{v1.names.service}-8501")
    assert "no per-version figure" in lines[3]
    rows = [line.split() for line in lines[5:7]]
    assert [r[:4] for r in rows] == [[V1, "live", v1.names.deployment, "2/2"], [V2, "canary", v2.names.deployment, "1/1"]]
    assert sandbox_info["access_key_secret"] not in res.stdout + res.stderr


def test_status_needs_exactly_one_cluster(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"serving": {"version": V1}}))
    res = subprocess.run([sys.executable, "-m", "cli.main", "status", str(spec_file)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "give exactly one of --cluster-block or --sandbox-dir" in res.stderr
