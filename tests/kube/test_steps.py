"""The Kubernetes steps (tasks/*) against the sandbox's API server, through the kubeconfig it writes.

No controller runs yet (no PV binder, deployment controller or scheduler), so the waits are tested for what they
say when the state never comes (timeout messages naming the last status and the Events), and for returning when it
does come (the test writes the status a controller would write, through the status subresource). Objects are made
so that future controllers cannot make a "never ready" object ready: the PVC pins a PV that does not exist, the
pods select a node label no pool carries, the Ingress names a class no controller serves.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from polling import wait_for

from clients.kube import KubeApiError, KubeClients, WaitTimeout
from core.spec import DeploySpec
from tasks.autoscaling import apply_autoscaling, render_hpa
from tasks.ingress import apply_ingress, render_ingress, wait_for_address
from tasks.preflight import PreflightError, check_cluster
from tasks.serving import apply_serving, render_serving
from tasks.storage import apply_storage, render_pvc, render_storage

SECRET = "Sandbox-Secret-Value-1234"


@pytest.fixture(scope="module")
def clients(sandbox_info) -> KubeClients:
    k = KubeClients.from_kubeconfig_file(sandbox_info["kubeconfig"], backoff_s=0.05, backoff_max_s=0.2)
    yield k
    k.close()


def drain(response: Any) -> None:
    """Read a raw response (deletes answer with a Status the typed models cannot parse) and free its connection."""
    _ = response.data
    response.release_conn()


def make_spec(sandbox_info: dict[str, Any], namespace: str, **groups: dict[str, Any]) -> DeploySpec:
    """The seed spec in its own namespace, with its own PV (PVs are cluster-wide) and node label."""
    suffix = namespace.rsplit("-", 1)[-1]
    data: dict[str, Any] = {
        "cluster_id": sandbox_info["cluster_id"],
        "node_pool": {"labels": {"inference": f"tensorflow-{suffix}"}},
        "storage": {"pv_name": f"model-pv-{suffix}", "oss_url": sandbox_info["oss_endpoint"]},
        "serving": {"version": "202107141745", "namespace": namespace},
    }
    for group, values in groups.items():
        data.setdefault(group, {}).update(values)
    return DeploySpec.parse(data)


@pytest.fixture
def namespace(clients: KubeClients):
    name = "s-" + uuid.uuid4().hex[:6]
    clients.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    core = client.CoreV1Api(clients.api_client)
    drain(core.delete_namespace(name, _preload_content=False))
    with contextlib.suppress(client.exceptions.ApiException):
        drain(core.delete_persistent_volume(f"model-pv-{name.rsplit('-', 1)[-1]}", _preload_content=False))


def every_manifest(spec: DeploySpec, include_replicas: bool = True) -> list[dict[str, Any]]:
    return (
        render_storage(spec, None, "AKIDsandbox", SECRET)
        + render_serving(spec, include_replicas)
        + [render_hpa(spec), render_ingress(spec)]
    )


def state(clients: KubeClients, manifests: list[dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
    out = {}
    for m in manifests:
        obj = clients.get(m["kind"], m["metadata"]["name"], m["metadata"].get("namespace"))
        assert obj is not None, m["kind"]
        out[m["kind"]] = (obj["metadata"]["resourceVersion"], obj["metadata"].get("generation"))
    return out


# --- apply ------------------------------------------------------------------------------------------------------
def test_applying_every_manifest_twice_changes_nothing(clients, sandbox_info, namespace):
    spec = make_spec(sandbox_info, namespace)
    manifests = every_manifest(spec)
    first = [clients.apply(m) for m in manifests]
    assert {r.action for r in first} == {"created"}
    ing = render_ingress(spec)["metadata"]
    # the ingress controller writes the Ingress's status once after create: snapshot after that write
    wait_for(lambda: ((clients.get("Ingress", ing["name"], ing.get("namespace")).get("status") or {})
                      .get("loadBalancer") or {}).get("ingress"), "the Ingress's loadBalancer status", timeout=30)
    before = state(clients, manifests)
    second = [clients.apply(m) for m in manifests]
    assert [r.action for r in second] == ["unchanged"] * len(manifests)
    assert state(clients, manifests) == before
    # What the server stored is what arena's chart would have produced, read back through the API.
    dep = clients.get("Deployment", spec.names.deployment, namespace)
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"][-1] == (
        f"--model_config_file={spec.names.model_config_file}"
    )
    managers = {f["manager"] for f in dep["metadata"]["managedFields"]}
    assert "elastic-inference" in managers


def test_the_steps_run_twice_leave_the_same_objects(clients, sandbox_info, namespace):
    """The Prefect tasks' bodies: storage and serving time out (no controllers), the rest applies; a second run
    bumps no resourceVersion or generation, also now that the HPA owns the replica count."""
    spec = make_spec(sandbox_info, namespace)
    manifests = every_manifest(spec)

    def run_all() -> None:
        # Without controllers these waits time out; with them they may succeed: either way, nothing changes.
        with contextlib.suppress(WaitTimeout):
            apply_storage.fn(
                clients, spec, access_key_id="AKIDsandbox", access_key_secret=SECRET, timeout_s=1
            )
        with contextlib.suppress(WaitTimeout):
            apply_serving.fn(clients, spec, timeout_s=1)
        apply_autoscaling.fn(clients, spec)
        with contextlib.suppress(WaitTimeout):
            apply_ingress.fn(clients, spec, timeout_s=1)

    run_all()
    # the ingress controller writes the Ingress's address from its own status loop, once, a pass after the Ingress
    # appears: that write is the controller's, not a re-run's, so the comparison starts after it
    wait_for_address(clients, spec, spec.names.ingress)
    before = state(clients, manifests)
    run_all()
    assert state(clients, manifests) == before


def test_a_rerun_keeps_the_replicas_the_hpa_set(clients, sandbox_info, namespace):
    # minReplicas 3: the sandbox's real HPA controller then holds the Deployment at 3 as well (with no traffic it
    # would otherwise scale it straight back to 1), so a re-run that reset replicas would show as a generation bump.
    spec = make_spec(sandbox_info, namespace, autoscaling={"min_replicas": 3})
    for m in render_serving(spec):
        clients.apply(m)
    clients.apply(render_hpa(spec))
    # The HPA controller scales through the scale subresource with an Update, as kube-controller-manager does.
    apps = client.AppsV1Api(clients.api_client)
    apps.replace_namespaced_deployment_scale(
        spec.names.deployment,
        namespace,
        {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": spec.names.deployment, "namespace": namespace},
            "spec": {"replicas": 3},
        },
        field_manager="kube-controller-manager",
    )
    generation = clients.get("Deployment", spec.names.deployment, namespace)["metadata"]["generation"]
    with pytest.raises(WaitTimeout):
        apply_serving.fn(clients, spec, timeout_s=1)
    dep = clients.get("Deployment", spec.names.deployment, namespace)
    assert dep["spec"]["replicas"] == 3
    assert dep["metadata"]["generation"] == generation


def test_dry_run_stores_nothing(clients, sandbox_info, namespace):
    spec = make_spec(sandbox_info, namespace)
    result = clients.apply(render_pvc(spec), dry_run=True)
    assert result.dry_run and result.action == "created"
    assert clients.get("PersistentVolumeClaim", spec.names.pvc, namespace) is None


def test_invalid_objects_fail_at_once_with_the_servers_causes(clients, namespace):
    bad = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "Bad_Name", "namespace": namespace},
        "data": {"a": "b"},
    }
    with pytest.raises(KubeApiError) as err:
        clients.apply(bad)
    e = err.value
    assert e.status == 422 and e.reason == "Invalid"
    assert any(c.get("field") == "metadata.name" for c in e.causes)
    assert "APPLY ConfigMap" in str(e) and "Bad_Name" in str(e)


def test_secret_values_stay_out_of_errors_results_and_reprs(clients, sandbox_info, namespace):
    spec = make_spec(sandbox_info, namespace)
    secret = render_storage(spec, None, "AKIDsandbox", SECRET)[0]
    result = clients.apply(secret)
    assert SECRET not in repr(result) and SECRET not in str(result.model_dump())
    assert "data" not in result.object and "stringData" not in result.object
    assert "data" not in (clients.get("Secret", secret["metadata"]["name"], namespace) or {})
    bad = {
        **secret,
        "metadata": {**secret["metadata"], "name": "Bad_Name"},
        "stringData": {"bad key": SECRET, "akId": "x"},
    }
    with pytest.raises(KubeApiError) as err:
        clients.apply(bad)
    assert err.value.status == 422
    assert SECRET not in str(err.value) and SECRET not in repr(err.value.causes)


def test_a_bad_token_is_refused_not_retried(sandbox_info, caplog):
    doc = yaml.safe_load(Path(sandbox_info["kubeconfig"]).read_text())
    for user in doc["users"]:
        user["user"]["token"] = "not-a-valid-token"
    bad = KubeClients.from_kubeconfig_dict(doc, attempts=6)
    with pytest.raises(KubeApiError) as err:
        bad.get("Namespace", "default")
    assert err.value.status == 401
    assert "not-a-valid-token" not in str(err.value)
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


# --- waits ------------------------------------------------------------------------------------------------------
def test_wait_timeout_names_the_last_status_and_the_events(clients, sandbox_info, namespace):
    spec = make_spec(sandbox_info, namespace)
    pvc = render_pvc(spec)  # pins a PV that was never created: no binder can ever bind it
    clients.apply(pvc)
    client.CoreV1Api(clients.api_client).create_namespaced_event(
        namespace,
        {
            "metadata": {"name": f"{spec.names.pvc}.test"},
            "involvedObject": {
                "kind": "PersistentVolumeClaim",
                "name": spec.names.pvc,
                "namespace": namespace,
                "apiVersion": "v1",
            },
            "reason": "FailedBinding",
            "type": "Warning",
            "count": 3,
            "message": f'volume "{spec.names.pv}" not found',
            "source": {"component": "persistentvolume-controller"},
        },
    )
    with pytest.raises(WaitTimeout) as err:
        clients.wait_for(
            "PersistentVolumeClaim", spec.names.pvc, namespace, lambda o: False, 1, what="be Bound"
        )
    text = str(err.value)
    assert f"PersistentVolumeClaim {namespace}/{spec.names.pvc} to be Bound" in text
    assert "Last seen: phase Pending" in text
    assert (
        f'Warning FailedBinding PersistentVolumeClaim/{spec.names.pvc}: volume "{spec.names.pv}" not found (x3)'
        in text
    )
    assert err.value.last is not None and err.value.last["status"]["phase"] == "Pending"


def test_deployment_wait_timeout_reports_the_deployment(clients, sandbox_info, namespace):
    spec = make_spec(sandbox_info, namespace)
    with pytest.raises(WaitTimeout) as err:
        apply_serving.fn(clients, spec, timeout_s=1)
    text = str(err.value)
    assert f"Deployment {namespace}/{spec.names.deployment} to be Available" in text
    assert "Last seen:" in text and "Recent events:" in text


def test_wait_for_a_missing_object_says_it_does_not_exist(clients, namespace):
    with pytest.raises(WaitTimeout) as err:
        clients.wait_for("Ingress", "nothing-here", namespace, lambda o: True, 1)
    assert "Last seen: the object does not exist" in str(err.value)


def test_ingress_wait_returns_when_the_controller_publishes_an_address(clients, sandbox_info, namespace):
    # A class no controller serves: only this test writes the status, as an ingress controller would.
    spec = make_spec(sandbox_info, namespace, ingress={"class_name": f"none-{namespace}"})
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = apply_ingress.fn(clients, spec, timeout_s=60)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    net = client.NetworkingV1Api(clients.api_client)
    name = spec.names.ingress
    while clients.get("Ingress", name, namespace) is None and worker.is_alive():
        worker.join(0.05)
    net.patch_namespaced_ingress_status(
        name,
        namespace,
        {
            "status": {
                "loadBalancer": {
                    "ingress": [{"ip": "127.0.0.1", "ports": [{"port": 18080, "protocol": "TCP"}]}]
                }
            }
        },
    )
    worker.join(60)
    assert not worker.is_alive()
    assert "error" not in outcome, outcome.get("error")
    applied, endpoint = outcome["result"]
    assert applied.name == name
    assert (endpoint.address, endpoint.port, endpoint.host) == ("127.0.0.1", 18080, spec.ingress.host)
    assert endpoint.url == "http://127.0.0.1:18080/"


# --- preflight --------------------------------------------------------------------------------------------------
def test_preflight_passes_on_the_sandbox_cluster_and_creates_the_namespace(clients, sandbox_info):
    ns = "p-" + uuid.uuid4().hex[:6]
    spec = make_spec(sandbox_info, ns)
    try:
        report = check_cluster(clients, spec)
        assert report.namespace_created
        assert report.server_version.startswith("v1.33")
        assert report.external_metrics_api.endswith("Available")
        again = check_cluster(clients, spec)
        assert not again.namespace_created
        assert clients.get("Namespace", ns)["metadata"]["labels"]["app.kubernetes.io/managed-by"] == (
            "elastic-inference"
        )
    finally:
        drain(client.CoreV1Api(clients.api_client).delete_namespace(ns, _preload_content=False))


def test_preflight_can_refuse_to_create_the_namespace(clients, sandbox_info):
    spec = make_spec(sandbox_info, "a-" + uuid.uuid4().hex[:6])
    with pytest.raises(PreflightError) as err:
        check_cluster(clients, spec, create_namespace=False)
    assert f"namespace {spec.names.namespace!r} does not exist" in str(err.value)


def test_preflight_names_a_missing_ingress_class_and_the_classes_there_are(clients, sandbox_info):
    spec = make_spec(sandbox_info, "default", ingress={"class_name": "alb"})
    with pytest.raises(PreflightError) as err:
        check_cluster(clients, spec)
    (problem,) = err.value.problems
    assert "IngressClass 'alb' not found" in problem and "nginx" in problem
    assert "Nginx Ingress Controller" in problem


def test_preflight_lists_every_missing_addon_in_one_error(fresh_sandbox):
    info = fresh_sandbox.info
    with KubeClients.from_kubeconfig_file(info["kubeconfig"]) as k:
        spec = make_spec(info, "default")
        registration = client.ApiregistrationV1Api(k.api_client)
        name = "v1beta1.external.metrics.k8s.io"
        registration.patch_api_service_status(
            name,
            {
                "status": {
                    "conditions": [
                        {
                            "type": "Available",
                            "status": "False",
                            "reason": "FailedDiscoveryCheck",
                            "message": "failing or missing response from https://10.0.0.9:443",
                        }
                    ]
                }
            },
        )
        with pytest.raises(PreflightError) as err:
            check_cluster(k, spec)
        (problem,) = err.value.problems
        assert "exists but is not Available (FailedDiscoveryCheck" in problem

        drain(registration.delete_api_service(name, _preload_content=False))
        drain(
            client.StorageV1Api(k.api_client).delete_csi_driver(
                "ossplugin.csi.alibabacloud.com", _preload_content=False
            )
        )
        with pytest.raises(PreflightError) as err:
            check_cluster(k, spec)
        problems = err.value.problems
        assert len(problems) == 2
        assert (
            "CSIDriver ossplugin.csi.alibabacloud.com not found" in problems[0]
            and "csi-plugin" in problems[0]
        )
        assert f"APIService {name} not found" in problems[1]
        assert "ack-alibaba-cloud-metrics-adapter" in problems[1]


# --- preflight: issue 12 (node scaling, STS, ACK, one message, nothing created) ------------------------------------
def test_preflight_checks_ack_and_reports_node_scaling(clients, sandbox_info):
    from blocks.alibaba import AlibabaCloudCredentials
    from clients.ack import AckApi

    creds = AlibabaCloudCredentials(access_key_id=sandbox_info["access_key_id"],
                                    access_key_secret=sandbox_info["access_key_secret"],
                                    region_id=sandbox_info["region"], cs_endpoint=sandbox_info["cs_endpoint"])
    spec = make_spec(sandbox_info, "default")
    wait_for(lambda: clients.get("ConfigMap", "cluster-autoscaler-status", "kube-system") is not None,
             "the cluster-autoscaler status ConfigMap", timeout=30)
    report = check_cluster(clients, spec, ack=AckApi(creds, sandbox_info["cluster_id"]))
    assert report.cluster_state == "running"
    assert report.node_scaling.startswith("enabled")


def test_preflight_names_node_scaling_off_and_sts_credentials_in_one_message_and_creates_nothing(tmp_path):
    """With ACK's cluster-level node scaling off (sandbox option) the pool's auto scaling grows nothing: preflight
    says so before anything is created, together with every other problem (here: STS credentials for the OSS
    Secret, issue 12 item 3)."""
    from sandbox.runner import Sandbox

    with Sandbox(tmp_path / "sb", speed=50.0, options={"node_scaling": False}) as sb:
        info = sb.info
        with KubeClients.from_kubeconfig_file(info["kubeconfig"]) as k:
            ns = "n-" + uuid.uuid4().hex[:6]
            spec = make_spec(info, ns)
            with pytest.raises(PreflightError) as err:
                check_cluster(k, spec, has_security_token=True)
            problems = err.value.problems
            assert len(problems) == 2, problems
            assert "STS credentials" in problems[0] and "storage.auth: rrsa" in problems[0]
            assert "node scaling is not enabled for the cluster" in problems[1]
            assert "cluster-autoscaler-status" in problems[1] and "Node Scaling > Enable" in problems[1]
            assert k.get("Namespace", ns) is None  # a failed preflight creates nothing
