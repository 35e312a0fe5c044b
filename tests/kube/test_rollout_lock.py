"""One run at a time per service: the Lease lock (clients/lease.py) against the session sandbox's API server,
through the kubernetes client, as client-go's leader election uses a Lease."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from polling import wait_for

from clients.lease import MICROTIME, LeaseHeld, LeaseLock, LeaseLost, acquire, holder_of


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


def test_a_dead_holders_lease_is_taken_over_once_expired(kube, ns):
    stale = (datetime.now(UTC) - timedelta(seconds=90)).strftime(MICROTIME)
    kube.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": "svc-rollout", "namespace": ns},
                 "spec": {"holderIdentity": "crashed-run", "leaseDurationSeconds": 60, "acquireTime": stale,
                          "renewTime": stale}})
    assert holder_of(kube.get("Lease", "svc-rollout", ns), datetime.now(UTC)) is None
    with acquire(kube, ns, "svc-rollout", "next-run", wait_s=5):
        assert kube.get("Lease", "svc-rollout", ns)["spec"]["holderIdentity"] == "next-run"


def test_the_holder_keeps_renewing(kube, ns):
    with acquire(kube, ns, "svc-rollout", "run-a", wait_s=5, duration_s=3, renew_s=0.3):
        first = kube.get("Lease", "svc-rollout", ns)["spec"]["renewTime"]
        wait_for(lambda: kube.get("Lease", "svc-rollout", ns)["spec"]["renewTime"] > first, "a renewal")
        # held well past its 3 s duration, because it is renewed
        assert holder_of(kube.get("Lease", "svc-rollout", ns), datetime.now(UTC)) == "run-a"


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
