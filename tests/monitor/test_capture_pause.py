"""Capture pauses when the disk is full or the size cap is reached; the endpoint keeps answering."""
from __future__ import annotations

import errno
import os
import json
import threading
import time

import pytest

from backend.local.serving import capture as capture_mod
from backend.local.serving.capture import CaptureGuard, CaptureWriter, capture_line, complete_lines
from backend.local.serving.client import EndpointClient
from backend.local.serving.server import CaptureOptions, build_server, write_ready_file
from backend.monitoring import ready_file_capture_state
from tests.monitor.capture_files import T0, png


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


LINES = [capture_line(input_data=png(i), input_type="image/png", output_data=b"[0.5, 0.5]",
                      output_type="application/json", when=T0 + i, event_id=f"e-{i}") for i in range(6)]


def line(i: int) -> bytes:
    return LINES[i]


def test_a_full_disk_pauses_capture_leaves_no_broken_line_and_resumes(tmp_path, monkeypatch):
    clock, changes = Clock(), []
    guard = CaptureGuard(tmp_path / "data_capture" / "ep", clock=clock, recheck_seconds=5, on_change=changes.append)
    writer = CaptureWriter(tmp_path, "data_capture", "ep", guard=guard)
    key = writer.write(line(0), T0)
    real = capture_mod._write_all

    def half_then_enospc(fd, data):  # the disk fills in the middle of a line
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(capture_mod, "_write_all", half_then_enospc)
    assert writer.write(line(1), T0 + 1) is None  # dropped, no exception: the request is answered anyway
    assert guard.paused and "disk is full" in guard.reason and changes[-1]["state"] == "paused"
    assert writer.write(line(2), T0 + 2) is None and guard.dropped == 2  # paused: not even tried
    monkeypatch.setattr(capture_mod, "_write_all", real)  # space is freed
    clock.now = 4.0
    assert writer.write(line(3), T0 + 3) is None  # not rechecked before 5 s
    clock.now = 6.0
    assert writer.write(line(4), T0 + 4) == key and not guard.paused
    assert changes[-1]["state"] == "capturing" and guard.status()["dropped"] == 3
    writer.close()
    data = (tmp_path / key).read_bytes()
    assert data == line(0) + line(4)  # the half-written line was cut back
    assert len(list(complete_lines(data))) == 2


def test_the_size_cap_pauses_and_deleting_old_files_resumes(tmp_path):
    clock = Clock()
    folder = tmp_path / "data_capture" / "ep"
    guard = CaptureGuard(folder, max_bytes=3 * len(line(0)) + 10, clock=clock, recheck_seconds=5)
    writer = CaptureWriter(tmp_path, "data_capture", "ep", guard=guard, max_file_bytes=len(line(0)) + 1)
    keys = [writer.write(line(i), T0 + i) for i in range(5)]
    assert all(keys[:3]) and keys[3:] == [None, None]
    assert guard.paused and "size cap" in guard.reason and guard.dropped == 2
    (tmp_path / keys[0]).unlink()  # retention deleted the oldest file
    clock.now = 5.0
    assert writer.write(line(5), T0 + 5) is not None and not guard.paused
    writer.close()


def test_at_the_cap_an_endpoint_deletes_its_own_oldest_files_and_goes_on_capturing(tmp_path):
    """Capture resumes by itself with no page open: the endpoint trims its oldest files (never one written
    in the last two minutes) to 90% of the cap, as the monitoring service does."""
    clock = Clock()
    folder = tmp_path / "data_capture" / "ep"
    size = len(line(0))
    guard = CaptureGuard(folder, max_bytes=3 * size + 10, clock=clock, recheck_seconds=5, trim=True)
    writer = CaptureWriter(tmp_path, "data_capture", "ep", guard=guard, max_file_bytes=size + 1)
    guard.max_bytes = None  # fill the folder first: five files, one a minute
    keys = [writer.write(line(i), T0 + 60 * i) for i in range(5)]
    guard.max_bytes, guard._used = 3 * size + 10, None
    old = time.time() - 600
    for n, key in enumerate(keys[:3]):  # written ten minutes ago; the two newest are recent
        os.utime(tmp_path / key, (old + n, old + n))
    assert writer.write(line(5), T0 + 300) is not None and not guard.paused  # room made, not paused
    assert [(tmp_path / k).exists() for k in keys] == [False, False, False, True, True]  # every old one went
    writer.close()
    # Only recent files over the cap: nothing may be deleted, so capture pauses and they all stay.
    recent = tmp_path / "recent" / "ep"
    guard = CaptureGuard(recent, max_bytes=3 * size + 10, clock=clock, trim=True)
    writer = CaptureWriter(tmp_path / "recent", "", "ep", guard=guard, max_file_bytes=size + 1)
    keys = [writer.write(line(i), T0 + 60 * i) for i in range(4)]
    assert keys[3] is None and guard.paused and "size cap" in guard.reason
    assert all((tmp_path / "recent" / k).exists() for k in keys[:3])
    writer.close()


def test_low_free_space_pauses_before_the_disk_is_full(tmp_path):
    free = {"bytes": 10 ** 9}
    clock = Clock()
    guard = CaptureGuard(tmp_path, min_free_bytes=10 ** 8, clock=clock, free=lambda p: free["bytes"])
    assert guard.allow(100)
    free["bytes"] = 5 * 10 ** 7
    clock.now = 1.5
    assert not guard.allow(100) and "almost full" in guard.reason
    free["bytes"] = 2 * 10 ** 8
    clock.now = 7.0
    assert guard.allow(100)


@pytest.fixture(scope="module")
def artifact_path(tmp_path_factory):
    from tests.deploy.conftest import tiny_artifact

    path = tmp_path_factory.mktemp("artifact") / "model.tar.gz"
    path.write_bytes(tiny_artifact(1))
    return path


def test_the_endpoint_keeps_answering_while_capture_is_paused_and_says_so(tmp_path, artifact_path):
    """A real endpoint server (in-process) with a tiny cap: every request answered, capture paused, and the
    pause in the ready file where the Monitor page reads it."""
    body = png(1)
    record = len(capture_line(input_data=body, input_type="image/png", output_data=b"[0.12345678901234567, 0.8765432109876543]",
                              output_type="application/json", when=T0))
    server = build_server("ep", artifact_path, capture=CaptureOptions(tmp_path / "bucket", "data_capture", 100,
                                                                      max_bytes=int(record * 3.5)))
    ready = tmp_path / "serving" / "ep-0123abcd.json"
    server.capture.on_change(lambda status: write_ready_file(ready, server.port, status))
    write_ready_file(ready, server.port, server.capture.status())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    client = EndpointClient()
    try:
        answers = [client.invoke(server.port, body, "image/png")[0] for _ in range(8)]
    finally:
        client.close()
        server.shutdown()
        server.server_close()
        server.capture.close()
    assert answers == [200] * 8
    files = list((tmp_path / "bucket" / "data_capture" / "ep").rglob("*.jsonl"))
    captured = sum(len(list(complete_lines(f.read_bytes()))) for f in files)
    assert captured == 3
    state = json.loads(ready.read_text())
    assert state["port"] == server.port and state["capture"]["state"] == "paused"
    assert server.capture.status()["dropped"] == 5 and server.capture.status()["records"] == 3
    # The file is rewritten on a change, at every recheck while paused, and half a second after a drop, so
    # the count is right once the traffic stops (not only at the next request).
    deadline = time.monotonic() + 3
    while json.loads(ready.read_text())["capture"]["dropped"] != 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(ready.read_text())["capture"]["dropped"] == 5
    assert ready_file_capture_state(tmp_path / "serving")("ep")["reason"].startswith("Capture reached its size cap")
