"""Every control-plane delay of the sandbox's cloud side, as ONE table of data (kwok's "stages" idea).

All values are *simulated* seconds (see :mod:`sandbox.clock`); services never sleep a literal number, they look the
delay up here. The defaults are cloud-like orders of magnitude, not measurements:

- ECS: ``RunInstances`` returns in seconds but an instance sits in ``Pending`` ~30 s while it is created, then
  ``Starting`` ~60 s while the OS boots; ``DeleteInstance`` on a running instance goes ``Stopping`` ~10 s.
- Spot reclaim: Alibaba Cloud sends the interruption notice about 5 minutes (300 s) before it releases the
  instance (ESS ``SpotInstanceRemedy`` documentation; reference/alibaba-apis.md "ESS mixed instances").
- ACK node pool: the pool's infrastructure (ESS scaling group, scaling configuration / launch template, RAM
  bindings) takes about a minute before the pool turns ``active`` and ESS starts launching instances.

Overrides: a sandbox started with ``options={"timings": {"ecs_boot": 5, ...}}`` replaces individual entries
(:func:`resolve`); unknown keys are rejected so a typo does not silently keep the default.
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, float] = {
    # ECS instance lifecycle
    "ecs_create": 30.0,  # Pending -> Starting
    "ecs_boot": 60.0,  # Starting -> Running
    "ecs_release": 10.0,  # Stopping -> Released
    "spot_reclaim_notice": 300.0,  # notice -> Stopping (the instance is released after this)
    # ESS scaling group
    "ess_shortfall_retry": 60.0,  # a group below its desired capacity (no stock) tries again after this
    "ess_resync": 5.0,  # the fleet reconcile loop's resync period
    # ACK node pool
    "nodepool_create": 60.0,  # initial -> active (then ESS scales to the desired size)
    "nodepool_update": 10.0,  # updating -> active after ModifyClusterNodePool
    "nodepool_delete": 30.0,  # deleting -> gone, after its instances are released
    "ack_resync": 5.0,  # the ACK reconcile loop's resync period
    # HPA controller (sandbox.hpa; kube-controller-manager defaults, RecommendedDefaultHPAControllerConfiguration)
    "hpa_sync": 15.0,  # --horizontal-pod-autoscaler-sync-period
    "hpa_downscale_stabilization": 300.0,  # --horizontal-pod-autoscaler-downscale-stabilization
}


def resolve(options: dict[str, Any] | None = None) -> dict[str, float]:
    """The timing table with ``options["timings"]`` overrides applied."""
    table = dict(DEFAULTS)
    overrides = (options or {}).get("timings") or {}
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown timing(s) {unknown}; known: {sorted(DEFAULTS)}")
    for key, value in overrides.items():
        if float(value) < 0:
            raise ValueError(f"timing {key} must be >= 0, got {value!r}")
        table[key] = float(value)
    return table
