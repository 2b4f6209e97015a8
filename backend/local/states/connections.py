"""One SQLite connection per thread and database, reused across calls.

Opening a connection costs three PRAGMAs, and a WAL database checkpoints when its last connection
closes: both show when an engine writes a few times per execution. A thread keeps its connections
in a thread-local cache (a few databases at most), and they close on that same thread when it
ends, as sqlite3 requires; they read. The engine writes through one connection of its own, with
`transaction_on`. All connections come from Database.connect().
"""
from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

from backend.local.db import Database

_MAX_PER_THREAD = 4
_local = threading.local()


def connection(db: Database) -> sqlite3.Connection:
    cache: OrderedDict | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = OrderedDict()
    key = str(db.path)
    entry = cache.get(key)
    if entry is not None:
        cache.move_to_end(key)
        return entry[1]
    cm = db.connect()
    conn = cm.__enter__()
    cache[key] = (cm, conn)
    while len(cache) > _MAX_PER_THREAD:
        _, (old_cm, _old) = cache.popitem(last=False)
        old_cm.__exit__(None, None, None)
    return conn


@contextmanager
def transaction_on(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT on a connection that outlives it: a failed COMMIT (a full disk)
    is rolled back too, or the connection's next BEGIN would fail for good."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        raise


def hold_open(db: Database, stop: threading.Event) -> None:
    """Keep one idle connection open until `stop` (run on a thread of its own)."""
    with db.connect():
        stop.wait()
