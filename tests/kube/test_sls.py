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
from typing import Any

import httpx
import pytest
from aliyun.log import LogClient, LogException
from backends import json_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from polling import wait_for

from clients.sls import SlsReader, per_version_query

UA_USER = "user-app/1.0"
UA_PROBE = "elastic-inference-analysis/1"


def _server(name: str, fail_every: int = 0, fail_without_header: str = ""):
    """A backend answering its name; with ``fail_every`` n, every n-th request it serves is a 500; with
    ``fail_without_header``, every request lacking that header is a 500."""
    served = [0]
    lock = threading.Lock()

    def answer(path: str, headers: Any) -> tuple[int, dict[str, Any]]:
        with lock:
            served[0] += 1
            fail = bool(fail_every) and served[0] % fail_every == 0
        fail = fail or bool(fail_without_header and headers.get(fail_without_header) is None)
        return (500 if fail else 200), {"version": name}

    return json_server(answer)


def _setup(sandbox, api_client, servers: dict, canary_annotations: dict[str, str]):
    """Services ``stable`` and ``canary`` backed by ``servers`` in a fresh namespace, a main Ingress and a canary
    Ingress with ``canary_annotations`` on a host of its own; returns (context, cleanup)."""
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
    net.create_namespaced_ingress(ns, ingress("canary", "canary", {"nginx.ingress.kubernetes.io/canary": "true",
                                                                  **canary_annotations}))
    http = httpx.Client(base_url=sandbox.info["ingress_endpoint"], timeout=10, headers={"Host": host})

    def seen_versions() -> set[str]:
        """The versions answering; until ingress-nginx's next sync and reload the host is not served yet (404)."""
        answers = [http.get("/warmup", headers={"User-Agent": "warmup"}) for _ in range(20)]
        return {r.json()["version"] for r in answers if r.headers.get("content-type") == "application/json"}

    wait_for(lambda: seen_versions() == {"stable", "canary"}, what="canary merged at its weight")

    def cleanup() -> None:
        http.close()
        sandbox.services.ingress.remove_resolver(resolve)
        core.delete_namespace(ns)
        for srv in servers.values():
            srv.shutdown()
            srv.server_close()

    return {"ns": ns, "host": host, "http": http, "main": f"{ns}-stable-8501", "canary": f"{ns}-canary-8501"}, \
        cleanup


@pytest.fixture(scope="module")
def routed(sandbox, api_client):
    """The canary fails every 4th request it serves, and takes 40% of the traffic by weight."""
    ctx, cleanup = _setup(sandbox, api_client, {"stable": _server("stable"), "canary": _server("canary", 4)},
                          {"nginx.ingress.kubernetes.io/canary-weight": "40"})
    yield ctx
    cleanup()


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
    sent = time.time()  # the last user request was logged just before this
    probe = _send(routed["http"], 40, UA_PROBE)
    end = int(time.time()) + 1
    from cli.sandbox_profile import credentials_from_sandbox

    # the client the flow builds: the credentials block with the sandbox's endpoint
    reader = SlsReader(credentials_from_sandbox(sandbox_info).get_sls_client(), project, "nginx-ingress")
    query = per_version_query(routed["main"], routed["canary"], UA_PROBE)
    # not queryable until the shipping lag has passed
    lag = sandbox.services.sls.lag
    assert lag >= 3.0
    # the service as of the moment the last request was sent: nothing of the last `lag` seconds is there yet (read
    # in-process at that "now": over the wire the answer's moment depends on how fast this machine sends)
    early = sandbox.services.sls.get_logs(project, "nginx-ingress", start, end, query, now=sent)
    early_count = sum(int(r.get("requests") or 0) for r in early["data"])
    assert early_count < sum(users.values()), ("logs were queryable with no lag", early["data"])
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


# ---- the metrics adapter: its window ends DelaySeconds in the past; SLS failures are its errors ----------------
def _metric(raw, ns: str, labels: dict[str, str]):
    sel = ",".join(f"{k}={v}" for k, v in labels.items())
    return raw("GET", f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/sls_ingress_qps",
               params={"labelSelector": sel})


def test_adapter_default_delay_is_ten_seconds():
    from sandbox.metrics.sls import parse_params

    assert parse_params([("sls.project", "=", ("p",)), ("sls.logstore", "=", ("l",))]).delay == 10
    assert parse_params([("sls.project", "=", ("p",)), ("sls.logstore", "=", ("l",)),
                         ("sls.query.delay", "=", ("0",))]).delay == 0


def test_adapter_metric_lags_by_its_delay(sandbox, raw, routed, project):
    speed = sandbox.ctx.clock.speed
    delay = int(4 * speed)  # simulated seconds: the window ends 4 real seconds in the past
    labels = {"sls.project": project, "sls.logstore": "nginx-ingress", "sls.ingress.route": routed["main"],
              "sls.query.delay": str(delay)}
    stop = threading.Event()
    first_sent: list[float] = []

    def load() -> None:
        with httpx.Client(base_url=sandbox.info["ingress_endpoint"], timeout=10,
                          headers={"Host": routed["host"], "User-Agent": UA_USER}) as http:
            while not stop.is_set():
                first_sent.append(time.time()) if not first_sent else None
                http.get("/v1/models/m")
                time.sleep(0.02)

    # the route must be quiet first: the window [t - 4 - 1, t - 4) holds none of this test's load
    wait_for(lambda: _metric(raw, routed["ns"], labels).json()["items"][0]["value"] == "0", what="route quiet")
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        wait_for(lambda: first_sent, what="load started")
        undelayed = {**labels, "sls.query.delay": "0"}
        wait_for(lambda: int(_metric(raw, routed["ns"], undelayed).json()["items"][0]["value"]) > 0,
                 what="the undelayed metric sees the load")
        read_at = time.time()
        value = int(_metric(raw, routed["ns"], labels).json()["items"][0]["value"])
        if int(read_at - delay / speed) <= int(first_sent[0]):  # the delayed window ends before the first request
            assert value == 0, "the delayed window counted requests sent after its end"
        wait_for(lambda: int(_metric(raw, routed["ns"], labels).json()["items"][0]["value"]) > 0,
                 what="the delayed metric sees the load, later")
        assert time.time() - first_sent[0] >= delay / speed - 1
    finally:
        stop.set()
        worker.join()


def test_injected_sls_failures_reach_the_sdk_and_the_adapter(sandbox_info, raw, routed, project):
    admin = sandbox_info["admin_endpoint"]
    auth = {"Authorization": f"Bearer {sandbox_info['admin_token']}"}
    labels = {"sls.project": project, "sls.logstore": "nginx-ingress", "sls.ingress.route": routed["main"]}
    put = httpx.put(admin + "/faults", headers=auth, json={"sls": {"error_rate": 1.0, "error_status": 500}})
    assert put.status_code == 200, put.text
    try:
        r = _metric(raw, routed["ns"], labels)
        assert r.status_code == 500 and r.json()["reason"] == "InternalError"
        assert "InternalServerError" in r.json()["message"]
        # on the wire: SLS's JSON error (the SDK retries a 5xx itself; one raw request shows the shape)
        got = httpx.post(f"http://{sandbox_info['sls_endpoint']}/logstores/nginx-ingress/logs",
                         headers={"Host": f"{project}.{sandbox_info['sls_endpoint']}"}, content=b"{}")
        assert got.status_code == 500 and got.json()["errorCode"] == "InternalServerError"
        assert got.headers["x-log-requestid"]
        status = httpx.get(admin + "/faults", headers=auth).json()
        assert status["counters"]["sls"]["errors"] >= 2
    finally:
        assert httpx.put(admin + "/faults", headers=auth, content=b"").status_code == 200
    assert _metric(raw, routed["ns"], labels).status_code == 200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
       path=st.sampled_from(["/logstores/nginx-ingress/logs", "/logstores/nginx-ingress", "/", "/logstores/x/y/z"]),
       query=st.dictionaries(st.sampled_from(["type", "from", "to", "query", "line"]),
                             st.text(max_size=20), max_size=4),
       body=st.one_of(st.binary(max_size=64), st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
           st.sampled_from(["from", "to", "query", "line", "offset", "reverse"]),
           st.one_of(st.integers(), st.text(max_size=30), st.none()), max_size=6))),
       sign=st.booleans())
def test_hostile_requests_get_sls_errors(sandbox_info, project, method, path, query, body, sign):
    """Whatever arrives, the answer is 200 or an SLS JSON error with a 4xx status, never a crash (500)."""
    from aliyun.log.auth import AuthV1
    from aliyun.log.credentials import StaticCredentialsProvider

    ep = sandbox_info["sls_endpoint"]
    headers = {"Host": f"{project}.{ep}", "x-log-apiversion": "0.6.0", "x-log-bodyrawsize": str(len(body)),
               "Content-Type": "application/json"}
    if sign:
        params = dict(query)
        AuthV1(StaticCredentialsProvider(sandbox_info["access_key_id"], sandbox_info["access_key_secret"], None)
               ).sign_request(method, path, params or None, headers, body)
    r = httpx.request(method, f"http://{ep}{path}", params=query, headers=headers, content=body)
    if r.status_code != 200:
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
        assert set(r.json()) == {"errorCode", "errorMessage"}


# ---- a step decided on the users' requests ---------------------------------------------------------------------
def test_a_release_failing_only_user_requests_is_rolled_back_on_sls_data(sandbox, sandbox_info, api_client,
                                                                           project):
    """The new release answers every request carrying the canary header (the flow's probe) and fails every other
    one (its users at the step's weight, e.g. a release that breaks on what real clients send). The synthetic
    requests alone pass the step (what the analysis did before it read SLS); with the users' requests from SLS
    the step fails, on the users' error rate and against the stable version, and the report says which data."""
    from core.spec import DeploySpec
    from tasks.rollout.analysis import ANALYSIS_USER_AGENT, StepStats, judge, read_users

    ctx, cleanup = _setup(sandbox, api_client, {"stable": _server("stable"),
                                                "canary": _server("canary", fail_without_header="X-Canary")},
                          {"nginx.ingress.kubernetes.io/canary-by-header": "X-Canary",
                           "nginx.ingress.kubernetes.io/canary-weight": "30"})
    try:
        start = int(time.time()) + 1
        while time.time() < start:
            time.sleep(0.01)
        http = ctx["http"]
        probe = [http.get("/v1/models/m", headers={"User-Agent": ANALYSIS_USER_AGENT, "X-Canary": "always"})
                 for _ in range(60)]
        users = _send(http, 300, UA_USER)
        end = int(time.time()) + 1
        assert all(r.status_code == 200 and r.json()["version"] == "canary" for r in probe)
        reader = SlsReader(LogClient(sandbox_info["sls_endpoint"], sandbox_info["access_key_id"],
                                     sandbox_info["access_key_secret"]), project, "nginx-ingress")
        new, stable, failures = read_users(reader, ctx["main"], ctx["canary"], start, end)
        assert failures == []
        assert new is not None and stable is not None
        assert new.requests == sum(n for (v, _), n in users.items() if v == "canary") > 0
        assert new.errors == new.requests and stable.errors == 0
        spec = DeploySpec.parse({"cluster_id": "c0123456789abcdef", "serving": {"version": "v2"}, "rollout": {
            "max_error_rate": 0.05, "max_p95_ms": 2000, "min_requests": 20}})
        synthetic = {"step": "step 1", "weight": 30, "seconds": end - start, "requests": len(probe),
                     "failures": 0, "p95_ms": 5.0, "available": 1}
        assert judge(StepStats(**synthetic), spec).passed  # the probe alone would promote it
        got = judge(StepStats(**synthetic, users=new, stable_users=stable, sls_read=True), spec)
        assert not got.passed
        failed = {c.name for c in got.checks if not c.passed}
        assert failed == {"users error rate", "users vs stable error rate"}, got.reason
        assert got.stats.data.startswith(f"users' requests from SLS ({new.requests} new, {stable.requests} stable)")
    finally:
        cleanup()


def test_a_non_ascii_signature_is_a_mismatch_not_a_crash(sandbox_info, project):
    """Signatures are compared as bytes (hmac.compare_digest refuses non-ASCII str: a 500 before)."""
    ep = sandbox_info["sls_endpoint"]
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
    r = httpx.get(f"http://{ep}/logstores/nginx-ingress/index", params={"type": "log", "from": 0, "to": 1},
                  headers={"Host": f"{project}.{ep}", "Date": date, "x-log-apiversion": "0.6.0",
                           "x-log-signaturemethod": "hmac-sha1", "x-log-bodyrawsize": "0",
                           "Authorization": f"LOG {sandbox_info['access_key_id']}:sig²nature".encode()})
    assert r.status_code == 401 and r.json()["errorCode"] == "SignatureNotMatch", r.text


# ---- the previous release is retired only once its route is quiet in SLS ---------------------------------------
def test_the_previous_release_is_retired_only_once_sls_shows_its_route_quiet(sandbox, sandbox_info, api_client,
                                                                             kube_clients, prefect_api):
    """While users still reach the previous release's route (ingress-nginx before its next sync, or another Ingress
    on the same Service), retiring it would turn their requests into 503s: ``retire`` waits for SLS to show the
    route quiet over a whole window after the switch, and when that does not come it raises and leaves the
    replicas. Once the traffic stops, the route is quiet a window and the shipping lag later, and not before.
    Without the gate, the previous release went to zero under the load."""
    from cli.sandbox_profile import credentials_from_sandbox
    from core.spec import DeploySpec
    from tasks.rollout.analysis import SLS_LAG_S
    from tasks.rollout.quiet import RouteBusy, RouteQuiet, wait_until_quiet
    from tasks.rollout.versions import retire

    ctx, cleanup = _setup(sandbox, api_client, {"stable": _server("stable"), "canary": _server("canary")},
                          {"nginx.ingress.kubernetes.io/canary-weight": "50"})
    stop = threading.Event()

    def users() -> None:
        with httpx.Client(base_url=sandbox.info["ingress_endpoint"], timeout=10,
                          headers={"Host": ctx["host"], "User-Agent": UA_USER}) as http:
            while not stop.is_set():
                http.get("/v1/models/m")
                time.sleep(0.02)

    worker = threading.Thread(target=users, daemon=True)
    ns = ctx["ns"]
    try:
        kube_clients.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "stable",
                            "namespace": ns}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "s"}},
                            "template": {"metadata": {"labels": {"app": "s"}}, "spec": {"containers": [
                                {"name": "s", "image": "busybox"}]}}}})
        reader = SlsReader(credentials_from_sandbox(sandbox_info).get_sls_client(), f"k8s-log-{sandbox_info['cluster_id']}",
                           "nginx-ingress")
        spec = DeploySpec.parse({"cluster_id": sandbox_info["cluster_id"], "serving": {"version": "v2", "namespace": ns},
                                 "rollout": {"drain_seconds": 0}})
        worker.start()
        since = time.time()
        with pytest.raises(RouteBusy, match=r"request\(s\) over"):
            retire(kube_clients, spec, "stable", credentials_from_sandbox(sandbox_info), drain_s=0,
                      quiet=RouteQuiet(reader, ctx["main"], since, quiet_s=3, wait_s=3))
        assert kube_clients.get("Deployment", "stable", ns)["spec"]["replicas"] == 2  # left serving
        stop.set()
        worker.join()
        stopped = time.time()
        said = wait_until_quiet(reader, ctx["main"], stopped, quiet_s=3, wait_s=30)
        assert said.startswith(f"SLS: 0 requests on {ctx['main']} over [")
        assert time.time() >= stopped + 3 + SLS_LAG_S  # a whole window after the traffic, read after the lag
    finally:
        stop.set()
        if worker.is_alive():
            worker.join()
        cleanup()
