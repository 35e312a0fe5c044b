"""The Deployment controller (``deployment-controller``), after ``pkg/controller/deployment`` (``sync.go``,
``rolling.go``, ``recreate.go``, ``progress.go``, ``util/deployment_util.go``).

- The new ReplicaSet is the owned one whose template equals the Deployment's ignoring ``pod-template-hash``
  (``EqualIgnoreHash``); when none exists it is created as ``<deployment>-<pod-template-hash>`` with the hash label
  in its selector and template, annotations ``deployment.kubernetes.io/revision`` (max old revision + 1),
  ``desired-replicas`` and ``max-replicas``. The hash is ``controller.ComputeHash``'s shape: FNV-32a over the
  template (here its canonical JSON rather than Go's spew dump) and the ``collisionCount``, the decimal digits
  mapped through ``rand.SafeEncodeString``'s alphabet (so names look like upstream's ``7d948bd89d``); a name taken
  by a ReplicaSet with another template bumps ``status.collisionCount``.
- RollingUpdate: ``maxSurge`` (percent rounded up) and ``maxUnavailable`` (rounded down; both 0 -> 1). Scale up the
  new RS to ``min(replicas + maxSurge - all RS replicas, replicas - new)`` (``NewRSNewReplicas``); scale down old
  ones: first their unhealthy replicas, then available ones while ``available > replicas - maxUnavailable``
  (``reconcileOldReplicaSets``). Recreate: old ReplicaSets to 0, wait until their pods are gone, then the new RS
  to ``replicas``. ``paused`` Deployments are only scaled. Old ReplicaSets at 0 beyond ``revisionHistoryLimit``
  are deleted.
- Events ``ScalingReplicaSet``: "Scaled up replica set X from 0 to N" / "Scaled down replica set X from A to B".
- Status: replicas, updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas, observedGeneration,
  collisionCount, conditions ``Available`` (MinimumReplicasAvailable / MinimumReplicasUnavailable: available >=
  replicas - maxUnavailable) and ``Progressing`` (NewReplicaSetCreated, FoundNewReplicaSet, ReplicaSetUpdated,
  NewReplicaSetAvailable, ProgressDeadlineExceeded after ``progressDeadlineSeconds`` without progress).
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from ..kube.errors import KubeError
from .base import Controller, owned_by
from .util import condition, ts

COMPONENT = "deployment-controller"
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand SafeEncodeString


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: dict[str, Any], collision_count: int | None = None) -> str:
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += int(collision_count).to_bytes(8, "little")
    return "".join(_SAFE[b % len(_SAFE)] for b in str(_fnv32a(data)).encode())


def _strip_hash(template: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(template or {})
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return t


def _int_or_percent(v: Any, total: int, round_up: bool) -> int:
    if isinstance(v, str) and v.endswith("%"):
        frac = float(v[:-1]) * total / 100.0
        return math.ceil(frac) if round_up else math.floor(frac)
    return int(v or 0)


def surge_and_unavailable(d: dict[str, Any]) -> tuple[int, int]:
    spec = d.get("spec") or {}
    replicas = int(spec.get("replicas", 1) or 0)
    strat = spec.get("strategy") or {}
    if strat.get("type") == "Recreate":
        return 0, replicas
    ru = strat.get("rollingUpdate") or {}
    surge = _int_or_percent(ru.get("maxSurge", "25%"), replicas, True)
    unavailable = _int_or_percent(ru.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def _revision(rs: dict[str, Any]) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _replicas(rs: dict[str, Any]) -> int:
    return int((rs.get("spec") or {}).get("replicas", 0) or 0)


def _st(rs: dict[str, Any] | None, key: str) -> int:
    return int(((rs or {}).get("status") or {}).get(key, 0) or 0)


class DeploymentController(Controller):
    name = COMPONENT
    topics = ("kube/deployments.apps", "kube/replicasets.apps", "kube/pods")

    def reconcile(self) -> float | None:
        return self.reconcile_each("deployments", self._sync)

    # ---- one deployment -----------------------------------------------------------------------------------------
    def _sync(self, d: dict[str, Any], now: float) -> float | None:
        m = d["metadata"]
        if m.get("deletionTimestamp"):
            return None
        spec = d.get("spec") or {}
        ns = m.get("namespace") or "default"
        rss = [rs for rs in self.owned("replicasets", d) if not rs["metadata"].get("deletionTimestamp")]
        rss.sort(key=lambda r: (r["metadata"].get("creationTimestamp") or "", r["metadata"]["name"]))
        tmpl = spec.get("template") or {}
        new_rs = next((rs for rs in rss if _strip_hash((rs.get("spec") or {}).get("template")) == _strip_hash(tmpl)),
                      None)
        old = [rs for rs in rss if rs is not new_rs]
        replicas = int(spec.get("replicas", 1) or 0)
        surge, max_unavailable = surge_and_unavailable(d)
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        created_now = False
        collision = int((d.get("status") or {}).get("collisionCount") or 0)
        if new_rs is None and not spec.get("paused"):
            if recreate:
                initial = 0 if any(_replicas(r) or _st(r, "replicas") for r in old) else replicas
            else:
                total = sum(_replicas(r) for r in old)
                initial = max(0, min(replicas + surge - total, replicas)) if old else replicas
            new_rs, collision = self._create_rs(d, old, initial, surge, collision)
            if new_rs is None:
                return self._status(d, None, old, now, max_unavailable, collision, False)
            created_now = True
            rss.append(new_rs)
        elif new_rs is not None:
            new_rs = self._ensure_revision(d, new_rs, old, surge)
        if new_rs is not None:
            self._ensure_deployment_revision(d, new_rs)
        if spec.get("paused"):
            if new_rs is not None and not old:
                new_rs = self._scale(d, new_rs, replicas, surge)
        elif recreate:
            for i, r in enumerate(old):
                if _replicas(r):
                    old[i] = self._scale(d, r, 0, surge)
            old_pods = any((p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                           for p in self.indexed("pods", "controller", [r["metadata"]["uid"] for r in old])
                           if (p["metadata"].get("namespace") or "default") == ns)
            if new_rs is not None and not old_pods and _replicas(new_rs) != replicas:
                new_rs = self._scale(d, new_rs, replicas, surge)
        elif new_rs is not None:
            new_rs = self._rolling(d, new_rs, old, replicas, surge, max_unavailable)
        self._cleanup(d, old)
        return self._status(d, new_rs, old, now, max_unavailable, collision, created_now)

    def _rolling(self, d: dict[str, Any], new_rs: dict[str, Any], old: list[dict[str, Any]], replicas: int,
                 surge: int, max_unavailable: int) -> dict[str, Any]:
        cur = _replicas(new_rs)
        if cur > replicas:
            new_rs = self._scale(d, new_rs, replicas, surge)
        elif cur < replicas:
            total = _replicas(new_rs) + sum(_replicas(r) for r in old)
            room = replicas + surge - total
            if room > 0:
                new_rs = self._scale(d, new_rs, cur + min(room, replicas - cur), surge)
        # reconcileOldReplicaSets
        active_old = [r for r in old if _replicas(r) > 0]
        if not active_old:
            return new_rs
        all_pods = _replicas(new_rs) + sum(_replicas(r) for r in old)
        min_available = replicas - max_unavailable
        new_unavailable = _replicas(new_rs) - _st(new_rs, "availableReplicas")
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return new_rs
        # cleanupUnhealthyReplicas: old replicas that are not available go first, oldest RS first
        for i, r in enumerate(old):
            if max_scaled_down <= 0:
                break
            unhealthy = _replicas(r) - _st(r, "availableReplicas")
            if unhealthy <= 0:
                continue
            down = min(max_scaled_down, unhealthy)
            old[i] = self._scale(d, r, _replicas(r) - down, surge)
            max_scaled_down -= down
        # scaleDownOldReplicaSetsForRollingUpdate
        available = _st(new_rs, "availableReplicas") + sum(_st(r, "availableReplicas") for r in old)
        total_down = min(available - min_available, max_scaled_down)
        for i, r in enumerate(old):
            if total_down <= 0:
                break
            if _replicas(r) == 0:
                continue
            down = min(_replicas(r), total_down)
            old[i] = self._scale(d, r, _replicas(r) - down, surge)
            total_down -= down
        return new_rs

    # ---- replica sets -------------------------------------------------------------------------------------------
    def _create_rs(self, d: dict[str, Any], old: list[dict[str, Any]], replicas: int, surge: int,
                   collision: int) -> tuple[dict[str, Any] | None, int]:
        m, spec = d["metadata"], d.get("spec") or {}
        for _ in range(5):
            h = template_hash(spec.get("template") or {}, collision or None)
            name = f"{m['name']}-{h}"
            tmpl = copy.deepcopy(spec.get("template") or {})
            tmpl.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
            selector = copy.deepcopy(spec.get("selector") or {})
            selector.setdefault("matchLabels", {})[HASH_LABEL] = h
            revision = max((_revision(r) for r in old), default=0) + 1
            rs = {
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {
                    "name": name, "namespace": m.get("namespace"),
                    "labels": dict(tmpl["metadata"]["labels"]),
                    "annotations": {REVISION: str(revision), DESIRED: str(spec.get("replicas", 1)),
                                    MAX_REPLICAS: str(int(spec.get("replicas", 1) or 0) + surge)},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": m["name"],
                                         "uid": m["uid"], "controller": True, "blockOwnerDeletion": True}],
                },
                "spec": {"replicas": replicas, "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                         "selector": selector, "template": tmpl},
            }
            try:
                created = self.store.create("replicasets", rs, m.get("namespace"),
                                            field_manager="kube-controller-manager")
            except KubeError as e:
                if e.code != 409:
                    self.event(d, "Warning", "FailedCreate", f"Failed to create new replica set {name!r}: "
                               f"{e.message}", COMPONENT)
                    return None, collision
                existing = self.store.try_get("replicasets", m.get("namespace"), name)
                if existing is not None and owned_by(existing, m["uid"]) and \
                        _strip_hash((existing.get("spec") or {}).get("template")) == _strip_hash(spec.get("template")):
                    return existing, collision
                collision += 1
                continue
            if replicas > 0:
                self.event(d, "Normal", "ScalingReplicaSet", f"Scaled up replica set {name} from 0 to {replicas}",
                           COMPONENT)
            return created, collision
        return None, collision

    def _ensure_revision(self, d: dict[str, Any], new_rs: dict[str, Any], old: list[dict[str, Any]],
                         surge: int) -> dict[str, Any]:
        want = max((_revision(r) for r in old), default=0)
        if _revision(new_rs) > want:
            return new_rs
        upd = copy.deepcopy(new_rs)
        upd["metadata"].setdefault("annotations", {})[REVISION] = str(want + 1)
        return self.store.update("replicasets", upd, field_manager="kube-controller-manager")

    def _ensure_deployment_revision(self, d: dict[str, Any], new_rs: dict[str, Any]) -> None:
        rev = str(_revision(new_rs))
        if (d["metadata"].get("annotations") or {}).get(REVISION) == rev:
            return
        self.store.patch("deployments", d["metadata"].get("namespace"), d["metadata"]["name"],
                         {"metadata": {"annotations": {REVISION: rev}}}, "merge",
                         field_manager="kube-controller-manager")

    def _scale(self, d: dict[str, Any], rs: dict[str, Any], n: int, surge: int) -> dict[str, Any]:
        spec = d.get("spec") or {}
        cur = _replicas(rs)
        ann = rs["metadata"].get("annotations") or {}
        want_ann = {DESIRED: str(spec.get("replicas", 1)), MAX_REPLICAS: str(int(spec.get("replicas", 1) or 0) + surge)}
        if cur == n and all(ann.get(k) == v for k, v in want_ann.items()):
            return rs
        upd = copy.deepcopy(rs)
        upd["spec"]["replicas"] = n
        upd["metadata"].setdefault("annotations", {}).update(want_ann)
        out = self.store.update("replicasets", upd, field_manager="kube-controller-manager")
        if cur != n:
            verb = "up" if n > cur else "down"
            self.event(d, "Normal", "ScalingReplicaSet", f"Scaled {verb} replica set {rs['metadata']['name']} "
                       f"from {cur} to {n}", COMPONENT)
        return out

    def _cleanup(self, d: dict[str, Any], old: list[dict[str, Any]]) -> None:
        limit = (d.get("spec") or {}).get("revisionHistoryLimit", 10)
        if limit is None:
            return
        dead = [r for r in old if _replicas(r) == 0 and _st(r, "replicas") == 0]
        dead.sort(key=_revision)
        for r in dead[:max(0, len(dead) - int(limit))]:
            try:
                self.store.delete("replicasets", r["metadata"].get("namespace"), r["metadata"]["name"])
            except KubeError:
                continue

    # ---- status -------------------------------------------------------------------------------------------------
    def _status(self, d: dict[str, Any], new_rs: dict[str, Any] | None, old: list[dict[str, Any]],
                now: float, max_unavailable: int, collision: int, created_now: bool) -> float | None:
        spec = d.get("spec") or {}
        replicas = int(spec.get("replicas", 1) or 0)
        all_rs = ([new_rs] if new_rs else []) + old
        status: dict[str, Any] = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": sum(_st(r, "replicas") for r in all_rs),
            "updatedReplicas": _st(new_rs, "replicas"),
            "readyReplicas": sum(_st(r, "readyReplicas") for r in all_rs),
            "availableReplicas": sum(_st(r, "availableReplicas") for r in all_rs),
        }
        status["unavailableReplicas"] = max(0, sum(_replicas(r) for r in all_rs) - status["availableReplicas"])
        if collision:
            status["collisionCount"] = collision
        old_status = d.get("status") or {}
        now_iso = self.clock.iso(now)
        conds = [dict(c) for c in old_status.get("conditions") or []]
        avail_ok = status["availableReplicas"] >= replicas - max_unavailable
        conds = _set(conds, "Available", "True" if avail_ok else "False",
                     "MinimumReplicasAvailable" if avail_ok else "MinimumReplicasUnavailable",
                     "Deployment has minimum availability." if avail_ok
                     else "Deployment does not have minimum availability.", now_iso, touch=False)
        due = None
        name = new_rs["metadata"]["name"] if new_rs else ""
        progressing = condition({"status": {"conditions": conds}}, "Progressing")
        complete = new_rs is not None and status["updatedReplicas"] == replicas and \
            status["replicas"] == replicas and status["availableReplicas"] == replicas and \
            _replicas(new_rs) == replicas and not any(_replicas(r) for r in old)
        changed_counts = any(status.get(k, 0) != old_status.get(k, 0) for k in
                             ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"))
        deadline = spec.get("progressDeadlineSeconds")
        if spec.get("paused") or new_rs is None:
            pass
        elif complete:
            conds = _set(conds, "Progressing", "True", "NewReplicaSetAvailable",
                         f'ReplicaSet "{name}" has successfully progressed.', now_iso,
                         touch=(progressing or {}).get("reason") != "NewReplicaSetAvailable")
        elif created_now:
            conds = _set(conds, "Progressing", "True", "NewReplicaSetCreated", f'Created new replica set "{name}"',
                         now_iso, touch=True)
        elif progressing is None:
            conds = _set(conds, "Progressing", "True", "FoundNewReplicaSet", f'Found new replica set "{name}"',
                         now_iso, touch=True)
        elif changed_counts or ((progressing.get("reason") == "NewReplicaSetAvailable") and not complete):
            conds = _set(conds, "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{name}" is progressing.',
                         now_iso, touch=True)
        elif deadline is not None and progressing.get("reason") != "ProgressDeadlineExceeded":
            last = ts(progressing.get("lastUpdateTime"))
            deadline = float(deadline) * self.timings["pod_seconds"]  # a bound on its pods' progress: their seconds
            if now >= last + deadline:
                conds = _set(conds, "Progressing", "False", "ProgressDeadlineExceeded",
                             f'ReplicaSet "{name}" has timed out progressing.', now_iso, touch=True)
            else:
                due = last + deadline
        order = {"Available": 0, "Progressing": 1}
        conds.sort(key=lambda c: order.get(c.get("type"), 2))
        status["conditions"] = conds
        for k in ("readyReplicas", "availableReplicas", "unavailableReplicas", "updatedReplicas", "replicas"):
            if status.get(k) == 0:
                status.pop(k)
        if status != old_status:
            new = copy.deepcopy(d)
            new["status"] = status
            self.store.update_status("deployments", new, field_manager=COMPONENT)
        return due


def _set(conds: list[dict[str, Any]], typ: str, status: str, reason: str, message: str, now_iso: str,
         touch: bool) -> list[dict[str, Any]]:
    out, found = [], False
    for c in conds:
        if c.get("type") != typ:
            out.append(c)
            continue
        found = True
        if c.get("status") == status and c.get("reason") == reason and c.get("message") == message and not touch:
            out.append(c)
            continue
        out.append({"type": typ, "status": status, "lastUpdateTime": now_iso,
                    "lastTransitionTime": c.get("lastTransitionTime", now_iso) if c.get("status") == status
                    else now_iso, "reason": reason, "message": message})
    if not found:
        out.append({"type": typ, "status": status, "lastUpdateTime": now_iso, "lastTransitionTime": now_iso,
                    "reason": reason, "message": message})
    return out
