"""batch/v1 Jobs and CronJobs, policy/v1 PodDisruptionBudgets through the official Python client."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.rest import ApiException
from polling import wait_for

from sandbox.controllers import ContainerState

from .conftest import deployment


def _job(name: str, **spec) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "main", "image": "busybox:1.36",
                                                           "command": ["sh", "-c", "echo hi"]}]}}, **spec}}


def test_job_defaults_and_generated_selector(batch, ns):
    job = batch.create_namespaced_job(ns, _job("j1"))
    uid, spec = job.metadata.uid, job.spec
    assert (spec.completions, spec.parallelism, spec.backoff_limit) == (1, 1, 6)
    assert spec.completion_mode == "NonIndexed" and spec.suspend is False
    assert spec.pod_replacement_policy == "TerminatingOrFailed" and spec.manual_selector is None
    assert spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    want = {"app": "j1", "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": "j1",
            "controller-uid": uid, "job-name": "j1"}
    assert spec.template.metadata.labels == want
    assert job.metadata.labels == {"app": "j1"}  # the template's labels, copied before the selector was generated
    assert spec.template.spec.termination_grace_period_seconds == 30 and job.metadata.generation == 1
    par = batch.create_namespaced_job(ns, _job("j2", parallelism=3))
    assert par.spec.completions is None and par.spec.parallelism == 3
    # manualSelector: the selector is the user's, and must match the template
    manual = _job("j3", manualSelector=True, selector={"matchLabels": {"app": "j3"}})
    assert batch.create_namespaced_job(ns, manual).spec.selector.match_labels == {"app": "j3"}
    bad = _job("j4", manualSelector=True, selector={"matchLabels": {"app": "other"}})
    with pytest.raises(ApiException) as e:
        batch.create_namespaced_job(ns, bad)
    assert e.value.status == 422 and "`selector` does not match template `labels`" in json.loads(e.value.body)["message"]
    always = _job("j5")
    always["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(ApiException) as e:
        batch.create_namespaced_job(ns, always)
    assert e.value.status == 422 and "spec.template.spec.restartPolicy" in e.value.body


def test_cronjob_and_pdb_defaults(batch, policy, ns):
    cj = batch.create_namespaced_cron_job(ns, {
        "metadata": {"name": "cj"},
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}}})
    s = cj.spec
    assert (s.concurrency_policy, s.suspend, s.successful_jobs_history_limit, s.failed_jobs_history_limit) == \
        ("Allow", False, 3, 1)
    assert s.job_template.spec.template.spec.dns_policy == "ClusterFirst"
    assert s.job_template.spec.completions is None  # the Job template is not defaulted as a Job
    pdb = policy.create_namespaced_pod_disruption_budget(ns, {
        "metadata": {"name": "p"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}})
    assert pdb.spec.min_available == 1 and pdb.status.disruptions_allowed == 0 and pdb.metadata.generation == 1


# ---- the Job controller -----------------------------------------------------------------------------------------------
class _ExitHandle:
    def __init__(self, code: int) -> None:
        self.code = code

    def state(self) -> ContainerState:
        return ContainerState(ready=False, exit_code=self.code, reason="Completed" if self.code == 0 else "Error")

    def logs(self) -> str:
        return ""

    async def stop(self) -> None:
        return None


class _ExitRuntime:
    """Containers of one namespace running ``sh -c "exit N"`` end at once with code N (the built-in runtime's
    containers run until stopped, so they never finish a Job)."""

    name = "test-exit"

    def __init__(self, ns: str) -> None:
        self.ns = ns

    def claims(self, pod: dict, container: dict) -> bool:
        argv = container.get("command") or []
        return pod["metadata"].get("namespace") == self.ns and argv[:2] == ["sh", "-c"] and \
            str(argv[2]).startswith("exit ")

    def start(self, spec) -> _ExitHandle:
        return _ExitHandle(int(spec.container["command"][2].split()[1]))


@pytest.fixture
def exits(sandbox, ns):
    runtimes = sandbox.services.controllers.runtimes
    runtimes.register(_ExitRuntime(ns), first=True)
    yield
    runtimes.unregister("test-exit")


def _exiting(name: str, code: int, **spec) -> dict:
    job = _job(name, **spec)
    job["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh", "-c", f"exit {code}"]
    return job


def _conds(job) -> dict:
    return {c.type: (c.status, c.reason) for c in job.status.conditions or []}


def test_job_runs_pods_to_completion(batch, core, exits, ns):
    batch.create_namespaced_job(ns, _exiting("ok", 0, completions=3, parallelism=2))
    job = wait_for(lambda: (j := batch.read_namespaced_job_status("ok", ns)).status.succeeded == 3 and
                   j.status.completion_time and j, "3 succeeded pods and a completion time", timeout=60)
    st = job.status
    assert _conds(job) == {"SuccessCriteriaMet": ("True", "CompletionsReached"),
                           "Complete": ("True", "CompletionsReached")}
    assert st.start_time <= st.completion_time and not st.active and not st.failed and st.ready == 0
    pods = core.list_namespaced_pod(ns, label_selector="batch.kubernetes.io/job-name=ok").items
    assert len(pods) == 3 and {p.status.phase for p in pods} == {"Succeeded"}
    ref = pods[0].metadata.owner_references[0]
    assert (ref.kind, ref.name, ref.uid, ref.controller) == ("Job", "ok", job.metadata.uid, True)
    reasons = [e.reason for e in core.list_namespaced_event(ns).items if e.involved_object.name == "ok"]
    assert reasons.count("SuccessfulCreate") == 3 and "Completed" in reasons


def test_job_fails_past_its_backoff_limit(batch, exits, ns):
    batch.create_namespaced_job(ns, _exiting("bad", 1, backoffLimit=1))
    job = wait_for(lambda: "Failed" in _conds(j := batch.read_namespaced_job_status("bad", ns)) and j,
                   "the Job to fail", timeout=60)
    assert _conds(job)["Failed"] == ("True", "BackoffLimitExceeded") and job.status.failed == 2
    assert _conds(job)["FailureTarget"] == ("True", "BackoffLimitExceeded") and not job.status.succeeded


def test_job_with_running_pods_tracks_active_and_ready_then_gc_deletes_them(batch, core, ns):
    # the built-in runtime's containers run until stopped: the Job stays Running with its pods active and ready
    batch.create_namespaced_job(ns, _job("long", parallelism=2, completions=4))
    wait_for(lambda: (s := batch.read_namespaced_job_status("long", ns).status).active == 2 and s.ready == 2,
             "2 active, ready pods", timeout=60)
    job = batch.read_namespaced_job("long", ns)
    assert job.status.start_time and not job.status.completion_time and not job.status.conditions
    batch.patch_namespaced_job("long", ns, {"spec": {"suspend": True}})
    job = wait_for(lambda: "Suspended" in _conds(j := batch.read_namespaced_job_status("long", ns)) and
                   not j.status.active and j, "the suspended Job without active pods", timeout=60)
    assert _conds(job)["Suspended"] == ("True", "JobSuspended") and job.status.start_time is None
    batch.patch_namespaced_job("long", ns, {"spec": {"suspend": False}})
    wait_for(lambda: batch.read_namespaced_job_status("long", ns).status.active == 2, "2 active pods again",
             timeout=60)
    batch.delete_namespaced_job("long", ns, propagation_policy="Background")
    wait_for(lambda: not [p for p in core.list_namespaced_pod(ns).items if not p.metadata.deletion_timestamp],
             "the Job's pods to be deleted", timeout=60)


def test_deleting_a_job_orphans_its_pods_by_default_with_a_warning(batch, core, raw, ns):
    batch.create_namespaced_job(ns, _job("orph"))
    wait_for(lambda: batch.read_namespaced_job_status("orph", ns).status.active == 1, "an active pod", timeout=60)
    r = raw("DELETE", f"/apis/batch/v1/namespaces/{ns}/jobs/orph")
    assert r.status_code in (200, 202) and "child pods are preserved by default" in r.headers["Warning"]
    wait_for(lambda: not [j for j in batch.list_namespaced_job(ns).items], "the Job gone", timeout=60)
    pods = wait_for(lambda: [p for p in core.list_namespaced_pod(ns).items if not p.metadata.owner_references],
                    "the orphaned pod", timeout=60)
    assert len(pods) == 1 and pods[0].metadata.labels["job-name"] == "orph" and not pods[0].metadata.deletion_timestamp


# ---- the disruption controller ----------------------------------------------------------------------------------------
def test_pdb_status_follows_the_selected_pods(apps, policy, ns):
    apps.create_namespaced_deployment(ns, deployment("web", replicas=3))
    policy.create_namespaced_pod_disruption_budget(ns, {
        "metadata": {"name": "min2"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})
    policy.create_namespaced_pod_disruption_budget(ns, {
        "metadata": {"name": "max50"}, "spec": {"maxUnavailable": "50%", "selector": {"matchLabels": {"app": "web"}}}})

    def status(name: str):
        return policy.read_namespaced_pod_disruption_budget_status(name, ns).status

    s = wait_for(lambda: (x := status("min2")).current_healthy == 3 and x, "3 healthy pods", timeout=60)
    assert (s.desired_healthy, s.expected_pods, s.disruptions_allowed, s.observed_generation) == (2, 3, 1, 1)
    assert [(c.type, c.status, c.reason) for c in s.conditions] == [("DisruptionAllowed", "True", "SufficientPods")]
    s = wait_for(lambda: (x := status("max50")).current_healthy == 3 and x, "3 healthy pods", timeout=60)
    assert (s.desired_healthy, s.expected_pods, s.disruptions_allowed) == (1, 3, 2)  # 50% of 3 rounds up to 2
    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 1}})
    s = wait_for(lambda: (x := status("min2")).current_healthy == 1 and x, "1 healthy pod", timeout=60)
    assert s.disruptions_allowed == 0 and s.conditions[0].reason == "InsufficientPods"
    s = wait_for(lambda: (x := status("max50")).expected_pods == 1 and x.current_healthy == 1 and x, "scale 1",
                 timeout=60)
    assert (s.desired_healthy, s.disruptions_allowed) == (0, 1)
