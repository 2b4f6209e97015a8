"""HTTP to a local endpoint: keep-alive connections with TCP_NODELAY, one per thread and port.

`invoke_endpoint` and bench/endpoint.py both go through `EndpointClient`, so the benchmark
measures the path the Lambda and the pages use. Without TCP_NODELAY on the client, Nagle's
algorithm and the server's delayed ACK add ~40 ms to a request sent in two segments; http.client
sets it on connect, and this module sets it again so a future change there cannot undo it.
"""
from __future__ import annotations

import socket
import threading

DEFAULT_TIMEOUT = 60.0
MAX_LINE = 65536
MAX_HEADERS = 100


class ConnectionFailed(ConnectionError):
    """No answer came back: refused, reset, or closed before a response."""


class _Connection:
    """One keep-alive HTTP/1.1 connection: the request in one write, the answer read with a lean
    parser (http.client's header parsing through the email package costs more than the model)."""

    def __init__(self, host: str, port: int, timeout: float):
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")

    def close(self) -> None:
        for thing in (self.rfile, self.sock):
            try:
                thing.close()
            except OSError:
                pass

    def exchange(self, method: str, path: str, body: bytes | None, content_type: str | None) -> tuple[int, bytes, bool]:
        """(status, body, server closes) for one request."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if content_type is not None:
            head += f"Content-Type: {content_type}\r\n"
        if body is not None or method in ("POST", "PUT"):
            head += f"Content-Length: {len(body or b'')}\r\n"
        data = (head + "\r\n").encode("latin-1")
        self.sock.sendall(data + body if body else data)
        while True:
            status, length, closes = self._head()
            if not 100 <= status < 200:
                break  # an interim 1xx answer is followed by the real one
        payload: bytes
        if method == "HEAD" or status in (204, 304):
            payload = b""
        elif length is None:
            payload, closes = self.rfile.read(), True
        else:
            payload = self.rfile.read(length)
            if len(payload) != length:
                raise ConnectionResetError("the server closed the connection in the middle of an answer")
        return status, payload, closes

    def _head(self) -> tuple[int, int | None, bool]:
        """The status line and headers of one answer: (status, Content-Length or None, server closes)."""
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            raise ConnectionResetError("the server closed the connection before answering")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ConnectionError(f"not an HTTP answer: {line[:60]!r}")
        status, length, closes = int(parts[1]), None, parts[0] == b"HTTP/1.0"
        for _ in range(MAX_HEADERS + 1):
            raw = self.rfile.readline(MAX_LINE + 1)
            if raw in (b"\r\n", b"\n"):
                break
            if not raw:
                raise ConnectionResetError("the server closed the connection in the middle of an answer")
            name, _, value = raw.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                closes = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                raise ConnectionError("chunked answers are not expected from a local endpoint")
        else:
            raise ConnectionError("too many headers in the answer")
        return status, length, closes


class EndpointClient:
    def __init__(self, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT):
        self.host, self.timeout = host, timeout
        self._local = threading.local()

    def _pool(self) -> dict[int, _Connection]:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        return pool

    def request(self, port: int, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> tuple[int, bytes]:
        """(status, body). A reused keep-alive connection the server has closed is retried once on a
        fresh one (the server closes idle connections only between requests, e.g. when it stops);
        ConnectionFailed when no answer comes back."""
        pool = self._pool()
        for attempt in (0, 1):
            conn = pool.get(port)
            reused = conn is not None
            try:
                if conn is None:
                    conn = pool[port] = _Connection(self.host, port, self.timeout)
                status, data, closes = conn.exchange(method, path, body, content_type)
                if closes:
                    conn.close()
                    pool.pop(port, None)
                return status, data
            except (OSError, ValueError) as exc:  # ConnectionError and TimeoutError are OSErrors
                if conn is not None:
                    conn.close()
                pool.pop(port, None)
                if attempt == 0 and reused and not isinstance(exc, TimeoutError):
                    continue
                raise ConnectionFailed(f"no answer from 127.0.0.1:{port} ({type(exc).__name__})") from exc
        raise AssertionError("unreachable")

    def invoke(self, port: int, body: bytes, content_type: str) -> tuple[int, bytes]:
        return self.request(port, "POST", "/invocations", body, content_type)

    def ping(self, port: int) -> bool:
        try:
            status, _ = self.request(port, "GET", "/ping")
        except ConnectionFailed:
            return False
        return status == 200

    def close(self) -> None:
        for conn in self._pool().values():
            conn.close()
        self._pool().clear()
