"""The endpoint process: SageMaker's inference-container contract on 127.0.0.1.

    python -m backend.local.serving.server --endpoint NAME --artifact model.tar.gz --ready-file F [...]

- `GET /ping`: 200 once the model is loaded.
- `POST /invocations`: a PNG or JPEG body (`image/png`, `image/jpeg`, `application/x-image`) of
  any size, resized to the model's image_shape (trained with `resize`: the shortest side to it, then the
  centre crop, as validation did); answers `application/json`, the list of class
  probabilities in the training's class order. A bad request gets a 4xx with
  `{"error": <code>, "message": <one sentence>}` and the server goes on serving.

It loads model.tar.gz with onnxruntime and Pillow only (no torch, no training code). HTTP/1.1
keep-alive with TCP_NODELAY on every accepted socket (Nagle plus delayed ACK would add ~40 ms to
each small response). One thread per connection; onnxruntime releases the GIL while it runs, so
one intra-op thread per request uses both cores under concurrent clients.

SIGTERM stops it gracefully: no new connections, idle keep-alive connections closed, requests in
flight answered (with `Connection: close`), the capture file closed, then exit 0. The service
relies on this for blue/green updates.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.images import WIDE_MODES, eight_bit
from backend.local.serving.capture import CaptureGuard, CaptureWriter, Sampler, capture_line, media_type
from backend.local.training.artifact import INPUT_NAME, OUTPUT_NAME, LoadedModel, centre_box, read_members, resized_size

ACCEPTED_TYPES = ("image/png", "image/jpeg", "application/x-image")
OUTPUT_TYPE = "application/json"
MAX_BODY_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's payload limit
DEFAULT_CAPTURE_MAX_BYTES = 10 * 1024 ** 3  # per endpoint; SCONES_CAPTURE_MAX_BYTES until the service passes the flag
DEFAULT_CAPTURE_MIN_FREE_BYTES = 64 * 1024 ** 2  # capture pauses before the disk is completely full
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024  # read and discard an oversized body up to this, keeping the connection
MAX_PIXELS = 40_000_000  # any photo a phone or a DSLR takes; a decompression bomb is refused before decoding
IDLE_TIMEOUT_SECONDS = 120.0
MAX_LINE = 8192
MAX_HEADERS = 100
STOP_GRACE_SECONDS = 30.0
VARIANT_HEADER = "X-Amzn-Invoked-Production-Variant"
REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           411: "Length Required", 413: "Payload Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
           431: "Request Header Fields Too Large", 500: "Internal Server Error"}


class RequestError(Exception):
    """A request the endpoint refuses: HTTP status, a short code, one sentence."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# -- the model ---------------------------------------------------------------------------------


def load_model(path: Path, threads: int = 1) -> LoadedModel:
    """model.tar.gz -> an onnxruntime session tuned for small requests on a small machine."""
    import onnxruntime as ort

    meta, onnx_bytes = read_members(path.read_bytes())
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-wait on a shared 2-core box
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    model = LoadedModel(meta, session)
    probs = model.predict(np.zeros((1, *model.image_shape), dtype=np.float32))  # warm-up, and a shape check
    if probs.shape != (1, len(model.classes)):
        raise ValueError(f"the graph answers {probs.shape[1]} probabilities for {len(model.classes)} classes")
    return model


class Predictor:
    """Image bytes -> the JSON list of probabilities, with Pillow's limits against hostile images."""

    def __init__(self, model: LoadedModel, max_pixels: int = MAX_PIXELS):
        from PIL import Image

        self.model, self.max_pixels = model, max_pixels
        self.channels, self.height, self.width = model.image_shape
        self.mode = "L" if self.channels == 1 else "RGB"
        # Trained with `resize`: validation saw the shortest side at `resize`, then the centre crop; so does this.
        self.resize = int(model.meta.get("hyperparameters", {}).get("resize") or 0)
        Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own bomb check agrees with ours
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with a 413

    def decode(self, body: bytes) -> np.ndarray:
        """uint8 (H, W, C) at the model's image_shape, prepared as training validated (LoadedModel.decode):
        resized to image_shape, or with `resize` the shortest side to it and then the centre crop."""
        from PIL import Image, UnidentifiedImageError

        try:
            im = Image.open(io.BytesIO(body), formats=("PNG", "JPEG"))
        except Image.DecompressionBombError:
            raise RequestError(413, "ImageTooLarge", f"The image has more than {self.max_pixels:,} pixels; "
                               "send a smaller image.") from None
        except UnidentifiedImageError:
            raise RequestError(400, "UnreadableImage", "The request body is not a PNG or JPEG image.") from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken headers
            raise RequestError(400, "UnreadableImage", f"The image header is broken ({type(exc).__name__}).") from None
        with im:
            w, h = im.size
            if w * h > self.max_pixels or w <= 0 or h <= 0:
                raise RequestError(413, "ImageTooLarge", f"The image is {w}x{h} pixels; the limit is "
                                   f"{self.max_pixels:,} pixels.")
            try:
                if self.resize:
                    return self._resized_and_cropped(im)
                if im.format == "JPEG" and (w, h) != (self.width, self.height):
                    im.draft(self.mode, (self.width, self.height))  # decode a big JPEG at a reduced scale
                if im.mode in WIDE_MODES:  # 16-bit PNGs: convert() would clip them to white
                    im = eight_bit(im)
                if im.mode == "RGBA" and self.mode == "RGB" and im.size == (self.width, self.height):
                    arr = np.asarray(im, dtype=np.uint8)[..., :3]  # what convert("RGB") gives, without a copy
                else:
                    out = im.convert(self.mode) if im.mode != self.mode else im
                    if out.size != (self.width, self.height):
                        out = out.resize((self.width, self.height), Image.BILINEAR, reducing_gap=2.0)
                    arr = np.asarray(out, dtype=np.uint8)
            except Exception as exc:  # noqa: BLE001 - truncated or corrupt data: OSError, SyntaxError, ValueError...
                raise RequestError(400, "UnreadableImage", f"The image data is truncated or corrupt "
                                   f"({type(exc).__name__}).") from None
        return arr.reshape(self.height, self.width, self.channels)

    def _resized_and_cropped(self, im: Any) -> np.ndarray:
        from PIL import Image

        shape = (self.width, self.height)
        size = resized_size(im.size, self.resize, shape)  # from the image's own size, as validation computes it
        if im.format == "JPEG":
            im.draft(self.mode, size)  # decoded at a reduced scale, never below the size it is resized to
        if im.mode in WIDE_MODES:
            im = eight_bit(im)
        out = im.convert(self.mode) if im.mode != self.mode else im
        if out.size != size:
            out = out.resize(size, Image.BILINEAR)
        out = out.crop(centre_box(size, shape))
        return np.asarray(out, dtype=np.uint8).reshape(self.height, self.width, self.channels)

    def __call__(self, body: bytes) -> bytes:
        x = self.decode(body).transpose(2, 0, 1)[None].astype(np.float32) * np.float32(1 / 255)
        probs = self.model.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0][0]
        return ("[" + ", ".join([repr(float(p)) for p in probs]) + "]").encode()  # as json.dumps writes it


# -- data capture ------------------------------------------------------------------------------


@dataclass
class CaptureOptions:
    root: Path  # the bucket folder
    prefix: str
    percent: float = 100.0
    capture_input: bool = True
    capture_output: bool = True
    max_file_bytes: int = 8 * 1024 * 1024
    max_bytes: int | None = None  # size cap of this endpoint's capture: pause when reached
    min_free_bytes: int = 0  # pause when the disk has less free


class Capture:
    def __init__(self, endpoint: str, options: CaptureOptions):
        self.options = options
        self.sample = Sampler(options.percent)
        prefix = options.prefix.strip("/")
        folder = Path(options.root) / prefix / endpoint if prefix else Path(options.root) / endpoint
        self.guard = CaptureGuard(folder, options.max_bytes, options.min_free_bytes, trim=True)
        self.writer = CaptureWriter(options.root, options.prefix, endpoint, max_file_bytes=options.max_file_bytes,
                                    guard=self.guard)

    def status(self) -> dict:
        """What the Monitor page shows: capturing or paused (why, since when, requests not captured)."""
        return {**self.guard.status(), "records": self.writer.records}

    def on_change(self, report) -> None:
        """Call `report(status)` whenever capture pauses or resumes."""
        self.guard.on_change = lambda status: report({**status, "records": self.writer.records})

    def record(self, body: bytes, content_type: str, output: bytes, when: float) -> None:
        if not self.sample():
            return
        o = self.options
        line = capture_line(input_data=body if o.capture_input else None, input_type=content_type,
                            output_data=output if o.capture_output else None, output_type=OUTPUT_TYPE, when=when)
        self.writer.write(line, when)

    def close(self) -> None:
        self.writer.close()


# -- HTTP --------------------------------------------------------------------------------------


class EndpointServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], endpoint: str, predictor: Predictor, capture: Capture | None,
                 max_body: int = MAX_BODY_BYTES, access_log: bool = False):
        super().__init__(address, EndpointHandler)
        self.endpoint, self.predictor, self.capture = endpoint, predictor, capture
        self.max_body, self.access_log = max_body, access_log
        self.lock = threading.Lock()
        self.handlers: set[EndpointHandler] = set()
        self.stopping = False
        self.requests = 0

    @property
    def port(self) -> int:
        return self.server_address[1]

    def begin_stop(self) -> None:
        """No new connections; idle keep-alive connections closed; busy ones finish their request."""
        with self.lock:
            self.stopping = True
            idle = [h for h in self.handlers if h.idle]
        for h in idle:
            try:
                h.connection.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def wait_drained(self, timeout: float = STOP_GRACE_SECONDS) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(h.idle for h in self.handlers):
                    return True
            time.sleep(0.01)
        return False


class Request:
    """One parsed HTTP/1.x request head."""

    __slots__ = ("method", "path", "version", "headers")

    def __init__(self, method: str, path: str, version: str, headers: dict[str, str]):
        self.method, self.path, self.version, self.headers = method, path, version, headers

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


class EndpointHandler(socketserver.StreamRequestHandler):
    """A small HTTP/1.1 server loop: keep-alive, Content-Length bodies, one write per answer.

    http.server's handler parses headers with the email package, which cost more than the rest of
    a 32x32 request together; this reads exactly what the contract needs.
    """

    timeout = IDLE_TIMEOUT_SECONDS
    wbufsize = 0
    server: EndpointServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.idle = True
        self.close_connection = False
        with self.server.lock:
            self.server.handlers.add(self)
            stopping = self.server.stopping
        if stopping:
            self.connection.shutdown(socket.SHUT_RD)

    def finish(self) -> None:
        with self.server.lock:
            self.server.handlers.discard(self)
        try:
            super().finish()
        except OSError:
            pass

    def handle(self) -> None:
        lock = self.server.lock
        while not self.close_connection:
            try:
                line = self.rfile.readline(MAX_LINE + 1)
            except (OSError, ValueError):
                return
            if not line:
                return
            with lock:
                self.idle = False
            try:
                self.handle_request(line)
            except (OSError, ValueError):
                return  # the client went away mid-request
            finally:
                with lock:
                    self.idle = True

    def handle_request(self, line: bytes) -> None:
        try:
            request = self._read_head(line)
        except RequestError as exc:
            self.close_connection = True
            self._send_error(exc)
            return
        self.close_connection = not request.keep_alive
        path = request.path.split("?", 1)[0]
        if path == "/invocations" and request.method == "POST":
            self._invocations(request)
        elif path == "/ping" and request.method in ("GET", "HEAD"):
            self._send(200, b"", OUTPUT_TYPE)
        else:
            self._discard_body(request)
            if path in ("/ping", "/invocations"):
                allowed = "GET /ping" if path == "/ping" else "POST /invocations"
                self._send_error(RequestError(405, "MethodNotAllowed", f"Use {allowed}."))
            else:
                self._send_error(RequestError(404, "NotFound", f"No route {request.path[:100]!r}: use GET /ping "
                                              "or POST /invocations."))

    def _read_head(self, line: bytes) -> Request:
        if len(line) > MAX_LINE:
            raise RequestError(414, "RequestLineTooLong", "The request line is too long.")
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise RequestError(400, "BadRequest", "The request line is not HTTP/1.x.")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            raw = self.rfile.readline(MAX_LINE + 1)
            if raw in (b"\r\n", b"\n", b""):
                break
            if len(raw) > MAX_LINE:
                raise RequestError(431, "HeaderTooLarge", "A request header is too long.")
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                raise RequestError(400, "BadRequest", "A request header has no ':'.")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length" and headers.get(name, value) != value:
                raise RequestError(400, "BadContentLength", "The request has two different Content-Length headers.")
            headers[name] = value
        else:
            raise RequestError(431, "HeaderTooLarge", f"The request has more than {MAX_HEADERS} headers.")
        return Request(parts[0], parts[1], parts[2], headers)

    # -- /invocations --------------------------------------------------------------------------

    def _invocations(self, request: Request) -> None:
        try:
            body = self._read_body(request)
            content_type = request.headers.get("content-type", "")
            if media_type(content_type) not in ACCEPTED_TYPES:
                raise RequestError(415, "UnsupportedMediaType", f"Content type {content_type or 'none'!r} is not "
                                   f"supported: send {', '.join(ACCEPTED_TYPES)}.")
            if not body:
                raise RequestError(400, "EmptyBody", "The request body is empty: send the bytes of a PNG or JPEG image.")
            when = time.time()
            output = self.server.predictor(body)
        except RequestError as exc:
            self._send_error(exc)
            return
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the server
            traceback.print_exc(file=sys.stderr)
            self._send_error(RequestError(500, "InternalError", f"The model failed on this request ({type(exc).__name__})."))
            return
        capture = self.server.capture
        if capture is not None:
            try:
                capture.record(body, content_type, output, when)
            except OSError as exc:  # a full disk must not fail inference; say so in the log
                print(f"capture write failed: {exc}", file=sys.stderr, flush=True)
        self._send(200, output, OUTPUT_TYPE)

    def _content_length(self, request: Request) -> int:
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            self.close_connection = True
            raise RequestError(411, "LengthRequired", "Send the body with a Content-Length header, not chunked.")
        raw = request.headers.get("content-length")
        if raw is None:
            return 0
        if not raw.isdigit():
            self.close_connection = True
            raise RequestError(400, "BadContentLength", f"Content-Length {raw[:40]!r} is not a byte count.")
        return int(raw)

    def _read_body(self, request: Request) -> bytes:
        length = self._content_length(request)
        if length > self.server.max_body:
            self._discard(length, request)
            raise RequestError(413, "PayloadTooLarge", f"The body is {length:,} bytes; the limit is "
                               f"{self.server.max_body:,} bytes (InvokeEndpoint's 6 MB).")
        if length and request.headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.close_connection = True
            raise RequestError(400, "IncompleteBody", f"The body ended after {len(body):,} of {length:,} bytes.")
        return body

    def _discard_body(self, request: Request) -> None:
        try:
            self._discard(self._content_length(request), request)
        except RequestError:
            self.close_connection = True

    def _discard(self, length: int, request: Request) -> None:
        """Read and drop a body we will not use, so the connection stays usable; close if it is huge."""
        if length > DRAIN_LIMIT_BYTES or request.headers.get("expect", "").lower() == "100-continue":
            self.close_connection = True  # never asked for, or not worth reading: answer and close
            return
        left = length
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                self.close_connection = True
                return
            left -= len(chunk)

    # -- answers -------------------------------------------------------------------------------

    def _send_error(self, exc: RequestError) -> None:
        if self.server.access_log or exc.status >= 500:
            print(f"{exc.status} {exc.code}: {exc.message}", file=sys.stderr, flush=True)
        self._send(exc.status, json.dumps({"error": exc.code, "message": exc.message}).encode(), OUTPUT_TYPE)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        """Status line, headers and body in one write: one segment for a small answer."""
        with self.server.lock:
            if self.server.stopping:
                self.close_connection = True
            self.server.requests += 1
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n{VARIANT_HEADER}: AllTraffic\r\n")
        if self.close_connection:
            head += "Connection: close\r\n"
        self.wfile.write(head.encode("latin-1") + b"\r\n" + body)
        if self.server.access_log:
            print(f"{self.client_address[0]} {status} {len(body)}", file=sys.stderr, flush=True)


# -- process -----------------------------------------------------------------------------------


def write_ready_file(path: Path, port: int, capture: dict | None = None, ready: float | None = None) -> None:
    """Atomically: the service reads the port from here once the model is loaded; the Monitor page
    reads `capture` (capturing or paused, and why), rewritten whenever capture pauses or resumes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    record = {"port": port, "pid": os.getpid(), "ready": ready if ready is not None else time.time()}
    if capture is not None:
        record["capture"] = capture
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def build_server(endpoint: str, artifact: Path, *, host: str = "127.0.0.1", port: int = 0, threads: int = 1,
                 capture: CaptureOptions | None = None, max_body: int = MAX_BODY_BYTES,
                 max_pixels: int = MAX_PIXELS, access_log: bool = False) -> EndpointServer:
    """A ready server (model loaded, socket listening); the caller runs `serve_forever`."""
    predictor = Predictor(load_model(artifact, threads), max_pixels)
    cap = Capture(endpoint, capture) if capture is not None else None
    return EndpointServer((host, port), endpoint, predictor, cap, max_body, access_log)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m backend.local.serving.server", description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--artifact", required=True, type=Path, help="model.tar.gz")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port, written to --ready-file")
    p.add_argument("--ready-file", type=Path)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads per request")
    p.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES)
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS)
    p.add_argument("--capture-root", type=Path, help="bucket folder; capture is off without it")
    p.add_argument("--capture-prefix", default="")
    p.add_argument("--capture-percent", type=float, default=100.0)
    p.add_argument("--capture-input", choices=("0", "1"), default="1")
    p.add_argument("--capture-output", choices=("0", "1"), default="1")
    p.add_argument("--capture-max-file-bytes", type=int, default=8 * 1024 * 1024)
    p.add_argument("--capture-max-bytes", type=int, default=_env_int("SCONES_CAPTURE_MAX_BYTES", DEFAULT_CAPTURE_MAX_BYTES),
                   help="size cap of this endpoint's capture: capture pauses when reached (0: no cap)")
    p.add_argument("--capture-min-free-bytes", type=int, default=DEFAULT_CAPTURE_MIN_FREE_BYTES,
                   help="capture pauses when the disk has less free than this")
    p.add_argument("--access-log", action="store_true")
    return p.parse_args(argv)


def _env_int(name: str, default: int) -> int:
    try:
        return int(float(os.environ.get(name) or default))
    except ValueError:
        return default


def _stop_when_the_workspace_is_gone(serving_dir: Path, every: float = 2.0) -> None:
    """The workspace's folder for endpoint records deleted (its home removed to reset it), or its database
    removed or replaced by a new one (scones.db deleted to reset it): nothing can reach or stop this endpoint
    any more, so it stops itself instead of serving, and capturing, for ever."""
    database = serving_dir.parent / "scones.db"  # the workspace's (backend/settings.py db_path)
    inode = _inode(database)  # None: started without a workspace database (a bare server)
    while True:
        time.sleep(every)
        if not serving_dir.is_dir():
            why = f"its workspace folder {serving_dir} is gone"
        elif inode is not None and _inode(database) != inode:
            why = f"its workspace database {database} was {'removed' if _inode(database) is None else 'replaced'}"
        else:
            continue
        print(f"endpoint stopping: {why}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        return


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def fail(message: str) -> int:
    """The one line the service shows as the endpoint's FailureReason."""
    print(f"FailureReason: {message}", file=sys.stderr, flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        return fail(f"Local endpoints bind to 127.0.0.1 only, not {args.host}.")
    # Block the stop signals in every thread; the main thread takes them with sigwait below.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    capture = None
    if args.capture_root is not None:
        capture = CaptureOptions(args.capture_root, args.capture_prefix, args.capture_percent,
                                 args.capture_input == "1", args.capture_output == "1", args.capture_max_file_bytes,
                                 args.capture_max_bytes or None, args.capture_min_free_bytes)
    started = time.monotonic()
    try:
        server = build_server(args.endpoint, args.artifact, host=args.host, port=args.port, threads=args.threads,
                              capture=capture, max_body=args.max_body_bytes, max_pixels=args.max_pixels,
                              access_log=args.access_log)
    except FileNotFoundError:
        return fail(f"The model artifact {args.artifact} is missing; create the model again from its training job.")
    except OSError as exc:
        return fail(f"The endpoint could not listen on {args.host}:{args.port} ({exc.strerror or exc}).")
    except Exception as exc:  # noqa: BLE001 - any load failure ends the process with its reason
        return fail(f"The model artifact does not load ({type(exc).__name__}: {exc}).")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    if args.ready_file is not None:
        ready_at, ready_file, port = time.time(), args.ready_file, server.port
        if server.capture is not None:
            server.capture.on_change(lambda status: write_ready_file(ready_file, port, status, ready_at))
        write_ready_file(ready_file, port, server.capture.status() if server.capture is not None else None, ready_at)
    print(f"endpoint {args.endpoint} serving {args.artifact.name} on http://{args.host}:{server.port} "
          f"(ready in {time.monotonic() - started:.2f} s, pid {os.getpid()})", file=sys.stderr, flush=True)
    if args.ready_file is not None:
        threading.Thread(target=_stop_when_the_workspace_is_gone, args=(args.ready_file.parent,), daemon=True,
                         name="workspace-watch").start()
    sig = signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.shutdown()  # stop accepting
    server.server_close()
    server.begin_stop()
    drained = server.wait_drained()
    if server.capture is not None:
        server.capture.close()
    print(f"endpoint {args.endpoint} stopped on {signal.Signals(sig).name} after {server.requests} requests"
          f"{'' if drained else ' (requests still in flight were cut)'}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
