"""Runs the lambdas/ handlers with AWS Lambda's invoke, error, timeout and log semantics.

Each function runs in warm worker processes, Lambda's execution environments: a worker imports
the handler once (the init phase), with its own environment variables and its own sys.path
(the code folder first, as /var/task on AWS; the project itself is not importable), then serves
invocations fed to it over a pipe. A busy function gets more workers, up to its cap; a timeout
kills the worker and its process group (Lambda destroys the environment), and the next
invocation gets a fresh one. Nothing is spawned per invocation, so a warm invoke costs a pipe
round trip.

What a caller sees follows Lambda's Invoke: status 200 even when the function fails, a
`function_error` of "Unhandled" with the payload `{"errorMessage", "errorType", "requestId",
"stackTrace"}`, a timeout as `{"errorMessage": "<time> <id> Task timed out after 3.00 seconds"}`
with no errorType, and the invocation's log (START, the handler's prints and logging lines, END,
REPORT) in `log_result` as plain text (AWS sends its last 4 KB base64-encoded: `log_tail_base64()`).

Workers never hold real credentials: their environment is built from scratch (PATH and locale
only are inherited), with obviously fake keys, the function's variables, Lambda's reserved
variables, and boto3's endpoint variables pointed at the local gateway. Given the workspace
(`direct_route`), a worker answers the gateway's calls itself where it can: the gateway's answer
code runs in the worker behind botocore's before-send hook (direct_route.py), saving the HTTP hop.
"""
from __future__ import annotations

import base64
import importlib
import json
import logging
import math
import os
import re
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from backend.api import ResourceNotFound, ValidationError
from backend.local import LOCAL_ACCOUNT, LOCAL_REGION

REPO_ROOT = Path(__file__).resolve().parents[2]
LAMBDAS_DIR = REPO_ROOT / "lambdas"

DEFAULT_TIMEOUT = 3.0  # seconds, Lambda's default
DEFAULT_MEMORY_MB = 128
DEFAULT_MAX_WORKERS = 4
COLD_SHARE_SECONDS = 0.1  # after a cold function's first start, how long an invocation waits for it to come free
LATEST = "$LATEST"
INIT_TIMEOUT = 10.0  # Lambda's limit on the init phase
MAX_REQUEST_BYTES = 6_291_456  # synchronous Invoke payload limits, as AWS states them
MAX_RESPONSE_BYTES = 6_291_556
LOG_TAIL_BYTES = 4096
WATCHDOG_GRACE_MS = 5000

# Obviously fake: a worker must never see the operator's real credentials.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "ASIALOCALSCONESFAKE0",
    "AWS_SECRET_ACCESS_KEY": "local-fake-secret-not-a-real-key",
    "AWS_SESSION_TOKEN": "local-fake-session-token",
}
_INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SYSTEMROOT")

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_QUALIFIER_RE = re.compile(r"^(\$LATEST|[A-Za-z0-9_-]{1,128})$")
_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:"
    r"(?P<name>[^:]+)(?::(?P<qualifier>[^:]+))?$"
)
_PARTIAL_ARN_RE = re.compile(r"^(?P<account>\d{12}):function:(?P<name>[^:]+)(?::(?P<qualifier>[^:]+))?$")
_HANDLER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


class FunctionNotFound(ResourceNotFound):
    code = "ResourceNotFoundException"


class InvalidFunctionConfig(ValidationError):
    code = "InvalidParameterValueException"


class RequestTooLarge(ValidationError):
    code = "RequestTooLargeException"


class InvalidRequestContent(ValidationError):
    code = "InvalidRequestContentException"


class RuntimeClosed(ValidationError):
    code = "ServiceException"


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionConfig:
    """What CreateFunction would hold: a name, a handler "module.function", limits, variables."""

    name: str
    handler: str
    code_dir: Path = LAMBDAS_DIR
    timeout: float = DEFAULT_TIMEOUT
    memory_mb: int = DEFAULT_MEMORY_MB
    environment: Mapping[str, str] = field(default_factory=dict)
    max_workers: int = DEFAULT_MAX_WORKERS

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name or ""):
            raise InvalidFunctionConfig(f"Function name {self.name!r} is not valid: use 1-64 letters, digits, '-' or '_'.")
        if not _HANDLER_RE.fullmatch(self.handler or ""):
            raise InvalidFunctionConfig(f"Handler {self.handler!r} is not valid: write it as 'module.function'.")
        if not (isinstance(self.timeout, (int, float)) and 0 < self.timeout <= 900):
            raise InvalidFunctionConfig(f"Timeout {self.timeout!r} is not valid: use seconds between 0 and 900.")
        if not (isinstance(self.memory_mb, int) and 128 <= self.memory_mb <= 10240):
            raise InvalidFunctionConfig(f"Memory size {self.memory_mb!r} MB is not valid: use 128 to 10240.")
        if not (isinstance(self.max_workers, int) and self.max_workers >= 1):
            raise InvalidFunctionConfig(f"max_workers {self.max_workers!r} is not valid: use 1 or more.")
        bad = [k for k, v in self.environment.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise InvalidFunctionConfig(f"Environment variables must be strings; fix {bad[0]!r}.")
        object.__setattr__(self, "code_dir", Path(self.code_dir).resolve())
        if not self.code_dir.is_dir():
            raise InvalidFunctionConfig(f"Code folder {self.code_dir} of function {self.name} does not exist.")
        object.__setattr__(self, "environment", dict(self.environment))

    def arn(self, region: str = LOCAL_REGION, account: str = LOCAL_ACCOUNT) -> str:
        return f"arn:aws:lambda:{region}:{account}:function:{self.name}"


@dataclass(frozen=True)
class InvokeResult:
    """One Invoke answer, as the Lambda API gives it."""

    status_code: int
    payload: Any  # the function's result, or its error object when function_error is set
    function_error: str | None  # "Unhandled" when the function failed, else None
    log_result: str  # the invocation's whole log, plain text
    executed_version: str
    request_id: str
    duration_ms: float
    payload_bytes: int = 0  # size of the JSON payload as Lambda would send it

    @property
    def error_type(self) -> str | None:
        if self.function_error and isinstance(self.payload, dict):
            return self.payload.get("errorType")
        return None

    @property
    def timed_out(self) -> bool:
        return bool(
            self.function_error and isinstance(self.payload, dict) and "errorType" not in self.payload
            and "Task timed out after" in str(self.payload.get("errorMessage", ""))
        )

    def log_tail_base64(self) -> str:
        """The LogResult header of `Invoke(LogType="Tail")`: the log's last 4 KB, base64."""
        return base64.b64encode(self.log_result.encode()[-LOG_TAIL_BYTES:]).decode()


# ---------------------------------------------------------------------------------------------
# The runtime: registry and pools
# ---------------------------------------------------------------------------------------------


class LambdaRuntime:
    """A registry of functions and their warm workers. Close it (or use `with`) to stop them all."""

    def __init__(self, functions: Iterable[FunctionConfig] = (), gateway_url: str | None = None,
                 region: str = LOCAL_REGION, account: str = LOCAL_ACCOUNT,
                 direct_route: tuple[Path, Path] | None = None):
        """`direct_route`: (store root, database) of the workspace behind the gateway; workers then
        answer the gateway's calls themselves where they can (direct_route.py), else over HTTP."""
        self.gateway_url = gateway_url
        self.direct_route = (json.dumps({"gateway_url": gateway_url, "store_root": str(direct_route[0]),
                                         "db_path": str(direct_route[1])})
                             if gateway_url and direct_route else "")
        self.region = region
        self.account = account
        self._pools: dict[str, _Pool] = {}
        self._retired: list[_Pool] = []  # replaced functions whose last invocations still run
        self._lock = threading.Lock()
        self._closed = False
        for config in functions:
            self.register(config)

    # --- registry --------------------------------------------------------------------------

    def register(self, config: FunctionConfig) -> FunctionConfig:
        """Add or replace a function. Replacing retires the old workers, as a configuration update
        does on AWS: invocations in flight finish on the old configuration, new ones start fresh."""
        pool = _Pool(config, self._worker_environment(config), self._arn_of(config), self.direct_route)
        with self._lock:
            if self._closed:
                raise RuntimeClosed("The Lambda runtime is closed; create a new one.")
            old = self._pools.get(config.name)
            self._pools[config.name] = pool
            self._retired = [p for p in self._retired if p.pids()]
            if old is not None:
                self._retired.append(old)
        if old is not None:
            old.close(kill_busy=False)
        return config

    def function(self, name_or_arn: str) -> FunctionConfig:
        return self._pool(name_or_arn).config

    def functions(self) -> list[FunctionConfig]:
        with self._lock:
            return [p.config for p in self._pools.values()]

    def arn(self, name_or_arn: str) -> str:
        return self._pool(name_or_arn).arn

    def _pool(self, name_or_arn: str) -> _Pool:
        return self._pool_named(parse_function(name_or_arn)[0])

    def _pool_named(self, name: str) -> _Pool:
        with self._lock:
            if self._closed:
                raise RuntimeClosed("The Lambda runtime is closed; create a new one.")
            pool = self._pools.get(name)
        if pool is None:
            raise FunctionNotFound(
                f"Function not found: {self._arn_of_name(name)}. Registered functions: "
                f"{', '.join(sorted(self._pools)) or 'none'}."
            )
        return pool

    def _arn_of(self, config: FunctionConfig) -> str:
        return config.arn(self.region, self.account)

    def _arn_of_name(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{name}"

    # --- invoking --------------------------------------------------------------------------

    def invoke(self, function: str, payload: Any = None) -> InvokeResult:
        """Invoke synchronously (RequestResponse). `payload`: a JSON-able value, or JSON bytes."""
        name, qualifier = parse_function(function)
        pool = self._pool_named(name)
        data = _encode_payload(payload)
        invoked_arn = f"{pool.arn}:{qualifier}" if qualifier else pool.arn
        return pool.invoke(data, str(uuid.uuid4()), invoked_arn)

    def warm(self, function: str, count: int = 1) -> None:
        """Start workers ahead of time so the first invocations skip the init phase."""
        self._pool(function).warm(count)

    def prewarm(self, functions: Iterable[str]) -> None:
        """Start the first environment of each cold function among `functions` now, side by side, in the
        background: an execution's first invocations then wait for one start instead of one after another."""
        for function in functions:
            try:
                self._pool(function).start_if_cold()
            except (FunctionNotFound, RuntimeClosed):
                continue

    def worker_pids(self, function: str | None = None) -> list[int]:
        """The process ids of the running workers (of one function, or of all)."""
        if function is not None:
            return sorted(self._pool(function).pids())
        with self._lock:
            pools = list(self._pools.values()) + self._retired
        return sorted(pid for p in pools for pid in p.pids())

    def close(self) -> None:
        """Stop every worker, busy ones included; all are reaped before this returns."""
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()) + self._retired, {}
            self._retired = []
        for pool in pools:
            pool.close()

    def __enter__(self) -> "LambdaRuntime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the worker's environment ----------------------------------------------------------

    def _worker_environment(self, config: FunctionConfig) -> dict[str, str]:
        env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        env.update(config.environment)
        env.update(FAKE_CREDENTIALS)
        env.update({
            # boto3 reads nothing from the operator's files or the instance metadata service
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_LAMBDA_FUNCTION_NAME": config.name,
            "AWS_LAMBDA_FUNCTION_VERSION": LATEST,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}",
            "LAMBDA_TASK_ROOT": str(config.code_dir),
            "_HANDLER": config.handler,
            "TZ": ":UTC",
        })
        if self.gateway_url:
            # The two services the handlers call, and every other one too: a call the gateway
            # does not serve gets its readable 501 instead of leaving the machine.
            for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"):
                env[name] = self.gateway_url
        return env


def function_name(name_or_arn: str) -> str:
    """The function name in a name, `name:qualifier`, a partial ARN or a full ARN."""
    return parse_function(name_or_arn)[0]


def parse_function(name_or_arn: str) -> tuple[str, str | None]:
    """(name, qualifier or None) from a name, `name:qualifier`, a partial ARN or a full ARN.

    A qualifier ($LATEST, a version or an alias) is accepted and runs $LATEST: the local runtime
    keeps one version, and definitions exported from AWS often name `...:function:f:$LATEST`.
    """
    if not isinstance(name_or_arn, str) or not name_or_arn:
        raise FunctionNotFound(f"Function not found: {name_or_arn!r} is not a function name or ARN.")
    match = _ARN_RE.match(name_or_arn) or _PARTIAL_ARN_RE.match(name_or_arn)
    if match:
        name, qualifier = match["name"], match["qualifier"]
    elif name_or_arn.startswith("arn:"):
        raise FunctionNotFound(
            f"Function not found: {name_or_arn!r} is not a Lambda function ARN "
            "(arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>])."
        )
    else:
        name, _, qualifier = name_or_arn.partition(":")
    if not _NAME_RE.fullmatch(name) or (qualifier and not _QUALIFIER_RE.fullmatch(qualifier)):
        raise FunctionNotFound(f"Function not found: {name_or_arn!r} is not a valid function name.")
    return name, qualifier or None


def _encode_payload(payload: Any) -> bytes:
    if isinstance(payload, (bytes, bytearray)):
        data = bytes(payload) or b"{}"
        try:
            json.loads(data)
        except ValueError as exc:
            raise InvalidRequestContent(f"Could not parse request body into json: {exc}.") from None
    else:
        try:
            data = json.dumps({} if payload is None else payload).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidRequestContent(f"The payload is not JSON-serializable: {exc}.") from None
    if len(data) > MAX_REQUEST_BYTES:
        raise RequestTooLarge(
            f"Request must be smaller than {MAX_REQUEST_BYTES} bytes for the InvokeFunction operation "
            f"(this one is {len(data):,} bytes)."
        )
    return data


class _Pool:
    """The warm workers of one function. Idle ones are reused last-in first-out, so the warmest
    serves; a worker is owned by one invoking thread at a time, which alone touches its pipes."""

    def __init__(self, config: FunctionConfig, env: dict[str, str], arn: str, direct_route: str = ""):
        self.config, self.env, self.arn, self.direct_route = config, env, arn, direct_route
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._starting = 0
        self._served = False  # some environment has finished an invocation (the function is warm)
        self._prewarming: set[threading.Thread] = set()  # background starts (start_if_cold), joined by close()
        self._cond = threading.Condition()
        self._closed = False

    def invoke(self, data: bytes, request_id: str, invoked_arn: str) -> InvokeResult:
        worker = self._acquire()
        healthy = False
        try:
            result, healthy = worker.invoke(data, request_id, invoked_arn)
            return result
        finally:
            self._release(worker, healthy)

    def warm(self, count: int) -> None:
        workers = [self._acquire(share=False) for _ in range(min(count, self.config.max_workers))]
        for worker in workers:
            self._release(worker, healthy=worker.start_error is None)

    def pids(self) -> list[int]:
        with self._cond:
            return [w.pid for w in self._all]

    def _acquire(self, share: bool = True) -> _Worker:
        # A cold function whose first environment is starting: wait for that one rather than start more (each
        # start costs a Python process's imports, a few hundred ms on two cores, where a warm invocation takes a
        # millisecond), and then COLD_SHARE_SECONDS at most for it to come free (as long while the busy ones are
        # on their first invocations, the slow ones: first connections). After that, or once the function has
        # served, concurrency starts more environments as Lambda does: a waiting invocation starts one at once
        # (waiting even 5 ms for a busy one kept the pools small and cut a batch's throughput by a third).
        share_until: float | None = None
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeClosed(f"Function {self.config.name} was closed or replaced; invoke it again.")
                if self._idle:
                    return self._idle.pop()
                now = time.monotonic()
                # Warm (or warming on purpose), nothing is shared: as Lambda, a waiting invocation starts one at once.
                if share and not self._served and share_until is None:
                    if self._starting and not self._all:
                        share_until = math.inf  # until the start ends
                    elif self._all:  # all busy on their first invocations
                        share_until = now + COLD_SHARE_SECONDS
                if share_until == math.inf and not self._starting:
                    share_until = now + COLD_SHARE_SECONDS
                if share_until is not None and now < share_until:
                    self._cond.wait(None if share_until == math.inf else share_until - now)
                    continue
                if len(self._all) + self._starting < self.config.max_workers:
                    self._starting += 1
                    break
                self._cond.wait()
        return self._start()

    def start_if_cold(self) -> bool:
        """Start the first environment in the background when none is up or starting (True if so). The start
        is counted at once, so an invocation arriving meanwhile waits for it rather than starting its own."""
        thread = threading.Thread(target=self._start_idle, daemon=True, name=f"prewarm-{self.config.name}")
        with self._cond:
            if self._all or self._starting or self._closed:
                return False
            self._starting += 1
            self._prewarming.add(thread)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had (out of resources, shutting down): the invocation starts its own
            with self._cond:
                self._starting -= 1
                self._prewarming.discard(thread)
                self._cond.notify_all()
            return False
        return True

    def _start_idle(self) -> None:
        try:
            worker = self._start()
        except Exception:  # noqa: BLE001 - closed or replaced meanwhile, or no process to be had (EMFILE, ...):
            return         # the next invocation starts its own, and says what failed
        finally:
            with self._cond:
                self._prewarming.discard(threading.current_thread())
        self._release(worker, healthy=worker.start_error is None)

    def _start(self) -> _Worker:
        """Start one environment, counted in `_starting` by the caller."""
        worker: _Worker | None = None
        try:
            worker = _Worker(self.config, self.env, self.direct_route)
        finally:
            with self._cond:
                self._starting -= 1
                closed = self._closed
                if worker is not None and not closed:
                    self._all.add(worker)
                self._cond.notify_all()  # those waiting for this start look again
        if closed:  # closed while the worker started
            worker.dispose()
            raise RuntimeClosed(f"Function {self.config.name} was closed or replaced; invoke it again.")
        return worker

    def _release(self, worker: _Worker, healthy: bool) -> None:
        with self._cond:
            keep = healthy and not self._closed and worker.alive()
            if keep:
                self._idle.append(worker)
                self._served = self._served or not worker._first  # a prewarmed one has served nothing yet
            else:
                self._all.discard(worker)
            self._cond.notify()
        if not keep:
            worker.dispose()

    def close(self, kill_busy: bool = True) -> None:
        """Idle workers exit on end of input. Busy ones are killed (their invocations end with
        Runtime.ExitError) and reaped, or with `kill_busy=False` left to finish and leave."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._all.difference_update(idle)
            busy = list(self._all) if kill_busy else []
            self._cond.notify_all()
        for worker in busy:
            worker.terminate()
        with self._cond:
            prewarming = list(self._prewarming)
        for thread in prewarming:  # a start under way ends, and its worker is disposed of, before this returns
            thread.join(max(INIT_TIMEOUT, float(self.config.timeout)) + 1.0)
        for worker in idle:
            worker.stop()
        for worker in idle:
            worker.dispose(grace=0.5)
        for worker in busy:
            worker.proc.wait()


# ---------------------------------------------------------------------------------------------
# One worker, seen from the runtime
# ---------------------------------------------------------------------------------------------

_FRAME = struct.Struct(">II")  # meta length, data length; then meta (JSON) and data (bytes)
_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from backend.local.lambda_runtime import _worker_main; _worker_main()"
)


def _frame(meta: dict[str, Any], data: bytes = b"") -> bytes:
    meta_bytes = json.dumps(meta).encode()
    return _FRAME.pack(len(meta_bytes), len(data)) + meta_bytes + data


class _WorkerGone(Exception):
    """The worker process ended or stopped answering."""


class _Worker:
    """One execution environment: a process that imported the handler and waits for invocations."""

    def __init__(self, config: FunctionConfig, env: dict[str, str], direct_route: str = ""):
        self.config = config
        stream = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[{LATEST}]{uuid.uuid4().hex}"
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOTSTRAP, str(REPO_ROOT), str(config.code_dir), config.handler,
             direct_route],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
            env={**env, "AWS_LAMBDA_LOG_STREAM_NAME": stream}, cwd=str(config.code_dir),
            bufsize=0, close_fds=True, start_new_session=True,
        )
        self.pid = self.proc.pid
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        self._buffer = bytearray()
        self._first = True
        self.start_error: dict[str, Any] | None = None
        self.init_ms = 0.0
        self.init_log = ""
        try:
            ready = self._read_frame(time.monotonic() + max(INIT_TIMEOUT, config.timeout))
        except _WorkerGone:
            ready = None
        if ready is None or ready[0].get("t") != "ready":
            self.terminate()
            self.start_error = {
                "errorType": "Runtime.Unknown",
                "errorMessage": f"The execution environment of {config.name} did not start within "
                                f"{max(INIT_TIMEOUT, config.timeout):.0f} seconds or exited while starting.",
            }
        else:
            self.init_ms = float(ready[0].get("init_ms", 0.0))
            self.init_log = str(ready[0].get("init_log", ""))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def invoke(self, data: bytes, request_id: str, invoked_arn: str) -> tuple[InvokeResult, bool]:
        """Run one invocation; the bool says whether the worker may serve another."""
        timeout = float(self.config.timeout)
        started = time.monotonic()
        logs: list[str] = []
        init_ms = self.init_ms if self._first else None
        if self._first and self.init_log:
            logs.append(self.init_log)
        self._first = False
        logs.append(f"START RequestId: {request_id} Version: {LATEST}\n")
        if self.start_error is not None:
            return self._failed(request_id, logs, {**self.start_error, "requestId": request_id}, 0.0, init_ms), False
        meta = {"t": "invoke", "id": request_id, "arn": invoked_arn, "deadline_ms": int((time.time() + timeout) * 1000)}
        try:
            self._write(_frame(meta, data))
            while True:
                frame = self._read_frame(started + timeout)
                if frame is None:
                    return self._timed_out(request_id, logs, init_ms), False
                frame_meta, frame_data = frame
                if frame_meta["t"] == "result":
                    break
                logs.append(frame_data.decode("utf-8", "replace"))
        except _WorkerGone:
            self.terminate()
            status = self.proc.wait()
            why = f"signal: {signal.Signals(-status).name.lower()}" if status < 0 else f"exit status {status}"
            payload = {"errorType": "Runtime.ExitError",
                       "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: {why}"}
            return self._failed(request_id, logs, payload, (time.monotonic() - started) * 1000, init_ms), False
        duration = float(frame_meta["duration_ms"])
        _end_lines(logs, request_id, duration, self.config.memory_mb, frame_meta["max_memory_mb"], init_ms)
        result = InvokeResult(
            status_code=200, payload=json.loads(frame_data),
            function_error=None if frame_meta["ok"] else "Unhandled", log_result="".join(logs),
            executed_version=LATEST, request_id=request_id, duration_ms=duration, payload_bytes=len(frame_data),
        )
        return result, True

    def _timed_out(self, request_id: str, logs: list[str], init_ms: float | None) -> InvokeResult:
        self.terminate()  # Lambda destroys the environment of a timed-out invocation
        timeout = float(self.config.timeout)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        message = f"{stamp} {request_id} Task timed out after {timeout:.2f} seconds"
        return self._failed(request_id, logs, {"errorMessage": message}, timeout * 1000, init_ms, "timeout")

    def _failed(self, request_id: str, logs: list[str], payload: dict[str, Any], duration_ms: float,
                init_ms: float | None, status: str = "error") -> InvokeResult:
        """An invocation the runtime itself ends (timeout, crash, environment that never started)."""
        if logs and not logs[-1].endswith("\n"):
            logs.append("\n")
        logs.append(f"{payload['errorMessage']}\n")
        _end_lines(logs, request_id, duration_ms, self.config.memory_mb, 0, init_ms, status)
        data = json.dumps(payload)
        return InvokeResult(200, payload, "Unhandled", "".join(logs), LATEST, request_id, duration_ms, len(data))

    # --- pipe I/O (owner thread only) ----------------------------------------------------

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._in, view):]
        except OSError:
            raise _WorkerGone() from None

    def _read_frame(self, deadline: float) -> tuple[dict[str, Any], bytes] | None:
        """The next frame, or None when the deadline passes first."""
        buf = self._buffer
        while True:
            if len(buf) >= _FRAME.size:
                meta_len, data_len = _FRAME.unpack_from(buf)
                end = _FRAME.size + meta_len + data_len
                if len(buf) >= end:
                    meta = json.loads(bytes(buf[_FRAME.size:_FRAME.size + meta_len]))
                    data = bytes(buf[_FRAME.size + meta_len:end])
                    del buf[:end]
                    return meta, data
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                ready, _, _ = select.select([self._out], [], [], remaining)
                if not ready:
                    return None
                chunk = os.read(self._out, 1 << 20)
            except (OSError, ValueError):
                raise _WorkerGone() from None
            if not chunk:
                raise _WorkerGone()
            buf += chunk

    # --- ending ---------------------------------------------------------------------------

    def terminate(self) -> None:
        """SIGKILL the worker and anything it started (its own process group). Any thread may call
        this: it touches no pipe."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> None:
        """Ask an idle worker to leave: it exits when its input pipe closes (owner only)."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def dispose(self, grace: float = 0.0) -> None:
        """End the worker, reap it and close its pipes (owner only)."""
        if grace:
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self.terminate()  # also reaches a child the handler left behind in the group
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def _end_lines(logs: list[str], request_id: str, duration_ms: float, memory_mb: int, used_mb: int,
               init_ms: float | None, status: str | None = None) -> None:
    if logs and not logs[-1].endswith("\n"):
        logs.append("\n")
    report = (f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
              f"Billed Duration: {max(1, math.ceil(duration_ms))} ms\tMemory Size: {memory_mb} MB\t"
              f"Max Memory Used: {used_mb} MB")
    if init_ms is not None:
        report += f"\tInit Duration: {init_ms:.2f} ms"
    if status:
        report += f"\tStatus: {status}"
    logs.append(f"END RequestId: {request_id}\n{report}\n")


# ---------------------------------------------------------------------------------------------
# Inside the worker process
# ---------------------------------------------------------------------------------------------


class LambdaContext:
    """The `context` a handler receives, with the attributes and method of Lambda's Python runtime."""

    def __init__(self, request_id: str, deadline_ms: int, invoked_arn: str, env: Mapping[str, str]):
        self.aws_request_id = request_id
        self._deadline_ms = deadline_ms
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", LATEST)
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", str(DEFAULT_MEMORY_MB))
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.invoked_function_arn = invoked_arn
        self.identity = None
        self.client_context = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


class _LogSink:
    """sys.stdout and sys.stderr of a worker: each complete line goes to the runtime at once, so
    the lines printed before a timeout still reach the invocation's log."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, emit: Callable[[str], None]):
        self._emit = emit
        self._partial = ""

    def write(self, text: str) -> int:
        text = str(text)
        self._partial += text
        if "\n" in self._partial:
            done, _, self._partial = self._partial.rpartition("\n")
            self._emit(done + "\n")
        return len(text)

    def flush(self) -> None:
        if self._partial:
            text, self._partial = self._partial, ""
            self._emit(text + "\n")

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


class _RequestIdFilter(logging.Filter):
    """Stamps each record with the invocation's request id, as Lambda's log format shows it."""

    def __init__(self) -> None:
        super().__init__()
        self.request_id = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.request_id
        return True


class _WorkerProcess:
    """The worker's side: owns the protocol pipes, imports the handler, serves invocations."""

    def __init__(self, repo_root: str, code_dir: str, handler_name: str, direct_route: str = ""):
        # The protocol keeps its own copies of the pipes; the handler's stdin and fd-level
        # stdout are moved off them so nothing a handler does can corrupt a frame.
        self.in_fd, self.out_fd = os.dup(0), os.dup(1)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(2, 1)
        os.close(null)
        self.started = time.monotonic()  # Lambda's init phase: from here to the handler's import
        if direct_route:  # installed while the project is still importable; the handler cannot import it
            from backend.local.direct_route import install

            install(direct_route)
        _hide_project(repo_root, code_dir)
        self.handler_name = handler_name
        self.env = dict(os.environ)
        self.write_lock = threading.Lock()  # a handler's own threads may print too
        self.deadline_ms = 0  # of the invocation in progress; 0 between invocations
        self.init_lines: list[str] | None = []  # None once the init phase is over
        self.sink = _LogSink(self._log)
        sys.stdout = sys.stderr = self.sink  # type: ignore[assignment]
        self.request_ids = _RequestIdFilter()
        log_handler = logging.StreamHandler(self.sink)
        log_handler.setFormatter(logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s", "%Y-%m-%dT%H:%M:%S"))
        log_handler.formatter.converter = time.gmtime  # type: ignore[union-attr]
        log_handler.addFilter(self.request_ids)
        logging.getLogger().handlers[:] = [log_handler]

    def _send(self, meta: dict[str, Any], data: bytes = b"") -> None:
        view = memoryview(_frame(meta, data))
        with self.write_lock:
            while view:
                view = view[os.write(self.out_fd, view):]

    def _watchdog(self) -> None:
        """A backstop for a runtime that can no longer end this worker (it died, say): leave
        once an invocation runs well past its deadline. The runtime normally kills first."""
        while True:
            time.sleep(0.5)
            if self.deadline_ms and time.time() * 1000 > self.deadline_ms + WATCHDOG_GRACE_MS:
                os._exit(124)

    def _log(self, text: str) -> None:
        if self.init_lines is not None:
            self.init_lines.append(text)
        else:
            self._send({"t": "log"}, text.encode("utf-8", "replace"))

    def _read_exact(self, n: int) -> bytes | None:
        chunks, left = [], n
        while left:
            chunk = os.read(self.in_fd, left)
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def load_handler(self) -> tuple[Any, dict[str, Any] | None]:
        """Lambda's init phase: import the module once; (handler, None) or (None, error object)."""
        module_name, _, attr = self.handler_name.rpartition(".")
        try:
            handler = getattr(importlib.import_module(module_name), attr, None)
        except SyntaxError as exc:
            return None, {"errorMessage": f"Syntax error in module '{module_name}': {exc}",
                          "errorType": "Runtime.UserCodeSyntaxError"}
        except ImportError as exc:
            return None, {"errorMessage": f"Unable to import module '{module_name}': {exc}",
                          "errorType": "Runtime.ImportModuleError"}
        except Exception as exc:  # the module raised while it was being imported
            frames = traceback.extract_tb(exc.__traceback__)[1:]
            return None, {"errorMessage": str(exc), "errorType": type(exc).__name__,
                          "stackTrace": traceback.format_list(frames)}
        if not callable(handler):
            return None, {"errorMessage": f"Handler '{attr}' missing on module '{module_name}'",
                          "errorType": "Runtime.HandlerNotFound"}
        return handler, None

    def run(self) -> None:
        started = self.started
        handler, init_error = self.load_handler()
        if init_error is not None:
            print(f"[ERROR] {init_error['errorType']}: {init_error['errorMessage']}")
        self.sink.flush()
        init_log, self.init_lines = "".join(self.init_lines or []), None
        self._send({"t": "ready", "init_ms": (time.monotonic() - started) * 1000, "init_log": init_log})
        threading.Thread(target=self._watchdog, name="lambda-watchdog", daemon=True).start()
        while True:
            head = self._read_exact(_FRAME.size)
            if head is None:
                return  # the runtime closed the pipe: leave
            meta_len, data_len = _FRAME.unpack(head)
            body = self._read_exact(meta_len + data_len)
            if body is None:
                return
            meta = json.loads(body[:meta_len])
            self.request_ids.request_id = meta["id"]
            self.deadline_ms = meta["deadline_ms"]
            began = time.monotonic()
            if init_error is not None:
                ok, answer = False, json.dumps({**init_error, "requestId": meta["id"]}).encode()
            else:
                context = LambdaContext(meta["id"], meta["deadline_ms"], meta["arn"], self.env)
                ok, answer = _call_handler(handler, body[meta_len:], context)
            self.sink.flush()
            self.deadline_ms = 0
            duration = (time.monotonic() - began) * 1000
            used_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            self._send({"t": "result", "ok": ok, "duration_ms": duration, "max_memory_mb": used_mb}, answer)


def _hide_project(repo_root: str, code_dir: str) -> None:
    """The handler sees its code folder first and not this project, as on AWS: a handler that
    imports `backend` fails here as it would there. An editable install's import hook is removed
    too, and the modules this bootstrap needed are forgotten."""
    sys.path[:] = [code_dir] + [p for p in sys.path if p not in (repo_root, "", ".")]
    root = os.path.realpath(repo_root) + os.sep

    def finds_project(finder: Any) -> bool:
        try:
            spec = finder.find_spec("backend", None)
        except Exception:
            return False
        return spec is not None and os.path.realpath(spec.origin or "").startswith(root)

    sys.meta_path[:] = [f for f in sys.meta_path if not (hasattr(f, "find_spec") and finds_project(f))]
    for name in [m for m in sys.modules if m == "backend" or m.startswith("backend.")]:
        del sys.modules[name]


def _worker_main() -> None:
    """Entry point of a worker: `python -I -c <bootstrap> <repo root> <code dir> <handler> <direct route or ''>`."""
    try:
        _WorkerProcess(*sys.argv[1:5]).run()
    except BrokenPipeError:  # the runtime went away mid-answer: nothing left to tell it
        os._exit(0)


def _call_handler(handler: Callable[[Any, Any], Any], data: bytes, context: LambdaContext) -> tuple[bool, bytes]:
    """Call the handler once: (True, its JSON answer) or (False, Lambda's error object)."""
    request_id = context.aws_request_id
    try:
        result = handler(json.loads(data), context)
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)[1:]  # without this runtime's own frame
        error = {"errorMessage": str(exc), "errorType": type(exc).__name__, "requestId": request_id,
                 "stackTrace": traceback.format_list(frames)}
        print(f"[ERROR] {error['errorType']}: {error['errorMessage']}\n"
              f"Traceback (most recent call last):\n{''.join(error['stackTrace'])}", end="")
        return False, json.dumps(error).encode()
    try:
        answer = json.dumps(result).encode()
    except (TypeError, ValueError) as exc:
        return False, json.dumps({"errorMessage": f"Unable to marshal response: {exc}",
                                  "errorType": "Runtime.MarshalError", "requestId": request_id,
                                  "stackTrace": []}).encode()
    if len(answer) > MAX_RESPONSE_BYTES:
        return False, json.dumps({
            "errorMessage": f"Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
            "errorType": "Function.ResponseSizeTooLarge"}).encode()
    return True, answer
