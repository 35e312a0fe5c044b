"""What a rollout leaves and says, on the session sandbox's API server, with objects as the deploy renders them:

- a failure after the switch never reports "rolled back" while the new release serves: a canary whose retirement
  of the previous version failed is "promoted, retire failed" (and says what is left); a blue-green release that
  fails in its bake is switched back from;
- removing a release waits the drain after its traffic left it (nginx applies Ingress changes on its next sync);
- the main Ingress keeps the release history, and ``rollback`` goes back to the release that served before the
  live one, after undoing the half-done canary of a dead run (which the newest-Deployment rule took for it).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from kubernetes import client, watch
from polling import wait_for

from cli.sandbox_profile import credentials_from_sandbox, save_sandbox_blocks
from core.spec import DeploySpec
from tasks.autoscaling import render_hpa
from tasks.ingress import render_ingress
from tasks.live import find_live_version
from tasks.rollout.canary import render_canary_ingress
from tasks.rollout.state import Phase, read_state
from tasks.rollout.versions import (
    history,
    hold_replicas,
    promote,
    record_release,
    routed_service,
    switch_main,
)
from tasks.serving import chart_labels, render_service, selector


@pytest.fixture
def kube(kube_clients):
    return kube_clients


@pytest.fixture(scope="module")
def block(sandbox_info, prefect_api) -> str:
    return save_sandbox_blocks(sandbox_info, name="record-" + uuid.uuid4().hex[:6])


def spec(sandbox_info: dict[str, Any], ns: str, version: str, **rollout: Any) -> DeploySpec:
    return DeploySpec.parse({"cluster_id": sandbox_info["cluster_id"],
                             "serving": {"version": version, "namespace": ns},
                             "ingress": {"host": f"{ns}.example.com"},
                             "autoscaling": {"min_replicas": 1, "max_replicas": 3, "target_qps": 100000},
                             "rollout": {"drain_seconds": 0, **rollout}})


def release(kube, s: DeploySpec, replicas: int = 1, hpa: bool = True) -> None:
    """A release named and labelled as arena's chart does, running a plain container (no model needed)."""
    labels = chart_labels(s)
    kube.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": s.names.deployment, "namespace": s.names.namespace, "labels": labels},
                "spec": {"replicas": replicas, "selector": {"matchLabels": selector(s)},
                         "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                             {"name": "serving", "image": "nginx:1.25", "ports": [{"containerPort": 8501}]}]}}}})
    kube.apply({**render_service(s), "metadata": {**render_service(s)["metadata"], "namespace": s.names.namespace}})
    if hpa:
        kube.apply(render_hpa(s))


def exists(kube, s: DeploySpec) -> bool:
    return kube.get("Deployment", s.names.deployment, s.names.namespace) is not None


def test_a_failure_after_the_switch_is_reported_promoted_and_says_what_is_left(kube, ns, sandbox_info):
    from flows.rollout import RolloutFailed, rolled_back_on_failure

    v1, v2 = spec(sandbox_info, ns, "v1"), spec(sandbox_info, ns, "v2")
    release(kube, v1, replicas=2)
    kube.apply(render_ingress(v1))
    release(kube, v2)
    kube.apply(render_canary_ingress(v2, 60, render_ingress(v1)))
    live = find_live_version.fn(kube, v2)
    assert live is not None

    with pytest.raises(RolloutFailed) as failed, rolled_back_on_failure(kube, v2, live) as stage:
        stage("promotion")
        promote.fn(kube, v2, live, credentials_from_sandbox(sandbox_info), retire_previous=False)
        stage("retire")
        raise RuntimeError("the API server answered 500 to the scale request")
    report = failed.value.report
    assert report.decision == "promoted, retire failed", report
    assert str(failed.value).startswith("promoted, but finishing the rollout failed: retire: RuntimeError: the API")
    assert f"left: {v1.names.deployment} at 2 replica(s), HPA {v1.names.hpa}" in report.reason
    state = read_state(kube, v2)
    assert (state.phase, state.stage, state.weight, state.decision) == (
        Phase.FAILED, "retire", 0, "promoted, retire failed"), state
    # the truth: v2 serves and is whole, v1 is still there for the next run to retire
    assert routed_service(kube, v1) == v2.names.service and exists(kube, v2) and exists(kube, v1)


def test_a_blue_green_failure_in_the_bake_switches_back(kube, ns, sandbox_info):
    from flows.rollout import RolloutFailed, rolled_back_on_failure

    v1, v2 = (spec(sandbox_info, ns, v, strategy="blue-green") for v in ("v1", "v2"))
    release(kube, v1)
    kube.apply(render_ingress(v1))
    release(kube, v2)
    live = find_live_version.fn(kube, v2)
    assert live is not None

    with pytest.raises(RolloutFailed, match=r"rollout of the new version switched back: bake: ConnectionError: ConnectError"), \
            rolled_back_on_failure(kube, v2, live) as stage:
        stage("switch")
        stage.held = hold_replicas.fn(kube, v2, v1.names.deployment)
        promote.fn(kube, v2, live, credentials_from_sandbox(sandbox_info), retire_previous=False)
        stage("bake")
        raise ConnectionError("ConnectError: the analysis could not reach the ingress")
    assert routed_service(kube, v1) == v1.names.service
    assert kube.get("HorizontalPodAutoscaler", v1.names.hpa, ns) is not None  # re-created
    assert not exists(kube, v2) and exists(kube, v1)
    assert (read_state(kube, v2).phase, read_state(kube, v2).decision) == (Phase.FAILED, "switched back")
    assert [e["service"] for e in history(kube.get("Ingress", v1.names.ingress, ns))] == [
        v1.names.service, v2.names.service, v1.names.service]


def test_a_rolled_back_release_is_removed_only_after_the_drain(kube, api_client, ns, sandbox_info):
    from tasks.rollout.versions import remove_canary

    drain_s = 3.0
    v1, v2 = spec(sandbox_info, ns, "v1"), spec(sandbox_info, ns, "v2", drain_seconds=drain_s)
    release(kube, v1)
    kube.apply(render_ingress(v1))
    release(kube, v2)
    kube.apply(render_canary_ingress(v2, 30, render_ingress(v1)))

    deleted: dict[str, float] = {}
    ready = threading.Event()

    def record(kind: str, lister) -> None:
        w = watch.Watch()
        ready.set()
        for event in w.stream(lister, ns, timeout_seconds=60):
            if event["type"] == "DELETED":
                deleted.setdefault(f"{kind} {event['object'].metadata.name}", time.monotonic())
                if len(deleted) >= 2:
                    w.stop()

    net, apps = client.NetworkingV1Api(api_client), client.AppsV1Api(api_client)
    threads = [threading.Thread(target=record, args=("Ingress", net.list_namespaced_ingress), daemon=True),
               threading.Thread(target=record, args=("Deployment", apps.list_namespaced_deployment), daemon=True)]
    for t in threads:
        t.start()
    ready.wait(10)
    time.sleep(0.5)  # both watches established
    remove_canary.fn(kube, v2)
    wait_for(lambda: len(deleted) >= 2, "the canary Ingress and v2's Deployment deleted", timeout=60,
             state=lambda: deleted)
    gap = deleted[f"Deployment {v2.names.deployment}"] - deleted[f"Ingress {v2.names.canary_ingress}"]
    assert gap >= drain_s - 0.5, f"v2 was deleted {gap:.2f}s after its traffic left it (drain {drain_s}s)"
    assert exists(kube, v1)


def test_the_history_is_kept_on_the_main_ingress_through_re_runs(kube, ns, sandbox_info):
    v1, v2 = spec(sandbox_info, ns, "v1"), spec(sandbox_info, ns, "v2")
    release(kube, v1)
    kube.apply(render_ingress(v1))
    record_release(kube, v1, v1.names.ingress)
    kube.apply(render_ingress(v1))  # a re-run of the live release applies its Ingress again
    record_release(kube, v1, v1.names.ingress)
    assert [e["version"] for e in history(kube.get("Ingress", v1.names.ingress, ns))] == ["v1"]
    release(kube, v2)
    switch_main(kube, v2, find_live_version.fn(kube, v2), v2.names.service)
    entries = history(kube.get("Ingress", v1.names.ingress, ns))
    assert [(e["version"], e["service"]) for e in entries] == [("v1", v1.names.service), ("v2", v2.names.service)]


def test_rollback_goes_to_the_release_that_served_before_not_to_a_dead_runs_canary(kube, ns, sandbox_info, block):
    """v1 served, v2 was promoted (v1 retired, kept at 0), then a v3 rollout died at its 30% step. The newest
    Deployment besides the live one is v3's, which never served: rollback undoes v3's canary and brings back v1."""
    from flows.rollback import rollback

    v1, v2, v3 = (spec(sandbox_info, ns, v) for v in ("v1", "v2", "v3"))
    release(kube, v1)
    kube.apply(render_ingress(v1))
    record_release(kube, v1, v1.names.ingress)
    release(kube, v2)
    switch_main(kube, v2, find_live_version.fn(kube, v2), v2.names.service)
    kube.delete("HorizontalPodAutoscaler", v1.names.hpa, ns)
    kube.scale(v1.names.deployment, ns, 0)
    time.sleep(1.1)  # v3's Deployment is the newest, by creationTimestamp (seconds)
    release(kube, v3)
    kube.apply(render_canary_ingress(v3, 30, render_ingress(v1)))

    back = rollback(spec=v2, cluster_block=block)
    assert (back.from_service, back.to_service) == (v2.names.service, v1.names.service)
    assert routed_service(kube, v1) == v1.names.service
    assert kube.get("Ingress", v3.names.canary_ingress, ns) is None and not exists(kube, v3)
    assert kube.get("Deployment", v2.names.deployment, ns)["spec"]["replicas"] == 0
    assert [e["version"] for e in history(kube.get("Ingress", v1.names.ingress, ns))] == ["v1", "v2", "v1"]


def test_each_weight_waits_for_the_replicas_its_share_needs(kube, api_client, ns, sandbox_info, prefect_api):
    """The live release serves with 4 replicas; at 50% the new one needs ceil(4 * 50 / 100) = 2 Available before
    the canary Ingress carries that weight (its HPA alone would still hold its minimum, 1). The order is read from
    the API server's resourceVersions (one counter over all writes), not from clocks."""
    from flows.rollout import Stage, _carry_out
    from tasks.ingress import wait_for_address
    from tasks.rollout.plan import plan

    v1 = spec(sandbox_info, ns, "v1")
    v2 = spec(sandbox_info, ns, "v2", steps=[50])
    release(kube, v1, replicas=4, hpa=False)
    kube.apply(render_ingress(v1))
    release(kube, v2)
    apps, net = client.AppsV1Api(api_client), client.NetworkingV1Api(api_client)
    wait_for(lambda: (apps.read_namespaced_deployment(v1.names.deployment, ns).status.available_replicas or 0) == 4,
             "v1's 4 replicas Available", timeout=120)
    endpoint = wait_for_address(kube, v1, v1.names.ingress)
    live = find_live_version.fn(kube, v2)

    seen: list[tuple[int, str, int]] = []  # (resourceVersion, what, value)
    stop = threading.Event()

    def record(kind: str, lister, value) -> None:
        w = watch.Watch()
        for event in w.stream(lister, ns, timeout_seconds=120):
            o = event["object"]
            if o.metadata.name in (v2.names.deployment, v2.names.canary_ingress):
                seen.append((int(o.metadata.resource_version), kind, value(o)))
            if stop.is_set():
                w.stop()

    threads = [
        threading.Thread(target=record, daemon=True, args=("available", apps.list_namespaced_deployment,
                                                           lambda o: o.status.available_replicas or 0)),
        threading.Thread(target=record, daemon=True, args=("weight", net.list_namespaced_ingress, lambda o: int(
            (o.metadata.annotations or {}).get("nginx.ingress.kubernetes.io/canary-weight", "0"))))]
    for t in threads:
        t.start()
    time.sleep(0.5)  # both watches established
    weight_step = plan(v2)[0]
    assert (weight_step.kind, weight_step.weight) == ("weight", 50)
    _carry_out(kube, v2, live, endpoint, weight_step, Stage(kube, v2, live), credentials_from_sandbox(sandbox_info),
               lambda: None)
    wait_for(lambda: any(what == "weight" and value == 50 for _, what, value in seen), "the weight-50 event",
             timeout=60, state=lambda: seen)
    stop.set()
    events = sorted(seen)
    first_50 = next(rv for rv, what, value in events if what == "weight" and value == 50)
    available = [value for rv, what, value in events if what == "available" and rv < first_50]
    assert available and available[-1] >= 2, events
    assert routed_service(kube, v1) == v1.names.service


def test_the_next_run_reads_where_an_interrupted_rollout_stopped_and_records_its_recovery(kube, ns, sandbox_info):
    from flows.rollout import Stage
    from tasks.rollout.versions import recover

    v1, v2, v3 = (spec(sandbox_info, ns, v) for v in ("v1", "v2", "v3"))
    release(kube, v1)
    kube.apply(render_ingress(v1))
    release(kube, v2)
    kube.apply(render_canary_ingress(v2, 30, render_ingress(v1)))
    stage = Stage(kube, v2, find_live_version.fn(kube, v2), run="host-a/run-1")
    stage("step 1 (30%)", 30)  # ... and then the run was killed
    state = read_state(kube, v3)
    assert (state.release, state.previous, state.phase, state.stage, state.weight, state.run) == (
        "v2", "v1", Phase.PROGRESSING, "step 1 (30%)", 30, "host-a/run-1")

    done = recover.fn(kube, v3, credentials_from_sandbox(sandbox_info))
    state = read_state(kube, v3)
    assert (state.phase, state.decision) == (Phase.FAILED, "interrupted")
    assert state.reason.startswith("the run stopped at step 1 (30%); the next run recovered: ")
    assert f"Deployment {v2.names.deployment}" in state.reason and done
