"""Behaviour of the emulated ACK control plane: one managed cluster, its node pools and their tasks.

Node pools live in table ``ack_nodepools`` (JSON documents: the normalized create body, lifecycle fields), tasks in
``ack_tasks``. Instances belong to the fleet (:mod:`sandbox.fleet`): each node pool owns one ESS scaling group
keyed by its nodepool id, and everything about nodes is read from there.

The pool's current size (``scaling_group.desired_size``, "the expected number of nodes in the node pool") is the
scaling group's desired capacity and nothing else: ACK keeps no copy of it, because the cluster-autoscaler changes
it through ESS behind ACK's back (scale-up: ``set_desired``; scale-down: ``RemoveInstances`` lowering it).
DescribeClusterNodePool(s|Detail) read it from the group; ScaleClusterNodePool adds ``count`` to the group's current
value; ModifyClusterNodePool sets it only when the body carries ``scaling_group.desired_size`` (pools without auto
scaling), otherwise it leaves it to ESS, which only trims it into a new min/max (ESS ModifyScalingGroup).

Node pool state (``status.state``), driven by the simulated clock:

- ``initial`` for ``nodepool_create`` seconds after CreateClusterNodePool (infrastructure: scaling group,
  launch template); then the scaling group is created with the pool's desired size
  (``auto_scaling.min_instances`` with auto scaling, else ``scaling_group.desired_size``/``count``; until then
  DescribeClusterNodePoolDetail reports that size as ``desired_size``);
- ``scaling`` while any instance of the pool is launching (Pending/Starting);
- ``removing`` while any instance is being released (scale-in, spot reclaim);
- ``updating`` for ``nodepool_update`` seconds after ModifyClusterNodePool;
- ``deleting`` after DeleteClusterNodepool until its instances are released and ``nodepool_delete`` has passed,
  then the pool is gone (404 ``ErrorNodePoolNotFound``);
- ``active`` otherwise, also when the pool cannot reach its size (stock): the task fails with the reason.

``status.conditions`` carries nothing of the sandbox's own: ACK documents the item shape (``type``, ``status``,
``reason``, ``message``, ``last_transition_time``; ``DescribeClusterNodePoolDetailResponseBodyStatusConditions``)
but no condition type, and no public code emits a mix or stock condition, so the pool's mix is visible only as
ACK shows it (DescribeClusterNodes: each instance's ``instance_charge_type``/``spot_strategy``) and a shortfall
only as the task's error and the node counts. Other components may add conditions through ``extra_conditions``.

Tasks (DescribeTaskInfo): every mutating call returns a ``task_id``; the task is ``running`` until the pool has
converged (``success``) or the scaling group reports a shortfall with nothing left in flight (``fail``, error
``OperationDenied.NoStock``); a delete task succeeds when the pool is gone.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from typing import Any

from ..fleet import catalogue
from ..fleet.models import IN_FLIGHT, GroupSpec, Instance
from ..fleet.service import FleetService
from ..store import Store
from . import errors
from .models import CreateNodePool, ScaleNodePool, check_create, normalized, parse, validate_modify

DEFAULT_POOL_NAME = "default-nodepool"


class AckState:
    def __init__(self, store: Store, clock, identity, fleet: FleetService, timings: dict[str, float]) -> None:
        self.store = store
        self.clock = clock
        self.identity = identity
        self.fleet = fleet
        self.t = timings
        self.lock = threading.RLock()
        # Hook for other components' node-pool conditions (the cluster-autoscaler): nodepool_id -> conditions.
        self.extra_conditions: list[Callable[[str], list[dict[str, Any]]]] = []
        store.ensure(
            "CREATE TABLE IF NOT EXISTS ack_nodepools (nodepool_id TEXT PRIMARY KEY, cluster_id TEXT NOT NULL,"
            " name TEXT NOT NULL, data TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS ack_tasks (task_id TEXT PRIMARY KEY, created REAL NOT NULL,"
            " done INTEGER NOT NULL DEFAULT 0, data TEXT NOT NULL)",
        )

    @property
    def cluster_id(self) -> str:
        return self.identity.cluster_id

    # ---- persistence -----------------------------------------------------------------------------------------
    def _pools(self) -> list[dict[str, Any]]:
        rows = self.store.query("SELECT data FROM ack_nodepools WHERE cluster_id=?", (self.cluster_id,))
        pools = [_loaded(r["data"]) for r in rows]
        pools.sort(key=lambda p: (p["created"], p["nodepool_id"]))
        return pools

    def _pool(self, nodepool_id: str) -> dict[str, Any] | None:
        row = self.store.one("SELECT data FROM ack_nodepools WHERE nodepool_id=? AND cluster_id=?",
                             (nodepool_id, self.cluster_id))
        return None if row is None else _loaded(row["data"])

    def _save_pool(self, p: dict[str, Any]) -> None:
        self.store.execute(
            "INSERT INTO ack_nodepools(nodepool_id, cluster_id, name, data) VALUES(?,?,?,?) "
            "ON CONFLICT(nodepool_id) DO UPDATE SET name=excluded.name, data=excluded.data",
            (p["nodepool_id"], self.cluster_id, p["spec"]["nodepool_info"]["name"], json.dumps(p)),
        )

    def _task(self, task_id: str) -> dict[str, Any] | None:
        row = self.store.one("SELECT data FROM ack_tasks WHERE task_id=?", (task_id,))
        return None if row is None else json.loads(row["data"])

    def _save_task(self, t: dict[str, Any]) -> None:
        self.store.execute(
            "INSERT INTO ack_tasks(task_id, created, done, data) VALUES(?,?,?,?) "
            "ON CONFLICT(task_id) DO UPDATE SET done=excluded.done, data=excluded.data",
            (t["task_id"], t["created_ts"], int(t["state"] != "running"), json.dumps(t)),
        )

    # ---- helpers ---------------------------------------------------------------------------------------------
    def check_cluster(self, cluster_id: str) -> None:
        if cluster_id != self.cluster_id:
            raise errors.cluster_not_found(cluster_id)

    def require_pool(self, nodepool_id: str) -> dict[str, Any]:
        p = self._pool(nodepool_id)
        if p is None:
            raise errors.nodepool_not_found(self.cluster_id, nodepool_id)
        return p

    @staticmethod
    def _group_spec(spec: dict[str, Any], nodepool_id: str) -> GroupSpec:
        sg, a, kc = spec["scaling_group"], spec["auto_scaling"], spec["kubernetes_config"]
        return GroupSpec(
            instance_types=sg["instance_types"], vswitch_ids=sg["vswitch_ids"],
            instance_charge_type=sg["instance_charge_type"], spot_strategy=sg["spot_strategy"],
            price_limits={x["instance_type"]: float(x["price_limit"]) for x in sg.get("spot_price_limit") or []},
            on_demand_base_capacity=sg["on_demand_base_capacity"],
            on_demand_percentage_above_base_capacity=sg["on_demand_percentage_above_base_capacity"],
            spot_instance_pools=sg["spot_instance_pools"], spot_instance_remedy=sg["spot_instance_remedy"],
            compensate_with_on_demand=sg["compensate_with_on_demand"], multi_az_policy=sg["multi_az_policy"],
            auto_scaling=bool(a["enable"]), min_size=a.get("min_instances") or 0,
            max_size=(a.get("max_instances") or 0) if a["enable"] else 1000,
            node_template={
                "nodepool_id": nodepool_id, "nodepool_name": spec["nodepool_info"]["name"],
                "labels": kc.get("labels") or [], "taints": kc.get("taints") or [],
                "runtime": kc.get("runtime"), "runtime_version": kc.get("runtime_version"),
                "unschedulable": kc.get("unschedulable", False),
            },
        )

    def _new_task(self, task_type: str, nodepool_id: str, goal: str, parameters: dict[str, Any]) -> dict[str, Any]:
        now = self.clock.now()
        t = {
            "task_id": "T-" + secrets.token_hex(12),
            "cluster_id": self.cluster_id, "task_type": task_type, "state": "running",
            "created_ts": now, "created": self.clock.iso(now), "updated": self.clock.iso(now),
            "current_stage": "", "target": {"id": nodepool_id, "type": "nodepool"},
            "goal": goal, "parameters": parameters, "stages": [], "events": [], "task_result": [],
            "error": None, "outputs": {},
        }
        self._stage(t, goal, now)
        self._save_task(t)
        return t

    def _stage(self, t: dict[str, Any], name: str, now: float, message: str = "") -> None:
        if t["current_stage"] == name:
            return
        for s in t["stages"]:
            if s["state"] == "running":
                s["state"], s["end_time"] = "success", self.clock.iso(now)
        t["stages"].append({"state": "running", "message": message or name, "start_time": self.clock.iso(now),
                            "end_time": "", "outputs": {}, "name": name})
        t["current_stage"] = name

    def _desired_initial(self, spec: dict[str, Any]) -> int:
        """The size the pool's scaling group is created with (the group owns it from then on)."""
        if spec["auto_scaling"]["enable"]:
            return spec["auto_scaling"]["min_instances"] or 0
        sg = spec["scaling_group"]
        if sg.get("desired_size") is not None:
            return sg["desired_size"]
        return spec.get("count") or 0

    # ---- the default pool ------------------------------------------------------------------------------------
    def ensure_default_pool(self) -> None:
        with self.lock:
            if self.store.get_meta("ack_default_pool") is not None:
                return
            body = {
                "nodepool_info": {"name": DEFAULT_POOL_NAME, "type": "ess"},
                "scaling_group": {
                    "instance_types": ["ecs.g7.xlarge"], "vswitch_ids": ["vsw-" + secrets.token_hex(12)],
                    "instance_charge_type": "PostPaid", "desired_size": 2, "system_disk_category": "cloud_essd",
                    "key_pair": "sandbox-default", "security_group_ids": ["sg-" + secrets.token_hex(10)],
                },
            }
            req = parse(CreateNodePool, body)
            spec = normalized(req)
            now = self.clock.now()
            np_id = "np" + secrets.token_hex(16)
            pool = {"nodepool_id": np_id, "spec": spec, "state": "active", "state_until": None, "created": now,
                    "updated": now, "is_default": True}
            self._save_pool(pool)
            self.fleet.create_group(np_id, self._group_spec(spec, np_id), 2, preexisting=True)
            self.store.set_meta("ack_default_pool", np_id)

    def default_vswitches(self) -> list[str]:
        np_id = self.store.get_meta("ack_default_pool")
        p = self._pool(np_id) if np_id else None
        return p["spec"]["scaling_group"]["vswitch_ids"] if p else []

    # ---- operations ------------------------------------------------------------------------------------------
    def create_pool(self, body: Any) -> dict[str, Any]:
        req = parse(CreateNodePool, body)
        check_create(req)
        with self.lock:
            name = req.nodepool_info.name
            if any(p["spec"]["nodepool_info"]["name"] == name for p in self._pools()):
                raise errors.invalid_parameter(
                    "nodepool_info.name", f"a node pool named {name!r} already exists in cluster {self.cluster_id}")
            spec = normalized(req)
            now = self.clock.now()
            np_id = "np" + secrets.token_hex(16)
            pool = {"nodepool_id": np_id, "spec": spec, "state": "initial",
                    "state_until": now + self.t["nodepool_create"], "created": now, "updated": now,
                    "is_default": False}
            self._save_pool(pool)
            task = self._new_task("nodepool_create", np_id, "CreateNodePoolInfrastructure", {"nodepool_id": np_id})
            return {"nodepool_id": np_id, "task_id": task["task_id"]}

    def list_pools(self, name: str | None) -> list[dict[str, Any]]:
        pools = self._pools()
        if name:
            pools = [p for p in pools if p["spec"]["nodepool_info"]["name"] == name]
        out = [self.render_pool(p) for p in pools]
        for item in out:
            # DescribeClusterNodePoolsResponseBodyNodepoolsStatus has no conditions (the detail's status has)
            item["status"].pop("conditions", None)
        return out

    def scale_pool(self, nodepool_id: str, body: Any) -> dict[str, Any]:
        req = parse(ScaleNodePool, body)
        with self.lock:
            p = self.require_pool(nodepool_id)
            if p["state"] in ("initial", "deleting"):
                raise errors.nodepool_state(nodepool_id, p["state"], "ScaleClusterNodePool")
            # Read-modify-write of the group's desired capacity under the fleet's lock: the cluster-autoscaler
            # writes the same value (FleetService.set_desired / remove_instances).
            with self.fleet.state.lock:
                g = self.fleet.scaling_group(nodepool_id)
                if g is None:
                    raise errors.nodepool_state(nodepool_id, p["state"], "ScaleClusterNodePool")
                new = g.desired + req.count
                a = p["spec"]["auto_scaling"]
                if a["enable"] and new > a["max_instances"]:
                    raise errors.invalid_parameter(
                        "count", f"the node pool would hold {new} nodes, more than auto_scaling.max_instances "
                                 f"({a['max_instances']})")
                if new > 1000:
                    raise errors.invalid_parameter("count", f"the node pool would hold {new} nodes (max 1000)")
                p["updated"] = self.clock.now()
                self._save_pool(p)
                task = self._new_task("nodepool_scaleout", nodepool_id, "ScaleOutNodes", {"count": req.count})
                self.fleet.set_desired(nodepool_id, new)
            return {"task_id": task["task_id"]}

    def modify_pool(self, nodepool_id: str, body: Any) -> dict[str, Any]:
        with self.lock:
            p = self.require_pool(nodepool_id)
            if p["state"] in ("initial", "deleting"):
                raise errors.nodepool_state(nodepool_id, p["state"], "ModifyClusterNodePool")
            req = validate_modify(p["spec"], body)
            name = req.nodepool_info.name
            if any(o["spec"]["nodepool_info"]["name"] == name and o["nodepool_id"] != nodepool_id
                   for o in self._pools()):
                raise errors.invalid_parameter(
                    "nodepool_info.name", f"a node pool named {name!r} already exists in cluster {self.cluster_id}")
            spec = normalized(req)
            # The group's current desired capacity is left alone unless the body sets desired_size (pools without
            # auto scaling: ACK's "Scale a node pool" is ModifyClusterNodePool with scaling_group.desired_size,
            # https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/developer-reference/
            # scale-a-node-pool-1). With auto scaling, the fleet only trims the current value into the new
            # [min_instances, max_instances], as ESS ModifyScalingGroup does with MinSize/MaxSize ("If you modify
            # MaxSize, and the number of instances exceeds the new MaxSize, Auto Scaling automatically removes
            # instances ... MinSize ... adds": https://www.alibabacloud.com/help/en/auto-scaling/developer-reference/
            # api-ess-2014-08-28-modifyscalinggroup).
            # Recomputing it from anything ACK remembered would undo what the cluster-autoscaler sized.
            desired = None
            if not spec["auto_scaling"]["enable"] and isinstance(body.get("scaling_group"), dict) \
                    and body["scaling_group"].get("desired_size") is not None:
                desired = body["scaling_group"]["desired_size"]
            now = self.clock.now()
            p.update(spec=spec, updated=now, state="updating", state_until=now + self.t["nodepool_update"])
            self._save_pool(p)
            task = self._new_task("nodepool_update", nodepool_id, "UpdateNodePool", {"body": _redact(body)})
            self.fleet.update_group(nodepool_id, spec=self._group_spec(spec, nodepool_id), desired=desired)
            return {"nodepool_id": nodepool_id, "task_id": task["task_id"]}

    def delete_pool(self, nodepool_id: str, force: bool) -> dict[str, Any]:
        with self.lock:
            p = self.require_pool(nodepool_id)
            if p.get("is_default"):
                raise errors.AckError(400, "ErrorNodePoolStateInvalid",
                                      f"node pool {nodepool_id} is the cluster's default node pool and cannot be deleted")
            if p["state"] == "deleting":
                raise errors.nodepool_state(nodepool_id, p["state"], "DeleteClusterNodepool")
            if not force and self.fleet.instances(nodepool_id):
                raise errors.AckError(
                    400, "ErrorNodePoolNotEmpty",
                    f"node pool {nodepool_id} has {len(self.fleet.instances(nodepool_id))} node(s): remove them "
                    "first or delete with force=true (its ECS instances are released)")
            now = self.clock.now()
            p.update(state="deleting", state_until=now + self.t["nodepool_delete"], updated=now)
            self._save_pool(p)
            task = self._new_task("nodepool_delete", nodepool_id, "DeleteNodePool", {"force": force})
            if self.fleet.scaling_group(nodepool_id) is not None:
                self.fleet.delete_group(nodepool_id)
            return {"task_id": task["task_id"]}

    # ---- reconcile -------------------------------------------------------------------------------------------
    def step(self) -> bool:
        """Move pools through their states and settle tasks. Returns True if anything changed."""
        changed = False
        with self.lock:
            now = self.clock.now()
            for p in self._pools():
                if p["state"] == "initial" and now >= p["state_until"]:
                    p.update(state="active", state_until=None, updated=now)
                    self._save_pool(p)
                    if self.fleet.scaling_group(p["nodepool_id"]) is None:
                        self.fleet.create_group(p["nodepool_id"], self._group_spec(p["spec"], p["nodepool_id"]),
                                                self._desired_initial(p["spec"]))
                    changed = True
                elif p["state"] == "updating" and now >= p["state_until"]:
                    p.update(state="active", state_until=None, updated=now)
                    self._save_pool(p)
                    changed = True
                elif p["state"] == "deleting" and now >= p["state_until"] \
                        and self.fleet.scaling_group(p["nodepool_id"]) is None:
                    self.store.execute("DELETE FROM ack_nodepools WHERE nodepool_id=?", (p["nodepool_id"],))
                    changed = True
            for row in self.store.query("SELECT data FROM ack_tasks WHERE done=0"):
                changed |= self._settle(json.loads(row["data"]), now)
        return changed

    def _settle(self, t: dict[str, Any], now: float) -> bool:
        np_id = t["target"]["id"]
        p = self._pool(np_id)
        before = json.dumps(t)
        if t["task_type"] == "nodepool_delete":
            if p is None:
                self._finish(t, now, "success")
            elif self.fleet.scaling_group(np_id) is None:
                self._stage(t, "WaitForCleanup", now)
        elif p is None or p["state"] == "deleting":
            self._finish(t, now, "fail", {"code": "ErrorNodePoolNotFound", "message": f"node pool {np_id} was deleted"})
        elif p["state"] in ("initial", "updating"):
            pass
        else:
            g = self.fleet.scaling_group(np_id)
            insts = self.fleet.instances(np_id)
            in_flight = [i for i in insts if i.status in IN_FLIGHT or i.status == "Stopping"]
            self._stage(t, "ScaleNodes" if t["task_type"] != "nodepool_update" else "UpdateNodes", now)
            if g is not None and not in_flight:
                if g.shortfall is not None:
                    self._finish(t, now, "fail", {"code": "OperationDenied.NoStock",
                                                  "message": "; ".join(g.shortfall.notes)})
                else:
                    self._finish(t, now, "success")
        if json.dumps(t) != before:
            t["updated"] = self.clock.iso(now)
            self._save_task(t)
            return True
        return False

    def _finish(self, t: dict[str, Any], now: float, state: str, error: dict[str, str] | None = None) -> None:
        for s in t["stages"]:
            if s["state"] == "running":
                s["state"], s["end_time"] = ("success" if state == "success" else "fail"), self.clock.iso(now)
        t["state"] = state
        t["error"] = error
        t["task_result"] = [{"data": t["target"]["id"], "status": state}]

    # ---- rendering -------------------------------------------------------------------------------------------
    def display_state(self, p: dict[str, Any], insts: list[Instance]) -> str:
        if p["state"] in ("initial", "deleting", "updating"):
            return p["state"]
        if any(i.status == "Stopping" for i in insts):
            return "removing"
        if any(i.status in IN_FLIGHT for i in insts):
            return "scaling"
        return "active"

    def render_pool(self, p: dict[str, Any]) -> dict[str, Any]:
        np_id = p["nodepool_id"]
        spec = json.loads(json.dumps(p["spec"]))
        insts = self.fleet.instances(np_id)
        group = self.fleet.scaling_group(np_id)
        sg = spec["scaling_group"]
        sg.pop("login_password", None)
        sg.pop("login_password_set", None)
        sg["scaling_group_id"] = group.scaling_group_id if group else ""
        sg["ram_policy"] = ""
        # desired_size: "The expected number of nodes in the node pool" (alibabacloud_cs20151215
        # DescribeClusterNodePoolDetailResponseBody.scaling_group.desired_size; aliyun/alibabacloud-java-sdk
        # cs-20151215 models/DescribeClusterNodePoolDetailResponseBody.java). That is the ESS group's desired
        # capacity, with or without auto scaling: read from the group, never from a copy the autoscaler can outdate.
        if group is not None:
            sg["desired_size"] = group.desired
        else:  # initial (group not created yet) or deleting (group gone)
            sg["desired_size"] = 0 if p["state"] == "deleting" else self._desired_initial(p["spec"])
        spec["nodepool_info"].update(
            created=self.clock.iso(p["created"]), updated=self.clock.iso(p["updated"]),
            is_default=bool(p.get("is_default")), nodepool_id=np_id, region_id=self.identity.region,
        )
        spec["status"] = {
            "state": self.display_state(p, insts),
            "total_nodes": len(insts),
            "healthy_nodes": sum(1 for i in insts if i.status == "Running" and i.reclaim_at is None),
            "serving_nodes": sum(1 for i in insts if i.status == "Running"),
            "initial_nodes": sum(1 for i in insts if i.status in IN_FLIGHT),
            "offline_nodes": 0,
            "removing_nodes": sum(1 for i in insts if i.status == "Stopping"),
            "failed_nodes": 0,
            "conditions": [c for f in self.extra_conditions for c in f(np_id)],
        }
        spec.pop("count", None)
        return spec

    def render_task(self, task_id: str) -> dict[str, Any]:
        t = self._task(task_id)
        if t is None:
            raise errors.task_not_found(task_id)
        self._settle(t, self.clock.now())
        out = {k: v for k, v in t.items() if k not in ("created_ts", "goal")}
        for s in out["stages"]:
            s.pop("name", None)
        if out["error"] is None:
            out.pop("error")
        return out

    def nodes(self, query: dict[str, str]) -> dict[str, Any]:
        def _int(name: str, default: int, lo: int, hi: int) -> int:
            raw = query.get(name)
            if raw in (None, ""):
                return default
            try:
                v = int(raw)
            except ValueError:
                raise errors.invalid_parameter(name, f"must be an integer (got {raw!r})") from None
            if not lo <= v <= hi:
                raise errors.invalid_parameter(name, f"must be between {lo} and {hi} (got {v})")
            return v

        page_number = _int("pageNumber", 1, 1, 1_000_000)
        page_size = _int("pageSize", 10, 1, 100)
        state = (query.get("state") or "all").lower()
        states = {"all": None, "running": ("Running",), "removing": ("Stopping",),
                  "initial": IN_FLIGHT, "failed": ()}
        if state not in states:
            raise errors.invalid_parameter("state", f"must be one of {', '.join(states)} (got {state!r})")
        np_id = query.get("nodepool_id") or None
        if np_id and self._pool(np_id) is None:
            raise errors.nodepool_not_found(self.cluster_id, np_id)
        insts = self.fleet.instances(np_id)
        known = {p["nodepool_id"] for p in self._pools()}
        insts = [i for i in insts if i.pool_id in known]
        if states[state] is not None:
            insts = [i for i in insts if i.status in states[state]]
        ids = _list_param(query.get("instanceIds"))
        if ids:
            insts = [i for i in insts if i.instance_id in ids]
        ips = _list_param(query.get("nodeIps"))
        if ips:
            insts = [i for i in insts if i.private_ip in ips]
        names = _list_param(query.get("nodeNames"))
        if names:
            insts = [i for i in insts if self.node_name(i) in names]
        total = len(insts)
        page = insts[(page_number - 1) * page_size: page_number * page_size]
        return {"nodes": [self.render_node(i) for i in page],
                "page": {"page_number": page_number, "page_size": page_size, "total_count": total}}

    def node_name(self, i: Instance) -> str:
        return f"{self.identity.region}.{i.private_ip}"

    def render_node(self, i: Instance) -> dict[str, Any]:
        t = catalogue.get(i.instance_type)
        return {
            "creation_time": self.clock.iso(i.created),
            "error_message": "",
            "expired_time": "2099-12-31T15:59:00Z" if i.instance_charge_type == "PostPaid" else
            self.clock.iso(i.created + 30 * 86400),
            "host_name": i.hostname,
            "image_id": "aliyun_3_x64_20G_alibase_20240819.vhd",
            "instance_charge_type": i.instance_charge_type,
            "instance_id": i.instance_id,
            "instance_name": f"worker-k8s-for-cs-{self.cluster_id}",
            "instance_role": "Worker",
            "instance_status": i.status,
            "instance_type": i.instance_type,
            "instance_type_family": t.family if t else "",
            "ip_address": [i.private_ip],
            "is_aliyun_node": True,
            "node_name": self.node_name(i),
            "node_status": "Ready" if i.status == "Running" else ("Offline" if i.status == "Stopping" else "Unknown"),
            "nodepool_id": i.pool_id,
            "source": "ess_attach",
            "spot_strategy": i.spot_strategy,
            "state": i.status.lower(),
        }

    def cluster_detail(self, endpoints: dict[str, str]) -> dict[str, Any]:
        created = self.store.get_meta("ack_cluster_created")
        if created is None:
            created = self.clock.now()
            self.store.set_meta("ack_cluster_created", created)
        kube = endpoints.get("kube", "")
        size = len([i for i in self.fleet.instances() if i.pool_id in {p["nodepool_id"] for p in self._pools()}])
        return {
            "cluster_id": self.cluster_id, "name": "elastic-inference-sandbox", "region_id": self.identity.region,
            "zone_id": self.identity.zones[0], "state": "running", "cluster_type": "ManagedKubernetes",
            "profile": "Default", "cluster_spec": "ack.pro.small", "current_version": "1.31.1-aliyun.1",
            "init_version": "1.31.1-aliyun.1", "created": self.clock.iso(created), "updated": self.clock.iso(),
            "size": size, "network_mode": "vpc", "vpc_id": "vpc-sandbox" + self.cluster_id[:12],
            "vswitch_ids": self.default_vswitches(), "container_cidr": "172.20.0.0/16",
            "service_cidr": "172.21.0.0/20", "proxy_mode": "ipvs", "resource_group_id": "rg-sandbox",
            "deletion_protection": False, "tags": [], "maintenance_window": {"enable": False},
            "master_url": json.dumps({"api_server_endpoint": kube, "intranet_api_server_endpoint": kube})
            if kube else "",
            "meta_data": json.dumps({"Capabilities": {}, "KubernetesVersion": "1.31.1-aliyun.1"}),
            "timezone": "Asia/Shanghai", "ip_stack": "ipv4",
        }


def _loaded(data: str) -> dict[str, Any]:
    p = json.loads(data)
    # State written before the scaling group became the only record of the size kept a copy under "desired";
    # it is dropped on load (and so on the next save): the group's value is the one that counts.
    p.pop("desired", None)
    return p


def _list_param(raw: str | None) -> set[str]:
    if not raw:
        return set()
    raw = raw.strip()
    if raw.startswith("["):
        try:
            return {str(x) for x in json.loads(raw)}
        except ValueError:
            pass
    return {x.strip().strip('"') for x in raw.strip("[]").split(",") if x.strip()}


def _redact(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: ("******" if k == "login_password" else _redact(v)) for k, v in body.items()}
    if isinstance(body, list):
        return [_redact(x) for x in body]
    return body
