"""The cost estimate: instances as ACK reports them, priced from a price table."""

from __future__ import annotations

import pytest

from clients.ack import Node
from tasks.cost import DEFAULT_PRICE_TABLE, PriceTable, billing_of, estimate_cost, load_price_table

TABLE = PriceTable.model_validate({
    "currency": "CNY",
    "source": "test prices",
    "prices": {
        "ecs.a": {"on_demand": 10.0, "spot": 2.0, "spot_by_zone": {"z1": 1.0}, "on_demand_by_zone": {"z2": 11.0}},
        "ecs.b": {"on_demand": 4.0, "spot_by_zone": {"z1": 1.0, "z2": 2.0}},
    },
})


def node(iid: str, itype: str, spot: str = "NoSpot", charge: str = "PostPaid") -> Node:
    return Node(instance_id=iid, instance_type=itype, instance_charge_type=charge, spot_strategy=spot)


def test_billing_of():
    assert billing_of("PostPaid", "SpotAsPriceGo") == "spot"
    assert billing_of("PostPaid", "SpotWithPriceLimit") == "spot"
    assert billing_of("PostPaid", "NoSpot") == "pay-as-you-go"
    assert billing_of(None, None) == "pay-as-you-go"
    assert billing_of("PrePaid", "NoSpot") == "subscription"


def test_mixed_pool_versus_all_pay_as_you_go():
    nodes = [
        node("i-1", "ecs.a"),                       # 10 both ways
        node("i-2", "ecs.a", "SpotAsPriceGo"),      # spot in z1: 1.0 (vs 10)
        node("i-3", "ecs.a", "SpotAsPriceGo"),      # zone unknown: 2.0 (vs 10)
        node("i-4", "ecs.b", "SpotWithPriceLimit"),  # no flat spot: mean of zones 1.5 (vs 4)
        node("i-5", "ecs.a", charge="PrePaid"),     # subscription: on-demand both ways, z2 → 11
    ]
    est = estimate_cost(nodes, TABLE, zones={"i-2": "z1", "i-5": "z2"})
    assert (est.pay_as_you_go, est.spot, est.subscription) == (1, 3, 1)
    assert est.hourly == pytest.approx(10 + 1 + 2 + 1.5 + 11)
    assert est.hourly_all_on_demand == pytest.approx(10 + 10 + 10 + 4 + 11)
    assert est.saving == pytest.approx(45 - 25.5)
    assert est.saving_pct == pytest.approx(100 * 19.5 / 45, abs=0.01)
    assert est.unpriced == []
    assert "test prices" in est.source and "CNY" in est.summary()


def test_unknown_types_are_listed_not_guessed():
    est = estimate_cost([node("i-1", "ecs.zzz"), node("i-2", "ecs.a")], TABLE)
    assert est.unpriced == ["ecs.zzz"]
    assert est.hourly == 10 and est.hourly_all_on_demand == 10
    assert est.instances[0].hourly is None


def test_empty_pool():
    est = estimate_cost([], TABLE)
    assert est.hourly == 0 and est.saving_pct == 0


def test_the_shipped_table_prices_the_demo_types():
    table = load_price_table()
    assert table.path == "examples/prices-cn-hangzhou.yaml" and "illustrative" in table.source
    assert DEFAULT_PRICE_TABLE.is_file()
    for t in ("ecs.gn6i-c4g1.xlarge", "ecs.gn6i-c8g1.2xlarge", "ecs.gn7i-c8g1.2xlarge"):
        p = table.prices[t]
        assert 0 < p.spot < p.on_demand
        assert set(p.spot_by_zone) == {"cn-hangzhou-h", "cn-hangzhou-i", "cn-hangzhou-j"}


def test_a_table_without_prices_is_refused(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("currency: CNY\n")
    with pytest.raises(ValueError, match="prices"):
        load_price_table(bad)
