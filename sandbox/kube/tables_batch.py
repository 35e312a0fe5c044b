"""``kubectl get`` columns of Jobs, CronJobs, PodDisruptionBudgets and the RBAC bindings.

After ``pkg/printers/internalversion/printers.go``: ``printJob`` (NAME STATUS COMPLETIONS DURATION AGE + wide
CONTAINERS IMAGES SELECTOR; STATUS from the conditions in upstream's order Complete, Failed, Terminating,
Suspended, FailureTarget, SuccessCriteriaMet, else Running; COMPLETIONS ``succeeded/completions`` or, without
completions, ``succeeded/1`` (``of <parallelism>`` when parallel); DURATION start to completion or to now),
``printCronJob`` (NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE + wide CONTAINERS IMAGES SELECTOR),
``printPodDisruptionBudget`` (NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE, ``N/A`` for an unset
bound), ``printRoleBinding``/``printClusterRoleBinding`` (NAME ROLE AGE + wide USERS GROUPS SERVICEACCOUNTS).
Roles and ClusterRoles print NAME CREATED AT, the default table of :mod:`sandbox.kube.tables`.
"""

from __future__ import annotations

from collections.abc import Callable

from .selectors import selector_string
from .tables import _AGE, _NAME, Col, _age, _c, _none, _ts, human_duration


def _cond(o: dict, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in (o.get("status") or {}).get("conditions") or [])


def _containers(tmpl: dict) -> list[str]:
    cs = (tmpl.get("spec") or {}).get("containers") or []
    return [",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)]


def _job(o: dict, now: float) -> list:
    sp, st = o.get("spec") or {}, o.get("status") or {}
    succeeded = st.get("succeeded", 0)
    if sp.get("completions") is not None:
        completions = f"{succeeded}/{sp['completions']}"
    else:
        par = sp.get("parallelism") or 0
        completions = f"{succeeded}/1 of {par}" if par > 1 else f"{succeeded}/1"
    start, end = _ts(st.get("startTime")), _ts(st.get("completionTime"))
    duration = "" if start is None else human_duration((end if end is not None else now) - start)
    status = "Running"
    for cond, name in (("Complete", "Complete"), ("Failed", "Failed")):
        if _cond(o, cond):
            status = name
            break
    else:
        if o["metadata"].get("deletionTimestamp"):
            status = "Terminating"
        else:
            for cond in ("Suspended", "FailureTarget", "SuccessCriteriaMet"):
                if _cond(o, cond):
                    status = cond
                    break
    return [o["metadata"]["name"], status, completions, duration, _age(o, now),
            *_containers(sp.get("template") or {}), _none(selector_string(sp.get("selector")))]


def _cronjob(o: dict, now: float) -> list:
    sp, st = o.get("spec") or {}, o.get("status") or {}
    last = _ts(st.get("lastScheduleTime"))
    job_spec = (sp.get("jobTemplate") or {}).get("spec") or {}
    suspend = sp.get("suspend")
    return [o["metadata"]["name"], sp.get("schedule", ""), _none(sp.get("timeZone")),
            "<unset>" if suspend is None else str(suspend).lower(), len(st.get("active") or []),
            "<none>" if last is None else human_duration(now - last), _age(o, now),
            *_containers(job_spec.get("template") or {}), _none(selector_string(job_spec.get("selector")))]


def _pdb(o: dict, now: float) -> list:
    sp = o.get("spec") or {}
    mn, mx = sp.get("minAvailable"), sp.get("maxUnavailable")
    return [o["metadata"]["name"], "N/A" if mn is None else str(mn), "N/A" if mx is None else str(mx),
            (o.get("status") or {}).get("disruptionsAllowed", 0), _age(o, now)]


def _binding(o: dict, now: float) -> list:
    ref = o.get("roleRef") or {}
    subjects = o.get("subjects") or []

    def of(kind: str) -> str:
        names = [(f"{s.get('namespace', '')}/{s.get('name', '')}" if kind == "ServiceAccount" else s.get("name", ""))
                 for s in subjects if s.get("kind") == kind]
        return ", ".join(names)

    return [o["metadata"]["name"], f"{ref.get('kind', '')}/{ref.get('name', '')}", _age(o, now), of("User"),
            of("Group"), of("ServiceAccount")]


_WIDE = (("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1))
_BINDING = _c(_NAME, ("Role",), _AGE, ("Users", "string", 1), ("Groups", "string", 1),
              ("ServiceAccounts", "string", 1))
PRINTERS: dict[str, tuple[list[Col], Callable[[dict, float], list]]] = {
    "jobs.batch": (_c(_NAME, ("Status",), ("Completions",), ("Duration",), _AGE, *_WIDE), _job),
    "cronjobs.batch": (_c(_NAME, ("Schedule",), ("Timezone",), ("Suspend", "boolean"), ("Active", "integer"),
                          ("Last Schedule",), _AGE, *_WIDE), _cronjob),
    "poddisruptionbudgets.policy": (_c(_NAME, ("Min Available",), ("Max Unavailable",),
                                       ("Allowed Disruptions", "integer"), _AGE), _pdb),
    "rolebindings.rbac.authorization.k8s.io": (_BINDING, _binding),
    "clusterrolebindings.rbac.authorization.k8s.io": (_BINDING, _binding),
}
