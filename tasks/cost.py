"""Estimated hourly cost of the pool: the instances ACK reports, priced from a price table (pure).

ACK's API tells which instances the pool holds (DescribeClusterNodes: ``instance_type``, ``instance_charge_type``,
``spot_strategy``) but not what they cost, and our clients have no price API. So the estimate multiplies those
instances by a price table, a small YAML file of hourly prices per instance type (pay-as-you-go and spot, optionally
per zone), and the report names the table it used. The default table, ``examples/prices-cn-hangzhou.yaml``, holds
ILLUSTRATIVE figures (the sandbox catalogue's); pass your own for real estimates.

The comparison: the same instances all pay-as-you-go (each instance's on-demand price in its zone). Subscription
(``PrePaid``) instances are priced at the on-demand rate both ways (they are not part of the spot saving).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

DEFAULT_PRICE_TABLE = Path(__file__).resolve().parents[1] / "examples" / "prices-cn-hangzhou.yaml"
SPOT_STRATEGIES = frozenset({"SpotWithPriceLimit", "SpotAsPriceGo"})
Billing = Literal["pay-as-you-go", "spot", "subscription"]


def billing_of(charge_type: str | None, spot_strategy: str | None) -> Billing:
    """How an instance is billed, from ECS's InstanceChargeType and SpotStrategy (labels or DescribeClusterNodes).

    Spot iff the spot strategy is SpotWithPriceLimit or SpotAsPriceGo (spot instances are PostPaid).
    """
    if spot_strategy in SPOT_STRATEGIES:
        return "spot"
    if charge_type == "PrePaid":
        return "subscription"
    return "pay-as-you-go"


class InstancePrice(BaseModel):
    on_demand: float = Field(ge=0)
    spot: float | None = Field(default=None, ge=0)
    on_demand_by_zone: dict[str, float] = Field(default_factory=dict)
    spot_by_zone: dict[str, float] = Field(default_factory=dict)


class PriceTable(BaseModel):
    currency: str = "CNY"
    region: str | None = None
    source: str = "price table"
    path: str | None = None
    prices: dict[str, InstancePrice]

    def price(self, instance_type: str, billing: Billing, zone: str | None = None) -> float | None:
        p = self.prices.get(instance_type)
        if p is None:
            return None
        if billing == "spot":
            if zone and zone in p.spot_by_zone:
                return p.spot_by_zone[zone]
            if p.spot is not None:
                return p.spot
            if p.spot_by_zone:
                return sum(p.spot_by_zone.values()) / len(p.spot_by_zone)
            return None
        if zone and zone in p.on_demand_by_zone:
            return p.on_demand_by_zone[zone]
        return p.on_demand


def load_price_table(path: str | Path | None = None) -> PriceTable:
    """Read a price table YAML (default: ``examples/prices-cn-hangzhou.yaml``)."""
    path = Path(path) if path else DEFAULT_PRICE_TABLE
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("prices"), dict):
        raise ValueError(f"{path}: a price table needs a 'prices' mapping of instance type → prices")
    shown = path.resolve()
    root = DEFAULT_PRICE_TABLE.parents[1]
    shown_text = str(shown.relative_to(root)) if shown.is_relative_to(root) else str(path)
    return PriceTable.model_validate({**data, "path": shown_text})


class PricedInstance(BaseModel):
    instance_id: str
    instance_type: str | None
    zone: str | None
    billing: Billing
    hourly: float | None
    hourly_on_demand: float | None


class CostEstimate(BaseModel):
    currency: str
    source: str = Field(description="Which price table the figures come from")
    instances: list[PricedInstance]
    pay_as_you_go: int
    spot: int
    subscription: int
    hourly: float = Field(description="The pool as it is (priced instances only)")
    hourly_all_on_demand: float = Field(description="The same instances, all pay-as-you-go")
    saving: float
    saving_pct: float
    unpriced: list[str] = Field(default_factory=list, description="Instance types missing from the table")

    def summary(self) -> str:
        return (
            f"{self.hourly:.2f} {self.currency}/h vs {self.hourly_all_on_demand:.2f} {self.currency}/h all "
            f"pay-as-you-go: {self.saving_pct:.0f}% saved ({self.source})"
        )


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def estimate_cost(
    instances: Iterable[Any], table: PriceTable, zones: dict[str, str] | None = None
) -> CostEstimate:
    """Price each instance (DescribeClusterNodes items or dicts with ``instance_id``, ``instance_type``,
    ``instance_charge_type``, ``spot_strategy``); ``zones`` maps instance id → zone when known."""
    zones = zones or {}
    priced: list[PricedInstance] = []
    unpriced: set[str] = set()
    for inst in instances:
        iid = str(_get(inst, "instance_id"))
        itype = _get(inst, "instance_type")
        zone = zones.get(iid) or _get(inst, "zone_id") or _get(inst, "zone")
        billing = billing_of(_get(inst, "instance_charge_type"), _get(inst, "spot_strategy"))
        hourly = table.price(itype, billing, zone) if itype else None
        on_demand = table.price(itype, "pay-as-you-go", zone) if itype else None
        if hourly is None or on_demand is None:
            unpriced.add(str(itype))
        priced.append(
            PricedInstance(
                instance_id=iid, instance_type=itype, zone=zone, billing=billing, hourly=hourly,
                hourly_on_demand=on_demand,
            )
        )
    ok = [p for p in priced if p.hourly is not None and p.hourly_on_demand is not None]
    hourly = round(sum(p.hourly or 0 for p in ok), 4)
    all_od = round(sum(p.hourly_on_demand or 0 for p in ok), 4)
    saving = round(all_od - hourly, 4)
    return CostEstimate(
        currency=table.currency,
        source=f"estimated from the price table {table.path or '(inline)'}: {table.source}",
        instances=priced,
        pay_as_you_go=sum(1 for p in priced if p.billing == "pay-as-you-go"),
        spot=sum(1 for p in priced if p.billing == "spot"),
        subscription=sum(1 for p in priced if p.billing == "subscription"),
        hourly=hourly,
        hourly_all_on_demand=all_od,
        saving=saving,
        saving_pct=round(100 * saving / all_od, 2) if all_od else 0.0,
        unpriced=sorted(unpriced),
    )
