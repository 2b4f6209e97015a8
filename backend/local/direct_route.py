"""The gateway's answers given inside a Lambda worker, without the hop through the gateway process.

A handler's boto3 call to the gateway's address is built, signed, checked and parsed by botocore
as always. Only the transport differs: botocore's `before-send` event (the hook moto uses) hands
the prepared request here instead of to urllib3, and the answer is made by the gateway's own code
(`gateway.respond`), so botocore parses the same bytes it would get over HTTP:

- S3 GetObject / HeadObject are answered from the local store, errors included.
- InvokeEndpoint goes straight to the endpoint's HTTP server. The endpoint's port comes from the
  workspace database (read-only, kept a second, as the deployment service keeps it).

Whatever this route cannot answer alone goes on over HTTP to the gateway process, which has the
whole deployment service behind it: an endpoint neither InService nor Updating in this worker's
view, a connection refused or closed before an answer (a deleted, updated or killed endpoint: the
service reconciles it and says which), a body that is a stream or over InvokeEndpoint's limit, or
anything unexpected here, including a route that could not be installed. An endpoint that does not
answer within the client's 60 s is not asked again (SageMaker's ModelError for a timed-out
container): the model never runs twice for one call. The boto3 client's own read timeout does not
apply to this hop; the function's Lambda timeout bounds it.

The answers carry the gateway's headers, Date and Server included. An S3 GetObject of a test image
costs the handler about 0.46 ms this way against 0.77-0.86 ms over HTTP, and the gateway process
does no work for it. The worker imports botocore before the handler does (the hook must be in place
first), so a handler that bundles its own botocore in its code folder gets the runtime's copy.
"""
from __future__ import annotations

import io
import json
import os
import sqlite3
import threading
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote

from backend.api import SERVING_STATUSES  # an update keeps the old process serving until the switch
from backend.local.gateway import MAX_INVOKE_BYTES, SERVER_NAME, Fallback, probabilities_json, respond
from backend.local.serving.client import ConnectionFailed, EndpointClient
from backend.local.serving.service import TARGET_TTL_SECONDS, prediction, timed_out
from backend.local.store import LocalStore


class _Body(io.BytesIO):
    """The raw body botocore reads an answer from (StreamingBody reads it; `stream()` is urllib3's)."""

    def stream(self, amt: int = 65536, **_: Any):
        while chunk := self.read(amt):
            yield chunk


class DirectRoute:
    """`DirectRoute(gateway_url, store_root, db_path).install()` in a worker, before the handler's import."""

    def __init__(self, gateway_url: str, store_root: str | Path, db_path: str | Path):
        self.prefix = gateway_url.rstrip("/") + "/"
        self.store = LocalStore(Path(store_root))
        self.db_path = Path(db_path)
        self.client = EndpointClient()
        self._targets: dict[str, tuple[float, int, tuple[str, ...]]] = {}
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # a handler's own threads may call boto3 too

    def install(self) -> "DirectRoute":
        """Every botocore session made from now on in this process (boto3.client() makes one) sends here first."""
        from botocore import handlers

        handlers.BUILTIN_HANDLERS.append(("before-send", self.before_send))
        return self

    def before_send(self, request: Any, **_: Any) -> Any:
        """botocore's before-send: an AWSResponse, or None to send the request over HTTP as usual."""
        url = request.url
        if not url.startswith(self.prefix):
            return None
        body = request.body
        if body is None or isinstance(body, str):
            body = (body or "").encode()
        elif not isinstance(body, (bytes, bytearray)):
            return None  # a stream (an upload): HTTP reads it as botocore means it to be read
        if len(body) > MAX_INVOKE_BYTES + 1:
            return None  # the gateway refuses it as it reads it (413), before any routing
        headers = {k.lower(): v.decode("latin-1") if isinstance(v, bytes) else v for k, v in request.headers.items()}
        try:
            answer = respond(self.store, self.invoke, request.method, url[len(self.prefix) - 1:], headers, bytes(body))
        except Exception:  # Fallback, or anything unexpected here: the gateway process answers instead
            return None
        from botocore.awsrequest import AWSResponse

        payload = b"" if request.method == "HEAD" else answer.body
        response_headers = {"Server": SERVER_NAME, "Date": formatdate(usegmt=True), **answer.headers,
                            "Content-Length": str(len(answer.body))}
        return AWSResponse(url, answer.status, response_headers, _Body(payload))

    # --- InvokeEndpoint ----------------------------------------------------------------------

    def invoke(self, name: str, body: bytes, content_type: str) -> bytes:
        try:
            port, classes = self._target(name)
            status, data = self.client.invoke(port, body, content_type)
        except ConnectionFailed as exc:
            self._targets.pop(name, None)
            if isinstance(exc.__cause__, TimeoutError):  # it may still be working on it: not sent again
                raise timed_out(name, self.client.timeout) from None
            raise Fallback(f"endpoint {name} did not answer on port {port}") from None
        except Fallback:
            raise
        except Exception as exc:  # a database or record this route cannot read: the gateway's service can
            raise Fallback(f"{type(exc).__name__}: {exc}") from None
        return probabilities_json(prediction(name, classes, status, data))

    def _target(self, name: str) -> tuple[int, tuple[str, ...]]:
        hit = self._targets.get(name)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        try:
            with self._lock:
                if self._conn is None:
                    self._conn = sqlite3.connect(f"file:{quote(os.fsencode(self.db_path))}?mode=ro", uri=True,
                                                 timeout=1.0, isolation_level=None, check_same_thread=False)
                row = self._conn.execute("SELECT status, port, classes FROM endpoints WHERE endpoint_name=?",
                                         (name,)).fetchone()
        except sqlite3.Error:
            raise Fallback("the workspace database could not be read") from None
        if row is None or row[0] not in SERVING_STATUSES or not row[1]:
            raise Fallback(f"endpoint {name} is not serving in this worker's view")
        classes = tuple(json.loads(row[2]) or ()) if row[2] else ()
        self._targets[name] = (now + TARGET_TTL_SECONDS, int(row[1]), classes)
        return int(row[1]), classes


def install(config_json: str) -> None:
    """In a worker: install the route `LambdaRuntime` describes; a route that cannot be installed leaves
    every call to HTTP and the gateway process (said once on the worker's stderr)."""
    try:
        DirectRoute(**json.loads(config_json)).install()
    except Exception as exc:  # noqa: BLE001 - the handlers must run either way
        os.write(2, f"scones: the in-worker route is off, calls go over HTTP ({type(exc).__name__}: {exc})\n".encode())
