"""Proof by requests that a route reaches the new release, before any test through it counts.

An Ingress object proves nothing about what nginx does with it: ingress-nginx applies a change after its
rate-limited sync and a reload (``syncIngress``, ``--sync-rate-limit`` 0.3/s), writes the Ingress status from a
separate 60 s loop (``internal/ingress/status/status.go``), and drops a canary it cannot merge with nothing but a
log line (``mergeAlternativeBackends``). So the flow asks the serving release itself, through the ingress, with
TF Serving's REST API (``GET /v1/models/<name>``: ``model_version_status``, each version's number and state;
``GET /v1/models/<name>/metadata``: the served version and its ``signature_def``):

- **the preview** (:func:`wait_for_preview`): the preview host is routed by the preview Ingress alone, to the new
  release's Service. Its first ``200`` with an ``AVAILABLE`` version is the new release's answer; until then the
  ingress answers 404 (no server for the host yet: the default backend) or 503 (no ready endpoint).
- **the canary header** (:func:`prove_header`): with the canary at weight 0, a request without the header is
  answered by the live release, one with it by the new release once the canary is merged and loaded. The header
  is proven when its answers are the new release's (as the preview gave it) and differ from the live one's, in
  ``CONFIRMATIONS`` requests in a row; a header still answered like the live release after ``timeout_s`` fails
  the rollout with what ingress-nginx requires for a merge.

What TF Serving's REST API cannot do is tell two releases apart that serve the same version numbers with the same
signatures (a retrained model exported as version 1 again): their answers are equal, and the proof says so in
the log instead of pretending; the canary is still the live Ingress's twin (:mod:`tasks.rollout.canary`), which is what
makes ingress-nginx merge it. The per-request record of which upstream served a request is the ingress access log
(``proxy_alternative_upstream_name``, in SLS on ACK).
"""

from __future__ import annotations

import json
import time

import httpx
from pydantic import BaseModel, ConfigDict

from clients.logs import run_logger
from core.spec import DeploySpec
from tasks.ingress import IngressEndpoint
from tasks.rollout.analysis import ANALYSIS_USER_AGENT

# the flow's own requests carry the analysis's User-Agent, so SLS's users' data leaves them out (tasks/rollout/analysis.py)
FLOW_CLIENT = {"User-Agent": ANALYSIS_USER_AGENT}

CONFIRMATIONS = 3  # answers in a row from the new release before the header counts as proven
REACH_TIMEOUT_S = 180.0  # ingress-nginx: <= 3.3 s rate limit + reload; a preview's pods are already Ready
POLL_S = 0.5


class RouteNotProven(RuntimeError):
    """A route did not reach the new release within the bound."""


class ReleaseAnswer(BaseModel):
    """What a release answers about the model: its versions with their states, and its metadata."""

    model_config = ConfigDict(frozen=True)

    versions: tuple[tuple[str, str], ...]
    metadata: str

    def __str__(self) -> str:
        return ", ".join(f"version {v} {state}" for v, state in self.versions) or "no version"


def read_answer(http: httpx.Client, endpoint: IngressEndpoint, spec: DeploySpec,
                headers: dict[str, str]) -> ReleaseAnswer | str:
    """The release's answer through ``endpoint`` with ``headers``, or why there is none (a status and body)."""
    base = f"{endpoint.url.rstrip('/')}/v1/models/{spec.model.name}"
    send = {"Host": endpoint.host, **headers}
    try:
        status = http.get(base, headers=send)
        if status.status_code != 200:
            return f"GET {base} answered {status.status_code}: {status.text[:200]}"
        meta = http.get(f"{base}/metadata", headers=send)
        if meta.status_code != 200:
            return f"GET {base}/metadata answered {meta.status_code}: {meta.text[:200]}"
        versions = tuple(sorted((str(v.get("version")), str(v.get("state")))
                                for v in status.json().get("model_version_status") or []))
        return ReleaseAnswer(versions=versions, metadata=json.dumps(meta.json(), sort_keys=True))
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return f"GET {base}: {type(exc).__name__}: {exc}"


def _available(answer: ReleaseAnswer | str) -> bool:
    return isinstance(answer, ReleaseAnswer) and any(state == "AVAILABLE" for _, state in answer.versions)


def wait_for_preview(endpoint: IngressEndpoint, spec: DeploySpec,
                     timeout_s: float = REACH_TIMEOUT_S) -> ReleaseAnswer:
    """Poll the preview host until the new release answers with an available version; its answer."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=10.0, headers=FLOW_CLIENT) as http:
        while True:
            answer = read_answer(http, endpoint, spec, {})
            if _available(answer):
                assert isinstance(answer, ReleaseAnswer)
                run_logger().info("preview Host %s reaches the new release: %s", endpoint.host, answer)
                return answer
            if time.monotonic() >= deadline:
                raise RouteNotProven(
                    f"the preview Host {endpoint.host} at {endpoint.url} did not reach the new release within "
                    f"{timeout_s:.0f}s (last: {answer}): ingress-nginx has not applied the preview Ingress "
                    f"{spec.names.preview_ingress}, or the new release has no ready endpoint")
            time.sleep(POLL_S)


def prove_header(endpoint: IngressEndpoint, spec: DeploySpec, new: ReleaseAnswer, canary_headers: dict[str, str],
                 timeout_s: float = REACH_TIMEOUT_S) -> bool:
    """Poll the production host with the canary header (canary at weight 0) until ``CONFIRMATIONS`` answers in a
    row are the new release's ``new``. True when proven, False when the two releases answer alike (nothing in
    TF Serving's REST API tells them apart); raises :class:`RouteNotProven` after ``timeout_s``."""
    logger = run_logger()
    header = ", ".join(f"{k}: {v}" for k, v in canary_headers.items())
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=10.0, headers=FLOW_CLIENT) as http:
        live = read_answer(http, endpoint, spec, {})
        while not isinstance(live, ReleaseAnswer):
            if time.monotonic() >= deadline:
                raise RouteNotProven(f"the live release does not answer at {endpoint.url} (Host {endpoint.host}): "
                                     f"{live}")
            time.sleep(POLL_S)
            live = read_answer(http, endpoint, spec, {})
        if live == new:
            logger.warning("the new release answers exactly as the live one (%s, same metadata): TF Serving's API "
                           "cannot show that requests with %s reach it; the canary is the live Ingress's twin, "
                           "so ingress-nginx merges it", new, header)
            return False
        streak, last = 0, None
        while True:
            last = read_answer(http, endpoint, spec, canary_headers)
            streak = streak + 1 if last == new else 0
            if streak >= CONFIRMATIONS:
                logger.info("requests with %s reach the new release (%s; the live one: %s)", header, new, live)
                return True
            if time.monotonic() >= deadline:
                seen = "the live release's answer" if last == live else str(last)
                raise RouteNotProven(
                    f"requests with {header} did not reach the new release within {timeout_s:.0f}s (last: {seen}; "
                    f"new release: {new}; live: {live}): ingress-nginx did not merge the canary Ingress "
                    f"{spec.names.canary_ingress} into the live one (host, path and pathType must be the live "
                    "Ingress's; the controller logs 'unable to find real backend for alternative backend'), or an "
                    "older canary Ingress holds that rule (ingress-nginx uses one canary per rule)")
            time.sleep(POLL_S if streak == 0 else 0.05)
