"""The ACK OpenAPI service (``name = "cs"``: ``sandbox.json`` gets ``cs_endpoint``).

A Starlette app speaking CS 2015-12-15 ROA JSON (see :mod:`sandbox.ack.protocol`, :mod:`sandbox.ack.routes`),
backed by :class:`sandbox.ack.state.AckState` over the shared store and the fleet service (ESS/ECS). A reconcile
loop on the simulated clock moves node pools through their states and settles tasks; it wakes on the bus topic
``"fleet"`` as well as on its resync period.

In-process API: ``add_pool_conditions(fn)`` adds a source of node pool ``status.conditions`` (the
cluster-autoscaler's). Changes are announced on the bus topic ``"ack"``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..context import SandboxContext
from ..fleet.service import FleetService
from ..service import Service
from ..timings import resolve
from .auth import Verifier
from .errors import AckError, error_response, injected_error, json_response, new_request_id
from .protocol import read_request
from .routes import AckApi
from .state import AckState, _redact

if TYPE_CHECKING:
    from ..kube.service import KubeService

log = logging.getLogger("sandbox.ack")

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
JOURNAL_SIZE = 500


class AckService(Service):
    name = "cs"

    def __init__(self, ctx: SandboxContext, fleet: FleetService, kube: KubeService) -> None:
        super().__init__(ctx)
        self.timings = resolve(ctx.options)
        self.state = AckState(ctx.store, ctx.clock, ctx.identity, fleet, self.timings)
        self.api = AckApi(self.state, kube, ctx.endpoints)
        self.verifier = Verifier(ctx.accounts.secret_for)
        # The last requests as the API saw them (action, query, JSON bodies both ways): what a test holds against
        # the official SDK models (tests/contract). In memory only; bodies of CreateClusterNodePool may hold a
        # login_password, redacted here.
        self.journal: deque[dict[str, Any]] = deque(maxlen=JOURNAL_SIZE)

    # ---- HTTP ------------------------------------------------------------------------------------------------
    def app(self) -> Any:
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=METHODS)])

    async def _handle(self, request: Request) -> Response:
        rid = new_request_id()
        try:
            req = await read_request(request, self.verifier, rid)
            status, body = await self.api.dispatch(req)
            if req.method != "GET":
                self.ctx.bus.notify("ack")
            self._record(req, status, body)
            return json_response(status, body, rid)
        except AckError as err:
            return error_response(err, rid)
        except Exception:  # a sandbox bug: still the real error shape, and logged
            log.exception("ACK request failed: %s %s", request.method, request.url.path)
            return error_response(AckError(500, "InternalError",
                                           "The request processing has failed due to some unknown error."), rid)

    # ---- fault injection (sandbox.faults.FaultTarget) ---------------------------------------------------------
    def fault_operation(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
        """The OpenAPI action: ``x-acs-action`` (the current SDK sends it), else this service's route table."""
        return headers.get("x-acs-action") or self.api.operation(method, path) or f"{method} {path}"

    def fault_error(self, kind: str, status: int, method: str, host: str) -> tuple[int, list, bytes]:
        return injected_error(kind, status)

    def _record(self, req: Any, status: int, body: Any) -> None:
        action = self.api.operation(req.method, req.path)
        if action is None:
            return
        try:
            sent = _redact(req.json(required=False)) if req.body.strip() else None
        except AckError:
            return
        self.journal.append({"action": action, "method": req.method, "path": req.path, "query": dict(req.query),
                             "body": sent, "status": status, "response": body})

    # ---- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.state.ensure_default_pool()
        self.spawn(self._run(), name="ack-reconcile")

    async def _run(self) -> None:
        clock = self.ctx.clock
        while True:
            try:
                if self.state.step():
                    self.ctx.bus.notify("ack")
            except Exception:
                log.exception("ACK reconcile failed")
            due = self._next_due()
            wait = self.timings["ack_resync"] if due is None else min(self.timings["ack_resync"],
                                                                       max(0.0, due - clock.now()))
            await self.ctx.bus.wait("fleet", timeout=clock.real_seconds(wait) + 0.001)

    def _next_due(self) -> float | None:
        dues = [p["state_until"] for p in self.state._pools() if p.get("state_until")]
        return min(dues) if dues else None

    # ---- in-process API --------------------------------------------------------------------------------------
    def add_pool_conditions(self, fn: Callable[[str], list[dict[str, Any]]]) -> None:
        """Add a source of node pool ``status.conditions`` (the cluster-autoscaler's ``ClusterAutoscaler``)."""
        self.state.extra_conditions.append(fn)
