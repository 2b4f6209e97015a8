"""The engine's tables (prefixed sf_) and the SQL that reads and writes them.

Events are written in batches: a transaction per flush (a few per second while an execution runs)
and one when it ends, never one per event.
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable

STATES_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE sf_executions (
        arn                 TEXT PRIMARY KEY,
        name                TEXT NOT NULL,
        state_machine_name  TEXT NOT NULL,
        status              TEXT NOT NULL,
        definition          TEXT NOT NULL,
        input               TEXT NOT NULL,
        output              TEXT,
        error               TEXT,
        cause               TEXT,
        start_date          REAL NOT NULL,
        stop_date           REAL,
        runner_pid          INTEGER,
        runner_start        TEXT
    );
    CREATE INDEX sf_executions_machine ON sf_executions(state_machine_name, start_date);
    CREATE INDEX sf_executions_status ON sf_executions(status);
    CREATE TABLE sf_events (
        execution_arn   TEXT NOT NULL,
        id              INTEGER NOT NULL,
        previous_id     INTEGER NOT NULL,
        type            TEXT NOT NULL,
        timestamp       REAL NOT NULL,
        details_key     TEXT,
        details         TEXT,
        PRIMARY KEY (execution_arn, id)
    ) WITHOUT ROWID
    """,
)

_EXEC_COLUMNS = ("arn, name, state_machine_name, status, input, output, error, cause, start_date, stop_date, "
                 "runner_pid, runner_start")


def insert_execution(conn: sqlite3.Connection, row: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO sf_executions(arn, name, state_machine_name, status, definition, input, start_date, "
        "runner_pid, runner_start) VALUES(?, ?, ?, 'RUNNING', ?, ?, ?, ?, ?)",
        (row["arn"], row["name"], row["state_machine_name"], row["definition"], row["input"],
         row["start_date"], row["runner_pid"], row["runner_start"]),
    )


def write_events(conn: sqlite3.Connection, arn: str, events: Iterable[tuple]) -> None:
    write_events_of(conn, [(arn, events)])


def write_events_of(conn: sqlite3.Connection, batches: Iterable[tuple[str, Iterable[tuple]]]) -> None:
    """The events of several executions, (arn, events) each, in one statement."""
    conn.executemany(
        "INSERT INTO sf_events(execution_arn, id, previous_id, type, timestamp, details_key, details) "
        "VALUES(?, ?, ?, ?, ?, ?, ?)",
        [(arn, eid, prev, etype, ts, key, None if details is None else json.dumps(details, ensure_ascii=False))
         for arn, events in batches for eid, prev, etype, ts, key, details in events],
    )


def running_among(conn: sqlite3.Connection, arns: list[str]) -> set[str]:
    """Those of `arns` whose status is RUNNING."""
    found: set[str] = set()
    for i in range(0, len(arns), 500):
        chunk = arns[i:i + 500]
        found.update(r[0] for r in conn.execute(
            f"SELECT arn FROM sf_executions WHERE status='RUNNING' AND arn IN ({','.join('?' * len(chunk))})", chunk))
    return found


def status_of(conn: sqlite3.Connection, arn: str) -> str | None:
    row = conn.execute("SELECT status FROM sf_executions WHERE arn=?", (arn,)).fetchone()
    return None if row is None else row[0]


def close_execution(conn: sqlite3.Connection, arn: str, status: str, output: str | None, error: str | None,
                    cause: str | None, stop_date: float) -> int:
    return conn.execute(
        "UPDATE sf_executions SET status=?, output=?, error=?, cause=?, stop_date=? WHERE arn=? AND status='RUNNING'",
        (status, output, error, cause, stop_date, arn),
    ).rowcount


def last_event(conn: sqlite3.Connection, arn: str) -> int:
    row = conn.execute("SELECT MAX(id) FROM sf_events WHERE execution_arn=?", (arn,)).fetchone()
    return row[0] or 0


def get_execution(conn: sqlite3.Connection, arn: str) -> sqlite3.Row | None:
    return conn.execute(f"SELECT {_EXEC_COLUMNS}, definition FROM sf_executions WHERE arn=?", (arn,)).fetchone()


def _where(state_machine_names: Iterable[str] | None, status: str | None) -> tuple[str, list[Any]]:
    where, params = [], []
    if state_machine_names is not None:
        names = list(state_machine_names)
        where.append(f"state_machine_name IN ({','.join('?' * len(names))})" if names else "0")
        params += names
    if status is not None:
        where.append("status=?")
        params.append(status)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def list_executions(conn: sqlite3.Connection, state_machine_names: Iterable[str] | None, status: str | None,
                    limit: int | None = None) -> list[sqlite3.Row]:
    """Newest first; of the named state machines only (None: all), the newest `limit` (None: all)."""
    where, params = _where(state_machine_names, status)
    sql = f"SELECT {_EXEC_COLUMNS} FROM sf_executions{where} ORDER BY start_date DESC, rowid DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(max(0, int(limit)))
    return conn.execute(sql, params).fetchall()


def count_executions(conn: sqlite3.Connection, state_machine_names: Iterable[str] | None) -> dict[tuple[str, str | None], int]:
    """{(status, error): executions} of the named state machines (None: all)."""
    where, params = _where(state_machine_names, None)
    return {(r[0], r[1]): r[2] for r in conn.execute(
        f"SELECT status, error, COUNT(*) FROM sf_executions{where} GROUP BY status, error", params)}


def arns_named(conn: sqlite3.Connection, name: str) -> list[str]:
    """The ARNs of the executions with this name (one per state machine at most), newest first."""
    return [r[0] for r in conn.execute(
        "SELECT arn FROM sf_executions WHERE name=? ORDER BY start_date DESC, rowid DESC", (name,))]


def running(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT arn, runner_pid, runner_start FROM sf_executions WHERE status='RUNNING'"
    ).fetchall()


def get_events(conn: sqlite3.Connection, arn: str) -> list[tuple]:
    rows = conn.execute(
        "SELECT id, previous_id, type, timestamp, details_key, details FROM sf_events "
        "WHERE execution_arn=? ORDER BY id", (arn,),
    ).fetchall()
    return [(r[0], r[1], r[2], r[3], r[4], None if r[5] is None else json.loads(r[5])) for r in rows]


def delete_executions(conn: sqlite3.Connection, state_machine_name: str) -> int:
    """Remove a state machine's finished executions and their history (a workspace cleanup)."""
    arns = [r[0] for r in conn.execute(
        "SELECT arn FROM sf_executions WHERE state_machine_name=? AND status!='RUNNING'", (state_machine_name,))]
    for i in range(0, len(arns), 500):
        chunk = arns[i:i + 500]
        marks = ",".join("?" * len(chunk))
        conn.execute(f"DELETE FROM sf_events WHERE execution_arn IN ({marks})", chunk)
        conn.execute(f"DELETE FROM sf_executions WHERE arn IN ({marks})", chunk)
    return len(arns)
