"""serializeImageData: read one image from S3 and pass it on base64-encoded (CONTRACTS.md section 4).

Event:    {"s3_bucket": "...", "s3_key": "..."}, bare or wrapped as {"statusCode", "body"}; other
          fields (such as "threshold") are passed on unchanged.
Answer:   {"statusCode": 200, "body": {..., "s3_bucket", "s3_key", "image_data": "<base64>", "inferences": []}}
Settings: S3_BUCKET        bucket to read when the event names none (optional)
          MAX_IMAGE_BYTES  largest object accepted, default 150000: its base64 (4/3 larger) and the
                           rest of the body stay well under Step Functions' 256 KB per state.
Errors:   InvalidEvent, ImageNotFound, NotAnImage, PayloadTooLarge, ConfigurationError.
"""
from __future__ import annotations

import base64
import os
from typing import Any

import boto3
from botocore.exceptions import ClientError

import event_shapes
from event_shapes import ConfigurationError, InvalidEvent

s3 = boto3.client("s3")

DEFAULT_MAX_IMAGE_BYTES = 150_000
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})


class ImageNotFound(LookupError):
    """The bucket or the key does not exist."""


class NotAnImage(ValueError):
    """The object is not a PNG or a JPEG image."""


class PayloadTooLarge(ValueError):
    """The object is too large to travel through Step Functions base64-encoded."""


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = event_shapes.read_body(event)
    key = event_shapes.require_str(body, "s3_key", f"start the execution with {event_shapes.EXAMPLE_INPUT}.")
    bucket = body.get("s3_bucket") or event_shapes.env(
        "S3_BUCKET", "put 's3_bucket' in the event or set S3_BUCKET in the function's configuration."
    )
    if not isinstance(bucket, str):
        raise InvalidEvent(f"The event's 's3_bucket' must be a string, not {bucket!r}.")
    image = read_image(bucket, key, max_image_bytes())
    return event_shapes.respond({
        **body,
        "s3_bucket": bucket,
        "s3_key": key,
        "image_data": base64.b64encode(image).decode("ascii"),
        "inferences": [],
    })


def max_image_bytes() -> int:
    raw = os.environ.get("MAX_IMAGE_BYTES", "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigurationError(f"MAX_IMAGE_BYTES={raw!r} is not a positive whole number of bytes; fix or unset it.")
    return value


def read_image(bucket: str, key: str, limit: int) -> bytes:
    where = f"s3://{bucket}/{key}"
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            raise ImageNotFound(f"No bucket named {bucket!r} for {where}: check 's3_bucket' or stage the data first.") from None
        if code in _MISSING_CODES:
            raise ImageNotFound(f"No object at {where}: check 's3_key' or stage the data first.") from None
        raise
    size = obj.get("ContentLength", 0)
    if size > limit:
        obj["Body"].close()
        raise PayloadTooLarge(
            f"{where} is {size:,} bytes; the limit is {limit:,} bytes so the base64 image fits "
            "Step Functions' 256 KB state payload. Resize the image (the model takes 32x32)."
        )
    data = obj["Body"].read()
    if event_shapes.image_content_type(data) is None:
        raise NotAnImage(f"{where} is not a PNG or JPEG image (it starts with {data[:8]!r}); point 's3_key' at an image.")
    return data
