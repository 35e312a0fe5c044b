"""The ingress routing table, computed from Ingress, Service and Endpoints objects (pure functions).

As ingress-nginx does it (``internal/ingress/controller/controller.go`` ``getBackendServers``; upstream names
from ``upstreamName()``: ``{namespace}-{service}-{port}`` with the backend's service port number or name):

- Ingresses of class ``nginx``: ``spec.ingressClassName: nginx``, the legacy annotation
  ``kubernetes.io/ingress.class: nginx``, or no class when the ``nginx`` IngressClass is the default one.
- One server per host; rules without a host go to the catch-all server. A request for a host that has a server
  only uses that server's paths (no fallback to the catch-all's paths), as nginx picks one ``server`` block.
  Wildcard hosts (``*.example.com``) match exactly one leading label.
- Paths: ``Exact`` is ``location = /p``; ``Prefix`` matches whole path elements (``/foo`` matches ``/foo`` and
  ``/foo/bar``, not ``/foobar``: ``internal/ingress/controller/location.go`` ``updateServerLocations`` turns it into
  ``location /foo/`` plus ``location = /foo``). ingress-nginx's store rewrites every Ingress it reads before
  anything else: an empty path becomes ``/`` (``store.go`` ``updateSecretIngressMap``/``syncIngress``) and a missing
  or ``ImplementationSpecific`` pathType becomes ``Prefix`` (``internal/k8s/main.go`` ``SetDefaultNGINXPathType``,
  since controller v0.34), so the two are one and the same everywhere below (:func:`nginx_path`). Longest path
  wins; Exact before Prefix on equal paths.
- Endpoints: the ready ``addresses`` of the Service's Endpoints subsets, on the port whose name equals the Service
  port's name (the single port when unnamed). ``notReadyAddresses`` are never used.
- Canary Ingresses (``nginx.ingress.kubernetes.io/canary: "true"``, :mod:`.canary`) add no route of their own
  (``createServers`` skips them). As ``mergeAlternativeBackends`` does, each path of a canary is merged into the
  main location of the same host, path and pathType (``loc.Path == path.Path && *loc.PathType == *path.PathType``,
  after the defaulting above: a canary ``Prefix`` joins a main ``ImplementationSpecific``, never a main ``Exact``),
  as an *alternative backend of the main location's upstream*
  (so it applies wherever that upstream is the primary); the canary's ``spec.defaultBackend`` merges into the
  catch-all server's locations. A canary with no matching main location is dropped ("unable to find real backend
  for alternative backend ... Deleting", :attr:`RouteTable.dropped`; the header then reaches the main backend),
  and none is merged at all when no non-canary Ingress exists
  (``nonCanaryIngressExists``). A canary whose Service is the main location's own is not merged ("alternative
  upstream ... is primary upstream in Other Ingress"). Several canaries on one upstream: each is appended to
  ``AlternativeBackends`` in Ingress order (``sortIngressSlice``: creationTimestamp), and the Lua balancer only ever
  uses the first ("TODO: support traffic shaping for n > 1 alternative backends"), so the oldest canary wins; the
  traffic-shaping policy lives on the canary's upstream (``createUpstreams``).
- One upstream per Service and port, made by the oldest Ingress naming it (``createUpstreams``: ``if _, ok :=
  upstreams[name]; ok { continue }``). Made by a canary, it is ``NoServer`` and a location of an ordinary Ingress on
  it is skipped ("Backend is not referenced to by a server"); made by an ordinary Ingress, a canary on the same
  Service gets no traffic-shaping policy and selects nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import canary as canary_rules

INGRESS_CLASS = "nginx"


@dataclass
class Backend:
    namespace: str
    service: str
    port: int | str  # as written in the Ingress
    upstream: str  # proxy_upstream_name
    endpoints: list[tuple[str, int]] = field(default_factory=list)
    rr: int = 0  # round-robin cursor (mutated by the data plane)
    alternatives: list[Backend] = field(default_factory=list)  # canary upstreams merged into this one
    policy: canary_rules.TrafficShapingPolicy | None = None  # set when this upstream is a canary's

    def choose(self, headers: list[tuple[bytes, bytes]], randint=None) -> Backend:
        """The upstream this request goes to: the first alternative when its policy says so, else this one.

        ``balancer.lua`` keeps a balancer only for upstreams with endpoints (``sync_backend``): a main upstream
        without endpoints answers 503 whatever its canary (``get_balancer`` returns nil before looking at
        alternatives), and a canary without endpoints is skipped ("no alternative balancer for backend").
        """
        if not self.alternatives or not self.endpoints:
            return self
        alt = self.alternatives[0]
        if alt.policy is None or not alt.endpoints:
            return self
        args = () if randint is None else (randint,)
        return alt if canary_rules.route_to_canary(alt.policy, headers, *args) else self


def nginx_path(path: str | None, path_type: str | None) -> tuple[str, str]:
    """(path, pathType) as ingress-nginx's store holds them: ``""`` -> ``/``; none or ``ImplementationSpecific`` ->
    ``Prefix`` (``SetDefaultNGINXPathType``)."""
    return path or "/", "Exact" if path_type == "Exact" else "Prefix"


@dataclass(frozen=True)
class PathRule:
    path: str
    path_type: str
    backend: Backend

    def matches(self, path: str) -> bool:
        p = self.path
        if self.path_type == "Exact":
            return path == p
        if p == "/" or path == p:
            return True
        base = p.rstrip("/")
        return path.startswith(base + "/")


@dataclass
class RouteTable:
    hosts: dict[str, list[PathRule]] = field(default_factory=dict)
    wildcards: dict[str, list[PathRule]] = field(default_factory=dict)  # suffix ".example.com" -> rules
    catch_all: list[PathRule] = field(default_factory=list)
    default_backend: Backend | None = None
    dropped: list[str] = field(default_factory=list)
    """The controller's warnings for canary backends it could not merge (one line each, ingress-nginx's words)."""

    def match(self, host: str, path: str) -> Backend | None:
        rules = self.hosts.get(host)
        if rules is None and "." in host:
            rules = self.wildcards.get(host[host.index("."):])
        if rules is None:
            rules = self.catch_all
        for r in rules:
            if r.matches(path):
                return r.backend
        return self.default_backend

    def backends(self) -> list[Backend]:
        seen: dict[int, Backend] = {}
        for rules in [*self.hosts.values(), *self.wildcards.values(), self.catch_all]:
            for r in rules:
                seen[id(r.backend)] = r.backend
                for alt in r.backend.alternatives:
                    seen[id(alt)] = alt
        if self.default_backend:
            seen[id(self.default_backend)] = self.default_backend
        return list(seen.values())


def is_nginx_ingress(ing: dict[str, Any], default_class: str | None) -> bool:
    spec = ing.get("spec") or {}
    cls = spec.get("ingressClassName")
    if cls is None:
        cls = ((ing.get("metadata") or {}).get("annotations") or {}).get("kubernetes.io/ingress.class")
    if cls is None:
        cls = default_class
    return cls == INGRESS_CLASS


def default_ingress_class(classes: list[dict[str, Any]]) -> str | None:
    for c in classes:
        ann = (c.get("metadata") or {}).get("annotations") or {}
        if ann.get("ingressclass.kubernetes.io/is-default-class") == "true":
            return c["metadata"]["name"]
    return None


def service_endpoints(service: dict[str, Any] | None, endpoints: dict[str, Any] | None,
                      port: int | str) -> list[tuple[str, int]]:
    """Ready (ip, targetPort) pairs for the Service port given by number or name."""
    if not service:
        return []
    sport = None
    for p in (service.get("spec") or {}).get("ports") or []:
        if (isinstance(port, int) and p.get("port") == port) or (isinstance(port, str) and p.get("name") == port):
            sport = p
            break
    if sport is None or not endpoints:
        return []
    name = sport.get("name") or ""
    out: list[tuple[str, int]] = []
    for subset in endpoints.get("subsets") or []:
        ports = subset.get("ports") or []
        chosen = None
        for ep in ports:
            if (ep.get("name") or "") == name or len(ports) == 1:
                chosen = ep
                break
        if chosen is None:
            continue
        for addr in subset.get("addresses") or []:
            if addr.get("ip"):
                out.append((addr["ip"], int(chosen["port"])))
    return out


def _backend_ref(b: dict[str, Any] | None) -> tuple[str, int | str] | None:
    svc = (b or {}).get("service")
    if not svc or not svc.get("name"):
        return None
    port = svc.get("port") or {}
    return svc["name"], port["number"] if port.get("number") is not None else port.get("name", "")


def build_table(ingresses: list[dict[str, Any]], services: dict[tuple[str, str], dict[str, Any]],
                endpoints: dict[tuple[str, str], dict[str, Any]], default_class: str | None = None,
                previous: RouteTable | None = None) -> RouteTable:
    """The routing table of every nginx-class Ingress (oldest first wins on duplicate host+path, as ingress-nginx)."""
    cursors = {b.upstream: b.rr for b in previous.backends()} if previous else {}
    backends: dict[str, Backend] = {}

    def backend(ns: str, ref: tuple[str, int | str]) -> Backend:
        name, port = ref
        upstream = f"{ns}-{name}-{port}"
        b = backends.get(upstream)
        if b is None:
            eps = service_endpoints(services.get((ns, name)), endpoints.get((ns, name)), port)
            b = backends[upstream] = Backend(ns, name, port, upstream, eps, cursors.get(upstream, 0))
        return b

    table = RouteTable()
    seen: set[tuple[str, str, str]] = set()
    ordered = sorted(ingresses, key=lambda i: (i["metadata"].get("creationTimestamp") or "", i["metadata"]["name"]))
    owners = _upstream_owners(ordered, default_class)
    canaries: list[tuple[dict[str, Any], canary_rules.TrafficShapingPolicy]] = []
    for ing in ordered:
        if not is_nginx_ingress(ing, default_class) or (ing["metadata"].get("deletionTimestamp")):
            continue
        policy = canary_rules.parse(ing["metadata"].get("annotations"))
        if policy is not None:
            canaries.append((ing, policy))
            continue
        ns = ing["metadata"].get("namespace", "default")
        spec = ing.get("spec") or {}
        dref = _backend_ref(spec.get("defaultBackend"))
        if dref and table.default_backend is None:
            table.default_backend = backend(ns, dref)
        for rule in spec.get("rules") or []:
            host = (rule.get("host") or "").lower()
            for p in ((rule.get("http") or {}).get("paths") or []):
                ref = _backend_ref(p.get("backend"))
                if ref is None:
                    continue
                path, ptype = nginx_path(p.get("path"), p.get("pathType"))
                if owners.get(f"{ns}-{ref[0]}-{ref[1]}", ("", False))[1]:
                    continue  # the upstream is a canary's (NoServer): "Backend is not referenced to by a server"
                if (host, path, ptype) in seen:
                    continue
                seen.add((host, path, ptype))
                pr = PathRule(path, ptype, backend(ns, ref))
                if not host:
                    table.catch_all.append(pr)
                elif host.startswith("*."):
                    table.wildcards.setdefault(host[1:], []).append(pr)
                else:
                    table.hosts.setdefault(host, []).append(pr)
    for rules in [*table.hosts.values(), *table.wildcards.values(), table.catch_all]:
        rules.sort(key=lambda r: (-len(r.path), r.path_type != "Exact"))
    if len(canaries) < sum(1 for i in ordered if is_nginx_ingress(i, default_class)
                           and not i["metadata"].get("deletionTimestamp")):
        for ing, policy in canaries:
            _merge_canary(table, ing, policy, backend, owners)
    return table


def _upstream_owners(ordered: list[dict[str, Any]], default_class: str | None) -> dict[str, tuple[str, bool]]:
    """``createUpstreams``: each upstream is made once, by the oldest Ingress naming it (``if _, ok :=
    upstreams[name]; ok { continue }``): upstream -> (that Ingress's namespace/name, whether it is a canary). Only
    a canary that made its upstream sets ``NoServer`` and the traffic-shaping policy on it."""
    owners: dict[str, tuple[str, bool]] = {}
    for ing in ordered:
        if not is_nginx_ingress(ing, default_class) or ing["metadata"].get("deletionTimestamp"):
            continue
        ns = ing["metadata"].get("namespace", "default")
        key = f"{ns}/{ing['metadata']['name']}"
        is_canary = canary_rules.parse(ing["metadata"].get("annotations")) is not None
        spec = ing.get("spec") or {}
        refs = [_backend_ref(spec.get("defaultBackend"))] + [
            _backend_ref(p.get("backend")) for rule in spec.get("rules") or []
            for p in ((rule.get("http") or {}).get("paths") or [])]
        for ref in refs:
            if ref is not None:
                owners.setdefault(f"{ns}-{ref[0]}-{ref[1]}", (key, is_canary))
    return owners


def _merge(primary: Backend, alt: Backend) -> bool:
    """``mergeAlternativeBackend`` (+ the ``altEqualsPri`` check of its caller): False when not merged."""
    if alt.upstream == primary.upstream:
        return False
    if all(a.upstream != alt.upstream for a in primary.alternatives):
        primary.alternatives.append(alt)
    return True


def _server_rules(table: RouteTable, host: str) -> list[PathRule] | None:
    if not host:
        return table.catch_all
    if host.startswith("*."):
        return table.wildcards.get(host[1:])
    return table.hosts.get(host)


def _merge_canary(table: RouteTable, ing: dict[str, Any], policy: canary_rules.TrafficShapingPolicy,
                  backend, owners: dict[str, tuple[str, bool]]) -> None:
    """``mergeAlternativeBackends`` for one canary Ingress; the canary's upstream gets its traffic-shaping policy
    when this canary made it (:func:`_upstream_owners`), else it has none and selects nothing."""
    ns = ing["metadata"].get("namespace", "default")
    spec = ing.get("spec") or {}
    name = f"{ns}/{ing['metadata']['name']}"

    def shaped(alt: Backend) -> Backend:
        if owners.get(alt.upstream) == (name, True):
            alt.policy = policy
        return alt

    dref = _backend_ref(spec.get("defaultBackend"))
    if dref:
        alt = shaped(backend(ns, dref))
        merged = equals_primary = False
        for r in table.catch_all:
            if r.backend.upstream == alt.upstream:
                equals_primary = True
                break
            merged = _merge(r.backend, alt) or merged
        if not merged and not equals_primary:
            table.dropped.append(f"unable to find real backend for alternative backend {alt.upstream}. Deleting. "
                                 f"(canary Ingress {name}, default backend)")
    for rule in spec.get("rules") or []:
        host = (rule.get("host") or "").lower()
        rules = _server_rules(table, host)
        for p in ((rule.get("http") or {}).get("paths") or []):
            ref = _backend_ref(p.get("backend"))
            if ref is None:
                continue
            alt = backend(ns, ref)
            path, ptype = nginx_path(p.get("path"), p.get("pathType"))
            if rules is None:
                table.dropped.append(f"cannot merge alternative backend {alt.upstream} into hostname "
                                     f"{host or '_'} that does not exist (canary Ingress {name})")
                continue
            shaped(alt)
            merged = equals_primary = False
            for r in rules:
                if r.backend.upstream == alt.upstream:
                    equals_primary = True
                    break  # the canary's Service is the primary of another location: not merged
                if r.path == path and r.path_type == ptype:
                    merged = _merge(r.backend, alt) or merged
            if not merged and not equals_primary:
                table.dropped.append(f"unable to find real backend for alternative backend {alt.upstream}. "
                                     f"Deleting. (canary Ingress {name}: no main location {host or '_'} {path} "
                                     f"pathType {ptype})")
