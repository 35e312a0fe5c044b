"""batch/v1 Jobs and CronJobs, policy/v1 PodDisruptionBudgets through the official Python client."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException


@pytest.fixture(scope="module")
def batch(api_client):
    return client.BatchV1Api(api_client)


@pytest.fixture(scope="module")
def policy(api_client):
    return client.PolicyV1Api(api_client)


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
