"""Staging benchmark (JSON on stdout): the mirror end to end, and a full-size synthetic archive.

Goals (issue 2): mirror staged in <= 1 s; a 50,000 + 10,000-row archive (about 160 MB gzipped)
filtered to two classes in <= 8 s with <= 1 GB peak memory. Each run happens in a fresh child
process so its peak RSS is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.settings import SAMPLE_ARCHIVE  # noqa: E402

CHILD = """
import json, resource, sys, time
from backend import get_backend
from backend.settings import load_settings
b = get_backend(load_settings().with_overrides(home=sys.argv[2]))
t = time.perf_counter()
r = b.stage_data(sys.argv[1])
out = r.to_dict()
out["wall"] = time.perf_counter() - t
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def run_child(archive: Path) -> dict:
    with tempfile.TemporaryDirectory() as home:
        p = subprocess.run([sys.executable, "-c", CHILD, str(archive), home], capture_output=True, text=True,
                           cwd=REPO, check=True)
        return json.loads(p.stdout)


def build_full_size(path: Path) -> None:
    """50,000 train + 10,000 test rows over the 100 classes, in the official layout."""
    import numpy as np

    from backend import cifar

    names = cifar.read_archive(SAMPLE_ARCHIVE, want_splits=()).fine_label_names
    rng = np.random.default_rng(0)

    def split(n: int, tag: str) -> dict:
        labels = np.repeat(np.arange(100), n // 100)
        rng.shuffle(labels)
        # smooth-ish images compress like photos do (pure noise would not compress at all)
        base = rng.integers(0, 256, size=(n, 3, 8, 8), dtype=np.uint8)
        data = np.repeat(np.repeat(base, 4, axis=2), 4, axis=3).reshape(n, 3072)
        data = (data.astype(np.int16) + rng.integers(-12, 12, size=data.shape, dtype=np.int16)).clip(0, 255).astype(np.uint8)
        return {b"batch_label": tag.encode(), b"filenames": [f"img_{tag}_{i:06d}.png".encode() for i in range(n)],
                b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist(), b"data": data}

    meta = {b"fine_label_names": [n.encode() for n in names], b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}
    tmp = path.with_suffix(".part")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for name, obj in (("meta", meta), ("test", split(10_000, "test")), ("train", split(50_000, "train"))):
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            import io
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "scones-bench"))
    args = ap.parse_args()

    mirror_runs = [run_child(SAMPLE_ARCHIVE) for _ in range(args.repeat)]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    full = cache / "cifar-100-python-full-size.tar.gz"
    if not full.exists():
        t = time.perf_counter()
        build_full_size(full)
        print(f"built {full} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    full_runs = [run_child(full) for _ in range(max(1, args.repeat // 2))]

    def summary(runs: list[dict], goal_s: float, goal_mb: float | None) -> dict:
        secs = [r["seconds"] for r in runs]
        best = min(runs, key=lambda r: r["seconds"])
        out = {
            "runs": len(runs), "seconds_median": round(statistics.median(secs), 3), "seconds_min": round(min(secs), 3),
            "seconds_max": round(max(secs), 3), "goal_seconds": goal_s,
            "peak_rss_mb_max": round(max(r["peak_rss_mb"] for r in runs), 1),
            "where_the_time_goes_s": best["timings"], "counts": best["counts"],
            "meets_goal": statistics.median(secs) <= goal_s,
        }
        if goal_mb is not None:
            out["goal_peak_mb"] = goal_mb
            out["meets_goal"] = out["meets_goal"] and out["peak_rss_mb_max"] <= goal_mb
        return out

    print(json.dumps({
        "benchmark": "stage",
        "cpu_count": os.cpu_count(),
        "mirror": {"archive_bytes": SAMPLE_ARCHIVE.stat().st_size, **summary(mirror_runs, 1.0, None)},
        "full_size_synthetic": {"archive_bytes": full.stat().st_size, "rows": {"train": 50000, "test": 10000},
                                **summary(full_runs, 8.0, 1024.0)},
    }, indent=2))


if __name__ == "__main__":
    main()
