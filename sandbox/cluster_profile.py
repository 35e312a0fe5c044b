"""Cluster-level facts of the emulated ACK cluster that differ between real clusters: sandbox options.

``Sandbox(options={...})`` (``sandbox up`` passes its options the same way):

``ccm_version`` (default ``"v2.12.4"``)
    The cloud-controller-manager version the cluster runs. CCM labels each node with
    ``node.alibabacloud.com/instance-charge-type`` when ECS returns an InstanceChargeType and with
    ``node.alibabacloud.com/spot-strategy`` when ECS returns a SpotStrategy
    (kubernetes/cloud-provider-alibaba-cloud ``pkg/controller/node/manager.go``); the spot-strategy label exists
    only since CCM v2.10.2 (ACK's CCM release notes; upstream commit 7e892d7 "add spot strategy label to node",
    2024-11-14). With an older version the sandbox's nodes carry no spot-strategy label, as real ones would.
``node_scaling`` (default ``True``)
    ACK's cluster-level switch for node auto scaling (console: Nodes > Node Pools > "Node Scaling: Enable", which
    also authorises the AliyunCSManagedAutoScalerRole). "Node pool auto scaling only takes effect after you enable
    it at the cluster level" (ACK docs, "Enable node autoscaling",
    alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/user-guide/auto-scaling-of-nodes). Off: no
    cluster-autoscaler runs, so a pool's ``auto_scaling.enable`` grows nothing and no
    ``kube-system/cluster-autoscaler-status`` ConfigMap is written.
"""

from __future__ import annotations

import re
from typing import Any

DEFAULT_CCM_VERSION = "v2.12.4"
SPOT_LABEL_SINCE = (2, 10, 2)


def _options(ctx_or_options: Any) -> dict[str, Any]:
    if isinstance(ctx_or_options, dict):
        return ctx_or_options
    return getattr(ctx_or_options, "options", None) or {}


def ccm_version(ctx_or_options: Any) -> tuple[int, int, int]:
    raw = str(_options(ctx_or_options).get("ccm_version") or DEFAULT_CCM_VERSION)
    m = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(?:[-+.].*)?", raw.strip())
    if not m:
        raise ValueError(f"sandbox option ccm_version {raw!r} is not a version like v2.10.2")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def ccm_sets_spot_label(ctx_or_options: Any) -> bool:
    return ccm_version(ctx_or_options) >= SPOT_LABEL_SINCE


def node_scaling_enabled(ctx_or_options: Any) -> bool:
    return bool(_options(ctx_or_options).get("node_scaling", True))
