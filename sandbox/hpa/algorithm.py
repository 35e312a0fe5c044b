"""The autoscaling/v2 HPA algorithm as pure functions (no store, no clock: time is passed in, in seconds).

Followed from upstream Kubernetes ``pkg/controller/podautoscaler`` (master, 2025):

- ``replica_calculator.go``: ``Tolerances.isWithin``, ``GetExternalPerPodMetricReplicas`` (AverageValue target),
  ``GetExternalMetricReplicas`` + ``getUsageRatioReplicaCount`` (Value target), ``getPerPodUsage``. Metric values
  are milli-units (``Quantity.MilliValue()``), as upstream.
- ``horizontal.go``: ``stabilizeRecommendation`` + ``convertDesiredReplicasWithRules`` + ``calculateScaleUpLimit``
  (the path without ``spec.behavior``), ``stabilizeRecommendationWithBehaviors`` +
  ``convertDesiredReplicasWithBehaviorRate`` + ``calculateScaleUpLimitWithScalingRules`` /
  ``calculateScaleDownLimitWithBehaviors`` + ``getReplicasChangePerPeriod`` + ``storeScaleEvent`` /
  ``markScaleEventsOutdated`` (the path with behavior), ``setConditionInList`` (lastTransitionTime only on flips).
- ``pkg/apis/autoscaling/v2/defaults.go``: ``GenerateHPAScaleUpRules`` / ``GenerateHPAScaleDownRules`` (behavior
  defaults, filled only when ``spec.behavior`` is set at all).

Histories (recommendations, scale events) are plain lists the caller owns; functions that upstream mutates in
place return the new list instead.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from decimal import ROUND_CEILING
from typing import Any

MAX_INT32 = 2**31 - 1
DEFAULT_TOLERANCE = 0.1
DEFAULT_DOWNSCALE_STABILIZATION = 300.0  # --horizontal-pod-autoscaler-downscale-stabilization (5 min)
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0


# ---- quantities -----------------------------------------------------------------------------------------------------
def milli_value(quantity: str | int | float) -> int:
    """``resource.Quantity.MilliValue()`` (rounded up, like upstream's ScaledValue(Milli))."""
    from kubernetes.utils import parse_quantity

    q = parse_quantity(quantity) * 1000
    return int(q.to_integral_value(rounding=ROUND_CEILING))


_SUFFIXES = ["", "k", "M", "G", "T", "P", "E"]


def format_milli(milli: int) -> str:
    """``resource.NewMilliQuantity(milli, DecimalSI).String()``: canonical form (``3334m``, ``10``, ``1k``)."""
    if milli == 0:
        return "0"
    if milli % 1000:
        return f"{milli}m"
    value, exp = milli // 1000, 0
    while exp < len(_SUFFIXES) - 1 and value % 1000 == 0:
        value //= 1000
        exp += 1
    return f"{value}{_SUFFIXES[exp]}"


# ---- tolerance and replica calculation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerances:
    scale_down: float = DEFAULT_TOLERANCE
    scale_up: float = DEFAULT_TOLERANCE

    def is_within(self, ratio: float) -> bool:
        """``(1 - down) <= ratio <= (1 + up)``; NaN (0/0) is never within, as in Go."""
        return (1.0 - self.scale_down) <= ratio <= (1.0 + self.scale_up)


def _ratio(usage: float, denominator: float) -> float:
    """Go float division: x/0 is +Inf, 0/0 is NaN."""
    if denominator == 0:
        return math.nan if usage == 0 else math.copysign(math.inf, usage)
    return usage / denominator


def _ceil_int32(x: float) -> int:
    if math.isnan(x):
        return 0
    return MAX_INT32 if x > MAX_INT32 else int(math.ceil(x))


def per_pod_usage(usage_milli: int, status_replicas: int) -> int:
    """``getPerPodUsage``: ceil(usage / statusReplicas); 0 when there are no replicas."""
    if status_replicas == 0:
        return 0
    return int(math.ceil(usage_milli / status_replicas))


def external_per_pod_replicas(status_replicas: int, target_per_pod_milli: int, values_milli: list[int],
                              tol: Tolerances = Tolerances()) -> tuple[int, int, int]:
    """AverageValue target (``GetExternalPerPodMetricReplicas``) -> (replicas, usage, per-pod usage), all milli.

    ``usage = sum(values)``; ``ratio = usage / (target * statusReplicas)``; outside the tolerance
    ``replicas = ceil(usage / target)``, else ``statusReplicas``.
    """
    usage = sum(values_milli)
    replicas = status_replicas
    ratio = _ratio(usage, target_per_pod_milli * status_replicas)
    if not tol.is_within(ratio):
        replicas = _ceil_int32(usage / target_per_pod_milli)
    return replicas, usage, per_pod_usage(usage, status_replicas)


def external_value_replicas(current_replicas: int, target_milli: int, values_milli: list[int], ready_pods: int,
                            tol: Tolerances = Tolerances()) -> tuple[int, int]:
    """Value target (``GetExternalMetricReplicas`` + ``getUsageRatioReplicaCount``) -> (replicas, usage milli).

    ``ratio = usage / target``; with currentReplicas != 0: within tolerance keep ``currentReplicas``, else
    ``ceil(ratio * readyPods)``; with 0 replicas ``ceil(ratio)``.
    """
    usage = sum(values_milli)
    ratio = usage / target_milli
    if current_replicas != 0:
        if tol.is_within(ratio):
            return current_replicas, usage
        return _ceil_int32(ratio * ready_pods), usage
    return _ceil_int32(ratio), usage


# ---- behavior defaults ----------------------------------------------------------------------------------------------
def default_scale_up_rules() -> dict[str, Any]:
    return {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                         {"type": "Percent", "value": 100, "periodSeconds": 15}]}


def default_scale_down_rules() -> dict[str, Any]:
    # stabilizationWindowSeconds stays unset: the controller fills its --downscale-stabilization flag
    # (maybeInitScaleDownStabilizationWindow).
    return {"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}


def fill_behavior(behavior: dict[str, Any] | None,
                  downscale_window: float = DEFAULT_DOWNSCALE_STABILIZATION) -> dict[str, Any] | None:
    """Behavior with every unset field defaulted (None stays None: the no-behavior path)."""
    if behavior is None:
        return None
    out = copy.deepcopy(behavior)
    for key, defaults in (("scaleUp", default_scale_up_rules()), ("scaleDown", default_scale_down_rules())):
        rules = out.get(key)
        if rules is None:
            out[key] = defaults
            continue
        if not rules.get("policies"):
            rules["policies"] = defaults["policies"]
        rules.setdefault("selectPolicy", "Max")
        if "stabilizationWindowSeconds" in defaults:
            rules.setdefault("stabilizationWindowSeconds", defaults["stabilizationWindowSeconds"])
    out["scaleDown"].setdefault("stabilizationWindowSeconds", int(downscale_window))
    return out


# ---- histories ------------------------------------------------------------------------------------------------------
@dataclass
class Recommendation:
    replicas: int
    timestamp: float


@dataclass
class ScaleEvent:
    change: int  # absolute, non-negative
    timestamp: float
    outdated: bool = False


def _record(history: list[Recommendation], replicas: int, now: float, old_index: int | None) -> list[Recommendation]:
    out = list(history)
    if old_index is not None:
        out[old_index] = Recommendation(replicas, now)
    else:
        out.append(Recommendation(replicas, now))
    return out


# ---- the path without spec.behavior ---------------------------------------------------------------------------------
def stabilize_recommendation(history: list[Recommendation], prenormalized: int, now: float,
                             window: float = DEFAULT_DOWNSCALE_STABILIZATION) -> tuple[int, list[Recommendation]]:
    """Max of the recommendations in the last ``window`` seconds (the new one included); one stale sample is reused."""
    best = prenormalized
    old_index = None
    cutoff = now - window
    for i, rec in enumerate(history):
        if rec.timestamp < cutoff:
            old_index = i
        elif rec.replicas > best:
            best = rec.replicas
    return best, _record(history, prenormalized, now, old_index)


def scale_up_limit(current: int) -> int:
    return int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))


def convert_desired_with_rules(current: int, desired: int, min_replicas: int, max_replicas: int) -> tuple[int, str, str]:
    """Clamp to ``[min, min(max, max(2*current, 4))]`` -> (replicas, ScalingLimited reason, message)."""
    limit = scale_up_limit(current)
    if max_replicas > limit:
        maximum, reason, message = (limit, "ScaleUpLimit",
                                    "the desired replica count is increasing faster than the maximum scale rate")
    else:
        maximum, reason, message = (max_replicas, "TooManyReplicas",
                                    "the desired replica count is more than the maximum replica count")
    if desired < min_replicas:
        return min_replicas, "TooFewReplicas", "the desired replica count is less than the minimum replica count"
    if desired > maximum:
        return maximum, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


@dataclass
class Normalized:
    """Outcome of a normalization: the replicas and the AbleToScale / ScalingLimited conditions to set."""

    replicas: int
    able_reason: str
    able_message: str
    limited: bool
    limited_reason: str
    limited_message: str


def normalize(history: list[Recommendation], current: int, prenormalized: int, min_replicas: int, max_replicas: int,
              now: float, window: float = DEFAULT_DOWNSCALE_STABILIZATION) -> tuple[Normalized, list[Recommendation]]:
    """``normalizeDesiredReplicas`` (no behavior)."""
    stabilized, history = stabilize_recommendation(history, prenormalized, now, window)
    if stabilized != prenormalized:
        able = ("ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation")
    else:
        able = ("ReadyForNewScale", "recommended size matches current size")
    desired, reason, message = convert_desired_with_rules(current, stabilized, min_replicas, max_replicas)
    return Normalized(desired, *able, desired != stabilized, reason, message), history


# ---- the path with spec.behavior ------------------------------------------------------------------------------------
def stabilize_with_behaviors(history: list[Recommendation], current: int, desired: int, up_window: float,
                             down_window: float, now: float) -> tuple[int, str, str, list[Recommendation]]:
    """Clamp ``current`` into [min of the up window, max of the down window] (the new recommendation included)."""
    up_rec = down_rec = desired
    up_cutoff, down_cutoff = now - up_window, now - down_window
    old_index = None
    for i, rec in enumerate(history):
        if rec.timestamp > up_cutoff:
            up_rec = min(rec.replicas, up_rec)
        if rec.timestamp > down_cutoff:
            down_rec = max(rec.replicas, down_rec)
        if rec.timestamp < up_cutoff and rec.timestamp < down_cutoff:
            old_index = i
    recommendation = current
    if recommendation < up_rec:
        recommendation = up_rec
    if recommendation > down_rec:
        recommendation = down_rec
    history = _record(history, desired, now, old_index)
    if desired >= current:
        reason, message = ("ScaleUpStabilized",
                           "recent recommendations were lower than current one, applying the lowest recent "
                           "recommendation")
    else:
        reason, message = ("ScaleDownStabilized",
                           "recent recommendations were higher than current one, applying the highest recent "
                           "recommendation")
    return recommendation, reason, message, history


def replicas_change_per_period(period: float, events: list[ScaleEvent], now: float) -> int:
    cutoff = now - period
    return sum(e.change for e in events if e.timestamp > cutoff)


def scale_up_limit_with_rules(current: int, up_events: list[ScaleEvent], down_events: list[ScaleEvent],
                              rules: dict[str, Any], now: float) -> int:
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    pick, result = (min, MAX_INT32) if select == "Min" else (max, -MAX_INT32 - 1)
    for p in rules.get("policies") or []:
        period = p["periodSeconds"]
        start = current - replicas_change_per_period(period, up_events, now) + \
            replicas_change_per_period(period, down_events, now)
        if p["type"] == "Pods":
            proposed = start + p["value"]
        else:  # Percent: rounded up so that a small target can still grow
            proposed = int(math.ceil(start * (1 + p["value"] / 100)))
        result = pick(result, proposed)
    return result


def scale_down_limit_with_rules(current: int, up_events: list[ScaleEvent], down_events: list[ScaleEvent],
                                rules: dict[str, Any], now: float) -> int:
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    pick, result = (max, -MAX_INT32 - 1) if select == "Min" else (min, MAX_INT32)
    for p in rules.get("policies") or []:
        period = p["periodSeconds"]
        start = current - replicas_change_per_period(period, up_events, now) + \
            replicas_change_per_period(period, down_events, now)
        # Percent: truncated toward zero (Go int32 conversion)
        proposed = start - p["value"] if p["type"] == "Pods" else int(start * (1 - p["value"] / 100))
        result = pick(result, proposed)
    return result


def convert_with_behavior_rate(current: int, desired: int, min_replicas: int, max_replicas: int,
                               behavior: dict[str, Any], up_events: list[ScaleEvent],
                               down_events: list[ScaleEvent], now: float) -> tuple[int, str, str]:
    if desired > current:
        limit = scale_up_limit_with_rules(current, up_events, down_events, behavior["scaleUp"], now)
        limit = max(limit, current)
        if max_replicas > limit:
            maximum, reason, message = (limit, "ScaleUpLimit",
                                        "the desired replica count is increasing faster than the maximum scale rate")
        else:
            maximum, reason, message = (max_replicas, "TooManyReplicas",
                                        "the desired replica count is more than the maximum replica count")
        if desired > maximum:
            return maximum, reason, message
    elif desired < current:
        limit = scale_down_limit_with_rules(current, up_events, down_events, behavior["scaleDown"], now)
        limit = min(limit, current)
        if min_replicas < limit:
            minimum, reason, message = (limit, "ScaleDownLimit",
                                        "the desired replica count is decreasing faster than the maximum scale rate")
        else:
            minimum, reason, message = (min_replicas, "TooFewReplicas",
                                        "the desired replica count is less than the minimum replica count")
        if desired < minimum:
            return minimum, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


def normalize_with_behaviors(history: list[Recommendation], behavior: dict[str, Any], current: int,
                             prenormalized: int, min_replicas: int, max_replicas: int, up_events: list[ScaleEvent],
                             down_events: list[ScaleEvent], now: float) -> tuple[Normalized, list[Recommendation]]:
    """``normalizeDesiredReplicasWithBehaviors``; ``behavior`` must be filled (:func:`fill_behavior`)."""
    stabilized, reason, message, history = stabilize_with_behaviors(
        history, current, prenormalized, behavior["scaleUp"]["stabilizationWindowSeconds"],
        behavior["scaleDown"]["stabilizationWindowSeconds"], now)
    if stabilized == prenormalized:
        reason, message = "ReadyForNewScale", "recommended size matches current size"
    desired, lreason, lmessage = convert_with_behavior_rate(current, stabilized, min_replicas, max_replicas,
                                                            behavior, up_events, down_events, now)
    return Normalized(desired, reason, message, desired != stabilized, lreason, lmessage), history


def longest_policy_period(rules: dict[str, Any]) -> float:
    return max([p["periodSeconds"] for p in rules.get("policies") or []] + [0])


def store_scale_event(behavior: dict[str, Any] | None, up_events: list[ScaleEvent], down_events: list[ScaleEvent],
                      prev: int, new: int, now: float) -> tuple[list[ScaleEvent], list[ScaleEvent]]:
    """Record a rescale in the up or down history (reusing one outdated slot); nothing without behavior."""
    if behavior is None:
        return up_events, down_events
    up = new > prev
    events = [ScaleEvent(e.change, e.timestamp, e.outdated) for e in (up_events if up else down_events)]
    cutoff = now - longest_policy_period(behavior["scaleUp" if up else "scaleDown"])
    old_index = None
    for i, e in enumerate(events):
        if e.timestamp < cutoff:
            e.outdated = True
        if e.outdated:
            old_index = i
    event = ScaleEvent(abs(new - prev), now)
    if old_index is not None:
        events[old_index] = event
    else:
        events.append(event)
    return (events, down_events) if up else (up_events, events)


# ---- conditions -----------------------------------------------------------------------------------------------------
def set_condition(conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str,
                  now_iso: str) -> list[dict[str, Any]]:
    """``setConditionInList``: add or update; ``lastTransitionTime`` changes only when the status flips."""
    out = [dict(c) for c in conditions]
    for c in out:
        if c.get("type") == ctype:
            break
    else:
        c = {"type": ctype}
        out.append(c)
    if c.get("status") != status:
        c["lastTransitionTime"] = now_iso
    c["status"], c["reason"], c["message"] = status, reason, message
    return out


# ---- Go formatting of a LabelSelector (what upstream's messages print with %+v) ---------------------------------
def label_selector_string(selector: dict[str, Any] | None) -> str:
    """``(*metav1.LabelSelector).String()`` (gogo-generated), as printed in HPA events and errors."""
    if selector is None:
        return "nil"
    labels = selector.get("matchLabels") or {}
    ml = "map[string]string{" + "".join(f"{k}: {labels[k]}," for k in sorted(labels)) + "}"
    exprs = "[]LabelSelectorRequirement{"
    for e in selector.get("matchExpressions") or []:
        values = " ".join(e.get("values") or [])
        exprs += f"LabelSelectorRequirement{{Key:{e.get('key')},Operator:{e.get('operator')},Values:[{values}],}},"
    exprs += "}"
    return f"&LabelSelector{{MatchLabels:{ml},MatchExpressions:{exprs},}}"
