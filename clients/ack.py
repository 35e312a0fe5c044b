"""A small typed client over the ACK (CS 2015-12-15, ROA JSON) OpenAPI, built on the classic core SDK.

``aliyun-python-sdk-cs`` 4.8.1 has no node-pool requests, so every call here is an
``aliyunsdkcore.request.CommonRequest`` with a ``uri_pattern`` (which makes it ROA: ``[Key]`` placeholders are
substituted raw, the request is signed with ``Authorization: acs AK:HMAC-SHA1`` in
``aliyunsdkcore/auth/composer/roa_signature_composer.py``, and ``RegionId`` is appended to the query in
``aliyunsdkcore/request.py`` ``RoaRequest.get_url``). Paths, methods and query names follow the current SDK
(``alibabacloud_cs20151215/client.py``: ``create_cluster_node_pool_with_options``,
``describe_cluster_node_pools_with_options`` (query ``NodepoolName``), ``modify_cluster_node_pool_with_options``
(``PUT``), ``delete_cluster_nodepool_with_options`` (query ``force``), ``describe_cluster_nodes_with_options``
(``nodepool_id``, ``state``, ``pageNumber``, ``pageSize``), ``describe_cluster_user_kubeconfig_with_options``
(``TemporaryDurationMinutes``, ``PrivateIpAddress``), ``describe_task_info_with_options``,
``describe_cluster_detail_with_options``).

Errors. The core SDK raises ``ServerException`` (HTTP status >= 300) and ``ClientException`` (``SDK.HttpError`` for
every ``IOError`` of the HTTP layer: refused connections, resets and timeouts, ``client.py``
``_handle_single_request``). Both become :class:`AckApiError`, whose text never contains the AccessKey secret or
the STS token. The core SDK reads code/message/request id ONLY from the capitalised ``Code``/``Message``/
``RequestId`` body keys (``aliyunsdkcore/client.py`` ``_parse_error_info_from_response_body``); anything else
becomes ``SDK.UnknownServerError`` with the message ``ServerResponseBody: <body>``. ACK is a ROA service, and the
current SDK's ROA path reads either spelling (``alibabacloud_tea_openapi/client.py`` 0.4.6 ``Client.do_roarequest``:
``err.get("Code") or err.get("code")``, ``Message``/``message``, ``RequestId``/``requestId``/``requestid``), so
:func:`parse_error_body` reads the body the same way: an ACK error with only lower-case keys keeps its real code
(a ``Throttling.User`` is then retried, an ``ErrorNodePoolNotFound`` is a 404 not-found).

Retries, and why they live here. ``AcsClient(auto_retry=True)`` (the default) only retries what
``aliyunsdkcore/data/retry_config.json`` lists per product, and that file lists only ``ecs``: for CS the
``RetryOnApiCondition`` is never met, so the SDK's policy retries nothing, yet it sleeps inside the SDK where we
cannot log or bound it. We build the client with ``auto_retry=False`` and own retries with ``tenacity``:

* throttling (``Throttling*`` codes, HTTP 429) and HTTP 503: the request was refused before being processed, so
  every call is retried, including non-idempotent ones (create, scale);
* other 5xx and ``SDK.HttpError`` (connection errors, timeouts): the outcome is unknown, so only idempotent calls
  (GET, PUT, DELETE) are retried; a caller that wants to retry a create makes the whole find-or-create step
  idempotent and retries that (see ``tasks/nodepool.py``) with :meth:`AckApi.retrying`;
* any other 4xx surfaces at once.

Waits are exponential with full jitter (``tenacity.wait_random_exponential``), attempts are bounded.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal

from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.http import protocol_type
from aliyunsdkcore.request import CommonRequest
from pydantic import BaseModel, ConfigDict, Field
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from blocks.alibaba import AlibabaCloudCredentials

log = logging.getLogger(__name__)

API_VERSION = "2015-12-15"
UNKNOWN_SERVER_ERROR = "SDK.UnknownServerError"
BODY_PREFIX = "ServerResponseBody: "  # aliyunsdkcore/client.py: the message of an error body it cannot read
PRODUCT = "CS"
REDACTED = "******"
# Path segments are substituted raw into the URI by the SDK: accept only what real ids look like.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class AckApiError(Exception):
    """An error answer (or no answer) from the ACK OpenAPI.

    ``code`` is the API's error code (``ErrorClusterNotFound``, ``SignatureDoesNotMatch``, ``Throttling.User``...)
    or the SDK's own (``SDK.HttpError`` when no HTTP answer came back). ``http_status`` is None without an answer.
    """

    def __init__(
        self,
        code: str,
        message: str,
        request_id: str | None = None,
        http_status: int | None = None,
        action: str | None = None,
    ) -> None:
        super().__init__(code, message, request_id, http_status)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.http_status = http_status
        self.action = action

    def __str__(self) -> str:
        where = f"{self.action}: " if self.action else ""
        status = f"HTTP {self.http_status}" if self.http_status is not None else "no HTTP response"
        rid = f", RequestId {self.request_id}" if self.request_id else ""
        return f"{where}{self.code}: {self.message} ({status}{rid})"

    def __repr__(self) -> str:
        return f"AckApiError(code={self.code!r}, http_status={self.http_status!r}, request_id={self.request_id!r})"

    # ---- classification ----------------------------------------------------------------------------------------
    @property
    def throttled(self) -> bool:
        """Refused before processing: safe to retry any call."""
        return self.code.startswith("Throttling") or self.http_status in (429, 503)

    @property
    def transient(self) -> bool:
        """Worth retrying, though the request may have been processed (5xx, no response)."""
        return (
            self.throttled
            or (self.http_status is not None and self.http_status >= 500)
            or (self.http_status is None and self.code == "SDK.HttpError")
        )

    @property
    def not_found(self) -> bool:
        return self.http_status == 404


# --- response shapes ----------------------------------------------------------------------------------------------
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class CreateNodePoolResult(_Open):
    nodepool_id: str
    task_id: str | None = None
    request_id: str | None = None


class NodePoolCondition(_Open):
    type: str | None = None
    status: str | None = None
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None


class NodePoolStatus(_Open):
    """``status`` of DescribeClusterNodePoolDetail (``DescribeClusterNodePoolDetailResponseBodyStatus``)."""

    state: str | None = None
    total_nodes: int = 0
    healthy_nodes: int = 0
    serving_nodes: int = 0
    initial_nodes: int = 0
    failed_nodes: int = 0
    offline_nodes: int = 0
    removing_nodes: int = 0
    conditions: list[NodePoolCondition] = Field(default_factory=list)

    def summary(self) -> str:
        conds = "; ".join(
            f"{c.type}={c.status}" + (f" ({c.reason}: {c.message})" if c.reason or c.message else "")
            for c in self.conditions
        )
        return (
            f"state={self.state} total={self.total_nodes} healthy={self.healthy_nodes} "
            f"initial={self.initial_nodes} failed={self.failed_nodes} removing={self.removing_nodes}"
            + (f" conditions=[{conds}]" if conds else "")
        )


class NodePool(_Open):
    """One node pool as DescribeClusterNodePoolDetail (and each item of DescribeClusterNodePools) returns it."""

    nodepool_info: dict[str, Any] = Field(default_factory=dict)
    scaling_group: dict[str, Any] = Field(default_factory=dict)
    auto_scaling: dict[str, Any] = Field(default_factory=dict)
    kubernetes_config: dict[str, Any] = Field(default_factory=dict)
    management: dict[str, Any] = Field(default_factory=dict)
    status: NodePoolStatus = Field(default_factory=NodePoolStatus)

    @property
    def nodepool_id(self) -> str:
        return str(self.nodepool_info.get("nodepool_id", ""))

    @property
    def name(self) -> str:
        return str(self.nodepool_info.get("name", ""))

    @property
    def state(self) -> str | None:
        return self.status.state

    def raw(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Node(_Open):
    """One item of DescribeClusterNodes ``nodes``."""

    instance_id: str
    node_name: str | None = None
    instance_type: str | None = None
    instance_charge_type: str | None = None
    spot_strategy: str | None = None
    nodepool_id: str | None = None
    node_status: str | None = None
    state: str | None = None
    instance_status: str | None = None
    creation_time: str | None = None


class TaskError(_Open):
    code: str | None = None
    message: str | None = None


class TaskInfo(_Open):
    """DescribeTaskInfo (``GET /tasks/{task_id}``); ``state`` is ``running`` | ``fail`` | ``success``."""

    task_id: str | None = None
    state: str | None = None
    task_type: str | None = None
    current_stage: str | None = None
    error: TaskError | None = None

    @property
    def failed(self) -> bool:
        return (self.state or "").lower() in ("fail", "failed")

    def reason(self) -> str:
        if self.error and (self.error.code or self.error.message):
            return f"{self.error.code}: {self.error.message}"
        return f"task {self.task_id} state {self.state} at stage {self.current_stage}"


# --- the client ---------------------------------------------------------------------------------------------------
class AckApi:
    """ACK OpenAPI calls for one cluster. Build it from the credentials block; it holds one ``AcsClient``."""

    def __init__(
        self,
        credentials: AlibabaCloudCredentials,
        cluster_id: str,
        *,
        max_attempts: int = 6,
        backoff: float = 0.5,
        backoff_max: float = 20.0,
    ) -> None:
        self.cluster_id = _segment(cluster_id, "cluster_id")
        self.protocol, self.domain = credentials.cs_domain()
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        # Values to scrub from any text we surface: the secret and the STS token.
        self._secrets = [credentials.access_key_secret.get_secret_value()]
        if credentials.security_token is not None:
            self._secrets.append(credentials.security_token.get_secret_value())
        self._secrets = [s for s in self._secrets if s]
        self._client: AcsClient = credentials.get_acs_client(auto_retry=False)

    def __repr__(self) -> str:
        return f"AckApi(cluster_id={self.cluster_id!r}, endpoint={self.protocol}://{self.domain})"

    # ---- retries -----------------------------------------------------------------------------------------------
    def retrying(self, idempotent: bool = True) -> Retrying:
        """The retry policy: throttling always; 5xx and connection errors only when ``idempotent``."""

        def should_retry(exc: BaseException) -> bool:
            if not isinstance(exc, AckApiError):
                return False
            return exc.throttled or (idempotent and exc.transient)

        return Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_random_exponential(multiplier=self.backoff, max=self.backoff_max),
            retry=retry_if_exception(should_retry),
            before_sleep=self._log_retry,
            reraise=True,
        )

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        log.warning("ACK call failed (attempt %d), retrying in %.1fs: %s", state.attempt_number, wait, exc)

    # ---- one call ----------------------------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, REDACTED)
        return text

    def call(
        self,
        action: str,
        method: Literal["GET", "POST", "PUT", "DELETE"],
        uri_pattern: str,
        path: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> dict[str, Any]:
        """One ROA call with retries; returns the decoded JSON body ({} for an empty body)."""
        if idempotent is None:
            idempotent = method != "POST"
        for attempt in self.retrying(idempotent):
            with attempt:
                return self._call_once(action, method, uri_pattern, path or {}, query or {}, body)
        raise AssertionError("unreachable")  # pragma: no cover - tenacity reraises

    def _call_once(
        self,
        action: str,
        method: str,
        uri_pattern: str,
        path: dict[str, str],
        query: dict[str, Any],
        body: dict[str, Any] | None,
    ) -> dict[str, Any]:
        req = CommonRequest(
            domain=self.domain,
            version=API_VERSION,
            action_name=action,
            uri_pattern=uri_pattern,
            product=PRODUCT,
        )
        # http_response.py tests `protocol is PT.HTTPS` (identity): pass the module's own constants.
        req.set_protocol_type(protocol_type.HTTPS if self.protocol == "https" else protocol_type.HTTP)
        req.set_method(method)
        req.set_accept_format("JSON")
        # A fresh nonce per attempt (signed: every x-acs-* header is in the classic string to sign): the gateway
        # refuses a reused one with SignatureNonceUsed, so a captured request cannot be replayed (Alibaba Cloud
        # ROA "Signature Mechanism": x-acs-signature-nonce prevents network replay attacks).
        req.add_header("x-acs-signature-nonce", uuid.uuid4().hex)
        for key, value in path.items():
            req.add_path_param(key, value)
        for key, value in query.items():
            if value is not None:
                req.add_query_param(key, _query_value(value))
        if body is not None:
            req.set_content_type("application/json")
            req.set_content(json.dumps(body).encode("utf-8"))
        try:
            raw = self._client.do_action_with_exception(req)
        except ServerException as exc:
            code, message, request_id = str(exc.get_error_code()), str(exc.get_error_msg()), exc.get_request_id()
            if code == UNKNOWN_SERVER_ERROR and message.startswith(BODY_PREFIX):
                parsed = parse_error_body(message[len(BODY_PREFIX):])
                if parsed is not None:
                    code, message, request_id = parsed[0], parsed[1] or message, request_id or parsed[2]
            raise AckApiError(
                code=code,
                message=self._scrub(message),
                request_id=request_id,
                http_status=exc.get_http_status(),
                action=action,
            ) from None
        except ClientException as exc:
            raise AckApiError(
                code=str(exc.get_error_code()),
                message=self._scrub(str(exc.get_error_msg())),
                action=action,
            ) from None
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise AckApiError(
                "SDK.InvalidResponse",
                f"response is not JSON: {self._scrub(raw[:200].decode(errors='replace'))}",
                action=action,
            ) from None
        return data if isinstance(data, dict) else {"items": data}

    # ---- node pools --------------------------------------------------------------------------------------------
    def create_node_pool(self, body: dict[str, Any]) -> CreateNodePoolResult:
        """CreateClusterNodePool ``POST /clusters/{cluster_id}/nodepools`` (retried only when throttled)."""
        data = self.call(
            "CreateClusterNodePool",
            "POST",
            "/clusters/[ClusterId]/nodepools",
            {"ClusterId": self.cluster_id},
            body=body,
        )
        return CreateNodePoolResult.model_validate(data)

    def describe_node_pools(self, name: str | None = None) -> list[NodePool]:
        """DescribeClusterNodePools ``GET /clusters/{cluster_id}/nodepools[?NodepoolName=]``.

        The server-side name filter may match loosely (ACK documents it as a name filter, not an exact match):
        callers that need one pool compare ``name`` exactly.
        """
        data = self.call(
            "DescribeClusterNodePools",
            "GET",
            "/clusters/[ClusterId]/nodepools",
            {"ClusterId": self.cluster_id},
            query={"NodepoolName": name},
        )
        return [NodePool.model_validate(p) for p in data.get("nodepools") or []]

    def find_node_pool(self, name: str) -> NodePool | None:
        """The pool whose name is exactly ``name`` (None if none); more than one is an error."""
        pools = [p for p in self.describe_node_pools(name) if p.name == name]
        if len(pools) > 1:
            ids = ", ".join(p.nodepool_id for p in pools)
            raise AckApiError(
                "DuplicateNodePoolName",
                f"{len(pools)} node pools are named {name!r} ({ids}); delete the extra ones",
                action="DescribeClusterNodePools",
            )
        return pools[0] if pools else None

    def describe_node_pool(self, nodepool_id: str) -> NodePool:
        """DescribeClusterNodePoolDetail ``GET /clusters/{cluster_id}/nodepools/{nodepool_id}``."""
        data = self.call(
            "DescribeClusterNodePoolDetail",
            "GET",
            "/clusters/[ClusterId]/nodepools/[NodepoolId]",
            {"ClusterId": self.cluster_id, "NodepoolId": _segment(nodepool_id, "nodepool_id")},
        )
        return NodePool.model_validate(data)

    def scale_node_pool(self, nodepool_id: str, count: int) -> str | None:
        """ScaleClusterNodePool ``POST .../nodepools/{id}`` ``{count}`` (nodes to ADD); returns the task id."""
        data = self.call(
            "ScaleClusterNodePool",
            "POST",
            "/clusters/[ClusterId]/nodepools/[NodepoolId]",
            {"ClusterId": self.cluster_id, "NodepoolId": _segment(nodepool_id, "nodepool_id")},
            body={"count": int(count)},
        )
        return data.get("task_id")

    def modify_node_pool(self, nodepool_id: str, body: dict[str, Any]) -> str | None:
        """ModifyClusterNodePool ``PUT .../nodepools/{id}`` with a partial body; returns the task id if any."""
        data = self.call(
            "ModifyClusterNodePool",
            "PUT",
            "/clusters/[ClusterId]/nodepools/[NodepoolId]",
            {"ClusterId": self.cluster_id, "NodepoolId": _segment(nodepool_id, "nodepool_id")},
            body=body,
        )
        return data.get("task_id")

    def delete_node_pool(self, nodepool_id: str, force: bool = False) -> str | None:
        """DeleteClusterNodepool ``DELETE .../nodepools/{id}?force=``; returns the task id if any."""
        data = self.call(
            "DeleteClusterNodepool",
            "DELETE",
            "/clusters/[ClusterId]/nodepools/[NodepoolId]",
            {"ClusterId": self.cluster_id, "NodepoolId": _segment(nodepool_id, "nodepool_id")},
            query={"force": bool(force)},
        )
        return data.get("task_id")

    # ---- nodes, tasks, cluster ---------------------------------------------------------------------------------
    def iter_nodes(
        self, nodepool_id: str | None = None, state: str = "all", page_size: int = 100
    ) -> Iterator[Node]:
        """DescribeClusterNodes ``GET /clusters/{id}/nodes``, every page (``pageNumber`` from 1)."""
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        page = 1
        seen = 0
        while True:
            data = self.call(
                "DescribeClusterNodes",
                "GET",
                "/clusters/[ClusterId]/nodes",
                {"ClusterId": self.cluster_id},
                query={"nodepool_id": nodepool_id, "state": state, "pageNumber": page, "pageSize": page_size},
            )
            nodes = data.get("nodes") or []
            for n in nodes:
                yield Node.model_validate(n)
            seen += len(nodes)
            total = (data.get("page") or {}).get("total_count")
            if not nodes or len(nodes) < page_size or (total is not None and seen >= int(total)):
                return
            page += 1

    def describe_nodes(
        self, nodepool_id: str | None = None, state: str = "all", page_size: int = 100
    ) -> list[Node]:
        return list(self.iter_nodes(nodepool_id, state, page_size))

    def describe_task(self, task_id: str) -> TaskInfo:
        """DescribeTaskInfo ``GET /tasks/{task_id}``."""
        data = self.call(
            "DescribeTaskInfo", "GET", "/tasks/[TaskId]", {"TaskId": _segment(task_id, "task_id")}
        )
        return TaskInfo.model_validate(data)

    def user_kubeconfig(self, minutes: int = 60, private_ip: bool = False) -> tuple[str, str | None]:
        """DescribeClusterUserKubeconfig ``GET /k8s/{id}/user_config`` → (kubeconfig YAML, expiration RFC3339)."""
        if not 15 <= minutes <= 4320:
            raise ValueError("TemporaryDurationMinutes must be 15..4320")
        data = self.call(
            "DescribeClusterUserKubeconfig",
            "GET",
            "/k8s/[ClusterId]/user_config",
            {"ClusterId": self.cluster_id},
            query={"TemporaryDurationMinutes": minutes, "PrivateIpAddress": private_ip},
        )
        return data["config"], data.get("expiration")

    def describe_cluster(self) -> dict[str, Any]:
        """DescribeClusterDetail ``GET /clusters/{cluster_id}``."""
        return self.call(
            "DescribeClusterDetail", "GET", "/clusters/[ClusterId]", {"ClusterId": self.cluster_id}
        )


def parse_error_body(text: str) -> tuple[str, str | None, str | None] | None:
    """(code, message, request id) of an ACK error body, read as the current SDK's ROA path reads it (either
    spelling of each key, capitalised first); None when the body is no JSON object or names no code."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None

    def pick(*keys: str) -> str | None:
        for k in keys:
            v = doc.get(k)
            if isinstance(v, str | int | float) and not isinstance(v, bool) and str(v):
                return str(v)
        return None

    code = pick("Code", "code")
    if code is None:
        return None
    return code, pick("Message", "message"), pick("RequestId", "requestId", "requestid")


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SEGMENT.match(value):
        raise ValueError(f"{what} {value!r} is not a valid ACK id")
    return value


def _query_value(value: Any) -> str:
    # The current SDK sends booleans as "true"/"false" (darabonba Utils.query); str(True) would be "True".
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def with_retries(api: AckApi, fn: Callable[[], Any], idempotent: bool = True) -> Any:
    """Run ``fn`` under ``api``'s retry policy (for composite steps made idempotent by their caller)."""
    for attempt in api.retrying(idempotent):
        with attempt:
            return fn()
    raise AssertionError("unreachable")  # pragma: no cover
