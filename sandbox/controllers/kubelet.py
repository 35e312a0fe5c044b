"""The kubelets of every node, as one loop over the pods bound to live nodes (kwok-style stages with real effects).

Per pod, stages with their delays from the timing table (simulated seconds); the stages are data, the
:data:`STAGES` table (stage -> when it is due -> what it does -> next stage), driven by one loop:

``volumes`` (``volume_mount``; failures -> Warning ``FailedMount``, retried with exponential backoff
``mount_retry_min`` .. ``mount_retry_max``, see :mod:`sandbox.controllers.csi`) -> ``sandbox`` (pod IP from the
node's ``podCIDR``, condition PodReadyToStartContainers) -> per container, in order: image ``pull``
(``Pulling``/``Pulled`` events with kubelet's messages; a pull costs ``image_pull_overhead`` + size /
``image_pull_mb_per_s``; pulls on one node are serialized, as kubelet's default ``serializeImagePulls``; an image
already on the node is ``already present on machine``; ``imagePullPolicy: Always`` re-checks it in
``image_pull_cached``) -> ``Created`` -> ``start`` (``container_start``) -> ``Started``; the container is handed to
its runtime (:mod:`sandbox.controllers.runtime`) -> ``running``: readiness is the runtime's, but not before the
readiness probe's ``initialDelaySeconds`` + ``pod_readiness``; a container whose runtime reports an exit is
restarted per ``restartPolicy`` after CrashLoopBackOff (``crash_backoff_min`` doubling to ``crash_backoff_max``).
Init containers run first and complete as soon as they start.

Deletion: a pod with ``deletionTimestamp`` gets ``Killing`` ("Stopping container x") events and its containers the
stop signal (SIGTERM). A container whose process exits on it stops within ``container_stop``; one whose process
ignores it (:attr:`~sandbox.controllers.runtime.ContainerHandle.ignores_sigterm`: ``tensorflow_model_server`` has
no SIGTERM handler, tensorflow/serving#356 and #1853, so a TF Serving pod stays Terminating for its whole grace
period, kserve/kserve#394) keeps running, and serving, until the grace period ends and the kubelet kills it
(``pkg/kubelet/kuberuntime/kuberuntime_container.go`` ``killContainer``: StopContainer with the grace period as
its timeout). Then the kubelet finishes the delete with grace period 0. The seconds a pod's spec writes (probe
delays, the grace period) count ``pod_seconds`` each (:mod:`sandbox.timings`).

Status written (only when it changes): phase, conditions (PodReadyToStartContainers, Initialized, Ready,
ContainersReady, PodScheduled), hostIP(s), podIP(s), startTime, containerStatuses (state waiting/running/terminated,
lastState, ready, started, restartCount, image, imageID, containerID ``containerd://...``), qosClass.
Event messages follow ``pkg/kubelet/events`` and ``pkg/kubelet/images/image_manager.go`` (1.33).
Pod state lives in memory (a sandbox restart is a kubelet restart: running pods are adopted as they are).
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..kube.errors import KubeError
from .base import Controller
from .csi import MountError, mount_volumes
from .runtime import ContainerHandle, ContainerSpec, ContainerState, Mount, VolumeSource
from .util import go_duration, set_condition

KUBELET = "kubelet"

# Image sizes (bytes) the sandbox assumes; anything else counts as a small image.
IMAGE_SIZES = {
    "tensorflow/serving:1.15.0-gpu": 1_745_000_000,
    "tensorflow/serving": 300_000_000,
    "nginx": 70_000_000,
    "busybox": 2_200_000,
}
DEFAULT_IMAGE_SIZE = 60_000_000


def normalize_image(image: str) -> str:
    """``nginx:1.25`` -> ``docker.io/library/nginx:1.25`` (the name containerd reports)."""
    name = image
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        name += ":latest"
    return name


def image_size(image: str) -> int:
    """The assumed size of an image (by its short name, with or without the tag)."""
    base = image
    for prefix in ("docker.io/library/", "docker.io/"):
        if base.startswith(prefix):
            base = base[len(prefix):]
            break
    if base in IMAGE_SIZES:
        return IMAGE_SIZES[base]
    repo = base.split("@", 1)[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    return IMAGE_SIZES.get(repo, DEFAULT_IMAGE_SIZE)


def image_id(image: str) -> str:
    full = normalize_image(image)
    repo = full.split("@", 1)[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    return f"{repo}@sha256:{hashlib.sha256(full.encode()).hexdigest()}"


@dataclass
class CRun:
    name: str
    spec: dict[str, Any]
    init: bool = False
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"  # waiting/terminated reason
    message: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    ready: bool = False
    restarts: int = 0
    container_id: str = ""
    handle: ContainerHandle | None = None
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_at: float | None = None
    unhealthy_msg: str = ""


@dataclass
class PodRun:
    uid: str
    ns: str
    name: str
    node: str
    stage: str = "volumes"  # a key of STAGES
    due: float = 0.0
    idx: int = 0  # container being pulled/started
    pull_requested: float = 0.0
    pull_started: float = 0.0
    mount_failures: int = 0
    pod_ip: str = ""
    sandbox: bool = False
    started: float = 0.0
    containers: list[CRun] = field(default_factory=list)
    volumes: dict[str, VolumeSource] = field(default_factory=dict)


class Kubelet(Controller):
    name = KUBELET
    topics = ("kube/pods", "kube/nodes", "kube/secrets", "kube/configmaps", "kube/persistentvolumeclaims",
              "kube/persistentvolumes", "runtime")
    resync_key = "kubelet_resync"

    def __init__(self, svc) -> None:
        super().__init__(svc)
        self.runs: dict[str, PodRun] = {}
        self.pull_busy: dict[str, float] = {}  # node -> when its current pull ends
        self.pulling: dict[tuple[str, str], float] = {}  # (node, image) -> when it is on the node

    # ---- the loop ---------------------------------------------------------------------------------------------
    def reconcile(self) -> float | None:
        now = self.clock.now()
        nodes = {n["metadata"]["name"]: n for n in self.objects("nodes")}
        live_nodes = {name for name, n in nodes.items() if node_kubelet_alive(n)}
        seen: set[str] = set()
        due: list[float] = []
        for pod in self.indexed("pods", "spec.nodeName", live_nodes):
            node = pod["spec"]["nodeName"]
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            try:
                d = self._sync(pod, nodes[node], now)
            except KubeError:
                d = now + 1.0
            if d is not None:
                due.append(d)
        for uid in list(self.runs):
            if uid not in seen:
                self._forget(self.runs.pop(uid))
        return min(due) if due else None

    def _forget(self, run: PodRun) -> None:
        for c in run.containers:
            if c.handle is not None:
                self.svc.spawn(c.handle.stop())
                c.handle = None
        self.svc.forget_pod(run.ns, run.name)

    # ---- one pod ----------------------------------------------------------------------------------------------
    def _sync(self, pod: dict[str, Any], node: dict[str, Any], now: float) -> float | None:
        m = pod["metadata"]
        run = self.runs.get(m["uid"])
        if run is None:
            run = self._new_run(pod, node, now)
            self.runs[m["uid"]] = run
        phase = (pod.get("status") or {}).get("phase")
        if m.get("deletionTimestamp") and run.stage not in ("stopping", "done"):
            return self._begin_stop(pod, run, now)
        if run.stage in ("stopping", "done"):
            return self._advance(pod, node, run, now)
        if phase in ("Succeeded", "Failed"):
            return None
        d = self._advance(pod, node, run, now)
        self._write_status(pod, node, run, now)
        return d

    def _new_run(self, pod: dict[str, Any], node: dict[str, Any], now: float) -> PodRun:
        m, spec, st = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        run = PodRun(uid=m["uid"], ns=m.get("namespace") or "default", name=m["name"], node=node["metadata"]["name"])
        run.containers = [CRun(name=c.get("name", ""), spec=copy.deepcopy(c), init=True)
                          for c in spec.get("initContainers") or []]
        run.containers += [CRun(name=c.get("name", ""), spec=copy.deepcopy(c)) for c in spec.get("containers") or []]
        self._enter(pod, run, "volumes", now)
        run.started = _parse_ts(st.get("startTime")) or now
        statuses = {s.get("name"): s for s in st.get("containerStatuses") or []}
        if st.get("phase") == "Running" and st.get("podIP") and statuses and all(
                "running" in (statuses.get(c.name) or {}).get("state", {}) for c in run.containers if not c.init):
            # adopt a pod that was running before a restart: restart its runtimes quietly
            try:
                run.volumes = mount_volumes(self.store, self.svc.oss, pod)
            except MountError:
                return run
            run.pod_ip, run.sandbox = st["podIP"], True
            for c in run.containers:
                s = statuses.get(c.name) or {}
                if c.init:
                    c.state, c.reason, c.exit_code = "terminated", "Completed", 0
                    continue
                c.restarts = int(s.get("restartCount") or 0)
                c.container_id = s.get("containerID") or _container_id(run.uid, c.name, c.restarts)
                self._start_handle(pod, run, c, now, _parse_ts((s.get("state") or {}).get("running", {})
                                                               .get("startedAt")) or now)
            run.stage, run.idx = "running", len(run.containers)
            self.svc.set_volumes(run.ns, run.name, run.volumes)
        return run

    def _advance(self, pod: dict[str, Any], node: dict[str, Any], run: PodRun, now: float) -> float | None:
        """Drive the pod through :data:`STAGES`: a stage's effect runs once it is due and names the next stage.

        One pass may cross several stage boundaries when their deadlines have passed."""
        for _ in range(4 * len(run.containers) + 8):
            stage = STAGES[run.stage]
            if stage.steady is not None:
                return stage.steady(self, pod, run, now)
            if now < run.due:
                return run.due
            nxt = stage.effect(self, pod, node, run, now) if stage.effect is not None else None
            if nxt is None:  # the effect did not complete (a failed mount): it set when to try again
                return run.due
            self._enter(pod, run, nxt, now)
        return now + 1.0

    def _enter(self, pod: dict[str, Any], run: PodRun, stage: str, now: float) -> None:
        run.stage = stage
        due = STAGES[stage].due
        run.due = due(self, pod, run, now) if due is not None else now

    # ---- stage effects (see STAGES) ---------------------------------------------------------------------------
    def _mount(self, pod: dict[str, Any], node: dict[str, Any], run: PodRun, now: float) -> str | None:
        try:
            run.volumes = mount_volumes(self.store, self.svc.oss, pod)
        except MountError as e:
            run.mount_failures += 1
            backoff = min(self.timings["mount_retry_max"],
                          self.timings["mount_retry_min"] * 2 ** (run.mount_failures - 1))
            self.event(pod, "Warning", "FailedMount", str(e), KUBELET, host=run.node)
            run.due = now + backoff
            return None
        self.svc.set_volumes(run.ns, run.name, run.volumes)
        run.pod_ip = self._allocate_ip(node, run)
        run.sandbox = True
        run.idx = 0
        return "pull" if run.containers else "running"

    def _pull_due(self, pod: dict[str, Any], run: PodRun, now: float) -> float:
        run.pull_requested = now
        return self._request_pull(pod, run, run.containers[run.idx], now)

    def _create(self, pod: dict[str, Any], node: dict[str, Any], run: PodRun, now: float) -> str:
        c = run.containers[run.idx]
        self._pulled(pod, run, c, now)
        self.event(pod, "Normal", "Created", f"Created container: {c.name}", KUBELET, host=run.node)
        c.container_id = _container_id(run.uid, c.name, c.restarts)
        return "start"

    def _start(self, pod: dict[str, Any], node: dict[str, Any], run: PodRun, now: float) -> str:
        c = run.containers[run.idx]
        self.event(pod, "Normal", "Started", f"Started container {c.name}", KUBELET, host=run.node)
        self._start_handle(pod, run, c, now, now)
        if c.init and c.state == "running":  # init containers complete as they start
            self._terminate(c, now, 0, "Completed")
        run.idx += 1
        return "pull" if run.idx < len(run.containers) else "running"

    def _finish_delete(self, pod: dict[str, Any], node: dict[str, Any], run: PodRun, now: float) -> str:
        for c in run.containers:  # the grace period is over: SIGKILL what still runs
            if c.handle is not None:
                self.svc.spawn(c.handle.stop())
                c.handle = None
        self.store.delete("pods", run.ns, run.name, grace_period_seconds=0)
        return "done"

    # ---- images -----------------------------------------------------------------------------------------------
    def _request_pull(self, pod: dict[str, Any], run: PodRun, c: CRun, now: float) -> float:
        image = c.spec.get("image", "")
        key = (run.node, normalize_image(image))
        policy = c.spec.get("imagePullPolicy") or "IfNotPresent"
        on_node = key in self.pulling and self.pulling[key] <= now
        if on_node and policy != "Always":
            c.message = "present"
            return now
        if policy == "Never":
            c.message = "never"
            return now
        self.event(pod, "Normal", "Pulling", f'Pulling image "{image}"', KUBELET, host=run.node)
        if key in self.pulling and self.pulling[key] > now:  # another pod on this node is pulling it
            c.message = "waiting"
            run.pull_started = now
            return self.pulling[key]
        cost = self.timings["image_pull_cached"] if on_node else (
            self.timings["image_pull_overhead"] + image_size(key[1]) / 1e6 / max(self.timings["image_pull_mb_per_s"], 1e-6))
        start = max(now, self.pull_busy.get(run.node, 0.0))
        done = start + cost
        self.pull_busy[run.node] = done
        self.pulling[key] = done if not on_node else self.pulling[key]
        run.pull_started = start
        c.message = "pulled"
        return done

    def _pulled(self, pod: dict[str, Any], run: PodRun, c: CRun, now: float) -> None:
        image = c.spec.get("image", "")
        how = c.message
        c.message = ""
        if how == "present":
            self.event(pod, "Normal", "Pulled", f'Container image "{image}" already present on machine',
                       KUBELET, host=run.node)
            return
        if how == "never":
            return
        key = (run.node, normalize_image(image))
        self.svc.add_image(run.node, key[1], image_size(key[1]))
        total = max(0.0, run.due - run.pull_requested)
        pull = max(0.0, run.due - run.pull_started) if how == "pulled" else total
        self.event(pod, "Normal", "Pulled", f'Successfully pulled image "{image}" in {go_duration(pull)} '
                   f"({go_duration(total)} including waiting). Image size: {image_size(key[1])} bytes.",
                   KUBELET, host=run.node)

    # ---- containers -------------------------------------------------------------------------------------------
    def _start_handle(self, pod: dict[str, Any], run: PodRun, c: CRun, now: float, started_at: float) -> None:
        mounts = []
        for vm in c.spec.get("volumeMounts") or []:
            src = run.volumes.get(vm.get("name", ""))
            if src is not None:
                mounts.append(Mount(mount_path=vm.get("mountPath", ""), sub_path=vm.get("subPath") or "",
                                    read_only=bool(vm.get("readOnly")), volume=src))
        spec = ContainerSpec(namespace=run.ns, pod_name=run.name, pod_uid=run.uid, node_name=run.node,
                             pod_ip=run.pod_ip, container=c.spec, mounts=mounts, restart_count=c.restarts)
        runtime = self.svc.runtimes.for_container(pod, c.spec)
        try:
            c.handle = runtime.start(spec)
        except Exception as e:  # noqa: BLE001 - a runtime failing to start is a container that fails to start
            c.handle = None
            self._terminate(c, now, 128, "StartError", f"failed to start container: {e}")
            return
        c.state, c.reason, c.started_at, c.exit_code = "running", "", started_at, None
        c.ready = False

    def _terminate(self, c: CRun, now: float, code: int, reason: str, message: str = "") -> None:
        c.state, c.exit_code, c.reason, c.message, c.finished_at = "terminated", code, reason, message, now
        c.ready = False
        if c.handle is not None:
            self.svc.spawn(c.handle.stop())
            c.handle = None

    def _running(self, pod: dict[str, Any], run: PodRun, now: float) -> float | None:
        restart = (pod.get("spec") or {}).get("restartPolicy") or "Always"
        due: list[float] = []
        for c in run.containers:
            if c.init:
                continue
            if c.state == "running" and c.handle is not None:
                state: ContainerState = c.handle.state()
                self.svc.set_log(run.ns, run.name, c.name, c.handle.logs())
                if state.exit_code is not None:
                    self._terminate(c, now, state.exit_code, state.reason or ("Completed" if state.exit_code == 0
                                                                              else "Error"), state.message)
                else:
                    probe = c.spec.get("readinessProbe")
                    gate = (c.started_at or now) + (self._pod_seconds(probe.get("initialDelaySeconds"))
                                                    + self.timings["pod_readiness"] if probe else 0.0)
                    ready = state.ready and now >= gate
                    if probe and not state.ready and now >= gate and state.message and state.message != c.unhealthy_msg:
                        self.event(pod, "Warning", "Unhealthy", f"Readiness probe failed: {state.message}", KUBELET,
                                   host=run.node)
                    c.unhealthy_msg = state.message if not state.ready else ""
                    c.ready = ready
                    if not ready and now < gate:
                        due.append(gate)
            restartable = restart != "Never" and not (restart == "OnFailure" and c.exit_code == 0)
            if c.state == "terminated" and restartable and c.restart_at is None:
                backoff = min(self.timings["crash_backoff_max"], self.timings["crash_backoff_min"] * 2 ** c.restarts)
                c.restart_at = now + backoff
                c.last_state = {"terminated": _terminated(c, self.clock)}
                c.state, c.reason = "waiting", "CrashLoopBackOff"
                c.message = f"back-off {go_duration(backoff)} restarting failed container={c.name} " \
                            f"pod={run.name}_{run.ns}({run.uid})"
                self.event(pod, "Warning", "BackOff", f"Back-off restarting failed container {c.name} in pod "
                           f"{run.name}_{run.ns}({run.uid})", KUBELET, host=run.node)
            if c.state == "waiting" and c.restart_at is not None:
                if now >= c.restart_at:
                    c.restart_at = None
                    c.restarts += 1
                    c.container_id = _container_id(run.uid, c.name, c.restarts)
                    self.event(pod, "Normal", "Pulled", f'Container image "{c.spec.get("image", "")}" already '
                               "present on machine", KUBELET, host=run.node)
                    self.event(pod, "Normal", "Created", f"Created container: {c.name}", KUBELET, host=run.node)
                    self.event(pod, "Normal", "Started", f"Started container {c.name}", KUBELET, host=run.node)
                    self._start_handle(pod, run, c, now, now)
                else:
                    due.append(c.restart_at)
        return min(due) if due else None

    def _pod_seconds(self, value: Any) -> float:
        """Seconds written in a pod's spec, as simulated seconds (``pod_seconds`` each)."""
        try:
            return max(0.0, float(value or 0)) * self.timings["pod_seconds"]
        except (TypeError, ValueError):
            return 0.0

    def _begin_stop(self, pod: dict[str, Any], run: PodRun, now: float) -> float:
        """SIGTERM: the containers that exit on it stop now, the others run on until the grace period ends."""
        grace = (pod["metadata"].get("deletionGracePeriodSeconds"))
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        grace_ends = now + self._pod_seconds(grace)
        stop_by = now + self.timings["container_stop"]
        for c in run.containers:
            if c.state == "running":
                self.event(pod, "Normal", "Killing", f"Stopping container {c.name}", KUBELET, host=run.node)
            if c.handle is not None and getattr(c.handle, "ignores_sigterm", False):
                stop_by = grace_ends
            elif c.handle is not None:
                self.svc.spawn(c.handle.stop())
                c.handle = None
        run.stage = "stopping"
        run.due = min(grace_ends, stop_by)  # the stage's delay depends on the pod
        return run.due

    # ---- networking -------------------------------------------------------------------------------------------
    def _allocate_ip(self, node: dict[str, Any], run: PodRun) -> str:
        cidr = (node.get("spec") or {}).get("podCIDR")
        if not cidr:
            return ""
        used = {r.pod_ip for r in self.runs.values() if r.node == run.node and r.pod_ip}
        for p in self.indexed("pods", "spec.nodeName", (run.node,)):
            ip = (p.get("status") or {}).get("podIP")
            if ip:
                used.add(ip)
        for n, ip in enumerate(ipaddress.ip_network(cidr).hosts()):
            if n >= 1 and str(ip) not in used:  # .1 is the bridge gateway
                return str(ip)
        return ""

    # ---- status -----------------------------------------------------------------------------------------------
    def _write_status(self, pod: dict[str, Any], node: dict[str, Any], run: PodRun, now: float) -> None:
        # a shallow copy: only top-level fields of the status are replaced below, the stored pod is never changed
        # (a deep copy of every pod's status on every pass was most of the kubelet's time with many running pods)
        st = dict(pod.get("status") or {})
        now_iso = self.clock.iso(now)
        host_ip = next((a.get("address") for a in (node.get("status") or {}).get("addresses") or []
                        if a.get("type") == "InternalIP"), "")
        regular = [c for c in run.containers if not c.init]
        inits = [c for c in run.containers if c.init]
        initialized = all(c.state == "terminated" and c.exit_code == 0 for c in inits)
        all_ready = bool(regular) and all(c.ready for c in regular)
        unready = [c.name for c in regular if not c.ready]
        conds = list(st.get("conditions") or [])
        conds = set_condition(conds, {"type": "PodReadyToStartContainers", "status": str(run.sandbox),
                                      "lastProbeTime": None}, now_iso)
        init_cond: dict[str, Any] = {"type": "Initialized", "status": str(initialized), "lastProbeTime": None}
        if not initialized:
            init_cond.update(reason="ContainersNotInitialized",
                             message=f"containers with incomplete status: [{' '.join(c.name for c in inits)}]")
        conds = set_condition(conds, init_cond, now_iso)
        for typ in ("Ready", "ContainersReady"):
            cond: dict[str, Any] = {"type": typ, "status": str(all_ready), "lastProbeTime": None}
            if not all_ready:
                cond.update(reason="ContainersNotReady", message=f"containers with unready status: [{' '.join(unready)}]")
            conds = set_condition(conds, cond, now_iso)
        order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        conds.sort(key=lambda c: order.index(c["type"]) if c.get("type") in order else len(order))
        st["conditions"] = [{k: v for k, v in c.items() if v is not None} for c in conds]
        running = [c for c in regular if c.state == "running"]
        restart = (pod.get("spec") or {}).get("restartPolicy") or "Always"
        if regular and all(c.state == "terminated" for c in regular) and restart != "Always" and \
                all(c.restart_at is None for c in regular):
            st["phase"] = "Succeeded" if all(c.exit_code == 0 for c in regular) else "Failed"
        elif running or any(c.restarts or c.last_state for c in regular):
            st["phase"] = "Running"
        else:
            st["phase"] = "Pending"
        st["hostIP"] = host_ip
        st["hostIPs"] = [{"ip": host_ip}] if host_ip else []
        if run.pod_ip:
            st["podIP"] = run.pod_ip
            st["podIPs"] = [{"ip": run.pod_ip}]
        st.setdefault("startTime", self.clock.iso(run.started))
        st["containerStatuses"] = [self._container_status(c, run) for c in regular]
        if inits:
            st["initContainerStatuses"] = [self._container_status(c, run) for c in inits]
        if st != (pod.get("status") or {}):
            self.store.update_status("pods", dict(pod, status=st), field_manager=KUBELET)  # the store copies it

    def _container_status(self, c: CRun, run: PodRun) -> dict[str, Any]:
        image = c.spec.get("image", "")
        out: dict[str, Any] = {"name": c.name, "ready": c.ready, "restartCount": c.restarts,
                               "image": normalize_image(image), "imageID": "", "started": c.state == "running"}
        if c.state == "running":
            out["state"] = {"running": {"startedAt": self.clock.iso(c.started_at)}}
        elif c.state == "terminated":
            out["state"] = {"terminated": _terminated(c, self.clock)}
        else:
            w: dict[str, Any] = {"reason": c.reason or "ContainerCreating"}
            if c.message and c.reason == "CrashLoopBackOff":
                w["message"] = c.message
            out["state"] = {"waiting": w}
        out["lastState"] = c.last_state or {}
        if c.container_id and (c.state != "waiting" or c.restarts):
            out["containerID"] = c.container_id
            out["imageID"] = image_id(image)
        if c.state == "waiting" and not c.restarts:
            out["image"] = image
        return out


@dataclass(frozen=True)
class Stage:
    """One stage of a pod on its node, as kwok's ``Stage`` (``kwok.x-k8s.io/v1alpha1``): how long the pod stays in
    it (``due``, from the timing table; None: not at all), what happens when that time has come (``effect``:
    events, status, handles; it returns the next stage, or None to stay with a new deadline it set) or, for a
    stage the pod stays in, the pass made on each sync (``steady``: returns its next deadline)."""

    name: str
    due: Callable[[Kubelet, dict[str, Any], PodRun, float], float] | None = None
    effect: Callable[[Kubelet, dict[str, Any], dict[str, Any], PodRun, float], str | None] | None = None
    steady: Callable[[Kubelet, dict[str, Any], PodRun, float], float | None] | None = None


def _after(timing: str) -> Callable[[Kubelet, dict[str, Any], PodRun, float], float]:
    """A stage delay that is an entry of the timing table (simulated seconds)."""
    return lambda kubelet, pod, run, now: now + kubelet.timings[timing]


# The pod lifecycle (module docstring). A pod enters ``volumes`` when the kubelet first sees it, and ``stopping``
# (whatever its stage) once it has a deletionTimestamp; the delay of ``pull`` is the image pull's cost, that of
# ``stopping`` the pod's grace period, capped by ``container_stop`` when every container exits on SIGTERM.
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("volumes", due=_after("volume_mount"), effect=Kubelet._mount),  # -> pull (or running: no containers)
    Stage("pull", due=Kubelet._pull_due, effect=Kubelet._create),  # container run.idx: Pulling/Pulled, Created
    Stage("start", due=_after("container_start"), effect=Kubelet._start),  # Started; -> pull (next) | running
    Stage("running", steady=Kubelet._running),  # readiness, exits, CrashLoopBackOff restarts
    Stage("stopping", effect=Kubelet._finish_delete),  # -> done: the delete with grace period 0
    Stage("done", steady=lambda kubelet, pod, run, now: None),
)}


def _terminated(c: CRun, clock: Any) -> dict[str, Any]:
    t: dict[str, Any] = {"exitCode": c.exit_code if c.exit_code is not None else 0, "reason": c.reason or "Error",
                         "startedAt": clock.iso(c.started_at) if c.started_at else None,
                         "finishedAt": clock.iso(c.finished_at) if c.finished_at else None,
                         "containerID": c.container_id}
    if c.message:
        t["message"] = c.message
    return {k: v for k, v in t.items() if v is not None}


def _container_id(uid: str, name: str, restarts: int) -> str:
    return "containerd://" + hashlib.sha256(f"{uid}/{name}/{restarts}".encode()).hexdigest()


def node_kubelet_alive(node: dict[str, Any]) -> bool:
    """The node's kubelet posts its status (Ready is True or False, not Unknown): it drives the node's pods."""
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") != "Unknown"
    return False


def _parse_ts(iso: str | None) -> float:
    from .util import ts

    try:
        return ts(iso)
    except ValueError:
        return 0.0
