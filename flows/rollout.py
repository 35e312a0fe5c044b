"""A rollout: the new version replaces the live one only after it proved itself, step by step.

    (deploy: new release beside the live one ─ its HPA on its own route ─ preview Ingress (the live one's twin on
     the preview host) ─ smoke and the isolated stress test through the preview ─ verify the new version)
    then:       preview removed ─ canary Ingress (the live one's twin) at weight 0 ─ prove that the header reaches
                the new release
    canary:     for each weight: canary Ingress at weight ─ analysis window ─ roll back at the first failed check
                ─ promote (main Ingress → new Service, canary removed, old HPA removed, old replicas drained to 0)
    blue-green: switch 100% at once ─ bake window (analysis) with the old version still at its replicas
                ─ retire the old version, or switch back

The stable version is never touched until the new one is promoted; a failed check removes the new version and
fails the run naming the step, the check and the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydantic import BaseModel

from clients.kube import KubeClients
from clients.lease import LeaseLost
from clients.logs import run_logger
from core.spec import DeploySpec
from tasks.analysis import StepAnalysis, analyse_step
from tasks.canary import (
    canary_endpoint,
    canary_headers,
    preview_endpoint,
    remove_preview,
    set_canary,
    set_canary_hpa,
    set_preview,
)
from tasks.canary_probe import prove_header, wait_for_preview
from tasks.ingress import IngressEndpoint
from tasks.live import LiveVersion, sls_route
from tasks.versions import Promotion, hold_replicas, promote, remove_canary, restore, retire


class RolloutReport(BaseModel):
    strategy: str
    previous: str
    steps: list[StepAnalysis] = []
    decision: str = "pending"  # promoted | rolled back
    reason: str = ""
    promotion: Promotion | None = None


class RolloutFailed(RuntimeError):
    """The new version failed a check: it was removed, the previous version serves."""

    def __init__(self, report: RolloutReport) -> None:
        super().__init__(f"rollout of the new version rolled back: {report.reason}")
        self.report = report

    @classmethod
    def at(cls, spec: DeploySpec, live: LiveVersion, reason: str) -> RolloutFailed:
        """Not yet rolled back: :func:`rolled_back_on_failure` does it."""
        return cls(RolloutReport(strategy=spec.rollout.strategy, previous=str(live), decision="pending",
                                 reason=reason))


@contextmanager
def rolled_back_on_failure(kube: KubeClients, spec: DeploySpec, live: LiveVersion) -> Iterator[Callable[[str], None]]:
    """Whatever fails from here on (a check, the smoke test, an API error) removes the new version and fails the
    run naming the stage; the version the main Ingress routes to is never touched (tasks.versions). An
    interrupted run (cancelled, killed) or one that lost its lease (another run may be changing the service now)
    is left to the next run's recovery."""
    stage = ["canary set-up"]
    try:
        yield lambda name: stage.__setitem__(0, name)
    except LeaseLost:
        raise
    except RolloutFailed as failed:
        if failed.report.decision == "pending":
            raise roll_back(kube, spec, failed.report, failed.report.reason) from None
        raise
    except Exception as exc:
        report = RolloutReport(strategy=spec.rollout.strategy, previous=str(live))
        raise roll_back(kube, spec, report, f"{stage[0]}: {type(exc).__name__}: {exc}") from exc


def route_of(spec: DeploySpec, service: str, port: int | str | None = None) -> str:
    """The SLS route of a Service: ``<namespace>-<service>-<port>`` (ingress-nginx's upstream name)."""
    return sls_route(spec.names.namespace, service, port or spec.ingress.service_port)


def main_route(spec: DeploySpec, live: LiveVersion) -> str:
    """The SLS route user traffic is counted under: the main Ingress's Service."""
    return route_of(spec, live.service, live.port)


def prepare_canary(kube: KubeClients, spec: DeploySpec, live: LiveVersion, endpoint: IngressEndpoint) -> IngressEndpoint:
    """The new version alone on the preview host, scaled on its own route (so the live version's HPA does not
    see the stress load): where the isolated stress test goes, once requests prove the preview reaches it."""
    set_canary_hpa(kube, spec, route_of(spec, spec.names.service), 100)
    kube.delete("Ingress", spec.names.canary_ingress, spec.names.namespace)  # a dead run's: never beside the preview
    set_preview(kube, spec, live)
    preview = preview_endpoint(endpoint, spec)
    wait_for_preview(preview, spec)
    return preview


def canary_at_zero(kube: KubeClients, spec: DeploySpec, live: LiveVersion, endpoint: IngressEndpoint) -> bool:
    """From the preview to the canary: the new release's answer read through the preview, the preview removed,
    the canary Ingress at weight 0, and the header proven to reach the new release (False: the releases answer
    alike, see tasks/canary_probe.py)."""
    new = wait_for_preview(preview_endpoint(endpoint, spec), spec)
    remove_preview(kube, spec)
    set_canary(kube, spec, live, 0)
    return prove_header(endpoint, spec, new, canary_headers(spec))


def roll_back(kube: KubeClients, spec: DeploySpec, report: RolloutReport, reason: str) -> RolloutFailed:
    remove_canary(kube, spec)
    report.decision, report.reason = "rolled back", reason
    run_logger().error("rolled back %s: %s", spec.serving.version, reason)
    return RolloutFailed(report)


def progress(kube: KubeClients, spec: DeploySpec, live: LiveVersion, endpoint: IngressEndpoint,
             still_held: Callable[[], None] = lambda: None) -> RolloutReport:
    """After the isolated stress test passed: the strategy's traffic shift, analysis, and the decision.
    ``still_held`` raises when this run has lost its service lock; it is asked before every change."""
    r = spec.rollout
    report = RolloutReport(strategy=r.strategy, previous=str(live))
    target = canary_endpoint(endpoint, spec)
    if r.strategy == "blue-green":
        still_held()
        remove_preview(kube, spec)
        held = hold_replicas(kube, spec, live.service)  # the previous version stays at its replicas for the bake
        promote(kube, spec, live, retire_previous=False)
        bake = analyse_step(kube, target, spec, "bake", 100, r.bake_seconds, live.service,
                                                  route_of(spec, spec.names.service)) if r.bake_seconds else None
        if bake is not None:
            report.steps.append(bake)
            if not bake.passed:
                still_held()
                restore(kube, spec, live, held)
                report.decision, report.reason = "rolled back", f"bake (100%): {bake.reason}"
                run_logger().error("switched back to %s: %s", live, report.reason)
                raise RolloutFailed(report)
        still_held()
        report.promotion = retire(kube, spec, live.service)
        report.decision, report.reason = "promoted", "the bake window passed" if bake else "no bake window"
        return report
    still_held()
    canary_at_zero(kube, spec, live, endpoint)
    for i, weight in enumerate(r.steps, 1):
        still_held()
        set_canary_hpa(kube, spec, main_route(spec, live), weight)
        set_canary(kube, spec, live, weight)
        step = analyse_step(kube, target, spec, f"step {i}", weight, r.step_seconds, live.service,
                            main_route(spec, live))
        report.steps.append(step)
        if not step.passed:
            still_held()
            raise roll_back(kube, spec, report, f"step {i} ({weight}%): {step.reason}")
    still_held()
    report.promotion = promote(kube, spec, live)
    report.decision, report.reason = "promoted", f"{len(r.steps)} step(s) passed"
    return report
