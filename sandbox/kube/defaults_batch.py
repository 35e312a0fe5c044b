"""Defaulting of ``batch/v1`` (Job, CronJob) and ``rbac.authorization.k8s.io/v1``, and the Job selector the API
server generates on create.

From ``pkg/apis/batch/v1/defaults.go`` (``SetDefaults_Job``: completions and parallelism 1 when both unset,
parallelism 1, backoffLimit 6 (MaxInt32 with backoffLimitPerIndex), the template's labels copied to an unlabelled
Job, completionMode NonIndexed, suspend false, podReplacementPolicy TerminatingOrFailed (Failed with a
podFailurePolicy; gate JobPodReplacementPolicy, on in 1.33); ``SetDefaults_CronJob``: concurrencyPolicy Allow,
suspend false, successfulJobsHistoryLimit 3, failedJobsHistoryLimit 1), the generated pod-template defaults
(``SetObjectDefaults_Job``/``_CronJob`` default the template's PodSpec, not the CronJob's Job template as a Job),
``pkg/registry/batch/job/strategy.go`` (``generateSelector`` unless ``spec.manualSelector``: template labels
``batch.kubernetes.io/controller-uid`` and ``controller-uid`` = the Job's uid, ``batch.kubernetes.io/job-name``
and ``job-name`` = its name, selector ``matchLabels`` on ``batch.kubernetes.io/controller-uid``) and
``pkg/apis/rbac/v1/defaults.go`` (roleRef.apiGroup and User/Group subjects' apiGroup = rbac.authorization.k8s.io).
PodDisruptionBudget (policy/v1) has no defaults.
"""

from __future__ import annotations

from typing import Any

from .defaults import pod_spec

RBAC_GROUP = "rbac.authorization.k8s.io"
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID = "controller-uid"
LEGACY_JOB_NAME = "job-name"
MAX_INT32 = 2**31 - 1


def _template(tmpl: Any) -> None:
    if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
        pod_spec(tmpl["spec"])


def job(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    if spec.get("parallelism") is None:
        spec["parallelism"] = 1
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = MAX_INT32 if spec.get("backoffLimitPerIndex") is not None else 6
    _copy_template_labels(obj)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    for rule in (spec.get("podFailurePolicy") or {}).get("rules") or []:
        for pattern in rule.get("onPodConditions") or []:
            pattern.setdefault("status", "True")
    spec.setdefault("podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed")
    _template(spec.get("template"))


def _copy_template_labels(obj: dict[str, Any]) -> None:
    labels = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")
    if labels and not obj["metadata"].get("labels"):
        obj["metadata"]["labels"] = dict(labels)


def job_on_create(obj: dict[str, Any]) -> None:
    """``generateSelector`` (strategy.go), run once the uid is set and before validation. Upstream the Job's own
    labels then come from defaulting on every read (the template's, if the Job has none): done here once."""
    spec = obj.setdefault("spec", {})
    if spec.get("manualSelector"):
        return
    meta = obj["metadata"]
    tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
    labels = tmeta.get("labels") or {}
    for key in (LEGACY_JOB_NAME, JOB_NAME):
        labels.setdefault(key, meta.get("name", ""))
    for key in (LEGACY_CONTROLLER_UID, CONTROLLER_UID):
        labels.setdefault(key, meta.get("uid", ""))
    tmeta["labels"] = labels
    sel = spec.get("selector") or {}
    sel["matchLabels"] = {**(sel.get("matchLabels") or {})}
    sel["matchLabels"].setdefault(CONTROLLER_UID, meta.get("uid", ""))
    spec["selector"] = sel
    _copy_template_labels(obj)


def cronjob(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    _template(((spec.get("jobTemplate") or {}).get("spec") or {}).get("template"))


def _subjects(obj: dict[str, Any]) -> None:
    for s in obj.get("subjects") or []:
        if isinstance(s, dict) and not s.get("apiGroup") and s.get("kind") in ("User", "Group"):
            s["apiGroup"] = RBAC_GROUP
    ref = obj.get("roleRef")
    if isinstance(ref, dict) and not ref.get("apiGroup"):
        ref["apiGroup"] = RBAC_GROUP


def pdb(obj: dict[str, Any]) -> None:
    # the four counters are not omitempty in the Go type (status of a new PDB reads back as zeros)
    st = obj.setdefault("status", {})
    for k in ("disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"):
        st.setdefault(k, 0)


DEFAULTERS = {
    "jobs.batch": job,
    "cronjobs.batch": cronjob,
    "poddisruptionbudgets.policy": pdb,
    "rolebindings.rbac.authorization.k8s.io": _subjects,
    "clusterrolebindings.rbac.authorization.k8s.io": _subjects,
}
ON_CREATE = {"jobs.batch": job_on_create}


def apply_defaults(key: str, obj: dict[str, Any]) -> None:
    fn = DEFAULTERS.get(key)
    if fn:
        fn(obj)


def on_create(key: str, obj: dict[str, Any]) -> None:
    fn = ON_CREATE.get(key)
    if fn:
        fn(obj)
