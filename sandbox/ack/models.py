"""Request models of the node-pool API and their field rules (checked before anything is created).

Field names and ranges follow ``alibabacloud_cs20151215`` 7.2.3 ``models/_create_cluster_node_pool_request.py``
and the CreateClusterNodePool API reference (docs/alibaba-apis.md). Unknown keys are accepted and echoed back (the real
API ignores what it does not know); known keys are type-checked strictly, the way ACK's Go JSON decoder does
(a string where an integer belongs is an error, not a conversion). Every error names the field by its JSON path,
e.g. ``scaling_group.instance_types[2]``.

Defaults the sandbox fills in (shown by DescribeClusterNodePoolDetail):
``nodepool_info.type=ess``, ``instance_charge_type=PostPaid``, ``spot_strategy=NoSpot``, ``spot_instance_pools=2``,
``spot_instance_remedy=false``, ``on_demand_base_capacity=0``, ``on_demand_percentage_above_base_capacity`` = 100
without spot and 0 with spot, ``compensate_with_on_demand=true``, ``multi_az_policy=PRIORITY``,
``system_disk_category=cloud_efficiency``, ``system_disk_size=120``, ``auto_scaling.enable=false``,
``auto_scaling.type=cpu``, ``kubernetes_config.runtime=containerd``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ..fleet import catalogue
from .errors import invalid_parameter

MAX_INSTANCES = 1000  # auto_scaling.max_instances / desired_size bound (ESS MaxSize limit order of magnitude)

_NAME_RE = re.compile(r"^[A-Za-z0-9\u4e00-\u9fa5][A-Za-z0-9_\-\u4e00-\u9fa5]{0,62}$")
_QUALIFIED = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY_RE = re.compile(rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_QUALIFIED}$")
_LABEL_VALUE_RE = re.compile(rf"^({_QUALIFIED})?$")


class _M(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class NodepoolInfo(_M):
    name: str
    type: Literal["ess", "edge", "lingjun", "hybrid"] = "ess"
    resource_group_id: str | None = None


class SpotPriceLimit(_M):
    instance_type: str
    price_limit: str | float | int


class KeyValue(_M):
    key: str
    value: str = ""


class Taint(_M):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "NoExecute", "PreferNoSchedule"] = "NoSchedule"


VSwitchId = Annotated[str, StringConstraints(pattern=r"^vsw-[a-z0-9]{1,64}$")]
SecurityGroupId = Annotated[str, StringConstraints(pattern=r"^sg-[a-z0-9]{1,64}$")]


class ScalingGroupModel(_M):
    instance_types: list[str] = Field(min_length=1, max_length=10)
    vswitch_ids: list[VSwitchId] = Field(min_length=1, max_length=8)
    instance_charge_type: Literal["PrePaid", "PostPaid"] = "PostPaid"
    spot_strategy: Literal["NoSpot", "SpotWithPriceLimit", "SpotAsPriceGo"] = "NoSpot"
    spot_price_limit: list[SpotPriceLimit] = Field(default_factory=list)
    spot_instance_pools: int = Field(2, ge=1, le=10)
    spot_instance_remedy: bool = False
    on_demand_base_capacity: int = Field(0, ge=0, le=1000)
    on_demand_percentage_above_base_capacity: int | None = Field(None, ge=0, le=100)
    compensate_with_on_demand: bool = True
    multi_az_policy: Literal["PRIORITY", "COST_OPTIMIZED", "BALANCE"] = "PRIORITY"
    desired_size: int | None = Field(None, ge=0, le=MAX_INSTANCES)
    system_disk_category: Literal["cloud_efficiency", "cloud_ssd", "cloud_essd", "cloud_auto", "cloud_essd_entry"] = (
        "cloud_efficiency"
    )
    system_disk_size: int = Field(120, ge=20, le=2048)
    security_group_id: SecurityGroupId | None = None
    security_group_ids: list[SecurityGroupId] = Field(default_factory=list)
    key_pair: str | None = None
    login_password: str | None = None
    image_type: str = "AliyunLinux3"
    tags: list[KeyValue] = Field(default_factory=list)
    scaling_policy: Literal["release", "recycle"] = "release"


class AutoScalingModel(_M):
    enable: bool = False
    min_instances: int | None = Field(None, ge=0, le=MAX_INSTANCES)
    max_instances: int | None = Field(None, ge=0, le=MAX_INSTANCES)
    type: Literal["cpu", "gpu", "gpushare", "spot"] = "cpu"


class KubernetesConfigModel(_M):
    labels: list[KeyValue] = Field(default_factory=list)
    taints: list[Taint] = Field(default_factory=list)
    runtime: Literal["containerd", "docker", "Sandboxed-Container.runv"] = "containerd"
    runtime_version: str = "1.6.36"
    cpu_policy: Literal["static", "none"] = "none"
    cms_enabled: bool = False
    unschedulable: bool = False


class ManagementModel(_M):
    enable: bool = False
    auto_repair: bool = False
    auto_upgrade: bool = False
    auto_vul_fix: bool = False


class CreateNodePool(_M):
    nodepool_info: NodepoolInfo
    scaling_group: ScalingGroupModel
    auto_scaling: AutoScalingModel = Field(default_factory=AutoScalingModel)
    kubernetes_config: KubernetesConfigModel = Field(default_factory=KubernetesConfigModel)
    management: ManagementModel = Field(default_factory=ManagementModel)
    count: int | None = Field(None, ge=0, le=MAX_INSTANCES)  # deprecated: the initial node count


class ScaleNodePool(_M):
    count: int = Field(ge=1, le=MAX_INSTANCES)


# ---- error rendering -------------------------------------------------------------------------------------------
_JSON_TYPE = {"int": "number", "float": "number", "str": "string", "bool": "bool", "list": "array",
              "dict": "object", "NoneType": "null"}
_EXPECTED = {"int_type": "int", "float_type": "float", "string_type": "string", "bool_type": "bool",
             "list_type": "array", "dict_type": "object", "model_type": "object", "model_attributes_type": "object",
             "int_from_float": "int"}


def field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "float", "int") or "[" in str(part):
            continue  # union member tags (e.g. price_limit's str|float|int)
        else:
            out += ("." if out else "") + str(part)
    return out


def _raise(err: ValidationError) -> None:
    e = err.errors(include_url=False)[0]
    path = field_path(tuple(e["loc"]))
    kind = e["type"]
    if kind in _EXPECTED:
        got = _JSON_TYPE.get(type(e.get("input")).__name__, type(e.get("input")).__name__)
        raise invalid_parameter(path, f"Unmarshal type error: expected={_EXPECTED[kind]}, got={got}, field={path}")
    if kind == "missing":
        raise invalid_parameter(path, "is required")
    msg = e["msg"]
    if "input" in e and kind not in ("too_short", "too_long"):
        msg += f" (got {e['input']!r})"
    raise invalid_parameter(path, msg)


def parse(model: type[_M], body: Any) -> Any:
    if not isinstance(body, dict):
        raise invalid_parameter("", "the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as err:
        _raise(err)


# ---- cross-field rules ------------------------------------------------------------------------------------------
def _password_ok(pw: str) -> bool:
    classes = sum(bool(re.search(p, pw)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[()`~!@#$%^&*\-_+=|{}\[\]:;'<>,.?/]"))
    return 8 <= len(pw) <= 30 and classes >= 3


def check_create(req: CreateNodePool) -> None:
    """Rules spanning several fields (raise AckError naming the field)."""
    if not _NAME_RE.match(req.nodepool_info.name):
        raise invalid_parameter("nodepool_info.name", "must be 1-63 characters of letters, digits, '_' and '-', "
                                                      f"starting with a letter or digit (got {req.nodepool_info.name!r})")
    if req.nodepool_info.type != "ess":
        raise invalid_parameter("nodepool_info.type", f"the sandbox supports only 'ess' node pools "
                                                      f"(got {req.nodepool_info.type!r})")
    sg = req.scaling_group
    for i, t in enumerate(sg.instance_types):
        if catalogue.get(t) is None:
            raise invalid_parameter(f"scaling_group.instance_types[{i}]",
                                    f"instance type {t!r} is not available in this region")
        if t in sg.instance_types[:i]:
            raise invalid_parameter(f"scaling_group.instance_types[{i}]", f"duplicate instance type {t!r}")
    for i, v in enumerate(sg.vswitch_ids):
        if v in sg.vswitch_ids[:i]:
            raise invalid_parameter(f"scaling_group.vswitch_ids[{i}]", f"duplicate vswitch {v!r}")
    for i, lim in enumerate(sg.spot_price_limit):
        if lim.instance_type not in sg.instance_types:
            raise invalid_parameter(f"scaling_group.spot_price_limit[{i}].instance_type",
                                    f"{lim.instance_type!r} is not one of scaling_group.instance_types")
        try:
            price = float(lim.price_limit)
        except ValueError:
            price = -1.0
        if not price > 0:
            raise invalid_parameter(f"scaling_group.spot_price_limit[{i}].price_limit",
                                    f"must be a positive price (got {lim.price_limit!r})")
    if sg.instance_charge_type == "PrePaid" and sg.spot_strategy != "NoSpot":
        raise invalid_parameter("scaling_group.spot_strategy",
                                "spot instances are pay-as-you-go only: use instance_charge_type=PostPaid")
    if sg.spot_strategy == "SpotWithPriceLimit" and not sg.spot_price_limit:
        raise invalid_parameter("scaling_group.spot_price_limit", "is required when spot_strategy=SpotWithPriceLimit")
    if bool(sg.key_pair) == bool(sg.login_password):
        raise invalid_parameter("scaling_group.key_pair",
                                "specify exactly one of scaling_group.key_pair and scaling_group.login_password")
    if sg.login_password and not _password_ok(sg.login_password):
        raise invalid_parameter("scaling_group.login_password",
                                "must be 8-30 characters with at least three of: upper case, lower case, digits, "
                                "special characters")
    a = req.auto_scaling
    if a.enable:
        if a.max_instances is None:
            raise invalid_parameter("auto_scaling.max_instances", "is required when auto_scaling.enable is true")
        if (a.min_instances or 0) > a.max_instances:
            raise invalid_parameter("auto_scaling.min_instances",
                                    f"must be <= auto_scaling.max_instances ({a.min_instances} > {a.max_instances})")
        if sg.desired_size is not None:
            raise invalid_parameter("scaling_group.desired_size",
                                    "cannot be set when auto_scaling.enable is true (the pool is sized by "
                                    "min_instances/max_instances)")
    elif a.min_instances is not None and a.max_instances is not None and a.min_instances > a.max_instances:
        raise invalid_parameter("auto_scaling.min_instances", "must be <= auto_scaling.max_instances")
    if sg.desired_size is not None and req.count is not None and sg.desired_size != req.count:
        raise invalid_parameter("count", "is deprecated and conflicts with scaling_group.desired_size")
    kc = req.kubernetes_config
    for i, lab in enumerate(kc.labels):
        _check_kv(f"kubernetes_config.labels[{i}]", lab.key, lab.value)
    for i, taint in enumerate(kc.taints):
        _check_kv(f"kubernetes_config.taints[{i}]", taint.key, taint.value)


def _check_kv(where: str, key: str, value: str) -> None:
    if len(key) > 316 or not _LABEL_KEY_RE.match(key) or len(key.split("/")[-1]) > 63:
        raise invalid_parameter(f"{where}.key", f"{key!r} is not a valid Kubernetes label key")
    if len(value) > 63 or not _LABEL_VALUE_RE.match(value):
        raise invalid_parameter(f"{where}.value", f"{value!r} is not a valid Kubernetes label value")


def normalized(req: CreateNodePool) -> dict[str, Any]:
    """The stored spec: the create body with defaults filled in (the login password is not kept)."""
    spec = req.model_dump(mode="json")
    sg = spec["scaling_group"]
    if sg.get("on_demand_percentage_above_base_capacity") is None:
        sg["on_demand_percentage_above_base_capacity"] = 100 if sg["spot_strategy"] == "NoSpot" else 0
    if sg.get("login_password"):
        sg["login_password"] = None
        sg["login_password_set"] = True
    if not sg.get("security_group_ids") and sg.get("security_group_id"):
        sg["security_group_ids"] = [sg["security_group_id"]]
    a = spec["auto_scaling"]
    if a.get("min_instances") is None:
        a["min_instances"] = 0
    if a.get("max_instances") is None:
        a["max_instances"] = 0 if not a["enable"] else a["max_instances"]
    return spec


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """ModifyClusterNodePool's partial update: objects merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def validate_modify(stored: dict[str, Any], patch: Any) -> CreateNodePool:
    if not isinstance(patch, dict):
        raise invalid_parameter("", "the request body must be a JSON object")
    for key in ("nodepool_info", "scaling_group", "auto_scaling", "kubernetes_config", "management"):
        if key in patch and not isinstance(patch[key], dict):
            got = _JSON_TYPE.get(type(patch[key]).__name__, "value")
            raise invalid_parameter(key, f"Unmarshal type error: expected=object, got={got}, field={key}")
    if "auto_scaling" in patch and "type" in patch["auto_scaling"] \
            and patch["auto_scaling"]["type"] != stored["auto_scaling"]["type"]:
        raise invalid_parameter("auto_scaling.type", "cannot be changed after the node pool is created")
    if "nodepool_info" in patch and "type" in patch["nodepool_info"] \
            and patch["nodepool_info"]["type"] != stored["nodepool_info"]["type"]:
        raise invalid_parameter("nodepool_info.type", "cannot be changed after the node pool is created")
    merged = merge(stored, patch)
    sg = merged.get("scaling_group", {})
    if isinstance(sg, dict):
        sg = dict(sg)
        sg.pop("scaling_group_id", None)
        if sg.get("login_password_set") and not sg.get("login_password") and not sg.get("key_pair"):
            sg["login_password"] = "Keep-Existing-1"  # the stored pool has a password; keep it valid
        sg.pop("login_password_set", None)
        if sg.get("login_password") and sg.get("key_pair") and "key_pair" in patch.get("scaling_group", {}):
            sg["login_password"] = None  # switching to a key pair replaces the password
        if "desired_size" in sg and sg["desired_size"] is None:
            sg.pop("desired_size")
        merged["scaling_group"] = sg
    enabling = isinstance(merged.get("auto_scaling"), dict) and merged["auto_scaling"].get("enable")
    if enabling and isinstance(sg, dict) and "desired_size" not in patch.get("scaling_group", {}):
        sg.pop("desired_size", None)
    req = parse(CreateNodePool, merged)
    check_create(req)
    return req
