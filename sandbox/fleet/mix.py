"""The ESS mixed-instances rule as PURE functions (no store, no clock).

Given a scaling group's policy, the instances it holds and the desired capacity, these functions say what to
launch (type, zone, spot or pay-as-you-go, and why) or which instances to remove.

Rules (ESS CreateScalingGroup, docs/alibaba-apis.md "ESS mixed instances"):

- **On-demand count.** With base B and percentage P, a group of N instances holds
  ``min(N, B) + ceil(P% * max(0, N - B))`` pay-as-you-go instances (:func:`on_demand_target`). ESS does not
  document its rounding; the sandbox uses ``ceil`` (the verification step accepts floor or ceil).
- **Spot pools.** Spot instances are spread evenly over the ``spot_instance_pools`` cheapest instance types (by the
  lowest spot price over the group's zones) among the group's types that are *available as spot*: with
  ``SpotWithPriceLimit`` a type is available only if it has a ``price_limit`` entry and its spot price does not
  exceed it; with ``SpotAsPriceGo`` every type is. Each new spot instance goes to the pool holding the fewest of
  the group's spot instances (ties: the cheaper type). When every pool is out of stock, the next cheapest eligible
  types are tried (ESS's cost-optimized policy walks the types in price order).
- **Shortage.** If no spot capacity is left: with ``compensate_with_on_demand`` (cost-optimized groups only) a
  pay-as-you-go instance is launched instead and the plan records why; otherwise the instance is not launched and
  the plan reports a shortfall with the reason (the scaling activity then ends "Warning" = partial success, or
  "Failed" if nothing could be launched).
- **Zones.** Cost-optimized: the cheapest zone with stock (ties: the zone holding fewest of the group's
  instances). BALANCE: the zone holding fewest instances. PRIORITY: the first zone (vswitch order) with stock.
- **Non-cost-optimized groups.** ESS applies base/percentage/pools/compensation only with
  ``multi_az_policy=COST_OPTIMIZED``; with PRIORITY or BALANCE a spot group launches spot only (types in the given
  order) and a NoSpot group pay-as-you-go only.
- **Scale-in** keeps the mix: while the group holds more pay-as-you-go instances than the rule wants for the new
  size, a pay-as-you-go instance is removed (compensation instances first), otherwise a spot instance from the
  largest spot pool (ties: the more expensive type); within the chosen kind and type, the zone with the most
  instances, then the oldest instance (ESS's default ``OldestInstance`` removal policy). ESS documents that it
  rebalances the mix when scaling in; the exact order is the sandbox's choice.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Why an instance was launched (kept on the instance; the node pool's conditions are derived from it).
REASON_BASE = "base"  # within on_demand_base_capacity
REASON_ON_DEMAND = "on_demand"  # the percentage above base
REASON_SPOT = "spot"
REASON_COMPENSATION = "compensation"  # pay-as-you-go instead of spot (no spot capacity)


def on_demand_target(n: int, base: int, percentage: int) -> int:
    """Pay-as-you-go instances a group of ``n`` should hold: ``min(n, B) + ceil(P% * max(0, n - B))``."""
    if n <= 0:
        return 0
    above = max(0, n - base)
    # integer ceil of percentage * above / 100, exact (no float rounding surprises)
    return min(n, base) + (percentage * above + 99) // 100


def split(n: int, base: int, percentage: int) -> tuple[int, int]:
    """(pay-as-you-go, spot) for a group of ``n`` following the rule."""
    od = on_demand_target(n, base, percentage)
    return od, n - od


@dataclass(frozen=True)
class Offer:
    """What one instance type costs and how many can still be launched, in one zone."""

    instance_type: str
    zone: str
    on_demand_price: float
    spot_price: float
    on_demand_stock: int
    spot_stock: int


@dataclass(frozen=True)
class Policy:
    instance_types: tuple[str, ...]
    zones: tuple[str, ...]  # in vswitch order
    spot_strategy: str = "NoSpot"  # NoSpot | SpotWithPriceLimit | SpotAsPriceGo
    price_limits: Mapping[str, float] = field(default_factory=dict)
    on_demand_base_capacity: int = 0
    on_demand_percentage_above_base_capacity: int = 100
    spot_instance_pools: int = 2
    compensate_with_on_demand: bool = True
    multi_az_policy: str = "PRIORITY"
    instance_charge_type: str = "PostPaid"

    @property
    def uses_spot(self) -> bool:
        return self.instance_charge_type == "PostPaid" and self.spot_strategy != "NoSpot"

    @property
    def cost_optimized(self) -> bool:
        return self.multi_az_policy == "COST_OPTIMIZED"

    def effective_base_percentage(self) -> tuple[int, int]:
        """(base, percentage) as ESS applies them: only cost-optimized groups mix; others are all-spot/all-PAYG."""
        if not self.uses_spot:
            return 0, 100
        if not self.cost_optimized:
            return 0, 0
        return self.on_demand_base_capacity, self.on_demand_percentage_above_base_capacity


@dataclass(frozen=True)
class Slot:
    """An instance of the group as the mix rule sees it."""

    instance_id: str
    instance_type: str
    zone: str
    spot: bool
    created: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class Launch:
    instance_type: str
    zone: str
    spot: bool
    reason: str  # REASON_*
    price: float


@dataclass
class Plan:
    launches: list[Launch] = field(default_factory=list)
    shortfall: int = 0  # instances that could not be launched
    notes: list[str] = field(default_factory=list)  # human-readable reasons for deviations

    @property
    def compensated(self) -> int:
        return sum(1 for x in self.launches if x.reason == REASON_COMPENSATION)


def _min_price(offers: Mapping[tuple[str, str], Offer], t: str, zones: Sequence[str], spot: bool) -> float:
    prices = [
        (o.spot_price if spot else o.on_demand_price) for z in zones if (o := offers.get((t, z))) is not None
    ]
    return min(prices) if prices else math.inf


def spot_eligible(policy: Policy, offers: Mapping[tuple[str, str], Offer]) -> list[str]:
    """Types that may run as spot, cheapest first (price limits applied)."""
    if not policy.uses_spot:
        return []
    out = []
    for t in policy.instance_types:
        price = _min_price(offers, t, policy.zones, spot=True)
        if price == math.inf:
            continue
        if policy.spot_strategy == "SpotWithPriceLimit":
            limit = policy.price_limits.get(t)
            if limit is None or price > limit:
                continue
        out.append(t)
    if policy.cost_optimized:
        out.sort(key=lambda t: (_min_price(offers, t, policy.zones, True), policy.instance_types.index(t)))
    return out


def spot_pools(policy: Policy, offers: Mapping[tuple[str, str], Offer]) -> list[str]:
    """The ``spot_instance_pools`` cheapest spot-eligible types (all eligible types when not cost-optimized)."""
    eligible = spot_eligible(policy, offers)
    return eligible[: policy.spot_instance_pools] if policy.cost_optimized else eligible


def _zone_for(
    policy: Policy, offers: Mapping[tuple[str, str], Offer], stock: dict[tuple[str, str, bool], int],
    t: str, spot: bool, per_zone: Counter,
) -> str | None:
    zones = [z for z in policy.zones if (t, z) in offers and stock.get((t, z, spot), 0) > 0]
    if policy.spot_strategy == "SpotWithPriceLimit" and spot:
        limit = policy.price_limits.get(t, math.inf)
        zones = [z for z in zones if offers[(t, z)].spot_price <= limit]
    if not zones:
        return None
    if policy.multi_az_policy == "PRIORITY":
        return zones[0]
    if policy.multi_az_policy == "BALANCE":
        return min(zones, key=lambda z: (per_zone[z], policy.zones.index(z)))
    price = (lambda z: offers[(t, z)].spot_price) if spot else (lambda z: offers[(t, z)].on_demand_price)
    return min(zones, key=lambda z: (price(z), per_zone[z], policy.zones.index(z)))


def plan_scale_out(
    policy: Policy, current: Sequence[Slot], desired: int, offers: Mapping[tuple[str, str], Offer]
) -> Plan:
    """What to launch so that a group holding ``current`` reaches ``desired`` instances."""
    plan = Plan()
    add = desired - len(current)
    if add <= 0:
        return plan
    base, pct = policy.effective_base_percentage()
    cur_od = sum(1 for s in current if not s.spot)
    od_need = min(add, max(0, on_demand_target(desired, base, pct) - cur_od))
    spot_need = add - od_need

    stock: dict[tuple[str, str, bool], int] = {}
    for (t, z), o in offers.items():
        stock[(t, z, True)] = o.spot_stock
        stock[(t, z, False)] = o.on_demand_stock
    per_zone: Counter = Counter(s.zone for s in current)
    per_spot_type: Counter = Counter(s.instance_type for s in current if s.spot)

    def launch(t: str, z: str, spot: bool, reason: str) -> None:
        o = offers[(t, z)]
        stock[(t, z, spot)] -= 1
        per_zone[z] += 1
        if spot:
            per_spot_type[t] += 1
        plan.launches.append(Launch(t, z, spot, reason, o.spot_price if spot else o.on_demand_price))

    def on_demand_types() -> list[str]:
        types = [t for t in policy.instance_types if any((t, z) in offers for z in policy.zones)]
        if policy.cost_optimized:
            types.sort(key=lambda t: (_min_price(offers, t, policy.zones, False), policy.instance_types.index(t)))
        return types

    def launch_on_demand(reason: str) -> bool:
        for t in on_demand_types():
            z = _zone_for(policy, offers, stock, t, False, per_zone)
            if z is not None:
                launch(t, z, False, reason)
                return True
        return False

    od_reasons = []
    for i in range(od_need):
        in_base = cur_od + i < min(desired, base)
        od_reasons.append(REASON_BASE if in_base else REASON_ON_DEMAND)
    for reason in od_reasons:
        if not launch_on_demand(reason):
            plan.shortfall += 1
            _note(plan, "pay-as-you-go stock exhausted for every instance type of the group "
                        f"({', '.join(policy.instance_types)}) in zones {', '.join(policy.zones)}")

    pools = spot_pools(policy, offers)
    eligible = spot_eligible(policy, offers)
    if spot_need and not eligible:
        why = ("no instance type of the group is available as spot within its price limit"
               if policy.spot_strategy == "SpotWithPriceLimit" else "no instance type of the group is offered as spot")
        _note(plan, why)
    for _ in range(spot_need):
        placed = False
        # the pools, fewest instances first; then the other eligible types in price order
        ordered = sorted(pools, key=lambda t: (per_spot_type[t], pools.index(t)))
        ordered += [t for t in eligible if t not in pools]
        for t in ordered:
            z = _zone_for(policy, offers, stock, t, True, per_zone)
            if z is not None:
                launch(t, z, True, REASON_SPOT)
                placed = True
                break
        if placed:
            continue
        exhausted = ", ".join(eligible or policy.instance_types)
        if policy.compensate_with_on_demand and policy.cost_optimized:
            if launch_on_demand(REASON_COMPENSATION):
                _note(plan, f"spot stock exhausted for {exhausted}: launched pay-as-you-go instances instead "
                            "(compensate_with_on_demand=true)")
                continue
            plan.shortfall += 1
            _note(plan, f"spot stock exhausted for {exhausted} and no pay-as-you-go stock to compensate")
        else:
            plan.shortfall += 1
            why = ("compensate_with_on_demand=false" if policy.cost_optimized
                   else f"multi_az_policy={policy.multi_az_policy} does not compensate with pay-as-you-go")
            _note(plan, f"spot stock exhausted for {exhausted}: instances not launched ({why})")
    return plan


def _note(plan: Plan, text: str) -> None:
    if text not in plan.notes:
        plan.notes.append(text)


def plan_scale_in(
    policy: Policy, current: Sequence[Slot], desired: int, offers: Mapping[tuple[str, str], Offer] | None = None
) -> list[Slot]:
    """Which instances to remove so that ``current`` shrinks to ``desired`` keeping the mix (see module doc)."""
    remaining = list(current)
    remove: list[Slot] = []
    base, pct = policy.effective_base_percentage()
    od_target = on_demand_target(max(0, desired), base, pct)
    offers = offers or {}

    def price(s: Slot) -> float:
        o = offers.get((s.instance_type, s.zone))
        return 0.0 if o is None else (o.spot_price if s.spot else o.on_demand_price)

    while len(remaining) > max(0, desired):
        od = [s for s in remaining if not s.spot]
        spot = [s for s in remaining if s.spot]
        if od and (len(od) > od_target or not spot):
            pick_from = [s for s in od if s.reason == REASON_COMPENSATION] or od
        else:
            by_type = Counter(s.instance_type for s in spot)
            t = max(by_type, key=lambda t: (by_type[t], max(price(s) for s in spot if s.instance_type == t)))
            pick_from = [s for s in spot if s.instance_type == t]
        by_zone = Counter(s.zone for s in pick_from)
        zone = max(by_zone, key=lambda z: by_zone[z])
        victim = min((s for s in pick_from if s.zone == zone), key=lambda s: (s.created, s.instance_id))
        remaining.remove(victim)
        remove.append(victim)
    return remove
