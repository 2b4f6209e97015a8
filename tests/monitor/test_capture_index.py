"""Reading capture files into the index: the real format, hand-made edge cases, incremental reads."""
from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest

from backend.capture import (
    IMAGE_LINE, IMAGE_NONE, IMAGE_SPAN, MAX_SEGMENTS, CaptureIndex, decode_image, parse_capture, read_range,
)
from backend.local.serving.capture import capture_line
from backend.local.store import LocalBucket, LocalStore
from tests.monitor.capture_files import T0, brute_force, png, record_line, write_file, write_records

EP = "ep"


@pytest.fixture
def bucket(tmp_path):
    return LocalBucket(LocalStore(tmp_path / "buckets"), "scones-unlimited")


@pytest.fixture
def bucket_dir(bucket):
    return bucket.store.bucket_dir(bucket.bucket)


def index_of(bucket, tmp_path, **kw) -> CaptureIndex:
    return CaptureIndex(bucket, "data_capture", EP, tmp_path / "index", **kw)


def test_lines_the_endpoint_writes_parse_without_reading_the_image(bucket_dir):
    files = write_records(bucket_dir, EP, 40, per_file=40)
    data = files[0].path.read_bytes()
    result = parse_capture(data, 0, 3)
    cols = result.columns
    expected = brute_force(bucket_dir, EP)
    assert (len(cols), result.broken, result.skipped, result.consumed) == (40, 0, 0, len(data))
    assert [e.decode() for e in cols.event] == [r["event"] for r in expected]
    assert np.array_equal(cols.probs, np.array([r["probs"] for r in expected]))
    assert np.array_equal(cols.conf, np.array([r["confidence"] for r in expected]))
    assert list(cols.pred) == [int(np.argmax(r["probs"])) for r in expected]
    assert list(cols.time) == [T0 + i for i in range(40)]
    assert set(cols.kind) == {IMAGE_SPAN} and set(cols.file) == {3}
    for i in (0, 17, 39):  # the handle is the base64 span itself: decoding it gives the request's bytes
        span = data[cols.offset[i]:cols.offset[i] + cols.length[i]]
        assert decode_image(span, IMAGE_SPAN) == expected[i]["image"]


def test_empty_file_and_blank_lines(bucket, bucket_dir, tmp_path):
    write_file(bucket_dir, EP, T0, [])
    line, _ = record_line([0.2, 0.8], T0 + 5, png(1))
    write_file(bucket_dir, EP, T0 + 60, [b"\n", line, b"\n\n", line])
    report = index_of(bucket, tmp_path).refresh()
    assert (report.files_seen, report.new_records, report.new_broken) == (2, 2, 0)


def test_a_cut_short_last_line_waits_while_the_file_is_young_then_counts_once_as_broken(bucket, bucket_dir, tmp_path):
    lines = [record_line([0.9, 0.1], T0 + i, png(i))[0] for i in range(4)]
    now = time.time()
    half = len(lines[3]) // 2
    growing = write_file(bucket_dir, EP, T0, lines[:3] + [lines[3][:half]], mtime=now)
    index = index_of(bucket, tmp_path)
    first = index.refresh()
    assert (first.new_records, first.new_broken) == (3, 0)  # a write in progress, not an error
    with open(growing, "ab") as f:  # the endpoint finishes the line
        f.write(lines[3][half:])
    second = index.refresh()
    assert (second.new_records, second.new_broken, second.bytes_read) == (1, 0, len(lines[3]))
    # a file cut short long ago (the endpoint was killed mid-line): the tail is broken, counted once
    write_file(bucket_dir, EP, T0 + 120, lines[:2] + [lines[2][:-100]], mtime=now - 3600)
    third = index.refresh()
    assert (third.new_records, third.new_broken) == (2, 1)
    assert index.refresh().new_broken == 0
    assert index.snapshot.broken == 1 and len(index.snapshot.columns) == 6


def test_unknown_content_types_csv_and_base64_answers(bucket_dir):
    image = png(7)
    lines = [
        capture_line(input_data=b"\x00\x01" * 200, input_type="application/octet-stream", output_data=b"[0.3, 0.7]",
                     output_type="application/json", when=T0),  # not an image: kept, without an image handle
        capture_line(input_data=image, input_type="image/png", output_data=b"0.25,0.75", output_type="text/csv",
                     when=T0 + 1),  # CSV answer stored as text
        capture_line(input_data=image, input_type="image/png", output_data=b"\xff[0.6, 0.4]",
                     output_type="application/json", when=T0 + 2),  # not UTF-8: stored base64, and unreadable
        capture_line(input_data=image, input_type="image/png", output_data=b"0.6 0.4",
                     output_type="application/x-protobuf", when=T0 + 3),  # an answer type we cannot read
        capture_line(input_data=image, input_type="image/jpeg; q=1", output_data=b'[[0.45, 0.55]]',
                     output_type="application/json; charset=utf-8", when=T0 + 4),  # one row of a batch
    ]
    result = parse_capture(b"".join(lines))
    cols = result.columns
    assert (len(cols), result.broken, result.skipped) == (3, 0, 2)
    assert cols.probs.tolist() == [[0.3, 0.7], [0.25, 0.75], [0.45, 0.55]]
    assert list(cols.kind) == [IMAGE_NONE, IMAGE_SPAN, IMAGE_SPAN]


def test_output_only_and_input_only_capture(bucket_dir):
    out_only = [capture_line(input_data=None, input_type="image/png", output_data=b"[0.8, 0.2]",
                             output_type="application/json", when=T0 + i) for i in range(3)]
    in_only = [capture_line(input_data=png(i), input_type="image/png", output_data=None,
                            output_type="application/json", when=T0 + i) for i in range(2)]
    result = parse_capture(b"".join(out_only + in_only))
    assert (len(result.columns), result.skipped, result.broken) == (3, 2, 0)
    assert set(result.columns.kind) == {IMAGE_NONE} and result.columns.conf.tolist() == [0.8] * 3


def test_garbage_is_counted_never_fatal(bucket_dir):
    good = record_line([0.1, 0.9], T0, png(1))[0]
    lines = [b"not json at all\n", b'{"captureData": 1}\n', b'{"eventMetadata": {}}\n', good[:500] + b"\n",
             b"\xff\xfe\x00 binary\n", json.dumps({"captureData": {"endpointOutput": {}}, "eventMetadata":
                                                   {"inferenceTime": 5}}).encode() + b"\n",
             capture_line(input_data=b"x", input_type="image/png", output_data=b"[0.5, 0.5]",
                          output_type="application/json", when=T0).replace(b"T00:00:00Z", b"yesterday"), good]
    result = parse_capture(b"".join(lines))
    assert len(result.columns) == 1 and result.broken == 6 and result.skipped == 1  # the bad time is skipped


def test_other_key_orders_and_spacing_take_the_slow_path_and_still_give_the_image():
    image = png(3)
    b64 = base64.b64encode(image).decode()
    reordered = json.dumps({"eventVersion": "0", "eventMetadata": {"inferenceTime": "2026-01-01T00:00:09Z",
                                                                    "eventId": "e-1"},
                            "captureData": {"endpointOutput": {"data": "[0.6, 0.4]", "encoding": "JSON",
                                                               "observedContentType": "application/json"},
                                            "endpointInput": {"data": b64, "encoding": "BASE64", "mode": "INPUT",
                                                              "observedContentType": "image/png"}}}).encode() + b"\n"
    spaced = json.dumps({"captureData": {"endpointInput": {"observedContentType": "image/png", "data": b64,
                                                           "encoding": "BASE64"},
                                         "endpointOutput": {"observedContentType": "application/json",
                                                            "data": "[0.1, 0.9]", "encoding": "JSON"}},
                         "eventMetadata": {"eventId": "e-2", "inferenceTime": "2026-01-01T00:00:10.500+00:00"}},
                        indent=None).encode() + b"\n"
    data = reordered + spaced
    result = parse_capture(data, 1000)
    cols = result.columns
    assert cols.event.tolist() == [b"e-1", b"e-2"] and cols.probs.tolist() == [[0.6, 0.4], [0.1, 0.9]]
    assert cols.time.tolist() == [T0 + 9, T0 + 10.5]
    for i in range(2):
        raw = data[cols.offset[i] - 1000:cols.offset[i] - 1000 + cols.length[i]]
        assert cols.kind[i] in (IMAGE_SPAN, IMAGE_LINE) and decode_image(raw, int(cols.kind[i])) == image


def test_refresh_reads_only_what_is_new_and_the_index_survives_a_restart(bucket, bucket_dir, tmp_path):
    first = write_records(bucket_dir, EP, 21, per_file=7)
    index = index_of(bucket, tmp_path)
    r1 = index.refresh()
    assert (r1.files_read, r1.new_records, r1.bytes_read) == (3, 21, sum(f.path.stat().st_size for f in first))
    more = write_records(bucket_dir, EP, 10, start=T0 + 3600, per_file=5, seed=2)
    r2 = index.refresh()
    assert (r2.files_seen, r2.files_read, r2.new_records) == (5, 2, 10)
    assert r2.bytes_read == sum(f.path.stat().st_size for f in more)
    assert index.refresh().bytes_read == 0
    again = index_of(bucket, tmp_path)  # another process: loaded from the index folder, nothing parsed
    r3 = again.refresh()
    assert (r3.bytes_read, r3.records) == (0, 31)
    assert np.array_equal(np.sort(again.snapshot.columns.conf), np.sort(index.snapshot.columns.conf))
    assert sorted(again.snapshot.columns.event.astype(str)) == sorted(r["event"] for r in brute_force(bucket_dir, EP))


def test_deleted_files_take_their_records_and_a_rewritten_file_is_read_again(bucket, bucket_dir, tmp_path):
    files = write_records(bucket_dir, EP, 20, per_file=5)
    index = index_of(bucket, tmp_path)
    index.refresh()
    bucket.delete_keys([files[0].key])
    report = index.refresh()
    assert (report.dropped_files, report.records) == (1, 15)
    files[1].path.write_bytes(record_line([0.5, 0.5], T0 + 999, png(1))[0])  # shorter than what was read
    report = index.refresh()
    assert report.records == 11 and index_of(bucket, tmp_path).refresh().records == 11


def test_a_lost_segment_is_read_again_without_duplicates(bucket, bucket_dir, tmp_path):
    write_records(bucket_dir, EP, 12, per_file=4)
    index_of(bucket, tmp_path).refresh()
    write_records(bucket_dir, EP, 8, start=T0 + 500, per_file=4, seed=3)
    index_of(bucket, tmp_path).refresh()
    segments = sorted((tmp_path / "index").glob("seg-*.npz"))
    assert len(segments) == 2
    segments[0].unlink()
    fresh = index_of(bucket, tmp_path)
    report = fresh.refresh()
    events = fresh.snapshot.columns.event.astype(str)
    assert report.records == 20 and len(set(events)) == 20


def test_many_small_refreshes_are_compacted(bucket, bucket_dir, tmp_path):
    index = index_of(bucket, tmp_path)
    for i in range(MAX_SEGMENTS + 6):
        write_records(bucket_dir, EP, 2, start=T0 + 100 * i, per_file=2, seed=i)
        index.refresh()
    assert len(list((tmp_path / "index").glob("seg-*.npz"))) <= MAX_SEGMENTS
    fresh = index_of(bucket, tmp_path)
    assert fresh.refresh().records == 2 * (MAX_SEGMENTS + 6)
    assert len(set(fresh.snapshot.columns.event.astype(str))) == 2 * (MAX_SEGMENTS + 6)


def test_read_range_on_the_local_bucket(bucket, bucket_dir):
    files = write_records(bucket_dir, EP, 3, per_file=3)
    data = files[0].path.read_bytes()
    assert read_range(bucket, files[0].key, 10, 20) == data[10:30]
