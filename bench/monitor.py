"""Monitoring benchmark (JSON on stdout): reading data capture at 10,000 / 100,000 / 1,000,000 records.

A generator writes N records in the real capture format (the bytes `capture_line` writes: real
32x32 CIFAR PNGs, base64) and key layout, one request a second, files rolling every minute as
the endpoint rolls them. For each N it reports:

- cold: the first read into an empty index (MB/s of JSONL; goal >= 200 MB/s), with the process's
  peak memory (goal <= 1 GB at any N; each N runs in a fresh child process so peaks do not mix);
- warm: a refresh with nothing new, plus every chart's data built (goal <= 2 s at 1,000,000);
- incremental: 1,000 new records written on top, then refresh + charts (goal <= 1 s).

The 1,000,000 case writes about 4 GB: free disk is checked first and a case that does not fit is
reported as skipped. Not part of `make test`.

    python bench/monitor.py [--sizes 10000,100000,1000000] [--dir DIR] [--keep]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.local.backend import LocalBackend  # noqa: E402
from backend.local.serving.capture import capture_key, capture_line, inference_time  # noqa: E402
from backend.monitoring import MonitoringBackendMixin  # noqa: E402
from backend.settings import load_settings  # noqa: E402

BUCKET, PREFIX, ENDPOINT = "scones-unlimited", "data_capture", "bench-endpoint"
RECORD_BYTES_ESTIMATE = 4_300
HEADROOM_BYTES = 2 * 1024 ** 3


def real_pngs(n: int = 200) -> list[bytes]:
    """PNGs of the bundled CIFAR-100 sample (bicycle and motorcycle test images), as staging writes them."""
    from backend import cifar
    from backend.settings import SAMPLE_ARCHIVE

    images = cifar.load_split_arrays(SAMPLE_ARCHIVE, ("bicycle", "motorcycle"))["test"].images[:n]
    return [cifar.encode_png(im) for im in images]


class Generator:
    """Writes capture files as the endpoint does, fast: the line around each PNG is prepared once."""

    def __init__(self, root: Path, pngs: list[bytes], seed: int = 7):
        self.root, self.rng = root, random.Random(seed)
        self.heads = [(b'{"captureData":{"endpointInput":{"observedContentType":"image/png","mode":"INPUT","data":"'
                       + base64.b64encode(p) + b'","encoding":"BASE64"},"endpointOutput":{"observedContentType":'
                       b'"application/json","mode":"OUTPUT","data":"') for p in pngs]
        self.pngs = pngs
        self.written = 0
        self.bytes = 0
        self._check_format()

    def line(self, i: int, when: float, p: float, event: str) -> bytes:
        return b"".join((self.heads[i % len(self.heads)], f"[{p!r}, {1 - p!r}]".encode(),
                         b'","encoding":"JSON"}},"eventMetadata":{"eventId":"', event.encode(),
                         b'","inferenceTime":"', inference_time(when).encode(), b'"},"eventVersion":"0"}\n'))

    def _check_format(self) -> None:
        event, when, p = str(uuid.uuid4()), 1_767_225_600.25, 0.875
        expected = capture_line(input_data=self.pngs[0], input_type="image/png", output_data=f"[{p!r}, {1 - p!r}]".encode(),
                                output_type="application/json", when=when, event_id=event)
        assert self.line(0, when, p, event) == expected, "the generator must write exactly what the endpoint writes"

    def write(self, n: int, start: float, per_second: float = 1.0) -> None:
        """n records from `start`, one file per minute (the endpoint's roll)."""
        minute_lines: list[bytes] = []
        minute = None
        first = start
        for j in range(n):
            when = start + j / per_second
            m = int(when // 60)
            if minute is not None and m != minute:
                self._flush(first, minute_lines)
                minute_lines, first = [], when
            minute = m
            p = self.rng.betavariate(8, 1.2)  # mostly confident, a tail of doubtful answers
            minute_lines.append(self.line(self.written + j, when, p, str(uuid.UUID(int=self.rng.getrandbits(128), version=4))))
        if minute_lines:
            self._flush(first, minute_lines)
        self.written += n

    def _flush(self, when: float, lines: list[bytes]) -> None:
        key = capture_key(PREFIX, ENDPOINT, "AllTraffic", when, uuid.uuid4().hex)
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(lines)
        path.write_bytes(data)
        os.utime(path, (when, when))  # as old as its records: settled files, as in a real history
        self.bytes += len(data)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class BenchBackend(*((LocalBackend,) if issubclass(LocalBackend, MonitoringBackendMixin)
                     else (MonitoringBackendMixin, LocalBackend))):
    """The local backend with the monitoring methods, as the dashboard has it."""


def backend(home: Path) -> BenchBackend:
    return BenchBackend(replace(load_settings({}), home=home))


def page_refresh(b: BenchBackend, threshold: float = 0.93) -> dict:
    """What one refresh of the Monitor page asks for (window: everything captured)."""
    b.refresh_capture(ENDPOINT)
    charts = b.monitor_charts(ENDPOINT, threshold=threshold)
    b.threshold_counts(ENDPOINT, threshold)
    b.lowest_confidence(ENDPOINT, 12)
    b.capture_table(ENDPOINT, threshold=threshold, limit=500)
    b.capture_status(ENDPOINT)
    return {"records": charts.records, "points": len(charts.points), "histogram": len(charts.histogram),
            "buckets": len(charts.buckets), "class_mix": len(charts.class_mix)}


def run_case(n: int, workdir: Path) -> dict:
    """One N, in this (fresh) process: generate, cold read, warm refresh, +1,000."""
    home = workdir / f"n{n}"
    shutil.rmtree(home, ignore_errors=True)
    gen = Generator(home / "buckets" / BUCKET, real_pngs())
    start = (time.time() - n - 3600) // 60 * 60  # ends an hour ago: the last 12 days at 1,000,000
    t = time.perf_counter()
    gen.write(n, start)
    generate_s = time.perf_counter() - t
    jsonl_bytes = gen.bytes
    b = backend(home)
    rss_before = peak_rss_mb()
    t = time.perf_counter()
    cold = b.refresh_capture(ENDPOINT)
    cold_s = time.perf_counter() - t
    assert cold.records == n, (cold.records, n)
    t = time.perf_counter()
    page_refresh(b)
    cold_page_s = time.perf_counter() - t
    peak_cold = peak_rss_mb()

    # warm: another dashboard process opens the same workspace (the index is loaded, nothing parsed) ...
    b2 = backend(home)
    t = time.perf_counter()
    b2.refresh_capture(ENDPOINT)
    load_s = time.perf_counter() - t
    # ... and refreshes the page with nothing new
    time.sleep(b2.monitoring.refresh_seconds)
    t = time.perf_counter()
    built = page_refresh(b2)
    warm_s = time.perf_counter() - t
    assert built["records"] == n

    gen.write(1000, start + n + 60)
    time.sleep(b2.monitoring.refresh_seconds)
    t = time.perf_counter()
    inc = b2.refresh_capture(ENDPOINT)
    after = page_refresh(b2)
    inc_s = time.perf_counter() - t
    assert after["records"] == n + 1000, after
    index_bytes = sum(p.stat().st_size for p in (home / "capture_index").rglob("*") if p.is_file())
    return {
        "records": n, "files": len(list((home / "buckets" / BUCKET / PREFIX).rglob("*.jsonl"))) ,
        "jsonl_mb": round(jsonl_bytes / 1e6, 1), "generate_s": round(generate_s, 2),
        "cold": {"seconds": round(cold_s, 3), "mb_per_s": round(jsonl_bytes / 1e6 / cold_s, 1),
                 "records_per_s": round(n / cold_s), "then_page_s": round(cold_page_s, 3),
                 "peak_rss_mb": round(peak_cold, 1), "rss_before_mb": round(rss_before, 1)},
        "warm": {"load_index_s": round(load_s, 3), "page_refresh_s": round(warm_s, 3), "chart_rows": built},
        "incremental_1000": {"refresh_and_page_s": round(inc_s, 3), "bytes_read": inc.bytes_done},
        "index_mb": round(index_bytes / 1e6, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "goals": {"cold_mb_per_s>=200": jsonl_bytes / 1e6 / cold_s >= 200, "peak_rss_mb<=1024": peak_rss_mb() <= 1024,
                  "warm_s<=2": warm_s <= 2.0, "incremental_s<=1": inc_s <= 1.0},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--dir", type=Path, help="work folder (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--case", type=int, help=argparse.SUPPRESS)  # internal: run one N in this process
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.dir)))
        return
    load_start = [round(x, 2) for x in os.getloadavg()]
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="scones-bench-monitor-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results, skipped = [], []
    try:
        for n in (int(s) for s in args.sizes.split(",") if s):
            need = (n + 1000) * RECORD_BYTES_ESTIMATE + HEADROOM_BYTES
            free = shutil.disk_usage(workdir).free
            if free < need:
                skipped.append({"records": n, "reason": f"needs about {need / 1e9:.1f} GB free, "
                                f"{free / 1e9:.1f} GB free in {workdir}"})
                continue
            proc = subprocess.run([sys.executable, __file__, "--case", str(n), "--dir", str(workdir)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                skipped.append({"records": n, "reason": f"failed: {proc.stderr.strip().splitlines()[-1:]}"})
                continue
            results.append(json.loads(proc.stdout))
            if not args.keep:
                shutil.rmtree(workdir / f"n{n}", ignore_errors=True)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({
        "benchmark": "monitor", "cpus": os.cpu_count(), "load_average_start": load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "note": ("cold reads come from the page cache (the files were just written; dropping caches would need root "
                 "and would slow everyone on a shared machine); each N runs in its own process, and its peak memory "
                 "includes a second backend object opening the same index (the warm case); threshold 0.93"),
        "results": results, "skipped": skipped,
    }, indent=2))


if __name__ == "__main__":
    main()
