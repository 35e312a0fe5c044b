"""Every control-plane delay of the sandbox's cloud side, as ONE table of data (kwok's "stages" idea).

All values are *simulated* seconds (see :mod:`sandbox.clock`); services never sleep a literal number, they look the
delay up here. The defaults are cloud-like orders of magnitude, not measurements:

- ECS: ``RunInstances`` returns in seconds but an instance sits in ``Pending`` ~30 s while it is created, then
  ``Starting`` ~60 s while the OS boots; ``DeleteInstance`` on a running instance goes ``Stopping`` ~10 s.
- Spot reclaim: Alibaba Cloud sends the interruption notice about 5 minutes (300 s) before it releases the
  instance (ESS ``SpotInstanceRemedy`` documentation; docs/alibaba-apis.md "ESS mixed instances").
- ACK node pool: the pool's infrastructure (ESS scaling group, scaling configuration / launch template, RAM
  bindings) takes about a minute before the pool turns ``active`` and ESS starts launching instances.
- Kubernetes (``sandbox.controllers``), in the spirit of kwok's stages (node-initialize, node-heartbeat, pod-ready,
  pod-delete): the kubelet registers its Node ~20 s after the instance is Running (cloud-init + kubelet start), the
  node turns Ready once the CNI is up; node status is re-posted every minute when nothing changes (kubelet
  ``nodeStatusReportFrequency`` is 5 min, kwok's heartbeat 20-25 s); an image pull costs a fixed overhead plus
  size / bandwidth (a ~1.7 GB ``tensorflow/serving:1.15.0-gpu`` takes ~30 s, a small image 2-3 s, an image already
  on the node nothing); a container starts in ~5 s; a readiness probe first runs after its ``initialDelaySeconds``
  plus ``pod_readiness``; a deleted pod's containers stop within ``container_stop`` (capped by its grace period).
  Failed volume mounts are retried with the kubelet's exponential backoff (``nestedpendingoperations``: 0.5 s
  doubling to 2 min 2 s); FailedScheduling events repeat at most every ``scheduler_event_repeat`` for one message.

Overrides: a sandbox started with ``options={"timings": {"ecs_boot": 5, ...}}`` replaces individual entries
(:func:`resolve`); unknown keys are rejected so a typo does not silently keep the default.

Pods in real time: the speed factor compresses the control plane's long waits (instances, node pools, the HPA's
and the autoscaler's windows), but a rollout is decided while its pods start, in the flow's own real seconds
(analysis windows, drains, capacity waits). ``options={"pods": "real-time"}`` (:func:`with_real_time_pods`) makes
a pod's stages (:data:`POD_STAGES`: mount, image pull, container start, readiness, TF Serving's start and model
load) and the seconds written in its spec or bounding its progress (probe delays, grace period, a Deployment's
``progressDeadlineSeconds`` and ``minReadySeconds``: ``pod_seconds``) take
that many real seconds at any speed; the rollout's end-to-end tests and ``bench/rollout.py`` run so.
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
    # Kubernetes nodes (sandbox.controllers.nodes)
    "kubelet_register": 20.0,  # instance Running -> Node object (NotReady)
    "node_ready": 10.0,  # Node registered -> Ready (CNI initialised)
    "node_heartbeat": 60.0,  # a Node's status is re-posted at least this often (lastHeartbeatTime)
    # Pods (sandbox.controllers.kubelet)
    "volume_mount": 2.0,  # volumes mounted (CSI NodePublishVolume) -> pod sandbox
    "mount_retry_min": 0.5,  # first retry after a failed mount, doubling ...
    "mount_retry_max": 122.0,  # ... up to this (kubelet: 2m2s)
    "image_pull_overhead": 2.0,  # fixed part of an image pull (manifest, auth, unpack start)
    "image_pull_mb_per_s": 60.0,  # registry bandwidth in MB per simulated second (1.7 GB -> ~30 s)
    "image_pull_cached": 1.0,  # imagePullPolicy Always with the image already on the node (manifest check)
    "container_start": 5.0,  # Created -> Started
    "pod_readiness": 1.0,  # started (+ readinessProbe.initialDelaySeconds) -> first probe passes
    "container_stop": 2.0,  # Killing -> stopped (capped by terminationGracePeriodSeconds)
    "crash_backoff_min": 10.0,  # CrashLoopBackOff: first restart delay, doubling ...
    "crash_backoff_max": 300.0,  # ... up to five minutes
    # Control plane loops
    "scheduler_resync": 30.0,  # unschedulable pods are retried at least this often (besides on changes)
    "scheduler_event_repeat": 300.0,  # the same FailedScheduling message is re-recorded at most this often
    "controller_resync": 30.0,  # resync period of the deployment/replicaset/endpoints/volume controllers
    "kubelet_resync": 10.0,  # the kubelet re-checks its pods (runtime status, probes) at least this often
    # HPA controller (sandbox.hpa; kube-controller-manager defaults, RecommendedDefaultHPAControllerConfiguration)
    "hpa_sync": 15.0,  # --horizontal-pod-autoscaler-sync-period
    "hpa_downscale_stabilization": 300.0,  # --horizontal-pod-autoscaler-downscale-stabilization
    # Cluster-autoscaler (sandbox.autoscaler; upstream flag defaults, kubernetes/autoscaler FAQ.md)
    "ca_scan": 10.0,  # --scan-interval
    "ca_scale_down_unneeded": 600.0,  # --scale-down-unneeded-time
    "ca_scale_down_delay_after_add": 600.0,  # --scale-down-delay-after-add
    "ca_max_node_provision": 900.0,  # --max-node-provision-time
    "ca_backoff": 300.0,  # a node group whose scale-up failed is skipped this long (doubling, max 30 min)
    "ca_scale_down_utilization_threshold": 0.5,  # NOT a delay: --scale-down-utilization-threshold (a fraction)
    # ingress-nginx (sandbox.ingress; kubernetes/ingress-nginx, see sandbox/ingress/service.py)
    "ingress_sync_period": 1 / 0.3,  # --sync-rate-limit 0.3: at most one syncIngress per 3.3 s (token bucket of 1)
    "ingress_reload": 2.0,  # a sync -> requests see it: nginx reload / dynamic /configuration + balancer.lua's 1 s sync
    "ingress_status_period": 60.0,  # --status-update-interval: the status loop writes Ingress addresses this often
    # TF-Serving-compatible pod runtime (sandbox.runtime)
    "tfserving_startup": 2.0,  # process start -> flags parsed and the model config read (TF/CUDA init)
    "tfserving_load": 5.0,  # fixed part of loading one model version (graph import, session, warmup) ...
    "tfserving_load_mb_per_s": 200.0,  # ... plus its files' size over this read rate through ossfs (MB per sim s)
    # NOT a delay: simulated seconds per second a pod's spec writes (probe delays, grace period; progress deadline)
    "pod_seconds": 1.0,
}

# A pod's own stages (durations, then rates): what :func:`with_real_time_pods` turns into real seconds.
POD_STAGES = ("volume_mount", "image_pull_overhead", "image_pull_cached", "container_start", "pod_readiness",
              "container_stop", "tfserving_startup", "tfserving_load", "pod_seconds")
POD_RATES = ("image_pull_mb_per_s", "tfserving_load_mb_per_s")
POD_TIME = ("simulated", "real-time")  # the values of options["pods"]


def with_real_time_pods(options: dict[str, Any] | None, speed: float) -> dict[str, Any]:
    """``options`` with the pod stages' timings (overridden or default) scaled so that at ``speed`` they last as many
    real seconds as they say, when ``options["pods"]`` is ``"real-time"``; unchanged when it is ``"simulated"`` or
    absent. Any other value is a ValueError naming the field."""
    options = dict(options or {})
    mode = options.get("pods", "simulated")
    if mode not in POD_TIME:
        raise ValueError(f"pods must be one of {list(POD_TIME)}, got {mode!r}")
    if mode == "simulated":
        return options
    table = resolve(options)
    overrides = dict(options.get("timings") or {})
    overrides.update({key: table[key] * speed for key in POD_STAGES})
    overrides.update({key: table[key] / speed for key in POD_RATES})
    return options | {"timings": overrides}


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
