"""Resource quantities and pod requests, as the scheduler and kubelet count them.

Quantities follow apimachinery ``pkg/api/resource/quantity.go`` (decimal suffixes ``m k M G T P E``, binary
``Ki Mi Gi Ti Pi Ei``, exponents ``1e3``). A pod's effective request is the larger of the sum over its containers
and the largest init container, plus its overhead (``k8s.io/component-helpers/resource`` ``PodRequests``).
CPU is counted in millicores, everything else in base units.
"""

from __future__ import annotations

import math
import re
from typing import Any

_SUFFIX = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_QTY = re.compile(r"^([+-]?[0-9.]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?)$")

# The scheduler's non-zero defaults for pods without requests, used for scoring only
# (``pkg/scheduler/util/pod_resources.go``: DefaultMilliCPURequest 100, DefaultMemoryRequest 200 MB).
DEFAULT_MILLI_CPU = 100
DEFAULT_MEMORY = 200 * 1024 * 1024


def parse_quantity(v: Any) -> float:
    """A quantity as a float in base units (``"500m"`` -> 0.5, ``"1Gi"`` -> 1073741824.0)."""
    if isinstance(v, (int, float)):
        return float(v)
    s = str(v).strip()
    m = _QTY.match(s)
    if not m:
        raise ValueError(f"quantities must match the regular expression: {s!r}")
    num = float(m.group(1))
    if m.group(2):
        return num * 10 ** int(m.group(2)[1:])
    return num * _SUFFIX[m.group(3) or ""]


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
