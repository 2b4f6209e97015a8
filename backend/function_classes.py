"""The class names each workflow function was configured with, and since when.

An execution's predicted class is the model's class at the time it ran. The state machine's
endpoint today may serve another model, with other classes or the same classes in another order
(a restage in another order, a redeploy): reading the names from it would relabel every earlier
execution. So each time a function is (re)configured with class names (`CLASS_NAMES`, which the
filter's cause also uses), both backends note it here, and an execution's label is read from the
note of its state machine's functions that was in force when it started.
"""
from __future__ import annotations

import bisect
import threading
import time
from datetime import datetime, timezone
from typing import Iterable

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
)
CACHE_TTL = 2.0  # the pages read labels every second while executions run


class FunctionClasses:
    def __init__(self, db: Database, backend: str):
        db.migrate("function_classes", MIGRATIONS)
        self.db, self.backend = db, backend
        self._lock = threading.Lock()
        self._loaded: tuple[float, dict[str, tuple[list[float], list[tuple[str, ...]]]]] | None = None

    def record(self, functions: Iterable[str], classes: Iterable[str], at: datetime | None = None) -> None:
        """Note that `functions` answer with `classes` from `at` on (now by default; on AWS, Lambda's time of
        the change, the clock executions' start dates come from); nothing when they already did."""
        names = list(classes)
        now = (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp() if at else time.time()
        with self.db.transaction() as conn:
            for function in functions:
                row = conn.execute("SELECT classes FROM function_classes WHERE backend=? AND function=? "
                                   "ORDER BY since DESC LIMIT 1", (self.backend, function)).fetchone()
                if row is None or loads(row["classes"]) != names:
                    conn.execute("INSERT OR REPLACE INTO function_classes(backend, function, since, classes) "
                                 "VALUES(?,?,?,?)", (self.backend, function, now, dumps(names)))
        with self._lock:
            self._loaded = None

    def note(self, functions: list[str], classes: Iterable[str]) -> None:
        """`record`, unless the newest notes (read at most every CACHE_TTL) already say so: called before every
        start, it writes only when the names changed, here or in another process since."""
        names = tuple(classes)
        notes = self._notes()
        if any(not notes.get(f, ((), ()))[1] or notes[f][1][-1] != names for f in functions):
            self.record(functions, names)

    def at(self, functions: Iterable[str], when: datetime) -> tuple[str, ...] | None:
        """The class names the first of `functions` with a note had when `when` began; None without one."""
        moment = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
        notes = self._notes()
        for function in functions:
            times, values = notes.get(function, ([], []))
            i = bisect.bisect_right(times, moment)
            if i:
                return values[i - 1]
        return None

    def _notes(self) -> dict[str, tuple[list[float], list[tuple[str, ...]]]]:
        with self._lock:
            if self._loaded is not None and time.monotonic() - self._loaded[0] < CACHE_TTL:
                return self._loaded[1]
        notes: dict[str, tuple[list[float], list[tuple[str, ...]]]] = {}
        for row in self.db.query("SELECT function, since, classes FROM function_classes WHERE backend=? "
                                 "ORDER BY since", (self.backend,)):
            times, values = notes.setdefault(row["function"], ([], []))
            times.append(row["since"])
            values.append(tuple(loads(row["classes"])))
        with self._lock:
            self._loaded = (time.monotonic(), notes)
        return notes
