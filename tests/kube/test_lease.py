"""``coordination.k8s.io/v1`` Lease on the sandbox API server through the kubernetes client's CoordinationV1Api:
create/get/list/watch/replace/patch/delete, optimistic concurrency (a stale resourceVersion is 409 Conflict, which
a leader-election lock relies on) and ``ValidateLeaseSpec`` (pkg/apis/coordination/validation)."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from polling import wait_for


@pytest.fixture(scope="module")
def coord(api_client):
    return client.CoordinationV1Api(api_client)


def _lease(name: str, holder: str, duration: int = 15) -> dict:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "acquireTime": now,
                     "renewTime": now, "leaseTransitions": 0}}


def test_lease_crud_watch_and_conflict(coord, ns):
    seen: list[tuple[str, str]] = []
    first = coord.list_namespaced_lease(ns)
    assert first.items == []

    def follow() -> None:
        w = watch.Watch()
        for ev in w.stream(coord.list_namespaced_lease, ns, resource_version=first.metadata.resource_version,
                           timeout_seconds=30):
            seen.append((ev["type"], ev["object"].spec.holder_identity))
            if ev["type"] == "DELETED":
                w.stop()
    t = threading.Thread(target=follow, daemon=True)
    t.start()

    created = coord.create_namespaced_lease(ns, _lease("rollout-svc", "run-a"))
    assert created.spec.holder_identity == "run-a" and created.spec.lease_duration_seconds == 15
    got = coord.read_namespaced_lease("rollout-svc", ns)
    assert got.metadata.resource_version == created.metadata.resource_version
    assert got.spec.renew_time is not None

    # run-b takes the lease with the version it read; run-a's update with the older version is refused
    got.spec.holder_identity = "run-b"
    got.spec.lease_transitions = 1
    taken = coord.replace_namespaced_lease("rollout-svc", ns, got)
    assert taken.spec.holder_identity == "run-b"
    created.spec.holder_identity = "run-a-renew"
    with pytest.raises(ApiException) as e:
        coord.replace_namespaced_lease("rollout-svc", ns, created)
    assert e.value.status == 409
    assert json.loads(e.value.body)["reason"] == "Conflict"
    # a patch carrying a stale resourceVersion is refused as well; without one it applies
    with pytest.raises(ApiException) as e:
        coord.patch_namespaced_lease("rollout-svc", ns, {"metadata": {
            "resourceVersion": created.metadata.resource_version}, "spec": {"holderIdentity": "run-a"}})
    assert e.value.status == 409
    patched = coord.patch_namespaced_lease("rollout-svc", ns, {"spec": {"leaseDurationSeconds": 30}})
    assert patched.spec.lease_duration_seconds == 30 and patched.spec.holder_identity == "run-b"
    assert [i.metadata.name for i in coord.list_namespaced_lease(ns).items] == ["rollout-svc"]

    coord.delete_namespaced_lease("rollout-svc", ns)
    with pytest.raises(ApiException) as e:
        coord.read_namespaced_lease("rollout-svc", ns)
    assert e.value.status == 404
    wait_for(lambda: ("DELETED", "run-b") in seen, what="the watch to see the deletion", state=lambda: seen)
    assert seen[0] == ("ADDED", "run-a") and ("MODIFIED", "run-b") in seen


def test_lease_create_conflict_is_409_already_exists(coord, ns):
    coord.create_namespaced_lease(ns, _lease("lock", "a"))
    with pytest.raises(ApiException) as e:
        coord.create_namespaced_lease(ns, _lease("lock", "b"))
    assert e.value.status == 409
    assert json.loads(e.value.body)["reason"] == "AlreadyExists"


@pytest.mark.parametrize(("spec", "field", "message"), [
    ({"leaseDurationSeconds": 0}, "spec.leaseDurationSeconds", "must be greater than 0"),
    ({"leaseDurationSeconds": -5}, "spec.leaseDurationSeconds", "must be greater than 0"),
    ({"leaseTransitions": -1}, "spec.leaseTransitions", "must be greater than or equal to 0"),
    ({"strategy": "Newest"}, "spec.strategy.strategy", "supported values"),
    ({"preferredHolder": "x"}, "spec.preferredHolder", "may only be specified if `strategy` is defined"),
])
def test_lease_validation(coord, ns, spec, field, message):
    with pytest.raises(ApiException) as e:
        coord.create_namespaced_lease(ns, {"metadata": {"name": "bad"}, "spec": spec})
    assert e.value.status == 422
    body = json.loads(e.value.body)
    causes = body["details"]["causes"]
    assert any(c["field"] == field and message in c["message"] for c in causes), causes
    # and nothing was created
    assert coord.list_namespaced_lease(ns).items == []
