"""The resource registry: which group/version/kinds this API server serves (data, one line per resource).

Everything that depends on a resource's identity (routing, discovery, OpenAPI, validation, tables) reads this table.
APIs that Kubernetes 1.33 no longer serves (``autoscaling/v2beta1``, ``autoscaling/v2beta2``,
``extensions/v1beta1``, ``networking.k8s.io/v1beta1`` ...) are simply absent, so they answer 404 as a real server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUB_VERBS = ("get", "patch", "update")


@dataclass(frozen=True)
class Subresource:
    name: str
    kind: str
    group: str = ""        # "" = same group/version as the parent
    version: str = ""
    verbs: tuple[str, ...] = SUB_VERBS


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    # objects of this resource live in the storage of another group/version (same plural), converted on the way
    storage: str = ""
    singular: str = field(default="")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Storage key: ``plural`` for core, ``plural.group`` otherwise (the same name kubectl accepts)."""
        return self.storage or (f"{self.plural}.{self.group}" if self.group else self.plural)

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def sub(self, name: str) -> Subresource | None:
        for s in self.subresources:
            if s.name == name:
                return s
        return None

    @property
    def has_status(self) -> bool:
        return self.sub("status") is not None


def _status(kind: str) -> Subresource:
    return Subresource("status", kind)


def _scale() -> Subresource:
    return Subresource("scale", "Scale", "autoscaling", "v1")


R = ResourceType
RESOURCES: tuple[ResourceType, ...] = (
    R("", "v1", "Namespace", "namespaces", False, ("ns",), (), (_status("Namespace"),
      Subresource("finalize", "Namespace", verbs=("update",))), ("create", "delete", "get", "list", "patch", "update", "watch")),
    R("", "v1", "Node", "nodes", False, ("no",), (), (_status("Node"),)),
    R("", "v1", "Pod", "pods", True, ("po",), ("all",), (_status("Pod"), Subresource("binding", "Binding", verbs=("create",)),
                                                   Subresource("log", "Pod", verbs=("get",)))),
    R("", "v1", "Service", "services", True, ("svc",), ("all",), (_status("Service"),),
      ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")),
    R("", "v1", "Endpoints", "endpoints", True, ("ep",), singular="endpoints"),
    R("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    R("", "v1", "Secret", "secrets", True),
    R("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    R("", "v1", "PersistentVolume", "persistentvolumes", False, ("pv",), (), (_status("PersistentVolume"),)),
    R("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ("pvc",), (),
      (_status("PersistentVolumeClaim"),)),
    R("", "v1", "Event", "events", True, ("ev",)),
    R("events.k8s.io", "v1", "Event", "events", True, ("ev",), storage="events"),
    R("apps", "v1", "Deployment", "deployments", True, ("deploy",), ("all",), (_status("Deployment"), _scale())),
    R("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), ("all",), (_status("ReplicaSet"), _scale())),
    R("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True, ("hpa",), ("all",),
      (_status("HorizontalPodAutoscaler"),)),
    R("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",), (), (_status("Ingress"),)),
    R("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False),
    R("storage.k8s.io", "v1", "CSIDriver", "csidrivers", False),
    R("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, ("sc",)),
    R("apiregistration.k8s.io", "v1", "APIService", "apiservices", False, (), ("api-extensions",),
      (_status("APIService"),)),
    R("coordination.k8s.io", "v1", "Lease", "leases", True),
    R("batch", "v1", "Job", "jobs", True, (), ("all",), (_status("Job"),)),
    R("batch", "v1", "CronJob", "cronjobs", True, ("cj",), ("all",), (_status("CronJob"),)),
    R("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",), (),
      (_status("PodDisruptionBudget"),)),
    R("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    R("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    R("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    R("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
)

# group -> versions served, preferred first (a group may serve several versions; 1.33 serves one of each here)
GROUPS: dict[str, list[str]] = {}
for _r in RESOURCES:
    versions = GROUPS.setdefault(_r.group, [])
    if _r.version not in versions:
        versions.append(_r.version)

_BY_GV: dict[tuple[str, str], dict[str, ResourceType]] = {}
for _r in RESOURCES:
    _BY_GV.setdefault((_r.group, _r.version), {})[_r.plural] = _r

_BY_KEY: dict[str, ResourceType] = {}
for _r in RESOURCES:
    if not _r.storage:
        _BY_KEY[_r.key] = _r


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_GV.get((group, version), {}).get(plural)


def resources_of(group: str, version: str) -> list[ResourceType]:
    return list(_BY_GV.get((group, version), {}).values())


def served(group: str, version: str) -> bool:
    return (group, version) in _BY_GV


def resolve(name: str) -> ResourceType:
    """Find a resource by storage key (``pods``, ``deployments.apps``), plural, kind or short name.

    The in-process API takes these names, e.g. ``store.get("deployments", "default", "web")``.
    """
    if name in _BY_KEY:
        return _BY_KEY[name]
    low = name.lower()
    for r in RESOURCES:
        if r.storage:
            continue
        if low in (r.plural, r.kind.lower(), r.singular_name) or low in r.short_names:
            return r
    raise KeyError(f"unknown resource {name!r}")
