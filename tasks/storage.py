"""Step 3: the model's OSS bucket as a statically provisioned volume (Secret + PV + PVC), then wait until Bound.

The seed procedure's PV puts ``akId``/``akSecret`` inline in ``volumeAttributes``; that is deprecated in the OSS
CSI driver and leaks the key to anyone who can read PVs. We render instead, following
kubernetes-sigs/alibaba-cloud-csi-driver ``examples/oss/secret.yaml`` and ``examples/oss/static/pv.yaml`` (and
``pkg/oss/utils.go`` for the attribute names):

* a ``Secret`` (type Opaque) with ``stringData`` keys ``akId`` and ``akSecret``, referenced by the PV's
  ``spec.csi.nodePublishSecretRef{name, namespace}`` (a long-lived AccessKey only: STS credentials are refused,
  see :func:`sts_problem`); or, with ``storage.auth: rrsa``, no Secret at all and
  ``volumeAttributes.authType: rrsa`` + ``roleName`` (RAM Roles for Service Accounts);
* a ``PersistentVolume`` with CSI driver ``ossplugin.csi.alibabacloud.com``, ``volumeHandle`` = the PV name (the
  driver requires it), ``volumeAttributes`` ``bucket``, ``url``, ``path``, ``otherOpts``, and
  ``storageClassName: ""`` so that no default StorageClass can claim it;
* a ``PersistentVolumeClaim`` that pins that PV with ``volumeName`` and the same ``storageClassName: ""``, access
  modes and size (Kubernetes docs, "Reserving a PersistentVolume").

The render functions are pure; :func:`apply_storage` applies them with server-side apply and waits for the PVC
to be ``Bound``. The AccessKey secret never reaches a log line, an exception or a printed plan:
:func:`redact_secret` is the one way a Secret manifest is displayed.
"""

from __future__ import annotations

import copy
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, SecretStr

from clients.kube import ApplyResult, KubeClients
from clients.logs import run_logger
from core.spec import DeploySpec

OSS_CSI_DRIVER = "ossplugin.csi.alibabacloud.com"
MANAGED_BY = {"app.kubernetes.io/managed-by": "elastic-inference"}
REDACTED = "<redacted>"


def _labels(spec: DeploySpec) -> dict[str, str]:
    return {**MANAGED_BY, "servingName": spec.serving.name}


def render_oss_secret(
    spec: DeploySpec, access_key_id: str, access_key_secret: str | SecretStr
) -> dict[str, Any]:
    """The Secret the OSS CSI driver reads at mount time (keys ``akId``/``akSecret``, csi-driver
    ``examples/oss/secret.yaml``). Display it only through :func:`redact_secret`."""
    names = spec.names
    secret = (
        access_key_secret.get_secret_value()
        if isinstance(access_key_secret, SecretStr)
        else access_key_secret
    )
    if not access_key_id or not secret:
        raise ValueError("the OSS Secret needs a non-empty AccessKey id and secret")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": names.oss_secret, "namespace": names.namespace, "labels": _labels(spec)},
        "type": "Opaque",
        "stringData": {"akId": access_key_id, "akSecret": secret},
    }


def redact_secret(manifest: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """A copy of a manifest fit for display: every ``data``/``stringData`` value of a Secret replaced by
    ``<redacted>`` except the keys in ``keep`` (e.g. ``("akId",)``, an identifier, not a credential).
    Other kinds are returned unchanged (copied)."""
    out = copy.deepcopy(manifest)
    if out.get("kind") != "Secret":
        return out
    for field in ("data", "stringData"):
        values = out.get(field)
        if isinstance(values, dict):
            out[field] = {
                k: (v if k in keep and field == "stringData" else REDACTED) for k, v in values.items()
            }
    return out


def render_pv(spec: DeploySpec, oss_url: str | None = None) -> dict[str, Any]:
    """The statically provisioned OSS PersistentVolume (csi-driver ``examples/oss/static/pv.yaml``).

    ``oss_url`` defaults to ``storage.oss_url``; one of them is required (see ``clients.cluster.resolve_oss_url``).
    """
    names = spec.names
    st = spec.storage
    url = oss_url or st.oss_url
    if not url:
        raise ValueError("render_pv needs the OSS endpoint: pass oss_url or set storage.oss_url")
    attributes: dict[str, str] = {
        "bucket": st.bucket,
        "url": url,
        "path": st.path,
        "otherOpts": st.other_opts,
    }
    csi: dict[str, Any] = {"driver": OSS_CSI_DRIVER, "volumeHandle": names.volume_handle}
    if st.auth == "rrsa":
        attributes["authType"] = "rrsa"
        attributes["roleName"] = str(st.rrsa_role_name)
    else:
        csi["nodePublishSecretRef"] = {"name": names.oss_secret, "namespace": names.namespace}
    csi["volumeAttributes"] = attributes
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": names.pv, "labels": {**_labels(spec), "alicloud-pvname": names.pv}},
        "spec": {
            "capacity": {"storage": st.capacity},
            "accessModes": list(st.access_modes),
            "persistentVolumeReclaimPolicy": st.reclaim_policy,
            "storageClassName": "",
            "csi": csi,
        },
    }


def render_pvc(spec: DeploySpec) -> dict[str, Any]:
    """The claim that pins the PV by name (``volumeName``) with the same class (``""``), modes and size."""
    names = spec.names
    st = spec.storage
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": names.pvc, "namespace": names.namespace, "labels": _labels(spec)},
        "spec": {
            "accessModes": list(st.access_modes),
            "resources": {"requests": {"storage": st.capacity}},
            "storageClassName": "",
            "volumeName": names.pv,
        },
    }


def sts_problem(spec: DeploySpec, has_security_token: bool) -> str | None:
    """Why the OSS volume cannot be given these credentials, or None.

    What the OSS CSI driver reads from the Secret of ``nodePublishSecretRef`` (kubernetes-sigs/alibaba-cloud-csi-driver
    ``pkg/oss/utils.go`` ``parseCredentialsFromSecret``): the legacy keys ``akId``/``akSecret`` as a fixed AccessKey,
    and, only when those are absent, ``AccessKeyId``/``AccessKeySecret``/``SecurityToken``/``Expiration`` (case
    insensitive); a ``SecurityToken`` there makes them STS credentials (csi-plugin 1.35.1 and later, commit
    e4d3f53 "support STS.Token in nodePublishSecretRef", 2025-12-24). Older plugins read ``akId``/``akSecret`` only.
    An STS token expires (at most hours later) and the driver rotates it only when someone rewrites the Secret
    (``NodePublishVolume`` "token rotation": ``OssfsSecretInterceptor`` reloads it), and every pod scheduled later
    (the HPA's scale-out, on new nodes) mounts with what the Secret holds then: a token this flow stored would have
    expired. So the flow refuses STS credentials for ``storage.auth: secret`` and points to RRSA (``authType:
    rrsa``: the driver gets its own short-lived credentials through the pod's service account and renews them) or
    a RAM user's AccessKey.
    """
    if spec.storage.auth == "secret" and has_security_token:
        return (
            "storage.auth 'secret' with STS credentials (the credentials block has a security_token): the OSS "
            "volume's Secret would hold a token that expires and that nothing renews, so pods mounting it later "
            "(every scale-out) would fail; use storage.auth: rrsa with storage.rrsa_role_name (RAM Roles for "
            "Service Accounts: the CSI driver obtains and renews its own credentials), or credentials of a RAM "
            "user's AccessKey without a token"
        )
    return None


def render_storage(
    spec: DeploySpec,
    oss_url: str | None,
    access_key_id: str | None,
    access_key_secret: str | SecretStr | None,
    security_token: str | SecretStr | None = None,
) -> list[dict[str, Any]]:
    """Secret (unless RRSA), PV, PVC, in apply order. STS credentials are refused (:func:`sts_problem`)."""
    out: list[dict[str, Any]] = []
    problem = sts_problem(spec, bool(security_token))
    if problem:
        raise ValueError(problem)
    if spec.storage.auth == "secret":
        if not access_key_id or access_key_secret is None:
            raise ValueError("storage.auth 'secret' needs the AccessKey id and secret for the OSS Secret")
        out.append(render_oss_secret(spec, access_key_id, access_key_secret))
    out += [render_pv(spec, oss_url), render_pvc(spec)]
    return out


def pvc_bound(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("phase") == "Bound"


def pvc_failed(obj: dict[str, Any]) -> str | None:
    phase = (obj.get("status") or {}).get("phase")
    return "the claim is Lost: its PersistentVolume is gone" if phase == "Lost" else None


class StorageResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    applied: list[ApplyResult]
    pv: str
    pvc: str
    phase: str


@task(name="storage", cache_policy=NO_CACHE)
def apply_storage(
    kube: KubeClients,
    spec: DeploySpec,
    oss_url: str | None = None,
    access_key_id: str | None = None,
    access_key_secret: SecretStr | None = None,
    timeout_s: float = 300,
    security_token: SecretStr | None = None,
) -> StorageResult:
    """Apply Secret + PV + PVC (server-side apply) and wait until the PVC is Bound."""
    names = spec.names
    manifests = render_storage(spec, oss_url, access_key_id, access_key_secret, security_token)
    applied = [kube.apply(m) for m in manifests]
    pvc = kube.wait_for(
        "PersistentVolumeClaim",
        names.pvc,
        names.namespace,
        pvc_bound,
        timeout_s,
        failed=pvc_failed,
        what="be Bound",
    )
    run_logger().info("PVC %s/%s is Bound to PV %s", names.namespace, names.pvc, names.pv)
    return StorageResult(applied=applied, pv=names.pv, pvc=names.pvc, phase=pvc["status"]["phase"])
