"""The container-runtime seam: how a pod's containers "run" in the sandbox.

The kubelet (:mod:`sandbox.controllers.kubelet`) drives the pod lifecycle (volumes, image pull, create, start,
readiness, restarts, stop) and asks a :class:`ContainerRuntime` to run each container once it is started. Runtimes
are registered on the controllers service::

    controllers.runtimes.register(MyRuntime(), first=True)

For each container the kubelet asks the registered runtimes in order ``claims(pod, container)``; the first that
claims it gets ``start(spec)`` and returns a :class:`ContainerHandle`. Unclaimed containers run on the built-in
:class:`PlainRuntime` (the container runs until stopped and is ready as soon as it runs, which is also how a
readiness probe is treated for it). Issue 4's TF-Serving runtime claims containers whose command runs
``tensorflow_model_server`` (see :func:`runs_binary`), reads the model through ``spec.mounts`` (OSS bucket/path of
each CSI volume, ConfigMap/Secret names, all resolved by the kubelet's volume manager) and reports readiness (its
REST model-status endpoint) and exits through the handle.

The kubelet polls ``handle.state()`` on every pass (at least every ``kubelet_resync`` simulated seconds) and as soon
as a runtime calls ``runtimes.changed()``; ``handle.logs()`` is what ``kubectl logs`` would show; ``handle.stop()``
is called when the pod is deleted or the container is restarted. Handles must not block the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class VolumeSource(BaseModel):
    """What a pod volume resolves to on the node (the kubelet's volume manager fills it in)."""

    model_config = ConfigDict(frozen=True)

    name: str  # the pod's volume name
    kind: Literal["oss", "configMap", "secret", "emptyDir", "hostPath", "pvc", "other"]
    # oss (CSI ossplugin.csi.alibabacloud.com): bucket and path inside it (``/`` = the bucket root), the PV's url
    bucket: str | None = None
    path: str | None = None
    url: str | None = None
    pv: str | None = None
    pvc: str | None = None
    read_only: bool = False
    # configMap / secret: the object's name (read it from the store: ``kube.store.get("configmaps", ns, name)``)
    source_name: str | None = None
    items: list[dict[str, Any]] = Field(default_factory=list)


class Mount(BaseModel):
    """One ``volumeMounts`` entry of a container, resolved."""

    model_config = ConfigDict(frozen=True)

    mount_path: str
    sub_path: str = ""
    read_only: bool = False
    volume: VolumeSource


class ContainerSpec(BaseModel):
    """Everything a runtime needs to run one container."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    pod_name: str
    pod_uid: str
    node_name: str
    pod_ip: str
    container: dict[str, Any]  # the container as in the pod spec (name, image, command, args, env, ports ...)
    mounts: list[Mount] = Field(default_factory=list)
    restart_count: int = 0

    @property
    def name(self) -> str:
        return self.container.get("name", "")

    @property
    def argv(self) -> list[str]:
        return [str(x) for x in (self.container.get("command") or []) + (self.container.get("args") or [])]


class ContainerState(BaseModel):
    """What a running container reports. ``exit_code`` set = the process ended (restartPolicy decides next)."""

    ready: bool = True
    exit_code: int | None = None
    reason: str = ""  # e.g. "Error", "Completed", "OOMKilled"
    message: str = ""  # readiness failure / exit message shown in events and the container status


@runtime_checkable
class ContainerHandle(Protocol):
    """A running container. ``stop()`` is its end (SIGTERM for one that exits on it, SIGKILL otherwise); a handle
    may say ``ignores_sigterm = True`` when its process has no SIGTERM handler: the kubelet then stops it only when
    the pod's grace period ends (:mod:`sandbox.controllers.kubelet`)."""

    def state(self) -> ContainerState: ...

    def logs(self) -> str: ...

    async def stop(self) -> None: ...


@runtime_checkable
class ContainerRuntime(Protocol):
    name: str

    def claims(self, pod: dict[str, Any], container: dict[str, Any]) -> bool: ...

    def start(self, spec: ContainerSpec) -> ContainerHandle: ...


def runs_binary(container: dict[str, Any], binary: str) -> bool:
    """True when the container's command (or, without one, its first arg) runs ``binary`` (by basename)."""
    argv = [str(x) for x in (container.get("command") or container.get("args") or [])]
    if not argv:
        return False
    first = argv[0]
    if first in ("sh", "/bin/sh", "bash", "/bin/bash") and len(argv) >= 3:
        return binary in argv[2]
    return first.rsplit("/", 1)[-1] == binary


class PlainHandle:
    """A container that runs until stopped and is ready while it runs."""

    def __init__(self, spec: ContainerSpec) -> None:
        self.spec = spec

    def state(self) -> ContainerState:
        return ContainerState(ready=True)

    def logs(self) -> str:
        return ""

    async def stop(self) -> None:
        return None


class PlainRuntime:
    name = "plain"

    def claims(self, pod: dict[str, Any], container: dict[str, Any]) -> bool:
        return True

    def start(self, spec: ContainerSpec) -> ContainerHandle:
        return PlainHandle(spec)


class PodLogs:
    """The containers' log text as the kubelets last read it from their runtimes (what ``kubectl logs`` shows).

    Written by the kubelet, read by the API server's ``pods/log`` (:class:`sandbox.kube.service.PodLogSource`).
    """

    def __init__(self) -> None:
        self._logs: dict[tuple[str, str, str], str] = {}

    def set(self, namespace: str, pod: str, container: str, text: str) -> None:
        self._logs[(namespace, pod, container)] = text

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        if container is None:
            for (ns, p, _c), text in self._logs.items():
                if ns == namespace and p == pod:
                    return text
            return ""
        return self._logs.get((namespace, pod, container), "")

    def forget(self, namespace: str, pod: str) -> None:
        for key in [k for k in self._logs if k[0] == namespace and k[1] == pod]:
            del self._logs[key]


class RuntimeRegistry:
    """Runtimes in the order they are asked; the plain runtime is always last."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._runtimes: list[ContainerRuntime] = []
        self.plain = PlainRuntime()
        self._on_change = on_change

    def register(self, runtime: ContainerRuntime, first: bool = False) -> None:
        if not isinstance(runtime, ContainerRuntime):
            raise TypeError(f"{runtime!r} does not implement ContainerRuntime (name, claims, start)")
        self.unregister(runtime.name)
        if first:
            self._runtimes.insert(0, runtime)
        else:
            self._runtimes.append(runtime)

    def unregister(self, name: str) -> None:
        self._runtimes = [r for r in self._runtimes if r.name != name]

    def for_container(self, pod: dict[str, Any], container: dict[str, Any]) -> ContainerRuntime:
        for r in self._runtimes:
            if r.claims(pod, container):
                return r
        return self.plain

    def changed(self) -> None:
        """A runtime's container changed state (ready, exited): wake the kubelet. Call from the sandbox loop."""
        if self._on_change:
            self._on_change()
