"""The controllers service (``name = "controllers"``, no HTTP endpoint): the cluster's control loops.

Runs, each as its own level-triggered loop over the Kubernetes store (:mod:`sandbox.controllers.base`):
the node lifecycle (:mod:`.nodes`), the Deployment and ReplicaSet controllers (:mod:`.deployments`,
:mod:`.replicasets`), the scheduler (:mod:`.scheduler`), the kubelets (:mod:`.kubelet`, with the OSS CSI mount in
:mod:`.csi`), the PV/PVC binder (:mod:`.volumes`), the Endpoints controller (:mod:`.endpoints`), the Job controller
(:mod:`.jobs`), the disruption controller (PodDisruptionBudget status, :mod:`.disruption`), the garbage collector
(:mod:`.garbagecollector`), the namespace controller (:mod:`.namespaces`) and the pod grace-period reaper
(:mod:`.podgc`). Delays come from :mod:`sandbox.timings`. It is given the ``kube`` service (the store), ``fleet`` (instances become nodes), ``oss``
(the CSI mounts) and the :class:`~sandbox.controllers.runtime.PodLogs` it shares with the API server.

In-process API (for issue 4's runtime, ingress and autoscaler, and for tests):

- ``runtimes``: the :class:`~sandbox.controllers.runtime.RuntimeRegistry` where a container runtime plugs in
  (``runtimes.register(rt, first=True)``; ``runtimes.changed()`` wakes the kubelet).
- ``volumes_of(namespace, pod) -> {volume name: VolumeSource}``: what each volume of a started pod maps to
  (OSS bucket/path for the CSI PVs, ConfigMap/Secret names), as the kubelet mounted it.
- ``logs(namespace, pod, container=None) -> str``: the container's log text (what ``kubectl logs`` would show).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..context import SandboxContext
from ..service import Service
from ..timings import resolve
from .base import Controller
from .deployments import DeploymentController
from .disruption import DisruptionController
from .endpoints import EndpointsController
from .garbagecollector import GarbageCollector
from .jobs import JobController
from .kubelet import Kubelet, image_id
from .namespaces import NamespaceController
from .nodes import NodeController
from .podgc import PodGC
from .replicasets import ReplicaSetController
from .runtime import PodLogs, RuntimeRegistry, VolumeSource
from .scheduler import Scheduler
from .volumes import VolumeBinder

if TYPE_CHECKING:
    from ..fleet.service import FleetService
    from ..kube.service import KubeService
    from ..kube.storage import Change
    from ..oss.service import OssService

log = logging.getLogger("sandbox.controllers")

CONTROLLERS: tuple[type[Controller], ...] = (
    NodeController, VolumeBinder, DeploymentController, ReplicaSetController, Scheduler, Kubelet,
    EndpointsController, JobController, DisruptionController, GarbageCollector, NamespaceController, PodGC,
)


class ControllersService(Service):
    name = "controllers"

    def __init__(self, ctx: SandboxContext, kube: KubeService, fleet: FleetService, oss: OssService,
                 logs: PodLogs) -> None:
        super().__init__(ctx)
        self.kube = kube
        self.fleet = fleet
        self.oss = oss
        self.pod_logs = logs
        self.timings = resolve(ctx.options)
        self.runtimes = RuntimeRegistry(on_change=self._runtime_changed)
        self.controllers: list[Controller] = []
        self._on_writes: list[Controller] = []  # controllers with their own Controller.wants filter
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._bg: set[asyncio.Task] = set()
        self._volumes: dict[tuple[str, str], dict[str, VolumeSource]] = {}
        self._images: dict[str, dict[str, int]] = {}

    # ---- lifecycle -----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.controllers = [cls(self) for cls in CONTROLLERS]
        self._on_writes = [c for c in self.controllers if type(c).wants is not Controller.wants]
        self.kube.store.on_change(self._store_changed)
        topics = sorted({t for c in self.controllers for t in c.topics if t != "runtime"})
        for topic in topics:
            self._tasks.append(asyncio.create_task(self._fan_out(topic), name=f"controllers-bus-{topic}"))
        for c in self.controllers:
            self._tasks.append(asyncio.create_task(c.run(), name=f"controller-{c.name}"))

    async def stop(self) -> None:
        for t in self._tasks + list(self._bg):
            t.cancel()
        for t in self._tasks + list(self._bg):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    async def _fan_out(self, topic: str) -> None:
        watchers = [c for c in self.controllers if topic in c.topics]
        while True:
            await self.ctx.bus.wait(topic)
            for c in watchers:
                c.wake.set()

    def _store_changed(self, key: str, change: Change) -> None:
        """The store's change feed (any thread, under the store's lock): wake the controllers that want it."""
        woken = [c.wake for c in self._on_writes if c.wants(key, change)]
        if not woken or self._loop is None:
            return
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        for wake in woken:
            if on_loop:
                wake.set()
            else:
                with contextlib.suppress(RuntimeError):  # the loop is closed: the sandbox stopped
                    self._loop.call_soon_threadsafe(wake.set)

    def _runtime_changed(self) -> None:
        for c in self.controllers:
            if "runtime" in c.topics:
                c.wake.set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a runtime's coroutine (e.g. ``handle.stop()``) in the background, logging failures."""
        async def guarded() -> None:
            try:
                await coro
            except Exception:  # noqa: BLE001
                log.exception("controllers background task failed")

        task = asyncio.get_running_loop().create_task(guarded())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # ---- state kept for the runtime seam ---------------------------------------------------------------------------
    def set_volumes(self, namespace: str, pod: str, volumes: dict[str, VolumeSource]) -> None:
        self._volumes[(namespace, pod)] = dict(volumes)

    def volumes_of(self, namespace: str, pod: str) -> dict[str, VolumeSource]:
        return dict(self._volumes.get((namespace, pod), {}))

    def set_log(self, namespace: str, pod: str, container: str, text: str) -> None:
        self.pod_logs.set(namespace, pod, container, text)

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        return self.pod_logs.logs(namespace, pod, container)

    def forget_pod(self, namespace: str, pod: str) -> None:
        self._volumes.pop((namespace, pod), None)
        self.pod_logs.forget(namespace, pod)

    def add_image(self, node: str, image: str, size: int) -> None:
        self._images.setdefault(node, {})[image] = size

    def image_list(self, node: str) -> list[dict[str, Any]]:
        """``status.images`` of a node: biggest first (kubelet sorts by size), at most 50."""
        imgs = sorted(self._images.get(node, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:50]
        return [{"names": [image_id(name), name], "sizeBytes": size} for name, size in imgs]
