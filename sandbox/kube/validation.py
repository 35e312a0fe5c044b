"""Validation: the 1.33 OpenAPI schema (unknown fields per ``fieldValidation``) plus the semantic checks of
``pkg/apis/*/validation`` that matter to clients (names, labels, selectors vs template, immutable fields).

Errors become ``Invalid`` (422) with ``details.causes[{reason, message, field}]`` as in apimachinery
``field.ErrorList.ToAggregate``; unknown fields with ``fieldValidation=Strict`` are a 400
``strict decoding error: unknown field "spec.foo"`` (apiserver ``handlers/rest.go``), with ``Warn`` (the default)
they are dropped and reported in a ``Warning`` header.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from . import schema as sch
from .errors import bad_request, field_cause, invalid
from .resources import ResourceType
from .selectors import match_labels, selector_from_label_selector

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

CONFIG_MAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024  # apimachinery pkg/api/validation/objectmeta.go TotalAnnotationSizeLimitB

_LABEL_NAMED = {"namespaces"}
_DNS1035_NAMED = {"services"}
_FREE_NAMED = {"events", "events.events.k8s.io"}


def _field(path: list) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else ("." if s else "") + str(p)
    return s


def _go_repr(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "map[string]string{" + ", ".join(f"{json.dumps(k)}:{json.dumps(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)


def _del_path(obj: Any, path: list, key: str) -> None:
    cur = obj
    for p in path:
        try:
            cur = cur[p]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(cur, dict):
        cur.pop(key, None)


_VALID_BODIES: dict[tuple[str, bytes], bool] = {}
_META_DEF = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


class _Prefixed:
    """A metadata validation error seen from the object root."""

    def __init__(self, err: Any) -> None:
        self.__dict__.update({k: getattr(err, k) for k in ("validator", "schema", "instance", "validator_value",
                                                             "message")})
        self.absolute_path = ["metadata", *err.absolute_path]


def check_schema(rt: ResourceType, obj: dict[str, Any], field_validation: str,
                 skip_status: bool = False) -> list[str]:
    """Validate against the 1.33 schema; returns warnings (unknown fields dropped), raises 400/422."""
    v = sch.validator(rt.group, rt.version, rt.kind)
    if v is None:
        return []
    warnings: list[str] = []
    causes: list[dict[str, str]] = []
    unknown: list[tuple[list, str]] = []
    # Pods made from one template (and repeated status writes) share everything but metadata: remember bodies
    # already found valid and then validate only the metadata (validation is the hot path of every write).
    body_key = (rt.key, orjson.dumps({k: v for k, v in obj.items() if k != "metadata"}, option=orjson.OPT_SORT_KEYS))
    if body_key in _VALID_BODIES:
        errors = [_Prefixed(e) for e in sch.def_validator(_META_DEF).iter_errors(obj.get("metadata") or {})]
    else:
        errors = list(v.iter_errors(obj))
        if not errors:
            _VALID_BODIES[body_key] = True
            if len(_VALID_BODIES) > 4096:
                _VALID_BODIES.pop(next(iter(_VALID_BODIES)))
    for err in errors:
        path = list(err.absolute_path)
        if skip_status and path and path[0] == "status":
            continue
        if err.validator == "additionalProperties":
            props = (err.schema or {}).get("properties", {})
            for k in err.instance:
                if k not in props:
                    unknown.append((path, k))
        elif err.validator == "required":
            for r in err.validator_value:
                if isinstance(err.instance, dict) and r not in err.instance:
                    causes.append(field_cause(_field([*path, r]), "Required value", "FieldValueRequired"))
        elif err.validator == "enum":
            allowed = ", ".join(json.dumps(a) for a in err.validator_value if a is not None)
            causes.append(field_cause(_field(path), f"Unsupported value: {_go_repr(err.instance)}: "
                                      f"supported values: {allowed}", "FieldValueNotSupported"))
        else:
            causes.append(field_cause(_field(path), f"Invalid value: {_go_repr(err.instance)}: {err.message}",
                                      "FieldValueInvalid"))
    if unknown:
        names = [_field([*p, k]) for p, k in unknown]
        if field_validation == "Strict":
            msgs = ", ".join(f'unknown field "{n}"' for n in names)
            raise bad_request(f"{rt.kind} in version \"{rt.version}\" cannot be handled as a {rt.kind}: "
                              f"strict decoding error: {msgs}")
        for p, k in unknown:
            _del_path(obj, p, k)
        if field_validation != "Ignore":
            warnings += [f'unknown field "{n}"' for n in names]
    if causes:
        raise invalid(rt.kind, rt.group, (obj.get("metadata") or {}).get("name", ""), causes)
    return warnings


def _name_causes(rt: ResourceType, meta: dict[str, Any]) -> list[dict[str, str]]:
    causes = []
    name = meta.get("name") or ""
    if not name:
        causes.append(field_cause("metadata.name", "Required value: name or generateName is required",
                                  "FieldValueRequired"))
    elif rt.key not in _FREE_NAMED:
        if rt.key in _DNS1035_NAMED:
            ok, what = DNS1035_LABEL.match(name) and len(name) <= 63, "a DNS-1035 label"
            hint = ("must consist of lower case alphanumeric characters or '-', start with an alphabetic "
                    "character, and end with an alphanumeric character")
        elif rt.key in _LABEL_NAMED:
            ok, what = DNS1123_LABEL.match(name) and len(name) <= 63, "a lowercase RFC 1123 label"
            hint = ("must consist of lower case alphanumeric characters or '-', and must start and end with an "
                    "alphanumeric character")
        else:
            ok, what = DNS1123_SUBDOMAIN.match(name) and len(name) <= 253, "a lowercase RFC 1123 subdomain"
            hint = ("must consist of lower case alphanumeric characters, '-' or '.', and must start and end with "
                    "an alphanumeric character")
        if not ok:
            causes.append(field_cause("metadata.name", f"Invalid value: {json.dumps(name)}: {what} {hint}"))
    for what in ("labels",):
        for k, v in (meta.get(what) or {}).items():
            key_name = k.rsplit("/", 1)[-1]
            if not QUALIFIED_NAME.match(key_name) or len(key_name) > 63:
                causes.append(field_cause(f"metadata.{what}", f"Invalid value: {json.dumps(k)}: name part must "
                                          "consist of alphanumeric characters, '-', '_' or '.'"))
            if not isinstance(v, str) or not LABEL_VALUE.match(v) or len(v) > 63:
                causes.append(field_cause(f"metadata.{what}", f"Invalid value: {json.dumps(v)}: a valid label "
                                          "must be an empty string or consist of alphanumeric characters, '-', '_' "
                                          "or '.', and must start and end with an alphanumeric character"))
    annotations = meta.get("annotations") or {}
    if isinstance(annotations, dict):
        # apimachinery pkg/api/validation/objectmeta.go ValidateAnnotationsSize: len(k)+len(v) in bytes, summed,
        # at most TotalAnnotationSizeLimitB = 256 KiB; field.TooLong(metadata.annotations, "", limit)
        total = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in annotations.items())
        if total > TOTAL_ANNOTATION_SIZE_LIMIT:
            causes.append(field_cause("metadata.annotations", f"Too long: may not be more than "
                                      f"{TOTAL_ANNOTATION_SIZE_LIMIT} bytes", "FieldValueTooLong"))
    return causes


def _config_key_causes(key: str, prefix: str) -> list[dict[str, str]]:
    """apimachinery pkg/util/validation IsConfigMapKey (ValidateConfigMap, data and binaryData keys)."""
    msgs = []
    if len(key) > 253:
        msgs.append("must be no more than 253 characters")
    if not CONFIG_MAP_KEY.fullmatch(key):
        msgs.append("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name', "
                    " or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")
    if key == ".":
        msgs.append("must not be '.'")
    elif key == "..":
        msgs.append("must not be '..'")
    elif key.startswith(".."):
        msgs.append("must not start with '..'")
    return [field_cause(f"{prefix}[{key[:300]}]", f"Invalid value: {json.dumps(key[:300])}: {m}") for m in msgs]


def _configmap(obj: dict, old: dict | None) -> list[dict[str, str]]:
    causes: list[dict[str, str]] = []
    data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
    for prefix, section in (("data", data), ("binaryData", binary)):
        if isinstance(section, dict):
            for key in section:
                causes += _config_key_causes(str(key), prefix)
    if isinstance(data, dict) and isinstance(binary, dict):
        for key in sorted(set(data) & set(binary)):
            causes.append(field_cause(f"data[{key[:300]}]", f"Invalid value: {json.dumps(key[:300])}: duplicate of "
                                      "key present in binaryData"))
    return causes


def _workload(obj: dict, old: dict | None) -> list[dict[str, str]]:
    causes = []
    spec = obj.get("spec") or {}
    sel = spec.get("selector")
    reqs = selector_from_label_selector(sel)
    if not reqs:
        causes.append(field_cause("spec.selector", "Invalid value: \"null\": empty selector is invalid for "
                                  "deployment" if obj.get("kind") == "Deployment" else
                                  "Required value", "FieldValueRequired" if not sel else "FieldValueInvalid"))
    else:
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not match_labels(reqs, labels):
            causes.append(field_cause("spec.template.metadata.labels",
                                      f"Invalid value: {_go_repr(labels)}: `selector` does not match template "
                                      "`labels`"))
    if old is not None and (old.get("spec") or {}).get("selector") != sel:
        causes.append(field_cause("spec.selector", f"Invalid value: {_selector_repr(sel)}: field is immutable"))
    if (spec.get("replicas") or 0) < 0:
        causes.append(field_cause("spec.replicas", "Invalid value: must be greater than or equal to 0"))
    causes += _pod_spec(((spec.get("template") or {}).get("spec")) or {}, "spec.template.spec")
    return causes


def _selector_repr(sel: Any) -> str:
    return "v1.LabelSelector{" + json.dumps(sel, separators=(",", ":")) + "}"


def _pod_spec(spec: dict, prefix: str) -> list[dict[str, str]]:
    causes = []
    seen: set[str] = set()
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            name = c.get("name", "")
            if name in seen:
                causes.append(field_cause(f"{prefix}.{kind}[{i}].name", f"Duplicate value: {json.dumps(name)}",
                                          "FieldValueDuplicate"))
            seen.add(name)
            if name and not DNS1123_LABEL.match(name):
                causes.append(field_cause(f"{prefix}.{kind}[{i}].name", f"Invalid value: {json.dumps(name)}: "
                                          "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                                          "characters or '-'"))
            if not c.get("image") and prefix.startswith("spec.template") is False:
                causes.append(field_cause(f"{prefix}.{kind}[{i}].image", "Required value", "FieldValueRequired"))
    vols = {v.get("name") for v in spec.get("volumes") or []}
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            for j, m in enumerate(c.get("volumeMounts") or []):
                if m.get("name") not in vols:
                    causes.append(field_cause(f"{prefix}.{kind}[{i}].volumeMounts[{j}].name",
                                              f"Not found: {json.dumps(m.get('name'))}", "FieldValueNotFound"))
    return causes


_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")


def _pod(obj: dict, old: dict | None) -> list[dict[str, str]]:
    causes = _pod_spec(obj.get("spec") or {}, "spec")
    if old is not None:
        a, b = dict(old.get("spec") or {}), dict(obj.get("spec") or {})
        for k in _POD_MUTABLE:
            a.pop(k, None)
            b.pop(k, None)
        if not a.get("nodeName"):
            b.pop("nodeName", None)
            a.pop("nodeName", None)
        for spec in (a, b):
            for kind in ("containers", "initContainers"):
                if spec.get(kind):
                    spec[kind] = [{k: v for k, v in c.items() if k != "image"} for c in spec[kind]]
        if a != b:
            causes.append(field_cause("spec", "Forbidden: pod updates may not change fields other than "
                                      "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                                      "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing "
                                      "tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 "
                                      "if it was previously negative)", "FieldValueForbidden"))
    return causes


def _service(obj: dict, old: dict | None) -> list[dict[str, str]]:
    spec = obj.get("spec") or {}
    causes = []
    if spec.get("type", "ClusterIP") != "ExternalName" and spec.get("clusterIP") != "None" and not spec.get("ports"):
        causes.append(field_cause("spec.ports", "Required value", "FieldValueRequired"))
    if old is not None:
        before = (old.get("spec") or {}).get("clusterIP")
        if before and spec.get("clusterIP") and spec.get("clusterIP") != before:
            causes.append(field_cause("spec.clusterIPs[0]", f"Invalid value: {json.dumps(spec.get('clusterIP'))}: "
                                      "may not change once set"))
    names = [p.get("name") for p in spec.get("ports") or []]
    if len(names) > 1 and not all(names):
        causes.append(field_cause("spec.ports[1].name", "Required value", "FieldValueRequired"))
    return causes


def _pvc(obj: dict, old: dict | None) -> list[dict[str, str]]:
    if old is None:
        return []
    a, b = dict(old.get("spec") or {}), dict(obj.get("spec") or {})
    for s in (a, b):
        s.pop("resources", None)
        s.pop("volumeAttributesClassName", None)
    if not a.get("volumeName"):
        a.pop("volumeName", None)
        b.pop("volumeName", None)
    if a != b:
        return [field_cause("spec", "Forbidden: spec is immutable after creation except resources.requests and "
                            "volumeAttributesClassName for bound claims", "FieldValueForbidden")]
    return []


_PV_SOURCES = ("csi", "hostPath", "nfs", "local", "flexVolume")


def _pv(obj: dict, old: dict | None) -> list[dict[str, str]]:
    if old is None:
        return []
    a, b = old.get("spec") or {}, obj.get("spec") or {}
    if any(a.get(k) != b.get(k) for k in _PV_SOURCES):
        return [field_cause("spec.persistentvolumesource", "Forbidden: spec.persistentvolumesource is immutable "
                            "after creation", "FieldValueForbidden")]
    return []


def _hpa(obj: dict, old: dict | None) -> list[dict[str, str]]:
    spec = obj.get("spec") or {}
    causes = []
    mn, mx = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
    if mn is not None and mn < 1:
        causes.append(field_cause("spec.minReplicas", f"Invalid value: {mn}: must be greater than or equal to 1"))
    if mx < (mn or 1):
        causes.append(field_cause("spec.maxReplicas", f"Invalid value: {mx}: must be greater than or equal to "
                                  "`minReplicas`"))
    return causes


def _job(obj: dict, old: dict | None) -> list[dict[str, str]]:
    """``pkg/apis/batch/validation``: a selector matching the template, restartPolicy OnFailure or Never."""
    spec = obj.get("spec") or {}
    tmpl = spec.get("template") or {}
    causes = []
    reqs = selector_from_label_selector(spec.get("selector"))
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    if not reqs:
        causes.append(field_cause("spec.selector", "Required value", "FieldValueRequired"))
    elif not match_labels(reqs, labels):
        causes.append(field_cause("spec.template.metadata.labels", f"Invalid value: {_go_repr(labels)}: "
                                  "`selector` does not match template `labels`"))
    if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
        causes.append(field_cause("spec.selector", f"Invalid value: {_selector_repr(spec.get('selector'))}: "
                                  "field is immutable"))
    policy = (tmpl.get("spec") or {}).get("restartPolicy")
    if policy not in ("OnFailure", "Never"):
        causes.append(field_cause("spec.template.spec.restartPolicy", f"Unsupported value: {json.dumps(policy)}: "
                                  'supported values: "OnFailure", "Never"', "FieldValueNotSupported"))
    for k in ("parallelism", "completions", "backoffLimit"):
        if (spec.get(k) or 0) < 0:
            causes.append(field_cause(f"spec.{k}", "Invalid value: must be greater than or equal to 0"))
    return causes + _pod_spec(tmpl.get("spec") or {}, "spec.template.spec")


_LEASE_STRATEGIES = ("OldestEmulationVersion",)


def _lease(obj: dict, old: dict | None) -> list[dict[str, str]]:
    """``pkg/apis/coordination/validation`` ``ValidateLeaseSpec`` (Lease has no defaults)."""
    spec = obj.get("spec") or {}
    causes = []
    duration, transitions = spec.get("leaseDurationSeconds"), spec.get("leaseTransitions")
    if duration is not None and duration <= 0:
        causes.append(field_cause("spec.leaseDurationSeconds", f"Invalid value: {duration}: must be greater than 0"))
    if transitions is not None and transitions < 0:
        causes.append(field_cause("spec.leaseTransitions", f"Invalid value: {transitions}: must be greater than or "
                                  "equal to 0"))
    strategy = spec.get("strategy")
    if strategy is not None:
        if "/" not in strategy and strategy not in _LEASE_STRATEGIES:
            causes.append(field_cause("spec.strategy.strategy", f"Unsupported value: {json.dumps(strategy)}: "
                                      'supported values: "OldestEmulationVersion"', "FieldValueNotSupported"))
        elif "/" in strategy and not (QUALIFIED_NAME.match(strategy.rsplit("/", 1)[1])
                                      and DNS1123_SUBDOMAIN.match(strategy.rsplit("/", 1)[0])):
            causes.append(field_cause("spec.strategy.strategy", f"Invalid value: {json.dumps(strategy)}: must be a "
                                      "qualified name"))
    if spec.get("preferredHolder") and not strategy:
        causes.append(field_cause("spec.preferredHolder", "Forbidden: may only be specified if `strategy` is defined",
                                  "FieldValueForbidden"))
    return causes


SEMANTIC = {
    "configmaps": _configmap,
    "leases.coordination.k8s.io": _lease,
    "jobs.batch": _job,
    "deployments.apps": _workload,
    "replicasets.apps": _workload,
    "pods": _pod,
    "services": _service,
    "persistentvolumeclaims": _pvc,
    "persistentvolumes": _pv,
    "horizontalpodautoscalers.autoscaling": _hpa,
}


def check_semantics(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    meta = obj.get("metadata") or {}
    causes = _name_causes(rt, meta)
    fn = SEMANTIC.get(rt.key)
    if fn:
        causes += fn(obj, old)
    if causes:
        raise invalid(rt.kind, rt.group, meta.get("name", ""), causes)
