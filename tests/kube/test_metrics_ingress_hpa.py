"""Ingress data plane, external metrics and the HPA, end to end over the real wire protocols.

A sandbox of its own (speed 50). The backend of the Ingress is a real HTTP server on loopback, registered through
the ingress's pod-endpoint resolver seam for a pod IP of a selector-less Service's Endpoints (the way a pod
runtime plugs in). No wall-clock assertions: scale-down timing is checked in simulated time.
"""

from __future__ import annotations

import base64
import json
import math
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client, config, watch
from polling import wait_for  # tests/polling.py

SPEED = 50.0
POD_IP = "10.250.0.7"
HOST = "test.example.com"


class _Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, str]] = []

    def _answer(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        _Backend.seen.append({k.lower(): v for k, v in self.headers.items()})
        out = json.dumps({"path": self.path, "method": self.command, "len": len(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    from sandbox.runner import Sandbox

    s = Sandbox(tmp_path_factory.mktemp("sb-hpa"), speed=SPEED)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def backend():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def api(sb):
    c = config.new_client_from_config(sb.info["kubeconfig"])
    yield c
    c.close()


@pytest.fixture(scope="module")
def raw(sb):
    doc = yaml.safe_load(Path(sb.info["kubeconfig"]).read_text())
    cluster = doc["clusters"][0]["cluster"]
    ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    http = httpx.Client(base_url=cluster["server"], verify=ctx, timeout=30,
                        headers={"Authorization": f"Bearer {doc['users'][0]['user']['token']}"})
    yield http
    http.close()


@pytest.fixture(scope="module")
def app_ns(sb, api, backend):
    """A namespace with Service ``web`` (no selector) -> Endpoints at POD_IP:8501, an Ingress, a Deployment."""
    core, apps, net = client.CoreV1Api(api), client.AppsV1Api(api), client.NetworkingV1Api(api)
    ns = "t-" + uuid.uuid4().hex[:8]
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_service(ns, {"metadata": {"name": "web"}, "spec": {
        "ports": [{"name": "http-serving", "port": 8501, "targetPort": 8501}]}})
    core.create_namespaced_endpoints(ns, {"metadata": {"name": "web"}, "subsets": [{
        "addresses": [{"ip": POD_IP}], "ports": [{"name": "http-serving", "port": 8501}]}]})
    core.create_namespaced_service(ns, {"metadata": {"name": "empty"}, "spec": {
        "ports": [{"name": "http", "port": 80}]}})
    labels = {"app": "web"}
    apps.create_namespaced_deployment(ns, {"metadata": {"name": "web"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels},
                     "spec": {"containers": [{"name": "main", "image": "nginx:1.25"}]}}}})
    net.create_namespaced_ingress(ns, {"metadata": {"name": "web"}, "spec": {
        "ingressClassName": "nginx",
        "rules": [{"host": HOST, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 8501}}}},
            {"path": "/empty", "pathType": "Prefix",
             "backend": {"service": {"name": "empty", "port": {"number": 80}}}}]}}]}})
    return ns


def _selector(sb, ns: str, **over) -> dict[str, str]:
    sel = {"sls.project": f"k8s-log-{sb.info['cluster_id']}", "sls.logstore": "nginx-ingress",
           "sls.ingress.route": f"{ns}-web-8501"}
    sel.update(over)
    return sel


def _metric(raw, ns: str, sel: dict[str, str], metric: str = "sls_ingress_qps") -> httpx.Response:
    return raw.get(f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}",
                   params={"labelSelector": ",".join(f"{k}={v}" for k, v in sorted(sel.items()))})


class _Load:
    """Constant-rate GETs through the ingress from a thread."""

    def __init__(self, url: str, rate: float) -> None:
        self.url, self.rate = url, rate
        self.stop_evt = threading.Event()
        self.codes: dict[int, int] = {}
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Host": HOST}, timeout=10) as c:
            nxt = time.monotonic()
            while not self.stop_evt.is_set():
                r = c.get("/v1/models/m")
                self.codes[r.status_code] = self.codes.get(r.status_code, 0) + 1
                nxt += 1.0 / self.rate
                time.sleep(max(0.0, nxt - time.monotonic()))

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_evt.set()
        self.t.join(10)


# ---- ingress ---------------------------------------------------------------------------------------------------------
def test_ingress_status_address_published(sb, api, app_ns):
    net = client.NetworkingV1Api(api)
    port = int(sb.info["ingress_endpoint"].rsplit(":", 1)[1])

    def published():
        ing = net.read_namespaced_ingress(name="web", namespace=app_ns)
        lb = ing.status.load_balancer.ingress if ing.status and ing.status.load_balancer else None
        return lb
    lb = wait_for(published, what="ingress address")
    assert lb[0].ip == "127.0.0.1"
    assert [(p.port, p.protocol) for p in lb[0].ports] == [(port, "TCP")]


def test_ingress_routing_and_nginx_errors(sb, app_ns, backend):
    ingress = sb.services.ingress
    url = sb.info["ingress_endpoint"]
    with httpx.Client(base_url=url, timeout=10) as c:
        # route known but the endpoint is not reachable from here (no resolver yet): like a refused connection
        r = wait_for(lambda: (lambda r: r if r.status_code != 404 else None)(c.get("/x", headers={"Host": HOST})),
                  what="route installed")
        assert r.status_code == 502 and "502 Bad Gateway" in r.text
        # the pod-endpoint seam: the runtime says where POD_IP:8501 really listens
        ingress.add_resolver(lambda ip, port: backend if (ip, port) == (POD_IP, 8501) else None)
        r = c.post("/v1/models/m:predict?x=1", headers={"Host": f"{HOST}:80", "X-Forwarded-For": "1.2.3.4"},
                   content=b'{"instances": [1]}')
        assert r.status_code == 200
        assert r.json() == {"path": "/v1/models/m:predict?x=1", "method": "POST", "len": 18}
        seen = _Backend.seen[-1]
        assert seen["host"] == f"{HOST}:80" and seen["x-forwarded-for"] == "1.2.3.4, 127.0.0.1"
        assert seen["x-real-ip"] == "127.0.0.1" and len(seen["x-request-id"]) == 32
        # unknown host -> default backend 404; Service without endpoints -> 503
        assert c.get("/", headers={"Host": "other.example.com"}).status_code == 404
        r = c.get("/empty/a", headers={"Host": HOST})
        assert r.status_code == 503 and "Service Temporarily Unavailable" in r.text
        # Prefix matches whole path elements: /emptyx goes to "/" (web)
        assert c.get("/emptyx", headers={"Host": HOST}).status_code == 200
        # nginx's client_max_body_size (ingress-nginx proxy-body-size) defaults to 1m: a bigger body gets 413
        # without reaching the upstream; 1 MiB exactly still passes
        before = len(_Backend.seen)
        r = c.post("/v1/models/m:predict", headers={"Host": HOST}, content=b"x" * (50 * 1024 * 1024))
        assert r.status_code == 413 and "413 Request Entity Too Large" in r.text
        r = c.post("/v1/models/m:predict", headers={"Host": HOST}, content=iter([b"x" * 65536] * 20))
        assert r.status_code == 413
        assert len(_Backend.seen) == before
        r = c.post("/v1/models/m:predict", headers={"Host": HOST}, content=b"x" * (1024 * 1024))
        assert r.status_code == 200 and r.json()["len"] == 1024 * 1024
    assert ingress.log.total(f"{app_ns}-web-8501") >= 2


# ---- external metrics ------------------------------------------------------------------------------------------------
def test_external_metrics_discovery(raw):
    r = raw.get("/apis/external.metrics.k8s.io/v1beta1")
    assert r.status_code == 200
    names = {x["name"] for x in r.json()["resources"]}
    assert {"sls_ingress_qps", "sls_ingress_latency_p95"} <= names
    groups = raw.get("/apis").json()["groups"]
    assert any(g["name"] == "external.metrics.k8s.io" for g in groups)


def test_external_metric_errors_like_the_adapter(sb, raw, app_ns):
    r = _metric(raw, app_ns, _selector(sb, app_ns, **{"sls.project": "k8s-log-nope"}))
    assert r.status_code == 500
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "InternalError"
    assert "ProjectNotExist" in body["message"] and "k8s-log-nope" in body["message"]
    r = _metric(raw, app_ns, {"sls.project": f"k8s-log-{sb.info['cluster_id']}"})
    assert r.status_code == 500 and "sls.project and sls.logstore must be provided" in r.json()["message"]
    r = _metric(raw, app_ns, _selector(sb, app_ns, **{"sls.logstore": "other"}))
    assert r.status_code == 500 and "LogStoreNotExist" in r.json()["message"]
    # an unknown route is an SLS query over no logs: count(1)/15 = 0, not an error
    r = _metric(raw, app_ns, _selector(sb, app_ns, **{"sls.ingress.route": "nope-svc-1"}))
    assert r.status_code == 200 and r.json()["items"][0]["value"] == "0"


def test_qps_metric_rises_under_constant_load(sb, raw, app_ns, backend):
    sb.services.ingress.add_resolver(lambda ip, port: backend if (ip, port) == (POD_IP, 8501) else None)
    with _Load(sb.info["ingress_endpoint"], rate=40):
        def qps():
            r = _metric(raw, app_ns, _selector(sb, app_ns))
            assert r.status_code == 200, r.text
            v = int(r.json()["items"][0]["value"])
            return r.json() if v >= 20 else None
        body = wait_for(qps, what="qps >= 20")
        lat = _metric(raw, app_ns, _selector(sb, app_ns), "sls_ingress_latency_p99").json()
    assert body["kind"] == "ExternalMetricValueList" and body["apiVersion"] == "external.metrics.k8s.io/v1beta1"
    item = body["items"][0]
    assert item["metricName"] == "sls_ingress_qps" and item["metricLabels"] == {} and item["timestamp"]
    assert int(item["value"]) <= 60  # ~40 requests per real second
    assert int(lat["items"][0]["value"]) >= 0


# ---- HPA -------------------------------------------------------------------------------------------------------------
def test_hpa_scales_out_per_formula_then_in_after_stabilization(sb, api, raw, app_ns, backend):
    sb.services.ingress.add_resolver(lambda ip, port: backend if (ip, port) == (POD_IP, 8501) else None)
    # the route is idle (earlier tests' traffic has left the window)
    wait_for(lambda: _metric(raw, app_ns, _selector(sb, app_ns)).json()["items"][0]["value"] == "0", what="idle")
    apps, auto, core = client.AppsV1Api(api), client.AutoscalingV2Api(api), client.CoreV1Api(api)
    # statusReplicas of the target (the deployment controller's count) is 1 before load starts
    wait_for(lambda: (apps.read_namespaced_deployment_status("web", app_ns).status.replicas or 0) == 1,
          what="deployment status.replicas == 1")
    target, max_r = 10, 10
    selector = _selector(sb, app_ns)
    auto.create_namespaced_horizontal_pod_autoscaler(app_ns, {
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": max_r,
                 "metrics": [{"type": "External", "external": {
                     "metric": {"name": "sls_ingress_qps", "selector": {"matchLabels": selector}},
                     "target": {"type": "AverageValue", "averageValue": str(target)}}}]}})
    # idle: ValidMetricFound, no rescale
    wait_for(lambda: (lambda h: h.status and h.status.conditions and any(
        c.type == "ScalingActive" and c.status == "True" for c in h.status.conditions))(
        auto.read_namespaced_horizontal_pod_autoscaler("web", app_ns)), what="ScalingActive")

    seen: list[dict] = []
    w = watch.Watch()

    def collect():
        for ev in w.stream(auto.list_namespaced_horizontal_pod_autoscaler, app_ns, timeout_seconds=60):
            seen.append(api.sanitize_for_serialization(ev["object"]))
            if (ev["object"].status.desired_replicas or 0) > 1:
                w.stop()
    t = threading.Thread(target=collect, daemon=True)
    t.start()
    with _Load(sb.info["ingress_endpoint"], rate=35) as load:
        t.join(60)
        assert not t.is_alive(), "no scale-up seen"
        up = next(o for o in seen if (o["status"].get("desiredReplicas") or 0) > 1)
        stop_sim = sb.ctx.clock.now()
    assert load.codes.get(200, 0) > 0 and set(load.codes) == {200}

    # the recommendation is the formula on the metric the controller used (statusReplicas was 1, so the
    # reported per-pod average IS the total usage): desired = ceil(usage / target), clamped to
    # [min, min(max, max(2 * current, 4))] (no spec.behavior)
    status = up["status"]
    cur = status["currentMetrics"][0]["external"]
    assert cur["metric"]["name"] == "sls_ingress_qps"
    usage = float(cur["current"]["averageValue"].rstrip("m")) / (1000 if cur["current"]["averageValue"].endswith(
        "m") else 1)
    expect = min(math.ceil(usage / target), max_r, max(2 * 1, 4))
    assert status["desiredReplicas"] == expect
    assert status["currentReplicas"] == 1 and status["lastScaleTime"]
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["AbleToScale"]["status"] == "True" and conds["AbleToScale"]["reason"] == "SucceededRescale"
    assert conds["ScalingActive"]["reason"] == "ValidMetricFound"
    assert conds["ScalingLimited"]["reason"] in ("DesiredWithinRange", "ScaleUpLimit")
    assert wait_for(lambda: apps.read_namespaced_deployment_scale("web", app_ns).spec.replicas == expect,
                 what="deployment scaled")
    events = core.list_namespaced_event(app_ns, field_selector="involvedObject.kind=HorizontalPodAutoscaler").items
    rescale = [e for e in events if e.reason == "SuccessfulRescale"]
    sel_s = ("&LabelSelector{MatchLabels:map[string]string{" + "".join(f"{k}: {v}," for k, v in sorted(
        selector.items())) + "},MatchExpressions:[]LabelSelectorRequirement{},}")
    assert rescale and rescale[0].message == (f"New size: {expect}; reason: external metric "
                                              f"sls_ingress_qps({sel_s}) above target")
    assert rescale[0].source.component == "horizontal-pod-autoscaler"

    # load stopped: the recommendation drops to 1, but the 300 s downscale stabilization window keeps N
    def scaled_in():
        h = auto.read_namespaced_horizontal_pod_autoscaler("web", app_ns)
        return h if apps.read_namespaced_deployment_scale("web", app_ns).spec.replicas == 1 else None
    h = wait_for(scaled_in, timeout=60, what="scale-in")
    last_scale = h.status.last_scale_time.timestamp()
    # the last high recommendation was made at most one sync (15 s) before the load stopped
    assert last_scale - stop_sim >= 300 - 15 - 2
    conds = {c.type: c for c in h.status.conditions}
    assert conds["AbleToScale"].reason == "SucceededRescale"
    msgs = [e.message for e in core.list_namespaced_event(app_ns).items if e.reason == "SuccessfulRescale"]
    assert "New size: 1; reason: All metrics below target" in msgs


def test_hpa_failed_external_metric_condition(sb, api, app_ns):
    auto, core = client.AutoscalingV2Api(api), client.CoreV1Api(api)
    auto.create_namespaced_horizontal_pod_autoscaler(app_ns, {
        "metadata": {"name": "bad"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "maxReplicas": 3,
                 "metrics": [{"type": "External", "external": {
                     "metric": {"name": "sls_ingress_qps",
                                "selector": {"matchLabels": _selector(sb, app_ns, **{"sls.project": "wrong"})}},
                     "target": {"type": "AverageValue", "averageValue": "10"}}}]}})

    def failed():
        h = auto.read_namespaced_horizontal_pod_autoscaler("bad", app_ns)
        conds = {c.type: c for c in (h.status.conditions or [])} if h.status else {}
        c = conds.get("ScalingActive")
        return c if c and c.status == "False" else None
    c = wait_for(failed, what="ScalingActive=False")
    assert c.reason == "FailedGetExternalMetric"
    assert c.message.startswith(f"the HPA was unable to compute the replica count: unable to get external metric "
                                f"{app_ns}/sls_ingress_qps/&LabelSelector{{")
    assert "ProjectNotExist" in c.message
    reasons = {e.reason for e in core.list_namespaced_event(app_ns).items if e.involved_object.name == "bad"}
    assert {"FailedGetExternalMetric", "FailedComputeMetricsReplicas"} <= reasons
