"""The same reader over S3: moto's mock_aws, a real boto3 client wrapped by the AWS backend's S3Bucket."""
from __future__ import annotations

import boto3
import numpy as np
import pytest
from moto import mock_aws

from backend.api import CaptureConfig, Endpoint, Model
from backend.aws.s3 import S3Bucket
from backend.capture import CaptureIndex
from backend.monitoring import MonitoringService
from tests.monitor.capture_files import T0, png, record_line

BUCKET, EP = "sagemaker-us-east-1-123456789012", "ep-s3"
FAKE_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
            "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"}


class S3Workspace:
    """What MonitoringService asks of the AWS backend: its bucket and its endpoint and model records."""

    def __init__(self, objects: S3Bucket):
        self.objects = objects
        capture = CaptureConfig(True, 100, f"s3://{BUCKET}/data_capture")
        self.endpoint = Endpoint(EP, "InService", "cfg", "model", "", "", capture, backend="aws")

    def list_endpoints(self):
        return [self.endpoint]

    def describe_endpoint(self, name):
        return self.endpoint

    def describe_model(self, name):
        return Model(name, "job", "s3://x", "", ("bicycle", "motorcycle"), (3, 32, 32), backend="aws")

    def default_threshold(self):
        return 0.93


@pytest.fixture
def s3(monkeypatch):
    for k, v in FAKE_ENV.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        bucket = S3Bucket(client, BUCKET, "us-east-1")
        bucket.ensure_bucket()
        yield bucket


def put(bucket: S3Bucket, minute: int, lines: list[bytes]) -> str:
    key = f"data_capture/{EP}/AllTraffic/2026/01/01/00/{minute:02d}-00-000-{minute:032x}.jsonl"
    bucket.put_many({key: b"".join(lines)})
    return key


def test_capture_on_s3_is_read_incrementally_with_images_and_broken_tails(s3, tmp_path):
    sent = []
    for minute in range(3):
        lines = []
        for i in range(5):
            p = (minute * 5 + i) / 15
            line, event = record_line([p, 1 - p], T0 + minute * 60 + i, png(minute * 5 + i))
            lines.append(line)
            sent.append((event, max(p, 1 - p), png(minute * 5 + i)))
        put(s3, minute, lines)
    index = CaptureIndex(s3, "data_capture", EP, tmp_path / "index")
    first = index.refresh()
    assert (first.files_read, first.new_records, first.new_broken) == (3, 15, 0)
    cols = index.snapshot.columns
    assert sorted(cols.conf.tolist()) == sorted(c for _, c, _ in sent)
    # S3 objects never grow: a cut-short last line is broken at once; only the new object is read
    line, _ = record_line([0.2, 0.8], T0 + 300, png(99))
    new_key = put(s3, 5, [line, line[:-40]])
    second = index.refresh()
    assert (second.files_read, second.new_records, second.new_broken) == (1, 1, 1)
    assert second.bytes_read == s3.client.head_object(Bucket=BUCKET, Key=new_key)["ContentLength"]
    assert index.refresh().bytes_read == 0

    service = MonitoringService(S3Workspace(s3), tmp_path / "svc-index")
    assert service.monitored_endpoints() == [EP]
    summary = service.monitor_summary(threshold=0.7)
    assert summary["records"] == 16 and summary["broken_lines"] == 1
    assert summary["below_threshold"] == sum(c < 0.7 for _, c, _ in sent) + 0  # 0.8 passes
    assert set(summary["by_label"]) == {"bicycle", "motorcycle"}
    lowest = service.lowest_confidence(EP, 3)
    by_event = {e: img for e, _, img in sent}
    assert all(im.image == by_event[im.event_id] for im in lowest)
    assert [im.confidence for im in lowest] == sorted(c for _, c, _ in sent)[:3]
    table = service.capture_table(EP)
    assert service.capture_image(table["image_ref"].iloc[0]) == by_event[table["event_id"].iloc[0]]
    status = service.capture_status(EP)
    assert (status.state, status.files, status.records) == ("unknown", 4, 16)
    out = service.enforce_capture_limits(EP)
    assert out["endpoints"][EP]["deleted_files"] == 0  # recent files stay
    assert np.isclose(service.threshold_counts(EP, 0.0)["passing"], 16)
