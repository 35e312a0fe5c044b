"""The versions of one serving after the analysis decided: promote the new one, or remove it; retire and prune.

Every version is an arena release of the same serving name (label ``servingName``): a Deployment and a Service named
``<name>-<version>-tensorflow-serving``, a model-config ConfigMap ``<fullname>-cm`` and an HPA ``<release>-hpa``.
Live services are sacred: nothing here deletes or scales the version the main Ingress routes to, and each function
re-reads the main Ingress before it acts.

One run at a time changes a service (the service lock, clients/lease.py). Every function that scales a version to
zero or deletes anything takes ``still_held``, a callable that raises when the run has lost its lock (the flow
passes ``LeaseLock.check``), and calls it immediately before each such step: a run that lost its lock while it
drained or waited stops before it deletes what another run may be rolling out now.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.alibaba import AlibabaCloudCredentials
from clients.kube import KubeApiError, KubeClients
from clients.logs import run_logger
from core.spec import DeploySpec, truncate_name
from tasks.autoscaling import render_hpa
from tasks.live import LiveVersion, backend_of, main_backend, serving_releases
from tasks.model import delete_model_objects
from tasks.model_readers import ModelPrefix, UnknownReader, deployment_model_prefixes, readers_of, unread
from tasks.rollout.canary import with_backend
from tasks.rollout.quiet import RouteQuiet
from tasks.rollout.state import Phase, read_state, save_state
from tasks.serving import HERITAGE

MANAGED_BY = "app.kubernetes.io/managed-by"
HISTORY = "elastic-inference/release-history"
"""Annotation of the main Ingress: the releases it routed to, oldest first, as JSON
``[{"version", "service", "at"}, ...]``. Written with every change of its backend (in the same update), so
``rollback`` goes back to the release that served before the live one, as recorded, never guessed."""
HISTORY_LIMIT = 20

StillHeld = Callable[[], None]


def unguarded() -> None:
    """``still_held`` for a caller that holds no service lock (tests of one step): never raises."""


class Version(BaseModel):
    """One release of the serving, as its Deployment says."""

    version: str
    deployment: str
    created: str
    replicas: int
    release: str = ""  # the arena ``release`` label: ``<serving name>-<serving version>``

    @property
    def release_objects(self) -> list[tuple[str, str]]:
        """(kind, name) of what the release consists of, in deletion order."""
        return [("Service", self.deployment), ("Deployment", self.deployment),
                ("ConfigMap", truncate_name(f"{self.deployment}-cm"))]


def list_versions(kube: KubeClients, spec: DeploySpec) -> list[Version]:
    """The serving's releases rendered by this tool (of :func:`~tasks.live.serving_releases`), oldest first."""
    return [Version(version=(d["metadata"].get("labels") or {}).get("servingVersion", ""),
                    release=(d["metadata"].get("labels") or {}).get("release", ""),
                    deployment=d["metadata"]["name"], created=d["metadata"].get("creationTimestamp") or "",
                    replicas=int((d.get("spec") or {}).get("replicas") or 0))
            for d in serving_releases(kube, spec)
            if (d["metadata"].get("labels") or {}).get("heritage") == HERITAGE]  # never another tool's


def routed_service(kube: KubeClients, spec: DeploySpec) -> str | None:
    """The Service the main Ingress sends the spec's host and path to, read now."""
    found = main_backend(kube, spec)
    return found[1] if found else None


def hpas_targeting(kube: KubeClients, namespace: str, deployment: str) -> list[str]:
    items = kube.list("HorizontalPodAutoscaler", namespace).get("items") or []
    return [h["metadata"]["name"] for h in items
            if ((h.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == deployment]


def _delete_release(kube: KubeClients, namespace: str, deployment: str, protected: str | None,
                    still_held: StillHeld) -> list[str]:
    if deployment == protected:
        raise RuntimeError(f"refusing to delete {deployment}: the main Ingress routes to it")
    gone = []
    for h in hpas_targeting(kube, namespace, deployment):
        still_held()
        if kube.delete("HorizontalPodAutoscaler", h, namespace) == "deleted":
            gone.append(f"HorizontalPodAutoscaler {h}")
    for kind, name in Version(version="", deployment=deployment, created="", replicas=0).release_objects:
        still_held()
        if kube.delete(kind, name, namespace, "Foreground" if kind == "Deployment" else "Background") == "deleted":
            gone.append(f"{kind} {name}")
    return gone


@task(name="roll-back", cache_policy=NO_CACHE)
def remove_canary(kube: KubeClients, spec: DeploySpec, deployment: str | None = None,
                  drain_s: float | None = None, *, still_held: StillHeld = unguarded) -> list[str]:
    """Send no user traffic to the new version and remove it: the preview and canary Ingresses first, then, after
    the drain (``rollout.drain_seconds``, or ``drain_s``: nginx applies an Ingress change on its next sync, and
    requests in flight finish), its HPA, Service, Deployment and ConfigMap (``deployment``: another version's
    release, for a half-done rollout of an earlier run). The version the main Ingress routes to is never
    touched."""
    ns = spec.names.namespace
    target = spec.names.deployment if deployment is None else deployment
    protected = routed_service(kube, spec)
    removed = []
    still_held()
    if kube.delete("Ingress", spec.names.preview_ingress, ns) == "deleted":
        removed.append(f"Ingress {spec.names.preview_ingress}")
    if kube.delete("Ingress", spec.names.canary_ingress, ns) == "deleted":
        removed.append(f"Ingress {spec.names.canary_ingress}")
        if target and target != protected:
            drain(spec, drain_s, f"before removing {target}: user traffic left it with the canary Ingress")
    if target and target != protected:
        removed += _delete_release(kube, ns, target, protected, still_held)
    run_logger().info("rolled back %s: removed %s", target, ", ".join(removed) or "nothing (already gone)")
    return removed


def drain(spec: DeploySpec, drain_s: float | None, why: str) -> None:
    """Wait ``rollout.drain_seconds`` (or ``drain_s``) after a route change before the endpoints it left go away:
    ingress-nginx applies an Ingress change only on its next sync (a rate-limited queue, then a dynamic
    reconfiguration or a reload), so endpoints deleted before that turn in-flight and next requests into 502/503s."""
    seconds = spec.rollout.drain_seconds if drain_s is None else drain_s
    if seconds > 0:
        run_logger().info("draining %.0fs %s", seconds, why)
        time.sleep(seconds)


def history(ingress: dict[str, Any] | None) -> list[dict[str, str]]:
    """The release history recorded on a main Ingress (:data:`HISTORY`), oldest first; [] when absent or not
    readable (an Ingress from before the history was kept, or edited by hand)."""
    raw = (((ingress or {}).get("metadata") or {}).get("annotations") or {}).get(HISTORY)
    try:
        entries = json.loads(raw) if raw else []
    except ValueError:
        return []
    if not isinstance(entries, list):
        return []
    return [{k: str(e[k]) for k in ("version", "service", "at") if k in e} for e in entries
            if isinstance(e, dict) and e.get("service")]


def with_history(ingress: dict[str, Any], version: str, service: str) -> dict[str, Any]:
    """``ingress`` with ``service`` (release ``version``) appended to its history (the last :data:`HISTORY_LIMIT`
    entries kept); the same release twice in a row is recorded once."""
    entries = history(ingress)
    if not entries or entries[-1].get("service") != service:
        entries.append({"version": version, "service": service,
                        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    ingress = copy.deepcopy(ingress)
    meta = ingress.setdefault("metadata", {})
    meta["annotations"] = {**(meta.get("annotations") or {}),
                           HISTORY: json.dumps(entries[-HISTORY_LIMIT:], separators=(",", ":"))}
    return ingress


def record_release(kube: KubeClients, spec: DeploySpec, ingress: str) -> None:
    """Start (or continue) the history of the main Ingress ``ingress`` with this spec's release (a first deploy;
    a re-run of the live release records nothing new)."""
    update_ingress(kube, spec.names.namespace, ingress,
                   lambda current: with_history(current, str(spec.serving.version), spec.names.service))


CONFLICT_RETRIES = 5  # client-go retry.DefaultRetry: 5 steps


def update_ingress(kube: KubeClients, namespace: str, name: str,
                   change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Read the Ingress, ``change`` it, write it back with the resourceVersion read; on 409 Conflict (the ingress
    controller writes its status on its own loop) read it again and retry, as client-go's
    ``retry.RetryOnConflict`` does. Writes nothing when ``change`` changes nothing; raises when it is gone."""
    for attempt in range(CONFLICT_RETRIES):
        current = kube.get("Ingress", name, namespace)
        if current is None:
            raise RuntimeError(f"the main Ingress {name} is gone")
        updated = change(current)
        if updated == current:
            return
        try:
            kube.replace(updated)
            return
        except KubeApiError as exc:
            if not exc.conflict or attempt == CONFLICT_RETRIES - 1:
                raise
            time.sleep(0.01 * (attempt + 1))


def switch_main(kube: KubeClients, spec: DeploySpec, live: LiveVersion, service: str,
                version: str | None = None) -> None:
    """Point the main Ingress's rule for the host and path at ``service`` (release ``version``, default the spec's),
    recording it in the Ingress's release history in the same update (a read-modify-replace, so a concurrent
    change to the Ingress is never overwritten: :func:`update_ingress`)."""

    def switched(current: dict[str, Any]) -> dict[str, Any]:
        if not history(current) and live.service != service:  # a history starts with what served before it
            current = with_history(current, live.serving_version or "", live.service)
        out = with_backend(current, spec.ingress.host, spec.ingress.path, service, spec.ingress.service_port)
        return with_history(out, str(spec.serving.version) if version is None else version, service)

    update_ingress(kube, spec.names.namespace, live.ingress, switched)


class Promotion(BaseModel):
    previous: str
    retired_hpas: list[str]
    scaled_to_zero: str
    pruned: list[str]
    quiet: str = ""  # what said the previous version's route carried no traffic any more (SLS), when it was asked


@task(name="promote", cache_policy=NO_CACHE)
def promote(kube: KubeClients, spec: DeploySpec, live: LiveVersion, credentials: AlibabaCloudCredentials,
            drain_s: float | None = None, retire_previous: bool = True, *,
            still_held: StillHeld = unguarded) -> Promotion:
    """The new version becomes the live one: its HPA on its own route, the main Ingress to its Service, the canary
    Ingress removed; then (``retire_previous``) the previous version's HPAs removed and, after ``drain_s``
    seconds for requests in flight, its Deployment scaled to zero; releases beyond ``rollout.keep_versions``
    deleted, with the model prefixes only they read (``credentials``: OSS)."""
    ns = spec.names.namespace
    logger = run_logger()
    still_held()
    kube.apply(render_hpa(spec))  # on its own route: the main route once the Ingress points at it
    switch_main(kube, spec, live, spec.names.service)
    still_held()
    kube.delete("Ingress", spec.names.canary_ingress, ns)
    logger.info("promoted %s: the main Ingress %s routes to %s", spec.serving.version, live.ingress,
                spec.names.service)
    if not retire_previous:
        return Promotion(previous=live.service, retired_hpas=[], scaled_to_zero="", pruned=[])
    return retire(kube, spec, live.service, credentials, drain_s, still_held=still_held)


def retire(kube: KubeClients, spec: DeploySpec, previous: str, credentials: AlibabaCloudCredentials,
           drain_s: float | None = None, *, still_held: StillHeld = unguarded,
           quiet: RouteQuiet | None = None) -> Promotion:
    """The previous version stops serving: its HPAs go, its replicas drain and, once ``quiet`` (its route carries
    no request any more in SLS, tasks/rollout/quiet.py; a route that stays busy raises and leaves the replicas as they are),
    go to zero; old releases pruned."""
    ns = spec.names.namespace
    if routed_service(kube, spec) == previous:
        raise RuntimeError(f"refusing to retire {previous}: the main Ingress still routes to it")
    hpas = hpas_targeting(kube, ns, previous)
    for h in hpas:
        still_held()
        kube.delete("HorizontalPodAutoscaler", h, ns)
    drain(spec, drain_s, f"before scaling {previous} to zero: user traffic left it")
    said = quiet.wait() if quiet is not None else ""
    still_held()  # the drain may have outlasted the lock: scale to zero only while this run still holds it
    try:
        kube.scale(previous, ns, 0)
    except KubeApiError as exc:
        if not exc.not_found:
            raise
    pruned = prune(kube, spec, credentials, still_held=still_held)
    run_logger().info("retired %s (HPA %s removed, scaled to zero%s); pruned %s", previous, ", ".join(hpas) or "-",
                      f" once {said}" if said else "", ", ".join(pruned) or "nothing")
    return Promotion(previous=previous, retired_hpas=hpas, scaled_to_zero=previous, pruned=pruned, quiet=said)


def prune(kube: KubeClients, spec: DeploySpec, credentials: AlibabaCloudCredentials, *,
          still_held: StillHeld = unguarded) -> list[str]:
    """Delete the oldest releases beyond ``rollout.keep_versions`` (the routed one always kept), then the model
    prefixes that were their own and that no Deployment left in the cluster reads (:func:`prune_models`)."""
    ns = spec.names.namespace
    routed = routed_service(kube, spec)
    versions = [v for v in list_versions(kube, spec) if v.deployment not in (routed, spec.names.deployment)]
    keep_others = spec.rollout.keep_versions - 1  # the live one is one of those kept
    doomed = versions[: max(0, len(versions) - keep_others)]
    out: list[str] = []
    own: list[ModelPrefix] = []
    for v in doomed:
        own += _own_model_prefixes(kube, ns, v)  # read from its pod template before it goes
        out += _delete_release(kube, ns, v.deployment, routed, still_held)
    return out + prune_models(kube, credentials, own, still_held=still_held)


def _own_model_prefixes(kube: KubeClients, namespace: str, v: Version) -> list[ModelPrefix]:
    """The prefixes ``v``'s pods read that are its own: named after its release (``<model_path>/<release>``,
    ``DerivedNames.model_base_path``). A base path shared by releases (the single ``<model_path>`` deploys
    used before releases had their own) is never pruned: it may hold what other releases, in other clusters
    too, read."""
    logger = run_logger()
    try:
        reads = deployment_model_prefixes(kube, namespace, v.deployment)
    except UnknownReader as exc:
        logger.warning("keeping the model of %s: %s", v.deployment, exc)
        return []
    own = [p for p in reads if v.release and p.prefix.rstrip("/").rsplit("/", 1)[-1] == v.release]
    for p in sorted(reads - set(own), key=str):
        logger.info("keeping %s: %s read it, but it is not its own release directory", p, v.deployment)
    return own


def prune_models(kube: KubeClients, credentials: AlibabaCloudCredentials, candidates: list[ModelPrefix], *,
                 still_held: StillHeld = unguarded) -> list[str]:
    """Delete each candidate prefix that no Deployment of the cluster reads now (read from their pod templates,
    so a kept release can still be rolled back to, and a release's pod that restarts finds its files). When
    what some Deployment reads cannot be told, nothing is deleted. ``still_held`` is asked before each delete."""
    if not candidates:
        return []
    logger = run_logger()
    try:
        free, held = unread(candidates, readers_of(kube))
    except UnknownReader as exc:
        logger.warning("keeping %s: %s", ", ".join(map(str, candidates)), exc)
        return []
    for prefix, who in held.items():
        logger.info("keeping %s: %s reads it", prefix, who)
    out = []
    for prefix in free:
        still_held()
        n = delete_model_objects(credentials, prefix.bucket, prefix.prefix)
        out.append(f"Model {prefix} ({n} objects)")
    return out



@task(name="hold-replicas", cache_policy=NO_CACHE)
def hold_replicas(kube: KubeClients, spec: DeploySpec, deployment: str, *,
                  still_held: StillHeld = unguarded) -> list[dict[str, Any]]:
    """Keep ``deployment`` at its replicas: its HPAs are removed (an HPA whose route no longer gets traffic would
    scale it down) and returned as manifests, to be re-created by :func:`restore`."""
    ns = spec.names.namespace
    saved = []
    for name in hpas_targeting(kube, ns, deployment):
        obj = kube.get("HorizontalPodAutoscaler", name, ns) or {}
        meta = obj.get("metadata") or {}
        saved.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                      "metadata": {"name": name, "namespace": ns, "labels": meta.get("labels") or {}},
                      "spec": obj.get("spec") or {}})
        still_held()
        kube.delete("HorizontalPodAutoscaler", name, ns)
    return saved


def restore(kube: KubeClients, spec: DeploySpec, live: LiveVersion, hpas: list[dict[str, Any]],
            drain_s: float | None = None, *, still_held: StillHeld = unguarded) -> list[str]:
    """Blue-green switched back: the main Ingress to the previous version (kept at its replicas), its HPAs
    re-created, then, after the drain, the new version removed."""
    still_held()
    switch_main(kube, spec, live, live.service, live.serving_version or "")
    for manifest in hpas:
        kube.apply(manifest)
    drain(spec, drain_s, f"before removing {spec.names.deployment}: user traffic went back to {live.service}")
    return remove_canary.fn(kube, spec, drain_s=0, still_held=still_held)


def _canary_backend(kube: KubeClients, spec: DeploySpec) -> str | None:
    obj = kube.get("Ingress", spec.names.canary_ingress, spec.names.namespace)
    if obj is None:
        return None
    for rule in (obj.get("spec") or {}).get("rules") or []:  # whatever host/path a dead run's canary was for
        for entry in (rule.get("http") or {}).get("paths") or []:
            if backend := backend_of(entry):
                return str(backend[0])
    return ""


@task(name="recover", cache_policy=NO_CACHE)
def recover(kube: KubeClients, spec: DeploySpec, credentials: AlibabaCloudCredentials, own_canary: bool = True,
            *, still_held: StillHeld = unguarded) -> list[str]:
    """Finish or undo what a run that died mid-rollout left, before this run changes anything:

    - a canary Ingress for another version: that rollout never promoted; its canary is removed (the version the
      main Ingress routes to is untouched);
    - a canary for this run's version: left, this run rolls it out again from the isolated stress test (unless
      ``own_canary`` is False: a rollback undoes every canary);
    - after a promotion whose run died before retiring: a version the main Ingress no longer routes to that still
      has an HPA, or still has replicas (blue-green holds the previous version at its replicas without its HPA
      through the bake), is retired (HPA removed, scaled to zero).
    """
    logger = run_logger()
    done: list[str] = []
    state = read_state(kube, spec)
    interrupted = state is not None and state.phase not in (Phase.SUCCEEDED, Phase.FAILED)
    if interrupted:
        logger.warning("the rollout of %s (run %s) was interrupted at %s, %d%% of user traffic on it",
                       state.release, state.run or "unknown", state.stage, state.weight)
    done += _recover(kube, spec, credentials, own_canary, still_held)
    if interrupted:
        save_state(kube, spec, state.model_copy(update={
            "phase": Phase.FAILED, "decision": "interrupted",
            "reason": f"the run stopped at {state.stage}; the next run recovered: {'; '.join(done) or 'nothing left'}"}))
    return done


def _recover(kube: KubeClients, spec: DeploySpec, credentials: AlibabaCloudCredentials, own_canary: bool,
             still_held: StillHeld) -> list[str]:
    logger = run_logger()
    done: list[str] = []
    ns = spec.names.namespace
    routed = routed_service(kube, spec)
    backend = _canary_backend(kube, spec)
    mine = spec.names.deployment if own_canary else None
    if backend is not None and backend != mine:
        logger.warning("an earlier run left a canary for %s: undoing that rollout", backend or "(no Service)")
        # "" (no Service): only the Ingress goes
        done += remove_canary.fn(kube, spec, deployment=backend, still_held=still_held)
    if routed is None:
        return done
    for v in list_versions(kube, spec):
        if v.deployment in (routed, mine):
            continue
        if not v.replicas and not hpas_targeting(kube, ns, v.deployment):
            continue
        logger.warning("%s still runs though the main Ingress routes to %s: retiring it", v.deployment, routed)
        retire(kube, spec, v.deployment, credentials, drain_s=0, still_held=still_held)
        done.append(f"retired {v.deployment}")
    return done
