"""The sandbox's admin endpoint (``name = "admin"``: ``sandbox.json`` gets ``admin_endpoint`` and ``admin_token``).

HTTP on its own loopback port; every request needs ``Authorization: Bearer <admin_token>`` (generated once,
kept in the state database, written to ``sandbox.json``) or ``Bearer <AccessKeySecret>`` of the sandbox's own
AccessKey. Routes:

- ``GET /faults`` -> ``{"faults": <active configuration>, "counters": {service: {requests, throttled, errors,
  delayed}}, "boot_failures_done": [...], "reclaims_done": [...], "injected": [...]}``
- ``PUT /faults`` with a JSON or YAML body in the :mod:`sandbox.faults` format -> replaces the configuration
  (422 with ``{"error": "<field>: <problem>"}`` when invalid, naming an instance type or zone the fleet does not
  have included, and then nothing is applied; 400 when it is not JSON/YAML or nested/aliased beyond the faults
  file's bounds; 413 beyond :data:`MAX_BODY_BYTES`, refused before it is read); an empty body clears every fault.
- ``POST /reclaim`` ``{"instance_id": ...}`` or ``{"nodepool_id": ..., "count": n}`` -> spot interruption notices now.

It owns the :class:`~sandbox.faults.FaultEngine` the HTTP middleware consults, applies the fleet faults (spot
stock-outs, the launch-failure hook) and runs the reclaim schedule/rate on the simulated clock. The faults file
given to ``sandbox up --faults`` (``ctx.options["faults"]``) is loaded at start; an invalid file stops the start
with a message naming the field.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..context import SandboxContext
from ..faults import MAX_FAULTS_BYTES, FaultEngine, FaultsSpec, load_file, load_text
from ..fleet import catalogue
from ..fleet.service import FleetService
from ..service import Service
from ..strict import TooLarge, read_capped

log = logging.getLogger("sandbox.admin")

TOKEN_META = "admin_token"
TICK = 5.0  # simulated seconds between reclaim checks
MAX_BODY_BYTES = MAX_FAULTS_BYTES  # a faults document over HTTP has the file's bound


class AdminService(Service):
    name = "admin"

    def __init__(self, ctx: SandboxContext, fleet: FleetService) -> None:
        super().__init__(ctx)
        self.fleet = fleet
        self.faults = FaultEngine()
        token = ctx.store.get_meta(TOKEN_META)
        if not token:
            token = "sbx-admin-" + secrets.token_urlsafe(24)
            ctx.store.set_meta(TOKEN_META, token)
        self.token: str = token
        self._saved_stock: dict[tuple[str, str], int] = {}
        path = ctx.options.get("faults")
        self._initial: FaultsSpec | None = load_file(path) if path else None
        if self._initial is not None:
            self.check(self._initial, f"faults file {path}")

    # ---- lifecycle -----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.fleet.state.launch_fault = self.faults.launch_fault
        self.apply(self._initial or FaultsSpec())
        self.spawn(self._run(), name="faults")

    def info(self) -> dict[str, Any]:
        return {"admin_token": self.token}

    # ---- faults --------------------------------------------------------------------------------------------------
    def check(self, spec: FaultsSpec, source: str = "faults") -> None:
        """ValueError naming the entry when ``spec`` names an instance type or zone the fleet does not have: the
        stock-outs are applied to the fleet, so they are checked before anything is."""
        zones = list(self.ctx.identity.zones)
        for i, so in enumerate(spec.spot_stockouts):
            if catalogue.get(so.instance_type) is None:
                raise ValueError(f"{source}: spot_stockouts.{i}.instance_type: unknown instance type "
                                 f"{so.instance_type[:80]!r}")
            if so.zone is not None and so.zone not in zones:
                raise ValueError(f"{source}: spot_stockouts.{i}.zone: unknown zone {so.zone[:80]!r}; zones are "
                                 f"{zones}")

    def apply(self, spec: FaultsSpec) -> None:
        """Make ``spec`` the active configuration (HTTP faults at once; fleet stock-outs now)."""
        self.check(spec)
        fleet = self.fleet
        self.faults.set(spec, now=self.ctx.clock.now())
        zones = list(self.ctx.identity.zones)
        wanted: dict[tuple[str, str], int] = {}
        for so in spec.spot_stockouts:
            for z in ([so.zone] if so.zone else zones):
                wanted[(so.instance_type, z)] = so.available
        for key, original in list(self._saved_stock.items()):
            if key not in wanted:
                fleet.set_spot_stock(key[0], key[1], original)
                del self._saved_stock[key]
        for (t, z), n in wanted.items():
            if (t, z) not in self._saved_stock:
                self._saved_stock[(t, z)] = fleet.stock(t, z, spot=True)
            fleet.set_spot_stock(t, z, n)

    def reclaim(self, instance_id: str | None = None, nodepool_id: str | None = None, count: int = 1) -> list[str]:
        """Spot interruption notices: this instance, or ``count`` running spot instances (of a pool) without one,
        oldest first."""
        fleet = self.fleet
        if instance_id:
            fleet.reclaim(instance_id)
            return [instance_id]
        cands = [i for i in fleet.instances(nodepool_id) if i.spot and i.status == "Running" and not i.reclaim_at]
        out = []
        for inst in cands[:count]:
            fleet.reclaim(inst.instance_id)
            out.append(inst.instance_id)
        return out

    async def _run(self) -> None:
        clock = self.ctx.clock
        while True:
            await asyncio.sleep(clock.real_seconds(TICK))
            try:
                now = clock.now()
                for r in self.faults.due_reclaims(now):
                    ids = self.reclaim(r.instance_id, r.nodepool_id, r.count)
                    self.faults.log.append({"fault": "reclaim", "instances": ids, "at": now})
                p = self.faults.reclaim_probability(TICK)
                if p > 0:
                    fleet = self.fleet
                    pool = self.faults.spec.reclaim_nodepool_id
                    for inst in fleet.instances(pool):
                        if inst.spot and inst.status == "Running" and not inst.reclaim_at \
                                and self.faults.draw() < p:
                            fleet.reclaim(inst.instance_id)
                            self.faults.log.append({"fault": "reclaim", "instances": [inst.instance_id], "at": now})
            except Exception:  # noqa: BLE001 - keep the fault loop alive
                log.exception("fault loop failed")

    # ---- HTTP ----------------------------------------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return False
        given = auth[7:].strip().encode()
        secret = self.ctx.identity.access_key.access_key_secret.get_secret_value().encode()
        return hmac.compare_digest(given, self.token.encode()) or hmac.compare_digest(given, secret)

    async def _faults(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"error": "unauthorized: send Authorization: Bearer <admin_token>"}, 401,
                                headers={"WWW-Authenticate": "Bearer"})
        if request.method == "PUT":
            try:
                raw = await read_capped(request.headers, request.stream, MAX_BODY_BYTES)
            except TooLarge:
                return JSONResponse({"error": f"faults: larger than {MAX_BODY_BYTES} bytes"}, 413)
            try:
                spec = load_text(raw, "faults")
                self.check(spec)
            except ValueError as e:
                code = 400 if "not valid YAML" in str(e) or "not UTF-8" in str(e) else 422
                return JSONResponse({"error": str(e)}, code)
            self.apply(spec)
        return JSONResponse(self.faults.status())

    async def _reclaim(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"error": "unauthorized"}, 401, headers={"WWW-Authenticate": "Bearer"})
        try:
            body = json.loads(await read_capped(request.headers, request.stream, 64 * 1024) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            ids = self.reclaim(body.get("instance_id"), body.get("nodepool_id"), int(body.get("count", 1)))
        except TooLarge:
            return JSONResponse({"error": "reclaim: the body is larger than 64 KiB"}, 413)
        except Exception as e:  # noqa: BLE001 - report any bad request plainly
            return JSONResponse({"error": str(e)}, 400)
        return JSONResponse({"reclaimed": ids})

    def app(self) -> Any:
        async def http_error(request: Request, exc: Exception) -> JSONResponse:
            # routing answers (404 unknown path, 405 wrong method) in this endpoint's own {"error"} shape
            code = getattr(exc, "status_code", 400)
            return JSONResponse({"error": str(getattr(exc, "detail", "")) or "bad request"}, code,
                                headers=getattr(exc, "headers", None))

        return Starlette(routes=[Route("/faults", self._faults, methods=["GET", "PUT"]),
                                 Route("/reclaim", self._reclaim, methods=["POST"])],
                         exception_handlers={HTTPException: http_error})
