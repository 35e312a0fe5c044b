"""One run at a time per service, enforced in the cluster with a ``coordination.k8s.io/v1`` Lease.

The lock is the one Kubernetes controllers use for leader election (client-go ``tools/leaderelection``
``LeaseLock`` and ``tryAcquireOrRenew``): a Lease whose ``spec.holderIdentity`` names the holder, renewed every
``renew_s`` seconds (``renewTime``) and good for ``leaseDurationSeconds``. Taking it over is an update carrying the
``resourceVersion`` that was read, so of two runs that race for it exactly one wins and the other gets 409
Conflict. A holder that dies stops renewing; once ``renewTime + leaseDurationSeconds`` has passed, the next run
takes the lease over (``leaseTransitions`` counts the changes of holder). Releasing clears the holder and shortens
the duration to one second, as client-go's ``ReleaseOnCancel`` does.

The timings are kube-controller-manager's leader election defaults (``--leader-elect-lease-duration=15s``,
``--leader-elect-renew-deadline=10s``, ``--leader-elect-retry-period=2s``; kubernetes/component-base
``config/v1alpha1/defaults.go`` ``RecommendedDefaultLeaderElectionConfiguration``): a run killed mid-rollout holds
its service for at most 15 s, and a holder that cannot renew for the renew deadline gives the lease up as lost
(client-go's ``renew`` loop stops leading when ``RenewDeadline`` passes without a successful renewal), so it stops
changing the service before another run may take over. The flow asks :meth:`LeaseLock.check` before each change.

Expiry is judged from ``renewTime`` and this machine's clock, so clocks that disagree by more than a lease
duration would let a lease be taken early; client-go instead times the record it observed locally. Runs of one
service normally share one Prefect worker, and the lease durations here are a minute or more.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from clients.kube import KubeApiError, KubeClients
from clients.logs import run_logger
from clients.waiting import poll_until

MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # metav1.MicroTime's RFC 3339 form with microseconds


LEASE_DURATION_S = 15
RENEW_DEADLINE_S = 10.0
RETRY_PERIOD_S = 2.0


class LeaseHeld(RuntimeError):
    """Another holder kept the lease for longer than this run would wait."""


class LeaseLost(RuntimeError):
    """This run no longer holds its lease (taken over, or not renewed within the renew deadline): it must not
    change the service any further."""


def _now() -> datetime:
    return datetime.now(UTC)


def _time(value: str | None) -> datetime | None:
    """An RFC 3339 time as the API server writes MicroTime or Time (with ``Z`` or an offset); None if absent or
    not a time (a record nobody can read counts as no holder)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def holder_of(lease: dict[str, Any] | None, now: datetime) -> str | None:
    """Who holds ``lease`` at ``now``: its holder while ``renewTime + leaseDurationSeconds`` lies ahead, else
    None (no lease, no holder, or expired)."""
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity")
    renewed = _time(spec.get("renewTime")) or _time(spec.get("acquireTime"))
    if not holder or renewed is None:
        return None
    return holder if now < renewed + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0)) else None


class LeaseLock:
    """A held Lease, renewed on a background thread until :meth:`release`. Use :func:`acquire` to get one."""

    def __init__(self, kube: KubeClients, namespace: str, name: str, holder: str, duration_s: int,
                 renew_s: float, deadline_s: float | None = None) -> None:
        self.kube, self.namespace, self.name, self.holder = kube, namespace, name, holder
        self.duration_s, self.renew_s = duration_s, renew_s
        self.deadline_s = deadline_s if deadline_s is not None else duration_s * 2 / 3
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
        """One attempt: None when this holder now holds the lease, else the name of the holder that has it."""
        now = _now()
        current = self.kube.get("Lease", self.name, self.namespace)
        other = holder_of(current, now)
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
                return holder_of(self.kube.get("Lease", self.name, self.namespace), _now()) or "a concurrent run"
            raise
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
    has it; raise :class:`LeaseHeld` naming that holder when it does not come free in time."""
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
