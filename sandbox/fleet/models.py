"""Data shapes of the ECS/ESS fleet: scaling groups, instances, scaling activities (persisted as JSON rows)."""

from __future__ import annotations

import zlib
from typing import Any, Literal

from pydantic import BaseModel, Field

from .mix import Policy

InstanceStatus = Literal["Pending", "Starting", "Running", "Stopping", "Released"]
IN_FLIGHT = ("Pending", "Starting")
LIVE = ("Pending", "Starting", "Running", "Stopping")
ActivityStatus = Literal["InProgress", "Successful", "Warning", "Failed"]


def zone_of_vswitch(vswitch_id: str, zones: list[str] | tuple[str, ...]) -> str:
    """The zone a vswitch lives in. The sandbox has no VPC API: a vswitch id maps to a zone by a stable hash."""
    return zones[zlib.crc32(vswitch_id.encode()) % len(zones)]


class GroupSpec(BaseModel):
    """What a node pool asks of its ESS scaling group (set by the ACK service)."""

    instance_types: list[str]
    vswitch_ids: list[str]
    instance_charge_type: str = "PostPaid"
    spot_strategy: str = "NoSpot"
    price_limits: dict[str, float] = Field(default_factory=dict)
    on_demand_base_capacity: int = 0
    on_demand_percentage_above_base_capacity: int = 100
    spot_instance_pools: int = 2
    spot_instance_remedy: bool = False
    compensate_with_on_demand: bool = True
    multi_az_policy: str = "PRIORITY"
    auto_scaling: bool = False
    min_size: int = 0
    max_size: int = 1000
    # Opaque to the fleet: labels/taints/runtime the node controller applies to the pool's nodes.
    node_template: dict[str, Any] = Field(default_factory=dict)

    def zones(self, all_zones: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for v in self.vswitch_ids:
            z = zone_of_vswitch(v, all_zones)
            if z not in out:
                out.append(z)
        return tuple(out)

    def policy(self, all_zones: list[str] | tuple[str, ...]) -> Policy:
        return Policy(
            instance_types=tuple(self.instance_types),
            zones=self.zones(all_zones),
            spot_strategy=self.spot_strategy,
            price_limits=dict(self.price_limits),
            on_demand_base_capacity=self.on_demand_base_capacity,
            on_demand_percentage_above_base_capacity=self.on_demand_percentage_above_base_capacity,
            spot_instance_pools=self.spot_instance_pools,
            compensate_with_on_demand=self.compensate_with_on_demand,
            multi_az_policy=self.multi_az_policy,
            instance_charge_type=self.instance_charge_type,
        )


class Shortfall(BaseModel):
    count: int
    notes: list[str]
    at: float
    retry_at: float


class ScalingGroup(BaseModel):
    """One ESS scaling group (one per node pool)."""

    pool_id: str
    scaling_group_id: str
    spec: GroupSpec
    desired: int
    created: float
    deleting: bool = False
    # Last scale-out that could not reach the desired capacity (None once it is reached).
    shortfall: Shortfall | None = None
    # Why pay-as-you-go instances stand in for spot ones (kept while compensation instances exist).
    compensation_notes: list[str] = Field(default_factory=list)


class Instance(BaseModel):
    """One ECS instance. Times are simulated Unix seconds."""

    instance_id: str
    pool_id: str
    scaling_group_id: str
    instance_type: str
    zone: str
    vswitch_id: str
    instance_charge_type: str  # PostPaid | PrePaid
    spot_strategy: str  # NoSpot | SpotWithPriceLimit | SpotAsPriceGo
    spot_price_limit: float | None = None
    hourly_price: float
    private_ip: str
    hostname: str
    status: InstanceStatus
    created: float
    status_since: float
    next_at: float | None = None  # when the current lifecycle stage ends
    reclaim_at: float | None = None  # spot interruption: released at this time (notice given before)
    launch_reason: str = ""  # mix.REASON_*
    activity_id: str = ""
    release_reason: str = ""
    released_at: float | None = None

    @property
    def spot(self) -> bool:
        return self.spot_strategy != "NoSpot"


class Activity(BaseModel):
    """An ESS scaling activity (DescribeScalingActivities-like)."""

    activity_id: str
    pool_id: str
    scaling_group_id: str
    cause: str
    description: str
    status_code: ActivityStatus
    final_status: ActivityStatus
    status_message: str
    start_time: float
    end_time: float | None = None
    total_capacity: int
    created_instances: list[str] = Field(default_factory=list)
    removed_instances: list[str] = Field(default_factory=list)
    shortfall: int = 0
