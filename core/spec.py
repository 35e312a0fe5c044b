"""DeploySpec: every parameter of the ACK "elastic inference on ECS" procedure, validated, with names derived once.

Groups follow the procedure: node pool, model, storage, serving, autoscaling, ingress, load test, verification.
Defaults are the seed procedure's values where it gives them. Bad input is rejected here, before any cloud call,
with a message that names the field (pydantic's ``loc``) and the rule.

Every name that more than one step uses (Deployment/Service name, SLS route and project, PV volumeHandle, the OSS
prefix the model is uploaded to, ...) is derived in :class:`DerivedNames`, never typed twice.
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

# --- naming rules -------------------------------------------------------------------------------------------------
# Kubernetes DNS-1123 label (Service names, label-ish names) and subdomain (most object names).
# Source: k8s.io/apimachinery/pkg/util/validation/validation.go (IsDNS1123Label, IsDNS1123Subdomain).
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Label keys: optional DNS-1123 subdomain prefix (<=253) + "/" + name (<=63, alnum, -_. inside).
LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
# OSS bucket naming: 3-63 chars, lowercase letters, digits and hyphens, starts and ends with a letter or digit.
# Source: OSS documentation "Bucket naming conventions".
OSS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
# Version policy grammar of this project (arena's --version-policy): latest[:N] | all | specific:N[,N...]
VERSION_POLICY = re.compile(r"^(latest(:[1-9][0-9]*)?|all|specific:[0-9]+(,[0-9]+)*)$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$")
VSWITCH_ID = re.compile(r"^vsw-[a-z0-9]{6,40}$")
INSTANCE_TYPE = re.compile(r"^ecs\.[a-z0-9-]+\.[a-z0-9-]+$")
# ECS CreateKeyPair KeyPairName: 2-128 characters, starts with a letter, letters, digits, ':', '_' and '-'
# (https://www.alibabacloud.com/help/en/ecs/developer-reference/api-ecs-2014-05-26-createkeypair).
KEY_PAIR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9:_-]{1,127}")
# ACK login_password: 8-30 characters, three of upper, lower, digits, specials (CreateClusterNodePoolRequest);
# the special characters ECS accepts in an instance password (ECS RunInstances Password).
PASSWORD_SPECIALS = "()`~!@#$%^&*-_+=|{}[]:;'<>,.?/"
SECURITY_GROUP_ID = re.compile(r"sg-[a-z0-9]{1,40}")
# ECS: an ENI (so an instance) joins at most 5 security groups by default; the quota can be raised to 10
# (ECS "Limits": security groups an ENI can be added to).
MAX_SECURITY_GROUPS = 10
MAX_POOL_INSTANCES = 2000
# HPA minReplicas/maxReplicas are int32 in autoscaling/v2; the project caps replicas at 1000 (= the largest pool
# of GPU nodes it plans for); target averageValue is a Quantity the HPA controller reads as MilliValue() into an
# int64 (pkg/controller/podautoscaler/replica_calculator.go), so a target above (2**63-1)//1000 overflows.
MAX_TARGET_QPS = (2**63 - 1) // 1000
# TF Serving's REST predict body: a JSON object with "instances" (row format) or "inputs" (columnar), not both
# (https://www.tensorflow.org/tfx/serving/api_rest#request_format_2). Bodies above nginx's default
# client_max_body_size (1m) are refused by the ingress with 413 (nginx ngx_http_core_module).
PAYLOAD_MAX_BYTES = 1024 * 1024
# ossfs options in the CSI driver's otherOpts: space-separated "-o name[=value]" (alibaba-cloud-csi-driver docs,
# "otherOpts ... -o max_stat_cache_size=0 -o allow_other"): no newlines, tabs or shell metacharacters.
OSSFS_OPTS = re.compile(r"(-o [A-Za-z0-9_.,=:/+@-]+)( -o [A-Za-z0-9_.,=:/+@-]+)*")
# Container paths and bucket paths: printable, no whitespace or control characters.
CLEAN_PATH = re.compile(r"/[A-Za-z0-9._~@%+=:,/-]*")
# ingress-nginx's strict path validation for Prefix/Exact paths (internal/ingress/inspector validPathType:
# ^/[[:alnum:]\_\-/]*$); ImplementationSpecific paths may be regexes but no whitespace or control characters.
INGRESS_PATH_STRICT = re.compile(r"/[A-Za-z0-9_/-]*")
INGRESS_PATH_ANY = re.compile(r"/[!-~]*")
# distribution/reference: a name is at most 255 characters; a tag [\w][\w.-]{0,127}; a digest algorithm:hex.
IMAGE_REF = re.compile(
    r"[a-z0-9]+([._-][a-z0-9]+|__)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@[a-z0-9]+([+._-][a-z0-9]+)*:[a-f0-9]{32,})?"
)
# RAM role names: 1-64 characters of letters, digits, '.' and '-' (RAM CreateRole RoleName).
RAM_ROLE = re.compile(r"[A-Za-z0-9.-]{1,64}")
# An OSS endpoint (host[:port], optionally with the scheme) as the CSI driver's `url` takes it.
OSS_ENDPOINT = re.compile(r"(https?://)?[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?")

NAME_MAX = 63
# Kubernetes Service names are DNS-1035 labels (must start with a letter): apimachinery ValidateServiceName.
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# SLS logstore naming: 2-63 characters of lowercase letters, digits, '-' and '_', starting and ending with a
# lowercase letter or digit (Simple Log Service "Limits on names").
SLS_LOGSTORE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,61}[a-z0-9]$")
# arena's chart name (charts/tfserving/Chart.yaml): the `app` label and the suffix of the full name.
CHART_NAME = "tensorflow-serving"


class _FieldError(ValueError):
    """A rule broken by a field that a model-level validator checks: ``field`` is the path below the model.

    Pydantic reports a model validator's error at the model's own location; :class:`SpecError` appends ``field``
    so that the message names the exact field (``node_pool.max_instances``, not just ``node_pool``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _dns_label(value: str, what: str = "name") -> str:
    if len(value) > NAME_MAX:
        raise ValueError(f"{what} {value!r} is {len(value)} characters; Kubernetes allows at most {NAME_MAX}")
    if not DNS1123_LABEL.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} must be a DNS-1123 label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _dns_subdomain(value: str, what: str = "name") -> str:
    if len(value) > 253:
        raise ValueError(f"{what} {value!r} is longer than 253 characters")
    if not DNS1123_SUBDOMAIN.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return value


def _label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if prefix:
        _dns_subdomain(prefix, "label key prefix")
    if not name or len(name) > NAME_MAX or not LABEL_NAME.fullmatch(name):
        raise ValueError(
            f"label key {key!r}: the name part must be 1-63 characters of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return key


def _label_value(value: str) -> str:
    if len(value) > NAME_MAX or not LABEL_NAME.fullmatch(value):
        raise ValueError(
            f"label value {value!r} must be at most 63 characters of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return value


def _labels(labels: dict[str, str]) -> dict[str, str]:
    for k, v in labels.items():
        _label_key(k)
        _label_value(v)
    return labels


def truncate_name(name: str, limit: int = NAME_MAX) -> str:
    """Helm's ``trunc 63 | trimSuffix "-"`` (arena's charts/tfserving/templates/_helpers.tpl).

    Helm's trimSuffix drops one '-'; we drop all trailing ones so the result is always a valid DNS label (for
    the names that pass validation the two agree).
    """
    return name[:limit].rstrip("-")


def serving_fullname(release: str) -> str:
    """arena's ``tensorflow-serving.fullname``: ``<release>-tensorflow-serving`` cut to 63 characters, or the
    release itself when it already contains the chart name (charts/tfserving/templates/_helpers.tpl)."""
    if CHART_NAME in release:
        return truncate_name(release)
    return truncate_name(f"{release}-{CHART_NAME}")


# --- how the spec reads as a form ---------------------------------------------------------------------------------
# The Prefect UI renders a deployment's parameter schema (these models' JSON schema) as a form: a field's label is
# its schema ``title``, its help text its ``description``. Titles are generated from the field names, in sentence
# case, with the acronyms and units the names abbreviate spelled out; descriptions are the ``description=`` of a
# Field or, failing that, the attribute docstring below the field.
_WORDS = {
    "id": "ID", "ids": "IDs", "az": "AZ", "oss": "OSS", "url": "URL", "uri": "URI", "rrsa": "RRSA", "api": "API",
    "rest": "REST", "pv": "PV", "pvc": "PVC", "gpus": "GPUs", "ip": "IP", "qps": "QPS", "cpu": "CPU", "hpa": "HPA",
    "ack": "ACK", "sls": "SLS", "vswitch": "vSwitch", "p95": "p95", "dir": "directory",
}
_UNITS = {"s": "(s)", "ms": "(ms)", "minutes": "(min)", "bytes": "(bytes)"}
# Where the name alone does not say it (units, hyphens): the full title.
_TITLES = {
    "multi_az_policy": "Multi-AZ policy",
    "system_disk_size": "System disk size (GiB)",
    "upload_part_size": "Upload part size (bytes)",
    "multipart_threshold": "Multipart threshold (bytes)",
    "price_limit": "Price limit (per hour)",
    "target_qps": "Target QPS per replica",
    "max_error_rate": "Max error rate (0-1)",
    "on_demand_percentage_above_base": "On-demand percentage above base (%)",
    "on_demand_base_capacity": "On-demand base capacity",
    "compensate_with_on_demand": "Compensate with on-demand",
    "class_name": "Ingress class",
    "port": "gRPC port",
    "other_opts": "ossfs mount options",
}


def field_title(name: str, _info: Any = None) -> str:
    """A form label from a field name: ``p95_ms`` -> "p95 (ms)", ``vswitch_ids`` -> "vSwitch IDs"."""
    if name in _TITLES:
        return _TITLES[name]
    words = name.split("_")
    unit = _UNITS.get(words[-1]) if len(words) > 1 else None
    if unit:
        words = words[:-1]
    first = _WORDS.get(words[0], words[0].capitalize())
    return " ".join([first, *(_WORDS.get(w, w) for w in words[1:])] + ([unit] if unit else []))


def model_title(cls: type) -> str:
    """A section label from a class name: ``NodePoolSpec`` -> "Node pool", ``LoadStage`` -> "Load stage"."""
    if cls.__name__ == "DeploySpec":
        return "Deploy spec"
    name = cls.__name__.removesuffix("Spec") or cls.__name__
    words = re.findall(r"[A-Z][a-z0-9]*", name)
    return " ".join([words[0], *(w.lower() for w in words[1:])]) if words else name


def _optional_without_type_toggle(schema: dict[str, Any]) -> None:
    """``X | None = None`` as the schema of X alone, with no ``default``.

    Pydantic renders it ``anyOf: [X, {type: null}], default: null``; the Prefect UI shows every ``anyOf`` as a
    type toggle ("str | None") whose None side reads `Property is type "None"`. Rendered as X, the field is a
    plain input that the user fills or leaves empty (an empty input is left out of the run's parameters, so the
    field takes its Python default, None). No ``default`` key, because Prefect's server-side check of a run's
    parameters (prefect.utilities.schema_tools.validation.preprocess_schema) treats a non-required property
    without a default as nullable, so an explicit null (e.g. from an event trigger's template) still passes.
    """
    for prop in schema.get("properties", {}).values():
        options = prop.get("anyOf")
        if prop.get("default", ...) is not None or not options or len(options) != 2:
            continue
        rest = [o for o in options if o != {"type": "null"}]
        if len(rest) != 1 or "$ref" in rest[0]:
            continue
        del prop["anyOf"], prop["default"]
        prop.update({k: v for k, v in rest[0].items() if k not in prop})


def form_title(title: str) -> Any:
    """``Annotated`` metadata that titles a flow parameter in the Prefect UI.

    Prefect titles each flow parameter with its name, whatever a ``Field(title=...)`` says
    (prefect._internal.pydantic.v2_schema.process_v2_params); it merges the parameter's ``json_schema_extra`` into
    the schema after that, so a title given there is the one the form shows.
    """
    return Field(json_schema_extra={"title": title})


# Said by the description of every field whose pre-filled value (here, in prefect.yaml and examples/sandbox.yaml)
# only exists in the sandbox; examples/ack-seed.yaml marks the same fields "FILL IN".
SANDBOX_VALUE = "Pre-filled with the sandbox's value: set your own for a real cluster."


class _Model(BaseModel):
    # strict: a boolean is not a count and "3" is not 3 (YAML already gives numbers their types); file paths are
    # the one lax field type (``Field(strict=False)``: a path arrives as a string). allow_inf_nan=False: .inf and
    # .nan are refused wherever a number is expected.
    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        populate_by_name=True,
        strict=True,
        allow_inf_nan=False,
        use_attribute_docstrings=True,
        field_title_generator=field_title,
        model_title_generator=model_title,
        json_schema_extra=_optional_without_type_toggle,
    )


# --- groups -------------------------------------------------------------------------------------------------------
class Taint(_Model):
    key: str = Field(description="Taint key")
    value: str = Field(default="", description="Taint value")
    effect: Literal["NoSchedule", "NoExecute", "PreferNoSchedule"] = Field(
        default="NoSchedule", description="Taint effect"
    )

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        return _label_key(v)

    @field_validator("value")
    @classmethod
    def _value(cls, v: str) -> str:
        return _label_value(v)


class SpotPriceLimit(_Model):
    instance_type: str = Field(description="ECS instance type the limit applies to")
    # Finite (allow_inf_nan=False); the APIs document no upper bound for SpotPriceLimit.N.PriceLimit.
    price_limit: float = Field(gt=0, description="Highest hourly price to pay for a spot instance of this type")

    @field_validator("instance_type")
    @classmethod
    def _type(cls, v: str) -> str:
        if not INSTANCE_TYPE.fullmatch(v):
            raise ValueError(f"{v[:80]!r} is not an ECS instance type (expected the form ecs.<family>.<size>)")
        return v


class NodePoolSpec(_Model):
    """Step 1: the elastic node pool (ACK CreateClusterNodePool)."""

    name: str = Field(default="elastic-inference", description="Node pool name (unique within the cluster)")
    instance_types: list[str] = Field(
        default_factory=lambda: ["ecs.gn6i-c4g1.xlarge", "ecs.gn6i-c8g1.2xlarge", "ecs.gn7i-c8g1.2xlarge"],
        description="ECS instance types the scaling group may launch (1-10, GPU types for TF Serving)",
    )
    vswitch_ids: list[str] = Field(
        default_factory=lambda: ["vsw-sandbox0zone0h", "vsw-sandbox0zone0i"],
        description=f"vSwitch ids (1-8) the instances are placed in; one per zone spreads spot risk. {SANDBOX_VALUE}",
    )
    # ACK CreateClusterNodePool auto_scaling: min_instances in [0, max_instances], max_instances in
    # [min_instances, 2000] (alibabacloud_cs20151215 CreateClusterNodePoolRequestAutoScaling).
    min_instances: int = Field(default=0, ge=0, le=MAX_POOL_INSTANCES, description="Auto scaling: minimum instances")
    max_instances: int = Field(default=10, ge=0, le=MAX_POOL_INSTANCES, description="Auto scaling: maximum instances")
    auto_scaling_type: Literal["cpu", "gpu", "gpushare", "spot"] = Field(
        default="gpu", description="Auto scaling type (immutable after creation)"
    )
    billing: Literal["spot", "on-demand"] = Field(
        default="spot", description="Preemptible (spot) instances or pay-as-you-go only"
    )
    spot_strategy: Literal["SpotAsPriceGo", "SpotWithPriceLimit"] = Field(
        default="SpotAsPriceGo", description="Spot bidding: follow the market price, or cap it per instance type"
    )
    spot_price_limits: list[SpotPriceLimit] = Field(
        default_factory=list, description="Per instance type price caps (SpotWithPriceLimit only)"
    )
    spot_instance_pools: int = Field(
        default=3, ge=1, le=10, description="Spot instances spread over the N cheapest instance types"
    )
    spot_instance_remedy: bool = Field(
        default=True, description="Buy a replacement when a spot instance gets its reclaim notice"
    )
    multi_az_policy: Literal["COST_OPTIMIZED", "PRIORITY", "BALANCE"] = Field(
        default="COST_OPTIMIZED", description="Scaling policy; the seed uses cost optimization"
    )
    on_demand_base_capacity: int = Field(
        default=0, ge=0, le=1000, description="Pay-as-you-go instances created first, before any spot"
    )
    on_demand_percentage_above_base: int = Field(
        default=30, ge=0, le=100, description="Percentage of pay-as-you-go instances above the base capacity"
    )
    compensate_with_on_demand: bool = Field(
        default=True, description="Launch pay-as-you-go instances when spot cannot be had (COST_OPTIMIZED only)"
    )
    labels: dict[str, str] = Field(
        default_factory=lambda: {"inference": "tensorflow"}, description="Node labels the serving pods select"
    )
    taints: list[Taint] = Field(default_factory=list, description="Node taints")
    system_disk_category: Literal["cloud_efficiency", "cloud_ssd", "cloud_essd", "cloud_auto", "cloud_essd_entry"] = (
        Field(default="cloud_essd", description="ECS system disk category of the nodes")
    )
    system_disk_size: int = Field(default=120, ge=20, le=2048, description="System disk size in GiB")
    security_group_ids: list[str] = Field(default_factory=list, description="Security groups of the instances")
    key_pair: str | None = Field(default=None, description=f"ECS key pair for login (or login_password). {SANDBOX_VALUE}")
    login_password: SecretStr | None = Field(default=None, description="Login password (or key_pair)")
    # The runtimes CreateClusterNodePool's kubernetes_config.runtime names (alibabacloud_cs20151215).
    runtime: Literal["containerd", "Sandboxed-Container.runv", "docker"] = Field(
        default="containerd", description="Container runtime"
    )

    @field_validator("key_pair")
    @classmethod
    def _key_pair(cls, v: str | None) -> str | None:
        if v is not None and (not KEY_PAIR_NAME.fullmatch(v) or v.lower().startswith(("http://", "https://"))):
            raise ValueError(
                f"key_pair {v[:140]!r} breaks the ECS key pair naming rule: 2-128 characters of letters, digits, "
                "':', '_' and '-', starting with a letter"
            )
        return v

    @field_validator("login_password")
    @classmethod
    def _password(cls, v: SecretStr | None) -> SecretStr | None:
        # The value is a secret: the message describes the rule, never the value.
        if v is None:
            return v
        pw = v.get_secret_value()
        kinds = sum(
            (any(c.isupper() for c in pw), any(c.islower() for c in pw), any(c.isdigit() for c in pw),
             any(c in PASSWORD_SPECIALS for c in pw))
        )
        if not 8 <= len(pw) <= 30 or kinds < 3 or any(not (c.isascii() and c.isalnum()) and c not in
                                                      PASSWORD_SPECIALS for c in pw):
            raise ValueError(
                "login_password must be 8-30 characters with at least three of: uppercase letters, lowercase "
                f"letters, digits and the special characters {PASSWORD_SPECIALS}"
            )
        return v

    @field_validator("security_group_ids")
    @classmethod
    def _security_groups(cls, v: list[str]) -> list[str]:
        if len(v) > MAX_SECURITY_GROUPS:
            raise ValueError(f"at most {MAX_SECURITY_GROUPS} security groups, got {len(v)}")
        for sg in v:
            if not SECURITY_GROUP_ID.fullmatch(sg):
                raise ValueError(f"{sg[:80]!r} is not a security group id (sg- followed by lowercase letters/digits)")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not 1 <= len(v) <= NAME_MAX or not re.fullmatch(r"^[A-Za-z0-9][A-Za-z0-9_-]*$", v):
            raise ValueError(
                f"node pool name {v!r} must be 1-63 characters of letters, digits, '-' or '_', starting with a "
                "letter or digit"
            )
        return v

    @field_validator("instance_types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        if not 1 <= len(v) <= 10:
            raise ValueError(f"must list 1 to 10 instance types, got {len(v)}")
        for t in v:
            if not INSTANCE_TYPE.fullmatch(t):
                raise ValueError(f"{t!r} is not an ECS instance type (expected the form ecs.<family>.<size>)")
        if len(set(v)) != len(v):
            raise ValueError("instance types must not repeat")
        return v

    @field_validator("vswitch_ids")
    @classmethod
    def _vswitches(cls, v: list[str]) -> list[str]:
        if not 1 <= len(v) <= 8:
            raise ValueError(f"must list 1 to 8 vSwitch ids, got {len(v)}")
        for s in v:
            if not VSWITCH_ID.fullmatch(s):
                raise ValueError(f"{s!r} is not a vSwitch id (expected vsw- followed by lowercase letters/digits)")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return _labels(v)

    @model_validator(mode="after")
    def _consistent(self) -> NodePoolSpec:
        if self.min_instances > self.max_instances:
            raise _FieldError(
                "max_instances",
                f"min_instances ({self.min_instances}) must be <= max_instances ({self.max_instances})",
            )
        if self.key_pair and self.login_password:
            raise _FieldError("login_password", "set key_pair or login_password, not both")
        limited = {p.instance_type for p in self.spot_price_limits}
        if unknown := limited - set(self.instance_types):
            raise _FieldError(
                "spot_price_limits",
                f"spot_price_limits names instance types not in instance_types: {sorted(unknown)}",
            )
        if self.spot_strategy == "SpotWithPriceLimit" and self.billing == "spot" and not self.spot_price_limits:
            raise _FieldError("spot_price_limits", "spot_strategy SpotWithPriceLimit needs spot_price_limits")
        if self.compensate_with_on_demand and self.multi_az_policy != "COST_OPTIMIZED" and self.billing == "spot":
            # ACK: compensate_with_on_demand only applies with multi_az_policy=COST_OPTIMIZED.
            raise _FieldError(
                "compensate_with_on_demand", "compensate_with_on_demand requires multi_az_policy COST_OPTIMIZED"
            )
        return self


class ModelSpec(_Model):
    """Step 2: the trained model, in TF Serving's layout ``<base>/<version>/...``."""

    name: str = Field(default="chnsenticorp", description="Model name TF Serving serves it under")
    local_dir: Path | None = Field(
        default=None,
        strict=False,
        description=f"Local model base directory holding one sub-directory per numeric version. {SANDBOX_VALUE}",
    )
    source_uri: str | None = Field(
        default=None,
        description="Where the model comes from when not local: oss://bucket/prefix (copied inside OSS)",
    )
    version_policy: str = Field(
        default="specific:1623831335", description="Versions to serve: latest[:N] | all | specific:N[,N...]"
    )
    upload_part_size: int = Field(
        default=8 * 1024 * 1024, ge=100 * 1024, le=5 * 1024**3, description="Multipart part size in bytes"
    )
    # OSS PutObject takes at most 5 GiB; bigger files must go up in parts (OSS "PutObject" limits).
    multipart_threshold: int = Field(
        default=16 * 1024 * 1024, ge=100 * 1024, le=5 * 1024**3,
        description="Files at least this big go up in parallel parts",
    )
    upload_threads: int = Field(default=4, ge=1, le=64, description="Parallel part uploads per file")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # It is also the value of the pods' `modelName` label, hence the label-value rule.
        if not re.fullmatch(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$", v):
            raise ValueError(
                f"model name {v!r} must be 1-63 characters of letters, digits, '_', '.' or '-', "
                "starting and ending with a letter or digit"
            )
        return v

    @field_validator("version_policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if not VERSION_POLICY.fullmatch(v):
            raise ValueError(f"version policy {v!r} must be latest[:N] | all | specific:N[,N...]")
        return v

    @field_validator("source_uri")
    @classmethod
    def _source(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = re.fullmatch(r"oss://([^/]+)(/.*)?", v)
        if not m:
            raise ValueError(f"source_uri {v!r} must be oss://bucket/prefix")
        if not OSS_BUCKET.fullmatch(m.group(1)):
            raise ValueError(f"source_uri bucket {m.group(1)!r} breaks the OSS bucket naming rules")
        return v

    @model_validator(mode="after")
    def _layout(self) -> ModelSpec:
        if self.local_dir is not None and self.source_uri is not None:
            raise _FieldError("source_uri", "set local_dir or source_uri, not both: the model has one source")
        if self.local_dir is not None:
            try:
                check_model_layout(self.local_dir, self.versions_wanted())
            except ValueError as exc:
                raise _FieldError("local_dir", str(exc)) from None
        return self

    def versions_wanted(self) -> list[int] | None:
        """The versions the policy names explicitly (``specific``), else None."""
        if self.version_policy.startswith("specific:"):
            return [int(x) for x in self.version_policy.split(":", 1)[1].split(",")]
        return None

    def model_config_policy(self) -> str:
        """The ``model_version_policy`` block of TF Serving's model config (model_server_config.proto)."""
        p = self.version_policy
        if p == "all":
            return "all {}"
        if p.startswith("latest"):
            n = int(p.split(":", 1)[1]) if ":" in p else 1
            return f"latest {{ num_versions: {n} }}"
        versions = " ".join(f"versions: {v}" for v in self.versions_wanted() or [])
        return f"specific {{ {versions} }}"


def check_model_layout(base: Path, wanted: list[int] | None = None) -> list[int]:
    """Check TF Serving's ``<base>/<version>/...`` layout; return the numeric versions found.

    TF Serving's file system storage path source treats every all-digit sub-directory of the base path as a
    version (tensorflow_serving/sources/storage_path/file_system_storage_path_source.cc).
    """
    base = Path(base)
    if not base.is_dir():
        raise ValueError(f"model directory {str(base)!r} does not exist or is not a directory")
    versions = sorted(int(p.name) for p in base.iterdir() if p.is_dir() and re.fullmatch(r"[0-9]+", p.name))
    if not versions:
        raise ValueError(
            f"model directory {str(base)!r} has no version sub-directory: TF Serving expects <base>/<version>/..."
            " with a numeric version such as 1623831335"
        )
    for v in versions:
        vdir = base / str(v)
        if not any(vdir.iterdir()):
            raise ValueError(f"model version directory {str(vdir)!r} is empty")
        if not ((vdir / "saved_model.pb").exists() or (vdir / "saved_model.pbtxt").exists()
                or (vdir / "model.json").exists()):
            raise ValueError(
                f"model version directory {str(vdir)!r} holds neither a SavedModel (saved_model.pb) nor a demo "
                "model (model.json)"
            )
    if wanted:
        missing = [v for v in wanted if v not in versions]
        if missing:
            raise ValueError(
                f"version policy names versions {missing} that are not in {str(base)!r} (found {versions})"
            )
    return versions


# --- free-form Kubernetes fragments -----------------------------------------------------------------------------
# Checked against the Kubernetes 1.33 OpenAPI schemas that kubernetes-validate ships (the "local-strict" set, which
# refuses unknown fields), then against the rules the API server adds that a schema cannot express.
K8S_SCHEMA_VERSION = "1.33"
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


@functools.cache
def _k8s_validator(definition: str) -> Any:
    import jsonschema
    import kubernetes_validate
    from referencing import Registry, Resource

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    folder = sorted(base.glob(f"v{K8S_SCHEMA_VERSION}.*-local-strict"))[-1]
    doc = json.loads((folder / "_definitions.json").read_text())
    registry = Resource.from_contents(doc) @ Registry()
    return jsonschema.Draft202012Validator({"$ref": f"{doc['$id']}#/$defs/{definition}"}, registry=registry)


def _check_schema(value: Any, definition: str, where: str) -> None:
    errors = sorted(_k8s_validator(definition).iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = errors[0]
        path = ".".join(str(p) for p in (where, *err.absolute_path) if str(p))
        message = err.message if len(err.message) <= 160 else err.message[:160] + "..."
        raise _FieldError(path, f"{message} (Kubernetes {K8S_SCHEMA_VERSION} schema of {definition.rsplit('.', 1)[-1]})")


def _int_in(value: Any, low: int, high: int, where: str, what: str) -> None:
    if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise _FieldError(where, f"{what} must be an integer from {low} to {high}")


def check_toleration(toleration: Any, where: str = "") -> None:
    """One pod toleration: the core/v1 Toleration schema plus ValidateTolerations (pkg/apis/core/validation)."""
    _check_schema(toleration, "io.k8s.api.core.v1.Toleration", where)
    key, op, value = toleration.get("key") or "", toleration.get("operator") or "Equal", toleration.get("value") or ""
    effect = toleration.get("effect") or ""
    if key:
        try:
            _label_key(key)
        except ValueError as exc:
            raise _FieldError(f"{where}.key", str(exc)) from None
    elif op != "Exists":
        raise _FieldError(f"{where}.operator", "operator must be Exists when key is empty")
    if op == "Equal":
        try:
            _label_value(value)
        except ValueError as exc:
            raise _FieldError(f"{where}.value", str(exc)) from None
    elif op == "Exists":
        if value:
            raise _FieldError(f"{where}.value", "value must be empty when operator is Exists")
    else:
        raise _FieldError(f"{where}.operator", f"operator {op[:40]!r} must be Equal or Exists")
    if effect not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise _FieldError(f"{where}.effect", f"effect {effect[:40]!r} must be NoSchedule, PreferNoSchedule or NoExecute")
    if toleration.get("tolerationSeconds") is not None:
        if effect != "NoExecute":
            raise _FieldError(f"{where}.effect", "effect must be NoExecute when tolerationSeconds is set")
        _int_in(toleration["tolerationSeconds"], -INT64_MAX - 1, INT64_MAX, f"{where}.tolerationSeconds",
                "tolerationSeconds")


def check_hpa_behavior(behavior: Any) -> None:
    """HPA spec.behavior: the autoscaling/v2 schema plus validateBehavior (pkg/apis/autoscaling/validation):
    stabilizationWindowSeconds 0-3600 (MaxStabilizationWindowSeconds), selectPolicy Max|Min|Disabled, at least
    one policy, each of type Pods|Percent with value > 0 and periodSeconds 1-1800 (MaxPeriodSeconds)."""
    _check_schema(behavior, "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior", "")
    for direction in ("scaleUp", "scaleDown"):
        rules = behavior.get(direction)
        if rules is None:
            continue
        _int_in(rules.get("stabilizationWindowSeconds"), 0, 3600, f"{direction}.stabilizationWindowSeconds",
                "stabilizationWindowSeconds")
        if rules.get("selectPolicy") not in (None, "Max", "Min", "Disabled"):
            raise _FieldError(f"{direction}.selectPolicy", "selectPolicy must be Max, Min or Disabled")
        policies = rules.get("policies")
        if policies is not None and not policies:
            raise _FieldError(f"{direction}.policies", "must specify at least one policy")
        for i, policy in enumerate(policies or []):
            where = f"{direction}.policies.{i}"
            if policy.get("type") not in ("Pods", "Percent"):
                raise _FieldError(f"{where}.type", "type must be Pods or Percent")
            _int_in(policy.get("value"), 1, INT32_MAX, f"{where}.value", "value")
            _int_in(policy.get("periodSeconds"), 1, 1800, f"{where}.periodSeconds", "periodSeconds")


def check_predict_body(path: Path) -> None:
    """A TF Serving REST ``:predict`` body: a JSON object of at most 1 MiB with "instances" or "inputs"."""
    try:
        if not path.is_file():
            raise ValueError(f"payload_file {str(path)[:200]!r} does not exist or is not a regular file")
        if path.stat().st_size > PAYLOAD_MAX_BYTES:
            raise ValueError(
                f"payload_file {str(path)[:200]!r} is larger than {PAYLOAD_MAX_BYTES} bytes: the ingress (nginx's "
                "default client_max_body_size 1m) would answer 413"
            )
        body = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"payload_file {str(path)[:200]!r} cannot be read: {exc}") from None
    except RecursionError:
        raise ValueError(f"payload_file {str(path)[:200]!r} is nested too deeply") from None
    except ValueError as exc:
        if "payload_file" in str(exc):
            raise
        raise ValueError(f"payload_file {str(path)[:200]!r} is not JSON: {exc}") from None
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise ValueError(
            f"payload_file {str(path)[:200]!r} is not a TF Serving predict body: a JSON object with either "
            '"instances" (row format) or "inputs" (columnar format)'
        )
    if "instances" in body and not (isinstance(body["instances"], list) and body["instances"]):
        raise ValueError(f'payload_file {str(path)[:200]!r}: "instances" must be a non-empty list')
    if not isinstance(body.get("signature_name", ""), str):
        raise ValueError(f'payload_file {str(path)[:200]!r}: "signature_name" must be a string')


# --- reading spec files -------------------------------------------------------------------------------------------
# A spec is a few KiB. Bounds on the input, its nesting and its size once YAML aliases are expanded keep a hostile
# file (/dev/zero, "billion laughs" alias bombs, thousands of nested brackets) from exhausting memory or the stack.
SPEC_MAX_BYTES = 1024 * 1024
SPEC_MAX_DEPTH = 32
SPEC_MAX_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with a nesting limit while composing (the composer recurses once per level)."""

    _depth = 0
    max_depth = SPEC_MAX_DEPTH

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"nested deeper than {self.max_depth} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _measure(root: yaml.Node, max_depth: int = SPEC_MAX_DEPTH, max_nodes: int = SPEC_MAX_NODES) -> None:
    """Refuse a node graph whose alias-expanded tree is too big or too deep, or that refers to itself.

    The composer shares a node between its anchor and every alias, so ten levels of ten aliases stay small in
    the graph but are 10^10 nodes once a consumer walks them (the "billion laughs"); the sizes are computed on the
    graph, each node once, without recursion.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            kids = children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > max_nodes:
                raise yaml.YAMLError(f"more than {max_nodes} values once aliases are expanded (an alias bomb?)")
            if depth[key] > max_depth:
                raise yaml.YAMLError(f"nested deeper than {max_depth} levels once aliases are expanded")
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise yaml.YAMLError("an alias refers to a node that contains it (a recursive structure)")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in children(node) if id(k) not in size)


def load_yaml(text: str | bytes, max_depth: int = SPEC_MAX_DEPTH, max_nodes: int = SPEC_MAX_NODES) -> Any:
    """``yaml.safe_load`` with bounds on nesting and on the size once aliases are expanded (yaml.YAMLError)."""
    loader = _BoundedLoader(text)
    loader.max_depth = max_depth
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, max_depth, max_nodes)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _json_depth_ok(data: Any) -> bool:
    stack = [(data, 1)]
    while stack:
        value, level = stack.pop()
        if level > SPEC_MAX_DEPTH:
            return False
        if isinstance(value, dict):
            stack.extend((v, level + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, level + 1) for v in value)
    return True


def read_small_file(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of a file (the caller refuses more).

    Opened without blocking and checked before a byte is read: a FIFO would block the open until a writer comes
    and then hang the read, so only regular files and character devices are read (/dev/zero is read up to the
    bound and refused as too large). OSError (with a strerror) for anything else.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, min(1 << 16, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_spec_data(path: Path) -> Any:
    """The parsed content of a spec file (YAML or JSON by suffix), bounded; SpecError for anything unreadable."""
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        raw = read_small_file(path, SPEC_MAX_BYTES)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc.strerror or exc}") from None
    if len(raw) > SPEC_MAX_BYTES:
        raise SpecError(f"{path}: the spec is larger than {SPEC_MAX_BYTES} bytes; a deploy spec is a few KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: the spec is not UTF-8 text (byte {exc.start})") from None
    try:
        if kind == "JSON":
            data = json.loads(text)
            if not _json_depth_ok(data):
                raise ValueError(f"nested deeper than {SPEC_MAX_DEPTH} levels")
        else:
            data = load_yaml(text)
    except RecursionError:
        raise SpecError(f"{path}: not valid {kind}: nested deeper than {SPEC_MAX_DEPTH} levels") from None
    except yaml.MarkedYAMLError as exc:
        # the problem and where, without PyYAML's snippet of the file (which would echo its lines back)
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        detail = " ".join(str(exc.problem or exc.context or "malformed").split())
        raise SpecError(f"{path}: not valid {kind}: {detail[:200]}{where}") from None
    except (ValueError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())
        raise SpecError(f"{path}: not valid {kind}: {detail[:300]}") from None
    return data


class StorageSpec(_Model):
    """Step 3: the OSS bucket and its PV/PVC (CSI driver ossplugin.csi.alibabacloud.com)."""

    bucket: str = Field(default="elastic-inference-models", description=f"OSS bucket holding the model. {SANDBOX_VALUE}")
    oss_url: str | None = Field(
        default=None,
        description="OSS endpoint the CSI driver mounts from; default: the region's internal endpoint",
    )
    path: str = Field(default="/", description="Bucket path mounted at the serving data mount point")
    pv_name: str = Field(default="model-csi-pv", description="PersistentVolume name (= CSI volumeHandle)")
    pvc_name: str = Field(default="model-pvc", description="PersistentVolumeClaim name")
    capacity: str = Field(default="5Gi", description="PV capacity and PVC request, a Kubernetes quantity (5Gi)")
    access_modes: list[Literal["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce"]] = Field(
        default_factory=lambda: ["ReadWriteMany"], description="Access modes of the PV and PVC"
    )
    reclaim_policy: Literal["Retain", "Delete"] = Field(default="Retain", description="PV reclaim policy")
    other_opts: str = Field(
        default="-o max_stat_cache_size=0 -o allow_other", description="ossfs mount options (otherOpts)"
    )
    auth: Literal["secret", "rrsa"] = Field(
        default="secret",
        description="How the CSI driver authenticates: a Secret with akId/akSecret, or RRSA (a RAM role)",
    )
    rrsa_role_name: str | None = Field(default=None, description="RAM role for RRSA (auth=rrsa)")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not OSS_BUCKET.fullmatch(v):
            raise ValueError(
                f"bucket {v!r} breaks the OSS bucket naming rules: 3-63 characters of lowercase letters, digits "
                "and '-', starting and ending with a letter or digit"
            )
        return v

    @field_validator("pv_name", "pvc_name")
    @classmethod
    def _k8s_name(cls, v: str) -> str:
        return _dns_subdomain(_dns_label(v))

    @field_validator("capacity")
    @classmethod
    def _capacity(cls, v: str) -> str:
        if not QUANTITY.fullmatch(v):
            raise ValueError(f"capacity {v[:80]!r} is not a Kubernetes quantity such as 5Gi")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if len(v) > 1023 or not CLEAN_PATH.fullmatch(v) or ".." in PurePosixPath(v).parts:
            # OSS object keys are at most 1023 bytes (OSS "Object naming conventions").
            raise ValueError(
                f"path {v[:80]!r} must be an absolute bucket path such as / or /models (at most 1023 characters, "
                "no whitespace, control characters or '..')"
            )
        return v

    @field_validator("other_opts")
    @classmethod
    def _other_opts(cls, v: str) -> str:
        if v and (len(v) > 4096 or not OSSFS_OPTS.fullmatch(v)):
            raise ValueError(
                f"other_opts {v[:80]!r} must be ossfs options '-o name[=value]' separated by single spaces, "
                "without newlines, tabs, quotes or shell characters"
            )
        return v

    @field_validator("oss_url")
    @classmethod
    def _oss_url(cls, v: str | None) -> str | None:
        if v is not None and not OSS_ENDPOINT.fullmatch(v):
            raise ValueError(f"oss_url {v[:80]!r} must be an OSS endpoint host such as "
                             "oss-cn-hangzhou-internal.aliyuncs.com (optionally with http(s)://)")
        return v

    @field_validator("rrsa_role_name")
    @classmethod
    def _role(cls, v: str | None) -> str | None:
        if v is not None and not RAM_ROLE.fullmatch(v):
            raise ValueError(f"rrsa_role_name {v[:80]!r} must be a RAM role name: 1-64 letters, digits, '.' or '-'")
        return v

    @field_validator("access_modes")
    @classmethod
    def _modes(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one access mode is required")
        return v

    @model_validator(mode="after")
    def _auth(self) -> StorageSpec:
        if self.auth == "rrsa" and not self.rrsa_role_name:
            raise _FieldError("rrsa_role_name", "auth rrsa needs rrsa_role_name")
        return self


def arena_default_version() -> str:
    """arena's default serving version: the current UTC time as YYYYMMDDhhmm (pkg/argsbuilder/serving.go)."""
    return datetime.now(UTC).strftime("%Y%m%d%H%M")


class ServingSpec(_Model):
    """Step 4: TF Serving, rendered as ``arena serve tensorflow`` does."""

    name: str = Field(default="bert-tfserving", description="Serving name (arena --name)")
    version: str = Field(
        default_factory=arena_default_version,
        description="Serving version (arena --version); default: the time of validation as YYYYMMDDhhmm. "
        "Pin it for repeatable deploys.",
    )
    namespace: str = Field(default="default", description="Namespace of every Kubernetes object")
    image: str = Field(default="tensorflow/serving:1.15.0-gpu", description="TF Serving image")
    gpus: int = Field(default=1, ge=0, le=16, description="nvidia.com/gpu per replica (limits and requests)")
    cpu: str | None = Field(default=None, description="CPU limit per replica, e.g. 4")
    memory: str | None = Field(default=None, description="Memory limit per replica, e.g. 8Gi")
    selector: dict[str, str] | None = Field(
        default=None, description="nodeSelector (arena --selector); default: the node pool's labels"
    )
    mount_path: str = Field(default="/models", description="Where the PVC is mounted (arena --data pvc:PATH)")
    model_path: str = Field(
        default="/models/tensorflow",
        description="Directory of the models on the volume; each release reads its own <model_path>/<release>",
    )
    port: int = Field(default=8500, ge=1, le=65535, description="TF Serving gRPC port")
    rest_api_port: int = Field(default=8501, ge=1, le=65535, description="TF Serving REST API port (the Service port the Ingress sends to)")
    replicas: int = Field(default=1, ge=0, le=1000, description="Initial replicas (the HPA takes over)")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Pod tolerations")

    @field_validator("tolerations")
    @classmethod
    def _tolerations(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, toleration in enumerate(v):
            check_toleration(toleration, str(i))
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        _dns_label(v, "serving name")
        if not DNS1035_LABEL.fullmatch(v):
            # The Service is named after it, and Service names are DNS-1035 labels.
            raise ValueError(f"serving name {v!r} must start with a lowercase letter (it names the Service)")
        return v

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        return _dns_label(v, "namespace")

    @field_validator("version", mode="before")
    @classmethod
    def _version_default(cls, v: Any) -> Any:
        # An explicit null (a cleared field in the Prefect UI form) means the default too.
        return arena_default_version() if v is None else v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return _dns_label(v, "serving version")

    @field_validator("selector")
    @classmethod
    def _selector(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return None if v is None else _labels(v)

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not v or len(v) > 512 or not IMAGE_REF.fullmatch(v):
            raise ValueError(
                f"image {v[:80]!r} must be an image reference name[:tag][@digest] (distribution/reference grammar)"
            )
        return v

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, v: str | None) -> str | None:
        if v is not None and not QUANTITY.fullmatch(v):
            raise ValueError(f"{v!r} is not a Kubernetes quantity")
        return v

    @field_validator("mount_path", "model_path")
    @classmethod
    def _abs(cls, v: str) -> str:
        if len(v) > 4096 or not CLEAN_PATH.fullmatch(v) or ".." in PurePosixPath(v).parts:
            # 4096: PATH_MAX of Linux, where the container runs.
            raise ValueError(
                f"{v[:80]!r} must be an absolute container path (no whitespace, control characters or '..')"
            )
        return v.rstrip("/") or "/"

    @model_validator(mode="after")
    def _paths(self) -> ServingSpec:
        if self.port == self.rest_api_port:
            raise _FieldError("rest_api_port", "port and rest_api_port must differ")
        mount = PurePosixPath(self.mount_path)
        model = PurePosixPath(self.model_path)
        if model != mount and mount not in model.parents:
            raise _FieldError(
                "model_path",
                f"model_path {self.model_path!r} must lie under the data mount_path {self.mount_path!r}, "
                "or TF Serving cannot see the model"
            )
        return self


class AutoscalingSpec(_Model):
    """Step 5: HPA (autoscaling/v2) on the SLS ingress QPS external metric."""

    min_replicas: int = Field(default=1, ge=1, le=1000, description="HPA minReplicas")
    max_replicas: int = Field(default=10, ge=1, le=1000, description="HPA maxReplicas")
    target_qps: int = Field(
        default=10, ge=1, le=MAX_TARGET_QPS, description="Average QPS per replica that triggers scale-out"
    )
    metric_name: Literal["sls_ingress_qps", "sls_alb_ingress_qps"] = Field(
        default="sls_ingress_qps", description="External metric served by alibaba-cloud-metrics-adapter"
    )
    logstore: str = Field(default="nginx-ingress", description="SLS logstore of the ingress access logs")
    behavior: dict[str, Any] | None = Field(
        default=None, description="HPA spec.behavior (autoscaling/v2); default: Kubernetes defaults"
    )

    @field_validator("behavior")
    @classmethod
    def _behavior(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            check_hpa_behavior(v)
        return v

    @model_validator(mode="after")
    def _range(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise _FieldError(
                "max_replicas", f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})"
            )
        return self

    @field_validator("logstore")
    @classmethod
    def _logstore(cls, v: str) -> str:
        # Also a label value in the HPA's metric selector (sls.logstore).
        if not SLS_LOGSTORE.fullmatch(v):
            raise ValueError(
                f"logstore {v!r} breaks the SLS logstore naming rules: 2-63 characters of lowercase letters, "
                "digits, '-' and '_', starting and ending with a letter or digit"
            )
        return v


class IngressSpec(_Model):
    """Step 6: the internet-facing Ingress."""

    host: str = Field(default="test.example.com", description="Host name of the rule")
    path: str = Field(default="/", description="Path of the rule")
    path_type: Literal["ImplementationSpecific", "Prefix", "Exact"] = Field(
        default="ImplementationSpecific", description="Path type (the console's default rule)"
    )
    class_name: str = Field(default="nginx", description="IngressClass of the Ingress (spec.ingressClassName)")
    service_port: int = Field(default=8501, ge=1, le=65535, description="Service port the rule sends to")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return _dns_subdomain(v, "ingress host")

    @field_validator("class_name")
    @classmethod
    def _class(cls, v: str) -> str:
        return _dns_subdomain(v, "ingress class name")

    @model_validator(mode="after")
    def _path(self) -> IngressSpec:
        v = self.path
        strict = self.path_type in ("Prefix", "Exact")
        if len(v) > 1024 or not (INGRESS_PATH_STRICT if strict else INGRESS_PATH_ANY).fullmatch(v):
            rule = ("'/' then letters, digits, '_', '-' and '/' (ingress-nginx's rule for Prefix and Exact paths)"
                    if strict else "'/' then printable characters without whitespace")
            raise _FieldError("path", f"path {v[:80]!r} must be {rule}, at most 1024 characters")
        return self


# Bounds of the load test (it runs inside the flow, no cloud API limits it): a stage lasts at most a day, a user
# waits at most an hour between requests, Locust starts at most as many users per second as the test has.
DAY_S = 86400.0


class LoadStage(_Model):
    duration_s: float = Field(gt=0, le=DAY_S, description="Length of the stage in seconds")
    users: int = Field(ge=0, le=10000, description="Concurrent users")
    spawn_rate: float = Field(default=10, gt=0, le=10000, description="Users started per second")


class LoadTestSpec(_Model):
    """Step 7: the stress test through the Ingress (Locust, step shape)."""

    enabled: bool = Field(default=True, description="Run the load test")
    stages: list[LoadStage] = Field(
        default_factory=lambda: [
            LoadStage(duration_s=60, users=5, spawn_rate=5),
            LoadStage(duration_s=120, users=40, spawn_rate=10),
            LoadStage(duration_s=120, users=40, spawn_rate=10),
        ],
        description="Step load: each stage holds its user count for its duration",
    )
    wait_time_s: float = Field(default=1.0, ge=0, le=3600, description="Pause of each user between requests")
    payload_file: Path | None = Field(
        default=None, strict=False, description="A :predict body to send instead of generated"
    )
    sample_interval_s: float = Field(default=5.0, gt=0, le=3600, description="Timeline sampling period (seconds)")

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: list[LoadStage]) -> list[LoadStage]:
        if not 1 <= len(v) <= 100:
            raise ValueError(f"give 1 to 100 load stages, got {len(v)}")
        return v

    @field_validator("payload_file")
    @classmethod
    def _payload(cls, v: Path | None) -> Path | None:
        if v is not None:
            check_predict_body(v)
        return v


class VerificationSpec(_Model):
    """Step 8: what the deploy must prove."""

    max_error_rate: float = Field(default=0.01, ge=0, le=1, description="SLO: failed share of requests")
    p95_ms: float = Field(
        default=1000, gt=0, le=DAY_S * 1000, description="SLO: p95 latency of the final stage, milliseconds"
    )
    require_scale_out: bool = Field(default=True, description="Fail unless the HPA and the pool scaled out")
    require_mix: bool = Field(default=True, description="Fail unless pay-as-you-go and spot both appear")
    fail_on_unexplained_mix: bool = True
    """Fail when the pay-as-you-go count is off the mix rule by more than the observed scale-in explains."""


# The canary header as nginx lets it through: ``ngx_http_parse_header_line`` (nginx src/http/ngx_http_parse.c) marks
# a header name with any character other than letters, digits and ``-`` invalid (``_`` too unless
# ``underscores_in_headers on``), and with ``ignore_invalid_headers on`` (ingress-nginx's ConfigMap default
# ``ignore-invalid-headers: "true"``, ``enable-underscores-in-headers: "false"``, as on ACK) the request header is
# dropped before ``canary-by-header`` is looked at: the canary would never be selected.
_HEADER_NAME = re.compile(r"[0-9A-Za-z-]{1,64}")
MAX_CANARY_STEPS = 20


class RolloutSpec(_Model):
    """How a new version replaces a live one (a deploy whose host and path already serve a version)."""

    strategy: Literal["canary", "blue-green"] = Field(
        default="canary",
        description="canary: stress test the new version alone, then shift user traffic in steps; blue-green: "
        "stress test it alone, then switch all traffic at once and keep the old version through a bake window",
    )
    steps: list[int] = Field(
        default_factory=lambda: [10, 30, 60],
        description="Canary weights (percent of user traffic) held one after another before promotion",
    )
    step_seconds: float = Field(default=60, gt=0, le=DAY_S, description="Analysis window of each step, seconds")
    bake_seconds: float = Field(
        default=60, ge=0, le=DAY_S, description="blue-green: how long the old version stays ready after the switch"
    )
    drain_seconds: float = Field(
        default=30, ge=0, le=3600,
        description="After traffic leaves a version: how long its replicas stay for requests in flight",
    )
    max_error_rate: float | None = Field(
        default=None, ge=0, le=1,
        description="Roll back when the new version fails more than this share of requests (default: the "
        "verification SLO)",
    )
    max_p95_ms: float | None = Field(
        default=None, gt=0, le=DAY_S * 1000,
        description="Roll back when the new version's p95 latency exceeds this, ms (default: the verification SLO)",
    )
    min_requests: int = Field(
        default=20, ge=1, le=10_000_000, description="Requests a step must see for its analysis to count"
    )
    analysis_rps: float = Field(
        default=5, gt=0, le=1000, description="Requests per second the analysis sends to the new version"
    )
    keep_versions: int = Field(
        default=2, ge=1, le=20,
        description="Versions kept after a promotion, the live one included (retired ones at zero replicas)",
    )
    header: str = Field(
        default="X-Canary",
        description="Header that selects the new version (its value is the serving version) for the isolated "
        "stress test and the analysis",
    )

    preview_host: str | None = Field(
        default=None,
        description="Host of the preview Ingress the isolated stress test goes through, so that its requests are "
        "counted on the new release's own route (default: preview.<ingress host>). The flow sends to the ingress "
        "address with this Host header: no DNS record is needed for the rollout, only for people who want to "
        "open the preview themselves",
    )

    @field_validator("preview_host")
    @classmethod
    def _preview_host(cls, v: str | None) -> str | None:
        return None if v is None else _dns_subdomain(v, "rollout.preview_host")

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        if not 1 <= len(v) <= MAX_CANARY_STEPS:
            raise ValueError(f"give 1 to {MAX_CANARY_STEPS} canary steps, got {len(v)}")
        if any(not 1 <= w <= 100 for w in v):
            raise ValueError(f"canary weights are percentages from 1 to 100, got {v}")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"canary weights must increase step by step, got {v}")
        return v

    @field_validator("header")
    @classmethod
    def _header(cls, v: str) -> str:
        if not _HEADER_NAME.fullmatch(v):
            raise ValueError(
                f"rollout.header {v[:80]!r} must be 1-64 letters, digits and '-': nginx drops request headers with "
                "any other character (ignore_invalid_headers, on in ingress-nginx), so canary-by-header would "
                "never match"
            )
        if v.lower() in ("host", "content-length", "content-type", "cookie", "connection", "transfer-encoding"):
            raise ValueError(f"header {v!r} is a header HTTP itself uses; pick a name of your own")
        return v


class DeploySpec(_Model):
    """Every parameter of one elastic inference deploy."""

    cluster_id: str | None = Field(
        default=None, description="ACK cluster id; default: the one of the cluster block the flow runs with"
    )
    node_pool: NodePoolSpec = Field(default_factory=NodePoolSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    ingress: IngressSpec = Field(default_factory=IngressSpec)
    load_test: LoadTestSpec = Field(default_factory=LoadTestSpec)
    verification: VerificationSpec = Field(default_factory=VerificationSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)

    @field_validator("cluster_id")
    @classmethod
    def _cluster(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"^c[a-z0-9]{8,40}$", v):
            raise ValueError(f"cluster_id {v!r} is not an ACK cluster id (c followed by lowercase hex)")
        return v

    @model_validator(mode="after")
    def _cross(self) -> DeploySpec:
        self._check_derived_names()
        if self.preview_host == self.ingress.host:
            raise _FieldError(
                "rollout.preview_host",
                f"rollout.preview_host {self.preview_host!r} must differ from ingress.host: the preview Ingress "
                "needs a host of its own, or its requests would be counted on the users' route",
            )
        if len(self.preview_host) > 253:
            raise _FieldError(
                "rollout.preview_host",
                f"the preview host preview.<ingress.host> is {len(self.preview_host)} characters (at most 253): "
                "set rollout.preview_host",
            )
        if self.ingress.service_port != self.serving.rest_api_port:
            raise _FieldError(
                "ingress.service_port",
                f"ingress.service_port ({self.ingress.service_port}) must be the serving rest_api_port "
                f"({self.serving.rest_api_port})",
            )
        selector = self.serving.selector or self.node_pool.labels
        if not all(self.node_pool.labels.get(k) == v for k, v in selector.items()):
            raise _FieldError(
                "serving.selector",
                f"serving.selector {selector} does not match node_pool.labels {self.node_pool.labels}: "
                "the pods could never land on the elastic pool",
            )
        if self.autoscaling.max_replicas > self.node_pool.max_instances * max(1, self._replicas_per_node_bound()):
            raise _FieldError(
                "autoscaling.max_replicas",
                f"autoscaling.max_replicas ({self.autoscaling.max_replicas}) can never fit on "
                f"node_pool.max_instances ({self.node_pool.max_instances}) nodes"
            )
        return self

    def _check_derived_names(self) -> None:
        """Names built from several fields must still obey the rules of the place they end up in."""
        s = self.serving
        version_defaulted = "version" not in s.model_fields_set
        version = f"{s.version} (the default, the time of validation)" if version_defaulted else repr(s.version)
        release = f"{s.name}-{s.version}"
        # `release` is a pod label value (and the Deployment's selector): at most 63 characters.
        # (Helm itself caps release names at 53; arena would refuse beyond that, we render without Helm.)
        if len(release) > NAME_MAX:
            raise _FieldError(
                "serving.version" if not version_defaulted else "serving.name",
                f"serving name {s.name!r} + version {version} make the release label {release!r} "
                f"({len(release)} characters); a label value holds at most {NAME_MAX}: shorten the name or version",
            )
        # The HPA selects the SLS metric with the label sls.ingress.route={namespace}-{service}-{port}: a label
        # value too, so at most 63 characters, or the HPA controller cannot parse its own metric selector.
        route = f"{s.namespace}-{serving_fullname(release)}-{s.rest_api_port}"
        if len(route) > NAME_MAX:
            raise _FieldError(
                "serving.name",
                f"the SLS route {route!r} ({{namespace}}-{{service}}-{{port}}, from serving.namespace "
                f"{s.namespace!r}, serving.name {s.name!r}, version {version}) is {len(route)} characters; the "
                f"HPA's sls.ingress.route label selector allows at most {NAME_MAX}: shorten the namespace, "
                "name or version",
            )

    def _replicas_per_node_bound(self) -> int:
        # Without knowing instance sizes here, a GPU replica needs >= 1 GPU; big types have up to 8.
        return 8 if self.serving.gpus else 110

    # ---- derived names -----------------------------------------------------------------------------------------
    def with_cluster(self, cluster_id: str) -> DeploySpec:
        return self.model_copy(update={"cluster_id": cluster_id})

    @property
    def names(self) -> DerivedNames:
        return DerivedNames.of(self)

    @property
    def preview_host(self) -> str:
        """The preview Ingress's host: ``rollout.preview_host``, else ``preview.<ingress host>``."""
        return self.rollout.preview_host or f"preview.{self.ingress.host}"

    # ---- loading -----------------------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> DeploySpec:
        """Load from YAML or JSON (chosen by suffix; YAML is a superset of JSON so either parses)."""
        path = Path(path)
        data = read_spec_data(path)
        if data is None or data == {}:
            raise SpecError(f"{path}: the spec is empty; give at least the groups that differ from the defaults")
        if not isinstance(data, dict):
            raise SpecError(f"{path}: the spec must be a mapping at the top level, not a {type(data).__name__}")
        groups = set(cls.model_fields)
        if not any(isinstance(k, str) and k in groups for k in data):
            # A file that is no deploy spec at all (a config file behind a symlink, say): say so without echoing
            # its keys, which would print its lines back
            raise SpecError(f"{path}: not a deploy spec: none of its {len(data)} top-level keys is a spec group "
                            f"({', '.join(sorted(groups))})")
        # Relative local paths are relative to the spec file's folder, not to the working directory.
        base = path.parent
        for group, key in (("model", "local_dir"), ("load_test", "payload_file")):
            section = data.get(group)
            value = section.get(key) if isinstance(section, dict) else None
            if isinstance(value, str) and value and "\0" not in value and not Path(value).is_absolute():
                section[key] = str((base / value).resolve())
        return cls.parse(data, source=str(path))

    def require_model_source(self, source: str = "spec") -> None:
        """A deploy uploads or copies the model: exactly one of model.local_dir and model.source_uri.

        (``--plan`` renders without a source, so the seed example with its FILL-IN stays plannable.)
        """
        if self.model.local_dir is None and self.model.source_uri is None:
            raise SpecError(
                f"{source}: invalid deploy spec\n  model.local_dir: set model.local_dir (a local model directory) "
                "or model.source_uri (oss://bucket/prefix): a deploy needs exactly one model source"
            )

    @classmethod
    def parse(cls, data: dict[str, Any], source: str = "spec") -> DeploySpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError.from_validation(exc, source) from None


def _printable(text: str) -> str:
    """Control and separator characters (a key "\\x1e", a value with "\\u2028") escaped: one error, one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class SpecError(ValueError):
    """A spec that breaks a rule; the message names each field and the rule."""

    @classmethod
    def from_validation(cls, exc: ValidationError, source: str) -> SpecError:
        lines = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, _FieldError):
                loc.extend(cause.field.split("."))
            field = _printable(".".join(loc)) or "(spec)"
            msg = _printable(err["msg"].removeprefix("Value error, "))
            lines.append(f"  {field}: {msg}")
        return cls(f"{source}: invalid deploy spec\n" + "\n".join(lines))


class DerivedNames(BaseModel):
    """Every name used by more than one step, computed once from the spec."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    release: str
    deployment: str
    service: str
    model_config_map: str
    model_config_file: str
    hpa: str
    ingress: str
    canary_ingress: str
    preview_ingress: str
    preview_host: str
    pv: str
    pvc: str
    volume_handle: str
    oss_secret: str
    sls_project: str | None
    sls_logstore: str
    sls_route: str
    model_oss_prefix: str
    """Where this release's model is uploaded: ``<storage.path>/<model_path relative to mount_path>/<release>/``
    in ``storage.bucket``, i.e. ``model_base_path`` as the container sees it through the OSS volume."""
    model_base_path: str
    """The model config's ``base_path``: ``<serving.model_path>/<release>``, one directory per release. TF Serving
    polls a base path every ``--file_system_poll_wait_seconds`` (1 by default: ``server.h``; the flag in
    ``model_servers/main.cc``) and loads what appears there, so releases that shared one base path would load
    each other's uploads (policy ``latest``/``all``) or overwrite each other's files (the same ``specific``
    version number). The release name ``<serving name>-<serving version>`` always has a ``-`` after a letter, so
    it never parses as a version number: a release that still reads the shared ``<model_path>`` of earlier
    deploys ignores these directories (``file_system_storage_path_source.cc``: children are versions only when
    ``absl::SimpleAtoi`` parses them, others are skipped)."""
    node_selector: dict[str, str]
    pod_labels: dict[str, str]

    @classmethod
    def of(cls, spec: DeploySpec) -> DerivedNames:
        s = spec.serving
        release = f"{s.name}-{s.version}"
        fullname = serving_fullname(release)
        # The container sees the bucket's `storage.path` at `mount_path`; the model path below it maps to the same
        # relative path in the bucket. Each release reads and is uploaded to its own directory under it,
        # `<model_path>/<release>` (see `model_base_path`), so that nothing a release uploads changes what another
        # release's pods read.
        rel = PurePosixPath(s.model_path).relative_to(PurePosixPath(s.mount_path))
        parts = [p for p in (*PurePosixPath(spec.storage.path).parts, *rel.parts) if p not in ("/", ".")]
        model_prefix = "/".join([*parts, release])
        return cls(
            namespace=s.namespace,
            release=release,
            deployment=fullname,
            service=fullname,
            model_config_map=truncate_name(f"{fullname}-cm"),
            model_config_file="/tfserving/config/model.config",
            # Each version is its own release with its own HPA (docs/rollouts.md "Releases side by side"), so the HPA carries the release.
            hpa=truncate_name(f"{release}-hpa"),
            ingress=s.name,
            canary_ingress=truncate_name(f"{s.name}-canary"),
            preview_ingress=truncate_name(f"{s.name}-preview"),
            preview_host=spec.preview_host,
            pv=spec.storage.pv_name,
            pvc=spec.storage.pvc_name,
            volume_handle=spec.storage.pv_name,
            oss_secret=truncate_name(f"{spec.storage.pv_name}-oss-secret"),
            sls_project=f"k8s-log-{spec.cluster_id}" if spec.cluster_id else None,
            sls_logstore=spec.autoscaling.logstore,
            sls_route=f"{s.namespace}-{fullname}-{s.rest_api_port}",
            model_oss_prefix=model_prefix + "/",
            model_base_path=str(PurePosixPath(s.model_path) / release),
            node_selector=dict(s.selector or spec.node_pool.labels),
            pod_labels={
                "app": CHART_NAME,
                "release": release,
                "servingName": s.name,
                "servingType": "tf-serving",
                "servingVersion": str(s.version),
                "modelName": spec.model.name,
            },
        )


SpecPath = Annotated[Path, Field(description="Path of a DeploySpec YAML or JSON file")]
