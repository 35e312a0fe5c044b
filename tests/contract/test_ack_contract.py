"""The ACK contract, held against the official SDK models (``alibabacloud_cs20151215``), not against our sandbox.

Three properties, each checked with the official ``<Action>Request`` / ``<Action>ResponseBody`` models' own
``from_map``/``to_map`` (the code Alibaba Cloud generates from its API metadata):

1. every request the flow sends (JSON body, and query string) survives the official request model's
   ``from_map``/``to_map`` with no key lost (a key the model does not know is dropped by ``to_map``) and no value
   changed, recursively;
2. every response field the flow reads (its pydantic response shapes in ``tasks/ack_api.py``, the node-pool drift
   fields of ``tasks/nodepool.py`` and the keys read from plain dicts) exists in the official response model;
3. every response the sandbox gave to those requests (recorded by the sandbox's ACK service, sent through the
   flow's own client over a real socket) round-trips through the official response model with no unknown field.

A field in none of the official models fails the test. The requests are made by the flow's code: the node-pool
step (find, create, wait on the task, modify on drift, delete) and the client calls the other steps make.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
from alibabacloud_cs20151215 import models as cs_models
from alibabacloud_cs20151215.client import Client as CsClient

from blocks.alibaba import AlibabaCloudCredentials
from clients.ack import (
    AckApi,
    CreateNodePoolResult,
    Node,
    NodePool,
    NodePoolCondition,
    NodePoolStatus,
    TaskError,
    TaskInfo,
)
from core.spec import NodePoolSpec
from tasks.nodepool import IMMUTABLE_FIELDS, MUTABLE_FIELDS, delete_node_pool, ensure_node_pool

WAIT = {"timeout": 300.0, "poll_interval": 0.2, "max_poll_interval": 1.0}

# action -> (official request model or None, official response body model, SDK client method)
ACTIONS: dict[str, tuple[Any, Any, str]] = {
    "CreateClusterNodePool": (cs_models.CreateClusterNodePoolRequest, cs_models.CreateClusterNodePoolResponseBody,
                              "create_cluster_node_pool_with_options"),
    "DescribeClusterNodePools": (cs_models.DescribeClusterNodePoolsRequest,
                                 cs_models.DescribeClusterNodePoolsResponseBody,
                                 "describe_cluster_node_pools_with_options"),
    "DescribeClusterNodePoolDetail": (None, cs_models.DescribeClusterNodePoolDetailResponseBody,
                                      "describe_cluster_node_pool_detail_with_options"),
    "ModifyClusterNodePool": (cs_models.ModifyClusterNodePoolRequest, cs_models.ModifyClusterNodePoolResponseBody,
                              "modify_cluster_node_pool_with_options"),
    "ScaleClusterNodePool": (cs_models.ScaleClusterNodePoolRequest, cs_models.ScaleClusterNodePoolResponseBody,
                             "scale_cluster_node_pool_with_options"),
    "DeleteClusterNodepool": (cs_models.DeleteClusterNodepoolRequest, cs_models.DeleteClusterNodepoolResponseBody,
                              "delete_cluster_nodepool_with_options"),
    "DescribeClusterNodes": (cs_models.DescribeClusterNodesRequest, cs_models.DescribeClusterNodesResponseBody,
                             "describe_cluster_nodes_with_options"),
    "DescribeTaskInfo": (None, cs_models.DescribeTaskInfoResponseBody, "describe_task_info_with_options"),
    "DescribeClusterUserKubeconfig": (cs_models.DescribeClusterUserKubeconfigRequest,
                                      cs_models.DescribeClusterUserKubeconfigResponseBody,
                                      "describe_cluster_user_kubeconfig_with_options"),
    "DescribeClusterDetail": (None, cs_models.DescribeClusterDetailResponseBody,
                              "describe_cluster_detail_with_options"),
}
# The classic SDK appends RegionId to every ROA query (aliyunsdkcore/request.py RoaRequest.get_url); the gateway
# takes it, no API model lists it.
SDK_QUERY = {"RegionId"}


# --- comparison -----------------------------------------------------------------------------------------------------
def lost(sent: Any, kept: Any, path: str = "") -> list[str]:
    """Paths of ``sent`` that ``kept`` does not hold with the same value (keys dropped, values changed)."""
    if isinstance(sent, dict):
        if not isinstance(kept, dict):
            return [f"{path or '<root>'}: became {type(kept).__name__}"]
        out: list[str] = []
        for k, v in sent.items():
            p = f"{path}.{k}" if path else k
            if v is None:
                continue  # JSON null: absent for the SDK (from_map skips None), no field either way
            if k not in kept:
                out.append(p)
            else:
                out += lost(v, kept[k], p)
        return out
    if isinstance(sent, list):
        if not isinstance(kept, list) or len(kept) != len(sent):
            return [f"{path}: list changed"]
        return [x for i, (a, b) in enumerate(zip(sent, kept, strict=True)) for x in lost(a, b, f"{path}[{i}]")]
    return [] if sent == kept else [f"{path}: {sent!r} became {kept!r}"]


def roundtrip(model_cls: Any, doc: Any) -> Any:
    return model_cls().from_map(doc).to_map()


def has_path(model_cls: Any, path: str) -> bool:
    """Does the official model hold ``path`` (dotted; ``[]`` for list items)? Built from a document that has only
    that path, read back through from_map/to_map."""
    parts = path.split(".")

    def build(i: int, leaf: Any) -> Any:
        if i == len(parts):
            return leaf
        name = parts[i]
        if name.endswith("[]"):
            return {name[:-2]: [build(i + 1, leaf)]}
        return {name: build(i + 1, leaf)}

    for leaf in ("x", {}, []):
        doc = build(0, leaf)
        try:
            out = roundtrip(model_cls, doc)
        except Exception:  # noqa: BLE001 - a leaf of the wrong kind for this field: try the next
            continue
        if not lost(doc, out):
            return True
    return False


def client_query_names(method: str) -> set[str]:
    """The query names the official client sends for an action (``query['X'] = request.x`` in its source)."""
    return set(re.findall(r"query\['([^']+)'\]", inspect.getsource(getattr(CsClient, method))))


# --- what the flow reads ----------------------------------------------------------------------------------------------
def _fields(model: Any, prefix: str) -> list[str]:
    return [f"{prefix}{name}" for name in model.model_fields]


NODEPOOL_READS = (
    _fields(NodePool, "")
    + ["nodepool_info.nodepool_id", "nodepool_info.name"]
    + _fields(NodePoolStatus, "status.")
    + _fields(NodePoolCondition, "status.conditions[].")
    + [f"{a}.{b}" for a, b in MUTABLE_FIELDS + IMMUTABLE_FIELDS]
    + ["scaling_group.desired_size"]
)
FLOW_READS: dict[str, list[str]] = {
    "CreateClusterNodePool": _fields(CreateNodePoolResult, ""),
    "DescribeClusterNodePoolDetail": NODEPOOL_READS,
    # A listed pool's status has no conditions in the official model (only DescribeClusterNodePoolDetail's has):
    # the flow reads conditions from the detail only (verify.collect_facts); a listed pool's summary() has none.
    "DescribeClusterNodePools": [f"nodepools[].{p}" for p in NODEPOOL_READS if not p.startswith("status.conditions")],
    "DescribeClusterNodes": _fields(Node, "nodes[].") + ["page.total_count"],
    "DescribeTaskInfo": _fields(TaskInfo, "") + _fields(TaskError, "error."),
    "DescribeClusterUserKubeconfig": ["config", "expiration"],
    "DescribeClusterDetail": ["cluster_id", "state"],
    "ScaleClusterNodePool": ["task_id"],
    "ModifyClusterNodePool": ["task_id"],
    "DeleteClusterNodepool": ["task_id"],
}


@pytest.mark.parametrize("action", sorted(FLOW_READS))
def test_every_response_field_the_flow_reads_is_in_the_official_model(action):
    body_model = ACTIONS[action][1]
    missing = [p for p in FLOW_READS[action] if not has_path(body_model, p)]
    assert not missing, f"{action}: the flow reads fields the official {body_model.__name__} does not have: {missing}"


def test_the_path_check_can_fail():
    """The checker itself: a made-up field is not in the model, a real one is."""
    assert not has_path(cs_models.DescribeClusterNodePoolDetailResponseBody, "status.conditions[].mix_reason")
    assert has_path(cs_models.DescribeClusterNodePoolDetailResponseBody, "status.conditions[].reason")
    assert lost({"a": {"b": 1}}, {"a": {}}) == ["a.b"]


# --- requests and responses on the wire ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exchanges(sandbox) -> list[dict[str, Any]]:
    """Drive every ACK call the flow makes through the flow's code, return what the sandbox's ACK API saw."""
    info = sandbox.info
    creds = AlibabaCloudCredentials(access_key_id=info["access_key_id"], access_key_secret=info["access_key_secret"],
                                    region_id=info["region"], cs_endpoint=info["cs_endpoint"])
    cid = info["cluster_id"]
    journal = sandbox.services.ack.journal
    marker = journal[-1] if journal else None
    spec = NodePoolSpec(name="np-contract", key_pair="sandbox-key", min_instances=1, max_instances=3,
                        labels={"contract": "yes"}, taints=[{"key": "k", "value": "v", "effect": "NoSchedule"}])
    pool = ensure_node_pool.fn(spec, creds, cid, **WAIT)
    ensure_node_pool.fn(spec.model_copy(update={"max_instances": 4}), creds, cid, **WAIT)  # drift: Modify
    api = AckApi(creds, cid)
    api.scale_node_pool(pool.nodepool_id, 1)
    api.describe_nodes(pool.nodepool_id, page_size=1)
    api.describe_cluster()
    api.user_kubeconfig(15, private_ip=False)
    delete_node_pool.fn(spec.name, creds, cid, force=True, **WAIT)
    seen = list(journal)
    after = next((i + 1 for i in range(len(seen) - 1, -1, -1) if seen[i] is marker), 0)
    return [e for e in seen[after:] if e["status"] == 200]


def test_the_flow_uses_every_listed_action(exchanges):
    used = {e["action"] for e in exchanges}
    assert used == set(ACTIONS), f"missing: {set(ACTIONS) - used}; unexpected: {used - set(ACTIONS)}"


def test_every_request_survives_the_official_request_model(exchanges):
    problems = []
    for e in exchanges:
        req_model, _, method = ACTIONS[e["action"]]
        query = {k: v for k, v in e["query"].items() if k not in SDK_QUERY}
        names = client_query_names(method)
        unknown = sorted(set(query) - names)
        if unknown:
            problems.append(f"{e['action']}: query {unknown} is not sent by the official client ({sorted(names)})")
        if req_model is not None and query:
            problems += [f"{e['action']}: query {p}" for p in lost(query, roundtrip(req_model, query))]
        if e["body"] is not None:
            if req_model is None:
                problems.append(f"{e['action']}: the flow sends a body, the official API takes none")
            else:
                problems += [f"{e['action']}: body {p}" for p in lost(e["body"], roundtrip(req_model, e["body"]))]
    assert not problems, "\n".join(problems)


def test_every_sandbox_response_round_trips_through_the_official_model(exchanges):
    problems = []
    for e in exchanges:
        body_model = ACTIONS[e["action"]][1]
        problems += [f"{e['action']}: {p}" for p in lost(e["response"], roundtrip(body_model, e["response"]))]
    assert not problems, "\n".join(sorted(set(problems)))
