"""The cluster-autoscaler's pure simulation: template nodes, the fit predicate, bin packing, least waste,
utilization and drainability (sandbox.autoscaler.simulate)."""

from __future__ import annotations

from sandbox.autoscaler import simulate as sim


def pod(name: str, cpu: str = "1", mem: str = "1Gi", gpu: int = 0, selector: dict | None = None,
        tolerations: list | None = None, owner: str | None = "ReplicaSet", ns: str = "default",
        annotations: dict | None = None, affinity: dict | None = None) -> dict:
    req = {"cpu": cpu, "memory": mem}
    if gpu:
        req["nvidia.com/gpu"] = str(gpu)
    spec: dict = {"containers": [{"name": "c", "image": "x", "resources": {"requests": req}}]}
    if selector:
        spec["nodeSelector"] = selector
    if tolerations:
        spec["tolerations"] = tolerations
    if affinity:
        spec["affinity"] = affinity
    meta: dict = {"name": name, "namespace": ns, "uid": f"uid-{name}", "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "o", "uid": "o1", "controller": True}]
    return {"metadata": meta, "spec": spec, "status": {"phase": "Pending"}}


GPU_POOL = {"nodepool_id": "np-gpu", "labels": [{"key": "inference", "value": "tensorflow"}], "taints": []}


def gpu_template(i: int = 0, itype: str = "ecs.gn6i-c4g1.xlarge", template: dict = GPU_POOL) -> dict:
    labels = sim.pool_template_labels(template, "cn-hangzhou", "c123", "SpotAsPriceGo")
    return sim.template_node(f"t-{i}", itype, labels, sim.pool_template_taints(template))


def test_smallest_type_is_the_template_type():
    assert sim.smallest_type(["ecs.gn6i-c16g1.4xlarge", "ecs.gn6i-c4g1.xlarge", "ecs.gn7i-c8g1.2xlarge"]) == \
        "ecs.gn6i-c4g1.xlarge"
    # fewer GPUs wins over fewer vCPUs; unknown types are ignored
    assert sim.smallest_type(["ecs.gn6i-c24g1.12xlarge", "ecs.gn6i-c24g1.6xlarge", "ecs.nope"]) == \
        "ecs.gn6i-c24g1.6xlarge"
    assert sim.smallest_type(["ecs.nope"]) is None


def test_template_node_carries_pool_labels_taints_and_allocatable():
    tmpl = {"nodepool_id": "np1", "labels": [{"key": "inference", "value": "tensorflow"}],
            "taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}
    node = gpu_template(template=tmpl)
    labels = node["metadata"]["labels"]
    assert labels["inference"] == "tensorflow"
    assert labels["alibabacloud.com/nodepool-id"] == "np1"
    assert labels["node.kubernetes.io/instance-type"] == "ecs.gn6i-c4g1.xlarge"
    assert node["spec"]["taints"] == [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    n = sim.SimNode(node)
    assert n.alloc["cpu"] < 4000 and n.alloc["nvidia.com/gpu"] == 1


def test_fit_predicate_selector_affinity_taints_resources():
    node = sim.SimNode(gpu_template())
    assert node.fits(pod("a", gpu=1, selector={"inference": "tensorflow"}))
    assert node.reasons(pod("b", gpu=1, selector={"inference": "pytorch"})) == \
        ["node(s) didn't match Pod's node affinity/selector"]
    assert node.reasons(pod("c", gpu=2)) == ["Insufficient nvidia.com/gpu"]
    assert "Insufficient cpu" in node.reasons(pod("d", cpu="8"))
    aff = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "inference", "operator": "In", "values": ["tensorflow", "onnx"]}]}]}}}
    assert node.fits(pod("e", affinity=aff))
    tainted = sim.SimNode(gpu_template(template={**GPU_POOL, "taints": [{"key": "gpu", "value": "yes",
                                                                          "effect": "NoSchedule"}]}))
    assert tainted.reasons(pod("f")) == ["node(s) had untolerated taint {gpu: yes}"]
    assert tainted.fits(pod("g", tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]))


def test_binpack_counts_nodes_and_respects_the_cap():
    pods = [pod(f"p{i}", cpu="500m", mem="1Gi", gpu=1) for i in range(5)]
    est = sim.binpack(pods, gpu_template, max_nodes=10)
    assert est.nodes == 5 and len(est.scheduled) == 5 and not est.unschedulable  # one GPU per node
    capped = sim.binpack(pods, gpu_template, max_nodes=3)
    assert capped.nodes == 3 and len(capped.scheduled) == 3 and len(capped.unschedulable) == 2
    small = [pod(f"s{i}", cpu="500m", mem="512Mi") for i in range(6)]
    est = sim.binpack(small, gpu_template, max_nodes=10)  # ~3.7 allocatable cores: 7 half-core pods per node
    assert est.nodes == 1
    too_big = sim.binpack([pod("huge", cpu="64")], gpu_template, max_nodes=10)
    assert too_big.nodes == 0 and len(too_big.unschedulable) == 1


def test_binpack_first_fit_decreasing_packs_big_pods_first():
    pods = [pod("s1", cpu="1"), pod("big", cpu="3"), pod("s2", cpu="1")]
    est = sim.binpack(pods, lambda i: gpu_template(i, "ecs.g7.xlarge"), max_nodes=10)
    # 3 + 1 cannot share a ~3.7-core node, 1 + 1 can: big alone, the two small together
    assert est.nodes == 2
    assert est.node_pods[0] == ["default/big"]


def test_least_waste_picks_the_tightest_fit_and_breaks_ties_by_name():
    pods = [pod(f"p{i}", cpu="3", mem="12Gi") for i in range(2)]
    small = sim.Option("np-small", 2, pods, gpu_template(0, "ecs.g7.xlarge"))  # 4 cpu / 16 GiB each
    big = sim.Option("np-big", 1, pods, gpu_template(0, "ecs.g7.4xlarge"))  # 16 cpu / 64 GiB
    assert small.waste() < big.waste()
    assert sim.least_waste([big, small]).group == "np-small"
    twin = sim.Option("np-a", 2, pods, gpu_template(0, "ecs.g7.xlarge"))
    assert sim.least_waste([small, twin]).group == "np-a"
    assert sim.least_waste([]) is None


def test_first_fit_filters_pods_that_fit_upcoming_nodes():
    nodes = [sim.SimNode(gpu_template(0)), sim.SimNode(gpu_template(1))]
    pods = [pod(f"p{i}", gpu=1, selector={"inference": "tensorflow"}) for i in range(3)]
    placed, left = sim.place_first_fit(pods, nodes)
    assert len(placed) == 2 and [p["metadata"]["name"] for p in left] == ["p2"]


def test_utilization_and_drainability():
    node = gpu_template()
    assert sim.utilization(node, [pod("a", gpu=1)]) == 1.0  # GPU nodes: GPU utilization only
    assert sim.utilization(node, [pod("a", cpu="3")]) == 0.0
    cpu_node = gpu_template(0, "ecs.g7.xlarge")
    u = sim.utilization(cpu_node, [pod("a", cpu="1", mem="1Gi")])
    assert 0.25 < u < 0.35
    assert sim.blocking_reason(pod("a")) is None
    assert sim.blocking_reason(pod("bare", owner=None)) == "NotReplicated"
    assert sim.blocking_reason(pod("ds", owner="DaemonSet")) is None
    assert sim.blocking_reason(pod("n", annotations={sim.SAFE_TO_EVICT: "false"})) == "NotSafeToEvictAnnotation"
    assert sim.blocking_reason(pod("y", owner=None, annotations={sim.SAFE_TO_EVICT: "true"})) is None
    assert sim.blocking_reason(pod("k", ns="kube-system")) == "UnmovableKubeSystemPod"
    assert [p["metadata"]["name"] for p in sim.pods_to_move([pod("a"), pod("ds", owner="DaemonSet")])] == ["a"]
    others = [sim.SimNode(gpu_template(1))]
    ok, _ = sim.can_move([pod("m", gpu=1)], others)
    assert ok
    ok, left = sim.can_move([pod("m2", gpu=1)], others)  # the only GPU is taken now
    assert not ok and left


def test_event_messages_have_upstream_shape():
    assert sim.triggered_message([("np1", 0, 2, 10)]) == "pod triggered scale-up: [{np1 0->2 (max: 10)}]"
    assert sim.not_trigger_message({"max node group size reached": 1,
                                    "node(s) didn't match Pod's node affinity/selector": 2}) == (
        "pod didn't trigger scale-up: 1 max node group size reached, "
        "2 node(s) didn't match Pod's node affinity/selector")
