"""The runtime service (``name = "runtime"``, no HTTP endpoint of its own): TF-Serving-compatible pods.

How it plugs in (both seams are in-process, in the sandbox's event loop):

- **Container runtime** (:mod:`sandbox.controllers.runtime`): registered first on the controllers service's
  ``runtimes``; it claims every container whose command runs ``tensorflow_model_server``
  (directly or through ``sh -c``) and starts a :class:`~sandbox.runtime.server.ModelServer` for it with the
  container's resolved mounts (``ContainerSpec.mounts``: ConfigMaps and the OSS bucket/path of CSI PVs). The kubelet
  polls ``state()`` (readiness = the pod's readiness probe run against the server; exit codes) and ``logs()``.
- **Ingress endpoints** (:mod:`sandbox.ingress.service`): the ingress is given :meth:`RuntimeService.resolve` as a
  resolver (:func:`sandbox.registry.build`); it maps ``(pod IP, --rest_api_port)`` to the loopback ``(host, port)`` where that pod's REST API listens, while
  the pod's server runs. The mapping is dropped when the kubelet stops the container (pod deleted, restarted).

In-process API (tests, tools): ``servers`` (``{(namespace, pod, container): ModelServer}``),
``address(namespace, pod) -> (host, port) | None`` (the REST listener), ``server(namespace, pod)``.

Per-pod files (copies of the model versions being served) live under ``<state dir>/runtime/<pod uid>/`` and are
removed when the container stops. Capacity settings: :mod:`sandbox.runtime.capacity`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sandbox.context import SandboxContext
from sandbox.controllers.runtime import ContainerHandle, ContainerSpec, runs_binary
from sandbox.service import Service
from sandbox.timings import resolve as resolve_timings

from .capacity import resolve_settings
from .flags import MODEL_SERVER
from .podfs import PodFS
from .server import ModelServer

if TYPE_CHECKING:
    from sandbox.controllers.service import ControllersService
    from sandbox.kube.api import KubeStore
    from sandbox.kube.service import KubeService
    from sandbox.oss.service import OssService

log = logging.getLogger("sandbox.runtime")


class TfServingRuntime:
    """The :class:`~sandbox.controllers.runtime.ContainerRuntime` for ``tensorflow_model_server`` containers."""

    name = "tensorflow-serving"

    def __init__(self, ctx: SandboxContext, store: KubeStore, oss: OssService, changed: Callable[[], None]) -> None:
        self.ctx = ctx
        self.store = store
        self.oss = oss
        self.changed = changed
        self.options = ctx.options
        self.timings = resolve_timings(self.options)
        self.servers: dict[tuple[str, str, str], ModelServer] = {}

    def claims(self, pod: dict[str, Any], container: dict[str, Any]) -> bool:
        return runs_binary(container, MODEL_SERVER)

    def start(self, spec: ContainerSpec) -> ContainerHandle:
        pod = self.store.try_get("pods", spec.namespace, spec.pod_name) or {}
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        settings = resolve_settings(self.options, annotations)
        fs = PodFS(list(spec.mounts), spec.namespace, self.store, self.oss)
        key = (spec.namespace, spec.pod_name, spec.name)
        old = self.servers.get(key)
        if old is not None:
            self._forget(old)
        cache = self.ctx.state_dir / "runtime" / spec.pod_uid / f"{spec.name}-{spec.restart_count}"
        server = ModelServer(spec, fs=fs, clock=self.ctx.clock, timings=self.timings, settings=settings,
                             cache_dir=cache, changed=self.changed, on_stop=self._forget)
        self.servers[key] = server
        return server

    def _forget(self, server: ModelServer) -> None:
        key = (server.spec.namespace, server.spec.pod_name, server.spec.name)
        if self.servers.get(key) is server:
            del self.servers[key]

    def resolve(self, pod_ip: str, port: int) -> tuple[str, int] | None:
        """The ingress resolver: ``(pod IP, REST port)`` -> the loopback address of that pod's REST listener."""
        for server in self.servers.values():
            if server.spec.pod_ip == pod_ip and server.flags is not None and server.rest_address is not None \
                    and server.flags.rest_api_port == int(port) and server.exit_code is None:
                return server.rest_address
        return None

    def server(self, namespace: str, pod: str, container: str | None = None) -> ModelServer | None:
        for (ns, p, c), s in self.servers.items():
            if ns == namespace and p == pod and (container is None or c == container):
                return s
        return None


class RuntimeService(Service):
    name = "runtime"

    def __init__(self, ctx: SandboxContext, kube: KubeService, controllers: ControllersService, oss: OssService) -> None:
        super().__init__(ctx)
        self.controllers = controllers
        self.runtime = TfServingRuntime(ctx, kube.store, oss, controllers.runtimes.changed)

    @property
    def servers(self) -> dict[tuple[str, str, str], ModelServer]:
        return self.runtime.servers

    async def start(self) -> None:
        self.controllers.runtimes.register(self.runtime, first=True)

    async def stop(self) -> None:
        self.controllers.runtimes.unregister(self.runtime.name)
        for server in list(self.runtime.servers.values()):
            await server.stop()

    def resolve(self, pod_ip: str, port: int) -> tuple[str, int] | None:
        return self.runtime.resolve(pod_ip, port)

    def server(self, namespace: str, pod: str, container: str | None = None) -> ModelServer | None:
        return self.runtime.server(namespace, pod, container)

    def address(self, namespace: str, pod: str) -> tuple[str, int] | None:
        """The loopback (host, port) of the pod's REST listener, once the server exported it."""
        s = self.runtime.server(namespace, pod)
        return s.rest_address if s is not None else None
