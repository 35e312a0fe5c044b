"""Before it changes anything, the deploy finds the version that serves the spec's host and path: first deploy,
re-run of the live version, or a replacement of a live model. Against the session sandbox's API server, with the
Service and Ingress exactly as the deploy renders them."""

from __future__ import annotations

from typing import Any

import pytest

from core.spec import DeploySpec
from tasks.ingress import render_ingress
from tasks.live import LiveVersion, classify_run, find_live_version, is_canary, serving_backend
from tasks.serving import render_service


@pytest.fixture
def kube(kube_clients):
    """The flow's client (this module's tests call tasks with it)."""
    return kube_clients


def spec(sandbox_info: dict[str, Any], ns: str, version: str, **ingress: Any) -> DeploySpec:
    return DeploySpec.parse({"cluster_id": sandbox_info["cluster_id"],
                             "serving": {"version": version, "namespace": ns}, "ingress": ingress})


def test_first_deploy_rerun_and_replacement_are_told_apart(kube, ns, sandbox_info):
    v1 = spec(sandbox_info, ns, "202601010000")
    assert find_live_version.fn(kube, v1) is None and classify_run(v1, None) == "first-deploy"

    kube.apply(render_service(v1))
    kube.apply(render_ingress(v1))
    live = find_live_version.fn(kube, v1)
    assert live == LiveVersion(ingress=v1.names.ingress, service=v1.names.service, port=8501,
                               serving_name="bert-tfserving", serving_version="202601010000")
    assert classify_run(v1, live) == "re-run"
    v2 = spec(sandbox_info, ns, "202602020000")
    assert find_live_version.fn(kube, v2) == live and classify_run(v2, live) == "replace-live"
    # another host or path is not served by v1
    assert find_live_version.fn(kube, spec(sandbox_info, ns, "202602020000", host="other.example.com")) is None
    assert find_live_version.fn(kube, spec(sandbox_info, ns, "202602020000", path="/v2")) is None


def test_a_canary_ingress_on_the_same_host_and_path_is_not_the_live_version(kube, ns, sandbox_info):
    v1, v2 = spec(sandbox_info, ns, "202601010000"), spec(sandbox_info, ns, "202602020000")
    canary = render_ingress(v2)
    canary["metadata"]["name"] += "-canary"
    canary["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/canary": "true",
                                         "nginx.ingress.kubernetes.io/canary-weight": "10"}
    kube.apply(render_service(v2))
    kube.apply(canary)
    assert find_live_version.fn(kube, v2) is None  # a canary alone serves nothing
    kube.apply(render_service(v1))
    kube.apply(render_ingress(v1))
    assert find_live_version.fn(kube, v2).serving_version == "202601010000"


# --- pure ----------------------------------------------------------------------------------------------------------
def _ing(name: str, host: str = "h", path: str = "/", svc: str = "s", cls: str | None = "nginx",
         annotations: dict[str, str] | None = None, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": annotations or {}, "creationTimestamp": created},
            "spec": {"ingressClassName": cls, "rules": [{"host": host, "http": {"paths": [
                {"path": path, "backend": {"service": {"name": svc, "port": {"number": 8501}}}}]}}]}}


@pytest.mark.parametrize(("value", "canary"), [("true", True), ("True", True), ("1", True), ("t", True),
                                                ("false", False), ("yes", False), ("", False), (None, False)])
def test_canary_annotation_is_read_as_go_parses_bools(value, canary):
    annotations = {} if value is None else {"nginx.ingress.kubernetes.io/canary": value}
    assert is_canary(_ing("i", annotations=annotations)) is canary


def test_the_oldest_main_ingress_of_the_class_wins():
    items = [_ing("newer", svc="b", created="2026-02-01T00:00:00Z"), _ing("older", svc="a"),
             _ing("other-class", svc="c", cls="alb", created="2025-01-01T00:00:00Z")]
    assert serving_backend(items, "nginx", "h", "/") == ("older", "a", 8501)
    legacy = _ing("legacy", svc="d", cls=None, annotations={"kubernetes.io/ingress.class": "nginx"})
    assert serving_backend([legacy], "nginx", "h", "/") == ("legacy", "d", 8501)
    assert serving_backend(items, "nginx", "h", "/other") is None
