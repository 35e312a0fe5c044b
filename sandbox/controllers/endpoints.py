"""The Endpoints controller (``endpoint-controller``), after ``pkg/controller/endpoint/endpoints_controller.go``.

For every Service with a selector, an Endpoints object of the same name lists the pods matching the selector that
have an IP and are not terminating: Ready pods under ``addresses``, the others under ``notReadyAddresses``
(all under ``addresses`` with ``publishNotReadyAddresses``). Each address carries ``ip``, ``nodeName`` and a
``targetRef`` to the pod. Ports are the Service's ports with ``targetPort`` resolved per pod (a named targetPort
looks up the container port of that name); pods resolving to the same ports share a subset (upstream's
``endpoints.RepackSubsets``). Services without a selector are left alone; the Endpoints of a deleted Service are
deleted. Written only when they change. The ingress data plane (issue 4) routes to ``addresses``.
"""

from __future__ import annotations

import copy
from typing import Any

from ..kube.errors import KubeError
from ..kube.selectors import match_labels, selector_from_label_selector
from .base import Controller
from .replicasets import pod_ready

COMPONENT = "endpoint-controller"
MANAGED = "endpoints.kubernetes.io/managed-by"


def _resolve_port(port: dict[str, Any], pod: dict[str, Any]) -> int | None:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for cp in c.get("ports") or []:
            if cp.get("name") == target and (cp.get("protocol") or "TCP") == (port.get("protocol") or "TCP"):
                return cp.get("containerPort")
    return None


def desired_subsets(svc: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec = svc.get("spec") or {}
    publish_all = bool(spec.get("publishNotReadyAddresses"))
    groups: dict[tuple, dict[str, list]] = {}
    for pod in pods:
        st = pod.get("status") or {}
        if not st.get("podIP") or pod["metadata"].get("deletionTimestamp"):
            continue
        if st.get("phase") in ("Succeeded", "Failed"):
            continue
        ports = []
        for p in spec.get("ports") or []:
            num = _resolve_port(p, pod)
            if num is None:
                continue
            ep = {"port": num, "protocol": p.get("protocol") or "TCP"}
            if p.get("name"):
                ep["name"] = p["name"]
            if p.get("appProtocol"):
                ep["appProtocol"] = p["appProtocol"]
            ports.append(ep)
        key = tuple(sorted((e.get("name", ""), e["port"], e["protocol"]) for e in ports))
        g = groups.setdefault(key, {"ports": ports, "addresses": [], "notReadyAddresses": []})
        m = pod["metadata"]
        addr = {"ip": st["podIP"], "targetRef": {"kind": "Pod", "namespace": m.get("namespace"), "name": m["name"],
                                                 "uid": m["uid"]}}
        if (pod.get("spec") or {}).get("nodeName"):
            addr["nodeName"] = pod["spec"]["nodeName"]
        (g["addresses"] if publish_all or pod_ready(pod) else g["notReadyAddresses"]).append(addr)
    out = []
    for key in sorted(groups):
        g = groups[key]
        subset: dict[str, Any] = {}
        if g["addresses"]:
            subset["addresses"] = sorted(g["addresses"], key=lambda a: a["ip"])
        if g["notReadyAddresses"]:
            subset["notReadyAddresses"] = sorted(g["notReadyAddresses"], key=lambda a: a["ip"])
        if subset and g["ports"]:
            subset["ports"] = sorted(g["ports"], key=lambda p: (p.get("name", ""), p["port"]))
            out.append(subset)
    return out


class EndpointsController(Controller):
    name = COMPONENT
    topics = ("kube/services", "kube/pods", "kube/endpoints")

    def reconcile(self) -> float | None:
        services = self.objects("services")
        pods_by_ns: dict[str, list[dict[str, Any]]] = {}
        existing = {(e["metadata"].get("namespace"), e["metadata"]["name"]): e for e in self.objects("endpoints")}
        wanted: set[tuple] = set()
        for svc in services:
            m, spec = svc["metadata"], svc.get("spec") or {}
            if not spec.get("selector") or m.get("deletionTimestamp"):
                continue
            key = (m.get("namespace"), m["name"])
            wanted.add(key)
            reqs = selector_from_label_selector({"matchLabels": spec["selector"]})
            ns = m.get("namespace") or "default"
            if ns not in pods_by_ns:
                pods_by_ns[ns] = self.indexed("pods", "namespace", (ns,))
            pods = [p for p in pods_by_ns[ns] if match_labels(reqs, p["metadata"].get("labels"))]
            subsets = desired_subsets(svc, pods)
            labels = dict(m.get("labels") or {})
            labels[MANAGED] = COMPONENT
            if spec.get("clusterIP") == "None":
                labels["service.kubernetes.io/headless"] = ""
            cur = existing.get(key)
            try:
                if cur is None:
                    self.store.create("endpoints", {"apiVersion": "v1", "kind": "Endpoints",
                                                    "metadata": {"name": m["name"], "namespace": m.get("namespace"),
                                                                 "labels": labels},
                                                    **({"subsets": subsets} if subsets else {})}, m.get("namespace"),
                                      field_manager="kube-controller-manager")
                elif (cur.get("subsets") or []) != subsets or (cur["metadata"].get("labels") or {}) != labels:
                    upd = copy.deepcopy(cur)
                    upd["subsets"] = subsets
                    upd["metadata"]["labels"] = labels
                    if not subsets:
                        upd.pop("subsets", None)
                    self.store.update("endpoints", upd, field_manager="kube-controller-manager")
            except KubeError:
                continue
        for key, ep in existing.items():
            if key in wanted or (ep["metadata"].get("labels") or {}).get(MANAGED) != COMPONENT:
                continue
            try:
                self.store.delete("endpoints", key[0], key[1])
            except KubeError:
                continue
        return None
