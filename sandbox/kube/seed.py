"""Objects a fresh ACK cluster has (with the add-ons this procedure needs), created once at first start."""

from __future__ import annotations

from typing import Any

NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def objects() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = [
        ("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}) for n in NAMESPACES
    ]
    out += [
        ("ingressclasses", {
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "nginx", "labels": {"app.kubernetes.io/component": "controller",
                                                     "app.kubernetes.io/name": "ingress-nginx"}},
            "spec": {"controller": "k8s.io/ingress-nginx"}}),
        ("csidrivers", {
            "apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
            "metadata": {"name": "ossplugin.csi.alibabacloud.com"},
            "spec": {"attachRequired": False, "podInfoOnMount": True, "fsGroupPolicy": "ReadWriteOnceWithFSType",
                     "requiresRepublish": False, "storageCapacity": False, "seLinuxMount": False,
                     "volumeLifecycleModes": ["Persistent"]}}),
        ("apiservices", {
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
            "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                     "versionPriority": 100, "insecureSkipTLSVerify": True,
                     "service": {"namespace": "kube-system", "name": "alibaba-cloud-metrics-adapter", "port": 443}}}),
        ("services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}),
        ("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": "default", "namespace": "default"}}),
    ]
    return out


def available_condition(now: str) -> dict[str, Any]:
    return {"type": "Available", "status": "True", "lastTransitionTime": now, "reason": "Passed",
            "message": "all checks passed"}
