"""The manifests the Kubernetes steps render: the 1.33 schema, names shared through spec.names, the wiring between
objects (selectors, volumes, probes, metric selector), variants (RRSA, no GPU, other version policies), and that a
printed plan never holds the AccessKey secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError
from pydantic import SecretStr

from clients.cluster import default_oss_url
from core.spec import DeploySpec
from tasks.autoscaling import render_hpa
from tasks.ingress import ingress_address, render_ingress
from tasks.plan import plan_documents, render_all, to_yaml
from tasks.preflight import render_namespace
from tasks.serving import (
    deployment_available,
    deployment_failed,
    render_config_map,
    render_deployment,
    render_model_config,
    render_service,
)
from tasks.storage import (
    OSS_CSI_DRIVER,
    redact_secret,
    render_oss_secret,
    render_pv,
    render_pvc,
    render_storage,
)

K8S = "1.33.0"
ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-AccessKey-Secret-value"
AK_ID = "LTAI5tExampleKeyId"
URL = "oss-cn-hangzhou-internal.aliyuncs.com"

# The seed procedure's HPA, verbatim (ACK "Elastic inference on ECS", step 5, hpa.yaml).
SEED_HPA = """
apiVersion: autoscaling/v2beta1
kind: HorizontalPodAutoscaler
metadata:
  name: bert-tfserving-hpa
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: bert-tfserving-202107141745-tensorflow-serving
  minReplicas: 1
  maxReplicas: 10
  metrics:
  - type: External
    external:
      metricName: sls_ingress_qps
      metricSelector:
        matchLabels:
          sls.project: "k8s-log-c210fbedb96674b9eaf15f2dc47d169a8"
          sls.logstore: "nginx-ingress"
          sls.ingress.route: "default-bert-tfserving-202107141745-tensorflow-serving-8501"
      targetAverageValue: 10
"""


def seed() -> DeploySpec:
    return DeploySpec.from_file(ROOT / "examples" / "ack-seed.yaml")


def variant(**groups: dict[str, Any]) -> DeploySpec:
    data = seed().model_dump(mode="json")
    for group, values in groups.items():
        if isinstance(data.get(group), dict):
            data[group].update(values)
        else:
            data[group] = values
    return DeploySpec.parse(data)


VARIANTS = {
    "seed": seed,
    "rrsa": lambda: variant(storage={"auth": "rrsa", "rrsa_role_name": "oss-reader"}),
    "no-gpu": lambda: variant(
        serving={"gpus": 0, "cpu": "2", "memory": "4Gi", "image": "tensorflow/serving:2.15.0"}
    ),
    "latest-2": lambda: variant(model={"version_policy": "latest:2"}),
    "all-versions": lambda: variant(model={"version_policy": "all"}),
    "namespace-taints-behavior": lambda: variant(
        serving={"namespace": "inference", "tolerations": [{"key": "dedicated", "operator": "Exists"}]},
        node_pool={
            "taints": [
                {"key": "gpu", "value": "true", "effect": "NoSchedule"},
                {"key": "dedicated", "value": "ml", "effect": "NoSchedule"},
            ]
        },
        autoscaling={
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": 120,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                }
            }
        },
        ingress={"path_type": "Prefix", "path": "/v1"},
    ),
}


def all_manifests(spec: DeploySpec) -> list[dict[str, Any]]:
    """What apply sends (the real Secret) plus what the plan prints (Namespace when not default)."""
    out = render_storage(spec, URL, AK_ID, SECRET)
    out += [
        render_config_map(spec),
        render_deployment(spec),
        render_deployment(spec, include_replicas=False),
        render_service(spec),
        render_hpa(spec),
        render_ingress(spec),
        render_namespace(spec),
    ]
    return out + render_all(spec, None, AK_ID)


# --- schema -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_manifest_validates_against_the_1_33_schema(name: str) -> None:
    spec = VARIANTS[name]()
    kinds = set()
    for manifest in all_manifests(spec):
        assert kubernetes_validate.validate(manifest, K8S, strict=True) == "1.33"
        kinds.add(manifest["kind"])
    expected = {
        "PersistentVolume",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "Ingress",
        "Namespace",
    }
    if spec.storage.auth == "secret":
        expected.add("Secret")
    assert kinds == expected


def test_a_broken_manifest_is_caught_by_the_same_validation() -> None:
    """The schema check is not vacuous: an unknown field and a wrong type fail in strict mode."""
    dep = render_deployment(seed())
    dep["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S, strict=True)
    hpa = render_hpa(seed())
    hpa["spec"]["metrics"][0]["external"]["metricName"] = "sls_ingress_qps"  # the v2beta1 spelling
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, K8S, strict=True)


def test_the_seeds_v2beta1_hpa_has_no_schema_in_1_33() -> None:
    hpa = yaml.safe_load(SEED_HPA)
    for version in (K8S, "1.25.0"):  # autoscaling/v2beta1 was removed in 1.25
        with pytest.raises(SchemaNotFoundError):
            kubernetes_validate.validate(hpa, version, strict=True)


def test_our_hpa_is_the_seeds_hpa_in_autoscaling_v2() -> None:
    old = yaml.safe_load(SEED_HPA)
    new = render_hpa(seed())
    old_ext = old["spec"]["metrics"][0]["external"]
    new_ext = new["spec"]["metrics"][0]["external"]
    assert new["apiVersion"] == "autoscaling/v2"
    # The seed names its one HPA after the serving (bert-tfserving-hpa); ours carries the release, since every
    # version is its own release with its own HPA while two serve side by side (docs/rollouts.md "Releases side by side").
    assert old["metadata"]["name"] == "bert-tfserving-hpa"
    assert new["metadata"]["name"] == "bert-tfserving-202107141745-hpa"
    assert new["spec"]["scaleTargetRef"] == old["spec"]["scaleTargetRef"]
    assert (new["spec"]["minReplicas"], new["spec"]["maxReplicas"]) == (1, 10)
    assert new_ext["metric"]["name"] == old_ext["metricName"]
    assert new_ext["metric"]["selector"] == old_ext["metricSelector"]
    assert new_ext["target"] == {"type": "AverageValue", "averageValue": str(old_ext["targetAverageValue"])}


# --- wiring between objects ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_objects_refer_to_each_other_by_the_derived_names(name: str) -> None:
    spec = VARIANTS[name]()
    names = spec.names
    pv, pvc = render_pv(spec, URL), render_pvc(spec)
    cm, dep, svc = render_config_map(spec), render_deployment(spec), render_service(spec)
    hpa, ing = render_hpa(spec), render_ingress(spec)

    for m in (pvc, cm, dep, svc, hpa, ing):
        assert m["metadata"]["namespace"] == names.namespace
    assert "namespace" not in pv["metadata"]

    # PV <- PVC <- pod volume
    assert pv["metadata"]["name"] == names.pv == pv["spec"]["csi"]["volumeHandle"]
    assert pv["spec"]["csi"]["driver"] == OSS_CSI_DRIVER
    assert pvc["metadata"]["name"] == names.pvc
    assert pvc["spec"]["volumeName"] == names.pv
    assert pvc["spec"]["storageClassName"] == pv["spec"]["storageClassName"] == ""
    assert pvc["spec"]["accessModes"] == pv["spec"]["accessModes"] == spec.storage.access_modes
    assert pvc["spec"]["resources"]["requests"]["storage"] == pv["spec"]["capacity"]["storage"]
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    claim_volume = next(v for v in volumes.values() if "persistentVolumeClaim" in v)
    assert claim_volume["persistentVolumeClaim"]["claimName"] == names.pvc
    assert mounts[claim_volume["name"]] == spec.serving.mount_path

    # ConfigMap -> mounted where --model_config_file points
    config_volume = next(v for v in volumes.values() if "configMap" in v)
    assert config_volume["configMap"]["name"] == cm["metadata"]["name"] == names.model_config_map
    (key,) = cm["data"]
    args = pod["containers"][0]["args"]
    assert f"--model_config_file={names.model_config_file}" in args
    assert f"{mounts[config_volume['name']]}/{key}" == names.model_config_file

    # Deployment selector, Service selector, labels
    assert dep["metadata"]["name"] == names.deployment
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"] == {"release": names.release, "app": "tensorflow-serving"}
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert names.pod_labels.items() <= labels.items()
    assert labels["chart"] == "tensorflow-serving-0.11.0" and labels["heritage"]
    assert labels["servingType"] == "tf-serving" and labels["modelName"] == spec.model.name
    assert svc["metadata"]["name"] == names.service
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert pod["nodeSelector"] == names.node_selector

    # Service ports <- Ingress backend, container ports
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["grpc-serving"]["port"] == spec.serving.port
    assert ports["http-serving"]["port"] == spec.serving.rest_api_port
    container_ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
    assert container_ports == {"serving": spec.serving.port, "http-serving": spec.serving.rest_api_port}
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": names.service, "port": {"number": spec.serving.rest_api_port}}
    assert ing["spec"]["ingressClassName"] == spec.ingress.class_name
    assert ing["spec"]["rules"][0]["host"] == spec.ingress.host

    # HPA -> Deployment, and the SLS route the Ingress produces
    assert hpa["metadata"]["name"] == names.hpa
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": names.deployment,
    }
    selector = hpa["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"]
    assert selector == {
        "sls.project": names.sls_project,
        "sls.logstore": names.sls_logstore,
        "sls.ingress.route": names.sls_route,
    }
    assert names.sls_route == f"{names.namespace}-{svc['metadata']['name']}-{backend['port']['number']}"
    assert names.sls_project == f"k8s-log-{spec.cluster_id}"


def test_seed_names_are_the_seeds() -> None:
    spec = seed()
    dep = render_deployment(spec)
    assert dep["metadata"]["name"] == "bert-tfserving-202107141745-tensorflow-serving"
    hpa = render_hpa(spec)
    route = hpa["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"]["sls.ingress.route"]
    assert route == "default-bert-tfserving-202107141745-tensorflow-serving-8501"
    assert render_ingress(spec)["metadata"]["name"] == "bert-tfserving"
    assert render_pv(spec, URL)["metadata"]["name"] == "model-csi-pv"
    assert render_pvc(spec)["metadata"]["name"] == "model-pvc"


# --- serving details ----------------------------------------------------------------------------------------------
def test_container_runs_tf_serving_with_arena_env_probes_and_gpus() -> None:
    spec = seed()
    dep = render_deployment(spec)
    assert dep["spec"]["replicas"] == spec.serving.replicas
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate"}
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["name"] == "serving" and c["image"] == "tensorflow/serving:1.15.0-gpu"
    assert c["command"] == ["/usr/bin/tensorflow_model_server"]
    assert c["args"] == [
        "--port=8500",
        "--rest_api_port=8501",
        "--model_config_file=/tfserving/config/model.config",
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["ARENA_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["ARENA_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert {"ARENA_POD_NAMESPACE", "ARENA_POD_NAME"} <= env.keys()
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    assert c["livenessProbe"]["tcpSocket"] == {"port": 8500}
    assert (c["livenessProbe"]["initialDelaySeconds"], c["livenessProbe"]["failureThreshold"]) == (30, 30)
    # metadata, not status: only an AVAILABLE version answers it (issue 12, item 4)
    assert c["readinessProbe"]["httpGet"]["path"] == "/v1/models/chnsenticorp/metadata"
    assert c["readinessProbe"]["httpGet"]["port"] == 8501
    assert c["resources"] == {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}


def test_without_gpus_the_container_asks_for_none_and_hides_the_devices() -> None:
    spec = VARIANTS["no-gpu"]()
    (c,) = render_deployment(spec)["spec"]["template"]["spec"]["containers"]
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in c["env"]
    assert c["resources"] == {
        "limits": {"cpu": "2", "memory": "4Gi"},
        "requests": {"cpu": "2", "memory": "4Gi"},
    }


def test_replicas_can_be_left_to_the_hpa() -> None:
    dep = render_deployment(seed(), include_replicas=False)
    assert "replicas" not in dep["spec"]


@pytest.mark.parametrize(
    ("policy", "block"),
    [
        ("specific:1623831335", "specific { versions: 1623831335 }"),
        ("specific:1,2", "specific { versions: 1 versions: 2 }"),
        ("latest:2", "latest { num_versions: 2 }"),
        ("latest", "latest { num_versions: 1 }"),
        ("all", "all {}"),
    ],
)
def test_model_config_file_carries_the_version_policy(policy: str, block: str) -> None:
    spec = variant(model={"version_policy": policy})
    assert render_model_config(spec) == (
        "model_config_list {\n"
        "  config {\n"
        '    name: "chnsenticorp"\n'
        f'    base_path: "/models/tensorflow/{spec.names.release}"\n'
        '    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ {block} }}\n"
        "  }\n"
        "}\n"
    )
    assert render_config_map(spec)["data"]["model.config"] == render_model_config(spec)


def test_pool_taints_are_tolerated_once() -> None:
    spec = VARIANTS["namespace-taints-behavior"]()
    tolerations = render_deployment(spec)["spec"]["template"]["spec"]["tolerations"]
    # The spec's own Exists toleration covers the `dedicated` taint; the `gpu` taint gets one added.
    assert tolerations == [
        {"key": "dedicated", "operator": "Exists"},
        {"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
    ]
    assert render_hpa(spec)["spec"]["behavior"] == spec.autoscaling.behavior


def test_rollout_predicates_follow_kubectl_rollout_status() -> None:
    dep = render_deployment(seed())
    dep["metadata"]["generation"] = 2
    dep["status"] = {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "availableReplicas": 1,
        "conditions": [{"type": "Available", "status": "True"}],
    }
    assert not deployment_available(dep)  # the controller has not seen generation 2 yet
    dep["status"]["observedGeneration"] = 2
    assert deployment_available(dep)
    dep["status"]["conditions"] = [
        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}
    ]
    assert not deployment_available(dep)
    assert deployment_failed(dep) is None
    dep["status"]["conditions"].append(
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": "too slow",
        }
    )
    assert "progress deadline" in str(deployment_failed(dep))


def test_ingress_address_reads_ip_or_hostname_and_port() -> None:
    assert ingress_address({"status": {"loadBalancer": {}}}) is None
    assert ingress_address({"status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}) == ("1.2.3.4", 80)
    lb = {"ingress": [{"hostname": "lb.example", "ports": [{"port": 8080, "protocol": "TCP"}]}]}
    assert ingress_address({"status": {"loadBalancer": lb}}) == ("lb.example", 8080)


# --- storage and secrets ------------------------------------------------------------------------------------------
def test_pv_references_the_secret_and_never_holds_credentials() -> None:
    spec = seed()
    secret = render_oss_secret(spec, AK_ID, SecretStr(SECRET))
    assert secret["type"] == "Opaque"
    assert secret["stringData"] == {"akId": AK_ID, "akSecret": SECRET}
    pv = render_pv(spec, URL)
    csi = pv["spec"]["csi"]
    assert csi["nodePublishSecretRef"] == {
        "name": secret["metadata"]["name"],
        "namespace": secret["metadata"]["namespace"],
    }
    assert csi["volumeAttributes"] == {
        "bucket": spec.storage.bucket,
        "url": URL,
        "path": "/",
        "otherOpts": "-o max_stat_cache_size=0 -o allow_other",
    }
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert SECRET not in yaml.safe_dump(pv) and AK_ID not in yaml.safe_dump(pv)


def test_rrsa_needs_no_secret() -> None:
    spec = VARIANTS["rrsa"]()
    manifests = render_storage(spec, URL, None, None)
    assert [m["kind"] for m in manifests] == ["PersistentVolume", "PersistentVolumeClaim"]
    csi = manifests[0]["spec"]["csi"]
    assert "nodePublishSecretRef" not in csi
    assert csi["volumeAttributes"]["authType"] == "rrsa"
    assert csi["volumeAttributes"]["roleName"] == "oss-reader"


def test_secret_auth_without_keys_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="AccessKey"):
        render_storage(seed(), URL, None, None)
    with pytest.raises(ValueError, match="oss_url"):
        render_pv(seed())


def test_sts_credentials_are_refused_for_the_oss_secret_and_rrsa_is_recommended() -> None:
    """Issue 12 (3): the CSI driver takes akId/akSecret as a fixed key (a token beside them is ignored) and, since
    csi-plugin 1.35.1, SecurityToken only under AccessKeyId/AccessKeySecret with nobody renewing it: refuse."""
    with pytest.raises(ValueError, match="STS credentials") as err:
        render_storage(seed(), URL, AK_ID, SECRET, security_token="sts-token-value")
    assert "storage.auth: rrsa" in str(err.value) and "sts-token-value" not in str(err.value)
    manifests = render_storage(VARIANTS["rrsa"](), URL, None, None, security_token="sts-token-value")
    assert [m["kind"] for m in manifests] == ["PersistentVolume", "PersistentVolumeClaim"]  # RRSA: fine


def test_redaction_keeps_only_what_is_asked() -> None:
    secret = render_oss_secret(seed(), AK_ID, SECRET)
    shown = redact_secret(secret)
    assert shown["stringData"] == {"akId": "<redacted>", "akSecret": "<redacted>"}
    assert redact_secret(secret, keep=("akId",))["stringData"] == {"akId": AK_ID, "akSecret": "<redacted>"}
    assert secret["stringData"]["akSecret"] == SECRET  # the original is untouched
    data_secret = {**secret, "data": {"akSecret": "c2VjcmV0"}}
    del data_secret["stringData"]
    assert redact_secret(data_secret, keep=("akSecret",))["data"] == {"akSecret": "<redacted>"}


# --- plan -------------------------------------------------------------------------------------------------------
def test_plan_lists_every_manifest_in_apply_order_without_the_secret() -> None:
    spec = VARIANTS["namespace-taints-behavior"]()
    manifests = render_all(spec, "c0123456789abcdef", AK_ID, oss_url=default_oss_url("cn-beijing"))
    assert [m["kind"] for m in manifests] == [
        "Namespace",
        "Secret",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "Ingress",
    ]
    assert manifests[1]["stringData"] == {"akId": AK_ID, "akSecret": "<redacted>"}
    assert manifests[2]["spec"]["csi"]["volumeAttributes"]["url"] == "oss-cn-beijing-internal.aliyuncs.com"
    hpa = manifests[7]
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"]["sls.project"] == (
        "k8s-log-c0123456789abcdef"
    )
    text = to_yaml(plan_documents(spec, "c0123456789abcdef", AK_ID))
    assert SECRET not in text
    assert "model_version_policy" in text
    docs = list(yaml.safe_load_all(text))
    assert docs[-len(manifests) :] == render_all(spec, "c0123456789abcdef", AK_ID)
    # The model config is printed as a readable block, and reads back identical.
    assert "model.config: |" in text
    assert next(d for d in docs if d.get("kind") == "ConfigMap") == render_config_map(spec)


def test_plan_needs_a_cluster_id_for_the_metric_selector() -> None:
    spec = variant(cluster_id=None)
    with pytest.raises(ValueError, match="cluster id"):
        render_all(spec, None, AK_ID)
    with pytest.raises(ValueError, match="cluster id"):
        render_hpa(spec)
    assert render_all(spec, "cabcdef0123456789", AK_ID)[-2]["kind"] == "HorizontalPodAutoscaler"


def test_plan_starts_with_the_nodepool_request_when_its_renderer_exists() -> None:
    spec = variant(node_pool={"login_password": "Pa55word-Secret!", "key_pair": None})
    docs = plan_documents(spec, None, AK_ID)
    text = to_yaml(docs)
    assert "Pa55word-Secret!" not in text and SECRET not in text
    try:
        import tasks.nodepool  # noqa: F401
    except ImportError:
        assert docs[0]["kind"] == "Secret"
        return
    request = docs[0]["CreateClusterNodePool"]
    assert request["method"] == "POST"
    assert request["path"] == f"/clusters/{spec.cluster_id}/nodepools"
    assert request["body"]["nodepool_info"]["name"] == spec.node_pool.name
