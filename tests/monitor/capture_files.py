"""Capture files by hand, in the real format: lines from `capture_line` (what the endpoint writes),
under the real key layout, with chosen probabilities and times; plus the brute-force reader the
index is checked against (json.loads of every line)."""
from __future__ import annotations

import base64
import io
import json
import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from backend.local.serving.capture import capture_key, capture_line

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def png(seed: int) -> bytes:
    """A real 32x32 PNG of noise (about 3 KB, as big as a CIFAR photo), different for each seed."""
    rng = random.Random(seed)
    im = Image.frombytes("RGB", (32, 32), rng.randbytes(32 * 32 * 3))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Written:
    key: str
    path: Path
    records: list[dict]  # {"event", "when", "probs", "image"}


def record_line(probs: list[float], when: float, image: bytes | None = None, event: str | None = None,
                input_type: str = "image/png", output: bool = True) -> tuple[bytes, str]:
    event = event or str(uuid.uuid4())
    line = capture_line(input_data=image, input_type=input_type,
                        output_data=json.dumps(probs).encode() if output else None,
                        output_type="application/json", when=when, event_id=event)
    return line, event


def write_file(bucket_dir: Path, endpoint: str, when: float, lines: list[bytes], prefix: str = "data_capture",
               mtime: float | None = None) -> Path:
    key = capture_key(prefix, endpoint, "AllTraffic", when, str(uuid.uuid4()))
    path = bucket_dir / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    stamp = when if mtime is None else mtime
    os.utime(path, (stamp, stamp))
    return path


def write_records(bucket_dir: Path, endpoint: str, n: int, *, start: float = T0, per_file: int = 7, seed: int = 1,
                  prefix: str = "data_capture") -> list[Written]:
    """n records, one a second, `per_file` a file; probabilities spread over [0, 1] (ties included)."""
    rng = random.Random(seed)
    out: list[Written] = []
    for first in range(0, n, per_file):
        records, lines = [], []
        for i in range(first, min(n, first + per_file)):
            p = rng.choice([0.5, 0.93, 0.7, 1.0]) if i % 11 == 0 else rng.random()
            probs = [p, 1.0 - p]
            image = png(i)
            line, event = record_line(probs, start + i, image)
            lines.append(line)
            records.append({"event": event, "when": start + i, "probs": probs, "image": image})
        path = write_file(bucket_dir, endpoint, start + first, lines, prefix)
        out.append(Written(str(path.relative_to(bucket_dir)), path, records))
    return out


def brute_force(bucket_dir: Path, endpoint: str, prefix: str = "data_capture") -> list[dict]:
    """Every complete, valid record under the endpoint, with json.loads of each whole line."""
    rows = []
    for path in sorted((bucket_dir / prefix / endpoint).rglob("*.jsonl")):
        for line in path.read_bytes().split(b"\n"):
            try:
                record = json.loads(line)
                probs = json.loads(record["captureData"]["endpointOutput"]["data"])
            except (ValueError, KeyError, TypeError):
                continue
            inp = record["captureData"].get("endpointInput")
            rows.append({"event": record["eventMetadata"]["eventId"], "time": record["eventMetadata"]["inferenceTime"],
                         "probs": probs, "confidence": max(probs),
                         "image": base64.b64decode(inp["data"]) if inp else None})
    return rows
