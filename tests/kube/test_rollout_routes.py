"""The rollout's routes on the sandbox's strict ingress-nginx: the isolated stress test's preview Ingress and the
canary Ingress, both derived from the live Ingress, proven by requests before anything counts.

The two releases' pods are two real HTTP servers answering TF Serving's model status and metadata
(``GET /v1/models/<name>``, ``/metadata``) for different model versions, reached through the ingress's pod-endpoint
seam as in test_canary_ingress.py. The live main Ingress uses ``pathType: Prefix`` while the new spec renders
``Exact``: a canary rendered from the spec (what the flow did before) is dropped by ingress-nginx
(``mergeAlternativeBackends`` needs host, path and pathType to match), so its header traffic measured the old
release; derived from the live Ingress it merges.
"""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest
from backends import json_server
from polling import wait_for

from core.spec import DeploySpec
from flows.rollout import canary_at_zero, prepare_canary
from tasks.ingress import IngressEndpoint, render_ingress
from tasks.live import find_live_version, sls_route
from tasks.rollout.canary import canary_endpoint, render_canary_ingress, set_canary
from tasks.rollout.probe import RouteNotProven, prove_header, read_answer, wait_for_preview


def _tf_serving(version: str):
    """A server answering TF Serving's REST status and metadata for model version ``version``."""

    def answer(path: str, headers: Any) -> tuple[int, dict[str, Any]]:
        if path.endswith("/metadata"):
            return 200, {"model_spec": {"name": "bert", "signature_name": "", "version": version},
                         "metadata": {"signature_def": {"signature_def": {}}}}
        return 200, {"model_version_status": [{"version": version, "state": "AVAILABLE",
                                               "status": {"error_code": "OK", "error_message": ""}}]}

    return json_server(answer)


@pytest.fixture(scope="module")
def pods(sandbox):
    """Pod IPs of release v1 (model version 1) and v2 (model version 2), resolved to the two servers."""
    servers = {"v1": _tf_serving("1"), "v2": _tf_serving("2")}
    base = f"10.251.{random.randrange(256)}."
    ips = {name: base + str(20 + i) for i, name in enumerate(servers)}
    addr = {ips[k]: srv.server_address for k, srv in servers.items()}

    def resolve(ip: str, port: int):
        return addr.get(ip) if port == 8501 else None

    sandbox.services.ingress.add_resolver(resolve)
    yield ips
    sandbox.services.ingress.remove_resolver(resolve)
    for srv in servers.values():
        srv.shutdown()
        srv.server_close()


def spec(sandbox_info: dict[str, Any], ns: str, version: str, path_type: str) -> DeploySpec:
    return DeploySpec.parse({"cluster_id": sandbox_info["cluster_id"],
                             "serving": {"version": version, "namespace": ns},
                             "ingress": {"host": f"{ns}.example.com", "path_type": path_type}})


def _release(core, s: DeploySpec, ip: str) -> None:
    """The release's Service (as arena names it, without a selector) and Endpoints at its pod IP."""
    ns = s.names.namespace
    core.create_namespaced_service(ns, {"metadata": {"name": s.names.service}, "spec": {
        "ports": [{"name": "http-serving", "port": 8501, "targetPort": 8501}]}})
    core.create_namespaced_endpoints(ns, {"metadata": {"name": s.names.service}, "subsets": [{
        "addresses": [{"ip": ip}], "ports": [{"name": "http-serving", "port": 8501}]}]})


@pytest.fixture
def rollout(kube_clients, core, ns, sandbox, pods, prefect_api):
    """v1 live behind a main Ingress with pathType Prefix; v2 (whose spec says Exact) beside it. (The flow's
    tasks run against a real Prefect server.)"""
    kube = kube_clients
    v1 = spec(sandbox.info, ns, "v1", "Prefix")
    v2 = spec(sandbox.info, ns, "v2", "Exact")
    _release(core, v1, pods["v1"])
    _release(core, v2, pods["v2"])
    kube.apply(render_ingress(v1))
    host, port = sandbox.info["ingress_endpoint"].removeprefix("http://").split(":")
    endpoint = IngressEndpoint(address=host, port=int(port), host=v1.ingress.host, path="/")
    with httpx.Client(timeout=10) as http:
        wait_for(lambda: not isinstance(read_answer(http, endpoint, v1, {}), str), what="the main Ingress routes to v1")
    live = find_live_version.fn(kube, v2)
    assert live is not None and live.service == v1.names.service
    return kube, v1, v2, live, endpoint


def test_the_isolated_stress_test_goes_through_a_preview_counted_on_the_new_route_only(rollout, sandbox):
    kube, v1, v2, live, endpoint = rollout
    log = sandbox.services.ingress.log
    main_route = sls_route(v1.names.namespace, v1.names.service, 8501)
    new_route = sls_route(v2.names.namespace, v2.names.service, 8501)
    preview = prepare_canary(kube, v2, live, endpoint)
    assert preview.host == f"preview.{v1.ingress.host}" and not preview.headers
    # the new release's HPA reads its own route during the isolated stress test
    hpa = kube.get("HorizontalPodAutoscaler", v2.names.hpa, v2.names.namespace)
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"]["sls.ingress.route"] == new_route
    ing = kube.get("Ingress", v2.names.preview_ingress, v2.names.namespace)
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["pathType"] == "Prefix"  # the live Ingress's, not the spec's
    main_before, new_before = log.total(main_route), log.total(new_route)
    with httpx.Client(timeout=10) as http:
        for _ in range(20):
            answer = read_answer(http, preview, v2, {})
            assert not isinstance(answer, str) and answer.versions == (("2", "AVAILABLE"),), answer
    # each read is two requests (status + metadata): all 40 on the new release's route, none on the users' route
    wait_for(lambda: log.total(new_route) - new_before == 40, what="40 preview requests on the new route",
             state=lambda: log.total(new_route) - new_before)
    assert log.total(main_route) == main_before
    # from the preview to the canary: the preview is gone, the header proven to reach v2
    assert canary_at_zero(kube, v2, live, endpoint) is True
    assert kube.get("Ingress", v2.names.preview_ingress, v2.names.namespace) is None
    with httpx.Client(timeout=10) as http:
        assert read_answer(http, canary_endpoint(endpoint, v2), v2, canary_endpoint(endpoint, v2).headers).versions \
            == (("2", "AVAILABLE"),)
        assert read_answer(http, endpoint, v2, {}).versions == (("1", "AVAILABLE"),)  # weight 0: users stay on v1


def test_a_canary_rendered_from_the_spec_is_dropped_and_the_flow_says_so(rollout, sandbox):
    """What the flow did before: the canary rendered from the spec (pathType Exact) on a live Prefix Ingress.
    ingress-nginx drops it; the header goes to v1; the proof fails naming the cause, before any test counts."""
    kube, v1, v2, live, endpoint = rollout
    preview = prepare_canary(kube, v2, live, endpoint)
    new = wait_for_preview(preview, v2)
    kube.delete("Ingress", v2.names.preview_ingress, v2.names.namespace)
    kube.apply(render_canary_ingress(v2, 0, render_ingress(v2)))  # "derived" from the spec's own rendering
    wait_for(lambda: any(v2.names.canary_ingress in line for line in sandbox.services.ingress.table.dropped),
             what="the controller dropped the canary", state=lambda: sandbox.services.ingress.table.dropped)
    with pytest.raises(RouteNotProven) as err:
        prove_header(endpoint, v2, new, canary_endpoint(endpoint, v2).headers, timeout_s=3)
    assert "did not merge the canary Ingress" in str(err.value) and "pathType" in str(err.value)
    assert "the live release's answer" in str(err.value)
    # derived from the live Ingress instead: merged, proven
    set_canary.fn(kube, v2, live, 0)
    assert prove_header(endpoint, v2, new, canary_endpoint(endpoint, v2).headers) is True
