"""``meta.k8s.io/v1`` Table output: the columns ``kubectl get`` prints, per resource.

Column sets and cell formats follow ``pkg/printers/internalversion/printers.go`` (``AddHandlers``): e.g. pods
``NAME READY STATUS RESTARTS AGE`` + wide ``IP NODE NOMINATED NODE READINESS GATES``; ages as
``duration.HumanDuration``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from .resources import ResourceType

Col = tuple[str, str, int, str]  # name, type, priority, description


def _ts(s: str | None) -> float | None:
    if not s:
        return None
    try:
        return datetime.fromisoformat(s).timestamp()
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """apimachinery ``util/duration.HumanDuration``."""
    s = int(seconds)
    if s < 0:
        s = 0
    if s < 60 * 2:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 60 * 3:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        return f"{h // (24 * 365)}y{(h // 24) % 365}d"
    return f"{h // (24 * 365)}y"


def _age(obj: dict, now: float) -> str:
    t = _ts(obj["metadata"].get("creationTimestamp"))
    return "<unknown>" if t is None else human_duration(now - t)


def _none(v: Any) -> str:
    return "<none>" if v in (None, "", []) else str(v)


# ---- per-resource printers -----------------------------------------------------------------------------------------
def _pod(o: dict, now: float) -> list:
    st, sp = o.get("status") or {}, o.get("spec") or {}
    cs = st.get("containerStatuses") or []
    total = len(sp.get("containers") or [])
    ready = sum(1 for c in cs if c.get("ready"))
    restarts = sum(c.get("restartCount", 0) for c in cs)
    reason = st.get("reason") or st.get("phase") or "Unknown"
    for c in cs:
        state = c.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            reason = state["terminated"].get("reason") or "Terminated"
    if reason == "Pending" and not cs and sp.get("nodeName"):
        reason = "ContainerCreating" if any(c.get("type") == "PodScheduled" for c in st.get("conditions") or []) \
            else "Pending"
    if o["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    last_restart = [c for c in cs if c.get("restartCount")]
    rs = str(restarts)
    if last_restart:
        fin = ((last_restart[0].get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        if _ts(fin):
            rs = f"{restarts} ({human_duration(now - _ts(fin))} ago)"
    gates = sp.get("readinessGates") or []
    return [o["metadata"]["name"], f"{ready}/{total}", reason, rs, _age(o, now), _none(st.get("podIP")),
            _none(sp.get("nodeName")), _none(st.get("nominatedNodeName")),
            _none(",".join(g.get("conditionType", "") for g in gates) if gates else None)]


def _deployment(o: dict, now: float) -> list:
    sp, st = o.get("spec") or {}, o.get("status") or {}
    containers = ((sp.get("template") or {}).get("spec") or {}).get("containers") or []
    from .selectors import selector_string
    return [o["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{sp.get('replicas', 0)}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), _age(o, now),
            ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers),
            _none(selector_string(sp.get("selector")))]


def _replicaset(o: dict, now: float) -> list:
    sp, st = o.get("spec") or {}, o.get("status") or {}
    containers = ((sp.get("template") or {}).get("spec") or {}).get("containers") or []
    from .selectors import selector_string
    return [o["metadata"]["name"], sp.get("replicas", 0), st.get("replicas", 0), st.get("readyReplicas", 0),
            _age(o, now), ",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers), _none(selector_string(sp.get("selector")))]


def _node(o: dict, now: float) -> list:
    st = o.get("status") or {}
    conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
    status = "Ready" if conds.get("Ready") == "True" else "NotReady" if conds else "Unknown"
    if (o.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    labels = o["metadata"].get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and "/" in k)
    info = st.get("nodeInfo") or {}
    addrs = {a.get("type"): a.get("address") for a in st.get("addresses") or []}
    return [o["metadata"]["name"], status, _none(",".join(roles)), _age(o, now), info.get("kubeletVersion", ""),
            _none(addrs.get("InternalIP")), _none(addrs.get("ExternalIP")), _none(info.get("osImage")),
            _none(info.get("kernelVersion")), _none(info.get("containerRuntimeVersion"))]


def _service(o: dict, now: float) -> list:
    sp = o.get("spec") or {}
    ings = ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ext = ",".join(i.get("ip") or i.get("hostname") or "" for i in ings)
    if not ext:
        ext = "<pending>" if sp.get("type") == "LoadBalancer" else ",".join(sp.get("externalIPs") or []) or "<none>"
    ports = ",".join(f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/{p.get('protocol', 'TCP')}"
                     for p in sp.get("ports") or [])
    sel = ",".join(f"{k}={v}" for k, v in sorted((sp.get("selector") or {}).items()))
    return [o["metadata"]["name"], sp.get("type", "ClusterIP"), sp.get("clusterIP") or "<none>", ext,
            ports or "<none>", _age(o, now), _none(sel)]


def _access_modes(modes: list[str] | None) -> str:
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    return ",".join(short.get(m, m) for m in modes or [])


def _pv(o: dict, now: float) -> list:
    sp, st = o.get("spec") or {}, o.get("status") or {}
    ref = sp.get("claimRef") or {}
    claim = f"{ref.get('namespace')}/{ref.get('name')}" if ref.get("name") else ""
    return [o["metadata"]["name"], (sp.get("capacity") or {}).get("storage", ""), _access_modes(sp.get("accessModes")),
            sp.get("persistentVolumeReclaimPolicy", ""), st.get("phase", ""), claim, sp.get("storageClassName", ""),
            _none(sp.get("volumeAttributesClassName")), st.get("reason", ""), _age(o, now),
            sp.get("volumeMode", "")]


def _pvc(o: dict, now: float) -> list:
    sp, st = o.get("spec") or {}, o.get("status") or {}
    bound = st.get("phase") == "Bound"
    return [o["metadata"]["name"], st.get("phase", ""), sp.get("volumeName", ""),
            (st.get("capacity") or {}).get("storage", "") if bound else "",
            _access_modes(st.get("accessModes")) if bound else "", sp.get("storageClassName", ""),
            _none(sp.get("volumeAttributesClassName")), _age(o, now), sp.get("volumeMode", "")]


def _hpa(o: dict, now: float) -> list:
    sp, st = o.get("spec") or {}, o.get("status") or {}
    ref = sp.get("scaleTargetRef") or {}
    targets = []
    current = st.get("currentMetrics") or []
    for i, m in enumerate(sp.get("metrics") or []):
        t = m.get("type")
        spec_m = m.get({"External": "external", "Resource": "resource", "Pods": "pods", "Object": "object",
                        "ContainerResource": "containerResource"}.get(t, ""), {}) or {}
        target = spec_m.get("target") or {}
        want = target.get("averageValue") or target.get("value") or (
            f"{target.get('averageUtilization')}%" if target.get("averageUtilization") is not None else "")
        cur = "<unknown>"
        if i < len(current):
            cm = current[i].get({"External": "external", "Resource": "resource", "Pods": "pods",
                                 "Object": "object"}.get(t, ""), {}) or {}
            c = cm.get("current") or {}
            val = c.get("averageValue") or c.get("value")
            if c.get("averageUtilization") is not None:
                val = f"{c['averageUtilization']}%"
            if val is not None:
                cur = str(val)
        suffix = " (avg)" if t == "External" and target.get("type") == "AverageValue" else ""
        targets.append(f"{cur}/{want}{suffix}")
    tgt = ", ".join(targets) if targets else "<none>"
    return [o["metadata"]["name"], f"{ref.get('kind')}/{ref.get('name')}", tgt, sp.get("minReplicas", 1),
            sp.get("maxReplicas", 0), st.get("currentReplicas", 0), _age(o, now)]


def _ingress(o: dict, now: float) -> list:
    sp = o.get("spec") or {}
    hosts = [r.get("host") for r in sp.get("rules") or [] if r.get("host")]
    ings = ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    addr = ",".join(i.get("ip") or i.get("hostname") or "" for i in ings)
    ports = "80, 443" if sp.get("tls") else "80"
    return [o["metadata"]["name"], _none(sp.get("ingressClassName")), ",".join(hosts) or "*", addr, ports,
            _age(o, now)]


def _event(o: dict, now: float) -> list:
    last = _ts(o.get("lastTimestamp") or o.get("eventTime") or o["metadata"].get("creationTimestamp"))
    io = o.get("involvedObject") or o.get("regarding") or {}
    count = o.get("count") or o.get("deprecatedCount") or 1
    first = _ts(o.get("firstTimestamp") or o.get("deprecatedFirstTimestamp"))
    age = human_duration(now - last) if last else "<unknown>"
    if count > 1 and first:
        age = f"{age} (x{count} over {human_duration(now - first)})"
    src = o.get("source") or o.get("deprecatedSource") or {}
    return [age, o.get("type", ""), o.get("reason", ""), f"{(io.get('kind') or '').lower()}/{io.get('name', '')}",
            o.get("message") or o.get("note") or "", src.get("component", ""), io.get("fieldPath", ""), "",
            count, o["metadata"]["name"]]


def _configmap(o: dict, now: float) -> list:
    return [o["metadata"]["name"], len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age(o, now)]


def _secret(o: dict, now: float) -> list:
    return [o["metadata"]["name"], o.get("type", "Opaque"), len(o.get("data") or {}), _age(o, now)]


def _namespace(o: dict, now: float) -> list:
    return [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""), _age(o, now)]


def _endpoints(o: dict, now: float) -> list:
    eps = []
    for s in o.get("subsets") or []:
        for a in s.get("addresses") or []:
            for p in s.get("ports") or [{}]:
                eps.append(f"{a.get('ip')}:{p.get('port')}" if p.get("port") else a.get("ip", ""))
    shown = ",".join(eps[:3]) + (f" + {len(eps) - 3} more..." if len(eps) > 3 else "")
    return [o["metadata"]["name"], shown or "<none>", _age(o, now)]


def _ingressclass(o: dict, now: float) -> list:
    sp = o.get("spec") or {}
    params = sp.get("parameters") or {}
    return [o["metadata"]["name"], sp.get("controller", ""), _none(params.get("name")), _age(o, now)]


def _csidriver(o: dict, now: float) -> list:
    sp = o.get("spec") or {}
    return [o["metadata"]["name"], str(sp.get("attachRequired", True)).lower(),
            str(sp.get("podInfoOnMount", False)).lower(), str(sp.get("storageCapacity", False)).lower(),
            _none(sp.get("tokenRequests")), str(sp.get("requiresRepublish", False)).lower(),
            ",".join(sp.get("volumeLifecycleModes") or ["Persistent"]), _age(o, now)]


def _apiservice(o: dict, now: float) -> list:
    sp = o.get("spec") or {}
    svc = sp.get("service") or {}
    conds = {c.get("type"): c for c in (o.get("status") or {}).get("conditions") or []}
    av = conds.get("Available") or {}
    avail = "True" if av.get("status") == "True" else f"False ({av.get('reason', '')})" if av else "Unknown"
    return [o["metadata"]["name"], f"{svc.get('namespace')}/{svc.get('name')}" if svc else "Local", avail,
            _age(o, now)]


def _lease(o: dict, now: float) -> list:
    return [o["metadata"]["name"], (o.get("spec") or {}).get("holderIdentity", ""), _age(o, now)]


def _storageclass(o: dict, now: float) -> list:
    return [o["metadata"]["name"], o.get("provisioner", ""), o.get("reclaimPolicy", "Delete"),
            o.get("volumeBindingMode", "Immediate"), str(o.get("allowVolumeExpansion", False)).lower(), _age(o, now)]


def _c(*cols: tuple) -> list[Col]:
    return [(c[0], c[1] if len(c) > 1 else "string", c[2] if len(c) > 2 else 0, "") for c in cols]


_NAME = ("Name", "string", 0)
_AGE = ("Age", "string", 0)
PRINTERS: dict[str, tuple[list[Col], Callable[[dict, float], list]]] = {
    "pods": (_c(_NAME, ("Ready",), ("Status",), ("Restarts", "string"), _AGE, ("IP", "string", 1),
                ("Node", "string", 1), ("Nominated Node", "string", 1), ("Readiness Gates", "string", 1)), _pod),
    "deployments.apps": (_c(_NAME, ("Ready",), ("Up-to-date", "integer"), ("Available", "integer"), _AGE,
                            ("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)),
                         _deployment),
    "replicasets.apps": (_c(_NAME, ("Desired", "integer"), ("Current", "integer"), ("Ready", "integer"), _AGE,
                            ("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)),
                         _replicaset),
    "nodes": (_c(_NAME, ("Status",), ("Roles",), _AGE, ("Version",), ("Internal-IP", "string", 1),
                 ("External-IP", "string", 1), ("OS-Image", "string", 1), ("Kernel-Version", "string", 1),
                 ("Container-Runtime", "string", 1)), _node),
    "services": (_c(_NAME, ("Type",), ("Cluster-IP",), ("External-IP",), ("Port(s)",), _AGE,
                    ("Selector", "string", 1)), _service),
    "persistentvolumes": (_c(_NAME, ("Capacity",), ("Access Modes",), ("Reclaim Policy",), ("Status",), ("Claim",),
                             ("StorageClass",), ("VolumeAttributesClass",), ("Reason",), _AGE,
                             ("VolumeMode", "string", 1)), _pv),
    "persistentvolumeclaims": (_c(_NAME, ("Status",), ("Volume",), ("Capacity",), ("Access Modes",),
                                  ("StorageClass",), ("VolumeAttributesClass",), _AGE, ("VolumeMode", "string", 1)),
                               _pvc),
    "horizontalpodautoscalers.autoscaling": (_c(_NAME, ("Reference",), ("Targets",), ("MinPods", "string"),
                                                ("MaxPods", "integer"), ("Replicas", "integer"), _AGE), _hpa),
    "ingresses.networking.k8s.io": (_c(_NAME, ("Class",), ("Hosts",), ("Address",), ("Ports",), _AGE), _ingress),
    "events": (_c(("Last Seen",), ("Type",), ("Reason",), ("Object",), ("Message",), ("Source", "string", 1),
                  ("Subobject", "string", 1), ("First Seen", "string", 1), ("Count", "string", 1),
                  ("Name", "string", 1)), _event),
    "configmaps": (_c(_NAME, ("Data", "integer"), _AGE), _configmap),
    "secrets": (_c(_NAME, ("Type",), ("Data", "integer"), _AGE), _secret),
    "namespaces": (_c(_NAME, ("Status",), _AGE), _namespace),
    "endpoints": (_c(_NAME, ("Endpoints",), _AGE), _endpoints),
    "ingressclasses.networking.k8s.io": (_c(_NAME, ("Controller",), ("Parameters",), _AGE), _ingressclass),
    "csidrivers.storage.k8s.io": (_c(_NAME, ("AttachRequired", "boolean"), ("PodInfoOnMount", "boolean"),
                                     ("StorageCapacity", "boolean"), ("TokenRequests",), ("RequiresRepublish",
                                                                                          "boolean"),
                                     ("Modes",), _AGE), _csidriver),
    "apiservices.apiregistration.k8s.io": (_c(_NAME, ("Service",), ("Available",), _AGE), _apiservice),
    "leases.coordination.k8s.io": (_c(_NAME, ("Holder",), _AGE), _lease),
    "storageclasses.storage.k8s.io": (_c(_NAME, ("Provisioner",), ("ReclaimPolicy",), ("VolumeBindingMode",),
                                         ("AllowVolumeExpansion",), _AGE), _storageclass),
}


def _partial(rt: ResourceType, o: dict) -> dict:
    meta = {k: v for k, v in o["metadata"].items() if k != "managedFields"}
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}


def table(rt: ResourceType, objs: list[dict], now: float, include_object: str = "Metadata") -> dict[str, Any]:
    from .tables_batch import PRINTERS as MORE  # builds on this module's helpers
    cols, fn = PRINTERS.get(rt.key) or MORE.get(rt.key) or (_c(_NAME, ("Created At", "date")), None)
    rows = []
    for o in objs:
        cells = [o["metadata"]["name"], o["metadata"].get("creationTimestamp")] if fn is None else fn(o, now)
        row: dict[str, Any] = {"cells": cells}
        if include_object == "Object":
            row["object"] = o
        elif include_object != "None":
            row["object"] = _partial(rt, o)
        rows.append(row)
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
        "columnDefinitions": [{"name": n, "type": t, "format": "name" if n == "Name" else "", "description": d,
                               "priority": p} for n, t, p, d in cols],
        "rows": rows,
    }
