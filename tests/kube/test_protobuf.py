"""The sandbox's protobuf request-body decoder on hand-built wire messages (no server).

Field numbers here are written out from Kubernetes' ``generated.proto`` (kubernetes/api v0.33.13
``apps/v1``/``core/v1``, kubernetes/apimachinery ``pkg/apis/meta/v1``, ``pkg/util/intstr``,
``pkg/api/resource``), independently of the decoder's descriptor table.
"""

from __future__ import annotations

import pytest

from sandbox.kube import protobuf
from sandbox.kube.errors import KubeError


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32/int64 go out as 10-byte two's complement
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def v(num: int, n: int) -> bytes:  # varint field
    return _varint(num << 3) + _varint(n)


def ld(num: int, *parts: bytes | str) -> bytes:  # length-delimited field (string, bytes, message)
    payload = b"".join(p.encode() if isinstance(p, str) else p for p in parts)
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def entry(num: int, key: str, value: bytes | str) -> bytes:  # map<string, ...> entry
    return ld(num, ld(1, key), ld(2, value))


def envelope(api_version: str, kind: str, obj: bytes) -> bytes:
    return b"k8s\x00" + ld(1, ld(1, api_version), ld(2, kind)) + ld(2, obj)


def _meta(**extra: bytes) -> bytes:
    # ObjectMeta as gogo writes it: every non-pointer field present, zero or not
    return (ld(1, "web") + ld(2, "") + ld(3, "ns1") + ld(4, "") + ld(5, "") + ld(6, "") + v(7, 0)
            + ld(8, v(1, 1700000000)) + entry(11, "app", "web") + b"".join(extra.values()))


def _deployment() -> bytes:
    container = (
        ld(1, "main") + ld(2, "nginx:1.25") + ld(3, "sleep") + ld(3, "10")
        + ld(6, ld(1, "") + v(3, 80) + ld(4, "TCP"))  # ContainerPort{name, containerPort, protocol}
        + ld(7, ld(1, "A") + ld(2, "b"))  # EnvVar{name, value}
        + ld(8, entry(1, "cpu", ld(1, "500m")))  # ResourceRequirements{limits: map<string, Quantity>}
        + v(16, 0)  # stdin=false (non-pointer bool: dropped, as JSON omitempty drops it)
    )
    volume = ld(1, "cfg") + ld(2, ld(19, ld(1, ld(1, "app-config")) + v(3, 420)))  # configMap, inlined
    pod_spec = ld(1, volume) + ld(2, container) + v(4, 0)  # terminationGracePeriodSeconds=0 (*int64: kept)
    strategy = ld(1, "RollingUpdate") + ld(2, ld(1, v(1, 1) + v(2, 0) + ld(3, "25%")) + ld(2, v(1, 0) + v(2, 1)))
    spec = (v(1, 0)  # replicas=0 (*int32: kept)
            + ld(2, entry(1, "app", "web"))  # LabelSelector{matchLabels}
            + ld(3, ld(1, ld(8, b"") + entry(11, "app", "web")) + ld(2, pod_spec))
            + ld(4, strategy) + v(5, 0) + v(6, -1))  # minReadySeconds=0 dropped; revisionHistoryLimit=-1
    return envelope("apps/v1", "Deployment", ld(1, _meta()) + ld(2, spec) + ld(3, b""))


def test_deployment_decodes_to_its_json_form():
    assert protobuf.decode(_deployment()) == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns1", "creationTimestamp": "2023-11-14T22:13:20Z",
                     "labels": {"app": "web"}},
        "spec": {
            "replicas": 0, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "volumes": [{"name": "cfg", "configMap": {"name": "app-config", "defaultMode": 420}}],
                "containers": [{"name": "main", "image": "nginx:1.25", "command": ["sleep", "10"],
                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                "env": [{"name": "A", "value": "b"}],
                                "resources": {"limits": {"cpu": "500m"}}}],
                "terminationGracePeriodSeconds": 0}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}},
            "revisionHistoryLimit": -1},
        "status": {},
    }


def test_service_int_or_string_and_unknown_fields():
    port = ld(1, "https") + ld(2, "TCP") + v(3, 443) + ld(4, v(1, 1) + ld(3, "web")) + v(99, 7)  # 99: unknown
    svc = ld(1, ld(1, "s")) + ld(2, ld(1, port) + entry(2, "app", "web") + ld(4, "ClusterIP"))
    obj = protobuf.decode(envelope("v1", "Service", svc))
    assert obj["spec"] == {"ports": [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": "web"}],
                           "selector": {"app": "web"}, "type": "ClusterIP"}


def test_packed_repeated_and_secret_bytes():
    # PodSecurityContext.supplementalGroups (repeated int64 = 4) packed, Secret.data map<string, bytes>
    pod = ld(2, ld(14, ld(4, _varint(1000) + _varint(2000))))
    assert protobuf.decode(envelope("v1", "Pod", pod))["spec"]["securityContext"] == {
        "supplementalGroups": [1000, 2000]}
    sec = protobuf.decode(envelope("v1", "Secret", entry(2, "p", b"\x00q")))
    assert sec["data"] == {"p": "AHE="}


def test_unknown_kind_is_415_and_garbage_is_400():
    assert ("apps/v1", "StatefulSet") not in protobuf.KINDS
    with pytest.raises(KubeError) as e:
        protobuf.decode(envelope("apps/v1", "StatefulSet", b""))
    assert e.value.code == 415 and e.value.reason == "UnsupportedMediaType"
    assert e.value.message.startswith("the body of the request was in an unknown format - accepted media types")
    with pytest.raises(KubeError) as e:
        protobuf.decode(b"{}")
    assert e.value.code == 400
    with pytest.raises(KubeError) as e:  # truncated message
        protobuf.decode(envelope("apps/v1", "Deployment", ld(1, ld(1, "web")))[:-2])
    assert e.value.code == 400
    with pytest.raises(KubeError) as e:  # a string field sent as a varint
        protobuf.decode(envelope("v1", "ConfigMap", ld(1, v(1, 5))))
    assert e.value.code == 400


def test_every_kind_resolves_to_described_messages():
    known = {"string", "bytes", "int32", "int64", "bool", "double", "float", "time", "microtime", "intorstr",
             "quantity", "fieldsv1", "rawext"}
    for name in protobuf.KINDS.values():
        assert name in protobuf.MESSAGES
    for name, fields in protobuf.MESSAGES.items():
        for num, (key, typ) in fields.items():
            base = typ.lstrip("*[]{}^")
            assert base in known or base in protobuf.MESSAGES, (name, num, key, typ)
