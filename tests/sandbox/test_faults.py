"""Faults from a file (``Sandbox(options={"faults": path})`` = ``sandbox up --faults``) and from the admin endpoint,
seen through the real clients: oss2, the classic ACK SDK (through the project's ``AckApi``) and the Kubernetes
client. Each injected error must have the real service's shape, and the project's retrying code must get through
a 50 % 5xx rate."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import oss2
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from polling import wait_for

from blocks.alibaba import AlibabaCloudCredentials
from clients.ack import AckApi, AckApiError
from clients.kube import KubeClients
from clients.oss import ensure_bucket, retrying
from sandbox.faults import FaultEngine, parse_spec
from sandbox.kube.operations import operation as kube_operation
from sandbox.oss.operations import operation as oss_operation
from sandbox.runner import Sandbox

FAULTS_FILE = """
seed: 11
oss:
  rules:
    - operation: PutObject
      throttle_rate: 1.0
    - operation: HeadObject
      error_rate: 1.0
      error_status: 503
    - operation: UploadPart
      latency_s: 0.05
ack:
  rules:
    - operation: DescribeClusterNodePools
      throttle_rate: 1.0
kube:
  rules:
    - operation: create configmaps
      throttle_rate: 1.0
"""


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    path = d / "faults.yaml"
    path.write_text(FAULTS_FILE)
    s = Sandbox(d / "sb", speed=100.0, options={"faults": str(path)})
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def info(sb) -> dict:
    return sb.info


def admin(info: dict, method: str, path: str, token: str | None = None, **kw) -> httpx.Response:
    tok = info["admin_token"] if token is None else token
    return httpx.request(method, info["admin_endpoint"] + path, headers={"Authorization": f"Bearer {tok}"}, **kw)


def bucket(info: dict, name: str) -> oss2.Bucket:
    return oss2.Bucket(oss2.Auth(info["access_key_id"], info["access_key_secret"]), info["oss_endpoint"], name)


def ack_api(info: dict, **kw) -> AckApi:
    creds = AlibabaCloudCredentials(access_key_id=info["access_key_id"], access_key_secret=info["access_key_secret"],
                                    region_id=info["region"], cs_endpoint=info["cs_endpoint"])
    return AckApi(creds, info["cluster_id"], **kw)


def test_file_faults_fail_the_named_operations_with_real_error_shapes(info):
    b = bucket(info, "faults-file")
    b.create_bucket()  # PutBucket is not named: it passes
    with pytest.raises(oss2.exceptions.ServerError) as e:
        b.put_object("a.txt", b"hello")
    assert e.value.status == 429 and e.value.code == "QpsLimitExceeded"
    assert e.value.message == "Please reduce your request rate." and e.value.request_id
    # multipart is not PutObject: it goes through; reads too
    up = b.init_multipart_upload("big.bin").upload_id
    part = b.upload_part("big.bin", up, 1, b"x" * 1024)
    b.complete_multipart_upload("big.bin", up, [oss2.models.PartInfo(1, part.etag)])
    assert b.get_object("big.bin").read() == b"x" * 1024
    with pytest.raises(oss2.exceptions.ServerError) as e:  # HEAD: the error document comes in x-oss-err
        b.head_object("big.bin")
    assert e.value.status == 503 and e.value.code == "ServiceUnavailable"

    api = ack_api(info, max_attempts=2, backoff=0.01, backoff_max=0.02)
    with pytest.raises(AckApiError) as e:
        api.describe_node_pools()
    assert e.value.code == "Throttling.User" and e.value.http_status == 400 and e.value.throttled
    assert "flow control" in e.value.message
    assert api.describe_cluster()["cluster_id"] == info["cluster_id"]  # another action: fine

    with config.new_client_from_config(info["kubeconfig"]) as c:
        core = client.CoreV1Api(c)
        with pytest.raises(ApiException) as e:
            core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
        assert e.value.status == 429 and e.value.headers["Retry-After"] == "1"
        body = json.loads(e.value.body)
        assert body["kind"] == "Status" and body["reason"] == "TooManyRequests"
        assert body["details"]["retryAfterSeconds"] == 1
        core.list_namespaced_config_map("default")  # list is not named

    counters = admin(info, "GET", "/faults").json()["counters"]
    assert counters["oss"]["throttled"] == 1 and counters["oss"]["errors"] == 1
    assert counters["oss"]["delayed"] == 1  # the slow part
    assert counters["cs"]["throttled"] == 2 and counters["kube"]["throttled"] == 1


def test_half_5xx_rate_is_survived_by_the_project_retries(info):
    r = admin(info, "PUT", "/faults", content="seed: 3\noss: {error_rate: 0.5}\n"
                                               "ack: {error_rate: 0.5, error_status: 503}\n"
                                               "kube: {error_rate: 0.5, error_status: 503}\n")
    assert r.status_code == 200, r.text
    b = bucket(info, "faults-retry")
    assert ensure_bucket(b, attempts=12) is True
    retry = retrying(attempts=12, max_wait_s=0.02)
    for i in range(10):
        retry(b.put_object, f"k{i}", b"v" * 100)
    api = ack_api(info, max_attempts=12, backoff=0.01, backoff_max=0.02)
    for _ in range(25):
        assert api.describe_node_pools()  # GET: retried on 5xx
    # the Kubernetes steps' server-side apply and reads: retried on 503 with backoff (clients.kube)
    kube = KubeClients.from_kubeconfig_file(info["kubeconfig"], attempts=12, backoff_s=0.01, backoff_max_s=0.02)
    try:
        for i in range(10):
            kube.apply({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": f"faults-retry-{i}", "namespace": "default"}, "data": {"i": str(i)}})
        assert kube.get("ConfigMap", "faults-retry-9", "default")["data"] == {"i": "9"}
    finally:
        kube.close()
    status = admin(info, "GET", "/faults").json()["counters"]
    for svc in ("oss", "cs", "kube"):
        c = status[svc]
        assert c["errors"] > 0 and 0.2 <= c["errors"] / c["requests"] <= 0.8, (svc, c)
    # cleared: nothing fails any more; the stored objects are all there
    assert admin(info, "PUT", "/faults", content="").status_code == 200
    assert sorted(o.key for o in oss2.ObjectIterator(b)) == sorted(f"k{i}" for i in range(10))
    assert admin(info, "GET", "/faults").json()["counters"]["oss"]["errors"] == 0


def test_ack_throttling_with_a_lower_case_body_is_retried(info, caplog):
    """Issue 12 (6): ACK's error body has lower-case ``code``; the classic SDK alone would call it
    SDK.UnknownServerError and the throttled calls (HTTP 400 Throttling.User) would not be retried."""
    r = admin(info, "PUT", "/faults", content="seed: 5\nack: {throttle_rate: 0.5}\n")
    assert r.status_code == 200, r.text
    api = ack_api(info, max_attempts=15, backoff=0.01, backoff_max=0.02)
    caplog.set_level("WARNING", logger="clients.ack")
    try:
        for _ in range(10):
            assert api.describe_cluster()["cluster_id"] == info["cluster_id"]
        counters = admin(info, "GET", "/faults").json()["counters"]["cs"]
        assert counters["throttled"] > 0, counters
        retried = [rec.getMessage() for rec in caplog.records if "retrying" in rec.getMessage()]
        assert retried and all("Throttling.User" in m and "HTTP 400" in m for m in retried), retried[:3]
    finally:
        assert admin(info, "PUT", "/faults", content="").status_code == 200


def test_admin_endpoint_requires_a_token_and_names_bad_fields(info):
    assert admin(info, "GET", "/faults", token="nope").status_code == 401
    assert httpx.get(info["admin_endpoint"] + "/faults").status_code == 401
    assert admin(info, "GET", "/faults", token=info["access_key_secret"]).status_code == 200
    r = admin(info, "PUT", "/faults", json={"ack": {"rules": [{"operation": "X", "throttle_rate": 1.5}]}})
    assert r.status_code == 422 and "ack.rules.0.throttle_rate" in r.json()["error"]
    r = admin(info, "PUT", "/faults", json={"oss": {"bogus": 1}})
    assert r.status_code == 422 and "oss.bogus" in r.json()["error"]
    r = admin(info, "PUT", "/faults", json={"kube": {"throttle_rate": 0.7, "error_rate": 0.6}})
    assert r.status_code == 422 and "must not exceed 1" in r.json()["error"]


def test_boot_failures_and_spot_stockouts(sb, info):
    zones = info["zones"]
    r = admin(info, "PUT", "/faults", json={
        "boot_failures": [{"instance_type": "ecs.g7.*", "count": 1}],
        "spot_stockouts": [{"instance_type": "ecs.gn6i-c4g1.xlarge", "available": 0}]})
    assert r.status_code == 200, r.text
    fleet = sb.services.fleet
    assert all(fleet.stock("ecs.gn6i-c4g1.xlarge", z, spot=True) == 0 for z in zones)
    api = ack_api(info, backoff=0.01, backoff_max=0.02)
    default = next(p for p in api.describe_node_pools() if p.nodepool_info.get("is_default"))
    before = default.status.total_nodes
    api.scale_node_pool(default.nodepool_id, 1)

    def failed_activity():
        acts = [a for a in fleet.activities(default.nodepool_id) if a.final_status == "Failed"]
        return acts and acts[-1]

    act = wait_for(failed_activity, "a failed scaling activity")
    assert "failed to launch" in act.status_message and "InstanceLaunchFailed" in act.status_message
    # ESS retries after the shortfall period; the one injected failure is spent, so the node comes
    wait_for(lambda: api.describe_node_pool(default.nodepool_id).status.total_nodes == before + 1,
             f"{before + 1} nodes in the default pool")
    assert admin(info, "GET", "/faults").json()["boot_failures_done"] == [1]
    assert admin(info, "PUT", "/faults", content="{}").status_code == 200  # stock-outs are undone
    assert all(fleet.stock("ecs.gn6i-c4g1.xlarge", z, spot=True) > 0 for z in zones)


def test_an_invalid_faults_file_stops_the_start_naming_the_field(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("oss:\n  rules:\n    - operation: UploadPart\n      latency_s: -1\n")
    with pytest.raises(RuntimeError, match=r"oss\.rules\.0\.latency_s"):
        Sandbox(tmp_path / "sb", speed=100.0, options={"faults": str(bad)}).start()


def test_engine_is_seeded_and_names_operations():
    spec = parse_spec({"seed": 5, "kube": {"error_rate": 0.5}})

    def run() -> list[str]:
        e = FaultEngine(spec)
        return [e.decide("kube", "GET", "/api/v1/pods", "list pods").kind for _ in range(50)]

    first = run()
    assert first == run() and 10 < first.count("error") < 40  # reproducible, about half
    e = FaultEngine(parse_spec({"reclaim_rate": 3600.0}))
    assert 0.99 < e.reclaim_probability(5.0) <= 1.0 and FaultEngine().reclaim_probability(5.0) == 0.0
    assert oss_operation("PUT", "/b/k", {"partNumber": ["1"], "uploadId": ["u"]}, {}) == "UploadPart"
    assert oss_operation("POST", "/b/k", {"uploads": [""]}, {}) == "InitiateMultipartUpload"
    assert oss_operation("GET", "/b", {"list-type": ["2"]}, {}) == "ListObjectsV2"
    assert oss_operation("HEAD", "/b/k", {"objectMeta": [""]}, {}) == "GetObjectMeta"
    assert kube_operation("POST", "/apis/apps/v1/namespaces/d/deployments", {}) == "create deployments"
    assert kube_operation("PATCH", "/apis/apps/v1/namespaces/d/deployments/x/scale", {}) == "patch deployments/scale"
    assert kube_operation("GET", "/api/v1/pods", {"watch": ["true"]}) == "watch pods"
    assert kube_operation("GET", "/apis", {}) == "discovery"
