"""Lease expiry as client-go judges it (tools/leaderelection/leaderelection.go ``isLeaseValid``): from when this
process observed the record, on its own monotonic clock, never from the record's ``renewTime``; and the Lease
name of a service (clients/lease.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from clients.lease import MICROTIME, Observer, rollout_lease_name


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def lease(holder: str, renew: datetime, duration: int = 60, transitions: int = 0) -> dict:
    at = renew.strftime(MICROTIME)
    return {"metadata": {"name": "l", "resourceVersion": "1"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "acquireTime": at, "renewTime": at,
                     "leaseTransitions": transitions}}


def test_a_holder_whose_clock_lags_by_hours_still_holds_while_it_renews() -> None:
    clock = Clock()
    observer = Observer(clock)
    behind = datetime.now(UTC) - timedelta(hours=2)  # its renewTime is two hours in our past
    assert observer.holder(lease("run-a", behind)) == "run-a"
    for i in range(1, 10):  # it renews every 30 s: the record changes, so it never expires here
        clock.t += 30
        assert observer.holder(lease("run-a", behind + timedelta(seconds=30 * i))) == "run-a"


def test_a_record_unchanged_for_its_duration_expires_however_far_ahead_its_renew_time() -> None:
    clock = Clock()
    observer = Observer(clock)
    ahead = lease("dead-run", datetime.now(UTC) + timedelta(hours=2))  # a dead holder whose clock ran ahead
    assert observer.holder(ahead) == "dead-run"
    clock.t += 59.9
    assert observer.holder(ahead) == "dead-run"
    clock.t += 0.1
    assert observer.holder(ahead) is None


def test_a_stale_record_seen_for_the_first_time_is_held_for_a_full_duration() -> None:
    # renewTime an hour ago: judged against the local clock it would be free at once; observed, it is not
    clock = Clock()
    observer = Observer(clock)
    stale = lease("maybe-alive", datetime.now(UTC) - timedelta(hours=1), duration=15)
    assert observer.holder(stale) == "maybe-alive"
    clock.t += 14
    assert observer.holder(stale) == "maybe-alive"
    clock.t += 1
    assert observer.holder(stale) is None


def test_any_change_of_the_record_restarts_the_count_and_no_holder_is_free() -> None:
    clock = Clock()
    observer = Observer(clock)
    at = datetime.now(UTC)
    assert observer.holder(lease("a", at, duration=10)) == "a"
    clock.t += 9
    assert observer.holder(lease("b", at, duration=10, transitions=1)) == "b"  # a new holder took it
    clock.t += 9
    assert observer.holder(lease("b", at, duration=10, transitions=1)) == "b"
    clock.t += 1
    assert observer.holder(lease("b", at, duration=10, transitions=1)) is None
    assert observer.holder(lease("", at, duration=1)) is None  # released (client-go release: no holder)
    assert observer.holder(None) is None


def test_the_lease_name_is_readable_and_names_host_and_path() -> None:
    name = rollout_lease_name("test.example.com", "/")
    assert re.fullmatch(r"ei-rollout-test-example-com-[0-9a-f]{10}", name)
    assert name == rollout_lease_name("test.example.com", "/")  # deterministic
    assert name != rollout_lease_name("test.example.com", "/v2")
    assert name != rollout_lease_name("test.example.co", "m/")  # host and path do not run together
    assert re.fullmatch(r"ei-rollout-[0-9a-f]{10}", rollout_lease_name("", "/"))


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@given(st.text(max_size=300), st.text(max_size=300))
def test_the_lease_name_is_always_a_valid_object_name(host: str, path: str) -> None:
    name = rollout_lease_name(host, path)
    assert len(name) <= 63 and _DNS_LABEL.fullmatch(name), name
