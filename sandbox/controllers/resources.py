"""Resource quantities and pod requests, as the scheduler and kubelet count them.

Quantities are parsed by the Kubernetes client's ``kubernetes.utils.parse_quantity`` (apimachinery
``pkg/api/resource/quantity.go`` forms: decimal suffixes ``n u m k M G T P E``, binary ``Ki Mi Gi Ti Pi Ei``,
exponents ``1e3``). A pod's effective request is the larger of the sum over its containers
and the largest init container, plus its overhead (``k8s.io/component-helpers/resource`` ``PodRequests``).
CPU is counted in millicores, everything else in base units.
"""

from __future__ import annotations

import math
from typing import Any

from kubernetes.utils import parse_quantity as _k8s_quantity

# The scheduler's non-zero defaults for pods without requests, used for scoring only
# (``pkg/scheduler/util/pod_resources.go``: DefaultMilliCPURequest 100, DefaultMemoryRequest 200 MB).
DEFAULT_MILLI_CPU = 100
DEFAULT_MEMORY = 200 * 1024 * 1024


def parse_quantity(v: Any) -> float:
    """A quantity as a float in base units (``"500m"`` -> 0.5, ``"1Gi"`` -> 1073741824.0)."""
    q = float(_k8s_quantity(str(v).strip() if isinstance(v, str) else v))
    if not math.isfinite(q):
        raise ValueError(f"quantities must be finite: {v!r}")
    return q


def amount(name: str, v: Any) -> int:
    """A quantity in the unit the scheduler counts: millicores for cpu, base units (rounded up) otherwise."""
    q = parse_quantity(v)
    if name == "cpu":
        return math.ceil(round(q * 1000, 6))
    return math.ceil(round(q, 6))


def pod_requests(pod: dict[str, Any]) -> dict[str, int]:
    spec = pod.get("spec") or {}
    total: dict[str, int] = {}
    for c in spec.get("containers") or []:
        for k, v in (((c.get("resources") or {}).get("requests")) or {}).items():
            total[k] = total.get(k, 0) + amount(k, v)
    for c in spec.get("initContainers") or []:
        for k, v in (((c.get("resources") or {}).get("requests")) or {}).items():
            total[k] = max(total.get(k, 0), amount(k, v))
    for k, v in (spec.get("overhead") or {}).items():
        total[k] = total.get(k, 0) + amount(k, v)
    return total


def node_allocatable(node: dict[str, Any]) -> dict[str, int]:
    alloc = ((node.get("status") or {}).get("allocatable")) or {}
    out: dict[str, int] = {}
    for k, v in alloc.items():
        try:
            out[k] = amount(k, v)
        except ValueError:
            continue
    return out


def format_memory_ki(n_bytes: float) -> str:
    return f"{int(n_bytes // 1024)}Ki"
