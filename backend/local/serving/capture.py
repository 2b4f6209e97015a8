"""Data capture as SageMaker Model Monitor writes it (CONTRACTS.md section 3).

One JSON object per captured request, one line each, appended to rolling files under
`<prefix>/<endpoint>/<variant>/yyyy/mm/dd/hh/<mm-ss-mmm>-<uuid>.jsonl` in the bucket folder.
A file is closed and a new one begun when the minute turns over or the size limit is reached,
as SageMaker batches its objects.

Durability and readers: each record is encoded first, then written with one `os.write` of the
complete line (newline included) to a file opened with O_APPEND, with no user-space buffer. A
record is in the kernel as soon as `write` returns, so a killed endpoint loses at most the record
it was serving. A reader never sees a record cut in the middle followed by more data: the only
incomplete bytes a concurrent reader can meet are the tail of the line being written, which has
no newline yet; `complete_lines` keeps newline-terminated lines only, as every JSONL tailer does.
"""
from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

EVENT_VERSION = "0"
VARIANT = "AllTraffic"
DEFAULT_MAX_FILE_BYTES = 8 * 1024 * 1024
# Content types stored as text; everything else is stored base64 (CONTRACTS.md section 3).
TEXT_ENCODINGS = {"text/csv": "CSV", "application/json": "JSON"}


def media_type(content_type: str) -> str:
    """'image/png; charset=x' -> 'image/png'."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def payload(data: bytes, content_type: str, mode: str) -> dict[str, str]:
    """An endpointInput / endpointOutput object: text for CSV and JSON, base64 for the rest."""
    encoding = TEXT_ENCODINGS.get(media_type(content_type))
    if encoding is not None:
        try:
            return {"observedContentType": content_type, "mode": mode, "data": data.decode("utf-8"),
                    "encoding": encoding}
        except UnicodeDecodeError:
            pass  # not text after all: keep the bytes exactly
    return {"observedContentType": content_type, "mode": mode,
            "data": base64.b64encode(data).decode("ascii"), "encoding": "BASE64"}


def inference_time(when: float) -> str:
    """ISO 8601 UTC to the second, as SageMaker writes inferenceTime: 2024-08-07T19:01:39Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def capture_line(*, input_data: bytes | None, input_type: str, output_data: bytes | None,
                 output_type: str, when: float, event_id: str | None = None) -> bytes:
    """One complete JSONL line (newline included). Pass None to leave the input or output out."""
    capture: dict[str, Any] = {}
    if input_data is not None:
        capture["endpointInput"] = payload(input_data, input_type, "INPUT")
    if output_data is not None:
        capture["endpointOutput"] = payload(output_data, output_type, "OUTPUT")
    record = {
        "captureData": capture,
        "eventMetadata": {"eventId": event_id or str(uuid.uuid4()), "inferenceTime": inference_time(when)},
        "eventVersion": EVENT_VERSION,
    }
    return json.dumps(record, separators=(",", ":")).encode("utf-8") + b"\n"


def complete_lines(data: bytes) -> Iterator[bytes]:
    """The newline-terminated lines of a capture file; an unterminated tail is a write in progress."""
    end = data.rfind(b"\n")
    if end < 0:
        return iter(())
    return (line for line in data[:end].split(b"\n") if line.strip())


def capture_key(prefix: str, endpoint: str, variant: str, when: float, file_id: str) -> str:
    t = time.gmtime(when)
    millis = int(round((when - int(when)) * 1000)) % 1000
    folder = f"{endpoint}/{variant}/{t.tm_year:04d}/{t.tm_mon:02d}/{t.tm_mday:02d}/{t.tm_hour:02d}"
    name = f"{t.tm_min:02d}-{t.tm_sec:02d}-{millis:03d}-{file_id}.jsonl"
    prefix = prefix.strip("/")
    return f"{prefix}/{folder}/{name}" if prefix else f"{folder}/{name}"


class Sampler:
    """InitialSamplingPercentage: 0 captures nothing, 100 everything, between at random."""

    def __init__(self, percent: float, rng: random.Random | None = None):
        if not 0 <= percent <= 100:
            raise ValueError(f"sampling percentage {percent} is outside 0..100")
        self.percent = percent
        self.rng = rng or random.Random()

    def __call__(self) -> bool:
        if self.percent >= 100:
            return True
        return self.percent > 0 and self.rng.random() * 100.0 < self.percent


@dataclass
class _OpenFile:
    fd: int
    key: str
    minute: tuple[int, int, int, int, int]  # y, m, d, h, min
    size: int


class CaptureWriter:
    """Appends records for one endpoint variant to rolling files under `root` (the bucket folder)."""

    def __init__(self, root: Path, prefix: str, endpoint: str, variant: str = VARIANT,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES):
        self.root = Path(root)
        self.prefix, self.endpoint, self.variant = prefix, endpoint, variant
        self.max_file_bytes = max_file_bytes
        self._lock = threading.Lock()
        self._file: _OpenFile | None = None
        self.records = 0
        self.keys: list[str] = []

    def write(self, line: bytes, when: float) -> str:
        """Append one complete line (from `capture_line`); returns the key of the file it went to."""
        if not line.endswith(b"\n") or b"\n" in line[:-1]:
            raise ValueError("a capture record must be exactly one newline-terminated line")
        minute = time.gmtime(when)[:5]
        with self._lock:
            f = self._file
            if f is None or f.minute != minute or (f.size and f.size + len(line) > self.max_file_bytes):
                f = self._roll(when, minute)
            _write_all(f.fd, line)
            f.size += len(line)
            self.records += 1
            return f.key

    def _roll(self, when: float, minute: tuple[int, ...]) -> _OpenFile:
        self._close_current()
        key = capture_key(self.prefix, self.endpoint, self.variant, when, uuid.uuid4().hex)
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._file = _OpenFile(fd, key, tuple(minute), 0)
        self.keys.append(key)
        return self._file

    def _close_current(self) -> None:
        if self._file is not None:
            os.close(self._file.fd)
            self._file = None

    def close(self) -> None:
        with self._lock:
            self._close_current()


def _write_all(fd: int, data: bytes) -> None:
    """One write() for the whole line; a short write (disk full, a signal) is finished, never dropped."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
