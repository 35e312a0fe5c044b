"""Canary Ingresses through the sandbox's ingress, end to end: kubernetes client -> API server -> routing table ->
real HTTP requests (httpx) through the ingress listener -> two real HTTP servers standing for the two versions.

Expected behaviour from kubernetes/ingress-nginx (see ``sandbox/ingress/canary.py``): header, then cookie, then
weight; ``always``/``never``; header value and pattern; one canary per rule (the oldest); a canary without a main
Ingress is not served; ``$proxy_upstream_name`` stays the main upstream, ``$proxy_alternative_upstream_name`` names
the canary (what the SLS log and the metrics adapter see).

The weight checks count N routed requests and accept the canary share within 5 standard deviations of the
binomial(N, p) mean (computed here), so that a correct router fails them with probability below 1e-6.
"""

from __future__ import annotations

import math
import random

import httpx
import pytest
from backends import json_server
from kubernetes import client
from polling import wait_for

SIGMAS = 5.0


def _server(name: str):
    return json_server(lambda path, headers: (200, {"version": name}))


@pytest.fixture(scope="module")
def versions(sandbox):
    """Real backends ``stable``, ``canary`` and ``canary2``, reachable for two pod IPs through the ingress resolver seam."""
    servers = {name: _server(name) for name in ("stable", "canary", "canary2")}
    base = f"10.252.{random.randrange(256)}."
    ips = {name: base + str(10 + i) for i, name in enumerate(servers)}
    addr = {ips[k]: srv.server_address for k, srv in servers.items()}

    def resolve(ip: str, port: int):
        return addr.get(ip) if port == 8501 else None

    ingress = sandbox.services.ingress
    ingress.add_resolver(resolve)
    yield ips
    ingress.remove_resolver(resolve)
    for srv in servers.values():
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def net(api_client):
    return client.NetworkingV1Api(api_client)


@pytest.fixture
def app(core, net, ns, versions):
    """Services ``stable`` and ``canary`` (no selector; Endpoints at the two pod IPs) in a fresh namespace."""
    for name in ("stable", "canary"):
        core.create_namespaced_service(ns, {"metadata": {"name": name}, "spec": {
            "ports": [{"name": "http-serving", "port": 8501, "targetPort": 8501}]}})
        core.create_namespaced_endpoints(ns, {"metadata": {"name": name}, "subsets": [{
            "addresses": [{"ip": versions[name]}], "ports": [{"name": "http-serving", "port": 8501}]}]})
    return ns


def _ingress(host: str, name: str, service: str, annotations: dict[str, str] | None = None,
             path: str = "/") -> dict:
    return {"metadata": {"name": name, "annotations": annotations or {}}, "spec": {
        "ingressClassName": "nginx",
        "rules": [{"host": host, "http": {"paths": [{"path": path, "pathType": "Prefix", "backend": {
            "service": {"name": service, "port": {"number": 8501}}}}]}}]}}


def _canary(**ann: str) -> dict[str, str]:
    out = {"nginx.ingress.kubernetes.io/canary": "true"}
    out.update({f"nginx.ingress.kubernetes.io/{k.replace('_', '-')}": v for k, v in ann.items()})
    return out


@pytest.fixture
def host(app) -> str:
    """A host of the test's own: Ingresses of earlier tests' namespaces may still be in the table."""
    return f"{app}.example.com"


@pytest.fixture
def http(sandbox, host):
    with httpx.Client(base_url=sandbox.info["ingress_endpoint"], timeout=10, headers={"Host": host}) as c:
        yield c


def _version(http: httpx.Client, headers: dict[str, str] | None = None, cookies: str | None = None) -> str:
    h = dict(headers or {})
    if cookies:
        h["Cookie"] = cookies
    r = http.get("/v1/models/m", headers=h)
    assert r.status_code == 200, r.text
    return r.json()["version"]


def _until(http: httpx.Client, want: str, what: str, **kw) -> None:
    wait_for(lambda: _version(http, **kw) == want, what=what, tolerate=(AssertionError,))


def _share(http: httpx.Client, n: int) -> int:
    return sum(_version(http) == "canary" for _ in range(n))


def _assert_binomial(k: int, n: int, p: float) -> None:
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    assert abs(k - mean) <= SIGMAS * sd, f"canary served {k}/{n}, expected {mean:.0f} +- {SIGMAS * sd:.1f}"


def test_header_always_never_and_precedence(app, host, net, http):
    net.create_namespaced_ingress(app, _ingress(host, "main", "stable"))
    _until(http, "stable", "main route installed")
    net.create_namespaced_ingress(app, _ingress(host, "canary", "canary", _canary(
        canary_by_header="X-Canary", canary_by_cookie="canary_cookie")))
    _until(http, "canary", "canary merged", headers={"X-Canary": "always"})
    assert _version(http) == "stable"  # weight 0
    assert _version(http, {"x-canary": "always"}) == "canary"  # header names are case-insensitive
    assert _version(http, {"X-Canary": "never"}) == "stable"
    assert _version(http, {"X-Canary": "maybe"}) == "stable"
    # header before cookie: "never" wins over a cookie "always"; any other header value falls through to the cookie
    assert _version(http, {"X-Canary": "never"}, cookies="canary_cookie=always") == "stable"
    assert _version(http, {"X-Canary": "maybe"}, cookies="canary_cookie=always") == "canary"
    assert _version(http, cookies="a=b; canary_cookie=always") == "canary"
    assert _version(http, cookies="canary_cookie=never") == "stable"
    # cookie "never" over weight: everything goes to the canary by weight, except what the cookie keeps off it
    body = net.read_namespaced_ingress("canary", app)
    body.metadata.annotations["nginx.ingress.kubernetes.io/canary-weight"] = "100"
    net.replace_namespaced_ingress("canary", app, body)
    _until(http, "canary", "weight 100 applied")
    assert _version(http, cookies="canary_cookie=never") == "stable"
    assert _version(http, {"X-Canary": "never"}) == "stable"


def test_header_value_and_pattern(app, host, net, http):
    net.create_namespaced_ingress(app, _ingress(host, "main", "stable"))
    _until(http, "stable", "main route installed")
    net.create_namespaced_ingress(app, _ingress(host, "canary", "canary", _canary(
        canary_by_header="X-Version", canary_by_header_value="v2", canary_by_header_pattern="^v[0-9]$")))
    _until(http, "canary", "canary merged", headers={"X-Version": "v2"})
    assert _version(http, {"X-Version": "v3"}) == "stable"  # with a value set, the pattern is ignored
    assert _version(http, {"X-Version": "always"}) == "stable"  # and "always" is just another value
    body = net.read_namespaced_ingress("canary", app)
    del body.metadata.annotations["nginx.ingress.kubernetes.io/canary-by-header-value"]
    net.replace_namespaced_ingress("canary", app, body)
    _until(http, "canary", "pattern applied", headers={"X-Version": "v3"})
    assert _version(http, {"X-Version": "release-v7"}) == "stable"  # ^ anchors: no match
    assert _version(http, {"X-Version": "v10"}) == "stable"


def test_weight_share_is_binomial(app, host, net, http):
    net.create_namespaced_ingress(app, _ingress(host, "main", "stable"))
    _until(http, "stable", "main route installed")
    net.create_namespaced_ingress(app, _ingress(host, "canary", "canary", _canary(canary_weight="30")))
    wait_for(lambda: _share(http, 20) > 0, what="weighted canary merged")
    n = 1000
    _assert_binomial(_share(http, n), n, 0.30)
    # canary-weight-total above 100 is the denominator: 100 of 400 is a quarter
    body = net.read_namespaced_ingress("canary", app)
    body.metadata.annotations.update({"nginx.ingress.kubernetes.io/canary-weight": "100",
                                      "nginx.ingress.kubernetes.io/canary-weight-total": "400"})
    net.replace_namespaced_ingress("canary", app, body)
    probe = 200
    wait_for(lambda: abs(_share(http, probe) - probe * 0.25) <= SIGMAS * math.sqrt(probe * 0.25 * 0.75),
             what="weight 100 of 400 applied")
    _assert_binomial(_share(http, n), n, 0.25)


def test_weight_bounds_and_small_total_ignored(app, host, net, http):
    net.create_namespaced_ingress(app, _ingress(host, "main", "stable"))
    _until(http, "stable", "main route installed")
    # a weight-total at or below 100 is ignored by the Lua balancer: 50 "of 50" is still 50 of 100
    net.create_namespaced_ingress(app, _ingress(host, "canary", "canary", _canary(
        canary_weight="50", canary_weight_total="50")))
    wait_for(lambda: _share(http, 20) > 0, what="weighted canary merged")
    n = 1000
    _assert_binomial(_share(http, n), n, 0.50)
    body = net.read_namespaced_ingress("canary", app)
    body.metadata.annotations.update({"nginx.ingress.kubernetes.io/canary-weight": "0"})
    del body.metadata.annotations["nginx.ingress.kubernetes.io/canary-weight-total"]
    net.replace_namespaced_ingress("canary", app, body)
    wait_for(lambda: _share(http, 50) == 0, what="weight 0 applied")
    assert _share(http, 300) == 0
    body = net.read_namespaced_ingress("canary", app)
    body.metadata.annotations.update({"nginx.ingress.kubernetes.io/canary-weight": "100"})
    net.replace_namespaced_ingress("canary", app, body)
    wait_for(lambda: _share(http, 50) == 50, what="weight 100 applied")
    assert _share(http, 300) == 300


def test_canary_without_main_is_not_served(app, host, net, http):
    # the canary's host has no main Ingress: 404 from the default backend, whatever the header says
    net.create_namespaced_ingress(app, _ingress(host, "canary", "canary", _canary(canary_by_header="X-Canary")))
    net.create_namespaced_ingress(app, _ingress(f"other-{app}.example.com", "other", "stable"))
    wait_for(lambda: http.get("/", headers={"Host": f"other-{app}.example.com"}).status_code == 200,
             what="other host routed")
    assert http.get("/", headers={"X-Canary": "always"}).status_code == 404
    # a main Ingress on another path of the same host: the canary's path "/" has no main location to join
    net.create_namespaced_ingress(app, _ingress(host, "main-api", "stable", path="/api"))
    wait_for(lambda: http.get("/api/x").status_code == 200, what="main /api routed")
    assert http.get("/api/x", headers={"X-Canary": "always"}).json()["version"] == "stable"
    assert http.get("/v1/models/m", headers={"X-Canary": "always"}).status_code == 404


def test_one_canary_per_rule_oldest_wins(app, host, net, core, http, versions, sandbox):
    core.create_namespaced_service(app, {"metadata": {"name": "canary2"}, "spec": {
        "ports": [{"name": "http-serving", "port": 8501, "targetPort": 8501}]}})
    core.create_namespaced_endpoints(app, {"metadata": {"name": "canary2"}, "subsets": [{
        "addresses": [{"ip": versions["canary2"]}], "ports": [{"name": "http-serving", "port": 8501}]}]})
    net.create_namespaced_ingress(app, _ingress(host, "main", "stable"))
    _until(http, "stable", "main route installed")
    net.create_namespaced_ingress(app, _ingress(host, "canary-a", "canary", _canary(canary_by_header="X-A")))
    _until(http, "canary", "first canary merged", headers={"X-A": "always"})
    first = net.read_namespaced_ingress("canary-a", app).metadata.creation_timestamp
    # creationTimestamp has one-second resolution: make the second canary strictly younger
    wait_for(lambda: sandbox.ctx.clock.now() >= first.timestamp() + 1.0, what="the next (simulated) second")
    net.create_namespaced_ingress(app, _ingress(host, "canary-b", "canary2", _canary(canary_weight="100")))
    # the second canary is accepted (and published by the controller) but not consulted: weight 100 moves nothing
    wait_for(lambda: net.read_namespaced_ingress("canary-b", app).status.load_balancer.ingress,
             what="canary-b seen by the controller", tolerate=(AttributeError,))
    assert all(_version(http) == "stable" for _ in range(50))
    assert _version(http, {"X-A": "always"}) == "canary"
    # remove the first: the second becomes the rule's canary
    net.delete_namespaced_ingress("canary-a", app)
    _until(http, "canary2", "canary-b took over")
    assert all(_version(http, {"X-A": "always"}) == "canary2" for _ in range(20))


def test_access_log_keys_canary_traffic_like_ack(app, host, net, http, sandbox, raw):
    """``proxy_upstream_name`` stays the main route; ``proxy_alternative_upstream_name`` names the canary; the
    metrics adapter (query on ``proxy_upstream_name``) counts canary traffic on the main route and 0 on the
    canary's."""
    net.create_namespaced_ingress(app, _ingress(host, "main", "stable"))
    _until(http, "stable", "main route installed")
    net.create_namespaced_ingress(app, _ingress(host, "canary", "canary", _canary(canary_by_header="X-Canary")))
    _until(http, "canary", "canary merged", headers={"X-Canary": "always"})
    log = sandbox.services.ingress.log
    main, canary = f"{app}-stable-8501", f"{app}-canary-8501"
    before_main, before_alt = log.total(main), log.total(canary, "proxy_alternative_upstream_name")
    for _ in range(30):
        assert _version(http, {"X-Canary": "always"}) == "canary"
    for _ in range(10):
        assert _version(http) == "stable"
    # the log line is written after the response went out (as nginx's log phase): wait for the last one
    wait_for(lambda: log.total(main) - before_main == 40, what="40 lines on the main route",
             state=lambda: log.total(main) - before_main)
    assert log.total(canary, "proxy_alternative_upstream_name") - before_alt == 30
    assert log.total(canary) == 0

    def qps(route: str) -> str:
        sel = (f"sls.project=k8s-log-{sandbox.info['cluster_id']},sls.logstore=nginx-ingress,"
               f"sls.ingress.route={route}")
        r = raw("GET", f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{app}/sls_ingress_qps",
                params={"labelSelector": sel})
        assert r.status_code == 200, r.text
        return r.json()["items"][0]["value"]

    def main_seen() -> bool:
        for _ in range(20):
            _version(http, {"X-Canary": "always"})
        return qps(main) != "0"
    wait_for(main_seen, what="canary traffic counted on the main route by the adapter")
    assert qps(canary) == "0"


def _typed(host: str, name: str, service: str, path: str, path_type: str | None,
           annotations: dict[str, str] | None = None) -> dict:
    entry = {"path": path, "backend": {"service": {"name": service, "port": {"number": 8501}}}}
    if path_type is not None:
        entry["pathType"] = path_type
    return {"metadata": {"name": name, "annotations": annotations or {}}, "spec": {
        "ingressClassName": "nginx", "rules": [{"host": host, "http": {"paths": [entry]}}]}}


def test_a_canary_merges_only_on_the_same_host_path_and_path_type(app, host, net, http, sandbox):
    """``mergeAlternativeBackends``: ``loc.Path == path.Path && *loc.PathType == *path.PathType``, after the store's
    defaulting (``ImplementationSpecific`` -> ``Prefix``); otherwise the canary is dropped with a warning and the
    header reaches the main backend."""
    net.create_namespaced_ingress(app, _typed(host, "main", "stable", "/v1/models/m", "Exact"))
    _until(http, "stable", "main route installed")
    net.create_namespaced_ingress(app, _typed(host, "canary", "canary", "/v1/models/m", "Prefix",
                                              _canary(canary_by_header="X-Canary")))
    wait_for(lambda: any(f"canary Ingress {app}/canary" in line for line in sandbox.services.ingress.table.dropped),
             what="the controller dropped the canary", state=lambda: sandbox.services.ingress.table.dropped)
    assert all(_version(http, {"X-Canary": "always"}) == "stable" for _ in range(20))
    # the same canary with the main Ingress's pathType merges
    body = net.read_namespaced_ingress("canary", app)
    body.spec.rules[0].http.paths[0].path_type = "Exact"
    net.replace_namespaced_ingress("canary", app, body)
    _until(http, "canary", "the Exact canary merged", headers={"X-Canary": "always"})
    # ImplementationSpecific is Prefix to ingress-nginx: a Prefix canary joins an ImplementationSpecific main
    other = f"is-{host}"
    net.create_namespaced_ingress(app, _typed(other, "main-is", "stable", "/", "ImplementationSpecific"))
    net.create_namespaced_ingress(app, _typed(other, "canary-is", "canary", "/", "Prefix",
                                              _canary(canary_by_header="X-Canary")))
    wait_for(lambda: _version(http, {"Host": other, "X-Canary": "always"}) == "canary",
             what="the Prefix canary merged into the ImplementationSpecific main", tolerate=(AssertionError,))
    assert _version(http, {"Host": other}) == "stable"
    # ... and as Prefix, "/v1" no longer matches "/v1x" (whole path elements)
    net.create_namespaced_ingress(app, _typed(f"p-{host}", "main-p", "stable", "/v1", "ImplementationSpecific"))
    wait_for(lambda: http.get("/v1/models/m", headers={"Host": f"p-{host}"}).status_code == 200, what="/v1 routed")
    assert http.get("/v1x", headers={"Host": f"p-{host}"}).status_code == 404


def test_header_names_nginx_finds_invalid_are_dropped(app, host, net, http):
    """``ignore_invalid_headers on`` and no underscores (ingress-nginx's defaults): ``X_Canary`` never reaches the
    canary rules, while an annotation ``X_Canary`` is ``$http_x_canary``, matched by the request header
    ``X-Canary``."""
    net.create_namespaced_ingress(app, _ingress(host, "main", "stable"))
    _until(http, "stable", "main route installed")
    net.create_namespaced_ingress(app, _ingress(host, "canary", "canary", _canary(canary_by_header="X-Canary")))
    _until(http, "canary", "canary merged", headers={"X-Canary": "always"})
    assert _version(http, {"X_Canary": "always"}) == "stable"
    assert _version(http, {"X.Canary": "always"}) == "stable"
    body = net.read_namespaced_ingress("canary", app)
    body.metadata.annotations["nginx.ingress.kubernetes.io/canary-by-header"] = "X_Canary"
    net.replace_namespaced_ingress("canary", app, body)
    _until(http, "canary", "annotation X_Canary applied", headers={"X-Canary": "always"})
    assert _version(http, {"X_Canary": "always"}) == "stable"


def test_changes_take_effect_after_sync_and_reload_and_the_status_comes_from_its_own_loop(app, host, net, http,
                                                                                         sandbox):
    """A change reaches requests no sooner than ``ingress_reload`` simulated seconds after it was made
    (``syncIngress`` + reload); the address is written by the status loop every ``ingress_status_period``, so two
    Ingresses created one after the other get it in different passes of that loop, a period apart."""
    clock, ingress = sandbox.ctx.clock, sandbox.services.ingress
    created = clock.now()
    net.create_namespaced_ingress(app, _ingress(host, "main", "stable"))
    _until(http, "stable", "main route installed")
    assert clock.now() - created >= ingress.reload_delay

    def written(name: str) -> float | None:
        ing = net.read_namespaced_ingress(name, app)
        if not (ing.status and ing.status.load_balancer and ing.status.load_balancer.ingress):
            return None
        times = [m.time for m in ing.metadata.managed_fields or []
                 if m.manager == "nginx-ingress-controller" and m.subresource == "status"]
        return max(times).timestamp()

    first = wait_for(lambda: written("main"), what="main's address", timeout=120)
    net.create_namespaced_ingress(app, _ingress(f"second-{host}", "second", "stable"))
    second = wait_for(lambda: written("second"), what="second's address", timeout=120)
    # one second of resolution in managedFields times
    assert second - first >= ingress.status_period - 1, (first, second)


def test_an_upstream_is_a_canarys_or_an_ordinary_one_never_both(app, host, net, http, sandbox):
    """``createUpstreams``: the oldest Ingress naming a Service makes its upstream. A canary's upstream has no
    server: an ordinary Ingress on the same Service (a preview host, say) is not served while the canary is."""
    net.create_namespaced_ingress(app, _ingress(host, "main", "stable"))
    _until(http, "stable", "main route installed")
    net.create_namespaced_ingress(app, _ingress(host, "canary", "canary", _canary(canary_by_header="X-Canary")))
    _until(http, "canary", "canary merged", headers={"X-Canary": "always"})
    created = net.read_namespaced_ingress("canary", app).metadata.creation_timestamp
    wait_for(lambda: sandbox.ctx.clock.now() >= created.timestamp() + 1.0, what="the next (simulated) second")
    preview = f"preview-{host}"
    net.create_namespaced_ingress(app, _ingress(preview, "preview", "canary"))
    net.create_namespaced_ingress(app, _ingress(f"probe-{host}", "probe", "stable"))  # a later change, applied
    wait_for(lambda: http.get("/", headers={"Host": f"probe-{host}"}).status_code == 200, what="the later change")
    assert http.get("/v1/models/m", headers={"Host": preview}).status_code == 404
    # the canary gone, the preview's Ingress makes the upstream: served
    net.delete_namespaced_ingress("canary", app)
    wait_for(lambda: http.get("/v1/models/m", headers={"Host": preview}).status_code == 200, what="preview served")
    assert _version(http, {"Host": preview}) == "canary"
