"""One run at a time per service: the Lease lock (clients/lease.py) against the session sandbox's API server,
through the kubernetes client, as client-go's leader election uses a Lease."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from polling import wait_for

from clients.lease import MICROTIME, LeaseHeld, LeaseLock, LeaseLost, acquire


@pytest.fixture
def kube(kube_clients):
    """The flow's client (this module's tests call tasks with it)."""
    return kube_clients


def test_a_second_run_waits_then_fails_naming_the_holder_and_gets_it_once_released(kube, ns):
    first = acquire(kube, ns, "svc-rollout", "run-a", wait_s=5, duration_s=60, renew_s=1)
    with pytest.raises(LeaseHeld, match="run-a"):
        acquire(kube, ns, "svc-rollout", "run-b", wait_s=1.5, duration_s=60, renew_s=1)
    first.release()
    lease = kube.get("Lease", "svc-rollout", ns)
    assert lease["spec"]["holderIdentity"] in ("", None) and lease["spec"]["leaseDurationSeconds"] == 1
    with acquire(kube, ns, "svc-rollout", "run-b", wait_s=5, duration_s=60, renew_s=1):
        lease = kube.get("Lease", "svc-rollout", ns)
        assert lease["spec"]["holderIdentity"] == "run-b" and lease["spec"]["leaseTransitions"] == 1


def _put_lease(kube, ns: str, holder: str, renew: datetime, duration: int, transitions: int = 0) -> None:
    """Write the Lease as a holder with ``renew`` on its clock would (create, or replace what is there)."""
    at = renew.strftime(MICROTIME)
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "svc-rollout",
                                                                                 "namespace": ns},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "acquireTime": at, "renewTime": at,
                     "leaseTransitions": transitions}}
    current = kube.get("Lease", "svc-rollout", ns)
    if current is None:
        kube.create(body)
    else:
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        kube.replace(body)


def test_a_dead_holders_lease_is_taken_over_once_observed_unchanged_for_its_duration(kube, ns):
    _put_lease(kube, ns, "crashed-run", datetime.now(UTC) - timedelta(seconds=90), duration=2)
    waited = time.monotonic()
    with acquire(kube, ns, "svc-rollout", "next-run", wait_s=30, renew_s=1):
        assert kube.get("Lease", "svc-rollout", ns)["spec"]["holderIdentity"] == "next-run"
    # its renewTime was long past, but the record may be alive on a lagging clock: watched for 2 s first
    assert time.monotonic() - waited >= 2


def test_a_live_holder_whose_clock_lags_by_hours_is_not_taken_over(kube, ns):
    """client-go times a record from when it observed it: a holder that keeps renewing holds the lease whatever
    its clock says. Judged by ``renewTime`` against this machine's clock (an hour behind + 60 s < now), it was
    taken over while it renewed, and two runs changed one service."""
    behind = datetime.now(UTC) - timedelta(hours=1)
    stop = threading.Event()
    _put_lease(kube, ns, "lagging-run", behind, duration=60)

    def renew() -> None:
        i = 0
        while not stop.wait(0.5):
            i += 1
            _put_lease(kube, ns, "lagging-run", behind + timedelta(seconds=i), duration=60)

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    try:
        with pytest.raises(LeaseHeld, match="lagging-run"):
            acquire(kube, ns, "svc-rollout", "next-run", wait_s=3, renew_s=1)
        assert kube.get("Lease", "svc-rollout", ns)["spec"]["holderIdentity"] == "lagging-run"
    finally:
        stop.set()
        renewer.join(10)


def test_a_dead_holder_whose_clock_ran_ahead_does_not_lock_the_service_out(kube, ns):
    # renewTime two hours ahead of ours: judged by it, the service was locked for two hours after the run died
    _put_lease(kube, ns, "dead-run-ahead", datetime.now(UTC) + timedelta(hours=2), duration=2)
    with acquire(kube, ns, "svc-rollout", "next-run", wait_s=30, renew_s=1):
        lease = kube.get("Lease", "svc-rollout", ns)["spec"]
        assert lease["holderIdentity"] == "next-run" and lease["leaseTransitions"] == 1


def test_the_holder_keeps_renewing(kube, ns):
    with acquire(kube, ns, "svc-rollout", "run-a", wait_s=5, duration_s=3, renew_s=0.3) as lock:
        first = kube.get("Lease", "svc-rollout", ns)["spec"]["renewTime"]
        wait_for(lambda: kube.get("Lease", "svc-rollout", ns)["spec"]["renewTime"] > first, "a renewal")
        time.sleep(3.5)
        # held well past its 3 s duration, because it is renewed: another run is refused
        with pytest.raises(LeaseHeld, match="run-a"):
            acquire(kube, ns, "svc-rollout", "run-b", wait_s=4, duration_s=3, renew_s=0.3)
        lock.check()


def test_of_two_runs_racing_for_a_free_lease_exactly_one_wins(kube, ns):
    def attempt(lock: LeaseLock, barrier: threading.Barrier, results: list[str | None], i: int) -> None:
        barrier.wait()
        results[i] = lock.try_acquire()

    for round_ in range(8):
        name = f"race-{round_}"
        locks = [LeaseLock(kube, ns, name, f"run-{i}", 60, 15.0) for i in range(2)]
        results: list[str | None] = [None, None]
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=attempt, args=(locks[i], barrier, results, i)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(r is None for r in results) == [False, True], results
        winner = "run-0" if results[0] is None else "run-1"
        assert kube.get("Lease", name, ns)["spec"]["holderIdentity"] == winner


def test_a_holder_that_is_taken_over_knows_it_and_stops(kube, ns):
    lock = acquire(kube, ns, "svc-rollout", "run-a", wait_s=5, duration_s=15, renew_s=0.3)
    try:
        lock.check()  # held: no error
        lease = kube.get("Lease", "svc-rollout", ns)
        lease["spec"].update(holderIdentity="intruder", renewTime=datetime.now(UTC).strftime(MICROTIME))
        kube.replace(lease)
        wait_for(lambda: lock.lost, "the renewal to notice the new holder")
        with pytest.raises(LeaseLost, match="taken over by intruder"):
            lock.check()
    finally:
        lock.release()
    # released by a holder that lost it: the intruder's lease is left alone
    assert kube.get("Lease", "svc-rollout", ns)["spec"]["holderIdentity"] == "intruder"


def test_a_holder_that_cannot_renew_within_the_deadline_counts_the_lease_as_lost(kube, ns):
    # renewals every 60 s, deadline 1 s: the renewal thread cannot keep up (as when the API server is unreachable)
    lock = acquire(kube, ns, "svc-rollout", "run-a", wait_s=5, duration_s=15, renew_s=60, deadline_s=1)
    try:
        time.sleep(1.2)
        with pytest.raises(LeaseLost, match="not renewed for 1s"):
            lock.check()
    finally:
        lock.release()


def test_two_specs_with_different_serving_names_on_one_host_and_path_exclude_each_other(kube, ns, monkeypatch):
    """The lock guards what users reach, not a serving name: the deploy's ``service_lock`` names the Lease by host
    and path, so a run of a spec with another serving name for the same host and path waits (and gives up naming
    the holder); one for another path does not. Two workers: each holder is ``<host name>/<flow run>``."""
    import socket

    from core.spec import DeploySpec
    from flows import deploy as deploy_flow

    def spec(name: str, path: str = "/") -> DeploySpec:
        return DeploySpec.parse({"cluster_id": "c0123456789abcdef", "node_pool": {"name": "np"},
                                 "storage": {"oss_url": "https://oss.example.com", "bucket": "models-b"},
                                 "serving": {"name": name, "version": "v1", "namespace": ns},
                                 "ingress": {"host": "shared.example.com", "path": path}})

    monkeypatch.setattr(deploy_flow, "SERVICE_LOCK_WAIT_S", 2.0)
    monkeypatch.setattr(socket, "gethostname", lambda: "worker-a")
    with deploy_flow.service_lock(kube, spec("bert-a")) as first:
        assert first.name.startswith("ei-rollout-shared-example-com-")
        monkeypatch.setattr(socket, "gethostname", lambda: "worker-b")
        with pytest.raises(LeaseHeld, match=f"{first.name} \\(worker-a/"):
            deploy_flow.service_lock(kube, spec("bert-b")).release()
        with deploy_flow.service_lock(kube, spec("bert-b", "/other")) as other:
            assert other.name != first.name
            assert kube.get("Lease", other.name, ns)["spec"]["holderIdentity"].startswith("worker-b/")
    assert kube.get("Lease", first.name, ns)["spec"]["holderIdentity"] == ""
