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

Room: the endpoint keeps answering when capture cannot write. `CaptureGuard` pauses capture when
the disk is full (a write fails with ENOSPC, or free space falls under a reserve) or when the
endpoint's capture reaches its size cap, counts the requests it did not capture, and resumes by
itself once there is room again (checked every few seconds while paused). A write that fails half
way is cut back, so the file never holds a broken line. The state is reported through a callback
(the server puts it in its ready file, where the Monitor page reads it).
"""
from __future__ import annotations

import base64
import errno
import json
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from backend.api import human_size

EVENT_VERSION = "0"
VARIANT = "AllTraffic"
DEFAULT_MAX_FILE_BYTES = 8 * 1024 * 1024
LOW_WATER = 0.9  # the size cap trims to this share of the cap, so a paused writer has room again
RECENT_SECONDS = 120.0  # a capture file written this recently may still be appended to: never deleted
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


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def folder_bytes(folder: Path) -> int:
    """Bytes of the capture files under `folder` (what the size cap counts)."""
    total = 0
    stack = [str(folder)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.name.endswith(".jsonl"):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def trim_oldest(folder: Path, excess: int, now: float | None = None) -> int:
    """Delete the oldest capture files under `folder` until `excess` bytes are gone, never one modified in
    the last RECENT_SECONDS (the writer may still append to it); returns the bytes deleted."""
    now = time.time() if now is None else now
    files = []
    for path in Path(folder).rglob("*.jsonl"):
        try:
            st = path.stat()
        except OSError:
            continue
        if now - st.st_mtime >= RECENT_SECONDS:
            files.append((st.st_mtime, str(path), st.st_size))
    files.sort()
    freed = 0
    for _, path, size in files:
        if freed >= excess:
            break
        try:
            os.unlink(path)
        except OSError:
            continue
        freed += size
    return freed


def free_bytes(folder: Path) -> int:
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class CaptureGuard:
    """Whether capture may write now. Never blocks, never raises: a request is answered either way."""

    def __init__(self, folder: Path, max_bytes: int | None = None, min_free_bytes: int = 0,
                 recheck_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 free: Callable[[Path], int] = free_bytes, used: Callable[[Path], int] = folder_bytes,
                 on_change: Callable[[dict[str, Any]], None] | None = None, trim: bool = False):
        self.folder = Path(folder)  # <bucket>/<prefix>/<endpoint>: the files the cap counts
        self.max_bytes, self.min_free_bytes = max_bytes, min_free_bytes
        self.recheck_seconds, self.clock = recheck_seconds, clock
        self._free, self._used_of = free, used
        self.on_change = on_change
        # trim: at the cap, delete this endpoint's oldest files (as the monitoring service's cap does) so
        # capture goes on, or resumes, without a page open; only files too recent to delete pause it.
        self.trim = trim
        self.reason: str | None = None  # None: capturing
        self.since: float | None = None  # wall time the pause began
        self.dropped = 0  # requests answered but not captured while paused
        self._used: int | None = None
        self._next_check = 0.0
        self._next_free_check = 0.0
        self._report_timer: threading.Timer | None = None
        self._report_lock = threading.Lock()
        self._state_lock = threading.RLock()

    @property
    def paused(self) -> bool:
        return self.reason is not None

    def status(self) -> dict[str, Any]:
        return {"state": "paused" if self.paused else "capturing", "reason": self.reason or "",
                "since": self.since, "dropped": self.dropped, "max_bytes": self.max_bytes}

    def allow(self, size: int) -> bool:
        """May a line of `size` bytes be written now?"""
        now = self.clock()
        if self.paused:
            if now < self._next_check:
                self.dropped += 1
                self._report_soon()
                return False
            self._next_check = now + self.recheck_seconds
            self._used = None  # files may have been deleted meanwhile: count again
            reason = self._no_room(size, now, force=True)
            if reason is not None:
                self.dropped += 1
                self._set(reason, report=True)  # still paused: the report carries the new dropped count
                return False
            self._set(None)
            return True
        reason = self._no_room(size, now, force=False)
        if reason is not None:
            self.dropped += 1
            self.pause(reason)
            return False
        return True

    def _report_soon(self, delay: float = 0.5) -> None:
        """Report the dropped count within `delay` seconds: not once per request (a file write each), and not
        only at the next recheck, which may never come when the traffic stops."""
        if self.on_change is None:
            return
        with self._report_lock:
            if self._report_timer is not None:
                return
            self._report_timer = threading.Timer(delay, self._report_now)
            self._report_timer.daemon = True
            self._report_timer.start()

    def _report_now(self) -> None:
        """The timer's report: the state as it is, never a reason of its own (a resume meanwhile stands)."""
        with self._report_lock:
            self._report_timer = None
        with self._state_lock:
            if self.paused:
                self._report()

    def wrote(self, size: int) -> None:
        if self._used is not None:
            self._used += size

    def disk_full(self, exc: OSError) -> None:
        self.pause(f"The disk is full ({exc.strerror or exc}): the endpoint keeps answering, capture resumes "
                   "when space is freed.")

    def pause(self, reason: str) -> None:
        self._next_check = self.clock() + self.recheck_seconds
        self._set(reason)

    def _no_room(self, size: int, now: float, force: bool) -> str | None:
        if self.min_free_bytes and (force or now >= self._next_free_check):
            self._next_free_check = now + 1.0  # statvfs at most once a second
            try:
                free = self._free(self.folder)
            except OSError:
                free = None
            if free is not None and free < self.min_free_bytes:
                return (f"The disk is almost full ({human_size(free)} free, {human_size(self.min_free_bytes)} "
                        "kept free): the endpoint keeps answering, capture resumes when space is freed.")
        if self.max_bytes is not None:
            if self._used is None:
                self._used = self._used_of(self.folder)
            if self._used + size > self.max_bytes:
                if not force:
                    self._used = self._used_of(self.folder)  # old files may have gone: count before pausing
                if self._used + size > self.max_bytes and self.trim:
                    self._used -= trim_oldest(self.folder, self._used - int(LOW_WATER * self.max_bytes))
                if self._used + size > self.max_bytes:
                    return (f"Capture reached its size cap ({human_size(self._used)} of {human_size(self.max_bytes)}): "
                            "old files are deleted past the retention or the cap, then capture resumes.")
        return None

    def _set(self, reason: str | None, report: bool = False) -> None:
        with self._state_lock:  # a report never interleaves with a change (the dropped-count timer)
            changed = report or reason != self.reason
            self.reason = reason
            if reason is None:
                self.since = None
            elif self.since is None:
                self.since = time.time()
            if changed:
                self._report()

    def _report(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self.status())
            except Exception:  # noqa: BLE001 - reporting must not stop capture or the endpoint
                pass


@dataclass
class _OpenFile:
    fd: int
    key: str
    minute: tuple[int, int, int, int, int]  # y, m, d, h, min
    size: int


class CaptureWriter:
    """Appends records for one endpoint variant to rolling files under `root` (the bucket folder)."""

    def __init__(self, root: Path, prefix: str, endpoint: str, variant: str = VARIANT,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, guard: CaptureGuard | None = None):
        self.root = Path(root)
        self.prefix, self.endpoint, self.variant = prefix, endpoint, variant
        self.max_file_bytes = max_file_bytes
        folder = self.root / prefix.strip("/") / endpoint if prefix.strip("/") else self.root / endpoint
        self.guard = guard or CaptureGuard(folder)  # at least: pause on a full disk
        self._lock = threading.Lock()
        self._file: _OpenFile | None = None
        self.records = 0
        self.keys: list[str] = []

    def write(self, line: bytes, when: float) -> str | None:
        """Append one complete line (from `capture_line`); returns the key of the file it went to, or
        None when capture is paused (disk full, size cap) and the record was dropped."""
        if not line.endswith(b"\n") or b"\n" in line[:-1]:
            raise ValueError("a capture record must be exactly one newline-terminated line")
        minute = time.gmtime(when)[:5]
        with self._lock:
            if not self.guard.allow(len(line)):
                return None
            try:
                f = self._file
                if f is None or f.minute != minute or (f.size and f.size + len(line) > self.max_file_bytes):
                    f = self._roll(when, minute)
                try:
                    _write_all(f.fd, line)
                except OSError:
                    _cut_back(f.fd, f.size)  # never leave half a line behind
                    raise
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                self.guard.dropped += 1
                self.guard.disk_full(exc)
                return None
            f.size += len(line)
            self.guard.wrote(len(line))
            self.records += 1
            return f.key

    def _roll(self, when: float, minute: tuple[int, ...]) -> _OpenFile:
        self._close_current()
        key = capture_key(self.prefix, self.endpoint, self.variant, when, str(uuid.uuid4()))  # dashed, as SageMaker names its files
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


def _cut_back(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    """One write() for the whole line; a short write (disk full, a signal) is finished, never dropped."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
