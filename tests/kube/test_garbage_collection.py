"""The garbage collector and the namespace controller, through the API as a client sees them.

Deletion propagation (Background, Foreground, Orphan) is in test_python_client; here the cases the controllers
must notice on their own: an owner that never existed, and a namespace deleted with content in it.
"""

from __future__ import annotations

import uuid

import pytest
from kubernetes.client.rest import ApiException
from polling import wait_for


def _missing(read, *args) -> bool:
    try:
        read(*args)
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


def test_an_object_whose_owner_never_existed_is_collected(core, ns):
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ghost", "uid": str(uuid.uuid4())}
    core.create_namespaced_config_map(ns, {"metadata": {"name": "stray", "ownerReferences": [ref]}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "unowned"}})
    wait_for(lambda: _missing(core.read_namespaced_config_map, "stray", ns), "the dangling ConfigMap to be collected")
    assert core.read_namespaced_config_map("unowned", ns).metadata.name == "unowned"


def test_a_deleted_namespace_is_emptied_then_removed(core):
    name = "gc-" + uuid.uuid4().hex[:10]
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "cfg"}})
    core.create_namespaced_secret(name, {"metadata": {"name": "sec"}, "stringData": {"k": "v"}})
    core.create_namespaced_pod(name, {"metadata": {"name": "p"},
                                      "spec": {"containers": [{"name": "c", "image": "busybox"}],
                                               "nodeSelector": {"no-such-node": "true"}}})
    # a finalizer nobody removes keeps the namespace Terminating until the test lets it go
    core.create_namespaced_config_map(name, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    core.delete_namespace(name)

    def emptied():
        left = {c.metadata.name for c in core.list_namespaced_config_map(name).items}
        left |= {s.metadata.name for s in core.list_namespaced_secret(name).items}
        left |= {p.metadata.name for p in core.list_namespaced_pod(name).items}
        return left == {"held"}

    wait_for(emptied, "everything but the held ConfigMap to be deleted")
    ns = core.read_namespace(name)
    assert ns.metadata.deletion_timestamp is not None and ns.status.phase == "Terminating"
    assert core.read_namespaced_config_map("held", name).metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_config_map(name, {"metadata": {"name": "late"}})
    assert refused.value.status == 403 and "being terminated" in refused.value.body
    core.patch_namespaced_config_map("held", name, {"metadata": {"finalizers": None}})
    wait_for(lambda: _missing(core.read_namespace, name), "the namespace to be removed")
