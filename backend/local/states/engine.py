"""StatesEngine: start, describe, list, stop and trace executions of ASL definitions.

An execution runs on a worker thread of this process (or on the caller's thread with
`run_execution`). Its events collect in memory and reach SQLite in batches: a background flusher
writes what is pending a few times a second, and the final status goes in one transaction with the
last events. An end that could not be written (a full disk, say) is kept with its events and tried
again by the flusher each round until it is written; meanwhile the execution reads RUNNING. Every
row carries the runner's identity (pid + process start time), so an engine that starts later can
tell an execution that is still running elsewhere from one whose runner died, and ends the latter
as FAILED with States.Runtime instead of leaving it RUNNING forever.
"""
from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator

from backend.local import LOCAL_ACCOUNT, LOCAL_REGION
from backend.local.db import Database

from . import connections, errors, store
from .machine import Machine, compile_machine
from .runner import RunnerIdentity
from .runtime import HISTORY_LIMIT, Clock, History, Run, RunInfo, Scope
from .state_types.base import run_block, serialize
from .values import PAYLOAD_LIMIT_BYTES, dumps, to_datetime, utf8_size

STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
UNRECORDED_GRACE_SECONDS = 5.0  # wait() gives up on an end that could not be written for this long
_TERMINAL_EVENT = {
    "SUCCEEDED": ("ExecutionSucceeded", "executionSucceededEventDetails"),
    "FAILED": ("ExecutionFailed", "executionFailedEventDetails"),
    "TIMED_OUT": ("ExecutionTimedOut", "executionTimedOutEventDetails"),
    "ABORTED": ("ExecutionAborted", "executionAbortedEventDetails"),
}
WAL_REWIND_FRAMES = 1000  # a longer WAL is checkpointed to its end with the writers held (SQLite's own threshold)
WAL_KEPT_BYTES = 16 * 1024 * 1024  # a WAL file grown past this is cut back to it when it starts over
_BAD_NAME = re.compile(r"[\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]")

Resolver = Callable[[str, Any, Any], Any]


@dataclass(frozen=True)
class ExecutionRecord:
    """One execution as DescribeExecution shows it; input and output are JSON text."""

    arn: str
    name: str
    state_machine_name: str
    status: str
    input: str
    output: str | None
    error: str | None
    cause: str | None
    start_date: datetime
    stop_date: datetime | None

    @property
    def input_value(self) -> Any:
        return json.loads(self.input)

    @property
    def output_value(self) -> Any:
        return None if self.output is None else json.loads(self.output)

    @property
    def done(self) -> bool:
        return self.status != "RUNNING"


class _Active:
    """Engine-side bookkeeping of one execution running in this process."""

    def __init__(self, machine: Machine, input_text: str):
        self.machine = machine
        self.input_text = input_text
        self.run: Run = None  # type: ignore[assignment]
        self.flush_lock = threading.Lock()
        self.ready = False  # name checked (and row written, for start_execution): the flusher may touch it
        self.persisted = False  # is its row in SQLite yet?
        self.lost_name = False  # another runner took the name before the row was written
        self.final: ExecutionRecord | None = None
        self.cancel_timeout: Callable[[], None] | None = None
        self.end: _End | None = None  # how it ended, kept until written
        self.settled = threading.Event()  # ended, and its end written (or overruled by a stop from elsewhere)
        self.unwritten_since: float | None = None  # monotonic time the end's write first failed
        self.write_error = ""  # why it failed (SQLite's words)


@dataclass(frozen=True)
class _End:
    status: str
    output: str | None
    error: str | None
    cause: str | None
    stop: float


class _StoppedElsewhere(Exception):
    pass


class _Runners:
    """Threads that run executions, kept for a while after one ends and reused by the next.

    An execution blocks its thread (Wait states, tasks), so there is no bound: a start with no idle
    thread makes one. Reuse keeps each thread's SQLite connection open (a new thread opens its own,
    three PRAGMAs and a cold statement cache) and saves the thread's start.
    """

    IDLE_SECONDS = 30.0

    def __init__(self, name: str = "states-runner"):
        self.name = name
        self._lock = threading.Lock()
        self._idle: list[tuple[threading.Event, list]] = []

    def submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                wake, slot = self._idle.pop()
                slot.append(fn)
                wake.set()
                return
        threading.Thread(target=self._loop, args=(fn,), daemon=True, name=self.name).start()

    def _loop(self, fn: Callable[[], None]) -> None:
        wake, slot = threading.Event(), []
        while True:
            try:
                fn()
            except BaseException:  # the job handles its own errors; a runner never dies of one
                pass
            fn = None  # an idle runner holds no execution (nor, through it, the engine)
            with self._lock:
                self._idle.append((wake, slot))
            if not wake.wait(self.IDLE_SECONDS):
                with self._lock:
                    if (wake, slot) in self._idle:
                        self._idle.remove((wake, slot))
                        return
                wake.wait()  # handed a job just as the wait ended
            wake.clear()
            fn = slot.pop()


class StatesEngine:
    """A local Step Functions: runs definitions, keeps executions and history in SQLite."""

    def __init__(self, db: Database, resolver: Resolver | None = None, *, clock: Clock | None = None,
                 region: str = LOCAL_REGION, account_id: str = LOCAL_ACCOUNT, role_arn: str | None = None,
                 flush_interval: float = 0.25, history_limit: int = HISTORY_LIMIT):
        self.db = db
        self.db.migrate("states", store.STATES_MIGRATIONS)
        self.resolver = resolver
        self.clock = clock or Clock()
        self.region = region
        self.account_id = account_id
        self.role_arn = role_arn or f"arn:aws:iam::{account_id}:role/scones-local-states"
        self.flush_interval = flush_interval
        self.history_limit = history_limit
        self.runner = RunnerIdentity.current()
        # An idle connection held for the engine's life: otherwise each connection that closes
        # last checkpoints the WAL (milliseconds per write instead of a tenth of one).
        self._keeper_stop = threading.Event()
        threading.Thread(target=connections.hold_open, args=(db, self._keeper_stop), daemon=True,
                         name="states-db-keeper").start()
        weakref.finalize(self, self._keeper_stop.set)
        self._active: dict[str, _Active] = {}  # running here, or ended with the end still to write
        self._unwritten: dict[str, _Active] = {}  # ended, but the end's write failed: the flusher retries
        self._lock = threading.Lock()
        self._flush_wake = threading.Event()
        self._flusher: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._unchecked_commits = 0  # commits of the writer since the flusher's last checkpoint
        self._persisted_here: list[_Active] = []  # rows written by the open transaction
        self._runners = _Runners()
        self.recover_lost_executions()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on the engine's one writing connection. Its writers queue on a lock of
        their own, woken the moment it is free: on SQLite's lock they would sleep in its busy handler
        (1, 2, 5 ... up to 100 ms a try), and a batch of 500 executions ending together waited
        0.35-1.4 s at p90-p99. One connection also spares each new runner thread opening its own.

        The writer never checkpoints the WAL itself: SQLite's automatic checkpoint runs inside the
        COMMIT that crosses 1,000 pages, which made one execution in thirty end 10-17 ms late (and,
        under this lock, every writer queued behind it). The flusher checkpoints instead (`_checkpoint`)."""
        with self._write_lock:
            if self._writer is None:
                opened = self.db.connect()
                self._writer = opened.__enter__()
                weakref.finalize(self, opened.__exit__, None, None, None)
                self._writer.execute("PRAGMA wal_autocheckpoint=0")
                self._writer.execute(f"PRAGMA journal_size_limit={WAL_KEPT_BYTES}")  # after a peak, shrink
            try:
                with connections.transaction_on(self._writer) as conn:
                    yield conn
                self._unchecked_commits += 1
            except BaseException:
                for active in self._persisted_here:
                    active.persisted = False  # rolled back: its row is still to be written
                raise
            finally:
                self._persisted_here = []

    def close(self) -> None:
        """Release the engine's idle connection (running executions keep running)."""
        self._keeper_stop.set()

    def __enter__(self) -> "StatesEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- starting -------------------------------------------------------------------------------

    def start_execution(self, definition: dict | str, input: Any = None, name: str | None = None,
                        state_machine_name: str = "local") -> str:
        """Start an execution on a worker thread; returns its ARN at once (it is RUNNING by then)."""
        active, existing = self._begin(definition, input, name, state_machine_name, persist_now=True)
        if existing is not None:
            return existing
        self._runners.submit(lambda: self._execute(active))
        return active.run.info.arn

    def start_executions(self, definition: dict | str, inputs: list[Any], state_machine_name: str = "local") -> list[str]:
        """Start one execution per input (generated names) with a single write transaction for all their
        rows: a batch of 500 does not queue 500 writers on the database. Returns the ARNs at once."""
        actives: list[_Active] = []
        try:
            for inp in inputs:
                active, _ = self._begin(definition, inp, None, state_machine_name, persist_now=False, deferred=True)
                actives.append(active)
            with self._transaction() as conn:
                for active in actives:
                    self._persist(conn, active)
        except BaseException:
            with self._lock:
                for active in actives:
                    self._active.pop(active.run.info.arn, None)
            raise
        for active in actives:
            self._ready(active)
            self._runners.submit(lambda active=active: self._execute(active))
        return [a.run.info.arn for a in actives]

    def run_execution(self, definition: dict | str, input: Any = None, name: str | None = None,
                      state_machine_name: str = "local") -> ExecutionRecord:
        """Run an execution to its end on the calling thread; returns its description.

        Its row is written with the first batch of events (within `flush_interval`) or when it
        ends, whichever comes first: a short run costs one transaction.
        """
        active, existing = self._begin(definition, input, name, state_machine_name, persist_now=False)
        if existing is not None:
            return self.wait(existing)
        self._execute(active)
        if active.lost_name:
            raise self._name_taken(active.run.info.arn)
        return active.final or self.describe_execution(active.run.info.arn)

    def _begin(self, definition, input, name, state_machine_name, persist_now: bool,
               deferred: bool = False) -> tuple[_Active | None, str | None]:
        """Register a run. `deferred`: a generated (uuid) name, persisted by the caller, made ready by it."""
        machine = compile_machine(definition)
        name = str(uuid.uuid4()) if name is None else name
        _check_name(name, "execution name")
        _check_name(state_machine_name, "state machine name")
        input_value, input_text = _read_input(input)
        arn = f"arn:aws:states:{self.region}:{self.account_id}:execution:{state_machine_name}:{name}"
        start = self.clock.now()
        info = RunInfo(arn=arn, name=name, state_machine_name=state_machine_name,
                       state_machine_arn=f"arn:aws:states:{self.region}:{self.account_id}:stateMachine:{state_machine_name}",
                       role_arn=self.role_arn, region=self.region, input_value=input_value, start_time=start)
        history = History(limit=self.history_limit)
        history.on_pressure = self._flush_wake.set
        history.append("ExecutionStarted", 0, start, "executionStartedEventDetails",
                       {"input": input_text, "inputDetails": {"truncated": False}, "roleArn": self.role_arn})
        active = _Active(machine, input_text)
        active.run = Run(info, self.clock, self.resolver, history,
                         lambda status, error, cause: self._close(active, status, None, error, cause))
        with self._lock:
            if arn in self._active:
                other = self._active[arn]
                existing = other if (other.input_text == input_text and other.machine.text == machine.text) else None
                if existing is None:
                    raise self._name_taken(arn)
                return None, arn
            self._active[arn] = active
        if deferred:
            return active, None
        try:
            if persist_now:
                with self._transaction() as conn:
                    self._persist(conn, active)
            else:
                conn = connections.connection(self.db)
                if store.get_execution(conn, arn) is not None:
                    raise sqlite3.IntegrityError(arn)
        except sqlite3.IntegrityError:
            with self._lock:
                self._active.pop(arn, None)
            return None, self._existing(arn, input_text, machine.text)
        except BaseException:
            with self._lock:
                self._active.pop(arn, None)
            raise
        self._ready(active)
        return active, None

    def _ready(self, active: _Active) -> None:
        machine = active.machine
        active.ready = True
        if machine.timeout_seconds:
            active.cancel_timeout = self.clock.call_later(
                machine.timeout_seconds,
                lambda: self._time_out(
                    active, f"The execution ran longer than its TimeoutSeconds ({machine.timeout_seconds} s)."),
            )
        self._ensure_flusher()

    @staticmethod
    def _time_out(active: _Active, cause: str) -> None:
        try:
            active.run.halt("TIMED_OUT", errors.TIMEOUT, cause)
        except sqlite3.Error:
            pass  # the end is kept, and the flusher writes it (_write_end)

    def _persist(self, conn: sqlite3.Connection, active: _Active, status: str = "RUNNING") -> None:
        """Write the execution's row (IntegrityError if the name is taken)."""
        info = active.run.info
        store.insert_execution(conn, {
            "arn": info.arn, "name": info.name, "state_machine_name": info.state_machine_name,
            "definition": active.machine.text, "input": active.input_text, "start_date": info.start_time,
            "runner_pid": self.runner.pid, "runner_start": self.runner.start,
        })
        active.persisted = True
        self._persisted_here.append(active)

    def _existing(self, arn: str, input_text: str, definition_text: str) -> str:
        """StartExecution with the name of a running execution and the same input is idempotent."""
        conn = connections.connection(self.db)
        row = store.get_execution(conn, arn)
        if (row is not None and row["status"] == "RUNNING" and row["input"] == input_text
                and row["definition"] == definition_text):
            return arn
        raise self._name_taken(arn)

    @staticmethod
    def _name_taken(arn: str) -> errors.ExecutionAlreadyExists:
        return errors.ExecutionAlreadyExists(
            f"An execution named '{arn.rsplit(':', 1)[1]}' already exists for state machine "
            f"'{arn.split(':')[-2]}'; choose another name."
        )

    # --- running ----------------------------------------------------------------------------------

    def _execute(self, active: _Active) -> None:
        run = active.run
        try:
            try:
                output = run_block(active.machine.root, run.info.input_value, Scope(run, run.stopper, 0))
                end: tuple | None = ("SUCCEEDED", serialize(output, "execution output"), None, None)
            except errors.StatesFailure as failure:
                end = ("FAILED", None, failure.error, failure.cause)
            except errors.ExecutionHalted:
                end = None  # stopped, timed out or out of history: the halt wrote (or keeps) that end
            except Exception as e:  # never leave an execution RUNNING because of an engine bug
                end = ("FAILED", None, errors.RUNTIME, f"The local states engine failed: {e!r}")
            if end is not None:
                self._close(active, *end)
        except sqlite3.Error:
            pass  # not written: kept for the flusher when the failure may pass (_write_end)
        finally:
            if active.cancel_timeout is not None:
                active.cancel_timeout()
            if run.halted is None:
                run.halted = "DONE"
            run.stopper.set()
            # The flush lock first: a stop's or a timeout's end being written on another thread
            # right now is written, or registered as unwritten, before this looks.
            with active.flush_lock, self._lock:
                run.done.set()  # under the lock: a retry of the end that succeeds now sees it
                unwritten = run.info.arn in self._unwritten
                if not unwritten:  # an unwritten end stays until the flusher writes it
                    self._active.pop(run.info.arn, None)
            if not unwritten:
                active.settled.set()

    def _close(self, active: _Active, status: str, output: str | None, error: str | None, cause: str | None) -> bool:
        """Write the terminal event and the final status with whatever events are still pending. A write
        that fails raises, and the end is kept for the flusher to write (`_retry_ends`)."""
        run = active.run
        etype, key = _TERMINAL_EVENT[status]
        if status == "SUCCEEDED":
            details = {"output": output, "outputDetails": {"truncated": False}}
        else:
            details = {k: v for k, v in (("error", error), ("cause", cause)) if v is not None}
        stop = self.clock.now()
        with active.flush_lock:
            try:
                run.history.append(etype, None, stop, key, details, terminal=True)
            except errors.ExecutionHalted:
                return False  # someone else closed it first
            active.end = _End(status, output, error, cause, stop)
            return self._write_end(active)

    def _write_end(self, active: _Active) -> bool:
        """The end's transaction (the caller holds the flush lock). True once written; False when a stop
        from elsewhere or another runner's name overrules it. A write that failed in a way that may pass
        (a full disk, a lock held too long) gives the events back, leaves the end to the flusher and
        raises; any other failure raises and gives up (the execution ends FAILED when this process does)."""
        run, end = active.run, active.end
        arn = run.info.arn
        events = run.history.take()
        try:
            with self._transaction() as conn:
                if not active.persisted:
                    self._persist(conn, active)
                if not store.close_execution(conn, arn, end.status, end.output, end.error, end.cause, end.stop):
                    raise _StoppedElsewhere()  # its ExecutionAborted stands; roll back ours
                store.write_events(conn, arn, events)
        except _StoppedElsewhere:
            written = False
        except sqlite3.IntegrityError:
            active.lost_name = True
            written = False
        except sqlite3.OperationalError as exc:
            run.history.give_back(events)
            active.write_error = str(exc)
            if active.unwritten_since is None:
                active.unwritten_since = time.monotonic()
            with self._lock:
                self._unwritten[arn] = active
            self._ensure_flusher()
            raise
        except sqlite3.Error:
            self._settle_end(active)
            raise
        else:
            info = run.info
            active.final = ExecutionRecord(
                arn=arn, name=info.name, state_machine_name=info.state_machine_name, status=end.status,
                input=active.input_text, output=end.output, error=end.error, cause=end.cause,
                start_date=to_datetime(info.start_time), stop_date=to_datetime(end.stop),
            )
            written = True
        self._settle_end(active)
        return written

    def _settle_end(self, active: _Active) -> None:
        """An unwritten end is done with (written, overruled or given up): once the runner thread has
        ended too, nothing keeps the execution here any more."""
        arn = active.run.info.arn
        if arn not in self._unwritten:  # exact without the lock: only the flush lock's holder adds it
            return
        with self._lock:
            self._unwritten.pop(arn, None)
            if active.run.done.is_set():
                self._active.pop(arn, None)
                active.settled.set()

    def _retry_ends(self) -> None:
        """Write the ends whose write failed (the flusher's rounds): a full disk that has room again."""
        with self._lock:
            pending = list(self._unwritten.values())
        for active in pending:
            with active.flush_lock:
                if active.run.info.arn not in self._unwritten:
                    continue  # written meanwhile
                try:
                    self._write_end(active)
                except sqlite3.Error:
                    pass  # still failing: the next round tries again

    # --- flushing ---------------------------------------------------------------------------------

    def _ensure_flusher(self) -> None:
        with self._lock:
            if self._flusher is None or not self._flusher.is_alive():
                self._flusher = threading.Thread(target=self._flush_loop, daemon=True, name="states-flusher")
                self._flusher.start()

    def _flush_loop(self) -> None:
        idle_since = time.monotonic()
        while True:
            self._flush_wake.wait(self.flush_interval)
            self._flush_wake.clear()
            self._retry_ends()
            self.flush()
            self._checkpoint()
            with self._lock:
                busy = bool(self._active or self._unwritten)
                if not busy and time.monotonic() - idle_since > 5:
                    self._flusher = None
                    return
            if busy:
                idle_since = time.monotonic()

    def flush(self) -> None:
        """Write every pending event of this engine's running executions now: those whose rows are
        written in one transaction together (a batch of 500 was 500 transactions a round), the rest
        one by one (their row goes first, and a taken name shows there)."""
        with self._lock:
            actives = [a for a in self._active.values() if a.ready]
        persisted = [a for a in actives if a.persisted]
        if persisted:
            try:
                self._flush_persisted(persisted)
            except sqlite3.Error:
                pass  # the next round, or the final close, writes them
        for active in actives:
            if not active.persisted:
                try:
                    self._flush_first(active)
                except sqlite3.Error:
                    pass

    def _checkpoint(self) -> None:
        """Copy what the engine committed since the last round from the WAL into the database, off the
        executions' path (the writer has no automatic checkpoint). PASSIVE: writers go on meanwhile, and
        frames a reader still needs are left for the next round. The loop runs rounds for a while after
        the last execution ends, so the WAL does not keep the engine's last writes. (A stop or a lost
        runner's end written while no execution runs waits for the next round, or for any other
        connection's checkpoint: one event each.)"""
        if not self._unchecked_commits:
            return
        self._unchecked_commits = 0  # a commit racing this reset is only checkpointed a round later
        conn = connections.connection(self.db)
        try:
            busy, log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not busy and log > WAL_REWIND_FRAMES:
                # Writers went on during that pass, so when the next one begins the WAL is not all
                # copied, and SQLite starts the WAL over only then: under a steady load it would grow
                # for as long as executions run (about 180 MB in a test). A second pass with the engine's
                # writers held copies the few frames they added; the next write starts the WAL over.
                with self._write_lock:
                    busy, log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:  # a full disk, say
            busy, log, copied = 1, 0, 0
        if busy or copied < log:
            self._unchecked_commits += 1  # not all copied (a reader's snapshot, another checkpoint): next round

    def _flush_persisted(self, actives: list[_Active]) -> None:
        held: list[_Active] = []
        taken: list[tuple[_Active, list[tuple]]] = []
        try:
            for active in actives:
                # One closing right now writes its own events; waiting for it here could deadlock.
                if not active.flush_lock.acquire(blocking=False):
                    continue
                held.append(active)
                if not active.run.history.closed:
                    taken.append((active, active.run.history.take()))
            if not taken:
                return
            arns = [a.run.info.arn for a, _ in taken]
            if any(events for _, events in taken):
                # A stop from another process shows as a status other than RUNNING, read in the same
                # transaction as the write: its ExecutionAborted stands, and our events are dropped.
                with self._transaction() as conn:
                    running = store.running_among(conn, arns)
                    store.write_events_of(conn, [(a.run.info.arn, events) for a, events in taken
                                                 if events and a.run.info.arn in running])
            else:  # nothing to write: a read is enough to see a stop from elsewhere
                running = store.running_among(connections.connection(self.db), arns)
        except BaseException:
            for active, events in taken:
                active.run.history.give_back(events)  # rolled back: written by the next round or the close
            raise
        finally:
            for active in held:
                active.flush_lock.release()
        for active, _ in taken:
            if active.run.info.arn not in running:
                self._stopped_elsewhere(active)

    def _flush_first(self, active: _Active) -> None:
        """An execution whose row is not written yet (run_execution's): its row and its events in one
        transaction, where a name another runner took shows."""
        run = active.run
        with active.flush_lock:
            if run.history.closed or active.persisted:
                return  # closed meanwhile, or written by another round: nothing of ours to do here
            events = run.history.take()
            try:
                with self._transaction() as conn:
                    self._persist(conn, active)
                    store.write_events(conn, run.info.arn, events)
                return
            except sqlite3.IntegrityError:
                active.lost_name = True  # another runner wrote this name first
            except sqlite3.Error:
                run.history.give_back(events)
                raise
        self._stopped_elsewhere(active)

    @staticmethod
    def _stopped_elsewhere(active: _Active) -> None:
        """Stopped by another process (its ExecutionAborted stands): end our threads quietly."""
        run = active.run
        with run.history.lock:
            run.history.closed = True
        run.halted = run.halted or "STOPPED"
        run.stopper.set()

    # --- reading -----------------------------------------------------------------------------------

    def describe_execution(self, arn: str) -> ExecutionRecord:
        conn = connections.connection(self.db)
        row = store.get_execution(conn, arn)
        if row is None:
            with self._lock:
                active = self._active.get(arn)
            if active is not None and active.final is None:  # running, row not written yet
                info = active.run.info
                return ExecutionRecord(info.arn, info.name, info.state_machine_name, "RUNNING", active.input_text,
                                       None, None, None, to_datetime(info.start_time), None)
            if active is not None and active.final is not None:
                return active.final
            raise errors.ExecutionDoesNotExist(f"Execution does not exist: '{arn}'.")
        if row["status"] == "RUNNING" and self._lost(row["runner_pid"], row["runner_start"]):
            self._mark_lost(arn, row["runner_pid"])
            return self.describe_execution(arn)
        return _record(row)

    def execution_definition(self, arn: str) -> str:
        """The definition text the execution runs (or ran), as it was when it started."""
        row = store.get_execution(connections.connection(self.db), arn)
        if row is not None:
            return row["definition"]
        with self._lock:
            active = self._active.get(arn)
        if active is None:
            raise errors.ExecutionDoesNotExist(f"Execution does not exist: '{arn}'.")
        return active.machine.text  # running, row not written yet

    def list_executions(self, state_machine_name: str | None = None, status: str | None = None, *,
                        state_machine_names: Iterable[str] | None = None, limit: int | None = None) -> list[ExecutionRecord]:
        """Executions newest first, optionally of one state machine (or of several: `state_machine_names`)
        and/or in one status, the newest `limit` of them (the database reads no more)."""
        if status is not None and status not in STATUSES:
            raise errors.ValidationError(f"Status filter must be one of {', '.join(STATUSES)}, got '{status}'.")
        self._read_ready()
        names = [state_machine_name] if state_machine_name is not None else state_machine_names
        if state_machine_name is not None and state_machine_names is not None:
            names = [state_machine_name] if state_machine_name in set(state_machine_names) else []
        rows = store.list_executions(connections.connection(self.db), names, status, limit)
        return [_record(r) for r in rows]

    def count_executions(self, state_machine_names: Iterable[str] | None = None) -> dict[tuple[str, str | None], int]:
        """{(status, error): how many} of the named state machines' executions (None: all), counted by SQLite."""
        self._read_ready()
        return store.count_executions(connections.connection(self.db), state_machine_names)

    def arns_named(self, name: str) -> list[str]:
        """The ARNs of the executions of that name, newest first."""
        self._read_ready()
        return store.arns_named(connections.connection(self.db), name)

    def _read_ready(self) -> None:
        """Before a listing: lost executions ended, and every pending event and row written."""
        self.recover_lost_executions()
        self.flush()

    def execution_machine_names(self) -> list[str]:
        """The state machine names executions are kept under (their machines may be gone since)."""
        conn = connections.connection(self.db)
        return [r[0] for r in conn.execute("SELECT DISTINCT state_machine_name FROM sf_executions ORDER BY 1")]

    def get_execution_history(self, arn: str, reverse_order: bool = False) -> list[dict]:
        """Events in AWS's shape: id, previousEventId, type, timestamp and the ...EventDetails."""
        with self._lock:
            active = self._active.get(arn)
        if active is not None:
            with active.flush_lock:
                conn = connections.connection(self.db)
                rows = store.get_events(conn, arn)
                with active.run.history.lock:
                    rows += list(active.run.history.pending)
        else:
            conn = connections.connection(self.db)
            if store.get_execution(conn, arn) is None:
                raise errors.ExecutionDoesNotExist(f"Execution does not exist: '{arn}'.")
            rows = store.get_events(conn, arn)
        events = []
        for eid, prev, etype, ts, key, details in rows:
            event = {"timestamp": to_datetime(ts), "type": etype, "id": eid, "previousEventId": prev}
            if key is not None:
                event[key] = details if details is not None else {}
            events.append(event)
        return events[::-1] if reverse_order else events

    def wait(self, arn: str, timeout: float | None = None) -> ExecutionRecord:
        """Block until the execution ends or `timeout` seconds pass; returns its description."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            active = self._active.get(arn)
        if active is not None:
            while True:
                left = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
                if active.settled.wait(max(0.0, left)) or (deadline is not None and left <= 0):
                    break
                self._raise_if_unrecorded(active)
            if active.settled.is_set() and active.final is not None:
                return active.final  # what was just written: no read back
            return self.describe_execution(arn)
        while True:
            record = self.describe_execution(arn)
            if record.done or (deadline is not None and time.monotonic() >= deadline):
                return record
            pause = 0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
            time.sleep(pause)

    def _raise_if_unrecorded(self, active: _Active) -> None:
        """A waiter's end: the execution ended, but its end has failed to be written for a while."""
        since = active.unwritten_since
        if since is None or active.run.info.arn not in self._unwritten \
                or time.monotonic() - since < UNRECORDED_GRACE_SECONDS:
            return
        status = active.end.status if active.end else "its run"
        raise errors.ExecutionNotRecorded(
            f"Execution {active.run.info.name} ended {status} but could not be recorded for "
            f"{UNRECORDED_GRACE_SECONDS:.0f} s ({active.write_error}): free disk space for the workspace (or end "
            "what holds its database locked); this process keeps trying while it runs.")

    # --- deleting (local housekeeping; Step Functions expires executions by itself) -----------------

    def delete_executions(self, state_machine_name: str) -> int:
        """Stop the machine's running executions, then remove all of them and their history."""
        for record in self.list_executions(state_machine_name, "RUNNING"):
            self.stop_execution(record.arn, "States.Aborted", "Deleted by a workspace cleanup.")
        self.flush()
        with self.db.transaction() as conn:
            return store.delete_executions(conn, state_machine_name)

    # --- stopping ----------------------------------------------------------------------------------

    def stop_execution(self, arn: str, error: str | None = None, cause: str | None = None) -> ExecutionRecord:
        """Stop a running execution: it ends ABORTED at once, and its Waits and loops wake up."""
        with self._lock:
            active = self._active.get(arn)
        if active is not None:
            halted = active.run.halt("ABORTED", error, cause)
            if arn in self._unwritten:
                # It ended here (before this stop, or by it) and that end is not written yet: it
                # stands; write it now.
                with active.flush_lock:
                    if arn in self._unwritten:
                        self._write_end(active)
                return self.describe_execution(arn)
            if halted:
                return self.describe_execution(arn)
        with self._transaction() as conn:
            status = store.status_of(conn, arn)
            if status is None:
                raise errors.ExecutionDoesNotExist(f"Execution does not exist: '{arn}'.")
            if status == "RUNNING":
                self._append_terminal(conn, arn, "ABORTED", error, cause)
        return self.describe_execution(arn)

    def _append_terminal(self, conn: sqlite3.Connection, arn: str, status: str, error: str | None, cause: str | None) -> None:
        """End a RUNNING execution from outside its runner (a stop from elsewhere, a lost runner). One whose
        runner wrote no event yet (its first flush had not come) gets its ExecutionStarted first, as the
        runner would have written it: a history always begins with that event."""
        events = []
        last = store.last_event(conn, arn)
        if last == 0:
            row = store.get_execution(conn, arn)
            events.append((1, 0, "ExecutionStarted", row["start_date"], "executionStartedEventDetails",
                           {"input": row["input"], "inputDetails": {"truncated": False}, "roleArn": self.role_arn}))
            last = 1
        etype, key = _TERMINAL_EVENT[status]
        details = {k: v for k, v in (("error", error), ("cause", cause)) if v is not None}
        now = self.clock.now()
        events.append((last + 1, last, etype, now, key, details))
        store.write_events(conn, arn, events)
        store.close_execution(conn, arn, status, None, error, cause, now)

    # --- runners that died -------------------------------------------------------------------------

    def _lost(self, pid: int | None, start: str | None) -> bool:
        if pid is None:
            return True
        identity = RunnerIdentity(pid, start or "")
        if identity == self.runner:
            return False
        return not identity.alive()

    def _mark_lost(self, arn: str, pid: int | None) -> None:
        with self._transaction() as conn:
            if store.status_of(conn, arn) == "RUNNING":
                self._append_terminal(
                    conn, arn, "FAILED", errors.RUNTIME,
                    f"The runner of this execution (process {pid}) is gone: it stopped before the execution "
                    "ended, so the execution was lost. Start it again.",
                )

    def recover_lost_executions(self) -> list[str]:
        """End as FAILED (States.Runtime) every RUNNING execution whose runner process is gone."""
        conn = connections.connection(self.db)
        rows = store.running(conn)
        lost = [(r["arn"], r["runner_pid"]) for r in rows if self._lost(r["runner_pid"], r["runner_start"])]
        for arn, pid in lost:
            self._mark_lost(arn, pid)
        return [arn for arn, _ in lost]


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= 80 or _BAD_NAME.search(name):
        raise errors.InvalidName(
            f"Invalid {what} {name!r}: use 1 to 80 characters without spaces, wildcards, brackets or "
            "any of \" # % \\ ^ | ~ ` $ & , ; : /."
        )


def _read_input(value: Any) -> tuple[Any, str]:
    if value is None:
        return {}, "{}"
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    try:
        if isinstance(value, str):
            text, parsed = value, json.loads(value, parse_constant=_no_constants)
        else:
            text = dumps(value)
            parsed = json.loads(text)
    except RecursionError:
        raise errors.InvalidExecutionInput("The execution input is nested too deeply.") from None
    except (TypeError, ValueError) as e:
        raise errors.InvalidExecutionInput(f"The execution input is not valid JSON: {e}.") from None
    if utf8_size(text) > PAYLOAD_LIMIT_BYTES:
        raise errors.InvalidExecutionInput(
            f"The execution input is larger than {PAYLOAD_LIMIT_BYTES:,} bytes (Step Functions' payload quota)."
        )
    return parsed, text


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _record(row: sqlite3.Row) -> ExecutionRecord:
    return ExecutionRecord(
        arn=row["arn"], name=row["name"], state_machine_name=row["state_machine_name"], status=row["status"],
        input=row["input"], output=row["output"], error=row["error"], cause=row["cause"],
        start_date=to_datetime(row["start_date"]), stop_date=to_datetime(row["stop_date"]),
    )
