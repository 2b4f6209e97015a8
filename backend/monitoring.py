"""Monitoring: captured confidence against the workflow's threshold, for the Monitor page and `scones monitor`.

`MonitoringService` sits on `backend.capture.CaptureIndex` (one per endpoint) and on the backend's
own records (endpoints, models, state machines, executions), so it serves both backends: the
local one reads its bucket folder, the AWS one its S3 bucket, in the same format.

Everything handed to a page is small: chart frames are aggregated (time buckets, histogram bins) or
sampled (at most `max_points` points), whatever the number of captured records.

Retention and the size cap (`SCONES_CAPTURE_RETENTION_DAYS`, default 30; `SCONES_CAPTURE_MAX_BYTES`,
default 10 GiB, per endpoint) are enforced by `enforce_capture_limits`, which deletes whole capture
files, oldest first, as an S3 lifecycle rule would.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from backend.api import (
    THRESHOLD_ERROR, Execution, ResourceNotFound, SconesError, StepStatus, ValidationError,
)
from backend.capture import (
    IMAGE_LINE, IMAGE_NONE, IMAGE_SPAN, CaptureIndex, Columns, RefreshReport, Snapshot, decode_image,
    bytes_read_by_key, index_folder_name, key_time, local_folder, read_range, records_indexed,
)
from backend.local.serving.capture import LOW_WATER, RECENT_SECONDS  # one rule for the endpoint and here
from backend.objects import ObjectStore

DEFAULT_RETENTION_DAYS = 30.0
DEFAULT_MAX_BYTES = 10 * 1024 ** 3
ENFORCE_EVERY_SECONDS = 60.0
EXECUTIONS_LIMIT = 5000
LOWEST_CANDIDATES = 8  # the lowest-confidence grid reads up to 8n inferences to find n distinct images
HIST_BINS = 20  # 5% bins: 50 drew hairlines at 1,000 px (audit); each bin is split at the threshold anyway
NICE_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
                172800, 604800, 2592000)
PASSES, BELOW = "passes", "below threshold"
OUTCOMES = ("succeeded", "below threshold", "other error", "running")
_SLUG_RE = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,62}$")


def capture_limits(env: dict[str, str] | None = None) -> tuple[float, int]:
    """(retention days, size cap in bytes) from the environment; to move into backend/settings.py."""
    env = os.environ if env is None else env

    def number(name: str, default: float) -> float:
        raw = env.get(name)
        if raw in (None, ""):
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ValidationError(f"{name}={raw!r} is not a number; set it to a number or unset it.") from None
        if not math.isfinite(value) or value <= 0:
            raise ValidationError(f"{name}={raw!r} must be a finite number above 0.")
        return value

    return number("SCONES_CAPTURE_RETENTION_DAYS", DEFAULT_RETENTION_DAYS), int(number("SCONES_CAPTURE_MAX_BYTES", DEFAULT_MAX_BYTES))


# ---------------------------------------------------------------------------------------------
# Records handed to pages and the CLI
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureProgress:
    """Where reading an endpoint's capture stands (a cold read of a big capture takes seconds)."""

    endpoint: str
    running: bool
    bytes_done: int
    bytes_total: int
    records: int
    error: str = ""


@dataclass(frozen=True)
class CaptureStatus:
    endpoint: str
    state: str  # capturing | paused | off | unknown
    reason: str  # one sentence when paused or off
    enabled: bool
    sampling_percent: int
    destination: str
    endpoint_status: str  # InService ... or "deleted" (capture kept after the endpoint went)
    receiving: bool  # a capture file was written in the last two minutes
    used_bytes: int
    files: int
    max_bytes: int
    retention_days: float
    records: int
    broken_lines: int
    skipped_records: int
    dropped: int = 0  # requests answered but not captured while paused
    paused_since: str | None = None
    newest: str | None = None  # last inference time captured
    # Records older than the endpoint itself: an earlier endpoint of the same name (deleted since, perhaps with
    # another model) captured them under the same name, as SageMaker keys capture by endpoint name.
    before_endpoint: int = 0


@dataclass(frozen=True)
class CapturedImage:
    event_id: str
    time: str  # ISO 8601 UTC
    image: bytes | None  # the request's bytes (PNG/JPEG), None when capture has no input
    probabilities: dict[str, float]
    label: str
    confidence: float
    handle: str


@dataclass(frozen=True)
class MonitorCharts:
    """Pre-aggregated frames, one per chart; none has more than a few thousand rows."""

    threshold: float
    records: int
    passing: int
    below: int
    classes: tuple[str, ...]
    bucket_seconds: int
    points: pd.DataFrame  # time, confidence, label, side  (sampled)
    points_from: int  # records the points were sampled from
    histogram: pd.DataFrame  # bin_start, bin_end, side, records
    buckets: pd.DataFrame  # start, end, records, below, share_below
    class_mix: pd.DataFrame  # start, end, label, records, share
    outcomes: pd.DataFrame  # start, end, outcome, executions
    executions: int = 0  # executions with a confidence (the classify step ran)
    executions_passing: int = 0
    executions_failed_other: int = 0


# ---------------------------------------------------------------------------------------------
# Pure aggregation (no I/O): numpy in, small frames out
# ---------------------------------------------------------------------------------------------


def remember_classes(path: Path, names: tuple[str, ...]) -> bool:
    """Write an endpoint's class names for when it (or its model) is gone, atomically and only when they
    changed; False when the disk refuses (read-only or full): the names are still right for this look."""
    try:
        if path.is_file() and json.loads(path.read_text()) == list(names):
            return True
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(list(names)))
        os.replace(tmp, path)
    except (OSError, ValueError):
        return False
    return True


def remembered_classes(path: Path) -> tuple[str, ...]:
    """What `remember_classes` wrote; () when nothing was (or it cannot be read)."""
    try:
        return tuple(str(n) for n in json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return ()


def class_names(classes: Iterable[str], k: int) -> tuple[str, ...]:
    """Names for k probability columns: the model's classes, numbered past them (no model: all numbered)."""
    names = tuple(classes)
    if k <= 0:
        return names
    return names[:k] + tuple(f"class {i}" for i in range(len(names), k))


def window_mask(times: np.ndarray, since: float | None, until: float | None) -> np.ndarray | None:
    if since is None and until is None:
        return None
    mask = np.ones(len(times), bool)
    if since is not None:
        mask &= times >= since
    if until is not None:
        mask &= times < until
    return mask


def bucket_width(span: float, max_buckets: int) -> int:
    for w in NICE_BUCKETS:
        if span / w <= max_buckets:
            return w
    return int(math.ceil(span / max_buckets / 86400) * 86400)


def _utc(seconds: np.ndarray) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(seconds, dtype=np.float64) * 1e9, utc=True)


def sample_points(conf: np.ndarray, below: np.ndarray, budget: int) -> np.ndarray:
    """Row numbers to draw: all when they fit; else every below-threshold one if they fill at most half the
    budget, and evenly spaced rows (capture is read in time order) for the rest."""
    n = len(conf)
    if n <= budget:
        return np.arange(n)
    low = np.flatnonzero(below)
    if len(low) > budget // 2:
        low = low[np.linspace(0, len(low) - 1, budget // 2).astype(np.int64)]
    high = np.flatnonzero(~below)
    room = budget - len(low)
    if len(high) > room:
        high = high[np.linspace(0, len(high) - 1, room).astype(np.int64)]
    return np.sort(np.concatenate([low, high]))


def executions_frame(executions: Iterable[Execution]) -> pd.DataFrame:
    rows = []
    for e in executions:
        start = _epoch(e.start)
        if start is None:
            continue
        if e.status == "SUCCEEDED":
            outcome = "succeeded"
        elif e.status == "RUNNING":
            outcome = "running"
        elif e.error == THRESHOLD_ERROR:
            outcome = "below threshold"
        else:
            outcome = "other error"
        rows.append({"start": start, "outcome": outcome,
                     "confidence": np.nan if e.confidence is None else float(e.confidence)})
    return pd.DataFrame(rows, columns=["start", "outcome", "confidence"])


def build_chart_data(cols: Columns, classes: Iterable[str], threshold: float, since: float | None,
                     until: float | None, executions: pd.DataFrame | list, max_points: int = 4000,
                     max_buckets: int = 120) -> MonitorCharts:
    """Every chart's frame for the records of `cols` inside [since, until)."""
    mask = window_mask(cols.time, since, until)
    t = cols.time if mask is None else cols.time[mask]
    conf = cols.conf if mask is None else cols.conf[mask]
    pred = cols.pred if mask is None else cols.pred[mask]
    names = class_names(classes, cols.classes)
    below = conf < threshold
    n, n_below = len(conf), int(np.count_nonzero(below))
    ex = executions if isinstance(executions, pd.DataFrame) else executions_frame(executions)
    if len(ex):
        in_window = window_mask(ex["start"].to_numpy(dtype=np.float64), since, until)
        if in_window is not None:
            ex = ex[in_window]

    # time buckets over the span of the data inside the window (three minutes of traffic in the last
    # 24 hours is drawn in seconds-wide buckets, not as one 15-minute band), or over the window when empty
    ends = ([float(t.min()), float(t.max())] if n else []) + \
        ([float(ex["start"].min()), float(ex["start"].max())] if len(ex) else [])
    lo = min(ends) if ends else since
    hi = max(ends) + 1 if ends else until
    if lo is None or hi is None:
        lo = hi - 3600 if hi is not None else (lo if lo is not None else 0.0)
        hi = lo + 3600 if hi is None else hi
    width = bucket_width(max(hi - lo, 1.0), max_buckets)
    origin = math.floor(lo / width) * width
    nb = max(1, min(int(math.ceil((hi - origin) / width)), max_buckets + 2))

    idx = np.clip(((t - origin) // width).astype(np.int64), 0, nb - 1) if n else np.zeros(0, np.int64)
    per_bucket = np.bincount(idx, minlength=nb)
    below_bucket = np.bincount(idx, weights=below, minlength=nb).astype(np.int64)
    starts = origin + np.arange(nb) * width
    keep = per_bucket > 0
    buckets = pd.DataFrame({"start": _utc(starts[keep]), "end": _utc(starts[keep] + width),
                            "records": per_bucket[keep], "below": below_bucket[keep],
                            "share_below": below_bucket[keep] / np.maximum(per_bucket[keep], 1)})

    k = max(len(names), 1)
    mix = np.bincount(idx * k + np.clip(pred, 0, k - 1), minlength=nb * k).reshape(nb, k) if n else np.zeros((nb, k), np.int64)
    b_i, c_i = np.nonzero(mix)
    class_mix = pd.DataFrame({"start": _utc(starts[b_i]), "end": _utc(starts[b_i] + width),
                              "label": [names[c] if c < len(names) else f"class {c}" for c in c_i],
                              "records": mix[b_i, c_i], "share": mix[b_i, c_i] / per_bucket[b_i]})

    bins = np.clip((conf * HIST_BINS).astype(np.int64), 0, HIST_BINS - 1) if n else np.zeros(0, np.int64)
    hist = np.bincount(bins * 2 + below, minlength=HIST_BINS * 2).reshape(HIST_BINS, 2)
    h_i, s_i = np.nonzero(hist)
    histogram = pd.DataFrame({"bin_start": h_i / HIST_BINS, "bin_end": (h_i + 1) / HIST_BINS,
                              "side": np.where(s_i == 1, BELOW, PASSES), "records": hist[h_i, s_i]})

    rows = sample_points(conf, below, max_points)
    points = pd.DataFrame({"time": _utc(t[rows]), "confidence": conf[rows],
                           "label": np.array(names, dtype=object)[np.clip(pred[rows], 0, len(names) - 1)] if names else "",
                           "side": np.where(below[rows], BELOW, PASSES)})

    if len(ex):
        e_idx = np.clip(((ex["start"].to_numpy() - origin) // width).astype(np.int64), 0, nb - 1)
        grouped = pd.DataFrame({"b": e_idx, "outcome": ex["outcome"].to_numpy()}).groupby(["b", "outcome"]).size()
        outcomes = pd.DataFrame({"start": _utc(starts[grouped.index.get_level_values(0)]),
                                 "end": _utc(starts[grouped.index.get_level_values(0)] + width),
                                 "outcome": grouped.index.get_level_values(1), "executions": grouped.to_numpy()})
        ex_conf = ex["confidence"].to_numpy()
        with_conf = ~np.isnan(ex_conf)
        executions_n = int(with_conf.sum())
        executions_pass = int((ex_conf[with_conf] >= threshold).sum())
        failed_other = int((ex["outcome"] == "other error").sum())
    else:
        outcomes = pd.DataFrame(columns=["start", "end", "outcome", "executions"])
        executions_n = executions_pass = failed_other = 0
    return MonitorCharts(threshold, n, n - n_below, n_below, names, int(width), points, n, histogram, buckets,
                         class_mix, outcomes, executions_n, executions_pass, failed_other)


# ---------------------------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------------------------


def _epoch(value: Any) -> float | None:
    """None | epoch seconds | datetime | ISO 8601 text (naive = UTC) -> epoch seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(f"{value!r} is not an ISO 8601 time: write it as 2024-08-07T19:01:39Z.") from None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    raise ValidationError(f"{value!r} is not a time.")


def _iso(seconds: float | None) -> str | None:
    if seconds is None or not np.isfinite(seconds):
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def ready_file_capture_state(serving_dir: Path) -> Callable[[str], dict | None]:
    """The local endpoint's capture state: the `capture` field of its newest ready file, if any."""
    serving_dir = Path(serving_dir)

    def state(endpoint: str) -> dict | None:
        pattern = re.compile(re.escape(endpoint) + r"-[0-9a-f]{8}\.json$")
        try:
            files = [p for p in serving_dir.iterdir() if pattern.fullmatch(p.name)]
        except OSError:
            return None
        for path in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True):
            try:
                capture = json.loads(path.read_text()).get("capture")
            except (OSError, ValueError):
                continue
            if isinstance(capture, dict):
                return capture
        return None

    return state


@dataclass
class _Source:
    """Where one endpoint's capture lives."""

    endpoint: str
    bucket: str
    prefix: str
    record: Any = None  # the Endpoint record when the endpoint exists
    captured: bool = False  # its capture folder exists: something was captured (capture on alone is not data)


class MonitoringService:
    """Monitoring for one backend. `source` is the backend: list_endpoints, describe_endpoint,
    describe_model, default_threshold and, where there is a workflow, describe_state_machine and
    list_workflow_executions."""

    def __init__(self, source: Any, index_root: Path, *, open_bucket: Callable[[str], ObjectStore] | None = None,
                 capture_state: Callable[[str], dict | None] | None = None, retention_days: float | None = None,
                 max_bytes: int | None = None, refresh_seconds: float = 1.0, clock: Callable[[], float] = time.time):
        self.source = source
        self.index_root = Path(index_root)
        self.open_bucket = open_bucket or self._workspace_bucket
        self.capture_state = capture_state or (lambda endpoint: None)
        days, cap = capture_limits()
        self.retention_days = float(retention_days if retention_days is not None else days)
        self.max_bytes = int(max_bytes if max_bytes is not None else cap)
        self.refresh_seconds, self.clock = refresh_seconds, clock
        self._indexes: dict[tuple[str, str, str], CaptureIndex] = {}
        self._threads: dict[tuple[str, str, str], threading.Thread] = {}
        self._errors: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}
        self._last_enforced: dict[str, float] = {}
        self._refreshed: dict[tuple[str, str, str], float] = {}  # monotonic time of each index's last refresh

    # -- where capture is ------------------------------------------------------------------

    def _workspace_bucket(self, bucket: str) -> ObjectStore:
        if bucket != self.source.objects.bucket:
            raise ValidationError(f"Capture goes to bucket {bucket!r}, not the workspace bucket "
                                  f"{self.source.objects.bucket!r}; this backend cannot read it.")
        return self.source.objects

    def _cached(self, key: str, ttl: float, load: Callable[[], Any]) -> Any:
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit and now - hit[0] < ttl:
            return hit[1]
        value = load()
        self._cache[key] = (now, value)
        return value

    def _sources(self) -> dict[str, _Source]:
        """Endpoints with capture: the existing ones, and folders left in their destinations by deleted ones."""
        def load() -> dict[str, _Source]:
            out: dict[str, _Source] = {}
            destinations: set[tuple[str, str]] = set()
            records: dict[str, tuple[str | None, str | None, Any]] = {}  # capture off too: its earlier data is still its own
            for e in self.source.list_endpoints():
                if not e.capture.destination:  # capture off with no destination: any folder of its name is its own
                    records[e.endpoint_name] = (None, None, e)
                    continue
                bucket, prefix = _split_uri(e.capture.destination)
                destinations.add((bucket, prefix))
                records[e.endpoint_name] = (bucket, prefix, e)
                if e.capture.enabled:
                    out[e.endpoint_name] = _Source(e.endpoint_name, bucket, prefix, e)
            default = getattr(self.source, "default_capture_destination", None)
            if callable(default):
                try:
                    destinations.add(_split_uri(default()))
                except SconesError:
                    pass
            mine = self._own_capture_folders()
            for bucket, prefix in sorted(destinations):
                for name in self._endpoint_folders(bucket, prefix):
                    if mine is None or name in mine:
                        record = records.get(name)
                        same = record is not None and record[:2] in ((bucket, prefix), (None, None))
                        found = out.setdefault(name, _Source(name, bucket, prefix, record[2] if same else None))
                        if (found.bucket, found.prefix) == (bucket, prefix):
                            found.captured = True
            return out
        return self._cached("sources", 3.0, load)

    def _own_capture_folders(self) -> set[str] | None:
        """In a bucket other projects share (AWS's default), the capture folders of the endpoints this workspace
        deployed: another project's are neither monitored nor aged out here. None: every folder is ours."""
        if not getattr(getattr(self.source, "objects", None), "shared", False):
            return None
        captured = getattr(self.source, "captured_endpoints", None)
        try:
            return set(captured()) if callable(captured) else None
        except SconesError:
            return set()

    def _endpoint_folders(self, bucket: str, prefix: str) -> list[str]:
        """Endpoint names with capture under a destination: folders locally; on S3 from a listing, kept a minute."""
        try:
            store = self.open_bucket(bucket)
        except SconesError:
            return []
        folder = local_folder(store, prefix)
        if folder is not None:
            try:
                return sorted(p.name for p in folder.iterdir() if p.is_dir() and _SLUG_RE.fullmatch(p.name))
            except OSError:
                return []
        start = f"{prefix}/" if prefix else ""

        def load() -> list[str]:
            names = {o.key[len(start):].split("/", 1)[0] for o in store.list(start) if o.key.endswith(".jsonl")}
            return sorted(n for n in names if _SLUG_RE.fullmatch(n))
        return self._cached(f"folders:{bucket}/{prefix}", 60.0, load)

    def _source(self, endpoint: str) -> _Source:
        src = self._sources().get(endpoint)
        if src is None:
            self._cache.pop("sources", None)
            src = self._sources().get(endpoint)
        if src is None:
            raise ResourceNotFound(f"No captured data for endpoint {endpoint!r}: deploy it with data capture on, "
                                   "or pick an endpoint from the list.")
        return src

    def _index(self, endpoint: str) -> CaptureIndex:
        src = self._source(endpoint)
        key = (src.bucket, src.prefix, endpoint)
        with self._lock:
            index = self._indexes.get(key)
            if index is None:
                index = CaptureIndex(self.open_bucket(src.bucket), src.prefix, endpoint,
                                     self.index_root / index_folder_name(*key), clock=self.clock)
                self._indexes[key] = index
            return index

    def _snapshot(self, endpoint: str) -> Snapshot:
        index = self._index(endpoint)
        thread = self._threads.get(self._key(index))
        if thread is not None and thread.is_alive():
            return index.snapshot  # a background read is on: use what was there before it
        if self._stale(index):
            self._refresh(index)
        return index.snapshot

    def _stale(self, index: CaptureIndex) -> bool:
        return time.monotonic() - self._refreshed.get(self._key(index), -math.inf) >= self.refresh_seconds

    def _refresh(self, index: CaptureIndex) -> RefreshReport:
        self._refreshed[self._key(index)] = time.monotonic()
        return index.refresh()

    @staticmethod
    def _key(index: CaptureIndex) -> tuple[str, str, str]:
        return (getattr(index.store, "bucket", ""), index.prefix, index.endpoint)

    def _classes(self, endpoint: str, k: int) -> tuple[str, ...]:
        """The class names of an endpoint's model; remembered beside the capture index, so the capture of an
        endpoint (or a model) since deleted keeps its names; else the staged classes when they are as many."""
        remembered = self.index_root / "classes" / f"{endpoint}.json"

        def load() -> tuple[str, ...]:
            try:
                model = self.source.describe_endpoint(endpoint).model_name
                names = tuple(self.source.describe_model(model).classes)
            except (SconesError, AttributeError):
                names = ()
            if names:
                remember_classes(remembered, names)
                return names
            report = getattr(self.source, "latest_stage_report", lambda: None)()
            staged = tuple(report.classes) if report is not None else ()
            return remembered_classes(remembered) or (staged if len(staged) == k else ())
        return class_names(self._cached(f"classes:{endpoint}", 10.0, load), k)

    # -- what pages and the CLI call ---------------------------------------------------------

    def monitored_endpoints(self) -> list[str]:
        """Endpoints with captured data or capture on: the workflow's endpoint first, then InService ones,
        then the others (deleted endpoints whose capture stays last)."""
        sources = self._sources()
        workflow = self._workflow_endpoint()

        def order(name: str) -> tuple:
            record = sources[name].record
            return (name != workflow, record is None, record is not None and record.status != "InService", name)
        return sorted(sources, key=order)

    def _workflow_endpoint(self) -> str | None:
        describe = getattr(self.source, "describe_state_machine", None)
        if describe is None:
            return None
        try:
            return describe().endpoint_name
        except SconesError:
            return None

    def monitor_threshold(self) -> float:
        """The deployed workflow's threshold; with that machine deleted, the threshold of a machine still calling
        the functions (an imported one: the functions, and so their threshold, are shared); else the configured
        default."""
        describe = getattr(self.source, "describe_state_machine", None)
        if describe is not None:
            try:
                return float(describe().threshold)
            except SconesError:
                pass
            try:
                calling = [m for m in self.source.list_state_machines() if m.functions]
            except SconesError:
                calling = []
            if calling:
                return float(calling[0].threshold)
        return float(self.source.default_threshold())

    def refresh_capture(self, endpoint: str, background: bool = False) -> CaptureProgress:
        """Read new capture now, or (background=True) in a thread the page polls; a cold read of a
        large capture takes a while and must not hold the page's script thread."""
        index = self._index(endpoint)
        key = self._key(index)
        if not background:
            report = self._refresh(index)
            return CaptureProgress(endpoint, False, report.bytes_read, report.bytes_read, report.records)
        with self._lock:
            thread = self._threads.get(key)
            if (thread is None or not thread.is_alive()) and self._stale(index):
                def run() -> None:
                    try:
                        self._refresh(index)
                        self._errors.pop(key, None)
                    except Exception as exc:  # noqa: BLE001 - reported to the page through the progress
                        self._errors[key] = f"{type(exc).__name__}: {exc}"
                thread = threading.Thread(target=run, name=f"capture-{endpoint}", daemon=True)
                self._threads[key] = thread
                thread.start()
                thread.join(0.5)  # a small refresh finishes here, and the page draws at once
        running = thread is not None and thread.is_alive()
        p = index.progress
        return CaptureProgress(endpoint, running, p.bytes_done, p.bytes_total, len(index.snapshot.columns),
                               self._errors.get(key, ""))

    def capture_table(self, endpoint: str, since: Any = None, until: Any = None, threshold: float | None = None,
                      limit: int | None = None) -> pd.DataFrame:
        """One row per captured inference in [since, until), oldest first (the newest `limit` when given):
        inference_time, event_id, p_<class>..., predicted, confidence, passes, image_ref (where the request's image sits
        in the capture: s3://bucket/key#line|span:offset:length, which capture_image reads)."""
        snap = self._snapshot(endpoint)
        threshold = self.monitor_threshold() if threshold is None else float(threshold)
        cols = snap.columns
        mask = window_mask(cols.time, _epoch(since), _epoch(until))
        rows = np.arange(len(cols)) if mask is None else np.flatnonzero(mask)
        rows = rows[np.argsort(cols.time[rows], kind="stable")]
        if limit is not None:
            rows = rows[-int(limit):] if limit > 0 else rows[:0]
        c = cols.take(rows)
        names = self._classes(endpoint, cols.classes)
        src = self._source(endpoint)
        out = {"inference_time": _utc(c.time), "event_id": c.event.astype(str)}
        k = c.probs.shape[1] if c.probs.ndim == 2 else 0  # 0 before the first record: names come from the model
        for i, name in enumerate(names):
            out[f"p_{name}"] = c.probs[:, i] if i < k else np.zeros(len(c.conf))
        out["predicted"] = np.array(names, dtype=object)[c.pred] if names else np.array([], dtype=object)
        out["confidence"] = c.conf
        out["passes"] = c.conf >= threshold
        out["image_ref"] = _handles(src.bucket, snap, c)
        return pd.DataFrame(out)

    def capture_image(self, handle: str) -> bytes:
        """The request bytes a table's `image` handle points at."""
        m = re.fullmatch(r"s3://([^/]+)/(.+)#(span|line):(\d+):(\d+)", handle or "")
        if not m:
            raise ValidationError(f"{handle!r} is not a capture image handle.")
        bucket, key, kind, offset, length = m.groups()
        raw = read_range(self.open_bucket(bucket), key, int(offset), int(length))
        return decode_image(raw, IMAGE_SPAN if kind == "span" else IMAGE_LINE)

    def threshold_counts(self, endpoint: str, threshold: float, since: Any = None, until: Any = None) -> dict[str, Any]:
        """What-if: how many inferences (and executions) pass at `threshold`."""
        cols = self._snapshot(endpoint).columns
        mask = window_mask(cols.time, _epoch(since), _epoch(until))
        conf = cols.conf if mask is None else cols.conf[mask]
        passing = int(np.count_nonzero(conf >= threshold))
        ex = self._executions(endpoint, _epoch(since), _epoch(until))
        ex_conf = ex["confidence"].to_numpy() if len(ex) else np.zeros(0)
        ex_conf = ex_conf[~np.isnan(ex_conf)]
        return {"threshold": float(threshold), "records": int(len(conf)), "passing": passing,
                "below_threshold": int(len(conf) - passing),
                "share_below": (len(conf) - passing) / len(conf) if len(conf) else None,
                "executions": int(len(ex_conf)), "executions_passing": int((ex_conf >= threshold).sum())}

    def monitor_summary(self, endpoint: str | None = None, threshold: float | None = None,
                        since: Any = None) -> dict[str, Any]:
        """`scones monitor`: the CLI.md keys, over one endpoint or all of them, from `since` (UTC) on."""
        threshold = self.monitor_threshold() if threshold is None else float(threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValidationError(f"Threshold {threshold} is outside 0..1; pass a confidence between 0 and 1.")
        start = _epoch(since)
        endpoints = [endpoint] if endpoint else self.monitored_endpoints()
        confs, by_label, broken = [], {}, 0
        for name in endpoints:
            snap = self._snapshot(name)
            cols = snap.columns
            broken += snap.broken
            mask = window_mask(cols.time, start, None)
            conf = cols.conf if mask is None else cols.conf[mask]
            pred = cols.pred if mask is None else cols.pred[mask]
            names = self._classes(name, cols.classes)
            below = conf < threshold
            for i, label in enumerate(names):
                of = pred == i
                entry = by_label.setdefault(label, {"records": 0, "below_threshold": 0})
                entry["records"] += int(of.sum())
                entry["below_threshold"] += int((of & below).sum())
            confs.append(conf)
        conf = np.concatenate(confs) if confs else np.zeros(0)
        n, n_below = int(len(conf)), int(np.count_nonzero(conf < threshold))
        return {
            "records": n, "below_threshold": n_below, "share_below": n_below / n if n else None,
            "by_label": by_label,
            "confidence": {"min": float(conf.min()) if n else None, "p50": float(np.median(conf)) if n else None,
                           "mean": float(conf.mean()) if n else None},
            "broken_lines": int(broken), "threshold": threshold, "endpoints": endpoints, "since": _iso(start),
        }

    def monitor_charts(self, endpoint: str, since: Any = None, until: Any = None, threshold: float | None = None,
                       max_points: int = 4000, max_buckets: int = 120) -> MonitorCharts:
        snap = self._snapshot(endpoint)
        threshold = self.monitor_threshold() if threshold is None else float(threshold)
        start, end = _epoch(since), _epoch(until)
        return build_chart_data(snap.columns, self._classes(endpoint, snap.columns.classes), threshold, start, end,
                                self._executions(endpoint, start, end), max_points, max_buckets)

    def lowest_confidence(self, endpoint: str, n: int = 12, since: Any = None, until: Any = None) -> list[CapturedImage]:
        """The n least confident inferences of the window, lowest first, with their images decoded: one per image
        (a batch of random test images sends some images several times, and the same image's answers filled the
        grid: audit). An inference is the same as one already taken when its captured input has the same bytes, or,
        without a captured input, the same confidence and class."""
        snap = self._snapshot(endpoint)
        cols = snap.columns
        mask = window_mask(cols.time, _epoch(since), _epoch(until))
        rows = np.arange(len(cols)) if mask is None else np.flatnonzero(mask)
        if n <= 0 or len(rows) == 0:
            return []
        conf = cols.conf[rows]
        wanted = min(len(rows), LOWEST_CANDIDATES * n)  # enough to find n distinct images among repeats
        pick = np.argpartition(conf, wanted - 1)[:wanted] if len(rows) > wanted else np.arange(len(rows))
        pick = pick[np.lexsort((cols.time[rows[pick]], conf[pick]))]
        c = cols.take(rows[pick])
        names = self._classes(endpoint, cols.classes)
        src = self._source(endpoint)
        store = self.open_bucket(src.bucket)
        handles = _handles(src.bucket, snap, c)
        out: list[CapturedImage] = []
        seen: set[Any] = set()
        for i in range(len(c)):
            if len(out) == n:
                break
            image, raw = None, None
            if c.kind[i] != IMAGE_NONE:
                try:
                    raw = read_range(store, snap.key_of(c.file[i]), int(c.offset[i]), int(c.length[i]))
                    image = decode_image(raw, int(c.kind[i]))
                except (SconesError, OSError, ValueError, KeyError):
                    image = None  # the file went (retention) since the refresh
            same = hashlib.blake2b(raw, digest_size=16).digest() if raw else (float(c.conf[i]), int(c.pred[i]))
            if same in seen:
                continue
            seen.add(same)
            probs = {names[j]: float(p) for j, p in enumerate(c.probs[i]) if j < len(names) and np.isfinite(p)}
            out.append(CapturedImage(c.event[i].decode("utf-8", "replace"), _iso(float(c.time[i])), image, probs,
                                     names[int(c.pred[i])] if names else "", float(c.conf[i]), handles[i]))
        return out

    def capture_status(self, endpoint: str) -> CaptureStatus:
        """Is capture on, paused (and why), how much it holds against the cap and the retention."""
        src = self._source(endpoint)
        snap = self._snapshot(endpoint)
        record = src.record
        state = self.capture_state(endpoint) or {}
        if record is None:
            status, reason, endpoint_status = "off", "The endpoint was deleted; its captured data stays.", "deleted"
        elif not record.capture.enabled:
            status, reason, endpoint_status = "off", ("Capture is off for this endpoint; what it captured before "
                                                      "stays."), record.status
        elif state.get("state") == "paused":
            status, reason, endpoint_status = "paused", str(state.get("reason") or "Capture is paused."), record.status
        elif record.status != "InService":
            status, reason, endpoint_status = "off", f"The endpoint is {record.status}.", record.status
        elif state:
            status, reason, endpoint_status = "capturing", "", record.status
        else:
            status, reason, endpoint_status = "unknown" if record.backend != "local" else "capturing", "", record.status
        now = self.clock()
        newest = float(snap.columns.time.max()) if len(snap.columns) else None
        before = 0
        if record is not None and len(snap.columns):
            try:
                created = _epoch(record.created)
            except ValidationError:
                created = None
            if created is not None:  # capture times are whole seconds: a minute's margin for them and clock skew
                before = int((snap.columns.time < created - 60.0).sum())
        return CaptureStatus(
            endpoint=endpoint, state=status, reason=reason, enabled=bool(record and record.capture.enabled),
            sampling_percent=int(record.capture.sampling_percent) if record else 0,
            destination=f"s3://{src.bucket}/{src.prefix}" if src.prefix else f"s3://{src.bucket}",
            endpoint_status=endpoint_status,
            receiving=snap.newest_modified is not None and now - snap.newest_modified < RECENT_SECONDS,
            used_bytes=snap.listed_bytes, files=snap.listed_files, max_bytes=self._cap(endpoint, state),
            retention_days=self.retention_days, records=len(snap.columns), broken_lines=snap.broken,
            skipped_records=snap.skipped, dropped=int(state.get("dropped") or 0),
            paused_since=_iso(state.get("since")) if state.get("state") == "paused" else None, newest=_iso(newest),
            before_endpoint=before)

    def _cap(self, endpoint: str, state: dict | None = None) -> int:
        """The size cap of an endpoint's capture: the one its process was started with when it says (an
        endpoint started under another SCONES_CAPTURE_MAX_BYTES), this service's otherwise."""
        state = self.capture_state(endpoint) if state is None else state
        own = (state or {}).get("max_bytes")
        return int(own) if isinstance(own, (int, float)) and own > 0 else self.max_bytes

    def enforce_capture_limits(self, endpoint: str | None = None, force: bool = True) -> dict[str, Any]:
        """Delete capture files past the retention, then the oldest past the size cap (down to 90% of it).

        The cap is the endpoint's own where its process says (`_cap`): one paused at a smaller cap than this
        service's resumes once this has made room.

        Files written in the last two minutes are never deleted (an endpoint may still append to them).
        With force=False this runs at most once a minute per endpoint (pages call it on every refresh).
        """
        now = self.clock()
        out: dict[str, Any] = {"retention_days": self.retention_days, "max_bytes": self.max_bytes, "endpoints": {}}
        for name in ([endpoint] if endpoint else self.monitored_endpoints()):
            if not force and now - self._last_enforced.get(name, -math.inf) < ENFORCE_EVERY_SECONDS:
                continue
            self._last_enforced[name] = now
            src = self._source(name)
            store = self.open_bucket(src.bucket)
            prefix = f"{src.prefix}/{name}/" if src.prefix else f"{name}/"
            files = sorted((key_time(o.key) or o.modified, o.key, o.size, o.modified)
                           for o in store.list(prefix) if o.key.endswith(".jsonl"))
            cutoff = now - self.retention_days * 86400
            old = [f for f in files if f[0] < cutoff and now - f[3] >= RECENT_SECONDS]
            kept = [f for f in files if f not in old]
            total = sum(f[2] for f in kept)
            over = []
            cap = self._cap(name)
            if total > cap:
                for f in kept:
                    if total <= LOW_WATER * cap:
                        break
                    if now - f[3] < RECENT_SECONDS:
                        continue
                    over.append(f)
                    total -= f[2]
            doomed = [f[1] for f in old + over]
            if doomed:
                store.delete_keys(doomed)
                self._refreshed.pop((src.bucket, src.prefix, name), None)  # read the listing again
            out["endpoints"][name] = {"deleted_files": len(doomed), "deleted_bytes": sum(f[2] for f in old + over),
                                      "past_retention": len(old), "past_size_cap": len(over),
                                      "left_files": len(files) - len(doomed), "left_bytes": total}
        return out

    def monitor_step_status(self) -> StepStatus:
        """The home page's 'monitor' step, cheap enough for its 2-second poll (no capture is read here)."""
        try:
            endpoints = self.monitored_endpoints()
        except SconesError as exc:
            return StepStatus("monitor", "failed", str(exc))
        if not endpoints:
            return StepStatus("monitor", "not_started", "No captured data yet: deploy with capture on.")
        paused = [e for e in endpoints if (self.capture_state(e) or {}).get("state") == "paused"]
        if paused:
            reason = (self.capture_state(paused[0]) or {}).get("reason") or "capture is paused"
            return StepStatus("monitor", "failed", f"Capture is paused on {paused[0]}: {reason}")
        sources = self._sources()  # perhaps a newer load than monitored_endpoints' (3 s cache)
        captured = [e for e in endpoints if e in sources and sources[e].captured]
        if not captured:
            return StepStatus("monitor", "not_started", f"Capture is on for {', '.join(endpoints[:3])}; nothing captured "
                                                        "yet: send it traffic (the Workflow page runs batches).")
        indexed = self._indexed_elsewhere(captured)  # the indexes on disk: this process's, the CLI's, another's
        named = [e if sources[e].record is not None else f"{e} (endpoint deleted, its capture kept)" for e in captured[:3]]
        detail = f"Captured data of {', '.join(named)}" + (f" and {len(captured) - 3} more" if len(captured) > 3 else "")
        if not indexed:
            return StepStatus("monitor", "in_progress", detail + "; open Monitor to read it.")
        if self._unread_elsewhere(captured):  # traffic since the last read: the count above is not the latest
            return StepStatus("monitor", "in_progress",
                              detail + f"; {indexed:,} inferences read, more captured since: open Monitor to read them.")
        return StepStatus("monitor", "done", detail + f"; {indexed:,} inferences read.")

    def _indexed_elsewhere(self, endpoints: list[str]) -> int:
        """Records of these endpoints that an index on disk holds: read by another process (`scones monitor`,
        another dashboard) or before a restart. One small manifest read per endpoint, cached for a poll."""
        def load() -> int:
            sources = self._sources()
            return sum(records_indexed(self.index_root / index_folder_name(sources[e].bucket, sources[e].prefix, e))
                       for e in endpoints if e in sources)
        return self._cached(f"indexed-elsewhere:{','.join(endpoints)}", 5.0, load)

    def _unread_elsewhere(self, endpoints: list[str]) -> int:
        """Bytes of these endpoints' capture that no index on disk has read (traffic since the last read). The
        listing of the capture is cached 5 s on a local bucket, a minute on S3 (a List call each); what was
        read is the manifest's now, so a read turns the step back to done at once."""
        from backend.local.store import LocalBucket

        local = isinstance(getattr(self.source, "objects", None), LocalBucket)
        sources, unread = self._sources(), 0
        for e in endpoints:
            if e not in sources:
                continue
            src = sources[e]
            done = bytes_read_by_key(self.index_root / index_folder_name(src.bucket, src.prefix, e))
            if not done:  # never opened in Monitor (an old endpoint's folder, say): nothing came 'since' a read
                continue
            prefix = f"{src.prefix}/{e}/" if src.prefix else f"{e}/"
            listing = self._cached(f"capture-listing:{src.bucket}:{prefix}", 5.0 if local else 60.0,
                                   lambda: [(o.key, o.size) for o in self.open_bucket(src.bucket).list(prefix)
                                            if o.key.endswith(".jsonl")])
            unread += sum(max(0, size - done.get(key, 0)) for key, size in listing)
        return unread

    # -- executions of the workflow(s) that call an endpoint ---------------------------------

    def _executions(self, endpoint: str, since: float | None, until: float | None) -> pd.DataFrame:
        listing = getattr(self.source, "list_workflow_executions", None)
        describe = getattr(self.source, "describe_state_machine", None)
        if listing is None or describe is None:
            return executions_frame([])

        def load() -> pd.DataFrame:
            try:
                executions = listing(limit=EXECUTIONS_LIMIT)
            except SconesError:
                return executions_frame([])
            machines: dict[str, str | None] = {}
            mine = []
            for e in executions:
                if e.endpoint is not None:  # the endpoint it called, noted when it started
                    if e.endpoint == endpoint:
                        mine.append(e)
                    continue
                # from before such notes: the endpoint its state machine calls now is the only guess
                if e.state_machine not in machines:
                    try:
                        machines[e.state_machine] = describe(e.state_machine).endpoint_name
                    except SconesError:
                        machines[e.state_machine] = None
                if machines[e.state_machine] == endpoint:
                    mine.append(e)
            return executions_frame(mine)

        ex = self._cached(f"executions:{endpoint}", 2.0, load)
        if len(ex) and (since is not None or until is not None):
            keep = np.ones(len(ex), bool)
            if since is not None:
                keep &= ex["start"].to_numpy() >= since
            if until is not None:
                keep &= ex["start"].to_numpy() < until
            ex = ex[keep]
        return ex


def _handles(bucket: str, snap: Snapshot, c: Columns) -> np.ndarray:
    kinds = {IMAGE_SPAN: "span", IMAGE_LINE: "line"}
    out = np.empty(len(c), dtype=object)
    keys: dict[int, str] = {}
    for i in range(len(c)):
        kind = kinds.get(int(c.kind[i]))
        if kind is None:
            out[i] = ""
            continue
        fid = int(c.file[i])
        key = keys.get(fid)
        if key is None:
            key = keys[fid] = f"s3://{bucket}/{snap.key_of(fid)}" if fid in snap.files else ""
        out[i] = f"{key}#{kind}:{int(c.offset[i])}:{int(c.length[i])}" if key else ""
    return out


def _split_uri(uri: str) -> tuple[str, str]:
    m = re.fullmatch(r"s3://([^/]+)/?(.*)", (uri or "").strip())
    if not m:
        raise ValidationError(f"{uri!r} is not an S3 URI: write it as s3://bucket/prefix.")
    return m.group(1), m.group(2).strip("/")


# ---------------------------------------------------------------------------------------------
# The backend methods (both backends inherit this; pages and the CLI call these names)
# ---------------------------------------------------------------------------------------------


class MonitoringBackendMixin:
    """Monitoring methods of a backend, delegated to `self.monitoring` (a MonitoringService)."""

    @cached_property
    def monitoring(self) -> MonitoringService:
        settings = self.settings  # type: ignore[attr-defined]
        return MonitoringService(self, Path(settings.home) / "capture_index", open_bucket=self.capture_bucket,
                                 capture_state=ready_file_capture_state(Path(settings.home) / "serving"))

    def capture_bucket(self, bucket: str) -> ObjectStore:
        """The bucket a capture destination names: the workspace's own, or (locally) another local bucket."""
        objects = self.objects  # type: ignore[attr-defined]
        if bucket == objects.bucket:
            return objects
        store = getattr(self, "store", None)
        if store is not None:
            from backend.local.store import LocalBucket

            return LocalBucket(store, bucket)
        raise ValidationError(f"Capture goes to bucket {bucket!r}, not the workspace bucket {objects.bucket!r}; "
                              "this backend reads capture from its own bucket only.")

    def monitored_endpoints(self) -> list[str]:
        return self.monitoring.monitored_endpoints()

    def monitor_threshold(self) -> float:
        return self.monitoring.monitor_threshold()

    def refresh_capture(self, endpoint: str, background: bool = False) -> CaptureProgress:
        return self.monitoring.refresh_capture(endpoint, background)

    def capture_table(self, endpoint: str, since: Any = None, until: Any = None, threshold: float | None = None,
                      limit: int | None = None) -> pd.DataFrame:
        return self.monitoring.capture_table(endpoint, since, until, threshold, limit)

    def capture_image(self, handle: str) -> bytes:
        return self.monitoring.capture_image(handle)

    def threshold_counts(self, endpoint: str, threshold: float, since: Any = None, until: Any = None) -> dict[str, Any]:
        return self.monitoring.threshold_counts(endpoint, threshold, since, until)

    def monitor_summary(self, endpoint: str | None = None, threshold: float | None = None,
                        since: Any = None) -> dict[str, Any]:
        return self.monitoring.monitor_summary(endpoint, threshold, since)

    def monitor_charts(self, endpoint: str, since: Any = None, until: Any = None, threshold: float | None = None,
                       max_points: int = 4000, max_buckets: int = 120) -> MonitorCharts:
        return self.monitoring.monitor_charts(endpoint, since, until, threshold, max_points, max_buckets)

    def lowest_confidence(self, endpoint: str, n: int = 12, since: Any = None, until: Any = None) -> list[CapturedImage]:
        return self.monitoring.lowest_confidence(endpoint, n, since, until)

    def capture_status(self, endpoint: str) -> CaptureStatus:
        return self.monitoring.capture_status(endpoint)

    def enforce_capture_limits(self, endpoint: str | None = None, force: bool = True) -> dict[str, Any]:
        return self.monitoring.enforce_capture_limits(endpoint, force)
