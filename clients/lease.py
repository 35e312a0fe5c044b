"""One run at a time per service, enforced in the cluster with a ``coordination.k8s.io/v1`` Lease.

The lock is the one Kubernetes controllers use for leader election (client-go ``tools/leaderelection``
``LeaseLock`` and ``LeaderElector.tryAcquireOrRenew``): a Lease whose ``spec.holderIdentity`` names the holder,
renewed every ``renew_s`` seconds and good for ``leaseDurationSeconds``. Taking it over is an update carrying the
``resourceVersion`` that was read, so of two runs that race for it exactly one wins and the other gets 409
Conflict. Releasing clears the holder and shortens the duration to one second, as client-go's ``release`` does.

**Expiry is judged by observation, never by the record's timestamps.** client-go keeps the record it last read
and the local time it first saw it (``setObservedRecord``: ``observedTime = clock.Now()``, replaced only when the
raw record differs from the one observed before), and counts the lease valid while
``observedTime + LeaseDurationSeconds`` lies ahead (``isLeaseValid``); its doc says "a client needs to wait a full
LeaseDuration without observing a change to the record before it can attempt to take over". ``renewTime`` is
another machine's clock, so comparing it with ours lets a holder whose clock lags by more than a lease duration be
taken over while it renews (two runs change one service), and one whose clock runs ahead lock everyone out for
as long as it runs ahead. :class:`Observer` does what client-go does, on this process's monotonic clock: a record
whose content (holder, times, duration, transitions) has not changed for its ``leaseDurationSeconds`` as observed
here is expired; a record without a holder is free.

**Durations fit for a client across a WAN.** The flow reaches the API server through a kubeconfig over the
internet (ACK's public endpoint), not from inside the cluster as kube-controller-manager does, so a renewal (a GET
and a PUT) can take seconds and several can fail in a row. The lease lasts 60 s with a 40 s renew deadline and a
5 s retry period: kube-controller-manager's defaults (``--leader-elect-lease-duration=15s``,
``--leader-elect-renew-deadline=10s``, ``--leader-elect-retry-period=2s``; kubernetes/component-base
``config/v1alpha1/defaults.go`` ``RecommendedDefaultLeaderElectionConfiguration``) scaled by four for the lease
and its deadline (the same 3:2 ratio, so a holder gives up 20 s before anyone else may take over), with 8 renewal
attempts inside the deadline instead of 5; client-go's ``NewLeaderElector`` requires ``LeaseDuration >
RenewDeadline > JitterFactor (1.2) * RetryPeriod``, which 60 > 40 > 6 keeps. The cost: a run killed mid-rollout
holds its service until the next run has watched its lease unchanged for 60 s.

A holder that cannot renew within the renew deadline counts the lease as lost (client-go's ``renew`` loop stops
leading when ``RenewDeadline`` passes without a successful renewal), so it stops changing the service before
another run may take over. The flow asks :meth:`LeaseLock.check` immediately before each change, and passes it
down as ``still_held`` to the steps that scale a version to zero or delete one.

The Lease of a service is named by what it guards: the namespace (the Lease's own) and the Ingress host and path
users reach (:func:`rollout_lease_name`), so two specs that differ only in their serving name still exclude each
other on the same host and path.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from clients.kube import KubeApiError, KubeClients
from clients.logs import run_logger
from clients.waiting import poll_until

MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # metav1.MicroTime's RFC 3339 form with microseconds


LEASE_DURATION_S = 60
RENEW_DEADLINE_S = 40.0
RETRY_PERIOD_S = 5.0

# The part of a Lease that is the election record (client-go resourcelock.LeaseSpecToLeaderElectionRecord).
RECORD_FIELDS = ("holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime", "leaseTransitions")


class LeaseHeld(RuntimeError):
    """Another holder kept the lease for longer than this run would wait."""


class LeaseLost(RuntimeError):
    """This run no longer holds its lease (taken over, or not renewed within the renew deadline): it must not
    change the service any further."""


def _now() -> datetime:
    return datetime.now(UTC)


def rollout_lease_name(host: str, path: str) -> str:
    """The Lease that guards the service users reach at ``host`` + ``path`` (in the spec's namespace, where the
    Lease lives): ``ei-rollout-<host, lower-cased, runs of other characters as '-', at most 40>-<10 hex digits
    of SHA-256 over host and path>``. Deterministic, readable, and a valid Lease name (a DNS-1123 subdomain: lower
    case alphanumerics and '-', starting and ending alphanumeric; at most 62 characters, so also a DNS label)."""
    digest = hashlib.sha256(f"{host}\n{path}".encode()).hexdigest()[:10]
    readable = re.sub(r"[^a-z0-9]+", "-", host.lower()).strip("-")[:40].strip("-")
    return f"ei-rollout-{readable}-{digest}" if readable else f"ei-rollout-{digest}"


def election_record(lease: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """The election record of ``lease`` (its spec's holder, times, duration and transitions), None for no lease."""
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    return tuple(spec.get(f) for f in RECORD_FIELDS)


class Observer:
    """What this process last saw of one Lease, and when by its own monotonic ``clock`` (client-go
    ``LeaderElector.observedRecord``/``observedTime``): the basis of every expiry judgement."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.record: tuple[Any, ...] | None = None
        self.seen_at: float | None = None

    def holder(self, lease: dict[str, Any] | None) -> str | None:
        """Who holds ``lease`` as observed now: its holder until its record has stayed unchanged for its
        ``leaseDurationSeconds`` since this observer first saw that record, else None (no lease, no holder, or
        expired). A record that differs from the last one restarts the count, whatever its timestamps say."""
        now = self.clock()
        record = election_record(lease)
        if self.seen_at is None or record != self.record:
            self.record, self.seen_at = record, now
        spec = (lease or {}).get("spec") or {}
        holder = spec.get("holderIdentity")
        if not holder:
            return None
        return holder if now < self.seen_at + int(spec.get("leaseDurationSeconds") or 0) else None


class LeaseLock:
    """A held Lease, renewed on a background thread until :meth:`release`. Use :func:`acquire` to get one."""

    def __init__(self, kube: KubeClients, namespace: str, name: str, holder: str, duration_s: int,
                 renew_s: float, deadline_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kube, self.namespace, self.name, self.holder = kube, namespace, name, holder
        self.duration_s, self.renew_s = duration_s, renew_s
        self.deadline_s = deadline_s if deadline_s is not None else duration_s * 2 / 3
        self.observer = Observer(clock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed = time.monotonic()
        self.lost: str | None = None

    def check(self) -> None:
        """Raise :class:`LeaseLost` if this run no longer holds the lease."""
        if self.lost is None and time.monotonic() - self._renewed > self.deadline_s:
            self.lost = f"not renewed for {self.deadline_s:.0f}s"
        if self.lost is not None:
            raise LeaseLost(f"lease {self.namespace}/{self.name} lost ({self.lost}): this run stops here and "
                            "changes nothing more; the next run finishes or undoes what it left")

    def _manifest(self, current: dict[str, Any] | None, now: datetime, **spec: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                "labels": {"app.kubernetes.io/managed-by": "elastic-inference"}}
        if current is not None:
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"leaseDurationSeconds": self.duration_s, "renewTime": now.strftime(MICROTIME), **spec}}

    def try_acquire(self) -> str | None:
        """One attempt: None when this holder now holds the lease, else the name of the holder that has it (a
        holder other than this one holds it until its record has been observed unchanged for its duration)."""
        now = _now()
        current = self.kube.get("Lease", self.name, self.namespace)
        other = self.observer.holder(current)
        if other is not None and other != self.holder:
            return other
        spec = (current or {}).get("spec") or {}
        mine = spec.get("holderIdentity") == self.holder
        # a new holder counts one more transition (client-go: LeaderTransitions + 1 when the holder changes)
        transitions = int(spec.get("leaseTransitions") or 0) + (1 if current is not None and not mine else 0)
        body = self._manifest(current, now, holderIdentity=self.holder, leaseTransitions=transitions,
                              acquireTime=spec.get("acquireTime") if mine else now.strftime(MICROTIME))
        try:
            if current is None:
                self.kube.create(body)
            else:
                self.kube.replace(body)
        except KubeApiError as exc:
            if exc.conflict:  # someone else wrote it between our read and our write
                return self.observer.holder(self.kube.get("Lease", self.name, self.namespace)) or "a concurrent run"
            raise
        self.observer.holder(body)  # what we wrote is the record observed now (client-go setObservedRecord)
        return None

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                other = self.try_acquire()
            except Exception as exc:  # a renewal that fails is retried at the next tick, and reported
                run_logger().warning("lease %s/%s: renewal failed: %s", self.namespace, self.name, exc)
                if time.monotonic() - self._renewed > self.deadline_s:
                    self.lost = f"not renewed for {self.deadline_s:.0f}s"
                    run_logger().error("lease %s/%s: lost (%s)", self.namespace, self.name, self.lost)
                    return
                continue
            if other is None:
                self._renewed = time.monotonic()
                continue
            self.lost = f"taken over by {other}"
            run_logger().error("lease %s/%s: lost to %s", self.namespace, self.name, other)
            return

    def start_renewing(self) -> None:
        self._renewed = time.monotonic()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.name}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and give the lease up (holder cleared, duration one second), if still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_s + 30)
        current = self.kube.get("Lease", self.name, self.namespace)
        if ((current or {}).get("spec") or {}).get("holderIdentity") != self.holder:
            return
        body = self._manifest(current, _now(), holderIdentity="", leaseDurationSeconds=1,
                              leaseTransitions=int(current["spec"].get("leaseTransitions") or 0))
        try:
            self.kube.replace(body)
        except KubeApiError as exc:
            if not exc.conflict:
                raise

    def __enter__(self) -> LeaseLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(kube: KubeClients, namespace: str, name: str, holder: str, wait_s: float,
            duration_s: int = LEASE_DURATION_S, renew_s: float = RETRY_PERIOD_S,
            deadline_s: float = RENEW_DEADLINE_S) -> LeaseLock:
    """Take the Lease ``namespace/name`` for ``holder``, waiting up to ``wait_s`` seconds while another holder
    has it (a dead holder's lease frees once this run has watched it unchanged for its duration); raise
    :class:`LeaseHeld` naming that holder when it does not come free in time."""
    lock = LeaseLock(kube, namespace, name, holder, duration_s, renew_s, min(deadline_s, duration_s))
    seen: list[str | None] = []

    def free() -> bool | None:
        seen[:] = [lock.try_acquire()]
        if seen[0] is not None:
            run_logger().info("lease %s/%s is held by %s: waiting", namespace, name, seen[0])
        return True if seen[0] is None else None

    if poll_until(free, wait_s, interval=min(2.0, renew_s), max_interval=renew_s) is None:
        raise LeaseHeld(f"another run holds the lease {namespace}/{name} ({seen[0]}); waited {wait_s:.0f}s. "
                        "One run at a time changes a service: try again when it is done.")
    lock.start_renewing()
    return lock
