"""The ESS mixed-instances rule (pure functions of sandbox/fleet/mix.py)."""

from __future__ import annotations

import pytest

from sandbox.fleet import mix
from sandbox.fleet.mix import Offer, Policy, Slot

ZONES = ("z-a", "z-b")


def offers(prices: dict[str, float], spot_stock: int = 100, od_stock: int = 100, **per_type_stock: int):
    out = {}
    for t, spot_price in prices.items():
        for i, z in enumerate(ZONES):
            out[(t, z)] = Offer(t, z, on_demand_price=10.0 + i, spot_price=spot_price + i * 0.01,
                                on_demand_stock=od_stock, spot_stock=per_type_stock.get(t.replace(".", "_"), spot_stock))
    return out


def policy(**kw) -> Policy:
    base = dict(instance_types=("a", "b", "c"), zones=ZONES, spot_strategy="SpotAsPriceGo",
                multi_az_policy="COST_OPTIMIZED", on_demand_base_capacity=0,
                on_demand_percentage_above_base_capacity=30, spot_instance_pools=2)
    base.update(kw)
    return Policy(**base)


@pytest.mark.parametrize(
    ("n", "base", "pct", "od"),
    [(10, 0, 30, 3), (7, 0, 30, 3), (0, 0, 30, 0), (1, 0, 30, 1), (5, 2, 50, 4), (1, 2, 50, 1),
     (10, 0, 0, 0), (10, 0, 100, 10), (3, 10, 0, 3), (4, 1, 34, 3)],
)
def test_on_demand_target_is_base_plus_ceil_of_percentage(n, base, pct, od):
    assert mix.on_demand_target(n, base, pct) == od
    assert mix.split(n, base, pct) == (od, n - od)


def test_scale_out_ten_at_thirty_percent_spreads_spot_over_the_cheapest_pools():
    plan = mix.plan_scale_out(policy(), [], 10, offers({"a": 1.0, "b": 0.5, "c": 2.0}))
    spot = [x for x in plan.launches if x.spot]
    assert len(plan.launches) == 10 and plan.shortfall == 0
    assert len(spot) == 7
    by_type = {t: sum(1 for x in spot if x.instance_type == t) for t in "abc"}
    assert by_type == {"a": 3, "b": 4, "c": 0}  # the two cheapest pools, evenly (b cheaper gets the odd one)
    assert all(x.zone == "z-a" for x in spot)  # cheapest zone while it has stock


def test_price_limit_excludes_types_above_it():
    p = policy(spot_strategy="SpotWithPriceLimit", price_limits={"a": 1.5, "b": 0.1, "c": 3.0})
    plan = mix.plan_scale_out(p, [], 10, offers({"a": 1.0, "b": 0.5, "c": 2.0}))
    assert {x.instance_type for x in plan.launches if x.spot} == {"a", "c"}


def test_spot_shortage_compensated_with_on_demand():
    plan = mix.plan_scale_out(policy(), [], 10, offers({"a": 1.0, "b": 0.5, "c": 2.0}, spot_stock=0))
    assert sum(not x.spot for x in plan.launches) == 10
    assert plan.compensated == 7 and plan.shortfall == 0
    assert any("compensate_with_on_demand=true" in n for n in plan.notes)


def test_spot_shortage_without_compensation_is_a_shortfall():
    plan = mix.plan_scale_out(policy(compensate_with_on_demand=False), [], 10,
                              offers({"a": 1.0, "b": 0.5, "c": 2.0}, spot_stock=0))
    assert len(plan.launches) == 3 and plan.shortfall == 7
    assert any("compensate_with_on_demand=false" in n for n in plan.notes)


def test_pools_exhausted_fall_back_to_next_cheapest_type():
    plan = mix.plan_scale_out(policy(), [], 10, offers({"a": 1.0, "b": 0.5, "c": 2.0}, a=0, b=0))
    assert {x.instance_type for x in plan.launches if x.spot} == {"c"}


def test_scale_out_from_existing_keeps_rule():
    cur = [Slot("i1", "a", "z-a", False), Slot("i2", "b", "z-a", True)]
    plan = mix.plan_scale_out(policy(), cur, 7, offers({"a": 1.0, "b": 0.5, "c": 2.0}))
    od = sum(not x.spot for x in plan.launches)
    assert od == 2 and len(plan.launches) == 5  # 3 pay-as-you-go in total


def test_scale_in_keeps_mix():
    cur = [Slot(f"o{i}", "a", "z-a", False, created=i) for i in range(3)]
    cur += [Slot(f"s{i}", "b" if i % 2 else "c", "z-a", True, created=i) for i in range(7)]
    removed = mix.plan_scale_in(policy(), cur, 7)
    left = [s for s in cur if s not in removed]
    assert len(left) == 7 and sum(not s.spot for s in left) == 3


def test_scale_in_removes_compensation_first():
    cur = [Slot(f"o{i}", "a", "z-a", False, created=i, reason="compensation" if i >= 3 else "on_demand")
           for i in range(6)] + [Slot(f"s{i}", "b", "z-a", True) for i in range(4)]
    removed = mix.plan_scale_in(policy(), cur, 7)
    assert sorted(s.instance_id for s in removed) == ["o3", "o4", "o5"]


def test_no_spot_strategy_is_all_on_demand_and_priority_is_all_spot():
    assert all(not x.spot for x in mix.plan_scale_out(policy(spot_strategy="NoSpot"), [], 4,
                                                      offers({"a": 1.0, "b": 0.5, "c": 2.0})).launches)
    prio = mix.plan_scale_out(policy(multi_az_policy="PRIORITY"), [], 4, offers({"a": 1.0, "b": 0.5, "c": 2.0}))
    assert all(x.spot for x in prio.launches)
