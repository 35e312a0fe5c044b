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

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from blocks.alibaba import AlibabaCloudCredentials
from clients.kube import KubeClients
from clients.lease import LeaseLock, LeaseLost
from clients.logs import run_logger
from clients.sls import SlsReader
from core.spec import DeploySpec
from tasks.ingress import IngressEndpoint
from tasks.live import LiveVersion, sls_route
from tasks.rollout.analysis import StepAnalysis, analyse_step
from tasks.rollout.canary import (
    canary_endpoint,
    canary_headers,
    preview_endpoint,
    remove_preview,
    set_canary,
    set_canary_hpa,
    set_preview,
)
from tasks.rollout.capacity import ensure_available, live_replicas, share_replicas
from tasks.rollout.plan import Outcome, Step, decide, plan
from tasks.rollout.probe import prove_header, wait_for_preview
from tasks.rollout.quiet import RouteQuiet
from tasks.rollout.report import write_rollout_report
from tasks.rollout.state import Phase, RolloutState, phase_of, save_state
from tasks.rollout.versions import (
    Promotion,
    StillHeld,
    hold_replicas,
    hpas_targeting,
    promote,
    remove_canary,
    restore,
    retire,
    routed_service,
    unguarded,
)

P = TypeVar("P")


class RolloutReport(BaseModel):
    strategy: str
    previous: str
    steps: list[StepAnalysis] = []
    decision: str = "pending"  # promoted | rolled back | switched back | promoted, retire failed
    reason: str = ""
    promotion: Promotion | None = None


class RolloutFailed(RuntimeError):
    """The rollout did not end as promoted and clean: the new version failed a check and was removed (or switched
    back from), or it was promoted and what came after (retiring the previous version) failed. The message says
    which, from the report's decision."""

    def __init__(self, report: RolloutReport) -> None:
        what = ("promoted, but finishing the rollout failed" if report.decision.startswith("promoted")
                else f"rollout of the new version {report.decision}")
        super().__init__(f"{what}: {report.reason}")
        self.report = report

    @classmethod
    def at(cls, spec: DeploySpec, live: LiveVersion, reason: str) -> RolloutFailed:
        """Not yet rolled back: :func:`rolled_back_on_failure` does it."""
        return cls(RolloutReport(strategy=spec.rollout.strategy, previous=str(live), decision="pending",
                                 reason=reason))


class Stage:
    """Where a rollout is, for its failure path and for whoever looks next: the stage's name, the report so far,
    (blue-green) the previous version's HPAs set aside for the bake; each change of stage or weight is saved as the
    rollout's state in the cluster (tasks/rollout/state.py)."""

    def __init__(self, kube: KubeClients, spec: DeploySpec, live: LiveVersion, run: str = "") -> None:
        self.kube, self.spec = kube, spec
        self.name = "canary set-up"
        self.report = RolloutReport(strategy=spec.rollout.strategy, previous=str(live))
        self.held: list[dict[str, Any]] | None = None
        self.switched_at: float | None = None  # when the main Ingress moved to the new release (time.time())
        self.state = RolloutState(release=str(spec.serving.version), previous=live.serving_version or live.service,
                                  strategy=spec.rollout.strategy, run=run)
        self.save()

    def __call__(self, name: str, weight: int | None = None) -> None:
        self.name = name
        self.state.stage, self.state.phase = name, phase_of(name)
        if weight is not None:
            self.state.weight = weight
        self.save()

    def end(self, phase: Phase, report: RolloutReport) -> None:
        self.state.phase, self.state.decision, self.state.reason = phase, report.decision, report.reason
        self.save()

    def save(self) -> None:
        """Write the state; a failed write is reported, and does not decide the rollout (it is the record)."""
        try:
            save_state(self.kube, self.spec, self.state)
        except Exception as exc:
            run_logger().warning("could not save the rollout's state (%s): %s", self.state.stage, one_line(exc))


@contextmanager
def rolled_back_on_failure(kube: KubeClients, spec: DeploySpec, live: LiveVersion,
                           run: str = "", still_held: StillHeld = unguarded) -> Iterator[Stage]:
    """Whatever fails from here on (a check, the smoke test, an API error) fails the run naming the stage, and the
    record tells what serves afterwards, read from the cluster:

    - the main Ingress still routes to the live version: the new version is removed ("rolled back");
    - it routes to the new version during a blue-green bake: switched back to the live version, kept at its
      replicas ("switched back");
    - it routes to the new version after the promotion (the previous version's retirement failed): the new
      version stays ("promoted, retire failed"), and what is left of the previous one is said (the next run's
      recovery, or ``rollback``, finishes it).

    The version the main Ingress routes to is never removed (tasks.rollout.versions). An interrupted run (cancelled,
    killed) or one that lost its lease (another run may be changing the service now; ``still_held`` is asked
    before each deletion) is left to the next run's recovery."""
    stage = Stage(kube, spec, live, run)
    try:
        yield stage
    except LeaseLost:
        raise  # another run may hold the service now: this one writes nothing, not even its state
    except RolloutFailed as failed:
        if failed.report.decision == "pending":
            failed = roll_back(kube, spec, failed.report, failed.report.reason, still_held)
            stage.end(Phase.FAILED, failed.report)
            raise failed from None
        stage.end(Phase.FAILED, failed.report)
        raise
    except Exception as exc:
        try:
            _undo(kube, spec, live, stage, exc, still_held)
        except RolloutFailed as failed:
            stage.end(Phase.FAILED, failed.report)
            raise
    else:
        stage.end(Phase.SUCCEEDED, stage.report)


def _undo(kube: KubeClients, spec: DeploySpec, live: LiveVersion, stage: Stage, exc: Exception,
          still_held: StillHeld) -> None:
    """After an error (not a failed check): undo according to what serves now (see rolled_back_on_failure);
    always raises :class:`RolloutFailed`."""
    reason = f"{stage.name}: {one_line(exc)}"
    if routed_service(kube, spec) != spec.names.service:
        raise roll_back(kube, spec, stage.report, reason, still_held) from exc
    report = stage.report
    if stage.name == "bake" and stage.held is not None:
        restore(kube, spec, live, stage.held, still_held=still_held)
        report.decision, report.reason = "switched back", reason
        run_logger().error("switched back to %s: %s", live, reason)
    else:
        report.decision = "promoted, retire failed"
        report.reason = f"{reason}; {spec.serving.version} serves all traffic; {leftover(kube, spec, live)}"
        run_logger().error("promoted %s, but %s", spec.serving.version, report.reason)
    raise RolloutFailed(report) from exc


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line (type and message, whitespace folded, cut at ``limit``)."""
    line = " ".join(f"{type(exc).__name__}: {exc}".split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def leftover(kube: KubeClients, spec: DeploySpec, live: LiveVersion) -> str:
    """What is left of the previous version after a promotion whose retirement failed."""
    ns = spec.names.namespace
    try:
        dep = kube.get("Deployment", live.service, ns)
        hpas = hpas_targeting(kube, ns, live.service)
    except Exception as exc:  # the API may be what failed: say so rather than guess
        return f"the previous version {live.service} could not be read ({one_line(exc, 120)})"
    if dep is None:
        return f"the previous version {live.service} is gone"
    replicas = int((dep.get("spec") or {}).get("replicas") or 0)
    return (f"left: {live.service} at {replicas} replica(s)" + (f", HPA {', '.join(hpas)}" if hpas else "")
            + "; the next run (or `elastic-inference rollback`) finishes or undoes it")


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
    alike, see tasks/rollout/probe.py)."""
    new = wait_for_preview(preview_endpoint(endpoint, spec), spec)
    remove_preview(kube, spec)
    set_canary(kube, spec, live, 0)
    return prove_header(endpoint, spec, new, canary_headers(spec))


def roll_back(kube: KubeClients, spec: DeploySpec, report: RolloutReport, reason: str,
              still_held: StillHeld = unguarded) -> RolloutFailed:
    remove_canary(kube, spec, still_held=still_held)
    report.decision, report.reason = "rolled back", reason
    run_logger().error("rolled back %s: %s", spec.serving.version, reason)
    return RolloutFailed(report)


def switch_capacity(kube: KubeClients, spec: DeploySpec, live: LiveVersion) -> int:
    """Before all traffic moves: the new release scaled on the users' whole route (share 100) with at least the
    live release's current replicas, Available (its HPA reads the old share, or ~0, for tens of seconds after a
    switch: tasks/rollout/capacity.py)."""
    needed = max(spec.autoscaling.min_replicas, live_replicas(kube, spec, live.service))
    set_canary_hpa(kube, spec, main_route(spec, live), 100, min_replicas=needed)
    return ensure_available(kube, spec, min(needed, spec.autoscaling.max_replicas), "the switch to 100%")


def roll_out(kube: KubeClients, spec: DeploySpec, live: LiveVersion, lock: LeaseLock,
             credentials: AlibabaCloudCredentials, sls: SlsReader | None, endpoint: IngressEndpoint,
             isolated_test: Callable[[IngressEndpoint], tuple[P, str | None]], report_dir: Path
             ) -> tuple[RolloutReport, P]:
    """The whole rollout of the spec's release over ``live``, under the service lock ``lock``: the preview, the
    isolated test through it (``isolated_test(preview)``: its result, and why it failed or None), then
    :func:`progress`; any failure is undone by :func:`rolled_back_on_failure`. The rollout's report is written into
    ``report_dir`` either way. Returns the report and the isolated test's result; raises :class:`RolloutFailed`."""
    title = f"{spec.serving.name}: {live.serving_version or live.service} -> {spec.serving.version}"
    try:
        with rolled_back_on_failure(kube, spec, live, lock.holder, still_held=lock.check) as stage:
            lock.check()
            preview = prepare_canary(kube, spec, live, endpoint)
            stage("isolated stress test")
            result, failed = isolated_test(preview)
            if failed is not None:
                raise RolloutFailed.at(spec, live, f"isolated stress test: {failed}")
            report = progress(kube, spec, live, endpoint, stage, credentials, still_held=lock.check, sls=sls)
    except RolloutFailed as rollout_failed:
        write_rollout_report(rollout_failed.report, report_dir, title)
        raise
    write_rollout_report(report, report_dir, title)
    return report, result


def progress(kube: KubeClients, spec: DeploySpec, live: LiveVersion, endpoint: IngressEndpoint,
             stage: Stage, credentials: AlibabaCloudCredentials, still_held: StillHeld = unguarded,
             sls: SlsReader | None = None) -> RolloutReport:
    """After the isolated stress test passed: the strategy's steps (tasks/rollout/plan.py), one at a time, each
    decided by :func:`~tasks.rollout.plan.decide` from how far the rollout got and the last analysis; then the
    outcome. ``still_held`` raises when this run has lost its service lock; it is asked before every change.
    ``stage`` (from :func:`rolled_back_on_failure`) is kept up to date, so a failure is undone according to where
    it happened. With ``sls``, each canary step is judged on the users' requests per version as well
    (tasks/rollout/analysis.py). ``credentials`` (OSS) delete the model prefixes of the releases pruned after the
    promotion."""
    report = stage.report
    target = canary_endpoint(endpoint, spec)
    still_held()
    if spec.rollout.strategy == "canary":  # the preview gives way to the canary at 0%, the header proven first
        stage("header proof")
        canary_at_zero(kube, spec, live, endpoint)
    else:
        remove_preview(kube, spec)
    steps = plan(spec)
    done, failed = 0, None
    while not isinstance(step := decide(steps, done, failed), Outcome):
        still_held()
        stage(step.name)
        failed = _carry_out(kube, spec, live, target, step, stage, credentials, still_held, sls)
        done += 1
    still_held()
    if step.decision == "rolled back":
        raise roll_back(kube, spec, report, step.reason, still_held)
    if step.decision == "switched back":
        restore(kube, spec, live, stage.held or [], still_held=still_held)
        report.decision, report.reason = step.decision, step.reason
        run_logger().error("switched back to %s: %s", live, report.reason)
        raise RolloutFailed(report)
    report.decision, report.reason = step.decision, step.reason
    return report


def _carry_out(kube: KubeClients, spec: DeploySpec, live: LiveVersion, target: IngressEndpoint, step: Step,
               stage: Stage, credentials: AlibabaCloudCredentials, still_held: StillHeld,
               sls: SlsReader | None = None) -> str | None:
    """One step of the plan; returns why an analysis failed, else None."""
    if step.kind == "weight":  # capacity first, then the users' share
        needed = share_replicas(live_replicas(kube, spec, live.service), step.weight, spec.autoscaling.min_replicas)
        set_canary_hpa(kube, spec, main_route(spec, live), step.weight, min_replicas=needed)
        ensure_available(kube, spec, min(needed, spec.autoscaling.max_replicas), step.name)
        still_held()
        set_canary(kube, spec, live, step.weight)
        stage(step.name, step.weight)
    elif step.kind == "analyse":
        # a canary's requests count on the main route; after a (blue-green) switch the new release's is the main one
        bake = step.name == "bake"
        route = route_of(spec, spec.names.service) if bake else main_route(spec, live)
        result = analyse_step(kube, target, spec, step.name.split(" (")[0], step.weight, step.seconds,
                              live.service, route, sls=None if bake else sls,
                              canary_route=route_of(spec, spec.names.service))
        stage.report.steps.append(result)
        return None if result.passed else result.reason
    elif step.kind == "switch":
        stage("capacity before the switch")
        switch_capacity(kube, spec, live)
        still_held()
        stage(step.name)
        if spec.rollout.strategy == "blue-green":
            # the previous version stays at its replicas
            stage.held = hold_replicas(kube, spec, live.service, still_held=still_held)
        promote(kube, spec, live, credentials, retire_previous=False, still_held=still_held)
        stage.switched_at = time.time()
        stage("bake" if spec.rollout.strategy == "blue-green" else step.name, 100)
    else:  # retire, once the previous release's route is quiet in SLS (tasks/rollout/quiet.py)
        quiet = (RouteQuiet(sls, main_route(spec, live), stage.switched_at)
                 if sls is not None and stage.switched_at is not None else None)
        stage.report.promotion = retire(kube, spec, live.service, credentials, still_held=still_held, quiet=quiet)
    return None
