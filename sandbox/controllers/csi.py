"""The kubelet's volume manager for the sandbox: resolves a pod's volumes and performs the OSS CSI mount check.

``mount_volumes(...)`` returns the pod's volumes as :class:`~sandbox.controllers.runtime.VolumeSource` (what a
runtime reads: OSS bucket/path, ConfigMap/Secret names) or the FailedMount message of the first volume that cannot
be set up. Message shapes:

- kubelet ``pkg/kubelet/volumemanager`` / ``operationexecutor``: ``MountVolume.SetUp failed for volume "<name>" :
  <error>`` where ``<name>`` is the PV name for a PVC-backed volume and the pod's volume name otherwise; ConfigMap
  and Secret volumes fail with the API error (``configmap "x" not found``);
- kubelet ``pkg/volume/csi/csi_mounter.go`` / ``csi_util.go`` for a missing node-publish Secret:
  ``kubernetes.io/csi: failed to find the secret <name> in the namespace <ns> with error: secrets "<name>" not found``;
- the OSS CSI plugin (kubernetes-sigs/alibaba-cloud-csi-driver ``pkg/oss/nodeserver.go``, ``pkg/oss/errors.go``):
  gRPC errors ``rpc error: code = InvalidArgument desc = OSS parameters error: ...`` /
  ``OSS authorization error: ...``, and ossfs failures ``rpc error: code = Unknown desc = Create OSS volume fail:
  ossfs exited with error: ...`` carrying ossfs's own check message (ossfs is an s3fs-fuse fork; ``s3fs.cpp``
  ``s3fs_check_service``: ``invalid credentials(host=...) - result of checking service.`` on 403,
  ``bucket not found(host=...) - result of checking service.`` on 404).

Credentials: the Secret's ``akId``/``akSecret`` (``data`` base64 or ``stringData``) must be an AccessKey pair the
sandbox accepts (``ctx.accounts.secret_for(akId) == akSecret``, checked by the OSS service); ``authType: rrsa``
with a ``roleName`` (or ``roleArn``) is accepted as a working RAM role; ``authType: public`` needs nothing.
"""

from __future__ import annotations

import base64
import binascii
import copy
from typing import Any
from urllib.parse import urlparse

from .runtime import VolumeSource

OSS_DRIVER = "ossplugin.csi.alibabacloud.com"


class MountError(Exception):
    """One volume cannot be set up; ``str()`` is the FailedMount event message."""


def _secret_value(secret: dict[str, Any], key: str) -> str | None:
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _attrs(csi: dict[str, Any]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (csi.get("volumeAttributes") or {}).items()}


def check_oss_mount(store: Any, oss: Any, pv: dict[str, Any], volume_name: str) -> VolumeSource:
    csi = (pv.get("spec") or {}).get("csi") or {}
    a = _attrs(csi)
    prefix = f'MountVolume.SetUp failed for volume "{volume_name}" : '
    bucket, url = a.get("bucket", ""), a.get("url", "")
    if not bucket:
        raise MountError(prefix + "rpc error: code = InvalidArgument desc = OSS parameters error: "
                         "bucket is empty")
    if not url:
        raise MountError(prefix + "rpc error: code = InvalidArgument desc = OSS parameters error: url is empty")
    path = a.get("path") or "/"
    if not path.startswith("/"):
        raise MountError(prefix + f"rpc error: code = InvalidArgument desc = OSS path error: path {path!r} must "
                         "start with /")
    host = urlparse(url if "://" in url else f"http://{url}").netloc or url
    auth = (a.get("authtype") or "").lower()
    fail = prefix + "rpc error: code = Unknown desc = Create OSS volume fail: ossfs exited with error: "
    if auth == "rrsa":
        if not (a.get("rolename") or a.get("ramrole") or a.get("rolearn")):
            raise MountError(prefix + "rpc error: code = InvalidArgument desc = OSS authorization error: "
                             "use RRSA but roleName or roleArn is empty")
    elif auth != "public":
        ak_id = a.get("akid")
        ak_secret = a.get("aksecret")
        ref = csi.get("nodePublishSecretRef") or {}
        if ref.get("name"):
            ns = ref.get("namespace") or "default"
            secret = store.try_get("secrets", ns, ref["name"])
            if secret is None:
                raise MountError(prefix + f"kubernetes.io/csi: failed to find the secret {ref['name']} in the "
                                 f"namespace {ns} with error: secrets \"{ref['name']}\" not found")
            ak_id = _secret_value(secret, "akId")
            ak_secret = _secret_value(secret, "akSecret")
        if not ak_id or not ak_secret:
            raise MountError(prefix + "rpc error: code = InvalidArgument desc = OSS authorization error: "
                             "akId or akSecret is empty")
        if oss is None:
            raise MountError(fail + f"unable to connect bucket and credentials (host={host})")
        if not oss.check_credentials(ak_id, ak_secret):
            raise MountError(fail + f"invalid credentials(host={host}) - result of checking service.")
    if oss is None:
        raise MountError(fail + f"unable to connect bucket (host={host})")
    if not oss.bucket_exists(bucket):
        raise MountError(fail + f"bucket not found(host={host}) - result of checking service.")
    return VolumeSource(name=volume_name, kind="oss", bucket=bucket, path=path, url=url,
                        pv=pv["metadata"]["name"], read_only=bool(csi.get("readOnly")))


def mount_volumes(store: Any, oss: Any, pod: dict[str, Any]) -> dict[str, VolumeSource]:
    """Every volume of the pod resolved, or :class:`MountError` for the first one that cannot be set up."""
    ns = pod["metadata"].get("namespace") or "default"
    out: dict[str, VolumeSource] = {}
    for v in (pod.get("spec") or {}).get("volumes") or []:
        name = v.get("name", "")
        prefix = f'MountVolume.SetUp failed for volume "{name}" : '
        if "configMap" in v:
            cm = v["configMap"] or {}
            if store.try_get("configmaps", ns, cm.get("name", "")) is None and not cm.get("optional"):
                raise MountError(prefix + f'configmap "{cm.get("name", "")}" not found')
            out[name] = VolumeSource(name=name, kind="configMap", source_name=cm.get("name"),
                                     items=copy.deepcopy(cm.get("items") or []))
        elif "secret" in v:
            sec = v["secret"] or {}
            if store.try_get("secrets", ns, sec.get("secretName", "")) is None and not sec.get("optional"):
                raise MountError(prefix + f'secret "{sec.get("secretName", "")}" not found')
            out[name] = VolumeSource(name=name, kind="secret", source_name=sec.get("secretName"),
                                     items=copy.deepcopy(sec.get("items") or []))
        elif "persistentVolumeClaim" in v:
            claim = (v["persistentVolumeClaim"] or {}).get("claimName", "")
            pvc = store.try_get("persistentvolumeclaims", ns, claim)
            pv_name = ((pvc or {}).get("spec") or {}).get("volumeName")
            if pvc is None or ((pvc.get("status") or {}).get("phase")) != "Bound" or not pv_name:
                raise MountError(f"Unable to attach or mount volumes: unmounted volumes=[{name}]: error processing "
                                 f"PVC {ns}/{claim}: PVC is not bound")
            pv = store.try_get("persistentvolumes", None, pv_name)
            if pv is None:
                raise MountError(f"Unable to attach or mount volumes: unmounted volumes=[{name}]: error processing "
                                 f"PVC {ns}/{claim}: failed to fetch PV {pv_name} from API server: "
                                 f'persistentvolumes "{pv_name}" not found')
            csi = (pv.get("spec") or {}).get("csi")
            if csi is not None:
                driver = csi.get("driver", "")
                if driver != OSS_DRIVER:
                    raise MountError(f'MountVolume.MountDevice failed for volume "{pv_name}" : kubernetes.io/csi: '
                                     f"attacher.MountDevice failed to create newCsiDriverClient: driver name {driver} "
                                     "not found in the list of registered CSI drivers")
                src = check_oss_mount(store, oss, pv, pv_name)
                out[name] = src.model_copy(update={"name": name, "pvc": claim})
            else:
                out[name] = VolumeSource(name=name, kind="pvc", pv=pv_name, pvc=claim)
        elif "emptyDir" in v:
            out[name] = VolumeSource(name=name, kind="emptyDir")
        elif "hostPath" in v:
            out[name] = VolumeSource(name=name, kind="hostPath", path=(v["hostPath"] or {}).get("path"))
        else:
            out[name] = VolumeSource(name=name, kind="other")
    return out
