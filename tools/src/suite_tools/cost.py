"""``suite cost``: the monthly compute cost of the topology the specs declare.

Per service: its task size (``[task] cpu``/``memory``) and count at the scaling minimum, the
desired count and the maximum, spread over its capacity providers as ECS spreads them (each
provider's ``base`` first, the rest by ``weight``). Fargate bills vCPU-hours and GB-hours; a
task on the cluster's EC2 capacity is charged the share of an instance it fills (the larger of
its CPU and memory share of the infra's first instance type; no packing waste, no agent
reserve). A scheduled service is one always-on task like any other.

Prices come from ``data/prices.json`` (dated, with its source), or with ``--live`` from the
AWS Price List API (``pricing:GetProducts``) when it answers; the table is the fallback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from servicekit import aws
from suite_contract.spec import CapacityProvider, CapacityProviderItem, ServiceSpec
from suite_tools.errors import CommandError

__all__ = ["Prices", "estimate", "load_prices", "render", "spread"]

Write = Callable[[str], None]
EC2_INSTANCE = "m7i.large"  # the infra's first ec2InstanceTypes entry (infra/src/infra/config.py)
# The Price List API is served from these regions only.
PRICING_REGION = "us-east-1"


@dataclass(frozen=True)
class Prices:
    region: str
    date: str
    source: str
    fargate: Mapping[str, float]
    fargate_spot: Mapping[str, float]
    ec2_hour: float
    ec2_spot_ratio: float
    instance: Mapping[str, float]
    hours: float

    def task_hour(self, provider: CapacityProvider, spec: ServiceSpec) -> float:
        vcpu, gib = spec.task.cpu / 1024, spec.task.memory / 1024
        if provider is CapacityProvider.FARGATE:
            return vcpu * self.fargate["vcpu_hour"] + gib * self.fargate["gb_hour"]
        if provider is CapacityProvider.FARGATE_SPOT:
            return vcpu * self.fargate_spot["vcpu_hour"] + gib * self.fargate_spot["gb_hour"]
        share = max(vcpu / self.instance["vcpu"], gib / self.instance["memory_gib"])
        ratio = self.ec2_spot_ratio if provider is CapacityProvider.EC2_SPOT else 1.0
        return share * self.ec2_hour * ratio


def _table() -> dict[str, Any]:
    text = resources.files("suite_tools").joinpath("data/prices.json").read_text()
    return dict(json.loads(text))


def load_prices(region: str, *, live: bool, write: Write) -> Prices:
    table = _table()
    regional = table["regions"].get(region)
    if regional is None:
        raise CommandError(
            f"no prices for {region} in suite_tools/data/prices.json "
            f"(regions: {', '.join(table['regions'])}); add them, or use --region"
        )
    prices = Prices(
        region=region,
        date=table["date"],
        source="table",
        fargate=regional["fargate"],
        fargate_spot=regional["fargate_spot"],
        ec2_hour=regional["ec2"][EC2_INSTANCE],
        ec2_spot_ratio=table["ec2_spot_ratio"],
        instance=table["instance_types"][EC2_INSTANCE],
        hours=table["hours_per_month"],
    )
    if not live:
        return prices
    try:
        return _live(prices)
    except (ClientError, BotoCoreError, LookupError, ValueError) as error:
        write(f"Price List API not used ({str(error).splitlines()[0]}); prices from the table")
        return prices


def _products(service: str, filters: Mapping[str, str]) -> list[dict[str, Any]]:
    pricing = aws.client("pricing", PRICING_REGION)
    found: list[dict[str, Any]] = []
    for page in pricing.get_paginator("get_products").paginate(
        ServiceCode=service,
        Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()],
    ):
        found.extend(json.loads(item) for item in page["PriceList"])
    return found


def _usd(product: Mapping[str, Any]) -> float:
    for term in product["terms"]["OnDemand"].values():
        for dimension in term["priceDimensions"].values():
            return float(dimension["pricePerUnit"]["USD"])
    raise LookupError(f"no on-demand price for {product['product'].get('sku')}")


def _live(table: Prices) -> Prices:
    fargate: dict[str, dict[str, float]] = {"fargate": {}, "fargate_spot": {}}
    for product in _products("AmazonECS", {"regionCode": table.region}):
        usage = str(product["product"]["attributes"].get("usagetype", ""))
        # Linux/x86 only: ARM and Windows have usage types of their own.
        kind = "fargate_spot" if "SpotUsage-Fargate" in usage else "fargate"
        if usage.endswith("Fargate-vCPU-Hours:perCPU"):
            fargate[kind]["vcpu_hour"] = _usd(product)
        elif usage.endswith("Fargate-GB-Hours"):
            fargate[kind]["gb_hour"] = _usd(product)
    ec2 = _products(
        "AmazonEC2",
        {
            "regionCode": table.region,
            "instanceType": EC2_INSTANCE,
            "operatingSystem": "Linux",
            "tenancy": "Shared",
            "preInstalledSw": "NA",
            "capacitystatus": "Used",
        },
    )
    if not ec2 or len(fargate["fargate"]) < 2 or len(fargate["fargate_spot"]) < 2:
        raise LookupError(f"the Price List API has no Fargate or {EC2_INSTANCE} price here")
    return Prices(
        region=table.region,
        date="live",
        source="AWS Price List API",
        fargate=fargate["fargate"],
        fargate_spot=fargate["fargate_spot"],
        ec2_hour=_usd(ec2[0]),
        ec2_spot_ratio=table.ec2_spot_ratio,
        instance=table.instance,
        hours=table.hours,
    )


def spread(count: float, capacity: tuple[CapacityProviderItem, ...]) -> dict[str, float]:
    """How ECS places ``count`` tasks: each base first, the rest in proportion to weights."""
    placed = {item.provider.value: 0.0 for item in capacity}
    rest = float(count)
    for item in capacity:
        taken = min(rest, float(item.base))
        placed[item.provider.value] += taken
        rest -= taken
    weights = sum(item.weight for item in capacity)
    for item in capacity:
        placed[item.provider.value] += rest * item.weight / weights
    return placed


def _counts(spec: ServiceSpec) -> dict[str, int]:
    if spec.scaling is None:
        count = spec.task.desired_count
        return {"min": count, "desired": count, "max": count}
    return {
        "min": spec.scaling.min_count,
        "desired": spec.task.desired_count,
        "max": spec.scaling.max_count,
    }


def _monthly(prices: Prices, spec: ServiceSpec, placed: Mapping[str, float]) -> float:
    return sum(
        tasks * prices.task_hour(CapacityProvider(provider), spec) * prices.hours
        for provider, tasks in placed.items()
    )


def estimate(specs: Mapping[str, ServiceSpec], prices: Prices) -> dict[str, Any]:
    """``--json``'s document: per service and total, as specified and per provider."""
    services: dict[str, Any] = {}
    totals = {"min": 0.0, "desired": 0.0, "max": 0.0}
    compare = {provider.value: 0.0 for provider in CapacityProvider}
    for name, spec in specs.items():
        counts = _counts(spec)
        monthly = {
            key: round(_monthly(prices, spec, spread(count, spec.capacity)), 2)
            for key, count in counts.items()
        }
        alone = {
            provider.value: round(_monthly(prices, spec, {provider.value: counts["desired"]}), 2)
            for provider in CapacityProvider
        }
        services[name] = {
            "vcpu": spec.task.cpu / 1024,
            "memoryGib": spec.task.memory / 1024,
            "tasks": counts,
            "capacity": [
                {"provider": i.provider.value, "base": i.base, "weight": i.weight}
                for i in spec.capacity
            ],
            "placedAtDesired": spread(counts["desired"], spec.capacity),
            "monthly": monthly,
            "monthlyIfAllOn": alone,
            "perTaskHour": {
                provider.value: round(prices.task_hour(provider, spec), 5)
                for provider in CapacityProvider
            },
        }
        for key in totals:
            totals[key] += monthly[key]
        for key in compare:
            compare[key] += alone[key]
    return {
        "region": prices.region,
        "currency": "USD",
        "prices": {"date": prices.date, "source": prices.source, "ec2Instance": EC2_INSTANCE},
        "hoursPerMonth": prices.hours,
        "services": services,
        "total": {key: round(value, 2) for key, value in totals.items()},
        "totalIfAllOn": {key: round(value, 2) for key, value in compare.items()},
    }


def render(document: Mapping[str, Any]) -> list[str]:
    prices = document["prices"]
    lines = [
        f"Monthly compute cost, {document['region']}, USD, {document['hoursPerMonth']} h/month; "
        f"prices: {prices['source']} dated {prices['date']} (EC2: {prices['ec2Instance']})",
        "",
        f"{'SERVICE':<12} {'TASK':<18} {'TASKS min/desired/max':<22} {'CAPACITY':<34} "
        f"{'MIN':>9} {'DESIRED':>9} {'MAX':>9}",
    ]
    for name, item in document["services"].items():
        counts, monthly = item["tasks"], item["monthly"]
        capacity = " ".join(
            f"{c['provider']}" + (f" base {c['base']}" if c["base"] else "") + f" w{c['weight']}"
            for c in item["capacity"]
        )
        task = f"{item['vcpu']:g} vCPU {item['memoryGib']:g} GiB"
        span = f"{counts['min']}/{counts['desired']}/{counts['max']}"
        lines.append(
            f"{name:<12} {task:<18} {span:<22} {capacity:<34} "
            f"{monthly['min']:>9.2f} {monthly['desired']:>9.2f} {monthly['max']:>9.2f}"
        )
    total = document["total"]
    lines.append(
        f"{'TOTAL':<12} {'':<18} {'':<22} {'as specified':<34} "
        f"{total['min']:>9.2f} {total['desired']:>9.2f} {total['max']:>9.2f}"
    )
    lines.append("")
    lines.append("At the desired counts, everything on one capacity provider:")
    for provider, value in document["totalIfAllOn"].items():
        lines.append(f"  {provider:<14} {value:>9.2f}")
    return lines
