"""The pure parts of a rollout: the rollout spec's rules, the canary objects, the analysis's judgement."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.spec import DeploySpec, SpecError
from tasks.ingress import render_ingress
from tasks.live import is_canary, serving_backend
from tasks.rollout.analysis import StepStats, judge, p95
from tasks.rollout.canary import (
    BY_HEADER,
    BY_HEADER_VALUE,
    CANARY,
    WEIGHT,
    canary_weight,
    milli_quantity,
    render_canary_hpa,
    render_canary_ingress,
    render_preview_ingress,
    with_backend,
)


def spec(**rollout) -> DeploySpec:
    return DeploySpec.parse({"cluster_id": "c0123456789abcdef", "serving": {"version": "v2"}, "rollout": rollout})


@pytest.mark.parametrize(("rollout", "field", "rule"), [
    ({"steps": []}, "rollout.steps", "1 to 20"),
    ({"steps": [10, 10]}, "rollout.steps", "increase"),
    ({"steps": [0, 50]}, "rollout.steps", "1 to 100"),
    ({"steps": [50, 101]}, "rollout.steps", "1 to 100"),
    ({"strategy": "big-bang"}, "rollout.strategy", "canary"),
    ({"header": "X Canary"}, "rollout.header", "letters, digits and '-'"),
    # nginx drops request headers with '_' or '.' in their names (ignore_invalid_headers): never a canary
    ({"header": "X_Canary"}, "rollout.header", "ignore_invalid_headers"),
    ({"header": "X.Canary"}, "rollout.header", "letters, digits and '-'"),
    ({"header": "Host"}, "rollout.header", "HTTP itself"),
    ({"max_error_rate": 1.5}, "rollout.max_error_rate", "1"),
    ({"keep_versions": 0}, "rollout.keep_versions", "1"),
    ({"step_seconds": 0}, "rollout.step_seconds", "0"),
    ({"analysis_rps": "5"}, "rollout.analysis_rps", "number"),
])
def test_a_bad_rollout_names_the_field_and_the_rule(rollout, field, rule) -> None:
    with pytest.raises(SpecError) as err:
        spec(**rollout)
    assert field in str(err.value) and rule in str(err.value), str(err.value)


@given(st.lists(st.integers(min_value=-5, max_value=110), max_size=25))
def test_steps_are_accepted_exactly_when_increasing_percentages(steps: list[int]) -> None:
    ok = 1 <= len(steps) <= 20 and all(1 <= w <= 100 for w in steps) and all(b > a for a, b in itertools.pairwise(steps))
    try:
        got = spec(steps=steps).rollout.steps
    except SpecError:
        assert not ok
    else:
        assert ok and got == steps


def test_the_canary_ingress_is_the_main_rule_for_the_new_service_with_ingress_nginx_annotations() -> None:
    s = spec(header="X-Model-Canary")
    main = render_ingress(DeploySpec.parse({"cluster_id": "c0123456789abcdef", "serving": {"version": "v1"}}))
    canary = render_canary_ingress(s, 30, main)
    assert canary["metadata"]["name"] == "bert-tfserving-canary" != main["metadata"]["name"]
    assert canary["spec"] == render_ingress(s)["spec"]  # same class, host, path, backend: the new version's Service
    ann = canary["metadata"]["annotations"]
    assert ann == {CANARY: "true", BY_HEADER: "X-Model-Canary", BY_HEADER_VALUE: "v2", WEIGHT: "30"}
    assert is_canary(canary) and canary_weight(canary) == 30
    # the live version is still found through the main Ingress, canary passed over
    found = serving_backend([canary, main], "nginx", s.ingress.host, s.ingress.path)
    assert found is not None and found[0] == main["metadata"]["name"]
    with pytest.raises(ValueError):
        render_canary_ingress(s, 101, main)


def live_main() -> dict:
    """A main Ingress made by hand (the console, kubectl): legacy class annotation, Exact path, other rules, TLS."""
    svc = {"service": {"name": "bert-v1", "port": {"name": "http-serving"}}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {
        "name": "by-hand", "namespace": "default", "annotations": {
            "kubernetes.io/ingress.class": "nginx",
            "nginx.ingress.kubernetes.io/proxy-body-size": "8m",
            "nginx.ingress.kubernetes.io/canary-weight": "40",  # stale, from somebody's experiment
            "kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
        "spec": {"tls": [{"hosts": ["test.example.com"], "secretName": "tls"},
                         {"hosts": ["other.example.com"], "secretName": "other"}],
                 "rules": [{"host": "test.example.com", "http": {"paths": [
                     {"path": "/", "pathType": "Exact", "backend": svc},
                     {"path": "/admin", "pathType": "Prefix", "backend": {"service": {
                         "name": "admin", "port": {"number": 80}}}}]}},
                     {"host": "other.example.com", "http": {"paths": [
                         {"path": "/", "pathType": "Prefix", "backend": svc}]}}]}}


def test_the_canary_is_derived_from_the_live_ingress_as_flagger_does() -> None:
    s = spec()  # renders ImplementationSpecific; the live Ingress says Exact
    canary = render_canary_ingress(s, 0, live_main())
    assert canary["spec"] == {
        "tls": [{"hosts": ["test.example.com"], "secretName": "tls"}],
        "rules": [{"host": "test.example.com", "http": {"paths": [{"path": "/", "pathType": "Exact", "backend": {
            "service": {"name": s.names.service, "port": {"number": 8501}}}}]}}]}
    assert canary["metadata"]["annotations"] == {
        "kubernetes.io/ingress.class": "nginx", "nginx.ingress.kubernetes.io/proxy-body-size": "8m",
        CANARY: "true", BY_HEADER: "X-Canary", BY_HEADER_VALUE: "v2", WEIGHT: "0"}
    preview = render_preview_ingress(s, live_main())
    assert preview["metadata"]["name"] == "bert-tfserving-preview"
    assert preview["spec"] == {"rules": [{"host": "preview.test.example.com", "http": {"paths": [
        {"path": "/", "pathType": "Exact", "backend": {"service": {"name": s.names.service,
                                                                   "port": {"number": 8501}}}}]}}]}
    assert not is_canary(preview) and preview["metadata"]["annotations"] == {
        "kubernetes.io/ingress.class": "nginx", "nginx.ingress.kubernetes.io/proxy-body-size": "8m"}
    with pytest.raises(ValueError, match="no rule for test.example.com/api"):
        render_canary_ingress(spec().model_copy(update={"ingress": s.ingress.model_copy(update={"path": "/api"})}),
                              0, live_main())


def test_the_preview_host_is_its_own() -> None:
    assert spec().names.preview_host == "preview.test.example.com"
    assert spec(preview_host="canary.example.net").names.preview_host == "canary.example.net"
    with pytest.raises(SpecError, match="rollout.preview_host.*must differ"):
        spec(preview_host="test.example.com")
    with pytest.raises(SpecError, match="rollout.preview_host"):
        spec(preview_host="Not_A_Host")


@given(st.integers(min_value=1, max_value=100), st.integers(min_value=1, max_value=1000), st.floats(0, 10_000))
def test_the_canary_hpa_asks_for_the_canarys_part_of_the_main_routes_load(share: int, target: int,
                                                                          total: float) -> None:
    s = DeploySpec.parse({"cluster_id": "c0123456789abcdef", "autoscaling": {"target_qps": target}})
    hpa = render_canary_hpa(s, "default-old-8501", share)
    ext = hpa["spec"]["metrics"][0]["external"]
    assert ext["metric"]["selector"]["matchLabels"]["sls.ingress.route"] == "default-old-8501"
    average = int(ext["target"]["averageValue"].removesuffix("m")) / 1000
    # the HPA's AverageValue rule: ceil(total / average) replicas, which is the canary's part at the target
    want = total * share / 100 / target
    assert math.isclose(total / average, want, rel_tol=1e-3, abs_tol=1e-3)


def test_milli_quantity_rounds_to_thousandths() -> None:
    assert milli_quantity(10) == "10000m" and milli_quantity(33.3333333) == "33333m"


def test_with_backend_moves_only_the_rule_of_the_host_and_path() -> None:
    s = spec()
    ing = render_ingress(s)
    ing["spec"]["rules"].append({"host": "other.example.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "keep", "port": {"number": 80}}}}]}})
    out = with_backend(ing, s.ingress.host, s.ingress.path, "new-svc", 8501)
    assert out["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {"name": "new-svc",
                                                                                  "port": {"number": 8501}}
    assert out["spec"]["rules"][1] == ing["spec"]["rules"][1]
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] != "new-svc"  # a copy
    with pytest.raises(ValueError, match="no rule"):
        with_backend(ing, "nowhere.example.com", "/", "x", 1)


def stats(**kw) -> StepStats:
    base = {"step": "step 1", "weight": 10, "seconds": 60, "requests": 300, "failures": 0, "p95_ms": 50.0,
            "available": 2}
    return StepStats(**{**base, **kw})


def test_judge_passes_a_healthy_step_and_names_each_failed_check_with_its_numbers() -> None:
    s = spec(max_error_rate=0.02, max_p95_ms=200, min_requests=100)
    assert judge(stats(), s).passed
    bad = judge(stats(failures=9, first_failure="HTTP 500: boom"), s)
    assert not bad.passed and bad.reason.startswith("error rate: 9/300 failed, 3.00% (max 2.00%)")
    assert "HTTP 500: boom" in bad.reason
    slow = judge(stats(p95_ms=250.0), s)
    assert slow.reason == "p95: 250 ms (max 200 ms)"
    few = judge(stats(requests=99), s)
    assert few.reason == "requests: 99 (at least 100 for a decision)"
    pods = judge(stats(restarts=1), s)
    assert pods.reason.startswith("pods:") and "1 container restart" in pods.reason
    assert not judge(stats(available=0), s).passed


def test_judge_falls_back_to_the_verification_slo() -> None:
    s = DeploySpec.parse({"verification": {"max_error_rate": 0.1, "p95_ms": 80}})
    assert judge(stats(failures=29, p95_ms=79.0), s).passed
    assert not judge(stats(failures=31), s).passed and not judge(stats(p95_ms=81.0), s).passed


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=300))
def test_p95_is_the_nearest_rank(latencies: list[float]) -> None:
    got = p95(latencies)
    ordered = sorted(latencies)
    assert got in latencies
    assert sum(1 for x in ordered if x <= got) >= 0.95 * len(ordered)
    assert sum(1 for x in ordered if x < got) < 0.95 * len(ordered)
    assert p95([]) is None


@given(st.text(alphabet=st.characters(codec="latin-1"), min_size=0, max_size=70))
def test_the_rollout_header_is_accepted_exactly_when_nginx_keeps_it(name: str) -> None:
    """nginx's ``ngx_http_parse_header_line`` with ``ignore_invalid_headers on``: letters, digits and '-' only."""
    import re

    ok = bool(re.fullmatch(r"[A-Za-z0-9-]{1,64}", name)) and name.lower() not in (
        "host", "content-length", "content-type", "cookie", "connection", "transfer-encoding")
    try:
        got = spec(header=name).rollout.header
    except SpecError:
        assert not ok
    else:
        assert ok and got == name
