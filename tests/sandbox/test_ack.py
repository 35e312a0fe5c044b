"""The sandbox's ACK OpenAPI and ECS/ESS fleet, driven through the real SDKs over loopback sockets.

Classic SDK: ``aliyunsdkcore.AcsClient`` + ``CommonRequest`` (node-pool calls) and ``aliyunsdkcs``'s
``DescribeClusterNodesRequest``. Current SDK (ACS3-HMAC-SHA256): ``alibabacloud_cs20151215`` when installed.
Waits poll with a deadline; nothing asserts wall-clock durations.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from email.utils import formatdate

import httpx
import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest
from aliyunsdkcs.request.v20151215.DescribeClusterNodesRequest import DescribeClusterNodesRequest
from polling import wait_for

from clients.ack import BODY_PREFIX, UNKNOWN_SERVER_ERROR, parse_error_body

GPU_TYPES = ["ecs.gn6i-c4g1.xlarge", "ecs.gn7i-c8g1.2xlarge", "ecs.gn6i-c8g1.2xlarge"]


class Cs:
    """A thin caller of the ACK OpenAPI with the classic SDK (what tasks/ use)."""

    def __init__(self, info: dict, secret: str | None = None, ak: str | None = None) -> None:
        self.info = info
        self.host = info["cs_endpoint"].split("//", 1)[1]
        self.cluster_id = info["cluster_id"]
        self.client = AcsClient(ak or info["access_key_id"], secret or info["access_key_secret"], info["region"],
                                auto_retry=False)

    def request(self, method: str, uri: str, body=None, query=None, raw: bytes | None = None, **paths):
        r = CommonRequest(domain=self.host, version="2015-12-15", uri_pattern=uri, product="CS")
        r.set_protocol_type("http")
        r.set_method(method)
        r.add_path_param("ClusterId", paths.pop("ClusterId", self.cluster_id))
        for k, v in paths.items():
            r.add_path_param(k, v)
        for k, v in (query or {}).items():
            r.add_query_param(k, v)
        if body is not None or raw is not None:
            r.set_content_type("application/json")
            r.set_content(raw if raw is not None else json.dumps(body).encode())
        return r

    def call(self, method: str, uri: str, body=None, query=None, raw: bytes | None = None, **paths):
        return json.loads(self.client.do_action_with_exception(self.request(method, uri, body, query, raw, **paths)))

    # node pools
    def create(self, body: dict) -> dict:
        return self.call("POST", "/clusters/[ClusterId]/nodepools", body)

    def detail(self, np: str) -> dict:
        return self.call("GET", "/clusters/[ClusterId]/nodepools/[NP]", NP=np)

    def pools(self, name: str | None = None) -> list[dict]:
        return self.call("GET", "/clusters/[ClusterId]/nodepools", query={"NodepoolName": name} if name else None)[
            "nodepools"]

    def scale(self, np: str, count: int) -> dict:
        return self.call("POST", "/clusters/[ClusterId]/nodepools/[NP]", {"count": count}, NP=np)

    def modify(self, np: str, body: dict) -> dict:
        return self.call("PUT", "/clusters/[ClusterId]/nodepools/[NP]", body, NP=np)

    def delete(self, np: str, force: bool) -> dict:
        return self.call("DELETE", "/clusters/[ClusterId]/nodepools/[NP]", query={"force": str(force).lower()}, NP=np)

    def task(self, task_id: str) -> dict:
        return self.call("GET", "/tasks/[T]", T=task_id)

    def nodes(self, np: str | None = None, **query) -> dict:
        """DescribeClusterNodes through aliyun-python-sdk-cs's own request class."""
        req = DescribeClusterNodesRequest()
        req.set_endpoint(self.host)
        req.set_protocol_type("http")
        req.set_ClusterId(self.cluster_id)
        if np:
            req.set_nodepool_id(np)
        req.set_pageSize(query.pop("pageSize", 100))
        for k, v in query.items():
            req.add_query_param(k, v)
        return json.loads(self.client.do_action_with_exception(req))

    def wait_task(self, task_id: str, timeout: float = 60.0) -> dict:
        """The task once it has left ``running`` (success or fail); fails with the last state seen."""
        return wait_for(lambda: (t := self.task(task_id))["state"] != "running" and t,
                        f"task {task_id} to finish", timeout=timeout)


def spot_pool(name: str, **sg) -> dict:
    body = {
        "nodepool_info": {"name": name, "type": "ess"},
        "scaling_group": {
            "instance_types": GPU_TYPES[:2], "vswitch_ids": ["vsw-sandbox0a", "vsw-sandbox0b"],
            "instance_charge_type": "PostPaid", "spot_strategy": "SpotAsPriceGo", "multi_az_policy": "COST_OPTIMIZED",
            "on_demand_base_capacity": 0, "on_demand_percentage_above_base_capacity": 30,
            "spot_instance_pools": 2, "compensate_with_on_demand": True, "system_disk_category": "cloud_essd",
            "system_disk_size": 120, "key_pair": "sandbox-key",
        },
        "auto_scaling": {"enable": True, "min_instances": 0, "max_instances": 10, "type": "spot"},
        "kubernetes_config": {"labels": [{"key": "inference", "value": "tensorflow"}], "runtime": "containerd"},
    }
    body["scaling_group"].update(sg)
    return body


def mix_of(nodes: list[dict]) -> tuple[int, int]:
    payg = [n for n in nodes if n["instance_charge_type"] == "PostPaid" and n["spot_strategy"] == "NoSpot"]
    spot = [n for n in nodes if n["spot_strategy"] in ("SpotAsPriceGo", "SpotWithPriceLimit")]
    return len(payg), len(spot)


@dataclass
class AckErr:
    http_status: int
    error_code: str
    message: str
    request_id: str | None


def server_error(fn, *args, **kw) -> AckErr:
    """The error as ACK sent it. The classic SDK reads only capitalised keys, so an ACK body (lower-case ``code``)
    arrives as ``SDK.UnknownServerError`` with the body in the message; it is read the way the flow reads it."""
    with pytest.raises(ServerException) as exc:
        fn(*args, **kw)
    e = exc.value
    assert e.error_code == UNKNOWN_SERVER_ERROR and e.message.startswith(BODY_PREFIX), (e.error_code, e.message)
    code, message, rid = parse_error_body(e.message[len(BODY_PREFIX):])
    return AckErr(e.http_status, code, message or "", rid)


def wait_nodes(cs: Cs, np: str, n: int, timeout: float = 60.0) -> list[dict]:
    """The pool's running nodes once there are exactly ``n``; fails with the last count seen."""
    return wait_for(lambda: len(nodes := cs.nodes(np, state="running")["nodes"]) == n and nodes,
                    f"{n} running nodes in {np}", timeout=timeout,
                    state=lambda: len(cs.nodes(np, state="running")["nodes"]))


def succeed(cs: Cs, answer: dict) -> None:
    """Wait for the task of a Scale/Modify answer; it must end in success."""
    assert cs.wait_task(answer["task_id"])["state"] == "success"


@pytest.fixture(scope="module")
def cs(sandbox_info) -> Cs:
    return Cs(sandbox_info)


# ---- cluster, default pool, lifecycle --------------------------------------------------------------------------
def test_cluster_detail_and_default_pool(cs: Cs):
    detail = cs.call("GET", "/clusters/[ClusterId]")
    assert detail["cluster_id"] == cs.cluster_id and detail["region_id"] == cs.info["region"]
    assert detail["state"] == "running"
    (default,) = [p for p in cs.pools() if p["nodepool_info"]["is_default"]]
    assert default["nodepool_info"]["name"] == "default-nodepool"
    assert default["status"]["state"] == "active" and default["status"]["total_nodes"] == 2
    nodes = cs.nodes(default["nodepool_info"]["nodepool_id"])["nodes"]
    assert {(n["instance_type"], n["instance_charge_type"], n["spot_strategy"]) for n in nodes} == {
        ("ecs.g7.xlarge", "PostPaid", "NoSpot")}


def test_pool_lifecycle_initial_to_active_with_task_polling(cs: Cs):
    body = spot_pool("lifecycle", spot_strategy="NoSpot", on_demand_percentage_above_base_capacity=100)
    body["auto_scaling"].update(min_instances=2, type="cpu")
    created = cs.create(body)
    assert created["nodepool_id"].startswith("np") and created["task_id"] and created["request_id"]
    np = created["nodepool_id"]
    first = cs.detail(np)
    assert first["status"]["state"] in ("initial", "scaling")  # initial lasts 1.2 s here: a loaded machine may miss it
    assert cs.task(created["task_id"])["state"] == "running"
    seen = [first["status"]["state"]]

    def task_done() -> bool:
        state = cs.detail(np)["status"]["state"]
        if state != seen[-1]:
            seen.append(state)
        return cs.task(created["task_id"])["state"] != "running"

    wait_for(task_done, "the create task to finish", timeout=60, interval=0.05, state=lambda: seen)
    task = cs.task(created["task_id"])
    assert task["state"] == "success", task
    if (state := cs.detail(np)["status"]["state"]) != seen[-1]:  # the task can finish between two reads
        seen.append(state)
    assert task["target"] == {"id": np, "type": "nodepool"} and task["stages"]
    # the states seen by polling come in lifecycle order (a short one can fall between two polls); the task's
    # stages record both phases: creating the pool, then scaling it to its minimum
    lifecycle = ["initial", "scaling", "active"]
    assert seen == sorted(seen, key=lifecycle.index) and seen[-1] == "active", seen
    assert [(s_["message"], s_["state"]) for s_ in task["stages"]][1:] == [("ScaleNodes", "success")], task["stages"]
    detail = cs.detail(np)
    # detail echoes the create body with defaults filled, plus the server-side fields
    assert detail["nodepool_info"]["nodepool_id"] == np and detail["nodepool_info"]["region_id"] == cs.info["region"]
    assert detail["nodepool_info"]["is_default"] is False and detail["nodepool_info"]["created"]
    assert detail["scaling_group"]["scaling_group_id"].startswith("asg-")
    assert detail["scaling_group"]["instance_types"] == GPU_TYPES[:2]
    assert detail["scaling_group"]["security_group_ids"] == []  # default filled
    assert detail["kubernetes_config"]["labels"] == [{"key": "inference", "value": "tensorflow"}]
    assert detail["status"]["total_nodes"] == detail["status"]["healthy_nodes"] == 2
    assert [p["nodepool_info"]["nodepool_id"] for p in cs.pools("lifecycle")] == [np]


def test_ten_instances_at_30_percent_hold_3_payg_and_7_spot_and_scale_in_keeps_the_mix(cs: Cs):
    np = cs.create(spot_pool("mix-ten"))["nodepool_id"]
    wait_for(lambda: cs.detail(np)["status"]["state"] != "initial", "the pool to leave 'initial'", timeout=30,
             interval=0.05)
    succeed(cs, cs.scale(np, 10))
    nodes = cs.nodes(np)["nodes"]
    assert len(nodes) == 10
    assert mix_of(nodes) == (3, 7)
    spot_types = sorted(n["instance_type"] for n in nodes if n["spot_strategy"] != "NoSpot")
    counts = sorted(spot_types.count(t) for t in set(spot_types))
    assert counts == [3, 4]  # spread evenly over the two spot pools
    status = cs.detail(np)["status"]
    assert status["state"] == "active" and status["total_nodes"] == 10
    assert status["conditions"] == []  # ACK documents no mix condition: the sandbox invents none (issue 12)
    # paging
    page = cs.nodes(np, pageSize=3, pageNumber=4)
    assert page["page"] == {"page_number": 4, "page_size": 3, "total_count": 10} and len(page["nodes"]) == 1
    # scale in to 7 by lowering max_instances: the mix follows the rule at the new size
    succeed(cs, cs.modify(np, {"auto_scaling": {"max_instances": 7}}))
    nodes = cs.nodes(np)["nodes"]
    assert mix_of(nodes) == (3, 4)


def test_seven_instances_at_30_percent_hold_3_payg_and_4_spot(cs: Cs):
    body = spot_pool("mix-seven")
    body["auto_scaling"].update(min_instances=7)
    created = cs.create(body)
    assert cs.wait_task(created["task_id"])["state"] == "success"
    assert mix_of(cs.nodes(created["nodepool_id"])["nodes"]) == (3, 4)


# ---- stock: compensation and shortfall ---------------------------------------------------------------------------
def _exhaust_spot(sb) -> None:
    fleet = sb.services.fleet
    for t in GPU_TYPES[:2]:
        for z in sb.info["zones"]:
            fleet.set_spot_stock(t, z, 0)


def test_spot_stock_exhausted_with_compensation_fills_with_payg_and_says_why(fresh_sandbox):
    cs = Cs(fresh_sandbox.info)
    _exhaust_spot(fresh_sandbox)
    body = spot_pool("compensated")
    body["auto_scaling"].update(min_instances=10)
    created = cs.create(body)
    assert cs.wait_task(created["task_id"])["state"] == "success"
    nodes = cs.nodes(created["nodepool_id"])["nodes"]
    assert mix_of(nodes) == (10, 0)
    # what ACK shows of it: the instances' billing; the reasons are ESS scaling activities, not ACK conditions
    assert cs.detail(created["nodepool_id"])["status"]["conditions"] == []
    acts = fresh_sandbox.services.fleet.activities(created["nodepool_id"])
    assert any("spot" in (a.status_message or "").lower() for a in acts), [a.status_message for a in acts]


def test_spot_stock_exhausted_without_compensation_reports_the_shortfall(fresh_sandbox):
    cs = Cs(fresh_sandbox.info)
    _exhaust_spot(fresh_sandbox)
    body = spot_pool("short", compensate_with_on_demand=False)
    body["auto_scaling"].update(min_instances=10)
    created = cs.create(body)
    np = created["nodepool_id"]
    task = cs.wait_task(created["task_id"])
    assert task["state"] == "fail"
    assert task["error"]["code"] == "OperationDenied.NoStock"
    assert mix_of(cs.nodes(np)["nodes"]) == (3, 0)
    status = cs.detail(np)["status"]
    assert status["state"] == "active" and status["total_nodes"] == 3 and status["conditions"] == []
    # the scaling activity says "partial success" and why
    (act,) = [a for a in fresh_sandbox.services.fleet.activities(np) if a.created_instances]
    assert act.status_code == "Warning" and "Partially successful" in act.status_message
    # stock comes back: ESS retries and the pool reaches its size with the configured mix
    fleet = fresh_sandbox.services.fleet
    for t in GPU_TYPES[:2]:
        for z in fresh_sandbox.info["zones"]:
            fleet.set_spot_stock(t, z, 100)
    assert mix_of(wait_nodes(cs, np, 10)) == (3, 7)


@pytest.fixture
def quick_reclaim_sandbox(tmp_path):
    """A sandbox whose spot reclaim notice is 120 s instead of 300 s (timings are data: sandbox/timings.py)."""
    from sandbox.runner import Sandbox

    sb = Sandbox(tmp_path / "sb", speed=50.0, options={"timings": {"spot_reclaim_notice": 120}})
    sb.start()
    yield sb
    sb.stop()


def test_spot_reclaim_notice_remedy_and_release(quick_reclaim_sandbox):
    fresh_sandbox = quick_reclaim_sandbox
    cs = Cs(fresh_sandbox.info)
    fleet = fresh_sandbox.services.fleet
    body = spot_pool("reclaim", on_demand_percentage_above_base_capacity=0, spot_instance_remedy=True)
    body["auto_scaling"].update(min_instances=2)
    created = cs.create(body)
    assert cs.wait_task(created["task_id"])["state"] == "success"
    np = created["nodepool_id"]
    victim = fleet.instances(np)[0]
    noticed = fleet.reclaim(victim.instance_id)
    assert 0 < noticed.reclaim_at - fresh_sandbox.ctx.clock.now() <= 120
    # remedy: a replacement is launched at the notice, while the victim still runs
    live = fleet.instances(np)
    assert len(live) == 3 and any(i.instance_id == victim.instance_id and i.status == "Running" for i in live)
    wait_for(lambda: fleet.instance(victim.instance_id).status == "Released", "the reclaimed instance released",
             timeout=60, state=lambda: fleet.instance(victim.instance_id).status)
    assert [n["instance_id"] for n in cs.nodes(np)["nodes"] if n["instance_id"] == victim.instance_id] == []
    assert len(wait_nodes(cs, np, 2)) == 2


# ---- delete, restart -------------------------------------------------------------------------------------------
def test_delete_pool_releases_its_instances(cs: Cs, sandbox):
    body = spot_pool("to-delete", spot_strategy="NoSpot")
    body["auto_scaling"] = {"enable": False}
    body["scaling_group"]["desired_size"] = 2
    created = cs.create(body)
    np = created["nodepool_id"]
    assert cs.wait_task(created["task_id"])["state"] == "success"
    ids = [n["instance_id"] for n in cs.nodes(np)["nodes"]]
    assert len(ids) == 2
    err = server_error(cs.delete, np, force=False)
    assert err.http_status == 400 and err.error_code == "ErrorNodePoolNotEmpty"
    out = cs.delete(np, force=True)
    assert out["task_id"] and out["request_id"]
    assert cs.detail(np)["status"]["state"] == "deleting"
    assert cs.wait_task(out["task_id"])["state"] == "success"
    err = server_error(cs.detail, np)
    assert err.http_status == 404 and err.error_code == "ErrorNodePoolNotFound"
    assert cs.nodes(None, instanceIds=",".join(ids))["nodes"] == []
    fleet = sandbox.services.fleet
    assert all(fleet.instance(i).status == "Released" for i in ids)
    assert fleet.scaling_group(np) is None


def test_state_survives_restart(tmp_path):
    from sandbox.runner import Sandbox

    sb = Sandbox(tmp_path / "sb", speed=50.0)
    info = sb.start()
    try:
        cs = Cs(info)
        body = spot_pool("persistent")
        body["auto_scaling"].update(min_instances=4)
        created = cs.create(body)
        assert cs.detail(created["nodepool_id"])["status"]["state"] == "initial"
    finally:
        sb.stop()
    sb2 = Sandbox(tmp_path / "sb", speed=50.0)
    info2 = sb2.start()
    try:
        assert (info2["cluster_id"], info2["access_key_id"]) == (info["cluster_id"], info["access_key_id"])
        cs = Cs(info2)
        assert cs.wait_task(created["task_id"])["state"] == "success"  # the lifecycle continued after restart
        nodes = cs.nodes(created["nodepool_id"])["nodes"]
        assert mix_of(nodes) == (2, 2)
        ids = sorted(n["instance_id"] for n in nodes)
    finally:
        sb2.stop()
    sb3 = Sandbox(tmp_path / "sb", speed=50.0)
    info3 = sb3.start()
    try:
        cs = Cs(info3)
        assert sorted(n["instance_id"] for n in cs.nodes(created["nodepool_id"])["nodes"]) == ids
        assert len(cs.pools()) == 2  # default + persistent
    finally:
        sb3.stop()


# ---- modify, scale validation ------------------------------------------------------------------------------------
def test_modify_is_a_partial_update(cs: Cs):
    created = cs.create(spot_pool("modify-me"))
    np = created["nodepool_id"]
    cs.wait_task(created["task_id"])
    out = cs.modify(np, {"kubernetes_config": {"labels": [{"key": "inference", "value": "tf2"}]},
                         "scaling_group": {"on_demand_percentage_above_base_capacity": 50},
                         "auto_scaling": {"min_instances": 1, "max_instances": 5}})
    assert out["nodepool_id"] == np and out["task_id"]
    assert cs.detail(np)["status"]["state"] == "updating"
    assert cs.wait_task(out["task_id"])["state"] == "success"
    d = cs.detail(np)
    assert d["kubernetes_config"]["labels"] == [{"key": "inference", "value": "tf2"}]
    assert d["scaling_group"]["on_demand_percentage_above_base_capacity"] == 50
    assert d["scaling_group"]["spot_strategy"] == "SpotAsPriceGo"  # untouched fields kept
    assert (d["auto_scaling"]["min_instances"], d["auto_scaling"]["max_instances"]) == (1, 5)
    assert d["status"]["total_nodes"] == 1
    err = server_error(cs.modify, np, {"auto_scaling": {"type": "gpu"}})
    assert err.error_code == "InvalidParameter" and "auto_scaling.type" in err.message
    err = server_error(cs.modify, np, {"nodepool_info": {"name": "default-nodepool"}})
    assert err.error_code == "InvalidParameter" and "nodepool_info.name" in err.message
    err = server_error(cs.scale, np, 10)
    assert err.error_code == "InvalidParameter" and "max_instances" in err.message


# ---- the pool's size belongs to its ESS scaling group (the cluster-autoscaler changes it there) ------------------
# The cluster-autoscaler never scales down here: it would race the sizes these tests set.
NO_CA_SCALE_DOWN = {"timings": {"ca_scale_down_unneeded": 1e6, "ca_scale_down_delay_after_add": 1e6}}


@pytest.fixture
def sized_sandbox(tmp_path):
    from sandbox.runner import Sandbox

    sb = Sandbox(tmp_path / "sb", speed=50.0, options=NO_CA_SCALE_DOWN)
    sb.start()
    yield sb
    sb.stop()


def _size(cs: Cs, np: str) -> tuple[int, int, int]:
    """(DescribeClusterNodePoolDetail desired_size, the same from DescribeClusterNodePools, nodes not released)."""
    (listed,) = [p for p in cs.pools() if p["nodepool_info"]["nodepool_id"] == np]
    return (cs.detail(np)["scaling_group"]["desired_size"], listed["scaling_group"]["desired_size"],
            len(cs.nodes(np)["nodes"]))


def _wait_released(cs: Cs, np: str, n: int, timeout: float = 60.0) -> int:
    """Wait until the pool lists ``n`` nodes in any state (a removed instance is listed until it is released)."""
    wait_for(lambda: len(cs.nodes(np)["nodes"]) == n, f"{n} nodes listed in {np}", timeout=timeout,
             state=lambda: len(cs.nodes(np)["nodes"]))
    return n


def _autoscaled_pool(cs: Cs, name: str) -> str:
    body = spot_pool(name, spot_strategy="NoSpot", on_demand_percentage_above_base_capacity=100)
    body["auto_scaling"].update(min_instances=1, max_instances=5, type="cpu")
    created = cs.create(body)
    assert cs.detail(created["nodepool_id"])["scaling_group"]["desired_size"] == 1  # initial: the size to come
    assert cs.wait_task(created["task_id"])["state"] == "success"
    return created["nodepool_id"]


def test_autoscaler_sized_pool_keeps_its_size_through_modify_and_scale(sized_sandbox):
    cs = Cs(sized_sandbox.info)
    fleet = sized_sandbox.services.fleet
    np = _autoscaled_pool(cs, "ca-sized")
    assert _size(cs, np) == (1, 1, 1)
    # the cluster-autoscaler's scale-up: the ESS group's desired capacity, not through ACK
    fleet.set_desired(np, 3)
    assert len(wait_nodes(cs, np, 3)) == 3
    assert _size(cs, np) == (3, 3, 3)
    # a modify that does not touch the size keeps what the autoscaler set (no scale-in to the old 1)
    succeed(cs, cs.modify(np, {"kubernetes_config": {"labels": [{"key": "inference", "value": "tf2"}]}}))
    assert _size(cs, np) == (3, 3, 3)
    succeed(cs, cs.modify(np, {"auto_scaling": {"max_instances": 4}}))
    assert _size(cs, np) == (3, 3, 3)
    assert fleet.scaling_group(np).desired == 3
    # ScaleClusterNodePool adds to the group's current size
    succeed(cs, cs.scale(np, 1))
    assert _size(cs, np) == (4, 4, 4)
    err = server_error(cs.scale, np, 1)
    assert err.error_code == "InvalidParameter" and "5 nodes" in err.message and "max_instances" in err.message
    # a new max below the current size trims it (ESS ModifyScalingGroup), a new min above it raises it
    succeed(cs, cs.modify(np, {"auto_scaling": {"max_instances": 2}}))
    assert _size(cs, np) == (2, 2, 2)
    succeed(cs, cs.modify(np, {"auto_scaling": {"min_instances": 3, "max_instances": 5}}))
    assert _size(cs, np) == (3, 3, 3)
    # the autoscaler's scale-down (ESS RemoveInstances lowering the desired capacity), then a modify of labels
    succeed(cs, cs.modify(np, {"auto_scaling": {"min_instances": 1}}))
    victim = fleet.instances(np)[0].instance_id
    assert fleet.remove_instances(np, [victim], reason="cluster-autoscaler scale-down") == [victim]
    assert _wait_released(cs, np, 2) == 2
    succeed(cs, cs.modify(np, {"kubernetes_config": {"labels": [{"key": "inference", "value": "tf3"}]}}))
    assert _size(cs, np) == (2, 2, 2)


def test_pool_without_auto_scaling_reads_its_size_from_the_group(sized_sandbox):
    cs = Cs(sized_sandbox.info)
    fleet = sized_sandbox.services.fleet
    body = spot_pool("fixed-size", spot_strategy="NoSpot", on_demand_percentage_above_base_capacity=100)
    body["auto_scaling"] = {"enable": False}
    body["scaling_group"]["desired_size"] = 2
    created = cs.create(body)
    np = created["nodepool_id"]
    assert cs.wait_task(created["task_id"])["state"] == "success"
    assert _size(cs, np) == (2, 2, 2)
    victim = fleet.instances(np)[0].instance_id
    assert fleet.remove_instances(np, [victim]) == [victim]
    assert _wait_released(cs, np, 1) == 1
    assert _size(cs, np) == (1, 1, 1)
    succeed(cs, cs.scale(np, 1))
    assert _size(cs, np) == (2, 2, 2)
    succeed(cs, cs.modify(np, {"kubernetes_config": {"labels": [{"key": "tier", "value": "gold"}]}}))
    assert _size(cs, np) == (2, 2, 2)
    succeed(cs, cs.modify(np, {"scaling_group": {"desired_size": 3}}))
    assert _size(cs, np) == (3, 3, 3)


def test_autoscaler_sized_pool_keeps_its_size_across_restart(tmp_path):
    from sandbox.runner import Sandbox

    sb = Sandbox(tmp_path / "sb", speed=50.0, options=NO_CA_SCALE_DOWN)
    info = sb.start()
    try:
        cs = Cs(info)
        np = _autoscaled_pool(cs, "ca-persistent")
        sb.services.fleet.set_desired(np, 3)
        assert len(wait_nodes(cs, np, 3)) == 3
    finally:
        sb.stop()
    sb2 = Sandbox(tmp_path / "sb", speed=50.0, options=NO_CA_SCALE_DOWN)
    info2 = sb2.start()
    try:
        cs = Cs(info2)
        assert _size(cs, np) == (3, 3, 3)
        task = cs.modify(np, {"auto_scaling": {"max_instances": 6}})["task_id"]
        assert cs.wait_task(task)["state"] == "success"
        assert _size(cs, np) == (3, 3, 3)
        task = cs.scale(np, 2)["task_id"]
        assert cs.wait_task(task)["state"] == "success"
        assert _size(cs, np) == (5, 5, 5)
    finally:
        sb2.stop()


# ---- validation: every rule names its field, nothing is created ------------------------------------------------
def _sg(**kw):
    return lambda b: b["scaling_group"].update(kw)


def _drop(section, key):
    return lambda b: b[section].pop(key)


BAD_BODIES = [
    ("name missing", _drop("nodepool_info", "name"), "nodepool_info.name"),
    ("name bad chars", lambda b: b["nodepool_info"].update(name="bad name!"), "nodepool_info.name"),
    ("duplicate name", lambda b: b["nodepool_info"].update(name="default-nodepool"), "nodepool_info.name"),
    ("no instance types", _sg(instance_types=[]), "scaling_group.instance_types"),
    ("eleven instance types", _sg(instance_types=["ecs.g7.xlarge"] * 11), "scaling_group.instance_types"),
    ("unknown instance type", _sg(instance_types=["ecs.g7.xlarge", "ecs.nope.xlarge"]),
     "scaling_group.instance_types[1]"),
    ("no vswitch", _sg(vswitch_ids=[]), "scaling_group.vswitch_ids"),
    ("nine vswitches", _sg(vswitch_ids=[f"vsw-x{i}" for i in range(9)]), "scaling_group.vswitch_ids"),
    ("vswitch format", _sg(vswitch_ids=["subnet-1"]), "scaling_group.vswitch_ids[0]"),
    ("charge type", _sg(instance_charge_type="Spot"), "scaling_group.instance_charge_type"),
    ("spot strategy", _sg(spot_strategy="Cheap"), "scaling_group.spot_strategy"),
    ("price limit not a list", _sg(spot_price_limit={"instance_type": "x", "price_limit": "1"}),
     "scaling_group.spot_price_limit"),
    ("price limit type not in pool", _sg(spot_strategy="SpotWithPriceLimit", spot_price_limit=[
        {"instance_type": "ecs.g7.xlarge", "price_limit": "1.0"}]), "scaling_group.spot_price_limit[0].instance_type"),
    ("price limit required", _sg(spot_strategy="SpotWithPriceLimit"), "scaling_group.spot_price_limit"),
    ("spot pools 0", _sg(spot_instance_pools=0), "scaling_group.spot_instance_pools"),
    ("spot pools 11", _sg(spot_instance_pools=11), "scaling_group.spot_instance_pools"),
    ("base 1001", _sg(on_demand_base_capacity=1001), "scaling_group.on_demand_base_capacity"),
    ("percentage 101", _sg(on_demand_percentage_above_base_capacity=101),
     "scaling_group.on_demand_percentage_above_base_capacity"),
    ("percentage as string", _sg(on_demand_percentage_above_base_capacity="30"),
     "scaling_group.on_demand_percentage_above_base_capacity"),
    ("multi az policy", _sg(multi_az_policy="CHEAPEST"), "scaling_group.multi_az_policy"),
    ("disk category", _sg(system_disk_category="hdd"), "scaling_group.system_disk_category"),
    ("disk too small", _sg(system_disk_size=10), "scaling_group.system_disk_size"),
    ("disk too big", _sg(system_disk_size=4096), "scaling_group.system_disk_size"),
    ("key pair and password", _sg(login_password="Passw0rd!x"), "scaling_group.key_pair"),
    ("neither key pair nor password", _drop("scaling_group", "key_pair"), "scaling_group.key_pair"),
    ("weak password", lambda b: (b["scaling_group"].pop("key_pair"), b["scaling_group"].update(
        login_password="password")), "scaling_group.login_password"),
    ("spot with prepaid", _sg(instance_charge_type="PrePaid"), "scaling_group.spot_strategy"),
    ("min above max", lambda b: b["auto_scaling"].update(min_instances=5, max_instances=2),
     "auto_scaling.min_instances"),
    ("max missing", _drop("auto_scaling", "max_instances"), "auto_scaling.max_instances"),
    ("max too large", lambda b: b["auto_scaling"].update(max_instances=5000), "auto_scaling.max_instances"),
    ("auto scaling type", lambda b: b["auto_scaling"].update(type="fast"), "auto_scaling.type"),
    ("enable as string", lambda b: b["auto_scaling"].update(enable="true"), "auto_scaling.enable"),
    ("label key", lambda b: b["kubernetes_config"].update(labels=[{"key": "-bad", "value": "x"}]),
     "kubernetes_config.labels[0].key"),
    ("labels as map", lambda b: b["kubernetes_config"].update(labels={"inference": "tensorflow"}),
     "kubernetes_config.labels"),
    ("taint effect", lambda b: b["kubernetes_config"].update(taints=[{"key": "gpu", "effect": "Never"}]),
     "kubernetes_config.taints[0].effect"),
    ("scaling group missing", lambda b: b.pop("scaling_group"), "scaling_group"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_validation_errors_name_the_field_and_create_nothing(cs: Cs, case, mutate, field):
    before = len(cs.pools())
    body = spot_pool(f"bad-{uuid.uuid4().hex[:8]}")
    mutate(body)
    err = server_error(cs.create, body)
    assert err.http_status == 400, err
    assert err.error_code == "InvalidParameter", err
    assert field in err.message, err.message
    assert err.request_id
    assert len(cs.pools()) == before


# ---- wire errors: never a 500 ------------------------------------------------------------------------------------
def _signed(cs: Cs, method: str, uri: str, body: bytes | None = None, **paths):
    """Headers and URL exactly as the classic SDK signs them (its own composer, not the sandbox's)."""
    r = cs.request(method, uri, raw=body, **paths)
    if body is not None:
        r.set_content(body)
    r.set_accept_format("JSON")
    r.trans_to_acs_request()
    headers = r.get_signed_header(cs.info["region"], cs.info["access_key_id"], cs.info["access_key_secret"])
    headers = {**r.get_headers(), **headers}
    url = cs.info["cs_endpoint"] + r.get_url(cs.info["region"], cs.info["access_key_id"],
                                             cs.info["access_key_secret"])
    return url, {k: str(v) for k, v in headers.items()}


def _assert_error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"code", "message", "requestId"} and body["code"] == code, body  # ROA: lower-case keys
    assert resp.headers["x-acs-request-id"] == body["requestId"]
    return body


def test_unsigned_request_is_rejected(cs: Cs):
    resp = httpx.get(f"{cs.info['cs_endpoint']}/clusters/{cs.cluster_id}/nodepools")
    _assert_error(resp, 400, "MissingAuthorization")
    resp = httpx.get(f"{cs.info['cs_endpoint']}/clusters/{cs.cluster_id}/nodepools",
                     headers={"Authorization": "Bearer abc"})
    _assert_error(resp, 400, "IncompleteSignature")


def test_wrong_secret_and_unknown_key(cs: Cs):
    err = server_error(Cs(cs.info, secret="x" * 30).pools)
    assert (err.http_status, err.error_code) == (400, "SignatureDoesNotMatch")
    err = server_error(Cs(cs.info, ak="LTAI" + "0" * 20).pools)
    assert (err.http_status, err.error_code) == (404, "InvalidAccessKeyId.NotFound")


def test_tampered_body_stale_date_and_malformed_json(cs: Cs):
    body = json.dumps(spot_pool("tampered")).encode()
    url, headers = _signed(cs, "POST", "/clusters/[ClusterId]/nodepools", body)
    _assert_error(httpx.post(url, headers=headers, content=body.replace(b"tampered", b"tampereX")), 400,
                  "ContentMD5NotMatched")
    stale = {**headers, "Date": formatdate(time.time() - 3600, usegmt=True)}
    _assert_error(httpx.post(url, headers=stale, content=body), 400, "InvalidTimeStamp.Expired")
    # the same request, untouched, is accepted (the composer above is the SDK's own)
    assert httpx.post(url, headers=headers, content=body).status_code == 200
    err = server_error(cs.call, "POST", "/clusters/[ClusterId]/nodepools", raw=b"{not json")
    assert (err.http_status, err.error_code) == (400, "InvalidParameter") and "JSON" in err.message
    err = server_error(cs.call, "POST", "/clusters/[ClusterId]/nodepools", raw=b"[1, 2]")
    assert (err.http_status, err.error_code) == (400, "InvalidParameter")


def test_not_found_errors(cs: Cs):
    err = server_error(cs.call, "GET", "/clusters/[ClusterId]/nodepools", ClusterId="c" + "0" * 32)
    assert (err.http_status, err.error_code) == (404, "ErrorClusterNotFound")
    err = server_error(cs.detail, "np" + "0" * 32)
    assert (err.http_status, err.error_code) == (404, "ErrorNodePoolNotFound")
    err = server_error(cs.task, "T-000000")
    assert err.http_status == 404
    err = server_error(cs.call, "GET", "/clusters/[ClusterId]/no-such-thing")
    assert (err.http_status, err.error_code) == (404, "InvalidAction.NotFound")
    err = server_error(cs.nodes, None, pageSize=1000)
    assert (err.http_status, err.error_code) == (400, "InvalidParameter") and "pageSize" in err.message


def test_user_kubeconfig(cs: Cs):
    out = cs.call("GET", "/k8s/[ClusterId]/user_config", query={"TemporaryDurationMinutes": 60})
    assert "clusters" in out["config"] and out["expiration"]
    err = server_error(cs.call, "GET", "/k8s/[ClusterId]/user_config", query={"TemporaryDurationMinutes": 5})
    assert err.error_code == "InvalidParameter" and "TemporaryDurationMinutes" in err.message


# ---- the current SDK (ACS3-HMAC-SHA256) ----------------------------------------------------------------------
def test_acs3_signature_with_the_current_sdk(cs: Cs):
    cs_client = pytest.importorskip("alibabacloud_cs20151215.client")
    models = pytest.importorskip("alibabacloud_cs20151215.models")
    from alibabacloud_tea_openapi import models as open_api_models

    def client(secret: str):
        return cs_client.Client(open_api_models.Config(
            access_key_id=cs.info["access_key_id"], access_key_secret=secret, endpoint=cs.host, protocol="http",
            region_id=cs.info["region"]))

    c = client(cs.info["access_key_secret"])
    body = spot_pool("acs3-pool")
    req = models.CreateClusterNodePoolRequest().from_map(body)
    created = c.create_cluster_node_pool(cs.cluster_id, req).body
    assert created.nodepool_id and created.task_id
    detail = c.describe_cluster_node_pool_detail(cs.cluster_id, created.nodepool_id).body
    assert detail.nodepool_info.name == "acs3-pool" and detail.status.state == "initial"
    assert detail.scaling_group.on_demand_percentage_above_base_capacity == 30
    listed = c.describe_cluster_node_pools(cs.cluster_id, models.DescribeClusterNodePoolsRequest(
        nodepool_name="acs3-pool")).body
    assert [p.nodepool_info.nodepool_id for p in listed.nodepools] == [created.nodepool_id]
    nodes = c.describe_cluster_nodes(cs.cluster_id, models.DescribeClusterNodesRequest(page_size=5)).body
    assert nodes.page.page_size == 5 and nodes.nodes
    with pytest.raises(Exception) as exc:
        client("y" * 30).describe_cluster_node_pools(cs.cluster_id, models.DescribeClusterNodePoolsRequest())
    assert getattr(exc.value, "code", None) == "SignatureDoesNotMatch"
    with pytest.raises(Exception) as exc:
        c.describe_cluster_node_pool_detail(cs.cluster_id, "np" + "1" * 32)
    assert getattr(exc.value, "code", None) == "ErrorNodePoolNotFound"
    assert getattr(exc.value, "status_code", None) == 404
