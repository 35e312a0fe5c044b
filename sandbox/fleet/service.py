"""The ECS/ESS fleet service: no HTTP endpoint, one reconcile loop on the simulated clock, an in-process API.

In-process API (thread-safe; used by the ACK service, the future Kubernetes node controller, tests and faults):

Reads
    ``instances(pool_id=None)`` -> list of :class:`~sandbox.fleet.models.Instance` that are not yet released
    (``status`` Pending | Starting | Running | Stopping; ``spot`` property, ``instance_charge_type``,
    ``spot_strategy``, ``zone``, ``private_ip``, ``reclaim_at`` when a spot interruption notice was given).
    A node controller registers one Kubernetes node per ``Running`` instance, removes it when the instance leaves
    ``Running``, and marks ``InstanceExpired`` when ``reclaim_at`` is set.
    ``instance(instance_id)``, ``scaling_group(pool_id)`` -> :class:`~sandbox.fleet.models.ScalingGroup`
    (``spec.node_template`` carries the pool's labels/taints/runtime as set by ACK), ``activities(pool_id)``.
    Changes are announced on ``ctx.bus`` topic ``"fleet"`` (level-triggered: re-read on notification).
Writes (ACK and the cluster-autoscaler)
    ``create_group(pool_id, spec, desired)``, ``update_group(pool_id, spec=None, desired=None)``,
    ``set_desired(pool_id, n)``, ``delete_group(pool_id)``, ``remove_instances(pool_id, ids, reason)`` (release
    these instances and lower the desired size by as many: ESS RemoveInstances, used by the cluster-autoscaler).
Faults and tests
    ``reclaim(instance_id)`` gives a spot interruption notice: the instance gets ``reclaim_at`` = now + notice
    (``spot_reclaim_notice``, 300 s), is released then, and with ``spot_instance_remedy`` a replacement is launched
    at the notice. ``set_spot_stock(instance_type, zone, n)`` / ``set_on_demand_stock(...)`` set how many more
    instances can be launched (launches take stock, releases give it back). ``state.launch_fault`` (set by
    :mod:`sandbox.faults`): ``(instance_type, zone, spot) -> error | None`` makes launches fail (activity Failed).

Delays come from :mod:`sandbox.timings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..context import SandboxContext
from ..service import Service
from ..timings import resolve
from .errors import FleetError
from .models import Activity, GroupSpec, Instance, ScalingGroup
from .state import FleetState

log = logging.getLogger("sandbox.fleet")

__all__ = ["FleetService", "FleetError", "GroupSpec"]


class FleetService(Service):
    name = "fleet"

    def __init__(self, ctx: SandboxContext) -> None:
        super().__init__(ctx)
        self.timings = resolve(ctx.options)
        self.state = FleetState(ctx.store, list(ctx.identity.zones), ctx.identity.region, self.timings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.spawn(self._run(), name="fleet-reconcile")

    async def _run(self) -> None:
        clock = self.ctx.clock
        assert self._wake is not None
        while True:
            self._wake.clear()
            due = None
            try:
                changed, due = self.state.step(clock.now())
                if changed:
                    self.ctx.bus.notify("fleet")
            except Exception:  # keep the loop alive; a bug shows in the log, not as a dead fleet
                log.exception("fleet reconcile failed")
            wait = self.timings["ess_resync"]
            if due is not None:
                wait = min(wait, max(0.0, due - clock.now()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), clock.real_seconds(wait) + 0.001)

    def _kick(self) -> None:
        """Wake the loop and announce a change, from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def _on_loop() -> None:
            if self._wake is not None:
                self._wake.set()
            self.ctx.bus.notify("fleet")

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            _on_loop()
        else:
            loop.call_soon_threadsafe(_on_loop)

    def reconcile_now(self) -> None:
        """Run one reconcile pass synchronously (so a caller sees its change applied), then wake the loop."""
        self.state.step(self.ctx.clock.now())
        self._kick()

    # ---- reads -----------------------------------------------------------------------------------------------
    def instances(self, pool_id: str | None = None) -> list[Instance]:
        return self.state.instances(pool_id)

    def instance(self, instance_id: str) -> Instance | None:
        return self.state.instance(instance_id)

    def scaling_group(self, pool_id: str) -> ScalingGroup | None:
        return self.state.group(pool_id)

    def activities(self, pool_id: str | None = None) -> list[Activity]:
        return self.state.activities(pool_id)

    # ---- writes ----------------------------------------------------------------------------------------------
    def create_group(self, pool_id: str, spec: GroupSpec, desired: int, preexisting: bool = False) -> ScalingGroup:
        g = self.state.create_group(pool_id, spec, desired, self.ctx.clock.now(), preexisting=preexisting)
        self.reconcile_now()
        return g

    def update_group(self, pool_id: str, spec: GroupSpec | None = None, desired: int | None = None) -> ScalingGroup:
        g = self.state.update_group(pool_id, spec=spec, desired=desired)
        self.reconcile_now()
        return g

    def set_desired(self, pool_id: str, n: int) -> ScalingGroup:
        return self.update_group(pool_id, desired=n)

    def delete_group(self, pool_id: str) -> None:
        self.state.delete_group(pool_id)
        self.reconcile_now()

    def reclaim(self, instance_id: str) -> Instance:
        inst = self.state.reclaim(instance_id, self.ctx.clock.now())
        self.reconcile_now()
        return inst

    def remove_instances(self, pool_id: str, instance_ids: list[str], reason: str = "removed from the scaling group"
                         ) -> list[str]:
        """Release these instances and lower the desired size by as many (ESS RemoveInstances; never below min)."""
        removed = self.state.remove_instances(pool_id, instance_ids, self.ctx.clock.now(), reason)
        self.reconcile_now()
        return removed

    def set_spot_stock(self, instance_type: str, zone: str, n: int) -> None:
        self.state.set_stock(instance_type, zone, True, n)
        self.reconcile_now()

    def set_on_demand_stock(self, instance_type: str, zone: str, n: int) -> None:
        self.state.set_stock(instance_type, zone, False, n)
        self.reconcile_now()

    def stock(self, instance_type: str, zone: str, spot: bool = True) -> int:
        return self.state.stock(instance_type, zone, spot)

    def info(self) -> dict:
        return {}
