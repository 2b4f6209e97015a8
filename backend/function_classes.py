"""The class names each workflow function was configured with, and since when.

An execution's predicted class is the model's class at the time it ran. The state machine's
endpoint today may serve another model, with other classes or the same classes in another order
(a restage in another order, a redeploy): reading the names from it would relabel every earlier
execution. So each time a function is (re)configured with class names (`CLASS_NAMES`, which the
filter's cause also uses), both backends note it here, and an execution's label is read from the
note of its state machine's functions that was in force when it started. The endpoint the functions
call (`ENDPOINT_NAME`) is noted with the names, so Monitor credits an execution to the endpoint it
called, not to the one its state machine calls today, and so is the filter's `THRESHOLD`, so each
execution shows the threshold it was judged against after the workflow's has changed.
"""
from __future__ import annotations

import bisect
import threading
import time
from datetime import datetime, timezone
from typing import Iterable, NamedTuple

from backend.local.db import Database, dumps, loads

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE function_classes (
        backend     TEXT NOT NULL,          -- local | aws: one workspace can serve both
        function    TEXT NOT NULL,
        since       REAL NOT NULL,          -- unix time, UTC
        classes     TEXT NOT NULL,          -- JSON list, in the model's class order
        PRIMARY KEY (backend, function, since)
    );
    """,
    # the endpoint the functions call (ENDPOINT_NAME), so Monitor credits an execution to the endpoint it
    # called, not to the one its state machine calls now
    "ALTER TABLE function_classes ADD COLUMN endpoint TEXT;",
    # the workflow's threshold (THRESHOLD), so an execution shows the one it was judged against
    "ALTER TABLE function_classes ADD COLUMN threshold REAL;",
)
CACHE_TTL = 2.0  # the pages read labels every second while executions run


class FunctionClasses:
    def __init__(self, db: Database, backend: str):
        db.migrate("function_classes", MIGRATIONS)
        self.db, self.backend = db, backend
        self._lock = threading.Lock()
        self._loaded: tuple[float, dict[str, tuple[list[float], list[Note]]]] | None = None

    def record(self, functions: Iterable[str], classes: Iterable[str], at: datetime | None = None,
               endpoint: str | None = None, threshold: float | None = None) -> None:
        """Note that `functions` answer with `classes` (through `endpoint` and judged at `threshold`, when
        known) from `at` on (now by default; on AWS, Lambda's time of the change, the clock executions' start
        dates come from); nothing when they already did."""
        names = list(classes)
        now = (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp() if at else time.time()
        with self.db.transaction() as conn:
            for function in functions:
                row = conn.execute("SELECT classes, endpoint, threshold FROM function_classes WHERE backend=? "
                                   "AND function=? ORDER BY since DESC LIMIT 1", (self.backend, function)).fetchone()
                if (row is None or loads(row["classes"]) != names or row["endpoint"] != endpoint
                        or row["threshold"] != threshold):
                    conn.execute("INSERT OR REPLACE INTO function_classes(backend, function, since, classes, endpoint, "
                                 "threshold) VALUES(?,?,?,?,?,?)",
                                 (self.backend, function, now, dumps(names), endpoint, threshold))
        with self._lock:
            self._loaded = None

    def note(self, functions: list[str], classes: Iterable[str], endpoint: str | None = None,
             threshold: float | None = None) -> None:
        """`record`, unless the newest notes (read at most every CACHE_TTL) already say so: called before every
        start, it writes only when the names, the endpoint or the threshold changed, here or in another
        process since."""
        wanted = Note(tuple(classes), endpoint, threshold)
        notes = self._notes()
        if any(not notes.get(f, ((), ()))[1] or notes[f][1][-1] != wanted for f in functions):
            self.record(functions, wanted.classes, endpoint=endpoint, threshold=threshold)

    def fill_endpoint(self, functions: Iterable[str], endpoint: str) -> None:
        """Before the functions are pointed elsewhere: a newest note without an endpoint (written before
        endpoints were noted) gets the one they call until now, so the executions it covers are not credited
        to the next endpoint."""
        with self.db.transaction() as conn:
            for function in functions:
                conn.execute("UPDATE function_classes SET endpoint=? WHERE backend=? AND function=? "
                             "AND endpoint IS NULL "
                             "AND since=(SELECT MAX(since) FROM function_classes WHERE backend=? AND function=?)",
                             (endpoint, self.backend, function, self.backend, function))
        with self._lock:
            self._loaded = None

    def at(self, functions: Iterable[str], when: datetime) -> tuple[str, ...] | None:
        """The class names the first of `functions` with a note had when `when` began; None without one."""
        note = self._note_at(functions, when, lambda n: True)
        return None if note is None else note.classes

    def endpoint_at(self, functions: Iterable[str], when: datetime) -> str | None:
        """The endpoint the first of `functions` noted with one called when `when` began; None when unknown
        (no note then, or notes from before endpoints were noted)."""
        note = self._note_at(functions, when, lambda n: n.endpoint is not None)
        return None if note is None else note.endpoint

    def threshold_at(self, functions: Iterable[str], when: datetime) -> float | None:
        """The workflow's threshold (THRESHOLD) the first of `functions` noted with one had when `when` began;
        None when unknown (no note then, or notes from before thresholds were noted)."""
        note = self._note_at(functions, when, lambda n: n.threshold is not None)
        return None if note is None else note.threshold

    def _note_at(self, functions: Iterable[str], when: datetime, usable) -> "Note | None":
        moment = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
        notes = self._notes()
        for function in functions:
            times, values = notes.get(function, ([], []))
            i = bisect.bisect_right(times, moment)
            if i and usable(values[i - 1]):
                return values[i - 1]
        return None

    def _notes(self) -> dict[str, tuple[list[float], list["Note"]]]:
        with self._lock:
            if self._loaded is not None and time.monotonic() - self._loaded[0] < CACHE_TTL:
                return self._loaded[1]
        notes: dict[str, tuple[list[float], list[Note]]] = {}
        for row in self.db.query("SELECT function, since, classes, endpoint, threshold FROM function_classes "
                                 "WHERE backend=? ORDER BY since", (self.backend,)):
            times, values = notes.setdefault(row["function"], ([], []))
            times.append(row["since"])
            values.append(Note(tuple(loads(row["classes"])), row["endpoint"], row["threshold"]))
        with self._lock:
            self._loaded = (time.monotonic(), notes)
        return notes


class Note(NamedTuple):
    """What a function was configured with from a moment on."""

    classes: tuple[str, ...]
    endpoint: str | None  # ENDPOINT_NAME; None in notes from before endpoints were noted
    threshold: float | None = None  # THRESHOLD; None in notes from before thresholds were noted
