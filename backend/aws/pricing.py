"""On-demand SageMaker prices (USD per instance-hour, us-east-1) for the instance types this
workflow uses. A dated table, not a live lookup: check the SageMaker pricing page for your region."""
from __future__ import annotations

PRICES_AS_OF = "2026-11"
PRICE_REGION = "us-east-1"
TRAINING_USD_PER_HOUR = {"ml.p3.2xlarge": 3.825, "ml.p2.xlarge": 1.125, "ml.g4dn.xlarge": 0.736,
                         "ml.g5.xlarge": 1.408}
HOSTING_USD_PER_HOUR = {"ml.m5.xlarge": 0.23, "ml.m5.large": 0.115, "ml.t2.medium": 0.056,
                        "ml.c5.xlarge": 0.204}


def training_price(instance_type: str) -> float | None:
    return TRAINING_USD_PER_HOUR.get(instance_type)


def hosting_price(instance_type: str) -> float | None:
    return HOSTING_USD_PER_HOUR.get(instance_type)
