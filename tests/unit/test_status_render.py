"""The status from listed objects (tasks.status.assemble_status) and its rendering, without a cluster."""

from __future__ import annotations

from typing import Any

from core.spec import DeploySpec
from tasks.status import (
    ServiceStatus,
    assemble_status,
    canary_ingresses,
    render_status_lines,
    render_status_markdown,
    traffic_line,
)

SPEC = DeploySpec.parse({"cluster_id": "c0ffee1234", "serving": {"name": "bert", "version": "v2", "namespace": "prod"},
                         "ingress": {"host": "api.example.com", "path": "/"}})
V1, V2 = "bert-v1-tensorflow-serving", "bert-v2-tensorflow-serving"
CANARY = "nginx.ingress.kubernetes.io/canary"


def ing(name: str, svc: str, annotations: dict[str, str] | None = None, host: str = "api.example.com",
        cls: str = "nginx", created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": annotations or {}, "creationTimestamp": created},
            "spec": {"ingressClassName": cls, "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": svc, "port": {"number": 8501}}}}]}}]}}


def canary_ann(weight: str = "30", **more: str) -> dict[str, str]:
    return {CANARY: "true", "nginx.ingress.kubernetes.io/canary-by-header": "X-Canary",
            "nginx.ingress.kubernetes.io/canary-by-header-value": "v2",
            "nginx.ingress.kubernetes.io/canary-weight": weight, **more}


def svc(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"servingName": "bert", "servingVersion": version}}}


def dep(name: str, version: str, replicas: int, ready: int | None, created: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"servingVersion": version}, "creationTimestamp": created},
            "spec": {"replicas": replicas}, "status": {"readyReplicas": ready} if ready is not None else {}}


def hpa(name: str, target: str, current: int | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": 1, "maxReplicas": 10},
            "status": {"currentReplicas": current, "desiredReplicas": current} if current is not None else {}}


def rollout_in_progress() -> ServiceStatus:
    return assemble_status(
        SPEC,
        [ing("bert", V1), ing("whatever-name", V2, canary_ann(), created="2026-02-01T00:00:00Z"),
         ing("other-host", V2, canary_ann("90"), host="other.example.com")],
        [svc(V1, "v1"), svc(V2, "v2")],
        [dep(V2, "v2", 1, None, "2026-02-01T00:00:00Z"), dep(V1, "v1", 3, 3, "2026-01-01T00:00:00Z")],
        [hpa("bert-v1-hpa", V1, 3), hpa("bert-v2-hpa", V2)],
    )


def test_live_canary_and_versions_from_the_listed_objects():
    s = rollout_in_progress()
    assert (s.live.ingress, s.live.service, s.live.serving_version) == ("bert", V1, "v1")
    assert s.route == f"prod-{V1}-8501"
    c = s.canary
    assert (c.ingress, c.service, c.version, c.weight, c.header, c.header_value) == (
        "whatever-name", V2, "v2", 30, "X-Canary", "v2")
    assert [(v.version, v.role, v.desired_replicas, v.ready_replicas) for v in s.versions] == [
        ("v1", "live", 3, 3), ("v2", "canary", 1, 0)]
    assert s.versions[0].hpa.name == "bert-v1-hpa" and s.versions[0].hpa.current_replicas == 3
    assert s.versions[1].hpa.name == "bert-v2-hpa" and s.versions[1].hpa.current_replicas is None
    assert s.notes == []


def test_the_rendered_lines_say_the_qps_is_the_total_not_per_version():
    s = rollout_in_progress()
    s.qps = 12.5
    lines = render_status_lines(s)
    assert lines[1] == f"live: v1 (Ingress bert -> Service {V1}:8501)"
    assert lines[2] == (f"canary: v2 (Ingress whatever-name -> Service {V2}:8501), weight 30/100 (30% of user "
                        "requests), every request with X-Canary: v2")
    assert lines[3].startswith(f"traffic: 12.5 req/s on route prod-{V1}-8501 (sls_ingress_qps); the total of both")
    assert "no per-version figure" in lines[3]
    assert lines[4] == "versions:"
    v1_row, v2_row = lines[5], lines[6]
    assert v1_row.split()[:4] == ["v1", "live", V1, "3/3"]
    assert v1_row.endswith("HPA bert-v1-hpa min 1 max 10 current 3 desired 3")
    assert v2_row.split()[:4] == ["v2", "canary", V2, "0/1"]
    assert v1_row.index(V1) == v2_row.index(V2)  # aligned columns
    md = render_status_markdown(s)
    assert f"| v1 | live | {V1} | 3 / 3 | bert-v1-hpa | 1 | 10 | 3 |" in md
    assert f"| v2 | canary | {V2} | 0 / 1 | bert-v2-hpa | 1 | 10 | - |" in md


def test_nothing_deployed():
    s = assemble_status(SPEC, [], [], [], [])
    assert s.live is None and s.canary is None and s.route is None
    assert render_status_lines(s) == [
        "serving bert in namespace prod: api.example.com/ (IngressClass nginx)",
        "live: none (no main Ingress routes the host and path)",
        "canary: none",
        "traffic: no main route (nothing serves the host and path)",
        "versions: none (no Deployment of serving bert)",
    ]


def test_after_a_promotion_the_old_version_is_retired_and_there_is_no_canary():
    s = assemble_status(SPEC, [ing("bert", V2)], [svc(V1, "v1"), svc(V2, "v2")],
                        [dep(V1, "v1", 0, None, "2026-01-01T00:00:00Z"), dep(V2, "v2", 2, 2, "2026-02-01T00:00:00Z")],
                        [hpa("bert-v2-hpa", V2, 2)])
    assert [(v.version, v.role, v.hpa is None) for v in s.versions] == [("v1", "retired", True), ("v2", "live", False)]
    s.qps = 0.0
    assert traffic_line(s) == f"traffic: 0 req/s on route prod-{V2}-8501 (sls_ingress_qps)"


def test_canary_weight_as_ingress_nginx_parses_it():
    def weight_of(**ann: str) -> tuple[int, int, float]:
        c = assemble_status(SPEC, [ing("bert", V1), ing("c", V2, {CANARY: "true", **ann})], [], [], []).canary
        return c.weight, c.weight_total, c.percent

    assert weight_of() == (0, 100, 0.0)  # missing: 0
    for bad in ("x", "3_0", " 30", "30.0"):  # not a Go integer: 0
        assert weight_of(**{"nginx.ingress.kubernetes.io/canary-weight": bad}) == (0, 100, 0.0), bad
    # a total above 100 counts; below 100 balancer.lua ignores it
    assert weight_of(**{"nginx.ingress.kubernetes.io/canary-weight": "30",
                        "nginx.ingress.kubernetes.io/canary-weight-total": "1000"}) == (30, 1000, 3.0)
    assert weight_of(**{"nginx.ingress.kubernetes.io/canary-weight": "30",
                        "nginx.ingress.kubernetes.io/canary-weight-total": "50"}) == (30, 100, 30.0)


def test_canaries_are_found_by_annotation_class_host_and_path_not_by_name():
    items = [ing("bert-canary", V2, {CANARY: "false"}), ing("x", V2, canary_ann(), cls="alb"),
             ing("y", V2, canary_ann(), host="other.example.com"), ing("z", V2, {CANARY: "True"})]
    assert [(i["metadata"]["name"], s) for i, s, _ in canary_ingresses(items, "nginx", "api.example.com", "/")] == [
        ("z", V2)]


def test_what_looks_wrong_is_noted():
    s = assemble_status(
        SPEC, [ing("c1", V2, canary_ann()), ing("c2", "gone", canary_ann(), created="2026-03-01T00:00:00Z")],
        [svc(V2, "v2")], [dep(V2, "v2", 1, 1, "2026-02-01T00:00:00Z")], [hpa("a", V2), hpa("b", V2)])
    text = "\n".join(render_status_lines(s))
    assert "note: 2 canary Ingresses for api.example.com/ (c1, c2)" in text
    assert "note: a canary Ingress (c1) but no main Ingress: the canary serves nothing" in text
    assert "note: 2 HPAs target Deployment bert-v2-tensorflow-serving (a, b)" in text
    assert s.live is None and s.canary.ingress == "c1"
