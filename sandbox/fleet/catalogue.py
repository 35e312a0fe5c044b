"""ECS instance-type catalogue of the sandbox: shape, GPUs, hourly prices per zone, default stock.

The figures are ILLUSTRATIVE: plausible for cn-hangzhou pay-as-you-go (CNY per hour) in magnitude and ordering, not
a copy of any price list. Spot prices are derived per zone as a fraction (10-30 %) of the on-demand price, the
usual spot discount range, with a small deterministic variation per (type, zone) so that "the N cheapest types"
and "the cheapest zone" are meaningful. Zones are the sandbox identity's zones (``ctx.identity.zones``).

Default stock (instances that can still be launched per type and zone) is generous; tests and the faults file
change it through :meth:`sandbox.fleet.service.FleetService.set_spot_stock` / ``set_on_demand_stock``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceType:
    name: str
    family: str
    vcpu: int
    memory_gib: float
    gpus: int
    gpu_model: str | None
    on_demand_price: float  # CNY / hour in the first zone; other zones vary slightly

    @property
    def is_gpu(self) -> bool:
        return self.gpus > 0


def _t(name: str, vcpu: int, mem: float, gpus: int, gpu_model: str | None, price: float) -> InstanceType:
    family = ".".join(name.split(".")[:2])
    return InstanceType(name, family, vcpu, mem, gpus, gpu_model, price)


TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in (
        # GPU inference types
        _t("ecs.gn6i-c4g1.xlarge", 4, 15, 1, "NVIDIA T4", 8.90),
        _t("ecs.gn6i-c8g1.2xlarge", 8, 31, 1, "NVIDIA T4", 10.40),
        _t("ecs.gn6i-c16g1.4xlarge", 16, 62, 1, "NVIDIA T4", 13.10),
        _t("ecs.gn6i-c24g1.6xlarge", 24, 93, 1, "NVIDIA T4", 15.70),
        _t("ecs.gn6i-c24g1.12xlarge", 48, 186, 2, "NVIDIA T4", 31.40),
        _t("ecs.gn7i-c8g1.2xlarge", 8, 30, 1, "NVIDIA A10", 12.80),
        _t("ecs.gn7i-c16g1.4xlarge", 16, 60, 1, "NVIDIA A10", 15.90),
        _t("ecs.gn7i-c32g1.8xlarge", 32, 188, 1, "NVIDIA A10", 22.30),
        _t("ecs.gn6v-c8g1.2xlarge", 8, 32, 1, "NVIDIA V100", 26.50),
        _t("ecs.gn6v-c8g1.8xlarge", 32, 128, 4, "NVIDIA V100", 106.00),
        _t("ecs.gn6e-c12g1.3xlarge", 12, 92, 1, "NVIDIA V100", 33.20),
        _t("ecs.gn5-c4g1.xlarge", 4, 30, 1, "NVIDIA P100", 12.00),
        _t("ecs.gn5-c8g1.2xlarge", 8, 60, 1, "NVIDIA P100", 15.10),
        _t("ecs.gn5i-c4g1.xlarge", 4, 16, 1, "NVIDIA P4", 6.90),
        # CPU types
        _t("ecs.g7.xlarge", 4, 16, 0, None, 0.96),
        _t("ecs.g7.2xlarge", 8, 32, 0, None, 1.92),
        _t("ecs.g7.4xlarge", 16, 64, 0, None, 3.84),
        _t("ecs.c7.xlarge", 4, 8, 0, None, 0.78),
        _t("ecs.c7.2xlarge", 8, 16, 0, None, 1.56),
        _t("ecs.r7.xlarge", 4, 32, 0, None, 1.26),
        _t("ecs.g6.xlarge", 4, 16, 0, None, 0.88),
    )
}

DEFAULT_SPOT_STOCK_GPU = 100
DEFAULT_SPOT_STOCK_CPU = 500
DEFAULT_ON_DEMAND_STOCK = 1000


def get(name: str) -> InstanceType | None:
    return TYPES.get(name)


def _vary(key: str, lo: float, hi: float) -> float:
    """A deterministic value in [lo, hi] derived from ``key`` (stable across runs and machines)."""
    return lo + (hi - lo) * ((zlib.crc32(key.encode()) % 1000) / 999.0)


def on_demand_price(name: str, zone: str, zones: list[str] | tuple[str, ...]) -> float:
    """Pay-as-you-go hourly price: the list price, +0-4 % in zones other than the first."""
    t = TYPES[name]
    factor = 1.0 if zone == zones[0] else 1.0 + _vary(f"od/{name}/{zone}", 0.0, 0.04)
    return round(t.on_demand_price * factor, 3)


def spot_price(name: str, zone: str, zones: list[str] | tuple[str, ...]) -> float:
    """Spot hourly price: 10-30 % of the zone's on-demand price, varying by type and zone."""
    return round(on_demand_price(name, zone, zones) * _vary(f"spot/{name}/{zone}", 0.10, 0.30), 3)


def default_spot_stock(name: str) -> int:
    return DEFAULT_SPOT_STOCK_GPU if TYPES[name].is_gpu else DEFAULT_SPOT_STOCK_CPU
