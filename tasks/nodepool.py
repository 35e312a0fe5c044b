"""Step 1: the elastic node pool on ACK.

Pure functions render the CreateClusterNodePool body from :class:`core.spec.NodePoolSpec`, compare it with what
ACK reports (drift), and render the ModifyClusterNodePool body; two thin Prefect tasks apply them:
:func:`ensure_node_pool` and :func:`delete_node_pool`.

Body shape: ``alibabacloud_cs20151215/models/_create_cluster_node_pool_request.py`` (``nodepool_info``,
``scaling_group`` with ``spot_price_limit`` a list of ``{instance_type, price_limit}`` where ``price_limit`` is a
STRING, ``auto_scaling``, ``kubernetes_config`` with ``labels``/``taints`` lists of ``{key, value[, effect]}``).

Drift policy (a pool with the spec's name exists but differs from the spec):

* Fields ModifyClusterNodePool changes in place (``models/_modify_cluster_node_pool_request.py``) are updated and
  reported in ``NodePoolResult.updated_fields``: auto scaling ``enable``/``min_instances``/``max_instances``;
  scaling group ``instance_types``, ``vswitch_ids``, ``instance_charge_type``, ``spot_strategy``,
  ``spot_price_limit``, ``spot_instance_pools``, ``spot_instance_remedy``, ``on_demand_base_capacity``,
  ``on_demand_percentage_above_base_capacity``, ``compensate_with_on_demand``, ``multi_az_policy``,
  ``system_disk_category``, ``system_disk_size``, ``security_group_ids``, ``key_pair``; node ``labels`` and
  ``taints`` (sent with ``update_nodes: true`` so nodes that already exist get them too: the serving pods
  select on these labels). Changes apply to instances created from then on; running instances keep their type
  and billing.
* Fields that cannot change in place are refused before any change is made, with an error naming each field,
  both values, and the two ways forward (a new pool name, or deleting the pool): ``nodepool_info.type``,
  ``auto_scaling.type`` (immutable after creation per the SDK documentation) and ``kubernetes_config.runtime``
  (a container runtime change is a node pool upgrade, UpgradeClusterNodepool, which replaces nodes; not a
  modification this step makes behind the user's back).
* ``login_password`` is write-only (ACK never returns it): it is not compared and never re-sent.

Under a live version (a pool the pods of the version that serves run on, ``live_nodepool_ids``), a change that
would move, evict or hold back those pods is refused before anything is changed, naming each field
(:func:`disruptive_changes`); the other changes are applied and logged as such. What disrupts, on ACK:

* ``kubernetes_config.taints``: a taint added with ``update_nodes`` lands on the running nodes; ``NoExecute``
  evicts the pods that do not tolerate it, ``NoSchedule`` keeps every new pod of the live version (scale-out, a
  restarted or rescheduled pod) off the pool (ACK "Manage node labels and taints": effects table; Kubernetes
  "Taints and Tolerations"). ``PreferNoSchedule`` is soft and a removed taint only lets more pods in: neither
  disrupts.
* ``kubernetes_config.labels``: a label removed or given another value on the running nodes (``update_nodes``:
  "Specifies whether to synchronously update node labels and taints", ModifyClusterNodePool) no longer matches
  the live pods' node selector, so their new replicas cannot be placed on the pool (a running pod stays:
  ``requiredDuringSchedulingIgnoredDuringExecution``). A label added does not disrupt.
* ``auto_scaling.max_instances`` lowered: it caps the live version's scale-out, and below the pool's current
  nodes ESS removes instances at once (ESS ModifyScalingGroup: "If you modify MaxSize, and the number of
  instances exceeds the new MaxSize, Auto Scaling automatically removes instances"; the SDK's
  ``min_instances`` doc: "Set the maximum number of instances to a value that is not less than the current number
  of nodes in the node pool. Otherwise, nodes in the node pool are scaled in").
* Not disruptive: ``min_instances`` (raised: ESS adds instances; lowered: nodes leave only through the
  autoscaler's usual scale-in), and every ``scaling_group`` field (instance types, vSwitches, billing and spot
  settings, disks, security groups, key pair): they shape the instances ESS creates from then on, and running
  instances keep theirs (the SDK on ``deployment_set_id``: "takes effect only for new nodes. ... existing nodes
  is not changed"; ACK "Create and manage node pools", Edit).
* A field the spec sets but ACK does not report is "unknown": not treated as drift, logged as a warning.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from blocks.alibaba import AlibabaCloudCredentials
from clients.ack import REDACTED, AckApi, AckApiError, NodePool, TaskInfo, with_retries
from clients.logs import run_logger
from clients.waiting import poll_until
from core.spec import NodePoolSpec

# --- rendering (pure) ---------------------------------------------------------------------------------------------


def _price(value: float) -> str:
    """``price_limit`` is a string in the SDK model; render floats without a trailing ``.0`` (``0.5``, ``2``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def render_create_nodepool_request(spec: NodePoolSpec) -> dict[str, Any]:
    """The exact CreateClusterNodePool body for ``spec`` (the login password, if any, in clear: see :func:`redacted`).

    ``billing: on-demand`` renders ``spot_strategy: NoSpot`` and leaves out every spot and mix setting (with no
    spot in the scaling configuration every instance is pay-as-you-go). ``spot_price_limit`` is sent only with
    ``SpotWithPriceLimit``: ACK ignores it otherwise. ``desired_size`` is left out: it is for pools without auto
    scaling, and this pool always scales automatically between ``min_instances`` and ``max_instances``.
    """
    spot = spec.billing == "spot"
    scaling_group: dict[str, Any] = {
        "instance_types": list(spec.instance_types),
        "vswitch_ids": list(spec.vswitch_ids),
        "instance_charge_type": "PostPaid",
        "spot_strategy": spec.spot_strategy if spot else "NoSpot",
        "multi_az_policy": spec.multi_az_policy,
        "system_disk_category": spec.system_disk_category,
        "system_disk_size": spec.system_disk_size,
    }
    if spot:
        if spec.spot_strategy == "SpotWithPriceLimit":
            scaling_group["spot_price_limit"] = [
                {"instance_type": p.instance_type, "price_limit": _price(p.price_limit)}
                for p in spec.spot_price_limits
            ]
        scaling_group.update(
            spot_instance_pools=spec.spot_instance_pools,
            spot_instance_remedy=spec.spot_instance_remedy,
            on_demand_base_capacity=spec.on_demand_base_capacity,
            on_demand_percentage_above_base_capacity=spec.on_demand_percentage_above_base,
            compensate_with_on_demand=spec.compensate_with_on_demand,
        )
    if spec.security_group_ids:
        scaling_group["security_group_ids"] = list(spec.security_group_ids)
    if spec.key_pair:
        scaling_group["key_pair"] = spec.key_pair
    elif spec.login_password is not None:
        scaling_group["login_password"] = spec.login_password.get_secret_value()
    return {
        "nodepool_info": {"name": spec.name, "type": "ess"},
        "scaling_group": scaling_group,
        "auto_scaling": {
            "enable": True,
            "min_instances": spec.min_instances,
            "max_instances": spec.max_instances,
            "type": spec.auto_scaling_type,
        },
        "kubernetes_config": {
            "labels": [{"key": k, "value": v} for k, v in spec.labels.items()],
            "taints": [{"key": t.key, "value": t.value, "effect": t.effect} for t in spec.taints],
            "runtime": spec.runtime,
        },
    }


def redacted(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of a request body fit for logs and reports: every ``login_password`` replaced by ``******``."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (REDACTED if k == "login_password" and v else walk(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(copy.deepcopy(body))


# --- drift (pure) -------------------------------------------------------------------------------------------------
MUTABLE_FIELDS: tuple[tuple[str, str], ...] = (
    ("auto_scaling", "enable"),
    ("auto_scaling", "min_instances"),
    ("auto_scaling", "max_instances"),
    ("scaling_group", "instance_types"),
    ("scaling_group", "vswitch_ids"),
    ("scaling_group", "instance_charge_type"),
    ("scaling_group", "spot_strategy"),
    ("scaling_group", "spot_price_limit"),
    ("scaling_group", "spot_instance_pools"),
    ("scaling_group", "spot_instance_remedy"),
    ("scaling_group", "on_demand_base_capacity"),
    ("scaling_group", "on_demand_percentage_above_base_capacity"),
    ("scaling_group", "compensate_with_on_demand"),
    ("scaling_group", "multi_az_policy"),
    ("scaling_group", "system_disk_category"),
    ("scaling_group", "system_disk_size"),
    ("scaling_group", "security_group_ids"),
    ("scaling_group", "key_pair"),
    ("kubernetes_config", "labels"),
    ("kubernetes_config", "taints"),
)
IMMUTABLE_FIELDS: tuple[tuple[str, str], ...] = (
    ("nodepool_info", "type"),
    ("auto_scaling", "type"),
    ("kubernetes_config", "runtime"),
)
WRITE_ONLY_FIELDS: tuple[tuple[str, str], ...] = (("scaling_group", "login_password"),)


class FieldChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: str = Field(
        description="Dotted path in the CreateClusterNodePool body, e.g. auto_scaling.max_instances"
    )
    desired: Any = Field(description="What the spec asks for (normalized)")
    actual: Any = Field(description="What ACK reports (normalized)")


class NodePoolDrift(BaseModel):
    """How an existing pool differs from the spec."""

    mutable: list[FieldChange] = Field(
        default_factory=list, description="Changed in place by ModifyClusterNodePool"
    )
    immutable: list[FieldChange] = Field(default_factory=list, description="Cannot change in place: refused")
    unknown: list[str] = Field(default_factory=list, description="Set by the spec, not reported by ACK")

    @property
    def in_sync(self) -> bool:
        return not self.mutable and not self.immutable


def _normalize(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field == "labels":
        return {str(i.get("key")): str(i.get("value", "")) for i in value or []}
    if field == "taints":
        return sorted(
            (str(t.get("key")), str(t.get("value") or ""), str(t.get("effect") or "NoSchedule"))
            for t in value or []
        )
    if field == "spot_price_limit":
        return {str(i.get("instance_type")): float(i.get("price_limit")) for i in value or []}
    if field == "security_group_ids":
        return sorted(value)
    if field in ("instance_types", "vswitch_ids"):
        return list(value)  # order is ESS priority order
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value) if float(value).is_integer() else float(value)
    if isinstance(value, str) and value.lower() in ("true", "false") and field not in ("type", "runtime"):
        return value.lower() == "true"
    return value


def _display(field: str, value: Any) -> Any:
    if field == "taints" and value is not None:
        return [f"{k}={v}:{e}" for k, v, e in value]
    return value


def diff_node_pool(desired: dict[str, Any], actual: NodePool | dict[str, Any]) -> NodePoolDrift:
    """Compare a rendered create body with a DescribeClusterNodePoolDetail answer. Only fields the body sets count."""
    have = actual.raw() if isinstance(actual, NodePool) else actual
    drift = NodePoolDrift()
    for fields, bucket in ((MUTABLE_FIELDS, drift.mutable), (IMMUTABLE_FIELDS, drift.immutable)):
        for section, name in fields:
            if name not in (desired.get(section) or {}):
                continue
            path = f"{section}.{name}"
            want = _normalize(name, desired[section][name])
            got_raw = (have.get(section) or {}).get(name)
            if got_raw is None:
                drift.unknown.append(path)
                continue
            got = _normalize(name, got_raw)
            if want != got:
                bucket.append(
                    FieldChange(field=path, desired=_display(name, want), actual=_display(name, got))
                )
    return drift


def render_modify_request(desired: dict[str, Any], drift: NodePoolDrift) -> dict[str, Any]:
    """The partial ModifyClusterNodePool body that brings the pool to ``desired`` for the mutable changes.

    Auto scaling limits travel together (``enable``, ``min_instances``, ``max_instances``) so the server checks
    ``min <= max`` against the new pair; labels and taints are whole lists (they replace the pool's) with
    ``update_nodes: true``; scaling group fields are sent one by one. Never a password, never an immutable field.
    """
    body: dict[str, Any] = {}
    for change in drift.mutable:
        section, name = change.field.split(".", 1)
        if section == "auto_scaling":
            body["auto_scaling"] = {
                k: desired["auto_scaling"][k] for k in ("enable", "min_instances", "max_instances")
            }
        else:
            body.setdefault(section, {})[name] = copy.deepcopy(desired[section][name])
            if section == "kubernetes_config":
                body["update_nodes"] = True
    return body


class Disruption(BaseModel):
    """A change to a pool that a live version runs on, and what it would do to that version."""

    model_config = ConfigDict(frozen=True)

    field: str
    actual: Any
    desired: Any
    why: str


def disruptive_changes(drift: NodePoolDrift, nodes: int) -> list[Disruption]:
    """Which of ``drift``'s in-place changes would move, evict or hold back pods already on the pool (of
    ``nodes`` nodes now); see the module doc for the rules and their sources."""
    out: list[Disruption] = []
    for c in drift.mutable:
        why = ""
        if c.field == "auto_scaling.max_instances" and c.desired < c.actual:
            why = "lowered: caps how far the live version scales out"
            if c.desired < nodes:
                why += f"; below the pool's {nodes} nodes, ESS removes instances at once"
        elif c.field == "kubernetes_config.labels":
            have, want = c.actual or {}, c.desired or {}
            gone = sorted(k for k in have if k not in want or want[k] != have[k])
            if gone:
                why = (f"label(s) {', '.join(gone)} removed or changed on the running nodes: the live version's "
                       "pods select the pool by its labels, its new replicas would not be placed")
        elif c.field == "kubernetes_config.taints":
            added = [t for t in c.desired or [] if t not in (c.actual or []) and not t.endswith(":PreferNoSchedule")]
            evict = [t for t in added if t.endswith(":NoExecute")]
            if evict:
                why = f"taint(s) {', '.join(evict)} on the running nodes evict the live version's pods"
            elif added:
                why = (f"taint(s) {', '.join(added)} on the running nodes keep the live version's new replicas "
                       "off the pool")
        if why:
            out.append(Disruption(field=c.field, actual=c.actual, desired=c.desired, why=why))
    return out


class NodePoolDriftError(ValueError):
    """The pool exists with settings that cannot be changed in place."""


class NodePoolInUseError(NodePoolDriftError):
    """The spec would change the pool a live version runs on in a way that disrupts that version."""


def in_use_error_message(name: str, nodepool_id: str, disruptions: list[Disruption]) -> str:
    lines = [
        f"node pool {name!r} ({nodepool_id}) runs the live version, and the spec changes it in ways that would "
        "disrupt that version:",
        *(f"  {d.field}: {d.actual!r} -> {d.desired!r}: {d.why}" for d in disruptions),
        "Nothing was changed. Keep these fields as the pool has them while a version serves from it, or deploy "
        "to a new pool (node_pool.name) and let the rollout move the service there.",
    ]
    return "\n".join(lines)


class NodePoolFailedError(RuntimeError):
    """ACK reports the pool (or its task) as failed."""


class NodePoolTimeoutError(TimeoutError):
    """The pool did not reach the wanted state in time; the message says what was last seen."""


def drift_error_message(name: str, nodepool_id: str, drift: NodePoolDrift) -> str:
    lines = [
        f"node pool {name!r} ({nodepool_id}) exists with settings that ACK cannot change in place:",
        *(
            f"  {c.field}: the pool has {c.actual!r}, the spec asks for {c.desired!r}"
            for c in drift.immutable
        ),
        "Nothing was changed. To proceed, either set node_pool.name to a new name (a new pool is created next "
        f"to the old one), or delete pool {name!r} (elastic-inference teardown, or DeleteClusterNodepool) and run "
        "again; or change the spec back to the pool's values.",
    ]
    return "\n".join(lines)


# --- results --------------------------------------------------------------------------------------------------------
class NodePoolResult(BaseModel):
    """What ensure_node_pool did and the pool's state at the end."""

    name: str
    nodepool_id: str
    cluster_id: str
    created: bool
    updated_fields: list[str] = Field(default_factory=list)
    unknown_fields: list[str] = Field(default_factory=list)
    state: str | None = None
    total_nodes: int = 0
    healthy_nodes: int = 0
    failed_nodes: int = 0
    task_ids: list[str] = Field(default_factory=list)
    spot_strategy: str | None = None
    instance_types: list[str] = Field(default_factory=list)
    min_instances: int | None = None
    max_instances: int | None = None


class NodePoolDeleteResult(BaseModel):
    name: str
    nodepool_id: str | None = None
    cluster_id: str
    existed: bool
    task_id: str | None = None


# --- applying (thin) ----------------------------------------------------------------------------------------------
def _task_info(api: AckApi, task_id: str | None) -> TaskInfo | None:
    if not task_id:
        return None
    try:
        return api.describe_task(task_id)
    except AckApiError as exc:
        if exc.not_found:  # tasks expire on ACK; the pool state is what counts
            return None
        raise


def wait_node_pool_active(
    api: AckApi,
    nodepool_id: str,
    task_id: str | None = None,
    timeout: float = 1800.0,
    interval: float = 1.0,
    max_interval: float = 15.0,
) -> NodePool:
    """Poll DescribeClusterNodePoolDetail (and DescribeTaskInfo) until the pool is ``active`` and its task done."""
    last: list[tuple[NodePool, TaskInfo | None]] = []

    def active() -> NodePool | None:
        pool = api.describe_node_pool(nodepool_id)
        info = _task_info(api, task_id)
        last[:] = [(pool, info)]
        if info is not None and info.failed:
            raise NodePoolFailedError(
                f"node pool {pool.name!r} ({nodepool_id}): task {task_id} failed: {info.reason()}; "
                f"pool {pool.status.summary()}"
            )
        if (pool.state or "").lower() == "failed":
            raise NodePoolFailedError(
                f"node pool {pool.name!r} ({nodepool_id}) failed: {pool.status.summary()}"
            )
        task_done = info is None or (info.state or "").lower() not in ("running", "pending", "waiting")
        return pool if pool.state == "active" and task_done else None

    done = poll_until(active, timeout, interval, max_interval)
    if done is not None:
        return done
    pool, info = last[0]
    task_text = f"; task {task_id} state={info.state} stage={info.current_stage}" if info is not None else ""
    raise NodePoolTimeoutError(
        f"node pool {pool.name!r} ({nodepool_id}) not active after {timeout:.0f}s; "
        f"last seen: {pool.status.summary()}{task_text}"
    )


def wait_node_pool_gone(
    api: AckApi,
    name: str,
    nodepool_id: str,
    task_id: str | None = None,
    timeout: float = 1800.0,
    interval: float = 1.0,
    max_interval: float = 15.0,
) -> None:
    """Poll until no pool with this id is listed under ``name`` (DescribeClusterNodePools)."""
    last: list[NodePool] = []

    def gone() -> bool | None:
        last[:] = [p for p in api.describe_node_pools(name) if p.nodepool_id == nodepool_id]
        if not last:
            return True
        info = _task_info(api, task_id)
        if info is not None and info.failed:
            raise NodePoolFailedError(
                f"deleting node pool {name!r} ({nodepool_id}): task {task_id} failed: {info.reason()}; "
                f"pool {last[0].status.summary()}"
            )
        return None

    if poll_until(gone, timeout, interval, max_interval) is None:
        raise NodePoolTimeoutError(
            f"node pool {name!r} ({nodepool_id}) still present {timeout:.0f}s after deletion; "
            f"last seen: {last[0].status.summary()}"
        )


def _result(
    cluster_id: str,
    pool: NodePool,
    created: bool,
    updated: list[str],
    unknown: list[str],
    task_ids: list[str],
) -> NodePoolResult:
    return NodePoolResult(
        name=pool.name,
        nodepool_id=pool.nodepool_id,
        cluster_id=cluster_id,
        created=created,
        updated_fields=updated,
        unknown_fields=unknown,
        state=pool.state,
        total_nodes=pool.status.total_nodes,
        healthy_nodes=pool.status.healthy_nodes,
        failed_nodes=pool.status.failed_nodes,
        task_ids=task_ids,
        spot_strategy=pool.scaling_group.get("spot_strategy"),
        instance_types=list(pool.scaling_group.get("instance_types") or []),
        min_instances=pool.auto_scaling.get("min_instances"),
        max_instances=pool.auto_scaling.get("max_instances"),
    )


def _refuse_disruption(name: str, pool: NodePool, drift: NodePoolDrift, in_use: bool) -> None:
    if not in_use:
        return
    disruptions = disruptive_changes(drift, pool.status.total_nodes)
    if disruptions:
        raise NodePoolInUseError(in_use_error_message(name, pool.nodepool_id, disruptions))


@task(name="pool-under-live", cache_policy=NO_CACHE)
def refuse_disruptive_change(spec: NodePoolSpec, credentials: AlibabaCloudCredentials, cluster_id: str,
                             live_nodepool_ids: Collection[str]) -> None:
    """Before the run changes anything (the model upload included): raise :class:`NodePoolInUseError` if the
    spec's pool runs the live version and the spec would change it disruptively. One read
    (DescribeClusterNodePools); :func:`ensure_node_pool` checks again before it modifies."""
    if not live_nodepool_ids:
        return
    pool = AckApi(credentials, cluster_id).find_node_pool(spec.name)
    if pool is not None and pool.state != "deleting":
        _refuse_disruption(spec.name, pool, diff_node_pool(render_create_nodepool_request(spec), pool),
                           pool.nodepool_id in live_nodepool_ids)


@task(name="ensure_node_pool", cache_policy=NO_CACHE)
def ensure_node_pool(
    spec: NodePoolSpec,
    credentials: AlibabaCloudCredentials,
    cluster_id: str,
    timeout: float = 1800.0,
    poll_interval: float = 1.0,
    max_poll_interval: float = 15.0,
    live_nodepool_ids: Collection[str] = (),
) -> NodePoolResult:
    """Find the pool by name, create it if missing (or update it in place / refuse, see the drift policy), and
    wait until ACK reports it ``active``. Idempotent: a second run with the same spec changes nothing.

    ``live_nodepool_ids``: the pools the live version's pods run on (:func:`tasks.live.live_usage`, read under the
    service lock); on one of those, a disruptive change is refused (:func:`disruptive_changes`)."""
    logger = run_logger()
    api = AckApi(credentials, cluster_id)
    body = render_create_nodepool_request(spec)
    waits = {"timeout": timeout, "interval": poll_interval, "max_interval": max_poll_interval}

    pool = api.find_node_pool(spec.name)
    if pool is not None and pool.state == "deleting":
        logger.info("node pool %r (%s) is being deleted; waiting for it to go", spec.name, pool.nodepool_id)
        wait_node_pool_gone(api, spec.name, pool.nodepool_id, **waits)
        pool = None

    task_ids: list[str] = []
    updated: list[str] = []
    unknown: list[str] = []
    created = False
    if pool is None:
        if not spec.key_pair and spec.login_password is None:
            # ACK needs one of them to create the ECS instances (CreateClusterNodePool scaling_group.key_pair /
            # login_password); say so before any write instead of after a 400.
            raise ValueError(
                f"node_pool.key_pair or node_pool.login_password is required to create node pool {spec.name!r}"
            )
        logger.info("creating node pool %r in cluster %s", spec.name, cluster_id)
        logger.debug("CreateClusterNodePool body: %s", redacted(body))
        tried = {"create": False}

        def find_or_create() -> tuple[str, str | None, bool]:
            # Idempotent as a whole: a create whose answer was lost (5xx, timeout) is found by name next time.
            existing = api.find_node_pool(spec.name)
            if existing is not None:
                return existing.nodepool_id, None, tried["create"]
            tried["create"] = True
            res = api.create_node_pool(body)
            return res.nodepool_id, res.task_id, True

        nodepool_id, task_id, created = with_retries(api, find_or_create)
        if task_id:
            task_ids.append(task_id)
        logger.info("node pool %r created: %s (task %s)", spec.name, nodepool_id, task_id)
    else:
        nodepool_id = pool.nodepool_id
        if (pool.state or "").lower() == "failed":
            raise NodePoolFailedError(
                f"node pool {spec.name!r} ({nodepool_id}) exists in state failed: {pool.status.summary()}; "
                "delete it and run again"
            )
        drift = diff_node_pool(body, pool)
        unknown = drift.unknown
        if unknown:
            logger.warning(
                "node pool %r: ACK does not report %s; not compared", spec.name, ", ".join(unknown)
            )
        if drift.immutable:
            raise NodePoolDriftError(drift_error_message(spec.name, nodepool_id, drift))
        in_use = nodepool_id in live_nodepool_ids
        _refuse_disruption(spec.name, pool, drift, in_use)
        if drift.mutable:
            # Modify a settled pool: wait out a running scale or update first.
            pool = wait_node_pool_active(api, nodepool_id, **waits)
            drift = diff_node_pool(body, pool)
            if drift.immutable:
                raise NodePoolDriftError(drift_error_message(spec.name, nodepool_id, drift))
            _refuse_disruption(spec.name, pool, drift, in_use)
            if in_use:
                logger.info("node pool %r (%s) runs the live version: applying only changes that leave its pods "
                            "in place", spec.name, nodepool_id)
            for c in drift.mutable:
                logger.info(
                    "node pool %r drift: %s is %r, updating to %r", spec.name, c.field, c.actual, c.desired
                )
            modify = render_modify_request(body, drift)
            task_id = api.modify_node_pool(nodepool_id, modify)
            if task_id:
                task_ids.append(task_id)
            updated = [c.field for c in drift.mutable]
            logger.info("node pool %r (%s) updated in place: %s", spec.name, nodepool_id, ", ".join(updated))
        else:
            logger.info("node pool %r (%s) exists and matches the spec", spec.name, nodepool_id)

    final = wait_node_pool_active(api, nodepool_id, task_ids[-1] if task_ids else None, **waits)
    result = _result(cluster_id, final, created, updated, unknown, task_ids)
    logger.info(
        "node pool %r (%s) active: %d nodes (%d healthy)",
        result.name,
        result.nodepool_id,
        result.total_nodes,
        result.healthy_nodes,
    )
    return result


@task(name="delete_node_pool", cache_policy=NO_CACHE)
def delete_node_pool(
    name: str,
    credentials: AlibabaCloudCredentials,
    cluster_id: str,
    force: bool = True,
    timeout: float = 1800.0,
    poll_interval: float = 1.0,
    max_poll_interval: float = 15.0,
) -> NodePoolDeleteResult:
    """Delete the pool named ``name`` (with its nodes when ``force``) and wait until it is gone.

    Idempotent: a pool that does not exist (or vanishes while we ask) is success with ``existed=False``.
    """
    logger = run_logger()
    api = AckApi(credentials, cluster_id)
    waits = {"timeout": timeout, "interval": poll_interval, "max_interval": max_poll_interval}
    pool = api.find_node_pool(name)
    if pool is None:
        logger.info("node pool %r not found in cluster %s: nothing to delete", name, cluster_id)
        return NodePoolDeleteResult(name=name, cluster_id=cluster_id, existed=False)
    task_id: str | None = None
    if pool.state != "deleting":
        try:
            task_id = api.delete_node_pool(pool.nodepool_id, force=force)
        except AckApiError as exc:
            if not exc.not_found:
                raise
            logger.info("node pool %r (%s) already gone", name, pool.nodepool_id)
    logger.info("deleting node pool %r (%s), task %s", name, pool.nodepool_id, task_id)
    wait_node_pool_gone(api, name, pool.nodepool_id, task_id, **waits)
    logger.info("node pool %r (%s) deleted", name, pool.nodepool_id)
    return NodePoolDeleteResult(
        name=name, nodepool_id=pool.nodepool_id, cluster_id=cluster_id, existed=True, task_id=task_id
    )
