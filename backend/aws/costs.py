"""Cost guardrails on AWS: what a start bills, said before it starts, and endpoints left idle.

An endpoint bills every hour it exists, busy or idle; the home page names the ones that have had
no invocations for an hour (SageMaker's `Invocations` metric in CloudWatch) and what they have
cost since they were created, from the dated price table in `pricing`.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from backend.api import VARIANT_NAME, BillingNotice, IdleEndpoint, ValidationError
from backend.aws import pricing
from backend.aws.errors import aws_errors

IDLE_AFTER_HOURS = 1
LOOKBACK_HOURS = 14 * 24  # hourly datapoints for two weeks: well under GetMetricStatistics' 1,440
PERIOD = 3600


def _parse(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


class AwsCostMixin:
    def billing_notice(self, kind: str, instance_type: str | None = None) -> BillingNotice:
        """kind 'training' (a training job) or 'endpoint' (an endpoint created or updated)."""
        if kind == "training":
            itype = instance_type or self.settings.training_instance_type
            price = pricing.training_price(itype)
        elif kind == "endpoint":
            itype = instance_type or self.settings.endpoint_instance_type
            price = pricing.hosting_price(itype)
        else:
            raise ValidationError(f"Unknown billing kind {kind!r}: use 'training' or 'endpoint'.")
        return BillingNotice(itype, price, pricing.PRICES_AS_OF, pricing.PRICE_REGION)

    def idle_endpoints(self, now: datetime | None = None) -> list[IdleEndpoint]:
        """InService endpoints older than an hour with no invocations in the last hour."""
        now = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0)
        out = []
        for e in self.list_endpoints():
            if e.status != "InService" or not e.created:
                continue
            created = _parse(e.created)
            running = (now - created).total_seconds() / 3600
            if running < IDLE_AFTER_HOURS:
                continue
            last_busy = self._last_invoked(e.endpoint_name, now, min(math.ceil(running), LOOKBACK_HOURS))
            idle_since = last_busy or max(created, now - timedelta(hours=LOOKBACK_HOURS))
            idle = (now - idle_since).total_seconds() / 3600
            if idle < IDLE_AFTER_HOURS:
                continue
            itype = self.describe_endpoint_config(e.config_name).instance_type
            price = pricing.hosting_price(itype)
            out.append(IdleEndpoint(e.endpoint_name, itype, e.created, running, idle, price,
                                    None if price is None else price * running))
        return out

    def _last_invoked(self, endpoint_name: str, now: datetime, hours: int) -> datetime | None:
        """The end of the last hour (counted back from `now`) with invocations, or None."""
        with aws_errors(f"reading the invocations of endpoint {endpoint_name} (cloudwatch:GetMetricStatistics)"):
            points = self.client("cloudwatch").get_metric_statistics(
                Namespace="AWS/SageMaker", MetricName="Invocations",
                Dimensions=[{"Name": "EndpointName", "Value": endpoint_name},
                            {"Name": "VariantName", "Value": VARIANT_NAME}],
                StartTime=now - timedelta(hours=hours), EndTime=now, Period=PERIOD, Statistics=["Sum"],
            )["Datapoints"]
        busy = [p["Timestamp"] for p in points if p.get("Sum", 0) > 0]
        return min(max(busy) + timedelta(seconds=PERIOD), now) if busy else None
