"""Routes of the ACK OpenAPI (CS 2015-12-15, ROA): method + path -> handler.

Paths as in ``alibabacloud_cs20151215/client.py`` (``pathname``) and aliyun-python-sdk-cs 4.8.1 request classes.
Each handler takes the state and the parsed request and returns (HTTP status, JSON body).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import errors
from .protocol import ApiRequest
from .state import AckState

if TYPE_CHECKING:
    from ..kube.service import KubeService

Handler = Callable[["AckApi", ApiRequest, dict[str, str]], Awaitable[tuple[int, Any]]]


def _bool(query: dict[str, str], name: str, default: bool = False) -> bool:
    raw = query.get(name)
    if raw in (None, ""):
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise errors.invalid_parameter(name, f"must be true or false (got {raw!r})")


class AckApi:
    """The handlers; ``kube`` (the cluster's API server) issues the user kubeconfig."""

    def __init__(self, state: AckState, kube: KubeService, endpoints: dict[str, str]) -> None:
        self.state = state
        self.kube = kube
        self.endpoints = endpoints
        self.routes: list[tuple[str, re.Pattern[str], str, Handler]] = []
        for method, pattern, action, handler in (
            ("GET", r"/clusters/(?P<cluster_id>[^/]+)", "DescribeClusterDetail", AckApi.cluster_detail),
            ("POST", r"/clusters/(?P<cluster_id>[^/]+)/nodepools", "CreateClusterNodePool", AckApi.create_pool),
            ("GET", r"/clusters/(?P<cluster_id>[^/]+)/nodepools", "DescribeClusterNodePools", AckApi.list_pools),
            ("GET", r"/clusters/(?P<cluster_id>[^/]+)/nodepools/(?P<np>[^/]+)", "DescribeClusterNodePoolDetail",
             AckApi.pool_detail),
            ("POST", r"/clusters/(?P<cluster_id>[^/]+)/nodepools/(?P<np>[^/]+)", "ScaleClusterNodePool",
             AckApi.scale_pool),
            ("PUT", r"/clusters/(?P<cluster_id>[^/]+)/nodepools/(?P<np>[^/]+)", "ModifyClusterNodePool",
             AckApi.modify_pool),
            ("DELETE", r"/clusters/(?P<cluster_id>[^/]+)/nodepools/(?P<np>[^/]+)", "DeleteClusterNodepool",
             AckApi.delete_pool),
            ("GET", r"/clusters/(?P<cluster_id>[^/]+)/nodes", "DescribeClusterNodes", AckApi.nodes),
            ("GET", r"/tasks/(?P<task_id>[^/]+)", "DescribeTaskInfo", AckApi.task),
            ("GET", r"/k8s/(?P<cluster_id>[^/]+)/user_config", "DescribeClusterUserKubeconfig", AckApi.kubeconfig),
        ):
            self.routes.append((method, re.compile(f"^{pattern}/?$"), action, handler))

    def operation(self, method: str, path: str) -> str | None:
        """The OpenAPI action a request is (``ScaleClusterNodePool`` ...), by this route table; None when none."""
        for m, rx, action, _handler in self.routes:
            if m == method and rx.match(path):
                return action
        return None

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        for m, rx, _action, handler in self.routes:
            hit = rx.match(path)
            if hit and m == method:
                return handler, hit.groupdict()
        raise errors.action_not_found(method, path)

    async def dispatch(self, req: ApiRequest) -> tuple[int, Any]:
        handler, params = self.match(req.method, req.path)
        if "cluster_id" in params:
            self.state.check_cluster(params["cluster_id"])
        return await handler(self, req, params)

    # ---- handlers --------------------------------------------------------------------------------------------
    async def cluster_detail(self, req: ApiRequest, p: dict[str, str]) -> tuple[int, Any]:
        return 200, self.state.cluster_detail(self.endpoints)

    async def create_pool(self, req: ApiRequest, p: dict[str, str]) -> tuple[int, Any]:
        out = self.state.create_pool(req.json())
        return 200, {**out, "request_id": req.request_id}

    async def list_pools(self, req: ApiRequest, p: dict[str, str]) -> tuple[int, Any]:
        return 200, {"nodepools": self.state.list_pools(req.query.get("NodepoolName"))}

    async def pool_detail(self, req: ApiRequest, p: dict[str, str]) -> tuple[int, Any]:
        return 200, self.state.render_pool(self.state.require_pool(p["np"]))

    async def scale_pool(self, req: ApiRequest, p: dict[str, str]) -> tuple[int, Any]:
        return 200, self.state.scale_pool(p["np"], req.json())

    async def modify_pool(self, req: ApiRequest, p: dict[str, str]) -> tuple[int, Any]:
        out = self.state.modify_pool(p["np"], req.json())
        return 200, {**out, "request_id": req.request_id}

    async def delete_pool(self, req: ApiRequest, p: dict[str, str]) -> tuple[int, Any]:
        out = self.state.delete_pool(p["np"], _bool(req.query, "force"))
        return 200, {**out, "request_id": req.request_id}

    async def nodes(self, req: ApiRequest, p: dict[str, str]) -> tuple[int, Any]:
        return 200, self.state.nodes(req.query)

    async def task(self, req: ApiRequest, p: dict[str, str]) -> tuple[int, Any]:
        return 200, self.state.render_task(p["task_id"])

    async def kubeconfig(self, req: ApiRequest, p: dict[str, str]) -> tuple[int, Any]:
        raw = req.query.get("TemporaryDurationMinutes")
        minutes = None
        if raw not in (None, ""):
            try:
                minutes = int(raw)
            except ValueError:
                raise errors.invalid_parameter("TemporaryDurationMinutes",
                                               f"must be an integer (got {raw!r})") from None
            if not 15 <= minutes <= 4320:
                raise errors.invalid_parameter("TemporaryDurationMinutes", f"must be 15-4320 (got {minutes})")
        private = _bool(req.query, "PrivateIpAddress")
        config, expiration = self.kube.user_kubeconfig(minutes, private)
        return 200, {"config": config, "expiration": expiration}
