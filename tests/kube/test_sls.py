"""The sandbox's SLS endpoint with the real ``aliyun-log-python-sdk`` (``LogClient.get_log``), over requests sent
through the sandbox's ingress with a canary Ingress at a weight.

What is checked, from the SDK's side: the signature (a wrong secret is ``SignatureNotMatch``, an unknown AccessKey
``Unauthorized``), SLS's error shapes (``ProjectNotExist``, ``LogStoreNotExist``, ``ParameterInvalid`` for a query
outside the subset), and that the flow's query counts exactly the requests the test sent and saw answered, per
version, with the analysis client's User-Agent left out; logs become queryable only after the shipping lag; the
metrics adapter's window ends ``sls.query.delay`` in the past (default 10 s) and an injected SLS failure is the
external metrics API's 500.
"""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from aliyun.log import LogClient, LogException
from kubernetes import client
from polling import wait_for

from clients.sls import SlsReader, per_version_query

UA_USER = "user-app/1.0"
UA_PROBE = "elastic-inference-analysis/1"


def _server(name: str, fail_every: int = 0):
    """A backend answering its name; with ``fail_every`` n, every n-th request it serves is a 500."""
    served = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            with lock:
                served[0] += 1
                fail = bool(fail_every) and served[0] % fail_every == 0
            out = json.dumps({"version": name}).encode()
            self.send_response(500 if fail else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture(scope="module")
def routed(sandbox, api_client):
    """Namespace with Services ``stable`` and ``canary`` (the canary fails every 4th request), a main Ingress and a
    canary Ingress at weight 40 on a host of its own."""
    servers = {"stable": _server("stable"), "canary": _server("canary", fail_every=4)}
    base = f"10.253.{random.randrange(256)}."
    ips = {name: base + str(10 + i) for i, name in enumerate(servers)}
    addr = {ips[k]: srv.server_address for k, srv in servers.items()}

    def resolve(ip: str, port: int):
        return addr.get(ip) if port == 8501 else None

    sandbox.services.ingress.add_resolver(resolve)
    core, net = client.CoreV1Api(api_client), client.NetworkingV1Api(api_client)
    ns = "sls-" + "".join(random.choices("abcdefghij", k=6))
    core.create_namespace({"metadata": {"name": ns}})
    for name in servers:
        core.create_namespaced_service(ns, {"metadata": {"name": name}, "spec": {
            "ports": [{"name": "http-serving", "port": 8501, "targetPort": 8501}]}})
        core.create_namespaced_endpoints(ns, {"metadata": {"name": name}, "subsets": [{
            "addresses": [{"ip": ips[name]}], "ports": [{"name": "http-serving", "port": 8501}]}]})
    host = f"{ns}.example.com"

    def ingress(name: str, service: str, annotations: dict[str, str]) -> dict:
        return {"metadata": {"name": name, "annotations": annotations}, "spec": {
            "ingressClassName": "nginx", "rules": [{"host": host, "http": {"paths": [{
                "path": "/", "pathType": "Prefix", "backend": {"service": {"name": service,
                                                                            "port": {"number": 8501}}}}]}}]}}

    net.create_namespaced_ingress(ns, ingress("main", "stable", {}))
    net.create_namespaced_ingress(ns, ingress("canary", "canary", {
        "nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-weight": "40"}))
    http = httpx.Client(base_url=sandbox.info["ingress_endpoint"], timeout=10, headers={"Host": host})

    def seen_versions() -> set[str]:
        return {http.get("/warmup", headers={"User-Agent": "warmup"}).json()["version"] for _ in range(20)}

    wait_for(lambda: seen_versions() == {"stable", "canary"}, what="canary merged at its weight")
    yield {"ns": ns, "host": host, "http": http, "main": f"{ns}-stable-8501", "canary": f"{ns}-canary-8501"}
    http.close()
    sandbox.services.ingress.remove_resolver(resolve)
    core.delete_namespace(ns)
    for srv in servers.values():
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def sls_client(sandbox_info) -> LogClient:
    return LogClient(sandbox_info["sls_endpoint"], sandbox_info["access_key_id"], sandbox_info["access_key_secret"])


@pytest.fixture(scope="module")
def project(sandbox_info) -> str:
    return f"k8s-log-{sandbox_info['cluster_id']}"


def _send(http: httpx.Client, n: int, ua: str) -> dict[tuple[str, int], int]:
    """``n`` requests with User-Agent ``ua``; what they saw: {(version, status): count}."""
    seen: dict[tuple[str, int], int] = {}
    for _ in range(n):
        r = http.get("/v1/models/m", headers={"User-Agent": ua})
        key = (r.json()["version"], r.status_code)
        seen[key] = seen.get(key, 0) + 1
    return seen


def test_signature_and_error_shapes(sandbox_info, sls_client, project):
    now = int(time.time())
    ok = sls_client.get_log(project, "nginx-ingress", now - 60, now, query="* | SELECT count(1) AS n")
    assert ok.is_completed() and len(ok.get_logs()) == 1
    wrong = LogClient(sandbox_info["sls_endpoint"], sandbox_info["access_key_id"], "not-the-secret")
    with pytest.raises(LogException) as e:
        wrong.get_log(project, "nginx-ingress", now - 60, now, query="*")
    assert e.value.get_error_code() == "SignatureNotMatch" and e.value.resp_status == 401
    stranger = LogClient(sandbox_info["sls_endpoint"], "LTAI" + "x" * 20, sandbox_info["access_key_secret"])
    with pytest.raises(LogException) as e:
        stranger.get_log(project, "nginx-ingress", now - 60, now, query="*")
    assert e.value.get_error_code() == "Unauthorized"
    for proj, store, code in ((project + "-no", "nginx-ingress", "ProjectNotExist"),
                              (project, "no-such-store", "LogStoreNotExist")):
        with pytest.raises(LogException) as e:
            sls_client.get_log(proj, store, now - 60, now, query="*")
        assert e.value.get_error_code() == code and e.value.resp_status == 404
    for bad in ("* | SELECT count(1) FROM other", "* | DELETE FROM log", "* | SELECT x ORDER BY x",
                'status: "200" | SELECT count(1) LIMIT 1', "status :", "* | SELECT approx_percentile(x, 2)"):
        with pytest.raises(LogException) as e:
            sls_client.get_log(project, "nginx-ingress", now - 60, now, query=bad)
        assert e.value.get_error_code() == "ParameterInvalid" and e.value.resp_status == 400, bad
    # the v1 GET form (LogClient with GetLogs v2 off) is signed and answered too
    v1 = LogClient(sandbox_info["sls_endpoint"], sandbox_info["access_key_id"], sandbox_info["access_key_secret"])
    v1._get_logs_v2_enabled = False
    assert v1.get_log(project, "nginx-ingress", now - 60, now, query="* | SELECT count(1) AS n").get_count() == 1


def test_per_version_counts_are_exact_and_leave_the_probe_out(sandbox, sandbox_info, routed, project):
    start = int(time.time()) + 1
    while time.time() < start:
        time.sleep(0.01)
    users = _send(routed["http"], 300, UA_USER)
    probe = _send(routed["http"], 40, UA_PROBE)
    end = int(time.time()) + 1
    reader = SlsReader(LogClient(sandbox_info["sls_endpoint"], sandbox_info["access_key_id"],
                                 sandbox_info["access_key_secret"]), project, "nginx-ingress")
    query = per_version_query(routed["main"], routed["canary"], UA_PROBE)
    # not queryable until the shipping lag has passed
    lag = sandbox.services.sls.lag
    assert lag >= 3.0
    early = reader.per_version(query, start, end)
    assert sum(v.requests for v in early.values()) < sum(users.values()), "logs were queryable with no lag"
    wait_for(lambda: time.time() > end + lag, what="shipping lag passed")
    stats = reader.per_version(query, start, end)
    for version, is_canary in (("canary", True), ("stable", False)):
        got = stats[is_canary]
        want_requests = sum(n for (v, _), n in users.items() if v == version)
        want_errors = sum(n for (v, s), n in users.items() if v == version and s >= 500)
        assert (got.requests, got.errors) == (want_requests, want_errors), (version, got, users)
        assert got.p95_ms is not None and got.p95_ms > 0
    assert stats[True].errors > 0 and stats[False].errors == 0
    assert probe  # the probe's requests were answered, and left out above
