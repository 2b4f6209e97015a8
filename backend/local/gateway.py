"""A loopback gateway that answers the few AWS calls the Lambda handlers make, from local parts.

The handlers in lambdas/ use plain boto3 clients. Locally their environment points boto3 here
through its standard per-service endpoint variables (`environment()`), so the same files run on
AWS and locally with no `if local:` anywhere. Served, with AWS's wire formats so botocore parses
answers and errors as it would from AWS:

- S3 GetObject / HeadObject, path-style `GET /<bucket>/<key>`, from a LocalStore; a missing key is
  S3's 404 `NoSuchKey` XML error, a missing bucket `NoSuchBucket`.
- SageMaker Runtime InvokeEndpoint, `POST /endpoints/<name>/invocations`, through the function the
  gateway is given; errors use the rest-json shape (`x-amzn-ErrorType` header, `{"message"}` body):
  400 `ValidationError` for a missing endpoint or a refused request, 424 `ModelError` otherwise.

Anything else answers 501 `NotImplemented`. The server binds 127.0.0.1 only, speaks HTTP/1.1
keep-alive with TCP_NODELAY, and refuses requests whose Host is not its own address (a web page
cannot reach it through DNS rebinding) or that carry no SigV4 signature. The answers are made
apart from the socket (`respond`), so a Lambda worker gives the same bytes without the hop
(direct_route.py).
"""
from __future__ import annotations

import hashlib
import json
import mimetypes
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Callable, Mapping
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

from backend.api import InvalidKey, Prediction, ResourceNotFound, Throttling, ValidationError
from backend.local import LOCAL_ACCOUNT
from backend.local.store import LocalStore, check_bucket

InvokeEndpoint = Callable[[str, bytes, str], bytes]

MAX_INVOKE_BYTES = 6 * 1024 * 1024  # SageMaker Runtime's request payload limit
SERVER_NAME = "SconesLocalGateway"
IDLE_CONNECTION_SECONDS = 120.0
MAX_LINE = 65536  # a request line or header line longer than this is refused
MAX_HEADERS = 100


class _Headers(dict):
    """Request headers by lower-cased name (HTTP names are case-insensitive)."""

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)


class _Server:
    """A thread per keep-alive connection, on a lean HTTP/1.1 parser: the stdlib's http.server costs
    about half a millisecond a request here, more than the work behind it."""

    def __init__(self, address: tuple[str, int], gateway: "Gateway"):
        self.gateway = gateway
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.socket.bind(address)
            self.socket.listen(128)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()[:2]
        self._stopped = threading.Event()
        self.poll_interval = 0.2
        self.socket.settimeout(self.poll_interval)  # accept() wakes up to see shutdown()

    def serve_forever(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self.socket.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stopped.is_set():
                    break
                time.sleep(self.poll_interval)  # out of file descriptors, say: no busy loop
                continue
            if self._stopped.is_set():
                conn.close()
                break
            conn.settimeout(None)
            threading.Thread(target=_Handler(conn, self).serve, name="aws-gateway-conn", daemon=True).start()

    def shutdown(self) -> None:
        self._stopped.set()

    def server_close(self) -> None:
        self.socket.close()


class Gateway:
    """`Gateway(store, invoke_endpoint).start()`; `url` and `environment()` for the clients."""

    def __init__(self, store: LocalStore, invoke_endpoint: InvokeEndpoint, host: str = "127.0.0.1"):
        self.store = store
        self.invoke_endpoint = invoke_endpoint
        self.host = host
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "Gateway":
        if self._server is None:
            self._server = _Server((self.host, 0), self)
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            name=f"aws-gateway-{self.port}", daemon=True)
            self._thread.start()
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("The gateway is not started: call start() first.")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def respond(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Answer:
        return respond(self.store, self.invoke_endpoint, method, target, headers, body)

    def environment(self) -> dict[str, str]:
        """boto3's standard per-service endpoint variables, pointed at this gateway."""
        return {"AWS_ENDPOINT_URL_S3": self.url, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.url}

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        if self._thread is not None:  # no connection is accepted after this
            self._thread.join(timeout=5)
        server.server_close()
        with server.connections_lock:  # idle keep-alive connections would otherwise linger
            for conn in list(server.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler:
    """One connection: requests read and answered in turn until the client closes or idles out."""

    server_version = SERVER_NAME

    def __init__(self, conn: socket.socket, server: _Server):
        self.connection, self.server = conn, server
        self.command = self.path = ""
        self.headers = _Headers()
        self.close_connection = False
        self.rfile = conn.makefile("rb")

    def serve(self) -> None:
        conn = self.connection
        with self.server.connections_lock:
            self.server.connections.add(conn)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(IDLE_CONNECTION_SECONDS)
            while not self.close_connection and self._read_request():
                self._route()
        except (OSError, ValueError):
            return  # the client went away, idled out, or the gateway is closing (finally cleans up)
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(conn)
            try:
                self.rfile.close()
                conn.close()
            except OSError:
                pass

    def _read_request(self) -> bool:
        """The request line and headers; False when the connection ended (or was answered 400 and closed)."""
        line = self.rfile.readline(MAX_LINE + 1)
        while line in (b"\r\n", b"\n"):  # tolerated between requests
            line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            return False
        parts = line.decode("latin-1").split()
        if len(line) > MAX_LINE or len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self.close_connection = True
            self._answer(400, b"", {})
            return False
        self.command, self.path, version = parts
        headers = _Headers()
        for _ in range(MAX_HEADERS + 1):
            raw = self.rfile.readline(MAX_LINE + 1)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep or len(raw) > MAX_LINE:
                self.close_connection = True
                self._answer(400, b"", {})
                return False
            headers[name.strip().lower()] = value.strip()
        else:
            self.close_connection = True
            self._answer(431, b"", {})
            return False
        self.headers = headers
        connection = (headers.get("Connection") or "").lower()
        self.close_connection = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        return True

    # --- routing ---------------------------------------------------------------------------

    def _route(self) -> None:
        body = self._read_body()
        if body is None or not self._host_allowed():
            return
        answer = self.server.gateway.respond(self.command, self.path, self.headers, body)
        self._answer(answer.status, answer.body, answer.headers, with_body=self.command != "HEAD")

    # --- plumbing --------------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        """Read the whole request body so the connection stays usable; None after an error answer."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._answer(411, b"", {})
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_INVOKE_BYTES + 1:
            self.close_connection = True
            answer = _json_error(413, "ValidationError", "The request body is too large or its Content-Length is invalid.")
            self._answer(answer.status, answer.body, answer.headers, with_body=self.command != "HEAD")
            return None
        return self.rfile.read(length) if length else b""

    def _host_allowed(self) -> bool:
        port = self.server.server_address[1]
        host = (self.headers.get("Host") or "").lower()
        if host not in (f"127.0.0.1:{port}", f"localhost:{port}"):
            self.close_connection = True
            self._answer(403, b"", {})
            return False
        return True

    def _answer(self, status: int, body: bytes, headers: dict[str, str], with_body: bool = True) -> None:
        """Status line, headers and body in one write (Content-Length always: the connection stays usable)."""
        lines = [f"HTTP/1.1 {status} {_reason(status)}", f"Server: {self.server_version}",
                 f"Date: {formatdate(usegmt=True)}", *(f"{k}: {v}" for k, v in headers.items()),
                 f"Content-Length: {len(body)}"]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.connection.sendall(head + body if with_body and body else head)


# ---------------------------------------------------------------------------------------------
# The answers, apart from any transport: the HTTP server above and the in-worker route
# (direct_route.py) both give these, so a handler's boto3 sees the same bytes either way.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One response: status, headers (Content-Length is the transport's) and the full body. A HEAD
    request's answer carries the body a GET would get; the transport sends its length only."""

    status: int
    headers: dict[str, str]
    body: bytes = b""


class Fallback(Exception):
    """Raised by an in-worker invoke function that cannot answer alone (no such endpoint in its
    view, a connection refused): the request goes to the gateway process instead, which answers
    it with the whole deployment service behind it."""


def respond(store: LocalStore, invoke_endpoint: InvokeEndpoint, method: str, target: str,
            headers: Mapping[str, str], body: bytes) -> Answer:
    """The answer to one signed request. `headers` are looked up by lower-case name."""
    path = urlsplit(target).path
    authorization = headers.get("authorization") or ""
    service = _service(authorization)
    if not authorization.startswith("AWS4-HMAC-SHA256 "):
        return _json_error(403, "AccessDenied", "Unsigned request: the local gateway serves AWS SDK clients only.")
    parts = path.split("/")
    if service == "s3" and method in ("GET", "HEAD"):
        bucket, _, key = path.lstrip("/").partition("/")
        if bucket and key:
            return s3_object(store, unquote(bucket), unquote(key))
    elif (service == "sagemaker" and method == "POST" and len(parts) == 4 and parts[:2] == ["", "endpoints"]
          and parts[2] and parts[3] == "invocations"):
        return invoke(invoke_endpoint, unquote(parts[2]), body, headers.get("content-type") or "application/octet-stream")
    message = (f"{method} {path} is not served here: the local gateway answers only "
               "S3 GetObject and SageMaker Runtime InvokeEndpoint, the calls the Lambda handlers make.")
    if service == "s3":
        return _s3_error(501, "NotImplemented", message)
    # "__type" names the error for JSON-protocol services (DynamoDB, Step Functions...)
    return _json_error(501, "NotImplemented", message, **{"__type": "NotImplemented"})


def s3_object(store: LocalStore, bucket: str, key: str) -> Answer:
    """S3 GetObject (HeadObject: the same without the body) from the local store, or S3's error."""
    try:
        check_bucket(bucket)
    except InvalidKey as exc:
        return _s3_error(400, "InvalidBucketName", str(exc), BucketName=bucket)
    try:
        data, modified = store.get_with_mtime(bucket, key)
    except InvalidKey as exc:
        return _s3_error(400, "InvalidArgument", str(exc), ArgumentName="key", ArgumentValue=key)
    except (ResourceNotFound, OSError):
        if not store.bucket_dir(bucket).is_dir():
            return _s3_error(404, "NoSuchBucket", "The specified bucket does not exist", BucketName=bucket)
        return _s3_error(404, "NoSuchKey", "The specified key does not exist.", Key=key)
    return Answer(200, {
        "Content-Type": mimetypes.guess_type(key)[0] or "binary/octet-stream",
        "ETag": f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"',
        "Last-Modified": formatdate(modified, usegmt=True),
        "Accept-Ranges": "bytes",
    }, data)


def invoke(invoke_endpoint: InvokeEndpoint, name: str, body: bytes, content_type: str) -> Answer:
    """SageMaker Runtime InvokeEndpoint through `invoke_endpoint`, its errors in SageMaker's shapes.
    `Fallback` passes through: the caller sends the request on to the gateway process."""
    if len(body) > MAX_INVOKE_BYTES:
        return _json_error(400, "ValidationError", f"Request payload of {len(body):,} bytes exceeds the {MAX_INVOKE_BYTES:,}-byte limit.")
    try:
        answer = invoke_endpoint(name, body, content_type)
    except Fallback:
        raise
    except ResourceNotFound:
        return _json_error(400, "ValidationError", f"Endpoint {name} of account {LOCAL_ACCOUNT} not found.")  # SageMaker's words
    except ValidationError as exc:
        return _json_error(400, "ValidationError", str(exc))
    except Throttling as exc:
        return _json_error(429, "ThrottlingException", str(exc))
    except Exception as exc:  # the model failed: SageMaker wraps it as ModelError
        message = str(exc) or type(exc).__name__
        return _json_error(424, "ModelError", (
            f'Received server error (500) from primary with message "{message}". '
            f"See the endpoint's log in the local workspace for more information."
        ), OriginalStatusCode=500, OriginalMessage=message)
    return Answer(200, {
        "Content-Type": "application/json",
        "x-Amzn-Invoked-Production-Variant": "AllTraffic",
        "x-amzn-RequestId": _request_id(),
    }, answer)


def probabilities_json(prediction: Prediction) -> bytes:
    """InvokeEndpoint's body for a prediction: the probabilities as a JSON list."""
    return json.dumps(list(prediction.probabilities)).encode()


def _s3_error(status: int, code: str, message: str, **fields: str) -> Answer:
    request_id = _request_id()
    extra = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items())
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>{extra}"
        f"<RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>"
    ).encode()
    return Answer(status, {"Content-Type": "application/xml", "x-amz-request-id": request_id}, xml)


def _json_error(status: int, code: str, message: str, **fields: object) -> Answer:
    return Answer(status, {"Content-Type": "application/json", "x-amzn-ErrorType": code,
                           "x-amzn-RequestId": _request_id()}, json.dumps({"message": message, **fields}).encode())


def _service(authorization: str) -> str:
    """The signing name in the SigV4 credential scope: `Credential=<key>/<date>/<region>/<service>/aws4_request`."""
    scope = authorization.partition("Credential=")[2].split(",", 1)[0]
    parts = scope.split("/")
    return parts[3] if len(parts) == 5 else ""


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _request_id() -> str:
    return uuid.uuid4().hex[:16].upper()
