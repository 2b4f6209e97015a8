"""Data capture, record by record and key by key, against CONTRACTS.md section 3."""
from __future__ import annotations

import base64
import calendar
import json
import re
import threading
import time
import uuid
from pathlib import Path

import pytest

from backend.local.serving.capture import (
    CaptureWriter, Sampler, capture_key, capture_line, complete_lines, payload,
)
from backend.local.serving.client import EndpointClient
from backend.local.serving.server import CaptureOptions, build_server
from tests.deploy.images import png_bytes

KEY_RE = re.compile(
    r"^(?P<prefix>.+)/(?P<endpoint>[^/]+)/AllTraffic/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<h>\d{2})/"
    r"(?P<min>\d{2})-(?P<s>\d{2})-(?P<ms>\d{3})-(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"\.jsonl$")  # the uuid dashed, as SageMaker names its capture files
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def check_record(record: dict, *, body: bytes | None, content_type: str, answer: bytes | None) -> None:
    """One line, exactly the shape in CONTRACTS.md section 3."""
    assert list(record) == ["captureData", "eventMetadata", "eventVersion"]
    assert record["eventVersion"] == "0"
    meta = record["eventMetadata"]
    assert list(meta) == ["eventId", "inferenceTime"]
    assert str(uuid.UUID(meta["eventId"])) == meta["eventId"]
    assert TIME_RE.match(meta["inferenceTime"])
    data = record["captureData"]
    if body is None:
        assert "endpointInput" not in data
    else:
        assert data["endpointInput"] == {"observedContentType": content_type, "mode": "INPUT",
                                         "data": base64.b64encode(body).decode(), "encoding": "BASE64"}
    if answer is None:
        assert "endpointOutput" not in data
    else:
        assert data["endpointOutput"] == {"observedContentType": "application/json", "mode": "OUTPUT",
                                          "data": answer.decode(), "encoding": "JSON"}


def read_records(root: Path, prefix: str = "data_capture") -> list[tuple[str, dict]]:
    out = []
    for path in sorted((root / prefix).rglob("*.jsonl")):
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n")
        out += [(path.relative_to(root).as_posix(), json.loads(line)) for line in complete_lines(data)]
    return out


def test_the_contract_example_line_is_what_capture_line_writes():
    line = capture_line(input_data=b"\x89PNG fake", input_type="image/png", output_data=b"[0.99, 0.01]",
                        output_type="application/json", when=calendar.timegm((2024, 8, 7, 19, 1, 39)) + 0.25,
                        event_id="5a8e1a1c-3b39-4b4e-9d5c-3b0b0c8f2a11")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "captureData": {
            "endpointInput": {"observedContentType": "image/png", "mode": "INPUT",
                              "data": base64.b64encode(b"\x89PNG fake").decode(), "encoding": "BASE64"},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT", "data": "[0.99, 0.01]",
                               "encoding": "JSON"}},
        "eventMetadata": {"eventId": "5a8e1a1c-3b39-4b4e-9d5c-3b0b0c8f2a11", "inferenceTime": "2024-08-07T19:01:39Z"},
        "eventVersion": "0"}


def test_csv_and_json_are_stored_as_text_everything_else_as_base64():
    assert payload(b"1,2,3", "text/csv", "INPUT")["encoding"] == "CSV"
    assert payload(b"1,2,3", "text/csv", "INPUT")["data"] == "1,2,3"
    assert payload(b'{"a": 1}', "application/json; charset=utf-8", "INPUT")["encoding"] == "JSON"
    assert payload(b"\xff\xfe", "application/json", "INPUT")["encoding"] == "BASE64"  # not text after all
    assert payload(b"\x00\x01", "image/jpeg", "INPUT") == {"observedContentType": "image/jpeg", "mode": "INPUT",
                                                           "data": "AAE=", "encoding": "BASE64"}


def test_key_layout_is_prefix_endpoint_variant_date_hour_then_minute_second_millis_uuid():
    when = calendar.timegm((2024, 8, 7, 19, 1, 39)) + 0.042
    key = capture_key("data_capture", "ep", "AllTraffic", when, "0" * 32)
    assert key == "data_capture/ep/AllTraffic/2024/08/07/19/01-39-042-" + "0" * 32 + ".jsonl"
    assert capture_key("/deep/prefix/", "ep", "AllTraffic", when, "f" * 32).startswith("deep/prefix/ep/AllTraffic/2024/")


def test_writer_rolls_files_on_the_minute_and_on_size(tmp_path):
    t0 = calendar.timegm((2024, 8, 7, 19, 59, 58))
    line = capture_line(input_data=b"x" * 300, input_type="image/png", output_data=b"[1.0]",
                        output_type="application/json", when=t0)
    writer = CaptureWriter(tmp_path, "data_capture", "ep", max_file_bytes=int(4.5 * len(line)))
    keys = [writer.write(line, t0 + i * 0.5) for i in range(10)]  # 19:59:58.0 .. 20:00:02.5
    writer.close()
    assert len(set(keys[:4])) == 1  # the same minute, under the size limit
    assert keys[4] != keys[3] and "/2024/08/07/20/00-00-000-" in keys[4]  # the minute (and hour) turned over
    assert len(set(keys[4:8])) == 1 and keys[8] != keys[7] and keys[8] == keys[9]  # the size limit turned over
    assert "/20/00-02-000-" in keys[8]
    files = sorted(set(keys))
    assert [len(list(complete_lines((tmp_path / k).read_bytes()))) for k in files] == [4, 4, 2]
    assert writer.records == 10 and all(KEY_RE.match(k) for k in keys)
    with pytest.raises(ValueError):
        writer.write(b'{"half": ', t0)


def test_a_concurrent_reader_never_sees_a_broken_line(tmp_path):
    """Records larger than a page, written while another thread reads the file again and again."""
    writer = CaptureWriter(tmp_path, "data_capture", "ep")
    when = time.time()
    lines = [capture_line(input_data=bytes([i % 256]) * (9000 + i), input_type="image/png", output_data=b"[0.5, 0.5]",
                          output_type="application/json", when=when) for i in range(400)]
    key = writer.write(lines[0], when)
    path, stop, seen, broken = tmp_path / key, threading.Event(), [0], []

    def reader() -> None:
        while not stop.is_set():
            data = path.read_bytes()
            for line in complete_lines(data):
                try:
                    json.loads(line)
                except ValueError:
                    broken.append(len(line))
            seen[0] += 1

    t = threading.Thread(target=reader)
    t.start()
    for line in lines[1:]:
        writer.write(line, when)
    stop.set()
    t.join()
    writer.close()
    assert broken == [] and seen[0] > 0
    assert len(list(complete_lines(path.read_bytes()))) == 400


def test_sampler_extremes_and_middle():
    assert not any(Sampler(0)() for _ in range(1000))
    assert all(Sampler(100)() for _ in range(1000))
    assert 400 <= sum(Sampler(50)() for _ in range(1000)) <= 600
    with pytest.raises(ValueError):
        Sampler(101)


@pytest.fixture(scope="module")
def artifact_path(tmp_path_factory, artifact_a) -> Path:
    path = tmp_path_factory.mktemp("artifact") / "model.tar.gz"
    path.write_bytes(artifact_a)
    return path


def serve(artifact_path: Path, capture: CaptureOptions):
    server = build_server("ep", artifact_path, capture=capture)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def stop(server) -> None:
    server.shutdown()
    server.server_close()
    server.capture.close()


@pytest.mark.parametrize("percent, low, high", [(0, 0, 0), (50, 70, 130), (100, 200, 200)])
def test_sampling_percentage_is_honoured_over_http(tmp_path, artifact_path, percent, low, high):
    server = serve(artifact_path, CaptureOptions(tmp_path, "data_capture", percent))
    client, body = EndpointClient(), png_bytes(seed=1)
    try:
        for _ in range(200):
            assert client.invoke(server.port, body, "image/png")[0] == 200
    finally:
        client.close()
        stop(server)
    records = read_records(tmp_path)
    assert low <= len(records) <= high
    for _, record in records:
        check_record(record, body=body, content_type="image/png", answer=record["captureData"]["endpointOutput"]
                     ["data"].encode())


@pytest.mark.parametrize("capture_input, capture_output", [(True, False), (False, True)])
def test_capture_options_input_and_output_are_honoured(tmp_path, artifact_path, capture_input, capture_output):
    server = serve(artifact_path, CaptureOptions(tmp_path, "data_capture", 100, capture_input, capture_output))
    client, body = EndpointClient(), png_bytes(seed=2)
    try:
        status, answer = client.invoke(server.port, body, "image/png")
    finally:
        client.close()
        stop(server)
    assert status == 200
    [(_, record)] = read_records(tmp_path)
    check_record(record, body=body if capture_input else None, content_type="image/png",
                 answer=answer if capture_output else None)


def test_every_request_through_an_endpoint_is_captured_record_by_record(service, sample_pngs):
    """Through the service and the endpoint process: records == requests, bytes and answers exact."""
    service.deploy("model-a", "ep", 100)
    assert service.wait_endpoint("ep", timeout=30).status == "InService"
    port = int(service.describe_endpoint("ep").url.rsplit(":", 1)[1])
    client, sent = EndpointClient(), []
    try:
        for i in range(30):
            body = sample_pngs[i % len(sample_pngs)].read_bytes()
            ctype = ("image/png", "application/x-image")[i % 2]
            status, answer = client.invoke(port, body, ctype)
            assert status == 200
            sent.append((body, ctype, answer))
        assert client.invoke(port, b"not an image", "image/png")[0] == 400  # refused requests are not captured
    finally:
        client.close()
    root = service.store.bucket_dir("scones-unlimited")
    records = read_records(root)
    assert len(records) == len(sent) == 30
    expected = {}
    for body, ctype, answer in sent:
        expected.setdefault((base64.b64encode(body).decode(), ctype), []).append((body, ctype, answer))
    for key, record in records:
        m = KEY_RE.match(key)
        assert m and (m["prefix"], m["endpoint"]) == ("data_capture", "ep")
        assert record["eventMetadata"]["inferenceTime"][:13] == f"{m['y']}-{m['m']}-{m['d']}T{m['h']}"
        entry = record["captureData"]["endpointInput"]
        body, ctype, answer = expected[(entry["data"], entry["observedContentType"])].pop()
        check_record(record, body=body, content_type=ctype, answer=answer)
    assert all(not left for left in expected.values())
    assert len({r["eventMetadata"]["eventId"] for _, r in records}) == 30
