"""Discovery documents: aggregated (``apidiscovery.k8s.io/v2`` and ``v2beta1``, KEP-3352) and legacy
(``APIVersions``, ``APIGroupList``, ``APIGroup``, ``APIResourceList``), plus ``/version``.

Shapes follow ``staging/src/k8s.io/api/apidiscovery/v2/types.go`` and apimachinery ``metav1.APIResourceList``.
"""

from __future__ import annotations

from typing import Any

from .resources import GROUPS, ResourceType, resources_of

VERSION_INFO = {
    "major": "1", "minor": "33", "emulationMajor": "1", "emulationMinor": "33", "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "32", "gitVersion": "v1.33.3-aliyun.1", "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean", "buildDate": "2025-07-15T00:00:00Z", "goVersion": "go1.24.4", "compiler": "gc",
    "platform": "linux/amd64",
}

AGG_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"


def wants_aggregated(accept: str) -> str | None:
    """The aggregated discovery version the Accept header asks for first (v2 or v2beta1), else None."""
    for part in accept.split(","):
        p = part.replace(" ", "")
        if "g=apidiscovery.k8s.io" in p and "as=APIGroupDiscoveryList" in p:
            if "v=v2beta1" in p:
                return "v2beta1"
            if "v=v2" in p:
                return "v2"
    return None


def _agg_resource(r: ResourceType) -> dict[str, Any]:
    d: dict[str, Any] = {
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": "Namespaced" if r.namespaced else "Cluster",
        "singularResource": r.singular_name,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        d["shortNames"] = list(r.short_names)
    if r.categories:
        d["categories"] = list(r.categories)
    if r.subresources:
        d["subresources"] = [{
            "subresource": s.name,
            "responseKind": {"group": s.group if s.version else r.group, "version": s.version or r.version,
                             "kind": s.kind},
            "verbs": list(s.verbs),
        } for s in r.subresources]
    return d


def aggregated(core: bool, version: str, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    items = []
    for group, versions in GROUPS.items():
        if (group == "") != core:
            continue
        items.append({
            "metadata": {"name": group, "creationTimestamp": None},
            "versions": [{"version": v, "resources": [_agg_resource(r) for r in resources_of(group, v)],
                          "freshness": "Current"} for v in versions],
        })
    if not core:
        items += extra or []
    return {"kind": "APIGroupDiscoveryList", "apiVersion": f"apidiscovery.k8s.io/{version}",
            "metadata": {}, "items": items}


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def api_group(group: str, versions: list[str] | None = None) -> dict[str, Any]:
    versions = versions or GROUPS[group]
    vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs, "preferredVersion": vs[0]}


def api_group_list(extra: list[tuple[str, list[str]]] | None = None) -> dict[str, Any]:
    groups = [api_group(g) for g in GROUPS if g]
    for g, vs in extra or []:
        groups.append(api_group(g, vs))
    for g in groups:
        g.pop("kind")
        g.pop("apiVersion")
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def resource_list(group: str, version: str) -> dict[str, Any]:
    gv = f"{group}/{version}" if group else version
    out = []
    for r in resources_of(group, version):
        d: dict[str, Any] = {"name": r.plural, "singularName": r.singular_name, "namespaced": r.namespaced,
                             "kind": r.kind, "verbs": list(r.verbs)}
        if r.short_names:
            d["shortNames"] = list(r.short_names)
        if r.categories:
            d["categories"] = list(r.categories)
        d["storageVersionHash"] = ""
        out.append(d)
        for s in r.subresources:
            sd: dict[str, Any] = {"name": f"{r.plural}/{s.name}", "singularName": "", "namespaced": r.namespaced,
                                  "kind": s.kind, "verbs": list(s.verbs)}
            if s.version:
                sd["group"], sd["version"] = s.group, s.version
            out.append(sd)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}
