"""What one execution needs while it runs: its clock, its history, its threads of control.

A `Run` is one execution in flight. A `Scope` is one thread of control inside it: the top level,
a Parallel branch or a Map iteration. Each scope remembers its last event (for previousEventId)
and listens to a `Stopper`, so stopping the execution, timing it out or failing a sibling branch
wakes every Wait and ends every loop without polling.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import errors
from .values import iso_millis

HISTORY_LIMIT = 25000  # events per execution, as on AWS


# --------------------------------------------------------------------------------------------
# Clocks
# --------------------------------------------------------------------------------------------


class Clock:
    """Wall-clock time and interruptible waiting. Tests pass a FakeClock to make Waits instant."""

    def now(self) -> float:
        return time.time()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to `seconds` for work happening elsewhere; True as soon as `event` is set."""
        if seconds <= 0:
            return event.is_set()
        return event.wait(seconds)

    def sleep(self, event: threading.Event, seconds: float) -> bool:
        """Sleep `seconds` (a Wait state, a retry interval); True if `event` cut it short."""
        return self.wait(event, seconds)

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
        """Run `fn` after `seconds` (the machine's TimeoutSeconds); returns a cancel function."""
        timer = threading.Timer(seconds, fn)
        timer.daemon = True
        timer.start()
        return timer.cancel


class FakeClock(Clock):
    """Virtual time: a sleep moves the clock forward at once instead of sleeping.

    Waiting for a task that does not finish (a task timeout) lets real time pass for at most
    `real_grace` seconds, then jumps. `sleeps` records every sleep, for asserting retry intervals.
    """

    def __init__(self, start: float = 1_700_000_000.0, real_grace: float = 0.05):
        self._now = start
        self._lock = threading.Lock()
        self._timers: list[tuple[float, Callable[[], None], list[bool]]] = []
        self.real_grace = real_grace
        self.sleeps: list[float] = []

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            due = [t for t in self._timers if t[0] <= self._now and not t[2][0]]
            self._timers = [t for t in self._timers if t not in due]
        for _, fn, _cancelled in due:
            fn()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if seconds <= 0:
            return event.is_set()
        if event.wait(min(seconds, self.real_grace) if self.real_grace else 0):
            return True
        self.advance(seconds)
        return event.is_set()

    def sleep(self, event: threading.Event, seconds: float) -> bool:
        if seconds <= 0:
            return event.is_set()
        with self._lock:
            self.sleeps.append(seconds)
        if event.is_set():
            return True
        self.advance(seconds)
        return event.is_set()

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
        flag = [False]
        with self._lock:
            self._timers.append((self._now + seconds, fn, flag))

        def cancel() -> None:
            flag[0] = True

        return cancel


# --------------------------------------------------------------------------------------------
# Stopping
# --------------------------------------------------------------------------------------------


class Stopper:
    """A stop signal that reaches every child: set the run's, and every branch stops too."""

    __slots__ = ("event", "_children", "_callbacks", "_lock")

    def __init__(self, parent: "Stopper | None" = None):
        self.event = threading.Event()
        self._children: list[Stopper] = []
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        if parent is not None:
            parent._adopt(self)

    def _adopt(self, child: "Stopper") -> None:
        with self._lock:
            if not self.event.is_set():
                self._children.append(child)
                return
        child.set()

    def child(self) -> "Stopper":
        return Stopper(self)

    def on_set(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if not self.event.is_set():
                self._callbacks.append(fn)
                return
        fn()

    def set(self) -> None:
        with self._lock:
            if self.event.is_set():
                return
            self.event.set()
            children, callbacks = self._children, self._callbacks
            self._children, self._callbacks = [], []
        for c in children:
            c.set()
        for fn in callbacks:
            fn()

    def is_set(self) -> bool:
        return self.event.is_set()


# --------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------


class HistoryLimitReached(Exception):
    pass


class History:
    """Events of one execution: ids handed out in order, buffered until the engine writes them."""

    def __init__(self, next_id: int = 1, limit: int = HISTORY_LIMIT):
        self.lock = threading.Lock()
        self.next_id = next_id
        self.limit = limit
        self.pending: list[tuple] = []  # (id, previous_id, type, timestamp, details_key, details)
        self.pending_bytes = 0
        self.closed = False
        self.on_pressure: Callable[[], None] | None = None  # asks the engine to write soon

    def append(self, etype: str, previous: int | None, ts: float, key: str | None, details: dict | None,
               *, terminal: bool = False, size_hint: int = 0) -> int:
        """Add an event; `previous=None` chains it to the latest event."""
        with self.lock:
            if self.closed:
                raise errors.ExecutionHalted()
            eid = self.next_id
            if not terminal and eid >= self.limit:
                raise HistoryLimitReached()
            self.next_id = eid + 1
            self.pending.append((eid, eid - 1 if previous is None else previous, etype, ts, key, details))
            self.pending_bytes += size_hint + 100
            if terminal:
                self.closed = True
            pressure = len(self.pending) >= 5000 or self.pending_bytes >= 8 * 1024 * 1024
        if pressure and self.on_pressure is not None:
            self.on_pressure()
        return eid

    def take(self) -> list[tuple]:
        with self.lock:
            out, self.pending, self.pending_bytes = self.pending, [], 0
            return out

    def give_back(self, events: list[tuple]) -> None:
        """Events taken for a write that was rolled back: pending again, ahead of any newer ones."""
        with self.lock:
            self.pending[:0] = events


# --------------------------------------------------------------------------------------------
# Task context handed to resolvers
# --------------------------------------------------------------------------------------------


@dataclass
class TaskContext:
    """What a resolver may want to know about the task it runs (besides its parameters)."""

    execution_arn: str
    execution_name: str
    state_machine_name: str
    state_name: str
    resource: str
    retry_count: int
    timeout_seconds: float | None
    heartbeat_seconds: float | None
    credentials: Any
    context_object: dict
    cancelled: threading.Event = field(default_factory=threading.Event)
    _last_beat: list = field(default_factory=lambda: [time.monotonic()])

    def heartbeat(self) -> None:
        """Call from a long task declared with HeartbeatSeconds, like SendTaskHeartbeat."""
        self._last_beat[0] = time.monotonic()

    @property
    def last_heartbeat(self) -> float:
        return self._last_beat[0]


# --------------------------------------------------------------------------------------------
# A run and its scopes
# --------------------------------------------------------------------------------------------


@dataclass
class RunInfo:
    arn: str
    name: str
    state_machine_name: str
    state_machine_arn: str
    role_arn: str
    region: str
    input_value: Any
    start_time: float


class Run:
    """One execution in flight (engine-side bookkeeping lives in the engine)."""

    def __init__(self, info: RunInfo, clock: Clock, resolver: Callable | None, history: History,
                 on_halt: Callable[[str, str, str | None], None]):
        self.info = info
        self.clock = clock
        self.resolver = resolver
        self.history = history
        self.stopper = Stopper()
        self._on_halt = on_halt
        self._halt_lock = threading.Lock()
        self.halted: str | None = None
        self.done = threading.Event()
        self._context_base = {
            "Execution": {
                "Id": info.arn, "Input": info.input_value, "Name": info.name,
                "RoleArn": info.role_arn, "StartTime": iso_millis(info.start_time), "RedriveCount": 0,
            },
            "StateMachine": {"Id": info.state_machine_arn, "Name": info.state_machine_name},
        }

    def halt(self, status: str, error: str, cause: str | None) -> bool:
        """End the execution now (stopped, timed out, out of history): first caller wins."""
        with self._halt_lock:
            if self.halted is not None:
                return False
            self.halted = status
        try:
            self._on_halt(status, error, cause)
        finally:
            self.stopper.set()  # even if the end could not be written, the execution's threads stop
        return True

    def context_object(self, state_name: str, entered: float, retry_count: int) -> dict:
        ctx = dict(self._context_base)
        ctx["State"] = {"EnteredTime": iso_millis(entered), "Name": state_name, "RetryCount": retry_count}
        return ctx


class Scope:
    """One thread of control inside a run: its stop signal and its last event id."""

    __slots__ = ("run", "stopper", "last", "history", "entered", "follow")

    def __init__(self, run: Run, stopper: Stopper, last: int, history: History | None = None):
        self.run = run
        self.stopper = stopper
        self.last = last
        self.entered = 0  # the id of the ...StateEntered event of the state this scope runs now
        self.follow = 0  # when set: where the next job run after this one on the same thread points back to
        # A child execution of a DISTRIBUTED Map keeps its own history, apart from the parent's.
        self.history = history or run.history

    def fork(self, stopper: Stopper, history: History | None = None) -> "Scope":
        if history is not None:
            return Scope(self.run, stopper, 0, history)
        return Scope(self.run, stopper, self.last, self.history)

    def emit(self, etype: str, key: str | None = None, details: dict | None = None, size_hint: int = 0,
             *, force: bool = False) -> int:
        """Record an event; a stopped scope records nothing more (unless `force`, for ...Aborted)."""
        if not force and self.stopper.event.is_set():
            raise errors.ExecutionHalted()
        run = self.run
        try:
            eid = self.history.append(etype, self.last, run.clock.now(), key, details, size_hint=size_hint)
        except HistoryLimitReached:
            cause = f"The execution reached the maximum number of history events ({self.history.limit:,})."
            if self.history is not run.history:
                raise errors.StatesFailure(errors.RUNTIME, cause) from None
            run.halt("FAILED", errors.RUNTIME, cause)
            raise errors.ExecutionHalted() from None
        self.last = eid
        return eid

    def emit_sibling(self, etype: str, key: str | None = None, details: dict | None = None, *,
                     force: bool = False) -> int:
        """Record an event that the next one does not point back to: it points where this one does, as in
        AWS's histories, where MapStateExited follows MapStateSucceeded (ParallelStateExited likewise) and
        MapStateFailed follows MapIterationFailed with the same previousEventId."""
        before = self.last
        eid = self.emit(etype, key, details, force=force)
        self.last = before
        return eid

    def check(self) -> None:
        if self.stopper.event.is_set():
            raise errors.ExecutionHalted()

    def sleep(self, seconds: float) -> None:
        """Wait, waking at once if the execution (or this branch) is stopped."""
        if seconds > 0 and self.run.clock.sleep(self.stopper.event, seconds):
            raise errors.ExecutionHalted()
        self.check()
