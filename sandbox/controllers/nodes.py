"""Node lifecycle: one Kubernetes Node per running ECS instance of every node pool, as kubelet + ACK's
cloud-controller-manager + ack-node-problem-detector + the node lifecycle and pod GC controllers make it.

- Registration ``kubelet_register`` s after the instance is Running, NotReady (taint
  ``node.kubernetes.io/not-ready:NoSchedule``, reason KubeletNotReady: CNI not initialised), Ready ``node_ready``
  s later; status re-posted every ``node_heartbeat`` s (only then does ``lastHeartbeatTime`` move: every write
  wakes every watcher of nodes). Name ``<region>.<private ip>`` and ``spec.providerID`` ``<region>.<instance id>``
  as ACK names them (CCM ``pkg/controller/node/manager.go`` ``setFields``).
- Labels: the well-known ones kubelet and CCM set (``kubernetes.io/hostname|os|arch``, ``node.kubernetes.io/
  instance-type`` + beta, ``topology.kubernetes.io/region|zone`` + ``failure-domain.beta``), ACK's
  (``alibabacloud.com/nodepool-id``, ``node.alibabacloud.com/nodepool-id``, ``node.alibabacloud.com/instance-charge-type``,
  ``node.alibabacloud.com/spot-strategy`` -- CCM constants ``LabelNodePoolID``, ``LabelInstanceChargeType``,
  ``LabelSpotStrategy``, the last only with CCM >= v2.10.2 (sandbox option ``ccm_version``); ``ack.aliyun.com=<cluster id>``, ``alibabacloud.com/ecs-instance-id``,
  ``k8s.aliyun.com=true``), GPU nodes the ACK GPU device plugin's ``aliyun.accelerator/nvidia_name|count|mem``;
  then the pool's ``kubernetes_config`` labels and taints (from the ESS group's ``node_template``).
- Capacity from the instance type (``sandbox.fleet.catalogue``): cpu, memory (less what the kernel keeps), pods 64
  (ACK's default max pods per node with Flannel), ephemeral-storage (120 GiB system disk), ``nvidia.com/gpu``;
  allocatable = capacity minus a kube/system reservation (GKE-style tiers; ACK reserves similar amounts).
- Spot reclaim notice (``reclaim_at`` set on the instance): condition ``InstanceExpired=True`` reason
  ``InstanceToBeTerminated`` plus a Warning Event of that reason; otherwise ``False``/``InstanceNotToBeTerminated``
  (ack-node-problem-detector; docs/alibaba-apis.md "Spot or not, per node"). No taint.
- Instance Stopping: the kubelet is gone, conditions turn Unknown (``NodeStatusUnknown``, "Kubelet stopped posting
  node status.") with the ``unreachable`` taints; instance released: the Node is deleted (CCM) and the pods bound to
  it are force-deleted (pod GC, ``pkg/controller/podgc``), so their ReplicaSets recreate them elsewhere.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
from typing import Any

from ..cluster_profile import ccm_sets_spot_label
from ..fleet import catalogue
from ..kube.errors import KubeError
from .base import Controller
from .resources import format_memory_ki
from .util import ts as _ts

KUBELET_VERSION = "v1.33.1-aliyun.1"
CONTAINERD_VERSION = "containerd://1.6.36"
OS_IMAGE = "Alibaba Cloud Linux 3.2104 U11 (OpenAnolis Edition)"
KERNEL = "5.10.134-18.al8.x86_64"
MAX_PODS = 64
SYSTEM_DISK_GIB = 120
POD_CIDR = ipaddress.ip_network("172.20.0.0/16")  # ACK cluster container_cidr (DescribeClusterDetail)
MANAGED_LABEL = "alibabacloud.com/ecs-instance-id"

TAINT_NOT_READY = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
TAINT_UNREACHABLE = [{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
                     {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]
CONDITION_TAINT_KEYS = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}

# ACK GPU device plugin labels: card model as nvidia-smi names it, memory in MiB (illustrative values).
GPU_NAMES = {
    "NVIDIA T4": ("Tesla-T4", 15360), "NVIDIA A10": ("NVIDIA-A10", 23028), "NVIDIA V100": ("Tesla-V100-SXM2-16GB", 16160),
    "NVIDIA P100": ("Tesla-P100-PCIE-16GB", 16280), "NVIDIA P4": ("Tesla-P4", 7611),
}


def node_name(region: str, private_ip: str) -> str:
    return f"{region}.{private_ip}"


def _reserved_milli_cpu(cores: int) -> int:
    """6 % of the first core, 1 % of the second, 0.5 % of cores 3-4, 0.25 % above (GKE's tiers)."""
    m = 0.0
    for i in range(cores):
        m += 1000 * (0.06 if i == 0 else 0.01 if i == 1 else 0.005 if i < 4 else 0.0025)
    return int(round(m)) + 100  # + system-reserved


def _reserved_memory(gib: float) -> float:
    """25 % of the first 4 GiB, 20 % of the next 4, 10 % of the next 8, 6 % of the next 112, 2 % above, + eviction 100Mi."""
    tiers = [(4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (1e9, 0.02)]
    left, out = gib, 0.0
    for size, frac in tiers:
        take = min(left, size)
        out += take * frac
        left -= take
        if left <= 0:
            break
    return out * 2**30 + 100 * 2**20


def capacity_of(instance_type: str) -> tuple[dict[str, str], dict[str, str]]:
    t = catalogue.get(instance_type)
    vcpu, mem_gib, gpus = (t.vcpu, t.memory_gib, t.gpus) if t else (2, 4.0, 0)
    mem = mem_gib * 2**30 * 0.965  # what the kernel leaves to MemTotal
    disk = SYSTEM_DISK_GIB * 2**30
    cap = {"cpu": str(vcpu), "memory": format_memory_ki(mem), "pods": str(MAX_PODS),
           "ephemeral-storage": format_memory_ki(disk), "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    alloc = {"cpu": f"{vcpu * 1000 - _reserved_milli_cpu(vcpu)}m", "memory": format_memory_ki(mem - _reserved_memory(mem_gib)),
             "pods": str(MAX_PODS), "ephemeral-storage": str(int(disk * 0.9)), "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    if gpus:
        cap["nvidia.com/gpu"] = alloc["nvidia.com/gpu"] = str(gpus)
    return cap, alloc


def _uuid_of(seed: str) -> str:
    h = hashlib.sha256(seed.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class NodeController(Controller):
    name = "node-controller"
    topics = ("fleet", "ack", "kube/nodes")
    resync_key = "node_heartbeat"

    def __init__(self, svc) -> None:
        super().__init__(svc)
        self.region = self.ctx.identity.region
        self.cluster_id = self.ctx.identity.cluster_id
        self.deleted: set[str] = set()  # names of managed nodes this controller deleted (pod GC scope)

    # ---- desired state -----------------------------------------------------------------------------------------
    def _labels(self, inst: Any, name: str, template: dict[str, Any]) -> dict[str, str]:
        labels = {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": inst.instance_type,
            "beta.kubernetes.io/instance-type": inst.instance_type,
            "topology.kubernetes.io/region": self.region, "topology.kubernetes.io/zone": inst.zone,
            "failure-domain.beta.kubernetes.io/region": self.region,
            "failure-domain.beta.kubernetes.io/zone": inst.zone,
            "topology.diskplugin.csi.alibabacloud.com/zone": inst.zone,
            "alibabacloud.com/nodepool-id": inst.pool_id, "node.alibabacloud.com/nodepool-id": inst.pool_id,
            "alibabacloud.com/ecs-instance-id": inst.instance_id,
            "ack.aliyun.com": self.cluster_id, "k8s.aliyun.com": "true",
        }
        # CCM sets each billing label only when ECS returns a value, the spot-strategy one only since v2.10.2
        # (sandbox option ``ccm_version``, :mod:`sandbox.cluster_profile`).
        if inst.instance_charge_type:
            labels["node.alibabacloud.com/instance-charge-type"] = inst.instance_charge_type
        if inst.spot_strategy and ccm_sets_spot_label(self.ctx):
            labels["node.alibabacloud.com/spot-strategy"] = inst.spot_strategy
        t = catalogue.get(inst.instance_type)
        if t and t.gpus:
            gname, gmem = GPU_NAMES.get(t.gpu_model or "", ((t.gpu_model or "GPU").replace(" ", "-"), 16384))
            labels.update({"aliyun.accelerator/nvidia_name": gname, "aliyun.accelerator/nvidia_count": str(t.gpus),
                           "aliyun.accelerator/nvidia_mem": f"{gmem}MiB"})
        for kv in template.get("labels") or []:
            if kv.get("key"):
                labels[kv["key"]] = str(kv.get("value") or "")
        return labels

    def _conditions(self, old: list[dict[str, Any]], state: str, inst: Any, now_iso: str) -> list[dict[str, Any]]:
        """``state``: NotReady | Ready | Unknown."""
        if state == "Unknown":
            msg = "Kubelet stopped posting node status."
            want = [(t, "Unknown", "NodeStatusUnknown", msg) for t in
                    ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")]
        else:
            want = [
                ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                ("Ready", "True", "KubeletReady", "kubelet is posting ready status") if state == "Ready" else
                ("Ready", "False", "KubeletNotReady", "container runtime network not ready: NetworkReady=false "
                 "reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"),
            ]
        if inst.reclaim_at is not None:
            want.append(("InstanceExpired", "True", "InstanceToBeTerminated",
                         f"instance {inst.instance_id} is going to be terminated at "
                         f"{self.clock.iso(inst.reclaim_at)} (spot instance interruption notice)"))
        else:
            want.append(("InstanceExpired", "False", "InstanceNotToBeTerminated",
                         "instance is not going to be terminated"))
        by_type = {c.get("type"): c for c in old}
        out = []
        for typ, status, reason, msg in want:
            prev = by_type.get(typ) or {}
            keep_unknown = state == "Unknown" and prev.get("status") == "Unknown"
            out.append({
                "type": typ, "status": status, "reason": reason, "message": msg,
                "lastHeartbeatTime": prev.get("lastHeartbeatTime", now_iso) if state == "Unknown" else now_iso,
                "lastTransitionTime": prev.get("lastTransitionTime", now_iso)
                if prev.get("status") == status or keep_unknown else now_iso,
            })
        return out

    @staticmethod
    def _strip_heartbeat(conds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k != "lastHeartbeatTime"} for c in conds or []]

    def _pod_cidr(self, used: set[str]) -> str:
        for sub in POD_CIDR.subnets(new_prefix=24):
            if str(sub) not in used:
                return str(sub)
        return str(next(POD_CIDR.subnets(new_prefix=24)))

    # ---- reconcile ---------------------------------------------------------------------------------------------
    def reconcile(self) -> float | None:
        fleet = self.svc.fleet
        now = self.clock.now()
        now_iso = self.clock.iso(now)
        nodes = {n["metadata"]["name"]: n for n in self.objects("nodes")}
        used_cidrs = {(n.get("spec") or {}).get("podCIDR") for n in nodes.values()}
        templates: dict[str, dict[str, Any]] = {}
        due: list[float] = []
        wanted: set[str] = set()
        for inst in fleet.instances():
            if inst.status not in ("Running", "Stopping"):
                continue
            name = node_name(self.region, inst.private_ip)
            existing = nodes.get(name)
            if inst.status == "Stopping" and existing is None:
                continue
            wanted.add(name)
            if inst.status == "Running":
                register_at = inst.status_since + self.timings["kubelet_register"]
                if now < register_at and existing is None:
                    due.append(register_at)
                    continue
            if inst.pool_id not in templates:
                g = fleet.scaling_group(inst.pool_id)
                templates[inst.pool_id] = dict(g.spec.node_template) if g else {}
            try:
                d = self._sync_node(inst, name, existing, templates[inst.pool_id], now, now_iso, used_cidrs)
            except KubeError:  # conflict with another writer of the node: look again soon
                d = now + 1.0
            if d is not None:
                due.append(d)
        # nodes whose instance is gone (released, or its pool deleted): delete them (CCM node lifecycle)
        for name, node in nodes.items():
            if name in wanted or MANAGED_LABEL not in (node["metadata"].get("labels") or {}):
                continue
            try:
                self.store.delete("nodes", None, name)
                self.event(node, "Normal", "DeletedNode", f"Deleting node {name} because it does not exist in the "
                           "cloud provider", "cloud-node-lifecycle-controller")
            except KubeError:
                pass
            self.deleted.add(name)
        self._pod_gc(set(nodes) & wanted)
        return min(due) if due else None

    def _sync_node(self, inst: Any, name: str, existing: dict[str, Any] | None, template: dict[str, Any],
                   now: float, now_iso: str, used_cidrs: set) -> float | None:
        registered = inst.status_since + self.timings["kubelet_register"]
        if inst.status == "Stopping":
            state = "Unknown"
        elif now >= registered + self.timings["node_ready"]:
            state = "Ready"
        else:
            state = "NotReady"
        next_due = registered + self.timings["node_ready"] if state == "NotReady" else None
        labels = self._labels(inst, name, template)
        tmpl_taints = [{"key": t["key"], "value": t.get("value") or None, "effect": t.get("effect") or "NoSchedule"}
                       for t in template.get("taints") or [] if t.get("key")]
        tmpl_taints = [{k: v for k, v in t.items() if v is not None} for t in tmpl_taints]
        cond_taints = [dict(TAINT_NOT_READY)] if state == "NotReady" else (
            copy.deepcopy(TAINT_UNREACHABLE) if state == "Unknown" else [])
        cap, alloc = capacity_of(inst.instance_type)
        images = self.svc.image_list(name)
        if existing is None:
            cidr = self._pod_cidr(used_cidrs)
            used_cidrs.add(cidr)
            for t in cond_taints:
                t["timeAdded"] = now_iso
            node = {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels, "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach":
                    "true", "alpha.kubernetes.io/provided-node-ip": inst.private_ip}},
                "spec": {"podCIDR": cidr, "podCIDRs": [cidr], "providerID": f"{self.region}.{inst.instance_id}",
                         "taints": tmpl_taints + cond_taints},
                "status": {
                    "capacity": cap, "allocatable": alloc,
                    "conditions": self._conditions([], state, inst, now_iso),
                    "addresses": [{"type": "InternalIP", "address": inst.private_ip},
                                  {"type": "Hostname", "address": inst.hostname}],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                    "nodeInfo": {
                        "machineID": _uuid_of("m" + inst.instance_id).replace("-", ""),
                        "systemUUID": _uuid_of("s" + inst.instance_id), "bootID": _uuid_of("b" + inst.instance_id),
                        "kernelVersion": KERNEL, "osImage": OS_IMAGE, "containerRuntimeVersion": CONTAINERD_VERSION,
                        "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                        "operatingSystem": "linux", "architecture": "amd64"},
                    "images": images,
                },
            }
            if template.get("unschedulable"):
                node["spec"]["unschedulable"] = True
            if not node["spec"]["taints"]:
                node["spec"].pop("taints")
            self.store.create("nodes", node, field_manager="kubelet")
            self.event(node, "Normal", "Starting", "Starting kubelet.", "kubelet", host=name)
            self.event(node, "Normal", "RegisteredNode", f"Node {name} event: Registered Node {name} in Controller",
                       "node-controller")
            return next_due
        # spec + labels (kubelet/CCM/ACK write these through the main resource)
        meta = existing["metadata"]
        spec = existing.get("spec") or {}
        new_labels = dict(meta.get("labels") or {})
        new_labels.update(labels)
        others = [t for t in spec.get("taints") or [] if t.get("key") not in CONDITION_TAINT_KEYS]
        for t in tmpl_taints:
            if not any(o.get("key") == t["key"] and o.get("effect") == t["effect"] for o in others):
                others.append(t)
        old_cond = [t for t in spec.get("taints") or [] if t.get("key") in CONDITION_TAINT_KEYS]
        for t in cond_taints:
            prev = next((o for o in old_cond if o.get("key") == t["key"] and o.get("effect") == t["effect"]), None)
            t["timeAdded"] = (prev or {}).get("timeAdded", now_iso)
        taints = others + cond_taints
        if new_labels != (meta.get("labels") or {}) or taints != (spec.get("taints") or []):
            upd = copy.deepcopy(existing)
            upd["metadata"]["labels"] = new_labels
            if taints:
                upd["spec"]["taints"] = taints
            else:
                upd["spec"].pop("taints", None)
            existing = self.store.update("nodes", upd, field_manager="kubelet")
        # status
        st = existing.get("status") or {}
        old_conds = st.get("conditions") or []
        conds = self._conditions(old_conds, state, inst, now_iso)
        beat = max((_ts(c.get("lastHeartbeatTime")) for c in old_conds), default=0.0)
        heartbeat_due = beat + self.timings["node_heartbeat"]
        changed = (self._strip_heartbeat(conds) != self._strip_heartbeat(old_conds) or st.get("images") != images
                   or st.get("capacity") != cap or st.get("allocatable") != alloc)
        if changed or (state != "Unknown" and now >= heartbeat_due):
            upd = copy.deepcopy(existing)
            upd["status"].update({"conditions": conds, "capacity": cap, "allocatable": alloc, "images": images})
            self.store.update_status("nodes", upd, field_manager="kubelet")
            heartbeat_due = now + self.timings["node_heartbeat"]
            was = {c.get("type"): c.get("status") for c in old_conds}
            if inst.reclaim_at is not None and was.get("InstanceExpired") != "True":
                self.event(existing, "Warning", "InstanceToBeTerminated",
                           f"Instance {inst.instance_id} will be terminated at {self.clock.iso(inst.reclaim_at)} "
                           "(spot instance interruption notice)", "ack-node-problem-detector", host=existing["metadata"]["name"])
            if state == "Ready" and was.get("Ready") != "True":
                self.event(existing, "Normal", "NodeReady", f"Node {existing['metadata']['name']} status is now: "
                           "NodeReady", "kubelet", host=existing["metadata"]["name"])
            if state == "Unknown" and was.get("Ready") != "Unknown":
                self.event(existing, "Normal", "NodeNotReady", f"Node {existing['metadata']['name']} status is now: "
                           "NodeNotReady", "node-controller")
        dues = [d for d in (next_due, heartbeat_due if state != "Unknown" else None) if d is not None]
        return min(dues) if dues else None

    def _pod_gc(self, live: set[str]) -> None:
        """Force-delete pods bound to a managed node that no longer exists (``pkg/controller/podgc`` gcOrphaned)."""
        prefix = f"{self.region}."
        for pod in self.indexed("pods", "spec.nodeName"):
            node = pod["spec"]["nodeName"]
            if node in live:
                continue
            if node not in self.deleted and not node.startswith(prefix):
                continue
            if self.store.try_get("nodes", None, node) is not None:
                continue
            m = pod["metadata"]
            try:
                self.store.delete("pods", m.get("namespace"), m["name"], grace_period_seconds=0)
            except KubeError:
                continue
            self.event(pod, "Normal", "NodeNotFound",
                       f"deleting pod {m.get('namespace')}/{m['name']}: node {node} no longer exists",
                       "pod-garbage-collector")

