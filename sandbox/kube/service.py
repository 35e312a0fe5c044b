"""The sandbox's Kubernetes API server (HTTPS, bearer token, 1.33).

``KubeService.store`` is the in-process API the controllers use (see :mod:`sandbox.kube.api` for the contract),
``KubeService.events`` records Events (:mod:`sandbox.kube.events`);
``user_kubeconfig()`` serves ACK's DescribeClusterUserKubeconfig; ``register_api()`` lets another sandbox
service answer an aggregated API group (e.g. ``external.metrics.k8s.io``) on this server. ``pods/log`` is read from
the :class:`PodLogSource` it is given (the kubelets' container logs, as the real API server asks the kubelet).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..runner import write_private
from ..service import Service
from . import kubeconfig, operations, seed
from .api import KubeStore
from .app import KubeApp
from .auth import Tokens
from .certs import ensure_certs
from .events import EventRecorder

log = logging.getLogger("sandbox.kube")
DEFAULT_USER_TTL_MINUTES = 3 * 365 * 24 * 60  # ACK's default for a kubeconfig without a temporary duration


class PodLogSource(Protocol):
    """Where ``pods/log`` is read from: the container's log text, ``""`` when there is none."""

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str: ...


class KubeService(Service):
    name = "kube"
    scheme = "https"

    def __init__(self, ctx, logs: PodLogSource) -> None:
        super().__init__(ctx)
        self.logs = logs
        self.dir = ctx.state_dir / "kube"
        self.tls = ensure_certs(self.dir)
        self.tokens = Tokens(ctx.store, ctx.clock)
        self.store = KubeStore(ctx)
        self.events = EventRecorder(self.store)
        self.aggregated: dict[tuple[str, str], dict[str, Any]] = {}
        self.endpoint = ""
        self.kubeconfig_path = ctx.state_dir / "kubeconfig"
        self._seed()

    # ---- Service hooks -------------------------------------------------------------------------------------------
    def app(self) -> Any:
        return KubeApp(self)

    def ssl_options(self) -> dict[str, Any]:
        return {"ssl_certfile": str(self.tls.cert), "ssl_keyfile": str(self.tls.key)}

    def on_bound(self, endpoint: str) -> None:
        self.endpoint = endpoint
        text = kubeconfig.render(endpoint, self.tls.ca_cert.read_bytes(), self.tokens.admin)
        write_private(self.kubeconfig_path, text)

    async def start(self) -> None:
        self.store.loop = asyncio.get_running_loop()

    def info(self) -> dict[str, Any]:
        return {"kube_endpoint": self.endpoint, "kubeconfig": str(self.kubeconfig_path)}

    # ---- fault injection (sandbox.faults.FaultTarget) ------------------------------------------------------------
    def fault_operation(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
        return operations.operation(method, path, query)

    def fault_error(self, kind: str, status: int, method: str, host: str) -> tuple[int, list, bytes]:
        return operations.injected_error(kind, status)

    # ---- ACK DescribeClusterUserKubeconfig ---------------------------------------------------------------------------
    def user_kubeconfig(self, temporary_minutes: int | None = None, private_ip: bool = False) -> tuple[str, str]:
        """(kubeconfig YAML with a new token, expiration RFC 3339 in simulated time)."""
        minutes = temporary_minutes or DEFAULT_USER_TTL_MINUTES
        ident = self.ctx.identity
        token, expires = self.tokens.issue(f"{ident.account_id}", minutes * 60)
        text = kubeconfig.render(self.endpoint, self.tls.ca_cert.read_bytes(), token, cluster="kubernetes",
                                 user=ident.account_id, context=f"{ident.account_id}-{ident.cluster_id}")
        return text, self.ctx.clock.iso(expires)

    # ---- aggregated APIs served by other sandbox services -------------------------------------------------------------
    def register_api(self, group: str, version: str, resources: list[dict[str, Any]],
                     handler: Callable[[Any], Awaitable[Any]]) -> None:
        """Serve ``/apis/{group}/{version}/...`` with ``handler(starlette Request) -> Response``.

        ``resources`` are aggregated-discovery resource entries (``{"resource", "responseKind", "scope",
        "verbs"}``); they appear in ``/apis`` discovery like an APIService-backed group.
        """
        self.aggregated[(group, version)] = {"resources": resources, "handler": handler}

    def extra_groups(self) -> list[tuple[str, list[str]]]:
        groups: dict[str, list[str]] = {}
        for g, v in self.aggregated:
            groups.setdefault(g, []).append(v)
        return list(groups.items())

    def extra_aggregated(self) -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for (g, v), spec in self.aggregated.items():
            item = out.setdefault(g, {"metadata": {"name": g, "creationTimestamp": None}, "versions": []})
            item["versions"].append({"version": v, "resources": spec["resources"], "freshness": "Current"})
        return list(out.values())

    # ---- internals -----------------------------------------------------------------------------------------------
    def _seed(self) -> None:
        if self.ctx.store.get_meta("kube_seeded"):
            return
        for resource, obj in seed.objects():
            ns = obj["metadata"].get("namespace")
            created = self.store.create(resource, obj, ns, field_manager="kube-apiserver")
            if resource == "apiservices":
                created["status"] = {"conditions": [seed.available_condition(self.store.now())]}
                self.store.update_status(resource, created, field_manager="kube-apiserver")
        self.ctx.store.set_meta("kube_seeded", True)
