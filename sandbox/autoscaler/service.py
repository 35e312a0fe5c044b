"""The cluster-autoscaler (``name = "autoscaler"``, no HTTP endpoint): scales ACK auto-scaling node pools.

It runs only when the cluster's node scaling is enabled (sandbox option ``node_scaling``, default on:
:mod:`sandbox.cluster_profile`); off, as on a real cluster where nobody enabled it, nothing scales the pools.

A loop every ``ca_scan`` simulated seconds (``--scan-interval``), following upstream's ``StaticAutoscaler.RunOnce``
(kubernetes/autoscaler ``cluster-autoscaler/core/static_autoscaler.go``) in a reduced form; the pure parts are in
:mod:`sandbox.autoscaler.simulate`.

Node groups are the ESS scaling groups of node pools with ``auto_scaling.enable`` (read from the fleet); their
size is changed through the fleet, the same path ACK/ESS use, so the mixed-instances policy decides what is bought.

**Scale-up.** Pods with ``PodScheduled=False`` reason ``Unschedulable`` are first tried on the cluster as it will
be: existing nodes (NotReady nodes of running instances count, they are about to be Ready) plus *upcoming* nodes
(``desired - registered`` per group: launching instances with their own type, the rest as template nodes), so
capacity already on its way is not bought twice. The rest are checked against each group's template node; groups
at ``max`` ("max node group size reached") or in backoff after a failed scale-up are skipped with that reason.
The pods that fit are bin-packed per group, the least-waste expander picks one group, and its desired size is
raised (capped at max). Events: ``TriggeredScaleUp`` on the pods helped, ``NotTriggerScaleUp`` (with the reasons,
re-recorded at most every ``NOT_TRIGGER_REPEAT`` s for the same message) on the pods no group can help.
A scale-up fails when ESS reports a shortfall (no stock without compensation, launch failures) after it, or when
an instance is not a Ready node within ``ca_max_node_provision``: the group's size is set back to what it really
holds (upstream ``fixNodeGroupSize`` / ``DecreaseTargetSize``), it is backed off for ``ca_backoff`` (doubling,
at most 30 min) and the pods get a Warning ``FailedScaleUp``.

**Scale-down.** A Ready node of an auto-scaling group is *unneeded* when its request utilization is below
``ca_scale_down_utilization_threshold`` (GPU nodes: GPU utilization) and all its pods (DaemonSet/mirror pods
aside) fit elsewhere; blocking pods (no controller, ``safe-to-evict: "false"``, ``kube-system`` without a PDB), pods
whose PodDisruptionBudget has no disruption left (``NotEnoughPdb``: ``status.disruptionsAllowed`` minus what the
nodes planned earlier in the same scan use up, :class:`sandbox.autoscaler.simulate.PdbTracker`, after upstream's
``core/scaledown/pdb/basic.go`` and ``simulator/drainability/rules/pdb/rule.go``) and the node annotation
``cluster-autoscaler.kubernetes.io/scale-down-disabled: "true"`` keep it. A node a pod keeps is logged as upstream
does (``node <name> cannot be removed: not enough pod disruption budget to move <ns>/<pod>``) and, once kept for
``ca_scale_down_unneeded``, reported on its pool's condition (``ScaleDownBlocked``, below). After
``ca_scale_down_unneeded`` (and not within ``ca_scale_down_delay_after_add`` of a scale-up) unneeded nodes are
removed, never taking a group below its min: empty nodes in bulk (up to 10), otherwise one node per scan. Removal:
taint ``ToBeDeletedByClusterAutoscaler`` (NoSchedule), Event ``ScaleDown`` on the node, delete its pods (Event
``ScaleDown`` on each; upstream evicts them through the Eviction API, which the sandbox does not serve: a node whose
pods would take a PDB below zero at once is therefore kept rather than drained, see ``PdbTracker``), then ESS
``RemoveInstances`` of exactly that instance with the desired size lowered
(:meth:`sandbox.fleet.service.FleetService.remove_instances`); the node controller deletes the Node when the
instance is gone.

**Status.** Each node pool gets a ``ClusterAutoscaler`` condition in DescribeClusterNodePoolDetail
``status.conditions`` (through the ACK service's condition hook): ``ScaledUp``, ``ScaledDown``, ``MaxSizeReached``
(False), ``ScaleUpFailed``/``BackOff`` (False), ``ScaleDownBlocked`` (False: an underutilized node has been kept
for ``ca_scale_down_unneeded`` by a pod that cannot move, the message names node, pod and reason; not while only
nodes planned earlier in the same scan use up a PDB), ``Idle`` (once those clear); a pool the autoscaler never acted
on has none (upstream reports unremovable nodes only in its log and metrics). The ConfigMap
``kube-system/cluster-autoscaler-status`` carries upstream's YAML status (``clusterstate/api``: ``autoscalerStatus``,
``clusterWide`` and ``nodeGroups`` with ``health``/``scaleUp``/``scaleDown``), rewritten when it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

import yaml

from ..cluster_profile import node_scaling_enabled
from ..context import SandboxContext
from ..fleet.models import IN_FLIGHT, ScalingGroup
from ..kube.errors import KubeError
from ..service import Service
from ..timings import resolve
from . import simulate as sim

if TYPE_CHECKING:
    from ..ack.service import AckService
    from ..fleet.service import FleetService
    from ..kube.api import KubeStore
    from ..kube.service import KubeService

log = logging.getLogger("sandbox.autoscaler")

COMPONENT = "cluster-autoscaler"
STATUS_CONFIGMAP = "cluster-autoscaler-status"
LAST_UPDATED = "cluster-autoscaler.kubernetes.io/last-updated"
NOT_TRIGGER_REPEAT = 300.0  # simulated seconds between identical NotTriggerScaleUp events on one pod
MAX_EMPTY_BULK = 10  # --max-empty-bulk-delete
MAX_BACKOFF = 1800.0  # upstream MaxNodeGroupBackoffDuration 30 min
CONDITION = "ClusterAutoscaler"
NODE_POOL_LABEL = "alibabacloud.com/nodepool-id"
INSTANCE_LABEL = "alibabacloud.com/ecs-instance-id"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"


def _unschedulable(pod: dict[str, Any]) -> bool:
    if (pod.get("spec") or {}).get("nodeName") or pod["metadata"].get("deletionTimestamp") or sim.is_terminal(pod):
        return False
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled":
            return c.get("status") == "False" and c.get("reason") == "Unschedulable"
    return False


def _ready(node: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


class AutoscalerService(Service):
    name = "autoscaler"

    def __init__(self, ctx: SandboxContext, kube: KubeService, fleet: FleetService, ack: AckService) -> None:
        super().__init__(ctx)
        self.kube = kube
        self.fleet = fleet
        self.ack = ack
        self.timings = resolve(ctx.options)
        self.unneeded_since: dict[str, float] = {}
        self.last_scale_up: dict[str, float] = {}
        self.last_scale_up_any: float | None = None
        self.backoff: dict[str, tuple[float, float]] = {}  # group -> (until, duration)
        self.scale_up_pods: dict[str, list[dict[str, Any]]] = {}  # group -> pods of its last scale-up
        self.conditions: dict[str, dict[str, Any]] = {}
        self._not_trigger: dict[str, tuple[str, float]] = {}
        # underutilized nodes a pod keeps: node -> (blocked since, or None while only this loop's plan blocks it;
        # group, upstream BlockingPodReason, message)
        self.unremovable: dict[str, tuple[float | None, str, str, str]] = {}
        self._status_written: tuple[str, float] | None = None

    @property
    def store(self) -> KubeStore:
        return self.kube.store

    # ---- lifecycle -----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if not node_scaling_enabled(self.ctx):
            # ACK's cluster-level node scaling is off (sandbox option ``node_scaling``): no autoscaler runs, so
            # auto-scaling pools keep their size and no status ConfigMap is written (sandbox.cluster_profile).
            log.info("node scaling is disabled for the cluster: the cluster-autoscaler does not run")
            return
        self.ack.add_pool_conditions(self.pool_conditions)
        self.spawn(self._run(), name="cluster-autoscaler")

    async def _run(self) -> None:
        clock = self.ctx.clock
        while True:
            try:
                self.scan()
            except Exception:  # noqa: BLE001 - the loop must survive a bad object
                log.exception("cluster-autoscaler scan failed")
            await asyncio.sleep(clock.real_seconds(self.timings["ca_scan"]))

    # ---- in-process API ------------------------------------------------------------------------------------------
    def pool_conditions(self, nodepool_id: str) -> list[dict[str, Any]]:
        """The ``ClusterAutoscaler`` condition of a node pool (ACK ``status.conditions`` item shape)."""
        c = self.conditions.get(nodepool_id)
        return [dict(c)] if c else []

    # ---- one scan ------------------------------------------------------------------------------------------------
    def scan(self) -> None:
        now = self.ctx.clock.now()
        groups = {g.pool_id: g for g in self.fleet.state.groups() if g.spec.auto_scaling and not g.deleting}
        nodes = self.store.list("nodes")
        # the stored objects, read-only and uncopied, through the store's indexes (upstream reads its informer
        # cache): the pods bound to a node and the unschedulable ones are all a scan looks at, and going over (or
        # copying) every pod per scan would cost the shared event loop more than the API server itself
        pods = [e.obj for e in self.store.indexed("pods", "spec.nodeName") + self.store.indexed("pods", "unschedulable")
                if not sim.is_terminal(e.obj)]
        instances = {i.instance_id: i for i in self.fleet.instances()}
        by_node: dict[str, list[dict[str, Any]]] = {}
        for p in pods:
            n = (p.get("spec") or {}).get("nodeName")
            if n:
                by_node.setdefault(n, []).append(p)

        real: list[sim.SimNode] = []
        registered: Counter[str] = Counter()
        node_names = {n["metadata"]["name"] for n in nodes}
        for n in nodes:
            labels = n["metadata"].get("labels") or {}
            inst = instances.get(labels.get(INSTANCE_LABEL, ""))
            if sim.has_taint(n, sim.TO_BE_DELETED_TAINT):
                continue
            if labels.get(INSTANCE_LABEL) and (inst is None or inst.status != "Running" or inst.reclaim_at):
                continue
            node = sim.strip_taints(n, [NOT_READY_TAINT]) if inst is not None else n
            sn = sim.SimNode(node, group=labels.get(NODE_POOL_LABEL))
            for p in by_node.get(n["metadata"]["name"], []):
                sn.add(p)
            real.append(sn)
            if sn.group:
                registered[sn.group] += 1

        changed = self._check_failed_scale_ups(groups, instances, nodes, now)
        if changed:
            groups = {g.pool_id: g for g in self.fleet.state.groups() if g.spec.auto_scaling and not g.deleting}
        upcoming = self._upcoming(groups, instances, registered, node_names)
        blocked_max: set[str] = set()
        scaled_up = self._scale_up(groups, pods, real, upcoming, blocked_max, now)
        pdbs = sim.PdbTracker(e.obj for e in self.store.indexed("poddisruptionbudgets", "namespace"))
        scaled_down = self._scale_down(groups, real, by_node, pdbs, now, cooldown=scaled_up)
        self._update_conditions(groups, blocked_max, scaled_down, now)
        self._write_status(groups, nodes, instances, registered, upcoming, now)

    # ---- upcoming nodes ------------------------------------------------------------------------------------------
    def _template(self, g: ScalingGroup, name: str, instance_type: str | None = None) -> dict[str, Any] | None:
        t = instance_type or sim.smallest_type(g.spec.instance_types)
        if t is None:
            return None
        ident = self.ctx.identity
        spot = g.spec.spot_strategy if g.spec.spot_strategy != "NoSpot" else "NoSpot"
        tmpl = g.spec.node_template or {}
        tmpl = {**tmpl, "nodepool_id": tmpl.get("nodepool_id") or g.pool_id}
        labels = sim.pool_template_labels(tmpl, ident.region, ident.cluster_id, spot)
        return sim.template_node(name, t, labels, sim.pool_template_taints(tmpl), bool(tmpl.get("unschedulable")))

    def _upcoming(self, groups: dict[str, ScalingGroup], instances: dict, registered: Counter,
                  node_names: set[str]) -> list[sim.SimNode]:
        region = self.ctx.identity.region
        out: list[sim.SimNode] = []
        for pid, g in sorted(groups.items()):
            n = max(0, g.desired - registered[pid])
            if n == 0:
                continue
            launching = [i for i in instances.values() if i.pool_id == pid and not i.reclaim_at and (
                i.status in IN_FLIGHT or (i.status == "Running" and f"{region}.{i.private_ip}" not in node_names))]
            types = [i.instance_type for i in launching][:n]
            types += [None] * (n - len(types))
            for k, t in enumerate(types):
                node = self._template(g, f"upcoming-{pid}-{k}", t)
                if node is not None:
                    out.append(sim.SimNode(node, group=pid, upcoming=True))
        return out

    # ---- scale-up ------------------------------------------------------------------------------------------------
    def _scale_up(self, groups: dict[str, ScalingGroup], pods: list, real: list[sim.SimNode],
                  upcoming: list[sim.SimNode], blocked_max: set[str], now: float) -> bool:
        pending = [p for p in pods if _unschedulable(p)]
        live_uids = {p["metadata"]["uid"] for p in pending}
        for uid in list(self._not_trigger):
            if uid not in live_uids:
                del self._not_trigger[uid]
        if not pending:
            return False
        pending.sort(key=lambda p: (-int((p.get("spec") or {}).get("priority") or 0),
                                    p["metadata"].get("creationTimestamp") or "", sim.pod_key(p)))
        snapshot = [n.copy() for n in real] + [n.copy() for n in upcoming]
        _, left = sim.place_first_fit(pending, snapshot)
        if not left:
            return False
        reasons: dict[str, Counter[str]] = {p["metadata"]["uid"]: Counter() for p in left}
        options: list[sim.Option] = []
        for pid, g in sorted(groups.items()):
            tmpl = self._template(g, f"template-node-for-{pid}")
            if tmpl is None:
                continue
            room = g.spec.max_size - g.desired
            in_backoff = self.backoff.get(pid, (0.0, 0.0))[0] > now
            probe = sim.SimNode(tmpl)
            fitting = []
            for pod in left:
                why = probe.reasons(pod)
                uid = pod["metadata"]["uid"]
                if why:
                    for r in why:
                        reasons[uid][r] += 1
                elif in_backoff:
                    reasons[uid]["in backoff after failed scale-up"] += 1
                elif room <= 0:
                    reasons[uid]["max node group size reached"] += 1
                    blocked_max.add(pid)
                else:
                    fitting.append(pod)
            if not fitting:
                continue

            def make(i: int, g: ScalingGroup = g, pid: str = pid) -> dict[str, Any]:
                return self._template(g, f"template-node-for-{pid}-{i}") or {}

            est = sim.binpack(fitting, make, room)
            if est.nodes:
                options.append(sim.Option(pid, est.nodes, est.scheduled, tmpl))
            for pod in est.unschedulable:
                if probe.fits(pod):
                    reasons[pod["metadata"]["uid"]]["max node group size reached"] += 1
                    blocked_max.add(pid)
        best = sim.least_waste(options)
        helped: set[str] = set()
        for o in options:
            helped |= {p["metadata"]["uid"] for p in o.pods}
        if best is not None:
            g = groups[best.group]
            new = min(g.spec.max_size, g.desired + best.node_count)
            self.fleet.set_desired(best.group, new)
            self.last_scale_up[best.group] = now
            self.last_scale_up_any = now
            self.scale_up_pods[best.group] = [p for p in best.pods]
            msg = sim.triggered_message([(best.group, g.desired, new, g.spec.max_size)])
            for pod in best.pods:
                self._event(pod, "Normal", "TriggeredScaleUp", msg)
                self._not_trigger.pop(pod["metadata"]["uid"], None)
            self._set_condition(best.group, "True", "ScaledUp",
                                f"cluster-autoscaler raised the desired size {g.desired}->{new} (max {g.spec.max_size}) "
                                f"for {len(best.pods)} unschedulable pod(s), e.g. {sim.pod_key(best.pods[0])}", now)
            self._status_event("Normal", "ScaledUpGroup",
                               f"Scale-up: setting group {best.group} size to {new} instead of {g.desired} "
                               f"(max: {g.spec.max_size})")
        for pod in left:
            uid = pod["metadata"]["uid"]
            if uid in helped:
                continue
            msg = sim.not_trigger_message(reasons[uid])
            last = self._not_trigger.get(uid)
            if last is None or last[0] != msg or now - last[1] >= NOT_TRIGGER_REPEAT:
                self._event(pod, "Normal", "NotTriggerScaleUp", msg)
                self._not_trigger[uid] = (msg, now)
        return best is not None

    def _check_failed_scale_ups(self, groups: dict[str, ScalingGroup], instances: dict, nodes: list,
                                now: float) -> bool:
        changed = False
        ready = {n["metadata"]["name"] for n in nodes if _ready(n)}
        region = self.ctx.identity.region
        for pid, g in groups.items():
            if pid not in self.last_scale_up:
                continue
            mine = [i for i in instances.values() if i.pool_id == pid]
            why = ""
            if g.shortfall is not None and g.shortfall.at >= self.last_scale_up[pid]:
                why = "; ".join(g.shortfall.notes) or "the scaling group could not launch instances"
                live = [i for i in mine if i.status in IN_FLIGHT + ("Running",)
                        and not (g.spec.spot_instance_remedy and i.reclaim_at)]
                if g.desired > len(live):
                    self.fleet.set_desired(pid, max(g.spec.min_size, len(live)))
                else:
                    why = ""
            else:
                late = [i.instance_id for i in mine if i.status in IN_FLIGHT + ("Running",) and not i.reclaim_at
                        and f"{region}.{i.private_ip}" not in ready
                        and now - i.created > self.timings["ca_max_node_provision"]]
                if late:
                    why = (f"{len(late)} instance(s) did not become Ready nodes within max-node-provision-time "
                           f"({int(self.timings['ca_max_node_provision'])}s)")
                    self.fleet.remove_instances(pid, late, reason=f"cluster-autoscaler: {why}")
            if not why:
                continue
            changed = True
            until, dur = self.backoff.get(pid, (0.0, 0.0))
            dur = min(MAX_BACKOFF, dur * 2) if until > now - MAX_BACKOFF and dur else self.timings["ca_backoff"]
            self.backoff[pid] = (now + dur, dur)
            del self.last_scale_up[pid]
            self._set_condition(pid, "False", "ScaleUpFailed",
                                f"scale-up failed: {why}; the node pool is backed off for {int(dur)}s", now)
            self._status_event("Warning", "FailedToScaleUpGroup", f"Scale-up of group {pid} failed: {why}")
            for pod in self.scale_up_pods.pop(pid, []):
                self._event(pod, "Warning", "FailedScaleUp",
                            f"Node scale up in node pool {pid} associated with this pod failed: {why}. "
                            "Pod is at risk of not being scheduled.")
        return changed

    # ---- scale-down ----------------------------------------------------------------------------------------------
    def _scale_down(self, groups: dict[str, ScalingGroup], real: list[sim.SimNode], by_node: dict,
                    pdbs: sim.PdbTracker, now: float, cooldown: bool) -> list[str]:
        threshold = self.timings["ca_scale_down_utilization_threshold"]
        dest = {n.name: n.copy() for n in real if not n.upcoming and _ready(n.node)
                and not (n.node.get("spec") or {}).get("unschedulable")}
        candidates = []
        for n in real:
            labels = n.node["metadata"].get("labels") or {}
            ann = n.node["metadata"].get("annotations") or {}
            if n.group not in groups or not _ready(n.node) or ann.get(sim.SCALE_DOWN_DISABLED) == "true":
                continue
            pods = by_node.get(n.name, [])
            util = sim.utilization(n.node, pods)
            if util >= threshold:
                continue
            candidates.append((util, n.name, labels.get(INSTANCE_LABEL, ""), n.group, pods))
        candidates.sort(key=lambda c: (c[0], c[1]))
        unneeded: dict[str, tuple] = {}
        unremovable: dict[str, tuple[float | None, str, str, str]] = {}
        for util, name, iid, group, pods in candidates:
            # upstream SimulateNodeRemoval: the drainability rules (PDBs against what this loop left of them) first,
            # then a place for every pod; a removable node uses up its pods' PDB budget (planner.categorizeNodes)
            block = sim.drain_block(pods, pdbs)
            if block is not None:
                reason, _, msg, planned = block
                old = self.unremovable.get(name)
                since = None if planned else (old[0] if old and old[0] is not None else now)
                unremovable[name] = (since, group, reason, msg)
                if old is None or old[3] != msg:
                    log.info("node %s cannot be removed: %s", name, msg)
                continue
            moving = sim.pods_to_move(pods)
            trial = {k: v.copy() for k, v in dest.items() if k != name and k not in unneeded}
            ok, _ = sim.can_move(moving, list(trial.values()))
            if ok:
                unneeded[name] = (util, iid, group, pods)
                dest = trial
                pdbs.remove(moving)
        self.unremovable = unremovable
        for name in list(self.unneeded_since):
            if name not in unneeded:
                del self.unneeded_since[name]
        for name in unneeded:
            self.unneeded_since.setdefault(name, now)
        if cooldown or (self.last_scale_up_any is not None
                        and now - self.last_scale_up_any < self.timings["ca_scale_down_delay_after_add"]):
            return []
        due = [(name, *unneeded[name]) for name in sorted(unneeded, key=lambda x: (self.unneeded_since[x], x))
               if now - self.unneeded_since[name] >= self.timings["ca_scale_down_unneeded"]]
        if not due:
            return []
        budget = {pid: max(0, g.desired - g.spec.min_size) for pid, g in groups.items()}
        empty = [d for d in due if not sim.pods_to_move(d[4])]
        chosen = []
        for d in empty if empty else due:
            if budget.get(d[3], 0) <= 0:
                continue
            budget[d[3]] -= 1
            chosen.append(d)
            if len(chosen) >= (MAX_EMPTY_BULK if empty else 1):
                break
        removed = []
        for name, util, iid, group, pods in chosen:
            if self._remove_node(name, util, iid, group, pods, now, empty=bool(empty)):
                removed.append(group)
                self.unneeded_since.pop(name, None)
        return removed

    def _remove_node(self, name: str, util: float, iid: str, group: str, pods: list, now: float,
                     empty: bool) -> bool:
        try:
            node = self.store.get("nodes", None, name)
            upd = copy.deepcopy(node)
            taints = [t for t in (upd.get("spec") or {}).get("taints") or [] if t.get("key") != sim.TO_BE_DELETED_TAINT]
            taints.append({"key": sim.TO_BE_DELETED_TAINT, "value": str(int(now)), "effect": "NoSchedule"})
            upd.setdefault("spec", {})["taints"] = taints
            self.store.update("nodes", upd, field_manager=COMPONENT)
        except KubeError as e:
            log.info("scale-down of %s skipped: %s", name, e)
            return False
        self._event(node, "Normal", "ScaleDown", "marked the node as toBeDeleted/unschedulable")
        moving = sim.pods_to_move(pods)
        for p in moving:
            m = p["metadata"]
            with contextlib.suppress(KubeError):
                self.store.delete("pods", m.get("namespace"), m["name"])
                self._event(p, "Normal", "ScaleDown", "deleting pod for node scale down")
        self.fleet.remove_instances(group, [iid], reason=f"cluster-autoscaler scale-down of node {name}")
        if empty:
            self._status_event("Normal", "ScaleDownEmpty", f"Scale-down: removing empty node {name}")
        else:
            self._status_event("Normal", "ScaleDown",
                               f"Scale-down: removing node {name}, utilization: {util:.2f}, pods to reschedule: "
                               + ",".join(sim.pod_key(p) for p in moving))
        self._set_condition(group, "True", "ScaledDown",
                            f"cluster-autoscaler removed node {name} ({iid}): unneeded for "
                            f"{int(self.timings['ca_scale_down_unneeded'])}s at utilization {util:.2f}", now)
        return True

    # ---- conditions, events, status ------------------------------------------------------------------------------
    def _set_condition(self, pid: str, status: str, reason: str, message: str, now: float) -> None:
        old = self.conditions.get(pid)
        since = old["last_transition_time"] if old and old["status"] == status and old["reason"] == reason \
            else self.ctx.clock.iso(now)
        self.conditions[pid] = {"type": CONDITION, "status": status, "reason": reason, "message": message,
                                "last_transition_time": since}

    def _update_conditions(self, groups: dict[str, ScalingGroup], blocked_max: set[str], scaled_down: list[str],
                           now: float) -> None:
        # nodes a pod has kept from removal for the unneeded window (they would be gone by now otherwise)
        blocked_down: dict[str, list[tuple[str, str, str]]] = {}
        for name, (since, group, reason, msg) in sorted(self.unremovable.items()):
            if since is not None and now - since >= self.timings["ca_scale_down_unneeded"]:
                blocked_down.setdefault(group, []).append((name, reason, msg))
        for pid, g in groups.items():
            cur = self.conditions.get(pid)
            acted = pid in scaled_down or self.last_scale_up.get(pid) == now
            if pid in blocked_max:
                self._set_condition(pid, "False", "MaxSizeReached",
                                    f"unschedulable pods fit this node pool but it is at its maximum size "
                                    f"({g.desired}/{g.spec.max_size}): raise auto_scaling.max_instances", now)
            elif self.backoff.get(pid, (0.0, 0.0))[0] > now:
                if cur is None or cur["reason"] != "ScaleUpFailed":
                    self._set_condition(pid, "False", "BackOff", "scale-up backed off after a failure", now)
            elif pid in blocked_down and not acted:
                name, reason, msg = blocked_down[pid][0]
                more = len(blocked_down[pid]) - 1
                self._set_condition(pid, "False", "ScaleDownBlocked",
                                    f"node {name} cannot be removed: {msg} ({reason}); underutilized for "
                                    f"{int(self.timings['ca_scale_down_unneeded'])}s or more"
                                    + (f"; {more} more node(s) of the pool blocked" if more else ""), now)
            elif cur is not None and cur["reason"] in ("MaxSizeReached", "BackOff", "ScaleUpFailed", "ScaleDownBlocked"):
                self._set_condition(pid, "True", "Idle",
                                    f"no pending pod needs this node pool; size {g.desired} "
                                    f"(min {g.spec.min_size}, max {g.spec.max_size})", now)
        for pid in list(self.conditions):
            if pid not in groups:
                del self.conditions[pid]

    def _event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        with contextlib.suppress(KubeError):
            self.kube.events.record(obj, type_, reason, message, component=COMPONENT)

    def _status_event(self, type_: str, reason: str, message: str) -> None:
        cm = self.store.try_get("configmaps", "kube-system", STATUS_CONFIGMAP)
        if cm is not None:
            self._event(cm, type_, reason, message)

    def _write_status(self, groups: dict[str, ScalingGroup], nodes: list, instances: dict, registered: Counter,
                      upcoming: list[sim.SimNode], now: float) -> None:
        iso = self.ctx.clock.iso(now)
        ready = sum(1 for n in nodes if _ready(n))
        in_progress = bool(upcoming)
        node_groups = []
        for pid, g in sorted(groups.items()):
            n_ready = sum(1 for n in nodes if _ready(n)
                          and (n["metadata"].get("labels") or {}).get(NODE_POOL_LABEL) == pid)
            backoff = self.backoff.get(pid, (0.0, 0.0))[0] > now
            up = "Backoff" if backoff else ("InProgress" if any(u.group == pid for u in upcoming) else "NoActivity")
            cands = sum(1 for name in self.unneeded_since
                        if any((n["metadata"].get("labels") or {}).get(NODE_POOL_LABEL) == pid
                               and n["metadata"]["name"] == name for n in nodes))
            node_groups.append({
                "name": pid,
                "health": {"status": "Healthy", "nodeCounts": {
                    "registered": {"total": registered[pid], "ready": n_ready,
                                   "notStarted": registered[pid] - n_ready}},
                    "cloudProviderTarget": g.desired, "minSize": g.spec.min_size, "maxSize": g.spec.max_size},
                "scaleUp": {"status": up},
                "scaleDown": {"status": "CandidatesPresent" if cands else "NoCandidates", "candidates": cands},
            })
        body = {
            "autoscalerStatus": "Running",
            "clusterWide": {
                "health": {"status": "Healthy", "nodeCounts": {"registered": {
                    "total": len(nodes), "ready": ready, "notStarted": len(nodes) - ready}}},
                "scaleUp": {"status": "InProgress" if in_progress else "NoActivity"},
                "scaleDown": {"status": "CandidatesPresent" if self.unneeded_since else "NoCandidates",
                              "candidates": len(self.unneeded_since)},
            },
            "nodeGroups": node_groups,
        }
        text = yaml.safe_dump(body, sort_keys=False)
        if self._status_written and self._status_written[0] == text and now - self._status_written[1] < 60:
            return
        doc = {"time": iso, **body}
        cm = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": STATUS_CONFIGMAP, "namespace": "kube-system", "annotations": {LAST_UPDATED: iso}},
              "data": {"status": yaml.safe_dump(doc, sort_keys=False)}}
        try:
            cur = self.store.try_get("configmaps", "kube-system", STATUS_CONFIGMAP)
            if cur is None:
                self.store.create("configmaps", cm, namespace="kube-system", field_manager=COMPONENT)
            else:
                cur["data"] = cm["data"]
                cur["metadata"].setdefault("annotations", {})[LAST_UPDATED] = iso
                cur["metadata"].pop("resourceVersion", None)
                self.store.update("configmaps", cur, field_manager=COMPONENT)
            self._status_written = (text, now)
        except KubeError as e:
            log.debug("status configmap: %s", e)
