"""The shape every controller shares: a level-triggered loop over the store.

A :class:`Controller` names the bus topics it watches (``kube/pods``, ``fleet`` ...). Its loop is::

    wake.clear(); next_due = reconcile(); wait for wake (a watched topic was notified) or until next_due / resync

``reconcile()`` reads the current state and writes only what differs (idempotent); it never gets "the change",
so a missed or coalesced notification loses nothing (upstream controllers do the same with informers + workqueue
+ resync, ``k8s.io/client-go/tools/cache``). Controllers never call each other: they meet in the store.

Fan-out of bus topics: one task per topic waits on ``ctx.bus.wait(topic)`` in a loop and sets the ``wake`` event of
every controller watching it (an :class:`asyncio.Event` stays set until the controller clears it, so a notification
that arrives while a controller reconciles is not lost). A controller that cares about a kind of change across every
resource (the garbage collector: any deletion) says so in :meth:`Controller.wants`, asked on each write of the
store's change feed, instead of watching every topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..kube.errors import KubeError
from ..kube.resources import resolve

if TYPE_CHECKING:
    from ..kube.storage import Change
    from .service import ControllersService

log = logging.getLogger("sandbox.controllers")

# Coalesce bursts: a controller reconciles at most every MIN_INTERVAL real seconds, whatever the notification rate.
MIN_INTERVAL = 0.02


class Controller:
    name = "controller"
    topics: tuple[str, ...] = ()
    resync_key = "controller_resync"  # entry of the timing table giving the resync period
    min_interval = MIN_INTERVAL  # real seconds between two passes, at least

    def __init__(self, svc: ControllersService) -> None:
        self.svc = svc
        self.ctx = svc.ctx
        self.clock = svc.ctx.clock
        self.timings = svc.timings
        self.wake = asyncio.Event()

    @property
    def store(self) -> Any:
        return self.svc.kube.store

    def reconcile(self) -> float | None:
        """One pass over everything this controller owns. Returns the simulated time of its next deadline."""
        raise NotImplementedError

    def wants(self, key: str, change: Change) -> bool:
        """Whether this write (storage key, change) should wake the controller, besides its ``topics``. Only a
        filter (the pass re-reads the store); called synchronously on every write, so it must be cheap."""
        return False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.wake.clear()
            started = loop.time()
            due: float | None = None
            try:
                due = self.reconcile()
            except KubeError as e:  # a conflict or a vanished object: look again soon
                log.debug("%s: %s", self.name, e)
                due = self.clock.now() + 1.0
            except Exception:  # noqa: BLE001 - a controller must survive one bad object
                log.exception("%s reconcile failed", self.name)
                due = self.clock.now() + 5.0
            # a pass that took long (many objects) is followed by a pause as long, so that controllers never take
            # more than about half of the event loop the API server shares with them; a notification that arrives
            # meanwhile keeps ``wake`` set
            spent = loop.time() - started
            pause = max(self.min_interval, min(spent, 1.0))
            await asyncio.sleep(pause)
            wait = self.timings[self.resync_key]
            if due is not None:
                wait = min(wait, max(0.0, due - self.clock.now()))
            timeout = self.clock.real_seconds(wait) + 0.001
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    # ---- helpers shared by controllers --------------------------------------------------------------------------
    def objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """The stored objects of a resource, READ-ONLY (no copy, no decoding: a pass over thousands of pods stays
        cheap). Copy before changing anything; writes go through the store's verbs."""
        rt = resolve(resource)
        entries, _ = self.store.select(rt, namespace)
        return [e.obj for e in entries]

    def indexed(self, resource: str, index: str, values: Any = None) -> list[dict[str, Any]]:
        """The stored objects filed under any of ``values`` in one of the store's indexes (``namespace``, pods by
        ``spec.nodeName`` or ``controller`` uid ..., see :mod:`sandbox.kube.indexes`; None: all in the index),
        sorted by namespace/name and READ-ONLY like :meth:`objects`: a pass costs what it looks at."""
        return [e.obj for e in self.store.indexed(resource, index, values)]

    def reconcile_each(self, resource: str, sync: Callable[[dict[str, Any], float], float | None],
                       skip_deleting: bool = False) -> float | None:
        """``sync(obj, now)`` for every stored object of ``resource``; the earliest deadline any of them returned.

        One object's conflict or vanished dependency (a KubeError) must not hold up the others: it is looked at
        again a simulated second later."""
        now = self.clock.now()
        due: list[float] = []
        for obj in self.objects(resource):
            if skip_deleting and obj["metadata"].get("deletionTimestamp"):
                continue
            try:
                d = sync(obj, now)
            except KubeError as e:
                log.debug("%s %s: %s", resource, obj["metadata"].get("name"), e)
                d = now + 1.0
            if d is not None:
                due.append(d)
        return min(due) if due else None

    def owned(self, resource: str, owner: dict[str, Any]) -> list[dict[str, Any]]:
        """The objects of ``resource`` (``pods``, ``replicasets``) whose controller is ``owner``, READ-ONLY."""
        m = owner["metadata"]
        ns = m.get("namespace") or "default"
        return [o for o in self.indexed(resource, "controller", (m["uid"],))
                if (o["metadata"].get("namespace") or "default") == ns and owned_by(o, m["uid"])]

    def create_owned_pod(self, owner: dict[str, Any], api_version: str, kind: str,
                         component: str) -> dict[str, Any] | None:
        """Create a pod from ``owner.spec.template`` (``generateName: <owner>-``, a controller ownerReference), with
        the ``SuccessfulCreate``/``FailedCreate`` event upstream's pod control records; None when refused."""
        m = owner["metadata"]
        tmpl = copy.deepcopy((owner.get("spec") or {}).get("template") or {})
        meta = tmpl.get("metadata") or {}
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "generateName": f"{m['name']}-", "namespace": m.get("namespace"),
                "labels": dict(meta.get("labels") or {}),
                "ownerReferences": [{"apiVersion": api_version, "kind": kind, "name": m["name"], "uid": m["uid"],
                                     "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": tmpl.get("spec") or {},
        }
        if meta.get("annotations"):
            pod["metadata"]["annotations"] = dict(meta["annotations"])
        try:
            created = self.store.create("pods", pod, m.get("namespace"), field_manager="kube-controller-manager")
        except KubeError as e:
            self.event(owner, "Warning", "FailedCreate", f"Error creating: {e.message}", component)
            return None
        self.event(owner, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", component)
        return created

    def delete_owned_pods(self, owner: dict[str, Any], pods: list[dict[str, Any]],
                          component: str) -> list[dict[str, Any]]:
        """Delete ``pods`` with the ``SuccessfulDelete`` event upstream's pod control records; returns those deleted
        (a pod already gone or refused is skipped)."""
        deleted = []
        for p in pods:
            pm = p["metadata"]
            try:
                self.store.delete("pods", pm.get("namespace"), pm["name"])
            except KubeError:
                continue
            self.event(owner, "Normal", "SuccessfulDelete", f"Deleted pod: {pm['name']}", component)
            deleted.append(p)
        return deleted

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str, component: str,
              host: str | None = None) -> None:
        with contextlib.suppress(KubeError):
            self.svc.kube.events.record(obj, type_, reason, message, component=component, host=host)


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    """Whether ``uid`` is the controller among ``obj``'s ownerReferences."""
    return any(r.get("uid") == uid and r.get("controller") for r in obj["metadata"].get("ownerReferences") or [])
