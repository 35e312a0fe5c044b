"""The versions of a serving on a real API server: what a half-done rollout leaves is finished or undone, the version
the main Ingress routes to is never removed, old releases are pruned. Objects exactly as the deploy renders them."""

from __future__ import annotations

from typing import Any

import pytest

from core.spec import DeploySpec
from tasks.autoscaling import render_hpa
from tasks.ingress import render_ingress
from tasks.live import find_live_version
from tasks.rollout.canary import render_canary_ingress
from tasks.rollout.versions import list_versions, promote, prune, recover, remove_canary, routed_service
from tasks.serving import render_serving


@pytest.fixture
def kube(kube_clients):
    return kube_clients


@pytest.fixture(scope="module")
def creds(sandbox_info):
    from cli.sandbox_profile import credentials_from_sandbox

    return credentials_from_sandbox(sandbox_info)


def spec(sandbox_info: dict[str, Any], ns: str, version: str, **rollout: Any) -> DeploySpec:
    return DeploySpec.parse({"cluster_id": sandbox_info["cluster_id"], "serving": {"version": version, "namespace": ns},
                             "rollout": {"drain_seconds": 0, **rollout}})


def release(kube, s: DeploySpec, hpa: bool = True) -> None:
    for m in render_serving(s):
        kube.apply(m)
    if hpa:
        kube.apply(render_hpa(s))


def objects(kube, s: DeploySpec) -> dict[str, bool]:
    n = s.names
    return {kind: kube.get(kind, name, n.namespace) is not None for kind, name in (
        ("Deployment", n.deployment), ("Service", n.service), ("ConfigMap", n.model_config_map),
        ("HorizontalPodAutoscaler", n.hpa))}


ALL = {"Deployment": True, "Service": True, "ConfigMap": True, "HorizontalPodAutoscaler": True}
NONE = dict.fromkeys(ALL, False)


def test_recovery_undoes_the_canary_of_an_earlier_run_and_leaves_the_live_version(kube, ns, sandbox_info, creds):
    v1, v2, v3 = (spec(sandbox_info, ns, v) for v in ("v1", "v2", "v3"))
    release(kube, v1)
    kube.apply(render_ingress(v1))
    release(kube, v2)
    kube.apply(render_canary_ingress(v2, 30, render_ingress(v1)))  # a run of v2 died at its 30% step

    assert recover.fn(kube, v2, creds) == []  # v2 again: its canary is this run's to redo
    assert kube.get("Ingress", v2.names.canary_ingress, ns) is not None

    done = recover.fn(kube, v3, creds)
    assert kube.get("Ingress", v3.names.canary_ingress, ns) is None
    assert objects(kube, v2) == NONE and objects(kube, v1) == ALL
    assert f"Deployment {v2.names.deployment}" in done
    assert routed_service(kube, v1) == v1.names.service


def test_a_promotion_cut_short_is_finished_by_the_next_run(kube, ns, sandbox_info, creds):
    v1, v2 = spec(sandbox_info, ns, "v1"), spec(sandbox_info, ns, "v2")
    release(kube, v1)
    kube.apply(render_ingress(v1))
    release(kube, v2)
    kube.apply(render_canary_ingress(v2, 60, render_ingress(v1)))
    live = find_live_version.fn(kube, v2)
    promote.fn(kube, v2, live, creds, retire_previous=False)  # switched, then the run died before retiring v1
    assert routed_service(kube, v1) == v2.names.service and kube.get("Ingress", v2.names.canary_ingress, ns) is None

    assert recover.fn(kube, v2, creds) == [f"retired {v1.names.deployment}"]
    assert objects(kube, v1) == {**ALL, "HorizontalPodAutoscaler": False}
    assert kube.get("Deployment", v1.names.deployment, ns)["spec"]["replicas"] == 0
    assert objects(kube, v2) == ALL
    assert recover.fn(kube, v2, creds) == []  # nothing left to do


def test_removing_a_canary_never_removes_the_routed_version(kube, ns, sandbox_info):
    v1 = spec(sandbox_info, ns, "v1")
    release(kube, v1)
    kube.apply(render_ingress(v1))
    kube.apply(render_canary_ingress(v1, 10, render_ingress(v1)))  # a canary of the live version itself
    removed = remove_canary.fn(kube, v1)
    assert removed == [f"Ingress {v1.names.canary_ingress}"]
    assert objects(kube, v1) == ALL


def test_releases_beyond_keep_versions_are_pruned_oldest_first(kube, ns, sandbox_info, creds):
    specs = [spec(sandbox_info, ns, f"v{i}", keep_versions=2) for i in (1, 2, 3, 4)]
    for s in specs:
        release(kube, s, hpa=False)
    kube.apply(render_ingress(specs[2]))  # v3 serves; v4 is this run's
    pruned = prune(kube, specs[3], creds)
    assert pruned == [f"Service {specs[0].names.service}", f"Deployment {specs[0].names.deployment}",
                      f"ConfigMap {specs[0].names.model_config_map}"]
    # kept: v2 (one besides the live v3), v3 (routed), v4 (this run's)
    assert [v.version for v in list_versions(kube, specs[3])] == ["v2", "v3", "v4"]


def test_a_run_that_lost_its_lease_leaves_its_canary_to_the_next_run_and_any_other_failure_rolls_back(
        kube, ns, sandbox_info, prefect_api):  # roll_back runs remove_canary as a task: on the session server
    from clients.lease import LeaseLost
    from flows.rollout import RolloutFailed, rolled_back_on_failure

    v1, v2 = spec(sandbox_info, ns, "v1"), spec(sandbox_info, ns, "v2")
    release(kube, v1)
    kube.apply(render_ingress(v1))
    release(kube, v2)
    kube.apply(render_canary_ingress(v2, 30, render_ingress(v1)))
    live = find_live_version(kube, v1)
    assert live is not None

    # another run may be changing the service now: this one touches nothing, not even its own canary
    with pytest.raises(LeaseLost), rolled_back_on_failure(kube, v2, live) as stage:
        stage("traffic shift")
        raise LeaseLost("lease lost (taken over by run-b)")
    assert kube.get("Ingress", v2.names.canary_ingress, ns) is not None and objects(kube, v2) == ALL

    with pytest.raises(RolloutFailed, match="traffic shift: RuntimeError: boom"), \
            rolled_back_on_failure(kube, v2, live) as stage:
        stage("traffic shift")
        raise RuntimeError("boom")
    assert kube.get("Ingress", v2.names.canary_ingress, ns) is None and objects(kube, v2) == NONE
    assert objects(kube, v1) == ALL and routed_service(kube, v1) == v1.names.service


def test_a_blue_green_run_that_died_in_its_bake_has_the_held_version_retired_by_the_next_run(kube, ns, sandbox_info,
                                                                                          creds):
    from tasks.rollout.versions import hold_replicas

    v1, v2 = (spec(sandbox_info, ns, v, strategy="blue-green") for v in ("v1", "v2"))
    release(kube, v1)
    kube.apply(render_ingress(v1))
    release(kube, v2)
    live = find_live_version.fn(kube, v2)
    hold_replicas.fn(kube, v2, v1.names.deployment)  # v1 at its replicas, its HPA set aside for the bake
    promote.fn(kube, v2, live, creds, retire_previous=False)  # all traffic on v2; then the run died in the bake
    assert objects(kube, v1) == {**ALL, "HorizontalPodAutoscaler": False}
    assert kube.get("Deployment", v1.names.deployment, ns)["spec"]["replicas"] > 0

    assert recover.fn(kube, v2, creds) == [f"retired {v1.names.deployment}"]
    assert kube.get("Deployment", v1.names.deployment, ns)["spec"]["replicas"] == 0
    assert routed_service(kube, v1) == v2.names.service and objects(kube, v2) == ALL
    assert recover.fn(kube, v2, creds) == []


def test_a_run_that_loses_its_lease_in_the_drain_does_not_scale_the_previous_version_to_zero(kube, ns, sandbox_info,
                                                                                               creds):
    """The lock is asked immediately before each destructive step: a run whose lease is taken while it drains the
    previous version (a long drain over a WAN is where a lease runs out) stops before scaling it to zero or pruning;
    without that check, the old version went to zero under a run that no longer held the service."""
    import threading
    from datetime import UTC, datetime

    from polling import wait_for

    from clients.lease import MICROTIME, LeaseLost, acquire

    v1, v2 = spec(sandbox_info, ns, "v1"), spec(sandbox_info, ns, "v2")
    release(kube, v1)
    kube.apply(render_ingress(v1))
    release(kube, v2)
    kube.apply(render_canary_ingress(v2, 50, render_ingress(v1)))
    live = find_live_version.fn(kube, v1)
    assert live is not None
    replicas = kube.get("Deployment", v1.names.deployment, ns)["spec"]["replicas"]
    assert replicas > 0

    def take_over_once_draining() -> None:  # another run takes the lease while this one drains v1
        wait_for(lambda: kube.get("HorizontalPodAutoscaler", v1.names.hpa, ns) is None, "v1's HPA removed")
        lease = kube.get("Lease", "svc-rollout", ns)
        lease["spec"].update(holderIdentity="run-b", renewTime=datetime.now(UTC).strftime(MICROTIME))
        kube.replace(lease)

    intruder = threading.Thread(target=take_over_once_draining, daemon=True)
    with acquire(kube, ns, "svc-rollout", "run-a", wait_s=5, duration_s=30, renew_s=0.2) as lock:
        intruder.start()
        with pytest.raises(LeaseLost, match="taken over by run-b"):
            promote.fn(kube, v2, live, creds, drain_s=6, still_held=lock.check)
    intruder.join(10)
    assert routed_service(kube, v1) == v2.names.service  # the switch happened while it held the lease
    assert kube.get("Deployment", v1.names.deployment, ns)["spec"]["replicas"] == replicas  # not scaled to zero
    assert objects(kube, v1) == {**ALL, "HorizontalPodAutoscaler": False}


def test_a_roll_back_after_the_lease_is_lost_deletes_nothing(kube, ns, sandbox_info, prefect_api):
    """A failure after the lease was lost (say, the API error that also kept the renewals from landing) does not
    roll back: the deletion is refused by the lock check, and the canary is left to the next run's recovery."""
    from datetime import UTC, datetime

    from polling import wait_for

    from clients.lease import MICROTIME, LeaseLost, acquire
    from flows.rollout import rolled_back_on_failure

    v1, v2 = spec(sandbox_info, ns, "v1"), spec(sandbox_info, ns, "v2")
    release(kube, v1)
    kube.apply(render_ingress(v1))
    release(kube, v2)
    kube.apply(render_canary_ingress(v2, 30, render_ingress(v1)))
    live = find_live_version.fn(kube, v1)
    assert live is not None
    with acquire(kube, ns, "svc-rollout", "run-a", wait_s=5, duration_s=30, renew_s=0.2) as lock:
        lease = kube.get("Lease", "svc-rollout", ns)
        lease["spec"].update(holderIdentity="run-b", renewTime=datetime.now(UTC).strftime(MICROTIME))
        kube.replace(lease)
        wait_for(lambda: lock.lost, "the renewal to notice the new holder")
        with pytest.raises(LeaseLost), rolled_back_on_failure(kube, v2, live, still_held=lock.check) as stage:
            stage("traffic shift")
            raise RuntimeError("the step's analysis failed")
    assert kube.get("Ingress", v2.names.canary_ingress, ns) is not None and objects(kube, v2) == ALL
    assert objects(kube, v1) == ALL and routed_service(kube, v1) == v1.names.service
