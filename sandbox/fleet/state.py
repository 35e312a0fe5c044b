"""Behaviour of the ECS/ESS fleet over the sandbox store (synchronous; no event loop, no HTTP).

Tables (own, prefixed ``fleet_``): groups, instances, activities and stock, each a JSON document keyed by id, so
that a restart resumes every lifecycle where it stopped (the clock resumes too). :meth:`FleetState.step` is the
level-triggered reconcile: it advances instance lifecycles whose stage has ended, then brings every scaling group
to its desired capacity with the mix rule of :mod:`sandbox.fleet.mix`. It returns the next simulated time at
which something is due, so the service's loop can sleep exactly that long.
"""

from __future__ import annotations

import secrets
import string
import threading
from collections.abc import Callable

from ..store import Store
from . import catalogue, mix
from .errors import FleetError
from .models import IN_FLIGHT, LIVE, Activity, GroupSpec, Instance, ScalingGroup, Shortfall, zone_of_vswitch

_ID = string.ascii_lowercase + string.digits


def _rand(n: int) -> str:
    return "".join(secrets.choice(_ID) for _ in range(n))


class FleetState:
    def __init__(self, store: Store, zones: list[str], region: str, timings: dict[str, float]) -> None:
        self.store = store
        self.zones = list(zones)
        self.region = region
        self.t = timings
        self.lock = threading.RLock()
        store.ensure(
            "CREATE TABLE IF NOT EXISTS fleet_groups (pool_id TEXT PRIMARY KEY, data TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS fleet_instances (instance_id TEXT PRIMARY KEY, pool_id TEXT NOT NULL,"
            " status TEXT NOT NULL, data TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS fleet_instances_pool ON fleet_instances(pool_id, status)",
            "CREATE TABLE IF NOT EXISTS fleet_activities (activity_id TEXT PRIMARY KEY, pool_id TEXT NOT NULL,"
            " start REAL NOT NULL, data TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS fleet_stock (instance_type TEXT NOT NULL, zone TEXT NOT NULL,"
            " spot INTEGER NOT NULL, available INTEGER NOT NULL, PRIMARY KEY (instance_type, zone, spot))",
        )
        # Ids follow the region's prefix style (cn-hangzhou instances look like i-bp1...).
        self._prefix = "bp" if region == "cn-hangzhou" else region.split("-")[-1][:2]
        # Fault hook (sandbox.faults): (instance_type, zone, spot) -> an error message when this launch must fail.
        self.launch_fault: Callable[[str, str, bool], str | None] | None = None

    # ---- stock -----------------------------------------------------------------------------------------------
    def stock(self, instance_type: str, zone: str, spot: bool) -> int:
        row = self.store.one(
            "SELECT available FROM fleet_stock WHERE instance_type=? AND zone=? AND spot=?",
            (instance_type, zone, int(spot)),
        )
        if row is not None:
            return int(row["available"])
        return catalogue.default_spot_stock(instance_type) if spot else catalogue.DEFAULT_ON_DEMAND_STOCK

    def set_stock(self, instance_type: str, zone: str, spot: bool, n: int) -> None:
        if catalogue.get(instance_type) is None:
            raise FleetError(f"unknown instance type {instance_type!r}")
        if zone not in self.zones:
            raise FleetError(f"unknown zone {zone!r}; zones are {self.zones}")
        if n < 0:
            raise FleetError("stock must be >= 0")
        self.store.execute(
            "INSERT INTO fleet_stock(instance_type, zone, spot, available) VALUES(?,?,?,?) "
            "ON CONFLICT(instance_type, zone, spot) DO UPDATE SET available=excluded.available",
            (instance_type, zone, int(spot), int(n)),
        )

    def _take_stock(self, instance_type: str, zone: str, spot: bool, delta: int) -> None:
        self.set_stock(instance_type, zone, spot, max(0, self.stock(instance_type, zone, spot) + delta))

    def offers(self, spec: GroupSpec) -> dict[tuple[str, str], mix.Offer]:
        out = {}
        for t in spec.instance_types:
            if catalogue.get(t) is None:
                continue
            for z in spec.zones(self.zones):
                out[(t, z)] = mix.Offer(
                    t, z,
                    on_demand_price=catalogue.on_demand_price(t, z, self.zones),
                    spot_price=catalogue.spot_price(t, z, self.zones),
                    on_demand_stock=self.stock(t, z, False),
                    spot_stock=self.stock(t, z, True),
                )
        return out

    # ---- reads -----------------------------------------------------------------------------------------------
    def groups(self) -> list[ScalingGroup]:
        return [ScalingGroup.model_validate_json(r["data"]) for r in self.store.query("SELECT data FROM fleet_groups")]

    def group(self, pool_id: str) -> ScalingGroup | None:
        row = self.store.one("SELECT data FROM fleet_groups WHERE pool_id=?", (pool_id,))
        return None if row is None else ScalingGroup.model_validate_json(row["data"])

    def instances(self, pool_id: str | None = None, include_released: bool = False) -> list[Instance]:
        sql = "SELECT data FROM fleet_instances WHERE 1=1"
        params: list = []
        if pool_id is not None:
            sql += " AND pool_id=?"
            params.append(pool_id)
        if not include_released:
            sql += " AND status != 'Released'"
        rows = self.store.query(sql, tuple(params))
        out = [Instance.model_validate_json(r["data"]) for r in rows]
        out.sort(key=lambda i: (i.created, i.instance_id))
        return out

    def instance(self, instance_id: str) -> Instance | None:
        row = self.store.one("SELECT data FROM fleet_instances WHERE instance_id=?", (instance_id,))
        return None if row is None else Instance.model_validate_json(row["data"])

    def activities(self, pool_id: str | None = None) -> list[Activity]:
        if pool_id is None:
            rows = self.store.query("SELECT data FROM fleet_activities ORDER BY start")
        else:
            rows = self.store.query("SELECT data FROM fleet_activities WHERE pool_id=? ORDER BY start", (pool_id,))
        return [Activity.model_validate_json(r["data"]) for r in rows]

    # ---- writes ----------------------------------------------------------------------------------------------
    def _save_group(self, g: ScalingGroup) -> None:
        self.store.execute(
            "INSERT INTO fleet_groups(pool_id, data) VALUES(?,?) ON CONFLICT(pool_id) DO UPDATE SET data=excluded.data",
            (g.pool_id, g.model_dump_json()),
        )

    def _save_instance(self, i: Instance) -> None:
        self.store.execute(
            "INSERT INTO fleet_instances(instance_id, pool_id, status, data) VALUES(?,?,?,?) "
            "ON CONFLICT(instance_id) DO UPDATE SET status=excluded.status, data=excluded.data",
            (i.instance_id, i.pool_id, i.status, i.model_dump_json()),
        )

    def _save_activity(self, a: Activity) -> None:
        self.store.execute(
            "INSERT INTO fleet_activities(activity_id, pool_id, start, data) VALUES(?,?,?,?) "
            "ON CONFLICT(activity_id) DO UPDATE SET data=excluded.data",
            (a.activity_id, a.pool_id, a.start_time, a.model_dump_json()),
        )

    def create_group(self, pool_id: str, spec: GroupSpec, desired: int, now: float,
                     preexisting: bool = False) -> ScalingGroup:
        """A new scaling group. ``preexisting``: its instances exist already (Running), e.g. the cluster's
        default pool at the sandbox's first start."""
        with self.lock:
            if self.group(pool_id) is not None:
                raise FleetError(f"scaling group for pool {pool_id} exists")
            g = ScalingGroup(pool_id=pool_id, scaling_group_id=f"asg-{self._prefix}{_rand(18)}", spec=spec,
                             desired=self._clamp(spec, desired), created=now)
            self._save_group(g)
            if preexisting:
                self._scale_out(g, now, cause="The scaling group was created with its initial instances",
                                running=True)
            return g

    @staticmethod
    def _clamp(spec: GroupSpec, desired: int) -> int:
        if spec.auto_scaling:
            return max(spec.min_size, min(spec.max_size, desired))
        return max(0, desired)

    def update_group(self, pool_id: str, spec: GroupSpec | None = None, desired: int | None = None) -> ScalingGroup:
        with self.lock:
            g = self._require(pool_id)
            if spec is not None:
                g.spec = spec
                g.shortfall = None  # a new policy deserves a new attempt
            g.desired = self._clamp(g.spec, g.desired if desired is None else desired)
            self._save_group(g)
            return g

    def delete_group(self, pool_id: str) -> None:
        with self.lock:
            g = self._require(pool_id)
            g.deleting = True
            g.desired = 0
            self._save_group(g)

    def reclaim(self, instance_id: str, now: float) -> Instance:
        """Spot interruption notice: released ``spot_reclaim_notice`` seconds from now (remedy at the notice)."""
        with self.lock:
            inst = self.instance(instance_id)
            if inst is None or inst.status == "Released":
                raise FleetError(f"instance {instance_id} not found")
            if not inst.spot:
                raise FleetError(f"instance {instance_id} is not a spot instance")
            if inst.reclaim_at is None and inst.status != "Stopping":
                inst.reclaim_at = now + self.t["spot_reclaim_notice"]
                self._save_instance(inst)
            return inst

    def remove_instances(self, pool_id: str, instance_ids: list[str], now: float,
                         reason: str = "removed from the scaling group") -> list[str]:
        """ESS ``RemoveInstances`` with ``DecreaseDesiredCapacity``: release these instances and lower the desired
        capacity by as many (never below the group's minimum); returns the ids removed. (Cluster-autoscaler
        scale-down: it picks WHICH node goes, unlike a plain desired-size change.)"""
        with self.lock:
            g = self._require(pool_id)
            removed = []
            for iid in instance_ids:
                inst = self.instance(iid)
                if inst is None or inst.pool_id != pool_id or inst.status not in IN_FLIGHT + ("Running",):
                    continue
                if g.spec.auto_scaling and g.desired - len(removed) <= g.spec.min_size:
                    break
                self._stop(inst, now, reason)
                removed.append(iid)
            if removed:
                g.desired = self._clamp(g.spec, g.desired - len(removed))
                self._save_group(g)
                self._save_activity(Activity(
                    activity_id=f"asa-{self._prefix}{_rand(18)}", pool_id=g.pool_id,
                    scaling_group_id=g.scaling_group_id,
                    cause=f'Remove instances {", ".join(removed)}: {reason}; the desired capacity changed to '
                          f'"{g.desired}"',
                    description=f"Remove {len(removed)} ECS instance(s)", status_code="Successful",
                    final_status="Successful", status_message="", start_time=now, end_time=now,
                    total_capacity=g.desired, removed_instances=removed))
            return removed

    def _require(self, pool_id: str) -> ScalingGroup:
        g = self.group(pool_id)
        if g is None:
            raise FleetError(f"no scaling group for pool {pool_id}")
        return g

    # ---- reconcile -------------------------------------------------------------------------------------------
    def step(self, now: float) -> tuple[bool, float | None]:
        """Advance lifecycles and reconcile every group. Returns (changed, next due simulated time)."""
        with self.lock, self.store.tx():
            changed = False
            for inst in self.instances():
                changed |= self._advance(inst, now)
            for g in self.groups():
                changed |= self._reconcile_group(g, now)
            changed |= self._finish_activities(now)
            return changed, self._next_due()

    def _advance(self, inst: Instance, now: float) -> bool:
        changed = False
        while True:
            if inst.reclaim_at is not None and now >= inst.reclaim_at and inst.status in ("Pending", "Starting",
                                                                                           "Running"):
                self._stop(inst, inst.reclaim_at, "spot instance reclaimed (InstanceToBeTerminated)")
                changed = True
                continue
            if inst.next_at is None or now < inst.next_at:
                break
            at = inst.next_at
            if inst.status == "Pending":
                inst.status, inst.status_since, inst.next_at = "Starting", at, at + self.t["ecs_boot"]
            elif inst.status == "Starting":
                inst.status, inst.status_since, inst.next_at = "Running", at, None
            elif inst.status == "Stopping":
                inst.status, inst.status_since, inst.next_at, inst.released_at = "Released", at, None, at
                self._take_stock(inst.instance_type, inst.zone, inst.spot, +1)
            else:
                inst.next_at = None
            changed = True
        if changed:
            self._save_instance(inst)
        return changed

    def _stop(self, inst: Instance, at: float, reason: str) -> None:
        inst.status, inst.status_since = "Stopping", at
        inst.next_at = at + self.t["ecs_release"]
        inst.release_reason = reason
        self._save_instance(inst)

    def _slots(self, g: ScalingGroup) -> tuple[list[Instance], list[mix.Slot]]:
        """Instances that count towards the group's capacity (a noticed spot instance stops counting at the
        notice when remedy is on, at its release otherwise)."""
        counted = [
            i for i in self.instances(g.pool_id)
            if i.status in IN_FLIGHT + ("Running",) and not (g.spec.spot_instance_remedy and i.reclaim_at)
        ]
        slots = [mix.Slot(i.instance_id, i.instance_type, i.zone, i.spot, i.created, i.launch_reason) for i in counted]
        return counted, slots

    def _reconcile_group(self, g: ScalingGroup, now: float) -> bool:
        if g.deleting:
            live = self.instances(g.pool_id)
            stopped = False
            for inst in live:
                if inst.status != "Stopping":
                    self._stop(inst, now, "node pool deleted")
                    stopped = True
            if not live:
                self.store.execute("DELETE FROM fleet_groups WHERE pool_id=?", (g.pool_id,))
                return True
            return stopped
        counted, slots = self._slots(g)
        changed = False
        if len(slots) < g.desired:
            if g.shortfall is not None and now < g.shortfall.retry_at:
                return False
            remedy = any(i.reclaim_at for i in self.instances(g.pool_id) if i.status != "Stopping") \
                and g.spec.spot_instance_remedy
            cause = (f'Spot instance remedy: replacing instances that received an interruption notice; '
                     f'keeping the capacity at "{g.desired}"') if remedy else \
                (f'The desired capacity of the scaling group is "{g.desired}" and it holds "{len(slots)}": '
                 f'adding {g.desired - len(slots)} instance(s)')
            changed = self._scale_out(g, now, cause=cause)
        elif len(slots) > g.desired:
            victims = mix.plan_scale_in(g.spec.policy(self.zones), slots, g.desired, self.offers(g.spec))
            ids = {v.instance_id for v in victims}
            for inst in counted:
                if inst.instance_id in ids:
                    self._stop(inst, now, "scale-in")
            act = Activity(
                activity_id=f"asa-{self._prefix}{_rand(18)}", pool_id=g.pool_id, scaling_group_id=g.scaling_group_id,
                cause=f'The desired capacity of the scaling group changed to "{g.desired}": removing '
                      f'{len(ids)} instance(s)',
                description=f"Remove {len(ids)} ECS instance(s)", status_code="Successful", final_status="Successful",
                status_message="", start_time=now, end_time=now, total_capacity=g.desired,
                removed_instances=sorted(ids),
            )
            self._save_activity(act)
            changed = True
        elif g.shortfall is not None:
            g.shortfall = None
            self._save_group(g)
            changed = True
        # compensation notes live as long as compensation instances do
        if g.compensation_notes and not any(
            i.launch_reason == mix.REASON_COMPENSATION for i in self.instances(g.pool_id) if i.status != "Stopping"
        ):
            g.compensation_notes = []
            self._save_group(g)
            changed = True
        return changed

    def _scale_out(self, g: ScalingGroup, now: float, cause: str, running: bool = False) -> bool:
        counted, slots = self._slots(g)
        plan = mix.plan_scale_out(g.spec.policy(self.zones), slots, g.desired, self.offers(g.spec))
        act_id = f"asa-{self._prefix}{_rand(18)}"
        created = []
        failed: list[str] = []
        for launch in plan.launches:
            err = self.launch_fault(launch.instance_type, launch.zone, launch.spot) if self.launch_fault else None
            if err:  # a fault (sandbox.faults boot_failures): the launch fails, ESS retries after a while
                failed.append(f"{launch.instance_type} in {launch.zone}: {err}")
                continue
            inst = self._launch(g, launch, now, act_id, running)
            created.append(inst.instance_id)
        if failed:
            plan.shortfall += len(failed)
            plan.notes.append(f"{len(failed)} instance(s) failed to launch ({'; '.join(failed)})")
        want = g.desired - len(slots)
        if plan.shortfall == 0:
            final, msg = "Successful", ""
        elif created:
            final = "Warning"
            msg = f"Partially successful: {len(created)} of {want} instance(s) created. " + "; ".join(plan.notes)
        else:
            final = "Failed"
            code = "InstanceLaunchFailed" if failed else "OperationDenied.NoStock"
            msg = f"No instance could be created ({code}). " + "; ".join(plan.notes)
        if plan.compensated:
            msg = (msg + " " if msg else "") + "; ".join(n for n in plan.notes if "compensate" in n)
        act = Activity(
            activity_id=act_id, pool_id=g.pool_id, scaling_group_id=g.scaling_group_id, cause=cause,
            description=f"Add {want} ECS instance(s)", status_code="Successful" if running or not created else
            "InProgress", final_status=final, status_message=msg.strip(), start_time=now,
            end_time=now if running or not created else None, total_capacity=g.desired, created_instances=created,
            shortfall=plan.shortfall,
        )
        if running or not created:
            act.status_code = final
        self._save_activity(act)
        if plan.shortfall:
            g.shortfall = Shortfall(count=plan.shortfall, notes=plan.notes, at=now,
                                    retry_at=now + self.t["ess_shortfall_retry"])
        else:
            g.shortfall = None
        if plan.compensated:
            g.compensation_notes = [n for n in plan.notes if "compensate" in n] or plan.notes
        self._save_group(g)
        return bool(created) or plan.shortfall > 0

    def _launch(self, g: ScalingGroup, launch: mix.Launch, now: float, activity_id: str,
                running: bool) -> Instance:
        vsw = next((v for v in g.spec.vswitch_ids if zone_of_vswitch(v, self.zones) == launch.zone),
                   g.spec.vswitch_ids[0])
        ip = self._next_ip(launch.zone)
        prepaid = g.spec.instance_charge_type == "PrePaid"
        inst = Instance(
            instance_id=f"i-{self._prefix}{_rand(18)}",
            pool_id=g.pool_id, scaling_group_id=g.scaling_group_id,
            instance_type=launch.instance_type, zone=launch.zone, vswitch_id=vsw,
            instance_charge_type="PrePaid" if prepaid else "PostPaid",
            spot_strategy=g.spec.spot_strategy if launch.spot else "NoSpot",
            spot_price_limit=g.spec.price_limits.get(launch.instance_type) if launch.spot else None,
            hourly_price=launch.price, private_ip=ip, hostname=f"iZ{self._prefix}{_rand(20)}Z",
            status="Running" if running else "Pending", created=now, status_since=now,
            next_at=None if running else now + self.t["ecs_create"],
            launch_reason=launch.reason, activity_id=activity_id,
        )
        self._take_stock(launch.instance_type, launch.zone, launch.spot, -1)
        self._save_instance(inst)
        return inst

    def _next_ip(self, zone: str) -> str:
        zi = self.zones.index(zone) if zone in self.zones else 0
        key = f"fleet_ip_seq/{zone}"
        n = int(self.store.get_meta(key, 0))
        self.store.set_meta(key, n + 1)
        return f"10.{zi}.{(n // 250) % 250}.{n % 250 + 2}"

    def _finish_activities(self, now: float) -> bool:
        changed = False
        for row in self.store.query("SELECT data FROM fleet_activities WHERE data LIKE '%\"InProgress\"%'"):
            act = Activity.model_validate_json(row["data"])
            if act.status_code != "InProgress":
                continue
            insts = [self.instance(i) for i in act.created_instances]
            if all(i is None or i.status not in IN_FLIGHT for i in insts):
                act.status_code = act.final_status
                ends = [i.status_since for i in insts if i is not None]
                act.end_time = max(ends) if ends else now
                self._save_activity(act)
                changed = True
        return changed

    def _next_due(self) -> float | None:
        due: list[float] = []
        for inst in self.instances():
            if inst.next_at is not None:
                due.append(inst.next_at)
            if inst.reclaim_at is not None and inst.status in LIVE[:3]:
                due.append(inst.reclaim_at)
        for g in self.groups():
            if g.shortfall is not None:
                due.append(g.shortfall.retry_at)
        return min(due) if due else None
