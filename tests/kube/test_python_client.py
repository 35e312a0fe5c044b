"""The official Python client (typed APIs, dynamic client, watch, all patch types) against the sandbox."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import urllib3
from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException
from polling import wait_for

from .conftest import deployment


def _status(e: ApiException) -> dict:
    return json.loads(e.body)


# ---- CRUD, defaulting, metadata --------------------------------------------------------------------------------------
def test_create_get_defaults_and_metadata(apps, ns):
    created = apps.create_namespaced_deployment(ns, deployment("web"))
    m = created.metadata
    assert m.uid and m.resource_version and m.creation_timestamp is not None
    assert m.generation == 1
    spec = created.spec
    assert spec.replicas == 1
    assert spec.strategy.type == "RollingUpdate"
    assert spec.strategy.rolling_update.max_surge == "25%"
    assert spec.revision_history_limit == 10 and spec.progress_deadline_seconds == 600
    pod = spec.template.spec
    assert pod.restart_policy == "Always" and pod.dns_policy == "ClusterFirst"
    assert pod.scheduler_name == "default-scheduler" and pod.termination_grace_period_seconds == 30
    c = pod.containers[0]
    assert c.image_pull_policy == "IfNotPresent"
    assert c.termination_message_path == "/dev/termination-log" and c.termination_message_policy == "File"
    assert c.ports[0].protocol == "TCP"
    got = apps.read_namespaced_deployment("web", ns)
    assert got.metadata.uid == m.uid
    assert any(f.manager for f in got.metadata.managed_fields)


def test_image_pull_policy_latest_and_service_defaults(core, ns):
    pod = core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "busybox"}, {"name": "d", "image": "busybox:latest"}]}})
    assert [c.image_pull_policy for c in pod.spec.containers] == ["Always", "Always"]
    assert pod.status.phase == "Pending"
    svc = core.create_namespaced_service(ns, {"metadata": {"name": "s"}, "spec": {
        "selector": {"app": "x"}, "ports": [{"port": 8501}]}})
    assert svc.spec.type == "ClusterIP" and svc.spec.session_affinity == "None"
    assert svc.spec.cluster_ip and svc.spec.cluster_ip != "None"
    assert svc.spec.ports[0].protocol == "TCP" and svc.spec.ports[0].target_port == 8501
    pvc = core.create_namespaced_persistent_volume_claim(ns, {"metadata": {"name": "c"}, "spec": {
        "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": ""}})
    assert pvc.spec.volume_mode == "Filesystem" and pvc.status.phase == "Pending"


def test_generation_bumps_only_on_spec_change(apps, core, ns):
    apps.create_namespaced_deployment(ns, deployment("gen"))
    d = apps.patch_namespaced_deployment("gen", ns, {"metadata": {"labels": {"x": "y"}}})
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("gen", ns, {"spec": {"replicas": 3}})
    assert d.metadata.generation == 2
    rv = d.metadata.resource_version
    d = apps.patch_namespaced_deployment_status("gen", ns, {"status": {"replicas": 3, "observedGeneration": 2}})
    assert d.metadata.generation == 2 and d.status.replicas == 3
    assert int(d.metadata.resource_version) > int(rv)
    same = apps.patch_namespaced_deployment("gen", ns, {"spec": {"replicas": 3}})
    assert same.metadata.generation == 2
    # a no-op write stores nothing: no new resourceVersion (on an object no controller touches)
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "noop"}, "data": {"a": "1"}})
    again = core.patch_namespaced_config_map("noop", ns, {"data": {"a": "1"}})
    assert again.metadata.resource_version == cm.metadata.resource_version


def test_status_is_ignored_on_main_resource(apps, ns):
    apps.create_namespaced_deployment(ns, deployment("st"))
    d = apps.patch_namespaced_deployment("st", ns, {"status": {"replicas": 7}})
    assert not d.status.replicas


def test_stale_update_conflicts(core, ns):
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    cm.data["a"] = "2"
    core.replace_namespaced_config_map("cm", ns, cm)
    cm.data["a"] = "3"
    with pytest.raises(ApiException) as ei:
        core.replace_namespaced_config_map("cm", ns, cm)  # still carries the old resourceVersion
    assert ei.value.status == 409 and _status(ei.value)["reason"] == "Conflict"


def test_errors_not_found_already_exists(core, ns):
    with pytest.raises(ApiException) as ei:
        core.read_namespaced_config_map("nope", ns)
    st = _status(ei.value)
    assert ei.value.status == 404 and st["reason"] == "NotFound" and st["details"]["kind"] == "configmaps"
    core.create_namespaced_config_map(ns, {"metadata": {"name": "dup"}})
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "dup"}})
    assert ei.value.status == 409 and _status(ei.value)["reason"] == "AlreadyExists"


def test_invalid_deployment_gets_422_with_causes(apps, raw, ns):
    bad = deployment("bad")
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    del bad["spec"]["template"]["spec"]["containers"][0]["name"]
    r = raw("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", bad)
    st = r.json()
    assert r.status_code == 422 and st["reason"] == "Invalid" and st["kind"] == "Status"
    fields = {c["field"] for c in st["details"]["causes"]}
    assert "spec.template.spec.containers[0].name" in fields
    assert "spec.template.spec.containers[0].ports[0].containerPort" in fields
    bad = deployment("Bad_Name")
    with pytest.raises(ApiException) as ei:
        apps.create_namespaced_deployment(ns, bad)
    assert ei.value.status == 422
    assert _status(ei.value)["details"]["causes"][0]["field"] == "metadata.name"
    bad = deployment("mismatch")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(ApiException) as ei:
        apps.create_namespaced_deployment(ns, bad)
    cause = _status(ei.value)["details"]["causes"][0]
    assert cause["field"] == "spec.template.metadata.labels" and "selector" in cause["message"]


def test_selector_is_immutable(apps, ns):
    apps.create_namespaced_deployment(ns, deployment("imm"))
    with pytest.raises(ApiException) as ei:
        apps.patch_namespaced_deployment("imm", ns, {"spec": {"selector": {"matchLabels": {"app": "imm", "x": "y"}},
                                                              "template": {"metadata": {"labels": {"x": "y"}}}}})
    assert ei.value.status == 422
    assert any("immutable" in c["message"] for c in _status(ei.value)["details"]["causes"])


def test_malformed_body_is_400(raw, ns):
    for body in (b"{not json", b"[1,2", b"\xff\xfe", b"[1]", b"", b'"str"'):
        r = raw("POST", f"/api/v1/namespaces/{ns}/configmaps", body)
        assert r.status_code == 400 and r.json()["reason"] == "BadRequest", body
    r = raw("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", {"metadata": {"name": "x"}, "spec": "nope"})
    assert r.status_code in (400, 422)
    r = raw("PATCH", f"/api/v1/namespaces/{ns}/configmaps/x", b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["reason"] == "UnsupportedMediaType"
    r = raw("PUT", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "x"}})
    assert r.status_code == 405 and r.json()["reason"] == "MethodNotAllowed"


def test_unknown_fields(raw, ns):
    body = {"metadata": {"name": "uf"}, "data": {"a": "b"}, "bogus": 1}
    r = raw("POST", f"/api/v1/namespaces/{ns}/configmaps", body)
    assert r.status_code == 201 and "unknown field" in r.headers.get("Warning", "")
    assert "bogus" not in r.json()
    r = raw("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "uf2"}, "bogus": 1},
            params={"fieldValidation": "Strict"})
    assert r.status_code == 400 and "strict decoding error" in r.json()["message"]


def test_removed_apis_are_404(raw, ns):
    hpa_v2beta1 = {"apiVersion": "autoscaling/v2beta1", "kind": "HorizontalPodAutoscaler",
                   "metadata": {"name": "bert"}, "spec": {"scaleTargetRef": {"apiVersion": "apps/v1",
                                                                            "kind": "Deployment", "name": "x"},
                                                         "minReplicas": 1, "maxReplicas": 10,
                                                         "metrics": [{"type": "External", "external": {
                                                             "metricName": "sls_ingress_qps",
                                                             "targetAverageValue": 10}}]}}
    for path in (f"/apis/autoscaling/v2beta1/namespaces/{ns}/horizontalpodautoscalers",
                 f"/apis/extensions/v1beta1/namespaces/{ns}/ingresses",
                 f"/apis/networking.k8s.io/v1beta1/namespaces/{ns}/ingresses",
                 "/apis/autoscaling/v2beta2"):
        assert raw("POST", path, hpa_v2beta1).status_code == 404, path


def test_hpa_v2_and_ingress(api_client, ns):
    auto = client.AutoscalingV2Api(api_client)
    hpa = auto.create_namespaced_horizontal_pod_autoscaler(ns, {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "bert"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "bert"},
                 "minReplicas": 1, "maxReplicas": 10,
                 "metrics": [{"type": "External", "external": {
                     "metric": {"name": "sls_ingress_qps", "selector": {"matchLabels": {"sls.project": "k8s-log-x"}}},
                     "target": {"type": "AverageValue", "averageValue": "10"}}}]}})
    assert hpa.spec.behavior is None
    auto.patch_namespaced_horizontal_pod_autoscaler_status("bert", ns, {"status": {
        "currentReplicas": 1, "desiredReplicas": 2}})
    assert auto.read_namespaced_horizontal_pod_autoscaler("bert", ns).status.desired_replicas == 2
    net = client.NetworkingV1Api(api_client)
    ing = net.create_namespaced_ingress(ns, {"metadata": {"name": "ing"}, "spec": {
        "ingressClassName": "nginx", "rules": [{"host": "test.example.com", "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "svc", "port": {"number": 8501}}}}]}}]}})
    assert ing.spec.rules[0].host == "test.example.com"
    assert [c.metadata.name for c in net.list_ingress_class().items] == ["nginx"]


def test_preinstalled_addons(api_client):
    st = client.StorageV1Api(api_client)
    assert "ossplugin.csi.alibabacloud.com" in [d.metadata.name for d in st.list_csi_driver().items]
    reg = client.ApiregistrationV1Api(api_client)
    svc = reg.read_api_service("v1beta1.external.metrics.k8s.io")
    assert svc.spec.service.name == "alibaba-cloud-metrics-adapter"
    assert {c.type: c.status for c in svc.status.conditions}["Available"] == "True"


# ---- patch types -----------------------------------------------------------------------------------------------------
def test_strategic_merge_containers_by_name(apps, ns):
    d = deployment("smp")
    d["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "busybox:1"})
    apps.create_namespaced_deployment(ns, d)
    out = apps.patch_namespaced_deployment("smp", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "image": "busybox:2", "env": [{"name": "A", "value": "1"}]}]}}}})
    cs = {c.name: c for c in out.spec.template.spec.containers}
    assert set(cs) == {"main", "side"}
    assert cs["side"].image == "busybox:2" and cs["main"].image == "nginx:1.25"
    out = apps.patch_namespaced_deployment("smp", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "env": [{"name": "B", "value": "2"}]}]}}}})
    envs = [e.name for e in {c.name: c for c in out.spec.template.spec.containers}["side"].env]
    assert envs == ["A", "B"]
    out = apps.patch_namespaced_deployment("smp", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "$patch": "delete"}]}}}})
    assert [c.name for c in out.spec.template.spec.containers] == ["main"]


def test_json_and_merge_patch(apps, ns):
    apps.create_namespaced_deployment(ns, deployment("jp"))
    out = apps.patch_namespaced_deployment("jp", ns, [
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}])
    assert out.spec.replicas == 4 and out.metadata.annotations == {"a": "b"}
    out = apps.patch_namespaced_deployment("jp", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "only", "image": "busybox:1"}]}}}}, _content_type="application/merge-patch+json")
    assert [c.name for c in out.spec.template.spec.containers] == ["only"]  # merge patch replaces lists
    with pytest.raises(ApiException) as ei:
        apps.patch_namespaced_deployment("jp", ns, [{"op": "test", "path": "/spec/replicas", "value": 9}])
    assert ei.value.status == 422


def test_scale_subresource(apps, ns):
    apps.create_namespaced_deployment(ns, deployment("sc"))
    s = apps.read_namespaced_deployment_scale("sc", ns)
    assert s.spec.replicas == 1 and s.status.selector == "app=sc"
    apps.patch_namespaced_deployment_scale("sc", ns, {"spec": {"replicas": 5}})
    assert apps.read_namespaced_deployment("sc", ns).spec.replicas == 5


def test_dry_run_writes_nothing(apps, core, ns):
    out = apps.create_namespaced_deployment(ns, deployment("dry"), dry_run="All")
    assert out.spec.replicas == 1
    with pytest.raises(ApiException):
        apps.read_namespaced_deployment("dry", ns)
    apps.create_namespaced_deployment(ns, deployment("dry"))
    apps.patch_namespaced_deployment("dry", ns, {"spec": {"replicas": 9}}, dry_run="All")
    apps.delete_namespaced_deployment("dry", ns, dry_run="All")
    assert apps.read_namespaced_deployment("dry", ns).spec.replicas == 1


# ---- server-side apply -----------------------------------------------------------------------------------------------
def test_server_side_apply_create_update_conflict_force(apps, ns):
    body = deployment("ssa", replicas=2)
    created = apps.patch_namespaced_deployment("ssa", ns, body, field_manager="elastic-inference",
                                               _content_type="application/apply-patch+yaml")
    assert created.spec.replicas == 2 and created.metadata.generation == 1
    mgrs = {(f.manager, f.operation) for f in created.metadata.managed_fields}
    assert ("elastic-inference", "Apply") in mgrs
    # applying the same thing again changes nothing
    again = apps.patch_namespaced_deployment("ssa", ns, body, field_manager="elastic-inference",
                                             _content_type="application/apply-patch+yaml")
    # (not compared by resourceVersion: the deployment controller may write the status in between)
    def applied_at(d):
        return next(f.time for f in d.metadata.managed_fields
                    if f.manager == "elastic-inference" and f.operation == "Apply")
    assert again.metadata.generation == 1 and applied_at(again) == applied_at(created)
    # another manager takes replicas with an update: the applier now conflicts on it
    apps.patch_namespaced_deployment_scale("ssa", ns, {"spec": {"replicas": 5}}, field_manager="hpa")
    body2 = deployment("ssa", replicas=3)
    with pytest.raises(ApiException) as ei:
        apps.patch_namespaced_deployment("ssa", ns, body2, field_manager="elastic-inference",
                                         _content_type="application/apply-patch+yaml")
    st = _status(ei.value)
    assert ei.value.status == 409 and st["reason"] == "Conflict"
    assert any(c["field"] == ".spec.replicas" and "hpa" in c["message"] for c in st["details"]["causes"])
    forced = apps.patch_namespaced_deployment("ssa", ns, body2, field_manager="elastic-inference", force=True,
                                              _content_type="application/apply-patch+yaml")
    assert forced.spec.replicas == 3
    # dropping a field the applier owned removes it
    body3 = deployment("ssa", replicas=3)
    body3["metadata"]["labels"] = {"app": "ssa", "tier": "web"}
    apps.patch_namespaced_deployment("ssa", ns, body3, field_manager="elastic-inference",
                                     _content_type="application/apply-patch+yaml")
    out = apps.patch_namespaced_deployment("ssa", ns, body2, field_manager="elastic-inference",
                                           _content_type="application/apply-patch+yaml")
    assert "tier" not in out.metadata.labels


def test_apply_yaml_body(raw, ns):
    text = f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: from-yaml
  namespace: {ns}
data:
  k: v
"""
    r = raw("PATCH", f"/api/v1/namespaces/{ns}/configmaps/from-yaml", text, params={"fieldManager": "test"},
            headers={"Content-Type": "application/apply-patch+yaml"})
    assert r.status_code == 201 and r.json()["data"] == {"k": "v"}
    r = raw("PATCH", f"/api/v1/namespaces/{ns}/configmaps/from-yaml", text, params={"fieldManager": "test"},
            headers={"Content-Type": "application/apply-patch+yaml"})
    assert r.status_code == 200
    r = raw("PATCH", f"/api/v1/namespaces/{ns}/configmaps/from-yaml", "data: {k: v}",
            params={"fieldManager": "test"}, headers={"Content-Type": "application/apply-patch+yaml"})
    assert r.status_code == 400  # apiVersion and kind are required


# ---- list: selectors, pagination ---------------------------------------------------------------------------------------
def test_label_and_field_selectors(core, ns):
    for i, (tier, env) in enumerate([("web", "prod"), ("web", "dev"), ("db", "prod"), ("cache", None)]):
        labels = {"tier": tier, **({"env": env} if env else {})}
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"c{i}", "labels": labels}})

    def names(**kw):
        return sorted(c.metadata.name for c in core.list_namespaced_config_map(ns, **kw).items)

    assert names(label_selector="tier=web") == ["c0", "c1"]
    assert names(label_selector="tier==web,env!=dev") == ["c0"]
    assert names(label_selector="tier in (db, cache)") == ["c2", "c3"]
    assert names(label_selector="tier notin (web)") == ["c2", "c3"]
    assert names(label_selector="env") == ["c0", "c1", "c2"]
    assert names(label_selector="!env") == ["c3"]
    assert names(field_selector="metadata.name=c2") == ["c2"]
    assert names(field_selector="metadata.name!=c2") == ["c0", "c1", "c3"]
    with pytest.raises(ApiException) as ei:
        core.list_namespaced_config_map(ns, field_selector="spec.bogus=1")
    assert ei.value.status == 400
    core.create_namespaced_pod(ns, {"metadata": {"name": "p1"}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}})
    assert [p.metadata.name for p in core.list_namespaced_pod(ns, field_selector="status.phase=Pending").items] == ["p1"]
    assert core.list_namespaced_pod(ns, field_selector="spec.nodeName=n1").items == []


def test_pagination(core, ns):
    for i in range(7):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"p{i:02d}"}})
    seen, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map(ns, limit=3, _continue=token)
        seen += [c.metadata.name for c in page.items]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
    assert seen == [f"p{i:02d}" for i in range(7)] and pages == 3


# ---- delete, GC -------------------------------------------------------------------------------------------------------
def test_garbage_collection_of_owned_objects(apps, core, ns):
    d = apps.create_namespaced_deployment(ns, deployment("owner"))
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "owner", "uid": d.metadata.uid,
           "controller": True, "blockOwnerDeletion": True}
    core.create_namespaced_config_map(ns, {"metadata": {"name": "owned", "ownerReferences": [ref]}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "kept", "ownerReferences": [ref]}})
    apps.delete_namespaced_deployment("owner", ns, propagation_policy="Background")

    def gone():
        return not [c for c in core.list_namespaced_config_map(ns).items if c.metadata.name in ("owned", "kept")]

    wait_for(gone, "the owned ConfigMaps collected", timeout=15, interval=0.05)


def test_orphan_and_foreground_propagation(apps, core, ns):
    d = apps.create_namespaced_deployment(ns, deployment("o1"))
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "o1", "uid": d.metadata.uid}
    core.create_namespaced_config_map(ns, {"metadata": {"name": "orphan", "ownerReferences": [ref]}})
    apps.delete_namespaced_deployment("o1", ns, propagation_policy="Orphan")
    wait_for(lambda: not [x for x in apps.list_namespaced_deployment(ns).items if x.metadata.name == "o1"],
             "Deployment o1 deleted", timeout=15, interval=0.05)
    assert not core.read_namespaced_config_map("orphan", ns).metadata.owner_references
    d = apps.create_namespaced_deployment(ns, deployment("f1"))
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "f1", "uid": d.metadata.uid}
    core.create_namespaced_config_map(ns, {"metadata": {"name": "dep", "ownerReferences": [ref]}})
    out = apps.delete_namespaced_deployment("f1", ns, propagation_policy="Foreground")
    assert out is not None
    wait_for(lambda: not [x for x in apps.list_namespaced_deployment(ns).items if x.metadata.name == "f1"],
             "Deployment f1 deleted", timeout=15, interval=0.05)
    assert not [c for c in core.list_namespaced_config_map(ns).items if c.metadata.name == "dep"]


def test_finalizers_hold_deletion(core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "fin", "finalizers": ["example.com/x"]}})
    core.delete_namespaced_config_map("fin", ns)
    cm = core.read_namespaced_config_map("fin", ns)
    assert cm.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("fin", ns, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as ei:
        core.read_namespaced_config_map("fin", ns)
    assert ei.value.status == 404


def test_delete_collection(core, ns):
    for i in range(3):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"dc{i}", "labels": {"g": "a" if i else "b"}}})
    core.delete_collection_namespaced_config_map(ns, label_selector="g=a")
    assert sorted(c.metadata.name for c in core.list_namespaced_config_map(ns).items) == ["dc0"]


# ---- watch -----------------------------------------------------------------------------------------------------------
def test_watch_stream_and_resume(core, ns):
    lst = core.list_namespaced_config_map(ns)
    rv = lst.metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "w1"}})
    core.patch_namespaced_config_map("w1", ns, {"data": {"a": "1"}})
    core.delete_namespaced_config_map("w1", ns)
    w = watch.Watch()
    events = []
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=2):
        events.append((ev["type"], ev["object"].metadata.name))
        if len(events) == 3:
            w.stop()
    assert events == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


def test_watch_live_events_with_label_selector(core, ns):
    got = []
    # watch from the list's resourceVersion, as informers do: no change after it is missed, however late the
    # stream connects
    rv = core.list_namespaced_config_map(ns, label_selector="watch=me").metadata.resource_version

    def run():
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_config_map, ns, label_selector="watch=me", resource_version=rv,
                           timeout_seconds=10):
            got.append((ev["type"], ev["object"].metadata.name))
            if len(got) >= 2:
                w.stop()

    t = threading.Thread(target=run)
    t.start()
    core.create_namespaced_config_map(ns, {"metadata": {"name": "no"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "yes", "labels": {"watch": "me"}}})
    core.patch_namespaced_config_map("yes", ns, {"metadata": {"labels": {"watch": "other"}}})
    t.join(15)
    assert got == [("ADDED", "yes"), ("DELETED", "yes")]


def test_watch_bookmarks_and_expired(raw, core, ns):
    params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "1"}
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    r = raw("GET", f"/api/v1/namespaces/{ns}/configmaps", params=dict(params, resourceVersion=rv))
    lines = [json.loads(x) for x in r.text.splitlines() if x.strip()]
    assert lines[-1]["type"] == "BOOKMARK" and lines[-1]["object"]["metadata"]["resourceVersion"]


# ---- dynamic client --------------------------------------------------------------------------------------------------
def test_dynamic_client(api_client, ns, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    dyn = dynamic.DynamicClient(api_client)
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deps.create(body=deployment("dyn"), namespace=ns)
    got = deps.get(name="dyn", namespace=ns)
    assert got.spec.replicas == 1
    hpa = dyn.resources.get(api_version="autoscaling/v2", kind="HorizontalPodAutoscaler")
    assert hpa.namespaced
    applied = deps.server_side_apply(body=deployment("dyn2", replicas=2), namespace=ns, field_manager="dyn")
    assert applied.spec.replicas == 2
    assert [i.metadata.name for i in deps.get(namespace=ns, label_selector="app=dyn").items] == ["dyn"]


# ---- auth ------------------------------------------------------------------------------------------------------------
def test_requests_without_token_are_401(sandbox_info):
    http = urllib3.PoolManager(cert_reqs="CERT_NONE")
    urllib3.disable_warnings()
    r = http.request("GET", sandbox_info["kube_endpoint"] + "/api/v1/namespaces")
    assert r.status == 401 and json.loads(r.data)["reason"] == "Unauthorized"
    r = http.request("GET", sandbox_info["kube_endpoint"] + "/api/v1/namespaces",
                     headers={"Authorization": "Bearer wrong"})
    assert r.status == 401


def test_temporary_token_expires(kube, tmp_path):
    text, expiration = kube.user_kubeconfig(temporary_minutes=1, private_ip=False)
    assert expiration.endswith("Z")
    path = tmp_path / "user.kubeconfig"
    path.write_text(text)
    c = config.new_client_from_config(str(path))
    v1 = client.CoreV1Api(c)
    assert v1.read_namespace("default").metadata.name == "default"
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:  # one simulated minute passes
        try:
            v1.read_namespace("default")
        except ApiException as e:
            status = e.status
            break
        time.sleep(0.2)
    assert status == 401
    c.close()


def test_kubeconfig_file(sandbox_info):
    import os
    import stat

    import yaml

    path = sandbox_info["kubeconfig"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = yaml.safe_load(Path(path).read_text())
    assert doc["clusters"][0]["cluster"]["server"] == sandbox_info["kube_endpoint"]
    assert doc["clusters"][0]["cluster"]["certificate-authority-data"]
    assert doc["current-context"] == "sandbox"


# ---- discovery -------------------------------------------------------------------------------------------------------
def test_version_and_discovery(api_client, raw):
    v = client.VersionApi(api_client).get_code()
    assert (v.major, v.minor) == ("1", "33") and v.git_version.startswith("v1.33.")
    groups = {g.name: g for g in client.ApisApi(api_client).get_api_versions().groups}
    assert "autoscaling" in groups and [x.version for x in groups["autoscaling"].versions] == ["v2"]
    res = client.AppsV1Api(api_client).get_api_resources()
    names = {r.name: r for r in res.resources}
    assert names["deployments/scale"].kind == "Scale" and names["deployments/scale"].group == "autoscaling"
    assert "deploy" in names["deployments"].short_names
    r = raw("GET", "/apis", headers={"Accept": "application/json;g=apidiscovery.k8s.io;v=v2;"
                                               "as=APIGroupDiscoveryList,application/json"})
    assert r.headers["Content-Type"] == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    body = r.json()
    assert body["kind"] == "APIGroupDiscoveryList"
    apps = next(i for i in body["items"] if i["metadata"]["name"] == "apps")
    dep = next(r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments")
    assert {s["subresource"] for s in dep["subresources"]} == {"status", "scale"}


# ---- persistence -----------------------------------------------------------------------------------------------------
def test_objects_and_resource_version_survive_restart(tmp_path):
    from sandbox.runner import Sandbox

    sb = Sandbox(tmp_path / "sb", speed=50.0)
    info = sb.start()
    try:
        c = config.new_client_from_config(info["kubeconfig"])
        v1 = client.CoreV1Api(c)
        cm = v1.create_namespaced_config_map("default", {"metadata": {"name": "keep"}, "data": {"a": "1"}})
        rv = int(cm.metadata.resource_version)
        c.close()
    finally:
        sb.stop()
    sb = Sandbox(tmp_path / "sb", speed=50.0)
    info = sb.start()
    try:
        c = config.new_client_from_config(info["kubeconfig"])
        v1 = client.CoreV1Api(c)
        assert v1.read_namespaced_config_map("keep", "default").data == {"a": "1"}
        cm2 = v1.create_namespaced_config_map("default", {"metadata": {"name": "later"}})
        assert int(cm2.metadata.resource_version) > rv
        assert len([n for n in v1.list_namespace().items if n.metadata.name == "default"]) == 1
        # the watch history did not survive the restart: watching from before it is 410 Expired
        w = watch.Watch()
        with pytest.raises(ApiException) as ei:
            for _ in w.stream(v1.list_namespaced_config_map, "default", resource_version=str(rv - 1)):
                pass
        assert ei.value.status == 410
        c.close()
    finally:
        sb.stop()


def test_a_body_over_the_request_limit_is_413(core, raw, ns):
    """kube-apiserver's MaxRequestBodyBytes (3 MiB): 413 RequestEntityTooLarge; the sandbox stored 40 MiB before."""
    big = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="too-big"), data={"blob": "x" * (4 * 1024 * 1024)})
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map(ns, big)
    assert exc.value.status == 413
    status = _status(exc.value)
    assert status["reason"] == "RequestEntityTooLarge" and status["message"].endswith("limit is 3145728")
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_config_map("too-big", ns)
    assert exc.value.status == 404


def test_a_body_nested_beyond_the_parser_is_400(raw, ns):
    r = raw("POST", f"/api/v1/namespaces/{ns}/configmaps", b"[" * 200000 + b"]" * 200000)
    assert r.status_code == 400 and r.json()["reason"] == "BadRequest"
