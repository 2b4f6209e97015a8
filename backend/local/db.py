"""SQLite for the local backend's state: WAL, short transactions, a versioned schema.

Each component (core records, the states engine, ...) owns a list of migrations and its own row in
`schema_versions`, so a component can grow its tables without touching the others. Connections
are opened per operation: they are cheap, and worker processes and Streamlit threads never share one.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

CORE_MIGRATIONS: tuple[str, ...] = (
    # 1: jobs (staging now; later training and others) and the staged dataset.
    """
    CREATE TABLE jobs (
        job_id      TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        status      TEXT NOT NULL,
        progress    REAL NOT NULL DEFAULT 0,
        message     TEXT NOT NULL DEFAULT '',
        params      TEXT NOT NULL DEFAULT '{}',
        result      TEXT,
        failure     TEXT NOT NULL DEFAULT '',
        pid         INTEGER,
        pid_start   TEXT,
        created     TEXT NOT NULL,
        updated     TEXT NOT NULL
    );
    CREATE INDEX jobs_kind_created ON jobs(kind, created);
    CREATE TABLE datasets (
        bucket      TEXT PRIMARY KEY,
        state       TEXT NOT NULL,          -- staging | staged
        report      TEXT,
        job_id      TEXT,
        updated     TEXT NOT NULL
    );
    """,
    # 2: names of the AWS resources this workspace created (the AWS backend's inventory).
    """
    CREATE TABLE aws_resources (
        kind        TEXT NOT NULL,
        name        TEXT NOT NULL,
        created     TEXT NOT NULL,
        PRIMARY KEY (kind, name)
    );
    """,
    # 3: each cleanup's outcome, for the Home page's last step.
    """
    CREATE TABLE cleanups (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        at          TEXT NOT NULL,
        deleted     TEXT NOT NULL,          -- JSON [[kind, name], ...]
        left_over   TEXT NOT NULL           -- JSON [[kind, name, reason], ...]
    );
    """,
    # 4: the backend that ran each job, so a workspace used with both backends shows each only its own
    # (a failed `--backend aws stage` is not the local staging's last attempt). '' for older rows: both.
    """
    ALTER TABLE jobs ADD COLUMN backend TEXT NOT NULL DEFAULT '';
    """,
)

_migrate_lock = threading.Lock()


class Database:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ready: set[str] = set()
        self.migrate("core", CORE_MIGRATIONS)

    def _open(self) -> sqlite3.Connection:
        # check_same_thread=False: a connection is used by one thread at a time, but may be closed by
        # another (a generator finalised at exit); sqlite3 itself is built threadsafe.
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def compact(self, busy_seconds: float = 1.0, min_free_share: float = 0.25) -> bool:
        """Give the pages of deleted rows back to the disk (VACUUM, then an emptied WAL): after a cleanup the
        file kept its full size, tens of MB of free pages. Only when at least `min_free_share` of the file is
        free: VACUUM rewrites everything kept, so a small deletion from a big database is not worth it. Best
        effort: False when another connection is writing (it waits `busy_seconds`, not a writer's 30 s) or a
        reader kept the WAL from being emptied (the next checkpoint does it)."""
        try:
            conn = sqlite3.connect(self.path, timeout=busy_seconds, isolation_level=None)
            try:
                pages = conn.execute("PRAGMA page_count").fetchone()[0]
                free = conn.execute("PRAGMA freelist_count").fetchone()[0]
                if not free or free < min_free_share * pages:
                    return False
                conn.execute("VACUUM")
                busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error:
            return False
        return busy == 0

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = self._open()
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE so writers queue instead of failing)."""
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def migrate(self, component: str, migrations: Sequence[str]) -> int:
        """Bring `component` to len(migrations); returns the version it is at."""
        if component in self._ready:
            return len(migrations)
        with _migrate_lock, self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            row = conn.execute("SELECT version FROM schema_versions WHERE component=?", (component,)).fetchone()
            version = row["version"] if row else 0
            if version > len(migrations):
                raise RuntimeError(
                    f"The workspace database {self.path} was written by a newer version "
                    f"({component} schema {version}); upgrade the project or use another SCONES_HOME."
                )
            for i in range(version, len(migrations)):
                for statement in _split_sql(migrations[i]):
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_versions(component, version) VALUES(?, ?) "
                "ON CONFLICT(component) DO UPDATE SET version=excluded.version",
                (component, len(migrations)),
            )
        self._ready.add(component)
        return len(migrations)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.connect() as conn:
            return conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self.connect() as conn:
            return conn.execute(sql, params).fetchone()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.transaction() as conn:
            return conn.execute(sql, params).rowcount


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
