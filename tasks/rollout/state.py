"""The rollout's state, kept in the cluster: a ConfigMap ``<serving>-rollout`` beside the releases, written at every
stage of a rollout, so whoever looks next (the next run's recovery, ``status``, a person with kubectl) reads what
the rollout was doing instead of inferring it from what it left.

As Flagger keeps ``CanaryStatus`` in the Canary object (``pkg/apis/flagger/v1beta1/status.go``: ``phase``
Initializing → Progressing → Promoting → Finalising → Succeeded | Failed, with ``canaryWeight``, ``iterations``,
``lastTransitionTime``) and Argo Rollouts keeps ``currentStepIndex`` and ``phase`` in the Rollout's status. Plain
Kubernetes has no object of ours to hold a status, so a ConfigMap holds it, as JSON under one key. Only the holder
of the service's lease writes it (the flow writes at its stages, under the lock).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from clients.kube import KubeClients
from core.spec import DeploySpec, truncate_name

STATE_KEY = "state.json"


class Phase(StrEnum):
    INITIALIZING = "Initializing"  # the new release is being set up and stress tested alone
    PROGRESSING = "Progressing"  # canary steps, or a blue-green bake
    PROMOTING = "Promoting"  # capacity for the switch, the switch
    FINALISING = "Finalising"  # the previous release retired
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


def phase_of(stage: str) -> Phase:
    """The phase a stage of flows/rollout.py belongs to."""
    if stage in ("canary set-up", "isolated stress test", "header proof"):
        return Phase.INITIALIZING
    if stage.startswith("step ") or stage == "bake":
        return Phase.PROGRESSING
    if stage == "retire":
        return Phase.FINALISING
    return Phase.PROMOTING


class RolloutState(BaseModel):
    release: str
    """The serving version being rolled out."""
    previous: str
    """The version that served when it began."""
    strategy: str
    phase: Phase = Phase.INITIALIZING
    stage: str = "canary set-up"
    weight: int = 0
    """The share of user traffic the new release has (100 once switched)."""
    decision: str = ""
    reason: str = ""
    run: str = ""
    """Who runs it: the lease holder's identity (host/flow run id)."""
    updated: str = ""


def state_name(spec: DeploySpec) -> str:
    return truncate_name(f"{spec.names.ingress}-rollout")


def render_state(spec: DeploySpec, state: RolloutState) -> dict[str, Any]:
    stamped = state.model_copy(update={"updated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": state_name(spec), "namespace": spec.names.namespace,
                         "labels": {"app.kubernetes.io/managed-by": "elastic-inference",
                                    "servingName": spec.serving.name}},
            "data": {STATE_KEY: stamped.model_dump_json()}}


def parse_state(configmap: dict[str, Any] | None) -> RolloutState | None:
    """The state a ConfigMap holds; None when absent or not readable (edited by hand)."""
    data = (configmap or {}).get("data")
    raw = data.get(STATE_KEY) if isinstance(data, dict) else None
    if not raw or not isinstance(raw, str):
        return None
    try:
        return RolloutState.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return None


def save_state(kube: KubeClients, spec: DeploySpec, state: RolloutState) -> None:
    kube.apply(render_state(spec, state))


def read_state(kube: KubeClients, spec: DeploySpec) -> RolloutState | None:
    return parse_state(kube.get("ConfigMap", state_name(spec), spec.names.namespace))
