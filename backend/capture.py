"""Data capture (CONTRACTS.md section 3) read into a compact, incremental index.

Both backends write the same JSONL under `<prefix>/<endpoint>/<variant>/yyyy/mm/dd/hh/*.jsonl`: one
record a line, each carrying the request's image as base64 (about 4 KB for a 32x32 PNG) and the
answer's probabilities (a few dozen bytes). Monitoring needs the small part only, so a line is
never json-parsed whole: the long base64 value is found with two `bytes.find` calls and cut out,
the remaining few hundred bytes go through `json.loads`, and the image is kept as a handle
(file, byte offset, length) that is decoded only for the few images a page shows.

What has been read is kept in a folder per endpoint (`CaptureIndex`): numpy segments with only the
columns the charts need, and a manifest saying how many bytes of which file were read, so a
refresh lists the files, reads what is new (a file still being written is continued from where
it stopped) and parses nothing twice. Files that disappear (retention, cleanup) take their
records with them. Broken lines (a file cut short, garbage) are counted, never fatal.

Works over any `backend.objects.ObjectStore` (the local bucket or S3); the local bucket is read
straight from disk.
"""
from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import os
import re
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from backend.api import StoredObject
from backend.local.store import LocalBucket
from backend.objects import ObjectStore

# A line is read only up to here: the rest of a local file is continued on the next refresh.
BLOCK_BYTES = 32 * 1024 * 1024
# A local capture file untouched this long is complete: files roll every minute, so an unterminated
# last line older than this will never be finished and is counted as broken.
SETTLE_SECONDS = 90.0
# Records kept in memory before a segment is written during a long (cold) read.
SEGMENT_RECORDS = 250_000
BATCH_RECORDS = 50_000  # parsed lines turned into columns at a time
MAX_SEGMENTS = 12
MAX_EVENT_ID = 64
INDEX_VERSION = 1

IMAGE_NONE, IMAGE_SPAN, IMAGE_LINE = 0, 1, 2  # no image / base64 span in the file / decode the whole line
IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "application/x-image")

_DATA_KEY = b'"data":"'
_INPUT_KEY = b'"endpointInput"'
_OUTPUT_KEY = b'"endpointOutput"'
_MIN_CUT = 128  # values at least this long are cut out before json.loads; outputs are much shorter
_KEY_TIME_RE = re.compile(r"/(\d{4})/(\d{2})/(\d{2})/(\d{2})/(\d{2})-(\d{2})-(\d{3})-[^/]*\.jsonl$")


def media_type(content_type: object) -> str:
    return str(content_type or "").split(";", 1)[0].strip().lower()


# ---------------------------------------------------------------------------------------------
# Columns: what the charts need, as numpy arrays
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    """Captured records, one row each, in read order. Arrays are never changed in place."""

    time: np.ndarray  # float64 epoch seconds (inferenceTime, UTC)
    event: np.ndarray  # bytes (S<=64): eventId
    probs: np.ndarray  # float64 (n, k), NaN where a record has fewer classes
    conf: np.ndarray  # float64: max probability
    pred: np.ndarray  # int16: arg-max class index
    file: np.ndarray  # int32: file id (manifest)
    offset: np.ndarray  # int64: byte offset of the image's base64 (or of the line: IMAGE_LINE)
    length: np.ndarray  # int32
    kind: np.ndarray  # int8: IMAGE_*

    NAMES = ("time", "event", "probs", "conf", "pred", "file", "offset", "length", "kind")

    @classmethod
    def empty(cls, k: int = 0) -> "Columns":
        return cls(np.zeros(0, np.float64), np.zeros(0, "S1"), np.zeros((0, k), np.float64), np.zeros(0, np.float64),
                   np.zeros(0, np.int16), np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int32),
                   np.zeros(0, np.int8))

    def __len__(self) -> int:
        return len(self.time)

    @property
    def classes(self) -> int:
        return self.probs.shape[1]

    def take(self, index: np.ndarray) -> "Columns":
        return Columns(*(getattr(self, n)[index] for n in self.NAMES))

    def arrays(self) -> dict[str, np.ndarray]:
        return {n: getattr(self, n) for n in self.NAMES}

    @classmethod
    def concat(cls, parts: list["Columns"]) -> "Columns":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        k = max(p.classes for p in parts)
        probs = [p.probs if p.classes == k else _pad(p.probs, k) for p in parts]
        return cls(np.concatenate([p.time for p in parts]), np.concatenate([p.event for p in parts]),
                   np.concatenate(probs), *(np.concatenate([getattr(p, n) for p in parts]) for n in cls.NAMES[3:]))


def _pad(probs: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(probs), k), np.nan)
    out[:, :probs.shape[1]] = probs
    return out


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


@dataclass
class ParseResult:
    columns: Columns
    consumed: int  # bytes up to and including the last newline
    broken: int  # lines that are not a capture record (invalid JSON, cut short, wrong shape)
    skipped: int  # valid records without probabilities (Input-only capture, an unknown output type)


class Batch:
    """Fields of parsed lines, turned into Columns in bulk: numpy and pandas cost too much per small file."""

    def __init__(self) -> None:
        self.times: list[str] = []
        self.events: list[str] = []
        self.outputs: list[str] = []
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self.kinds: list[int] = []
        self.runs: list[tuple[int, int]] = []  # (file id, records) in order

    def __len__(self) -> int:
        return len(self.times)

    def columns(self) -> tuple[Columns, dict[int, int]]:
        """The columns, and per file id the records dropped here (a time or an answer that does not parse)."""
        ids = np.repeat(np.array([r[0] for r in self.runs], np.int32), [r[1] for r in self.runs])
        cols, bad = _columns(self.times, self.events, self.outputs, self.offsets, self.lengths, self.kinds, ids)
        dropped = {int(f): int(c) for f, c in zip(*np.unique(ids[bad], return_counts=True))} if bad.any() else {}
        return cols, dropped


_scan = json.JSONDecoder().scan_once


def _loads(raw: bytes) -> object:
    """One JSON document from bytes, with the C scanner and no encoding sniffing (2x json.loads)."""
    text = raw.decode("utf-8")
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("no JSON value") from None
    if end != len(text) and text[end:].strip():
        raise ValueError("extra data after the JSON value")
    return value


def parse_lines(data: bytes, base: int, file_id: int, batch: Batch) -> tuple[int, int, int]:
    """Parse the newline-terminated lines of `data` (bytes `base`.. of a capture file) into `batch`.

    Returns (consumed, broken, skipped): an unterminated tail is a write in progress, left for later.
    """
    find, loads = data.find, _loads
    times, events, outputs = batch.times, batch.events, batch.outputs
    offsets, lengths, kinds = batch.offsets, batch.lengths, batch.kinds
    start_n = len(times)
    broken = skipped = 0
    pos, end = 0, len(data)
    while pos < end:
        nl = find(b"\n", pos)
        if nl < 0:
            break
        if nl - pos < 2:  # an empty line (or a lone CR) is no record
            pos = nl + 1
            continue
        vs = ve = cut = -1
        vs = find(_DATA_KEY, pos, nl)
        if vs >= 0:
            vs += 8
            ve = find(b'"', vs, nl)
            if 0 <= ve < vs + _MIN_CUT:  # short first value (an output first, or a tiny input): try the next one
                vs = find(_DATA_KEY, ve, nl)
                if vs >= 0:
                    vs += 8
                    ve = find(b'"', vs, nl)
            if vs >= 0 and ve >= vs + _MIN_CUT:
                ik = find(_INPUT_KEY, pos, vs)
                if ik >= 0 and find(_OUTPUT_KEY, ik, vs) < 0:  # the long value is the input's data
                    cut = vs
        record = None
        if cut >= 0:
            try:
                record = loads(data[pos:vs] + data[ve:nl])
            except ValueError:
                cut = -1  # an escaped quote inside the value, or odd spacing: parse the whole line
        if record is None:
            try:
                record = loads(data[pos:nl])
            except ValueError:
                broken += 1
                pos = nl + 1
                continue
        try:
            capture = record["captureData"]
            meta = record["eventMetadata"]
            when = meta["inferenceTime"]
            if type(when) is not str:
                raise TypeError
            out = capture.get("endpointOutput")
            inp = capture.get("endpointInput")
        except (KeyError, TypeError, AttributeError):
            broken += 1
            pos = nl + 1
            continue
        text = _output_text(out)
        if text is None:
            skipped += 1
            pos = nl + 1
            continue
        times.append(when)
        event = meta.get("eventId")
        events.append(event[:MAX_EVENT_ID] if type(event) is str else "")
        outputs.append(text)
        if type(inp) is dict and inp.get("encoding") == "BASE64" and _is_image(inp.get("observedContentType")):
            if cut >= 0:
                kinds.append(IMAGE_SPAN)
                offsets.append(base + vs)
                lengths.append(ve - vs)
            else:
                kinds.append(IMAGE_LINE)
                offsets.append(base + pos)
                lengths.append(nl - pos)
        else:
            kinds.append(IMAGE_NONE)
            offsets.append(0)
            lengths.append(0)
        pos = nl + 1
    added = len(times) - start_n
    if added:
        batch.runs.append((file_id, added))
    consumed = pos if pos >= end else data.rfind(b"\n", 0, end) + 1
    return consumed, broken, skipped


def parse_capture(data: bytes, base: int = 0, file_id: int = 0) -> ParseResult:
    """The newline-terminated lines of `data` as columns (one file's bytes; the index batches files)."""
    batch = Batch()
    consumed, broken, skipped = parse_lines(data, base, file_id, batch)
    cols, dropped = batch.columns()
    return ParseResult(cols, consumed, broken, skipped + sum(dropped.values()))


def _is_image(content_type: object) -> bool:
    return content_type == "image/png" or media_type(content_type) in IMAGE_TYPES


def _output_text(out: object) -> str | None:
    """The answer as the text of a JSON list, or None when it cannot hold probabilities."""
    if type(out) is not dict:
        return None
    data, encoding = out.get("data"), out.get("encoding")
    if not isinstance(data, str):
        return None
    kind = out.get("observedContentType")
    if kind == "application/json" and encoding == "JSON":
        return data
    kind = media_type(kind)
    if encoding == "BASE64":
        try:
            data = base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    elif encoding not in ("JSON", "CSV"):
        return None
    if kind == "application/json" or kind.endswith("+json"):
        return data
    if kind == "text/csv":
        return "[" + data.strip().rstrip(",") + "]"
    return None


def _columns(times, events, outputs, offsets, lengths, kinds, file_ids: np.ndarray) -> tuple[Columns, np.ndarray]:
    """Python lists -> Columns, dropping rows whose time or probabilities do not parse (returned as a mask)."""
    n = len(times)
    if n == 0:
        return Columns.empty(), np.zeros(0, bool)
    probs, good = _probabilities(outputs)
    stamps = pd.to_datetime(pd.Series(times, dtype=object), format="ISO8601", utc=True, errors="coerce")
    ns = stamps.to_numpy(dtype="datetime64[ns]").view(np.int64)
    good &= ns != np.iinfo(np.int64).min
    t = ns.astype(np.float64) / 1e9
    try:
        event = np.array(events, dtype="S")
    except UnicodeEncodeError:
        event = np.array([e.encode("utf-8")[:MAX_EVENT_ID] for e in events], dtype="S")
    if event.dtype.itemsize == 0:
        event = event.astype("S1")
    cols = Columns(t, event, probs, np.zeros(n), np.zeros(n, np.int16), np.asarray(file_ids, np.int32),
                   np.array(offsets, np.int64), np.array(lengths, np.int32), np.array(kinds, np.int8))
    if not good.all():
        cols = cols.take(np.flatnonzero(good))
    return _with_confidence(cols), ~good


def _with_confidence(cols: Columns) -> Columns:
    if len(cols) == 0 or cols.classes == 0:
        return cols
    filled = np.where(np.isnan(cols.probs), -np.inf, cols.probs)
    pred = filled.argmax(axis=1)
    conf = filled[np.arange(len(cols)), pred]
    return Columns(cols.time, cols.event, cols.probs, conf, pred.astype(np.int16), cols.file, cols.offset,
                   cols.length, cols.kind)


def _probabilities(outputs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """[n texts of JSON lists] -> (n, k) float64 and a mask of the usable rows (one json call if all is well)."""
    try:
        arr = np.array(json.loads("[" + ",".join(outputs) + "]"), dtype=np.float64)
        if arr.ndim == 2 and arr.shape[0] == len(outputs) and arr.shape[1] > 0:
            return arr, np.isfinite(arr).all(axis=1)
    except (ValueError, TypeError):
        pass
    rows: list[list[float] | None] = []
    for text in outputs:
        try:
            value = json.loads(text)
            if isinstance(value, dict):
                value = value.get("probabilities", value.get("predictions"))
            if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
                value = value[0]  # one row of a batch: [[0.9, 0.1]]
            row = [float(v) for v in value] if isinstance(value, list) and value else None
            if row is not None and any(isinstance(v, bool) or not np.isfinite(x) for v, x in zip(value, row)):
                row = None
        except (ValueError, TypeError):
            row = None
        rows.append(row)
    k = max((len(r) for r in rows if r), default=0)
    out = np.full((len(rows), max(k, 1)), np.nan)
    good = np.zeros(len(rows), bool)
    for i, r in enumerate(rows):
        if r:
            out[i, :len(r)] = r
            good[i] = True
    return out[:, :k] if k else out[:, :0], good


def decode_image(line_or_span: bytes, kind: int) -> bytes:
    """The captured input's bytes from what a handle points at."""
    if kind == IMAGE_SPAN:
        return base64.b64decode(line_or_span)
    if kind == IMAGE_LINE:
        record = json.loads(line_or_span)
        return base64.b64decode(record["captureData"]["endpointInput"]["data"])
    raise ValueError("this record has no captured image")


# ---------------------------------------------------------------------------------------------
# Reading objects: a local fast path, anything else through ObjectStore.get
# ---------------------------------------------------------------------------------------------


def local_path(store: ObjectStore, key: str) -> Path | None:
    """The file behind a key when the store is the local bucket (read with seek and ranges)."""
    if isinstance(store, LocalBucket):
        return store.store.path(store.bucket, key)
    return None


def local_folder(store: ObjectStore, prefix: str) -> Path | None:
    """The folder behind a prefix of the local bucket (listed with os.scandir), None elsewhere."""
    if isinstance(store, LocalBucket):
        base = store.store.bucket_dir(store.bucket)
        return store.store.path(store.bucket, prefix) if prefix else base
    return None


def read_range(store: ObjectStore, key: str, start: int, length: int) -> bytes:
    path = local_path(store, key)
    if path is not None:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(length)
    get_range = getattr(store, "get_range", None)
    if get_range is not None:
        return get_range(key, start, length)
    return store.get(key)[start:start + length]


def key_time(key: str) -> float | None:
    """Epoch seconds a capture file was begun, from its key (yyyy/mm/dd/hh/mm-ss-mmm-uuid.jsonl)."""
    m = _KEY_TIME_RE.search(key)
    if not m:
        return None
    y, mo, d, h, mi, s, ms = (int(g) for g in m.groups())
    try:
        return float(pd.Timestamp(year=y, month=mo, day=d, hour=h, minute=mi, second=s, tz="UTC").timestamp()) + ms / 1000
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------------


@dataclass
class FileState:
    key: str
    id: int
    done: int = 0  # bytes read (up to the last complete line, or all once settled)
    size: int = 0  # size when last seen
    records: int = 0
    broken: int = 0
    skipped: int = 0
    settled: bool = False  # complete: nothing more will be appended

    def row(self) -> list:
        return [self.key, self.id, self.done, self.size, self.records, self.broken, self.skipped, int(self.settled)]

    @classmethod
    def from_row(cls, row: list) -> "FileState":
        return cls(row[0], int(row[1]), int(row[2]), int(row[3]), int(row[4]), int(row[5]), int(row[6]), bool(row[7]))


@dataclass(frozen=True)
class Snapshot:
    """The index as of one refresh: columns of the live files, and the file table."""

    columns: Columns
    files: dict[int, FileState]  # by file id
    refreshed: float  # clock time of the refresh that made it
    broken: int
    skipped: int
    bytes_read: int
    listed_files: int = 0  # capture files of the endpoint when listed
    listed_bytes: int = 0
    newest_modified: float | None = None  # of any capture file: traffic is arriving when this is recent

    def key_of(self, file_id: int) -> str:
        return self.files[int(file_id)].key


@dataclass(frozen=True)
class RefreshReport:
    endpoint: str
    files_seen: int
    files_read: int
    bytes_read: int
    new_records: int
    new_broken: int
    dropped_files: int
    seconds: float
    records: int


@dataclass
class Progress:
    running: bool = False
    bytes_done: int = 0
    bytes_total: int = 0
    error: str = ""


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Across processes (dashboard, CLI, benchmark): one writer per index folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def index_folder_name(bucket: str, prefix: str, endpoint: str) -> str:
    digest = hashlib.sha1(f"{bucket}\0{prefix}\0{endpoint}".encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9-]', '_', endpoint)[:60]}-{digest}"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """An index folder's manifest, or None when there is none, it is unreadable or of another format."""
    try:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("version") == INDEX_VERSION else None


def records_indexed(folder: Path) -> int:
    """How many records an index folder's manifest says were read: what another process (the CLI's
    `monitor`, another dashboard) has indexed, without loading it."""
    manifest = read_manifest(folder)
    try:
        return sum(FileState.from_row(row).records for row in manifest["files"]) if manifest else 0
    except (KeyError, TypeError, IndexError, ValueError):
        return 0


def bytes_read_by_key(folder: Path) -> dict[str, int]:
    """Bytes of each capture file an index folder's manifest says were read (what is past them is unread)."""
    manifest = read_manifest(folder)
    try:
        return {state.key: state.done for state in map(FileState.from_row, manifest["files"])} if manifest else {}
    except (KeyError, TypeError, IndexError, ValueError):
        return {}


class CaptureIndex:
    """The capture of one endpoint (all its variants) under `prefix` of `store`, indexed in `folder`."""

    def __init__(self, store: ObjectStore, prefix: str, endpoint: str, folder: Path,
                 clock: Callable[[], float] = time.time, settle_seconds: float | None = None):
        self.store, self.endpoint = store, endpoint
        self.prefix = prefix.strip("/")
        self.folder = Path(folder)
        self.clock = clock
        self.local = isinstance(store, LocalBucket)
        self._root = str(store.store.bucket_dir(store.bucket).resolve()) if self.local else None
        # S3 objects never grow once written: a cut-short last line there is broken at once.
        self.settle_seconds = settle_seconds if settle_seconds is not None else (SETTLE_SECONDS if self.local else 0.0)
        self.progress = Progress()
        self._lock = threading.Lock()
        self._loaded = False
        self._stamp: tuple | None = None
        self._files: dict[str, FileState] = {}  # by key
        self._by_id: dict[int, FileState] = {}
        self._segments: list[str] = []
        self._segment_files: dict[str, list[str]] = {}  # segment -> keys with records in it
        self._next_id = 1
        self._parts: list[Columns] = []  # one per segment, live files only
        self._dead = 0  # rows in segments whose files are gone
        self._dirty = True  # the parts changed since the last snapshot
        self._snapshot = Snapshot(Columns.empty(), {}, 0.0, 0, 0, 0)

    @property
    def list_prefix(self) -> str:
        return f"{self.prefix}/{self.endpoint}/" if self.prefix else f"{self.endpoint}/"

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- persistence ---------------------------------------------------------------------------

    @property
    def _manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    def _disk_stamp(self) -> tuple | None:
        try:
            st = os.stat(self._manifest_path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> None:
        """Bring memory in line with the folder (another process may have refreshed it)."""
        stamp = self._disk_stamp()
        if stamp == self._stamp and self._loaded:
            return
        self._files, self._segments, self._segment_files, self._next_id, self._parts = {}, [], {}, 1, []
        self._by_id = {}
        self._loaded, self._stamp, self._dead, self._dirty = True, stamp, 0, True
        if stamp is None:
            return
        manifest = read_manifest(self.folder)
        if manifest is None:  # unreadable or another format: start over
            return
        self._files = {row[0]: FileState.from_row(row) for row in manifest["files"]}
        self._next_id = int(manifest["next_id"])
        owners = manifest.get("segment_files", {})
        for name in manifest["segments"]:
            try:
                with np.load(self.folder / name, allow_pickle=False) as z:
                    cols = Columns(*(z[f"c_{n}"] for n in Columns.NAMES))
            except (OSError, ValueError, KeyError):
                for key in owners.get(name, []):  # a lost segment: its files are read again from the start
                    self._files.pop(key, None)
                continue
            self._parts.append(cols)
            self._segments.append(name)
            self._segment_files[name] = list(owners.get(name, []))
        self._by_id = {s.id: s for s in self._files.values()}
        self._parts = [_live(p, self._live_ids()) for p in self._parts]

    def _live_ids(self) -> np.ndarray:
        return np.array(sorted(self._by_id), np.int32)

    def _save(self, new: Columns) -> None:
        """Write the new records as a segment, then the manifest naming it (a crash keeps the old state)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if len(new):
            name = f"seg-{uuid.uuid4().hex[:12]}.npz"
            _save_npz(self.folder / name, new)
            self._segments.append(name)
            self._parts.append(new)
            self._dirty = True
            self._segment_files[name] = sorted({self._by_id[int(i)].key for i in np.unique(new.file)})
        self._compact()
        manifest = {
            "version": INDEX_VERSION, "endpoint": self.endpoint, "prefix": self.prefix,
            "bucket": getattr(self.store, "bucket", ""), "next_id": self._next_id,
            "segments": self._segments, "segment_files": self._segment_files,
            "files": [s.row() for s in self._files.values()],
        }
        tmp = self.folder / f".tmp-manifest-{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(manifest, separators=(",", ":")))
        os.replace(tmp, self._manifest_path)
        self._stamp = self._disk_stamp()
        keep = set(self._segments)
        for p in self.folder.glob("seg-*.npz"):
            if p.name not in keep:
                p.unlink(missing_ok=True)

    def _compact(self) -> None:
        """Keep few segments: merge the newest small ones (size-tiered); all of them when many rows are dead."""
        if len(self._segments) <= MAX_SEGMENTS and not self._mostly_dead():
            return
        sizes = [len(p) for p in self._parts]
        start = 0
        if not self._mostly_dead():
            for i in range(1, len(sizes) - 1):
                if sum(sizes[i:]) <= sizes[i - 1]:
                    start = i
                    break
        merged = Columns.concat(self._parts[start:])
        name = f"seg-{uuid.uuid4().hex[:12]}.npz"
        _save_npz(self.folder / name, merged)
        keys = sorted({k for s in self._segments[start:] for k in self._segment_files.pop(s, [])} & set(self._files))
        self._segment_files[name] = keys
        self._segments = self._segments[:start] + [name]
        self._parts = self._parts[:start] + [merged]
        self._dead = 0

    def _mostly_dead(self) -> bool:
        return self._dead > 0.25 * (self._dead + sum(len(p) for p in self._parts))

    # -- refresh -------------------------------------------------------------------------------

    def refresh(self, progress: Callable[[int, int], None] | None = None) -> RefreshReport:
        """Read what is new since the last refresh (by this or any process); returns what was done."""
        started = time.perf_counter()
        with self._lock, _file_lock(self.folder / "lock"):
            self._load()
            listing = [o for o in self.store.list(self.list_prefix) if o.key.endswith(".jsonl")]
            now = self.clock()
            seen = {o.key for o in listing}
            dropped = [k for k in self._files if k not in seen]
            changed = bool(dropped)
            for key in dropped:
                del self._files[key]
            todo: list[tuple[StoredObject, FileState, bool]] = []
            for obj in listing:
                state = self._files.get(obj.key)
                if state is not None and obj.size < state.done:  # rewritten shorter: read it again
                    del self._files[obj.key]
                    state, changed = None, True
                    dropped.append(obj.key)
                if state is None:
                    state = self._files[obj.key] = FileState(obj.key, self._next_id)
                    self._next_id += 1
                    changed = True
                settled = now - obj.modified >= self.settle_seconds
                if obj.size > state.done or (settled and not state.settled):
                    todo.append((obj, state, settled))
                state.size = obj.size
            self._by_id = {s.id: s for s in self._files.values()}
            if dropped:
                before = sum(len(p) for p in self._parts)
                self._parts = [_live(p, self._live_ids()) for p in self._parts]
                self._dirty = True
                self._dead += before - sum(len(p) for p in self._parts)
            total = sum(o.size - s.done for o, s, _ in todo)
            self.progress = Progress(True, 0, total)
            batch, parts = Batch(), []
            pending = new_records = bytes_read = new_broken = 0
            try:
                for obj, state, settled in todo:
                    was, b0 = state.settled, state.broken
                    read = self._read_file(obj, state, settled, batch)
                    state.settled = settled and state.done >= obj.size
                    changed = changed or read > 0 or state.settled != was
                    bytes_read += read
                    new_broken += state.broken - b0
                    self.progress.bytes_done += read
                    if progress:
                        progress(self.progress.bytes_done, total)
                    if len(batch) >= BATCH_RECORDS:
                        new_records += self._convert(batch, parts)
                        batch = Batch()
                        pending = sum(len(p) for p in parts)
                        if pending >= SEGMENT_RECORDS:  # a long cold read: memory stays flat, work done is kept
                            self._save(Columns.concat(parts))
                            parts = []
                new_records += self._convert(batch, parts)
                if changed:
                    self._save(Columns.concat(parts))
            finally:
                self.progress.running = False
            self._publish(now, listing)
            return RefreshReport(self.endpoint, len(listing), len(todo), bytes_read, new_records, new_broken,
                                 len(dropped), time.perf_counter() - started, len(self._snapshot.columns))

    def _convert(self, batch: Batch, parts: list[Columns]) -> int:
        if not len(batch):
            return 0
        cols, dropped = batch.columns()
        for file_id, n in dropped.items():
            state = self._by_id[file_id]
            state.records -= n
            state.skipped += n
        parts.append(cols)
        return len(cols)

    def _read_file(self, obj: StoredObject, state: FileState, settled: bool, batch: Batch) -> int:
        """Parse bytes state.done..obj.size into `batch`; returns the bytes consumed."""
        read = 0
        for block_start, block in self._blocks(obj, state.done):
            n0 = len(batch)
            consumed, broken, skipped = parse_lines(block, block_start, state.id, batch)
            state.records += len(batch) - n0
            state.broken += broken
            state.skipped += skipped
            state.done = block_start + consumed
            read += consumed
            if consumed < len(block):
                break
        if settled and state.done < obj.size:
            # an unterminated last line that will never be finished: counted, and passed over
            state.broken += 1
            read += obj.size - state.done
            state.done = obj.size
        return read

    def _blocks(self, obj: StoredObject, start: int) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) from `start`: blocks ending on a newline (a local file), or the rest of the object."""
        if self._root is None:
            yield start, self.store.get(obj.key)[start:]
            return
        try:
            f = open(os.path.join(self._root, obj.key), "rb")  # a key the listing gave: a file in the bucket
        except FileNotFoundError:
            return
        with f:
            f.seek(start)
            offset, carry = start, b""
            while True:
                chunk = f.read(BLOCK_BYTES)
                if not chunk:
                    if carry:
                        yield offset, carry
                    return
                block = carry + chunk if carry else chunk
                cut = block.rfind(b"\n") + 1
                if cut == 0:
                    carry = block
                    continue
                yield offset, block[:cut]
                offset += cut
                carry = block[cut:]

    def _publish(self, now: float, listing: list[StoredObject]) -> None:
        files = self._files.values()
        columns = Columns.concat(self._parts) if self._dirty else self._snapshot.columns
        self._dirty = False
        self._snapshot = Snapshot(columns, dict(self._by_id), now,
                                  sum(s.broken for s in files), sum(s.skipped for s in files),
                                  sum(s.done for s in files), len(listing), sum(o.size for o in listing),
                                  max((o.modified for o in listing), default=None))


def _live(cols: Columns, live_ids: np.ndarray) -> Columns:
    if len(cols) == 0:
        return cols
    keep = np.isin(cols.file, live_ids)
    return cols if keep.all() else cols.take(np.flatnonzero(keep))


def _save_npz(path: Path, cols: Columns) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "wb") as f:
        np.savez(f, **{f"c_{n}": a for n, a in cols.arrays().items()})
    os.replace(tmp, path)

