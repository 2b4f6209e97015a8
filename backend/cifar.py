"""CIFAR-100 (python version): download, verify, read safely, filter classes, write PNGs + .lst.

The archive is untrusted input. It is read in one streaming pass: every member is checked before
anything is used (no absolute names, no '..', no links or devices, bounded sizes), and the pickles
go through a restricted unpickler that can build only what the CIFAR format needs. Nothing is
extracted to disk, so nothing can land outside the workspace.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import os
import pickle
import tarfile
import time
import urllib.error
import urllib.request
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from PIL import Image

from backend.api import (
    ArchiveError, ArchiveInfo, ArchiveMember, ArrayInfo, ChecksumMismatch, DownloadError,
    ResourceNotFound, UnsafeArchiveError, UnsafePickleError, ValidationError,
)

TOP = "cifar-100-python"
PICKLES = ("meta", "train", "test")
SPLITS = ("train", "test")
MAX_PICKLE_BYTES = 512 * 1024 * 1024  # the official train pickle is ~155 MB
MAX_META_BYTES = 1024 * 1024
MAX_MEMBERS = 1000

Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# Restricted unpickling
# ---------------------------------------------------------------------------------------------

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in a protocol-2 pickle
    ("builtins", "bytes"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and numpy arrays; refuses every other callable."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"The archive's pickle tries to call {module}.{name}, which the CIFAR format never "
                "needs; the file is not a genuine CIFAR archive and was refused."
            )
        return super().find_class(module, name)


def safe_load_pickle(f: BinaryIO, what: str) -> dict[str, Any]:
    try:
        obj = RestrictedUnpickler(f, encoding="bytes").load()
    except UnsafePickleError:
        raise
    except (tarfile.ReadError, zlib.error, OSError):
        raise  # the archive stream itself is broken: reported for the whole file by read_archive
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise ArchiveError(f"The archive's '{what}' pickle is corrupt or truncated ({type(exc).__name__}).") from None
    if not isinstance(obj, dict):
        raise ArchiveError(f"The archive's '{what}' pickle holds a {type(obj).__name__}, not the CIFAR dictionary.")
    return {_text(k): v for k, v in obj.items()}


def _text(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------------------------
# Reading the archive
# ---------------------------------------------------------------------------------------------


@dataclass
class Split:
    data: np.ndarray  # (N, 3072) uint8
    fine_labels: np.ndarray  # (N,) int64
    filenames: list[str]
    keys: tuple[ArrayInfo, ...]


@dataclass
class Archive:
    fine_label_names: tuple[str, ...]
    coarse_label_names: tuple[str, ...]
    splits: dict[str, Split]
    members: tuple[ArchiveMember, ...]
    meta_keys: tuple[ArrayInfo, ...]
    timings: dict[str, float]


def check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if not name or name.startswith("/") or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"The archive member {name!r} has an absolute name; the archive was refused.")
    if "\\" in name or "\x00" in name:
        raise UnsafeArchiveError(f"The archive member {name!r} has a backslash or NUL in its name; the archive was refused.")
    if any(part == ".." for part in PurePosixPath(name).parts):
        raise UnsafeArchiveError(f"The archive member {name!r} would write outside its folder; the archive was refused.")
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"The archive member {name!r} is a link; links are refused.")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"The archive member {name!r} is a device, FIFO or other special file; refused.")


class _CountingReader(io.RawIOBase):
    """Counts compressed bytes read so progress can be reported while streaming."""

    def __init__(self, raw: BinaryIO, total: int, progress: Progress, span: tuple[float, float]):
        self.raw, self.total, self.progress, self.span = raw, max(total, 1), progress, span
        self.read_bytes = 0
        self._last = 0.0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.raw.readinto(b)
        self.read_bytes += n or 0
        now = time.monotonic()
        if now - self._last > 0.2:
            self._last = now
            lo, hi = self.span
            self.progress(lo + (hi - lo) * min(1.0, self.read_bytes / self.total), "Reading the archive")
        return n


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A member's bytes in one object, read in chunks: tarfile's stream mode would otherwise hold
    three copies of a 150 MB pickle at once (chunk list, join, slice)."""
    f = tar.extractfile(member)
    chunks: list[bytes] = []
    remaining = member.size
    while remaining:
        chunk = f.read(min(remaining, 4 << 20))
        if not chunk:
            raise ArchiveError(f"The archive member {member.name!r} is cut short: the archive is truncated.")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_archive(path: Path | str, progress: Progress = _no_progress,
                 span: tuple[float, float] = (0.0, 1.0), want_splits: tuple[str, ...] = SPLITS) -> Archive:
    """One streaming pass over a .tar.gz: check every member, unpickle meta/train/test."""
    path = Path(path)
    if not path.is_file():
        raise ResourceNotFound(f"No archive at {path}: check the path.")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    found: dict[str, dict[str, Any]] = {}
    members: list[ArchiveMember] = []
    with open(path, "rb", buffering=0) as raw:
        reader = io.BufferedReader(_CountingReader(raw, path.stat().st_size, progress, span), 1 << 20)
        try:
            tar = tarfile.open(fileobj=reader, mode="r|*", bufsize=1 << 20)
        except (tarfile.ReadError, EOFError, zlib.error, OSError):
            raise ArchiveError(f"{path.name} is not a tar archive (.tar.gz): choose the CIFAR-100 python version archive.") from None
        try:
            for member in tar:
                check_member(member)
                if len(members) >= MAX_MEMBERS:
                    raise ArchiveError(f"The archive has more than {MAX_MEMBERS} members; it is not a CIFAR archive.")
                members.append(ArchiveMember(member.name, member.size, "dir" if member.isdir() else "file"))
                part = PurePosixPath(member.name)
                if not member.isfile() or len(part.parts) != 2 or part.parts[0] != TOP or part.name not in PICKLES:
                    continue
                if part.name != "meta" and part.name not in want_splits:
                    continue
                limit = MAX_META_BYTES if part.name == "meta" else MAX_PICKLE_BYTES
                if member.size > limit:
                    raise ArchiveError(f"The archive member {member.name!r} is {member.size:,} bytes, larger than any CIFAR file.")
                ts = time.perf_counter()
                found[part.name] = safe_load_pickle(io.BytesIO(_member_bytes(tar, member)), part.name)
                timings[f"unpickle_{part.name}"] = time.perf_counter() - ts
        except (tarfile.ReadError, EOFError, zlib.error, OSError) as exc:
            raise ArchiveError(f"{path.name} is truncated or corrupt ({type(exc).__name__}): download it again.") from None
        finally:
            tar.close()
    timings["read_archive"] = time.perf_counter() - t0
    missing = [n for n in ("meta", *want_splits) if n not in found]
    if missing:
        raise ArchiveError(
            f"The archive has no {', '.join(f'{TOP}/{m}' for m in missing)}: it is not the CIFAR-100 python version."
        )
    fine, coarse, meta_keys = _parse_meta(found["meta"])
    splits = {name: _parse_split(found[name], name, len(fine)) for name in want_splits}
    return Archive(fine, coarse, splits, tuple(members), meta_keys, timings)


def _describe(key: str, value: Any) -> ArrayInfo:
    if isinstance(value, np.ndarray):
        return ArrayInfo(key, "ndarray", tuple(value.shape), str(value.dtype))
    if isinstance(value, (list, tuple)):
        return ArrayInfo(key, "list", (len(value),))
    return ArrayInfo(key, type(value).__name__, ())


def _parse_meta(meta: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[ArrayInfo, ...]]:
    fine = meta.get("fine_label_names")
    coarse = meta.get("coarse_label_names", [])
    if not isinstance(fine, list) or not fine or not all(isinstance(n, (bytes, str)) for n in fine):
        raise ArchiveError("The archive's meta pickle has no fine_label_names list: it is not CIFAR-100.")
    if not isinstance(coarse, list):
        raise ArchiveError("The archive's meta pickle has a malformed coarse_label_names.")
    keys = tuple(_describe(k, v) for k, v in meta.items())
    return tuple(_text(n) for n in fine), tuple(_text(n) for n in coarse), keys


def _parse_split(d: dict[str, Any], name: str, n_fine: int) -> Split:
    data = d.get("data")
    labels = d.get("fine_labels")
    filenames = d.get("filenames")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ArchiveError(f"The archive's '{name}' pickle has no uint8 data array of shape (N, 3072).")
    n = data.shape[0]
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != n:
        raise ArchiveError(f"The archive's '{name}' pickle has {n} images but no fine_labels list of the same length.")
    if not isinstance(filenames, (list, np.ndarray)) or len(filenames) != n:
        raise ArchiveError(f"The archive's '{name}' pickle has {n} images but no filenames list of the same length.")
    try:
        label_arr = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise ArchiveError(f"The archive's '{name}' fine_labels are not integers.") from None
    if n and (label_arr.min() < 0 or label_arr.max() >= n_fine):
        raise ArchiveError(f"The archive's '{name}' fine_labels fall outside the {n_fine} names in meta.")
    names = [_text(f) for f in filenames]
    for f in names:
        if not f or "/" in f or "\\" in f or "\x00" in f or f in (".", ".."):
            raise UnsafeArchiveError(f"The archive's '{name}' split names an image {f!r} that is not a plain file name.")
    keys = tuple(_describe(k, v) for k, v in d.items())
    return Split(data, label_arr, names, keys)


# ---------------------------------------------------------------------------------------------
# Sources: the official URL (download + md5), a local path, the bundled sample
# ---------------------------------------------------------------------------------------------


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def redact_url(url: str) -> str:
    """An address as it may be shown or logged: no user name or password, no query (a presigned URL's
    signature and credential live there), no fragment. https://u:p@host/a.tgz?X-Amz-Signature=s ->
    https://***@host/a.tgz?..."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an address that cannot be read)"
    host = parts.netloc.rpartition("@")[2]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    return urlunsplit((parts.scheme, netloc, parts.path, "..." if parts.query else "", ""))


def scrub(text: str, url: str) -> str:
    """`text` (an error's words, which may quote the address) without the address's secret parts."""
    userinfo = url.split("://", 1)[-1].split("/", 1)[0].rpartition("@")[0]
    query = url.partition("?")[2]
    for secret in sorted({userinfo, query, *userinfo.split(":"), *query.split("&")} - {""}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def download(url: str, dest_dir: Path, md5: str, progress: Progress = _no_progress,
             timeout: float = 30.0, span: tuple[float, float] = (0.0, 1.0)) -> Path:
    """Download to a temp file, check md5, then move into place; a verified copy is reused."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / f"cifar-100-python-{md5}.tar.gz"
    if final.is_file() and md5_of(final) == md5:
        progress(span[1], "Using the archive downloaded earlier")
        return final
    tmp = dest_dir / f".part-{uuid.uuid4().hex}"
    lo, hi = span
    shown = redact_url(url)  # what messages say: never a password or a presigned signature
    try:
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "scones"}), timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"{shown} answered HTTP {exc.code}: check the address (--source, or SCONES_CIFAR_URL "
                                "for the default), or stage the bundled sample.") from None
        except (ValueError, http.client.HTTPException) as exc:  # InvalidURL and the like quote the address: not shown
            raise DownloadError(f"Could not use {shown} as an address ({type(exc).__name__}); check it, or stage the "
                                "bundled sample.") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = scrub(str(getattr(exc, "reason", exc)), url)
            raise DownloadError(f"Could not reach {shown} ({reason}); check the network, or stage the bundled sample.") from None
        total = int(response.headers.get("Content-Length") or 0)
        h = hashlib.md5()
        done = 0
        last = 0.0
        with response, open(tmp, "wb") as out:
            while True:
                try:
                    chunk = response.read(1 << 20)
                except (OSError, http.client.HTTPException) as exc:  # IncompleteRead: a chunked answer cut short
                    raise DownloadError(f"The download from {shown} broke off ({type(exc).__name__}); try again.") from None
                if not chunk:
                    break
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                now = time.monotonic()
                if now - last > 0.2:
                    last = now
                    frac = done / total if total else 0.0
                    progress(lo + (hi - lo) * frac, f"Downloading: {done / 1e6:.1f} of {total / 1e6:.1f} MB")
        if total and done != total:
            raise DownloadError(f"The download from {shown} stopped at {done:,} of {total:,} bytes; try again.")
        got = h.hexdigest()
        if got != md5:
            raise ChecksumMismatch(
                f"The downloaded archive's md5 is {got}, not the expected {md5}: the download is corrupt or the "
                "URL serves another file; to stage another archive, download it and give its path or upload it "
                "(or set SCONES_CIFAR_MD5 to its md5)."
            )
        os.replace(tmp, final)
        progress(hi, "Download verified")
        return final
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Filtering and writing
# ---------------------------------------------------------------------------------------------


def choose_classes(fine_names: tuple[str, ...], wanted: list[str] | tuple[str, ...]) -> list[int]:
    """Fine label ids of the wanted names, in the order given (that order is the class index)."""
    wanted = [w.strip() for w in wanted if w and w.strip()]
    if len(set(wanted)) < 2:
        raise ValidationError("Choose at least two different classes: a classifier needs two or more.")
    if len(set(wanted)) != len(wanted):
        raise ValidationError("A class is listed twice; list each class once.")
    index = {n: i for i, n in enumerate(fine_names)}
    unknown = [w for w in wanted if w not in index]
    if unknown:
        raise ValidationError(
            f"Unknown class {', '.join(repr(u) for u in unknown)}: use CIFAR-100 fine label names such as "
            f"'bicycle' or 'motorcycle' (the archive has {len(fine_names)})."
        )
    return [index[w] for w in wanted]


@dataclass
class Selection:
    rows: np.ndarray  # row index in the archive split
    class_index: np.ndarray  # 0..k-1 in the order of the chosen classes
    images: np.ndarray  # (n, 32, 32, 3) uint8
    filenames: list[str]


def select(split: Split, fine_ids: list[int]) -> Selection:
    mapping = np.full(int(split.fine_labels.max(initial=0)) + 1 if len(split.fine_labels) else 1, -1, dtype=np.int64)
    for ci, fid in enumerate(fine_ids):
        if fid < len(mapping):
            mapping[fid] = ci
    cls = mapping[split.fine_labels] if len(split.fine_labels) else np.zeros(0, dtype=np.int64)
    rows = np.nonzero(cls >= 0)[0]
    images = split.data[rows].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Selection(rows, cls[rows], np.ascontiguousarray(images), [split.filenames[i] for i in rows])


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def lst_text(selection: Selection) -> str:
    """SageMaker's .lst: `<index>\t<class>\t<relative path>` with the row in the archive split."""
    return "".join(f"{r}\t{c}\t{f}\n" for r, c, f in zip(selection.rows.tolist(), selection.class_index.tolist(), selection.filenames))


def parse_lst(text: str) -> list[tuple[int, int, str]]:
    """Read a .lst back; a malformed line is a clear error naming it."""
    out: list[tuple[int, int, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValidationError(f".lst line {n} has {len(parts)} tab-separated fields, not 3 (index, class, path).")
        try:
            out.append((int(parts[0]), int(float(parts[1])), parts[2]))
        except ValueError:
            raise ValidationError(f".lst line {n}: index and class must be numbers, got {parts[0]!r} and {parts[1]!r}.") from None
    return out


def load_split_arrays(path: Path | str, classes: list[str] | tuple[str, ...]) -> dict[str, Selection]:
    """The chosen classes of each split as arrays (for training benchmarks and evaluation)."""
    archive = read_archive(path)
    ids = choose_classes(archive.fine_label_names, list(classes))
    return {name: select(archive.splits[name], ids) for name in SPLITS}


def describe_archive(path: Path | str, source: str) -> ArchiveInfo:
    archive = read_archive(path)
    counts: dict[str, dict[str, int]] = {}
    for name, split in archive.splits.items():
        ids, n = np.unique(split.fine_labels, return_counts=True)
        counts[name] = {archive.fine_label_names[i]: int(c) for i, c in zip(ids.tolist(), n.tolist())}
    pickles = {"meta": archive.meta_keys, **{name: s.keys for name, s in archive.splits.items()}}
    return ArchiveInfo(source, archive.members, pickles, archive.fine_label_names, archive.coarse_label_names, counts)
