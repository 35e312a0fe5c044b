"""Step 4: TF Serving as ``arena serve tensorflow`` deploys it: model-config ConfigMap + Deployment + Service.

Rendered like kubeflow/arena's ``charts/tfserving`` (``templates/deployment.yaml``, ``templates/service.yaml``,
``templates/config.yaml``, ``templates/_helpers.tpl``), without Helm:

* names: ``<name>-<version>-tensorflow-serving`` cut to 63 characters for the Deployment and the Service
  (``spec.names``); the model config ConfigMap is ``<fullname>-cm`` mounted at ``/tfserving/config`` as the chart
  did before arena PR #703 dropped ``--version-policy``;
* labels ``heritage``, ``release``, ``chart``, ``app``, ``servingName``, ``serviceName``, ``servingType``,
  ``servingVersion`` (+ ``modelName``) on the Deployment, its pods and the Service; selector ``release`` + ``app``;
* container ``serving``: ports 8500 ``serving`` and 8501 ``http-serving``; liveness ``tcpSocket`` on the gRPC port
  (initialDelay 30, period 5, failureThreshold 30); arena's downward-API env ``ARENA_NODE_NAME``,
  ``ARENA_POD_NAMESPACE``, ``ARENA_POD_NAME``, ``ARENA_POD_IP``; ``NVIDIA_VISIBLE_DEVICES=void`` without GPUs
  (arena ``pkg/argsbuilder/serving.go``); ``nvidia.com/gpu`` (and cpu/memory when given) as resources; the PVC
  volume named after the claim (``--data=model-pvc:/models``); ``nodeSelector`` from ``--selector``;
* Service ``ClusterIP`` with ports ``grpc-serving`` and ``http-serving``.

Differences from arena, on purpose:

* **Command form.** arena runs ``sh -c "/usr/bin/tensorflow_model_server --port=... ..."`` because its template
  may splice a shell ``$(awk ...)`` for GPU memory sharing. We use no GPU sharing, so we run the binary directly:
  ``command: [/usr/bin/tensorflow_model_server]`` with one ``args`` item per flag. Nothing is re-parsed by a
  shell, ``kubectl describe`` shows each flag, and the process is PID 1 (it gets SIGTERM on scale-down). The
  flags are TF Serving's (``tensorflow_serving/model_servers/main.cc``): ``--port``, ``--rest_api_port``,
  ``--model_config_file`` (exclusive with ``--model_name``/``--model_base_path``).
* **Version policy.** arena ignores ``--version-policy`` since v0.8.9; the seed relies on it, so we write it where
  TF Serving reads it: a ``model_config_list`` text proto (``model_server_config.proto``) in the ConfigMap.
* **Readiness probe.** arena has none; ours is ``httpGet /v1/models/<model>/metadata`` on the REST port, so that
  the Service and the Ingress route only to replicas that can answer ``POST /v1/models/<model>:predict`` (what the
  smoke test, Locust and clients call). Why metadata and not status (tensorflow/serving, ``model_servers/``):
  the status API (``GET /v1/models/<m>[/versions/<v>]``, ``get_model_status_impl.cc``) answers 200 for every
  version the servable state monitor knows, in any state (START, LOADING, AVAILABLE, UNLOADING, END, also END with
  a load error), and 404 only for an unknown model or version, so it says nothing about serving; the metadata API
  (``http_rest_api_handler.cc`` ``ProcessModelMetadataRequest`` -> ``servables/tensorflow/
  get_model_metadata_impl.cc``) takes a servable handle (``core->GetServableHandle``), which exists only for an
  AVAILABLE version: without a version, ``Latest(<m>)``, the newest AVAILABLE one, exactly the version a predict
  without a version goes to; otherwise 404 ``Servable not found for request: Latest(<m>)``. At start-up TF Serving
  exports its REST API only after the initial load (``server.cc``), and during a version change in a running
  server the old version stays AVAILABLE until the new one is (``AvailabilityPreservingPolicy``), so the probe
  passes exactly while a version serves.
* **Requests equal limits** for every resource given (the API server would default them so anyway), and
  tolerations for the node pool's own taints are added, so the pods can land on the pool they select.
* ``heritage`` is ``elastic-inference`` (the renderer), not ``Helm``: no Helm release exists to own these.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from clients.kube import ApplyResult, KubeClients
from clients.logs import run_logger
from core.spec import CHART_NAME, DeploySpec

# arena's chart version, rendered into the `chart` label as "<chart name>-<version>" (_helpers.tpl).
CHART_VERSION = "0.11.0"
CHART_LABEL = f"{CHART_NAME}-{CHART_VERSION}"
HERITAGE = "elastic-inference"
MODEL_SERVER = "/usr/bin/tensorflow_model_server"
CONFIG_VOLUME = "model-config"
GPU_RESOURCE = "nvidia.com/gpu"


def _pbtxt_string(value: str) -> str:
    """A protobuf text-format string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render_model_config(spec: DeploySpec) -> str:
    """TF Serving's ``--model_config_file`` content: one model, the spec's base path and version policy."""
    names = spec.names
    return (
        "model_config_list {\n"
        "  config {\n"
        f"    name: {_pbtxt_string(spec.model.name)}\n"
        f"    base_path: {_pbtxt_string(names.model_base_path)}\n"
        '    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ {spec.model.model_config_policy()} }}\n"
        "  }\n"
        "}\n"
    )


def chart_labels(spec: DeploySpec) -> dict[str, str]:
    """The labels arena's chart puts on the Deployment and its pods (plus ``modelName``)."""
    names = spec.names
    return {
        "heritage": HERITAGE,
        "chart": CHART_LABEL,
        **names.pod_labels,
        "serviceName": spec.serving.name,
    }


def selector(spec: DeploySpec) -> dict[str, str]:
    names = spec.names
    return {"release": names.release, "app": names.pod_labels["app"]}


def render_config_map(spec: DeploySpec) -> dict[str, Any]:
    names = spec.names
    path = PurePosixPath(names.model_config_file)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.model_config_map,
            "namespace": names.namespace,
            "labels": {
                "heritage": HERITAGE,
                "release": names.release,
                "chart": CHART_LABEL,
                "app": CHART_NAME,
            },
        },
        "data": {path.name: render_model_config(spec)},
    }


def _tolerations(spec: DeploySpec) -> list[dict[str, Any]]:
    tolerations = [dict(t) for t in spec.serving.tolerations]
    for taint in spec.node_pool.taints:
        covered = any(
            t.get("key") in (None, "", taint.key)
            and t.get("effect") in (None, "", taint.effect)
            and (t.get("operator") == "Exists" or t.get("value", "") == taint.value)
            for t in tolerations
        )
        if not covered:
            tolerations.append(
                {"key": taint.key, "operator": "Equal", "value": taint.value, "effect": taint.effect}
            )
    return tolerations


def _resources(spec: DeploySpec) -> dict[str, Any]:
    s = spec.serving
    limits: dict[str, Any] = {}
    if s.cpu:
        limits["cpu"] = s.cpu
    if s.memory:
        limits["memory"] = s.memory
    if s.gpus > 0:
        limits[GPU_RESOURCE] = str(s.gpus)
    return {"limits": dict(limits), "requests": dict(limits)} if limits else {}


def _env(spec: DeploySpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    if spec.serving.gpus == 0:
        # arena: a GPU image on a GPU node would otherwise see every GPU of the node.
        env.append({"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"})
    for name, path in (
        ("ARENA_NODE_NAME", "spec.nodeName"),
        ("ARENA_POD_NAMESPACE", "metadata.namespace"),
        ("ARENA_POD_NAME", "metadata.name"),
        ("ARENA_POD_IP", "status.podIP"),
    ):
        env.append({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})
    return env


def server_args(spec: DeploySpec) -> list[str]:
    s = spec.serving
    return [
        f"--port={s.port}",
        f"--rest_api_port={s.rest_api_port}",
        f"--model_config_file={spec.names.model_config_file}",
    ]


def render_deployment(spec: DeploySpec, include_replicas: bool = True) -> dict[str, Any]:
    """The serving Deployment. ``include_replicas=False`` leaves ``spec.replicas`` to its owner (the HPA) when
    the Deployment already runs under one; see :func:`apply_serving`."""
    names = spec.names
    s = spec.serving
    labels = chart_labels(spec)
    container: dict[str, Any] = {
        "name": "serving",
        "image": s.image,
        "command": [MODEL_SERVER],
        "args": server_args(spec),
        "env": _env(spec),
        "ports": [
            {"name": "serving", "containerPort": s.port, "protocol": "TCP"},
            {"name": "http-serving", "containerPort": s.rest_api_port, "protocol": "TCP"},
        ],
        "livenessProbe": {
            "tcpSocket": {"port": s.port},
            "initialDelaySeconds": 30,
            "periodSeconds": 5,
            "failureThreshold": 30,
        },
        "readinessProbe": {
            "httpGet": {"path": readiness_path(spec), "port": s.rest_api_port, "scheme": "HTTP"},
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "volumeMounts": [
            {"name": names.pvc, "mountPath": s.mount_path},
            {
                "name": CONFIG_VOLUME,
                "mountPath": str(PurePosixPath(names.model_config_file).parent),
                "readOnly": True,
            },
        ],
    }
    resources = _resources(spec)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [
            {"name": names.pvc, "persistentVolumeClaim": {"claimName": names.pvc}},
            {"name": CONFIG_VOLUME, "configMap": {"name": names.model_config_map}},
        ],
    }
    if names.node_selector:
        pod_spec["nodeSelector"] = dict(names.node_selector)
    tolerations = _tolerations(spec)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    deployment_spec: dict[str, Any] = {}
    if include_replicas:
        deployment_spec["replicas"] = s.replicas
    deployment_spec |= {
        "strategy": {"type": "RollingUpdate"},
        "selector": {"matchLabels": selector(spec)},
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": names.deployment, "namespace": names.namespace, "labels": dict(labels)},
        "spec": deployment_spec,
    }


def render_service(spec: DeploySpec) -> dict[str, Any]:
    names = spec.names
    s = spec.serving
    labels = {k: v for k, v in chart_labels(spec).items() if k not in ("serviceName", "modelName")}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": names.service, "namespace": names.namespace, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "ports": [
                {"name": "grpc-serving", "port": s.port, "targetPort": s.port, "protocol": "TCP"},
                {
                    "name": "http-serving",
                    "port": s.rest_api_port,
                    "targetPort": s.rest_api_port,
                    "protocol": "TCP",
                },
            ],
            "selector": selector(spec),
        },
    }


def render_serving(spec: DeploySpec, include_replicas: bool = True) -> list[dict[str, Any]]:
    """ConfigMap, Deployment, Service, in apply order."""
    return [render_config_map(spec), render_deployment(spec, include_replicas), render_service(spec)]


def readiness_path(spec: DeploySpec) -> str:
    """The readiness probe's path: the model's metadata, served only by an AVAILABLE version (module docstring)."""
    return f"/v1/models/{spec.model.name}/metadata"


# --- readiness of a Deployment (the logic of `kubectl rollout status`, kubectl/pkg/polymorphichelpers) ---------
def _condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def deployment_available(obj: dict[str, Any]) -> bool:
    """Rolled out and Available: the controller saw this generation, every replica is updated and available."""
    status = obj.get("status") or {}
    meta = obj.get("metadata") or {}
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return False
    desired = (obj.get("spec") or {}).get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    if updated < desired or status.get("replicas", 0) > updated:
        return False
    if status.get("availableReplicas", 0) < updated:
        return False
    available = _condition(obj, "Available")
    return bool(available and available.get("status") == "True")


def deployment_failed(obj: dict[str, Any]) -> str | None:
    progressing = _condition(obj, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return f"rollout exceeded its progress deadline: {progressing.get('message', '')}"
    return None


class ServingResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    applied: list[ApplyResult]
    deployment: str
    service: str
    ready_replicas: int


@task(name="serving", cache_policy=NO_CACHE)
def apply_serving(kube: KubeClients, spec: DeploySpec, timeout_s: float = 900) -> ServingResult:
    """Apply the model config, the Deployment and the Service; wait for the Deployment to be Available.

    Replicas and the HPA: once an HPA (``names.hpa``) exists, ``spec.replicas`` is left out of the applied
    Deployment, as the Kubernetes docs advise for server-side apply with a HorizontalPodAutoscaler; a re-run then
    never resets a scaled-out Deployment to the initial replica count. (If this applier still owns the field,
    dropping it lets the server default it to 1, the value the HPA's minimum keeps anyway.)
    """
    names = spec.names
    hpa = kube.get("HorizontalPodAutoscaler", names.hpa, names.namespace)
    manifests = render_serving(spec, include_replicas=hpa is None)
    applied = [kube.apply(m) for m in manifests]
    pod_selector = ",".join(f"{k}={v}" for k, v in selector(spec).items())
    dep = kube.wait_for(
        "Deployment",
        names.deployment,
        names.namespace,
        deployment_available,
        timeout_s,
        failed=deployment_failed,
        what="be Available",
        pod_selector=pod_selector,
    )
    ready = (dep.get("status") or {}).get("readyReplicas", 0)
    run_logger().info(
        "Deployment %s/%s is Available with %s ready replica(s)", names.namespace, names.deployment, ready
    )
    return ServingResult(
        applied=applied, deployment=names.deployment, service=names.service, ready_replicas=ready
    )
