"""HTTP to a local endpoint: keep-alive connections with TCP_NODELAY, one per thread and port.

`invoke_endpoint` and bench/endpoint.py both go through `EndpointClient`, so the benchmark
measures the path the Lambda and the pages use. Without TCP_NODELAY on the client, Nagle's
algorithm and the server's delayed ACK add ~40 ms to a request sent in two segments; http.client
sets it on connect, and this module sets it again so a future change there cannot undo it.
"""
from __future__ import annotations

import http.client
import socket
import threading

DEFAULT_TIMEOUT = 60.0


class ConnectionFailed(ConnectionError):
    """No answer came back: refused, reset, or closed before a response."""


class _Connection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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
        headers = {"Content-Type": content_type} if content_type is not None else {}
        pool = self._pool()
        for attempt in (0, 1):
            conn = pool.get(port)
            reused = conn is not None and conn.sock is not None
            if conn is None:
                conn = pool[port] = _Connection(self.host, port, timeout=self.timeout)
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    conn.close()
                return resp.status, data
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
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
