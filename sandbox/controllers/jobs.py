"""The Job controller (``job-controller``), after ``pkg/controller/job/job_controller.go`` (NonIndexed mode).

For each Job: the pods it controls (ownerReference ``controller: true`` with its uid) are split into active (not
terminating, not Succeeded/Failed), terminating, succeeded and failed. While the Job is neither finished nor
suspended, pods are created from the template (``generateName: <job>-``, event ``SuccessfulCreate``) up to
``min(parallelism, completions - succeeded)`` (without completions: ``parallelism`` until one pod succeeded), and
surplus active pods deleted (``SuccessfulDelete``). The Job finishes:

- Complete: ``succeeded >= completions`` (without completions: a pod succeeded and none is active); conditions
  ``SuccessCriteriaMet`` then ``Complete`` (reason ``CompletionsReached``), ``completionTime``, event ``Completed``;
- Failed: more failed pods than ``backoffLimit`` (reason ``BackoffLimitExceeded``) or ``activeDeadlineSeconds``
  past ``startTime`` (``DeadlineExceeded``): conditions ``FailureTarget`` then ``Failed``, active pods deleted.

``spec.suspend`` deletes the active pods and sets ``Suspended`` (``JobSuspended``; ``JobResumed`` when lifted,
``startTime`` restarts). Status: ``startTime``, ``active``, ``ready``, ``terminating``, ``succeeded``, ``failed``,
``completionTime``, ``conditions``, ``uncountedTerminatedPods`` (always empty: upstream's pod finalizer
``batch.kubernetes.io/job-tracking`` is not used; the counts come from the pods still stored and never go down, so a
finished pod deleted by hand stays counted). Not done: Indexed completion mode (no completion indexes),
podFailurePolicy, successPolicy, backoffLimitPerIndex, the exponential delay before re-creating failed pods,
ttlSecondsAfterFinished. Pods are owned by the Job, so deleting it deletes them (garbage collector).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from .base import Controller
from .replicasets import MAX_BURST, _deletion_rank, pod_ready
from .util import condition, ts

COMPONENT = "job-controller"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def finished(job: dict[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


class JobController(Controller):
    name = COMPONENT
    topics = ("kube/jobs.batch", "kube/pods")

    def reconcile(self) -> float | None:
        return self.reconcile_each("jobs", self._sync, skip_deleting=True)

    def _sync(self, job: dict[str, Any], now: float) -> float | None:
        spec = job.get("spec") or {}
        pods = self.owned("pods", job)
        phase = {id(p): (p.get("status") or {}).get("phase") for p in pods}
        done = [p for p in pods if phase[id(p)] in ("Succeeded", "Failed")]
        terminating = [p for p in pods if p not in done and p["metadata"].get("deletionTimestamp")]
        active = [p for p in pods if p not in done and p not in terminating]
        old = job.get("status") or {}
        succeeded = max(int(old.get("succeeded") or 0), sum(1 for p in done if phase[id(p)] == "Succeeded"))
        failed = max(int(old.get("failed") or 0), sum(1 for p in done if phase[id(p)] == "Failed"))
        status = copy.deepcopy(old)
        conds: list[dict[str, Any]] = status.get("conditions") or []
        due: float | None = None
        if not finished(job):
            suspended = bool(spec.get("suspend"))
            conds = self._suspension(job, conds, suspended, now)
            if suspended:
                status.pop("startTime", None)
            else:
                status.setdefault("startTime", _iso(now))
            completions, parallelism = spec.get("completions"), int(spec.get("parallelism", 1) or 0)
            failure = self._failure(spec, status, failed, now)
            complete = (completions is not None and succeeded >= completions) or \
                (completions is None and succeeded > 0 and not active)
            if failure:
                conds = self._finish(job, conds, "Failed", failure, now)
                self._delete(job, active, len(active))
                active = []
            elif complete:
                conds = self._finish(job, conds, "Complete", ("CompletionsReached", "Reached expected number of "
                                                               "succeeded pods"), now)
                self._delete(job, active, len(active))
                active = []
                status["completionTime"] = _iso(now)
            else:
                want = 0 if suspended else parallelism if completions is None else \
                    min(parallelism, max(0, completions - succeeded))
                if completions is None and succeeded > 0:
                    want = 0
                if len(active) > want:
                    active = self._delete(job, active, len(active) - want)
                for _ in range(min(want - len(active), MAX_BURST)):
                    pod = self.create_owned_pod(job, "batch/v1", "Job", COMPONENT)
                    if pod is None:
                        break
                    active.append(pod)
                deadline = spec.get("activeDeadlineSeconds")
                if deadline is not None and status.get("startTime"):
                    due = ts(status["startTime"]) + int(deadline)
        status.update({"active": len(active), "ready": sum(1 for p in active if pod_ready(p)),
                       "terminating": len(terminating), "succeeded": succeeded, "failed": failed,
                       "uncountedTerminatedPods": {}})
        for k in ("active", "succeeded", "failed"):
            if not status[k]:
                status.pop(k)  # omitempty in the Go type (ready and terminating are pointers: 0 is written)
        if conds:
            status["conditions"] = conds
        if status != old:
            new = copy.deepcopy(job)
            new["status"] = status
            self.store.update_status("jobs", new, field_manager=COMPONENT)
        return due

    def _failure(self, spec: dict[str, Any], status: dict[str, Any], failed: int,
                 now: float) -> tuple[str, str] | None:
        if failed > int(spec.get("backoffLimit", 6)):
            return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and status.get("startTime") and now >= ts(status["startTime"]) + int(deadline):
            return "DeadlineExceeded", "Job was active longer than specified deadline"
        return None

    def _suspension(self, job: dict[str, Any], conds: list[dict[str, Any]], suspended: bool,
                    now: float) -> list[dict[str, Any]]:
        cur = condition(job, "Suspended")
        if suspended and (cur or {}).get("status") != "True":
            self.event(job, "Normal", "Suspended", "Job suspended", COMPONENT)
            return _set(conds, "Suspended", "True", "JobSuspended", "Job suspended", now)
        if not suspended and cur and cur.get("status") == "True":
            self.event(job, "Normal", "Resumed", "Job resumed", COMPONENT)
            return _set(conds, "Suspended", "False", "JobResumed", "Job resumed", now)
        return conds

    def _finish(self, job: dict[str, Any], conds: list[dict[str, Any]], kind: str, why: tuple[str, str],
                now: float) -> list[dict[str, Any]]:
        first = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
        conds = _set(conds, first, "True", why[0], why[1], now)
        conds = _set(conds, kind, "True", why[0], why[1], now)
        if kind == "Complete":
            self.event(job, "Normal", "Completed", "Job completed", COMPONENT)
        else:
            self.event(job, "Warning", why[0], why[1], COMPONENT)
        return conds

    def _delete(self, job: dict[str, Any], active: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
        """Delete ``n`` active pods (the least useful first, as the ReplicaSet controller); returns those left."""
        victims = sorted(active, key=_deletion_rank)[:min(n, MAX_BURST)]
        deleted = {id(p) for p in self.delete_owned_pods(job, victims, COMPONENT)}
        return [p for p in active if id(p) not in deleted]


def _set(conds: list[dict[str, Any]], type_: str, status: str, reason: str, message: str,
         now: float) -> list[dict[str, Any]]:
    """Set a Job condition (``lastProbeTime`` and ``lastTransitionTime`` as upstream's ``newCondition``)."""
    t = _iso(now)
    out = [c for c in conds if c.get("type") != type_]
    prev = next((c for c in conds if c.get("type") == type_), None)
    if prev and prev.get("status") == status:
        return conds
    out.append({"type": type_, "status": status, "lastProbeTime": t, "lastTransitionTime": t, "reason": reason,
                "message": message})
    return out
