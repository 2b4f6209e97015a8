"""The Step Functions workflow, run locally: the `asl/` definition on the States engine, its Lambda
tasks on the local Lambda runtime (the real `lambdas/` files, unchanged), and their boto3 calls
answered by a loopback gateway (S3 GetObject from the local store, InvokeEndpoint to the local
endpoint), inside the worker where it can be (direct_route.py) and by the gateway process otherwise.

The runtime and the gateway start on first use in the process that runs executions (the
dashboard or the CLI). Executions and their history live in SQLite through the engine; an
execution whose process died is marked FAILED (States.Runtime) by the next engine that starts.
"""
from __future__ import annotations

import json
import random
import threading
import time
from datetime import datetime
from typing import Any, Callable

from backend.api import (
    DEFAULT_STATE_MACHINE, THRESHOLD_ERROR, Execution, ResourceNotFound, SconesError, StateMachine, StateRun, StepStatus,
    ValidationError, input_threshold,
)
from backend.function_classes import FunctionClasses
from backend.local.db import Database, dumps, loads
from backend.local.jobs import utcnow
from backend.local.lambda_resolver import lambda_invoke_resolver
from backend.local.lambda_runtime import FunctionConfig, LambdaRuntime
from backend.local.store import LocalStore
from backend.local.states import DefinitionInvalid, ExecutionRecord, StatesEngine, validate_definition
from backend.local.states.errors import ExecutionDoesNotExist
from backend.local.states.machine import canonical_text
from backend.workflow_defs import (
    PLACEHOLDERS, SEED_HANDLERS, WORKFLOW_FILE, upload_key, called_functions, check_batch,
    check_state_machine_name, check_threshold, deployed_not_replaced, import_target,
    encode_upload, fill_placeholders, inferences_from_history, find_inferences, parse_definition, resolve_import,
    rewrite_function_arns, state_runs,
)

DEFAULT_MACHINE = DEFAULT_STATE_MACHINE
FUNCTION_TIMEOUT = 10.0
CACHE_TTL = 2.0

WORKFLOW_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE state_machines (
        name            TEXT PRIMARY KEY,
        template        TEXT NOT NULL,      -- the definition as written, placeholders and all
        mapping         TEXT NOT NULL,      -- {function name: handler file stem in lambdas/}
        endpoint_name   TEXT NOT NULL,
        threshold       REAL NOT NULL,
        imported        INTEGER NOT NULL DEFAULT 0,
        created         TEXT NOT NULL,
        updated         TEXT NOT NULL
    );
    """,
)


def status_totals(counts: dict[tuple[str, str | None], int]) -> dict[str, int]:
    """StatesEngine.count_executions' {(status, error): n} as {status: n}."""
    totals: dict[str, int] = {}
    for (status, _), n in counts.items():
        totals[status] = totals.get(status, 0) + n
    return totals


class WorkflowService:
    def __init__(self, db: Database, store: LocalStore, bucket: str, settings: Any,
                 invoke_endpoint: Callable[[str, bytes, str], Any], describe_endpoint: Callable[[str], Any],
                 endpoint_classes: Callable[[str], tuple[str, ...]],
                 newest_endpoint: Callable[[], str | None], test_keys: Callable[[], list[str]],
                 model_size: Callable[[str], tuple[int, int]], staged_classes: Callable[[], tuple[str, ...]]):
        self.db, self.store, self.bucket, self.settings = db, store, bucket, settings
        self._invoke_endpoint = invoke_endpoint
        self._describe_endpoint = describe_endpoint
        self._endpoint_classes = endpoint_classes
        self._newest_endpoint = newest_endpoint
        self._test_keys = test_keys
        self._model_size = model_size
        self._staged_classes = staged_classes
        db.migrate("workflow", WORKFLOW_MIGRATIONS)
        self.function_classes = FunctionClasses(db, "local")
        self._lock = threading.Lock()
        self._engine: StatesEngine | None = None
        self._runtime: LambdaRuntime | None = None
        self._gateway: Any = None
        self._registered: dict[str, tuple] = {}  # function name -> signature of its config
        # Per-execution reads kept briefly: a batch of 500 should not read the machine, the endpoint
        # and the model 500 times. Writes here clear them; another process's writes show within the TTL.
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._resolver: Callable[[str, Any, Any], Any] | None = None
        # What never changes once known, read once: an ended execution's inferences (from its history) and the
        # functions an execution's definition calls. Keyed by execution ARN.
        self._ended_inferences: dict[str, list[float] | None] = {}
        self._execution_functions: dict[str, tuple[str, ...]] = {}
        self._functions_of_text: dict[str, tuple[str, ...]] = {}  # definition text -> the functions it calls

    # -- the engine, the Lambda runtime and the gateway (started on first use) ------------------

    @property
    def engine(self) -> StatesEngine:
        with self._lock:
            if self._engine is None:
                self._engine = StatesEngine(self.db, resolver=self._resolve)
            return self._engine

    def _resolve(self, resource: str, parameters: Any, context: Any) -> Any:
        if self._resolver is None:
            self._resolver = lambda_invoke_resolver(self.runtime)
        return self._resolver(resource, parameters, context)

    def _cached(self, kind: str, key: str, load: Callable[[], Any], ttl: float = CACHE_TTL) -> Any:
        now = time.monotonic()
        hit = self._cache.get((kind, key))
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        value = load()
        self._cache[(kind, key)] = (now, value)
        return value

    @property
    def runtime(self) -> LambdaRuntime:
        with self._lock:
            if self._runtime is None:
                from backend.local.gateway_process import GatewayProcess

                self._gateway = GatewayProcess(self.settings.home, self.settings.logs_dir)
                self._runtime = LambdaRuntime(gateway_url=self._gateway.url,
                                              direct_route=(self.store.root, self.db.path))
            return self._runtime

    def close(self) -> None:
        with self._lock:
            if self._runtime is not None:
                self._runtime.close()
            if self._gateway is not None:
                self._gateway.close()
            if self._engine is not None:
                self._engine.close()
            self._runtime = self._gateway = self._engine = self._resolver = None
            self._registered.clear()
            self._cache.clear()

    def _register_functions(self, machine: dict[str, Any]) -> None:
        env = {"ENDPOINT_NAME": machine["endpoint_name"], "THRESHOLD": repr(float(machine["threshold"])),
               "S3_BUCKET": self.bucket}
        classes = self._endpoint_class_names(machine["endpoint_name"])
        if classes:  # the threshold failure's cause names the class
            env["CLASS_NAMES"] = json.dumps(list(classes))
        settings = tuple(sorted(env.items()))
        for function, stem in machine["mapping"].items():
            signature = (stem, settings)
            if self._registered.get(function) == signature:
                continue
            self.runtime.register(FunctionConfig(name=function, handler=f"{stem}.lambda_handler",
                                                 timeout=FUNCTION_TIMEOUT, environment=env))
            self._registered[function] = signature
        if classes:  # what the executions starting from now are labelled with (also when another process noted
            # other names since: its runtime is not this one); written only when the notes differ
            self.function_classes.note(list(machine["mapping"]), classes, endpoint=machine["endpoint_name"],
                                       threshold=float(machine["threshold"]))

    def _endpoint_class_names(self, endpoint: str) -> tuple[str, ...]:
        def load() -> tuple[str, ...]:
            try:
                return tuple(self._endpoint_classes(endpoint))
            except SconesError:  # no such endpoint (yet): the staged classes
                return self._staged_classes()
        return self._cached("endpoint-classes", endpoint, load)

    # -- state machines --------------------------------------------------------------------

    def _arn(self, function: str) -> str:
        return f"arn:aws:lambda:{self.engine.region}:{self.engine.account_id}:function:{function}"

    def _machine_row(self, name: str) -> dict[str, Any]:
        row = self.db.query_one("SELECT * FROM state_machines WHERE name=?", (name,))
        if row is None:
            names = [r["name"] for r in self.db.query("SELECT name FROM state_machines ORDER BY name")]
            raise ResourceNotFound(f"No state machine named {name!r}: " + (
                f"choose one of {', '.join(names)}, or import it ('scones workflow import', or the Workflow page)."
                if names else "deploy the workflow first (Workflow page or 'scones workflow deploy')."))
        return {**dict(row), "mapping": loads(row["mapping"])}

    def _definition(self, machine: dict[str, Any]) -> dict[str, Any]:
        values = {key: self._arn(fn) for key, fn in PLACEHOLDERS.items()}
        return json.loads(fill_placeholders(machine["template"], values))

    def _record(self, machine: dict[str, Any]) -> StateMachine:
        return StateMachine(
            name=machine["name"], arn=f"arn:aws:states:{self.engine.region}:{self.engine.account_id}:stateMachine:{machine['name']}",
            endpoint_name=machine["endpoint_name"], threshold=float(machine["threshold"]),
            functions={fn: self._arn(fn) for fn in machine["mapping"]}, definition=self._definition(machine),
            created=machine["created"], updated=machine["updated"], imported=bool(machine["imported"]),
        )

    def _save(self, name: str, template: str, mapping: dict[str, str], endpoint: str, threshold: float,
              imported: bool) -> StateMachine:
        """Create or update a machine. Its functions are shared by name, as Lambda functions are: every other
        machine that calls one of them now runs it with this endpoint, threshold and handler file too (what
        updating the function's configuration and code does on AWS)."""
        for row in self.db.query("SELECT mapping, endpoint_name FROM state_machines"):  # notes from before endpoints
            self.function_classes.fill_endpoint(list(loads(row["mapping"])), row["endpoint_name"])  # were noted
        now = utcnow()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO state_machines(name, template, mapping, endpoint_name, threshold, imported, created, updated) "
                "VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET template=excluded.template, "
                "mapping=excluded.mapping, endpoint_name=excluded.endpoint_name, threshold=excluded.threshold, "
                "imported=excluded.imported, updated=excluded.updated",
                (name, template, dumps(mapping), endpoint, threshold, int(imported), now, now),
            )
            for other in conn.execute("SELECT name, mapping FROM state_machines WHERE name != ?", (name,)).fetchall():
                theirs = loads(other["mapping"])
                if set(theirs) & set(mapping):
                    theirs.update({fn: stem for fn, stem in mapping.items() if fn in theirs})
                    conn.execute("UPDATE state_machines SET endpoint_name=?, threshold=?, mapping=? WHERE name=?",
                                 (endpoint, threshold, dumps(theirs), other["name"]))
        self._cache.clear()
        return self.describe_state_machine(name)

    def _endpoint_and_threshold(self, endpoint_name: str | None, threshold: float | None) -> tuple[str, float]:
        endpoint = endpoint_name or self._newest_endpoint()
        if not endpoint:
            raise ResourceNotFound("No endpoint is InService: deploy a model first (Deploy page or 'scones deploy').")
        if endpoint_name:
            self._endpoint_classes(endpoint_name)  # ResourceNotFound names an endpoint that does not exist
        threshold = check_threshold(self.settings.threshold if threshold is None else threshold)
        return endpoint, threshold

    def deploy_workflow(self, endpoint_name: str | None = None, threshold: float | None = None,
                        name: str = DEFAULT_MACHINE) -> StateMachine:
        """Create or update the state machine from asl/ with the three functions' configuration."""
        check_state_machine_name(name)
        endpoint, threshold = self._endpoint_and_threshold(endpoint_name, threshold)
        template = WORKFLOW_FILE.read_text()
        diagnostics = validate_definition(fill_placeholders(template, {k: self._arn(v) for k, v in PLACEHOLDERS.items()}))
        if diagnostics:
            raise DefinitionInvalid(diagnostics)
        return self._save(name, template, dict(SEED_HANDLERS), endpoint, threshold, imported=False)

    def import_definition(self, text: str, mapping: dict[str, str] | None = None, name: str = "imported-workflow",
                          endpoint_name: str | None = None, threshold: float | None = None) -> StateMachine:
        """A definition exported from the console, its function names mapped to local handlers."""
        check_state_machine_name(name)
        definition = parse_definition(text)
        diagnostics = validate_definition(definition)
        if diagnostics:
            raise DefinitionInvalid(diagnostics)
        resolved = resolve_import(definition, mapping)
        # Function ARNs of another account/region become this workspace's ARNs for the same names.
        rewritten = rewrite_function_arns(definition, list(resolved), self._arn)
        existing = self.db.query_one("SELECT imported FROM state_machines WHERE name=?", (name,))
        if existing is not None and not existing["imported"]:
            raise ValidationError(deployed_not_replaced(name))
        endpoint, threshold = import_target(
            self.list_state_machines(), self.mapping, name, resolved, endpoint_name, threshold,
            self._endpoint_and_threshold, self._describe_endpoint)
        return self._save(name, rewritten, resolved, endpoint, threshold, imported=True)

    def mapping(self, name: str = DEFAULT_MACHINE) -> dict[str, str]:
        return dict(self._machine_row(name)["mapping"])

    def describe_state_machine(self, name: str = DEFAULT_MACHINE) -> StateMachine:
        return self._record(self._machine_row(name))

    def list_state_machines(self) -> list[StateMachine]:
        rows = self.db.query("SELECT name FROM state_machines ORDER BY updated DESC")
        return [self.describe_state_machine(r["name"]) for r in rows]

    def targets(self) -> dict[str, str]:
        """{state machine: its endpoint} of the machines that call functions, from the rows alone (the Home
        page polls it: no definition is built)."""
        rows = self.db.query("SELECT name, endpoint_name, mapping FROM state_machines ORDER BY updated DESC")
        return {r["name"]: r["endpoint_name"] for r in rows if loads(r["mapping"])}

    def delete_state_machine(self, name: str) -> None:
        self._machine_row(name)
        self.db.execute("DELETE FROM state_machines WHERE name=?", (name,))
        self._cache.clear()

    # -- inputs ------------------------------------------------------------------------------

    def generate_test_case(self) -> dict[str, Any]:
        keys = self._cached("test-keys", self.bucket, self._test_keys)
        if not keys:
            raise ResourceNotFound("No staged test images: stage the data first.")
        return {"s3_bucket": self.bucket, "s3_key": random.choice(keys), "image_data": ""}

    def upload_image(self, filename: str, data: bytes, endpoint_name: str | None = None) -> str:
        """Any image file -> a PNG at the model's input size under uploads/; returns its key."""
        endpoint = endpoint_name or self._newest_endpoint()
        png = encode_upload(filename, data, self._model_size(endpoint) if endpoint else (32, 32))
        key = upload_key(filename)
        self.store.put(self.bucket, key, png)
        return key

    # -- executions --------------------------------------------------------------------------

    def _ensure_gateway(self) -> None:
        """A gateway process that died (killed, out of memory) is replaced before the next executions start,
        with fresh workers: theirs name the dead gateway's port. Executions in flight fail as they would have."""
        with self._lock:
            gateway, runtime = self._gateway, self._runtime
            if gateway is None or gateway.proc.poll() is None:
                return
            self._runtime = self._gateway = self._resolver = None
            self._registered.clear()
        if runtime is not None:
            runtime.close()
        gateway.close()

    def _prepare(self, state_machine: str) -> tuple[dict[str, Any], str]:
        """The machine's row and its definition's text (the engine compiles a text it has seen from its cache;
        a dict would be serialised again for every start)."""
        self._ensure_gateway()
        def load() -> tuple[dict[str, Any], str]:
            machine = self._machine_row(state_machine)
            return machine, canonical_text(self._definition(machine))

        machine, text = self._cached("machine", state_machine, load)
        self._register_functions(machine)
        self.runtime.prewarm(machine["mapping"])  # cold functions start side by side, not one after another
        return machine, text

    def start_execution(self, input: dict[str, Any] | None = None, name: str | None = None,
                        state_machine: str = DEFAULT_MACHINE) -> str:
        _, definition = self._prepare(state_machine)
        return self.engine.start_execution(definition, input if input is not None else self.generate_test_case(),
                                           name=name, state_machine_name=state_machine)

    def start_batch(self, count: int = 1, s3_key: str | None = None, threshold: float | None = None,
                    state_machine: str = DEFAULT_MACHINE) -> list[str]:
        check_batch(count)
        _, definition = self._prepare(state_machine)
        if threshold is not None:
            check_threshold(threshold)
        events = []
        for _ in range(int(count)):
            event = {"s3_bucket": self.bucket, "s3_key": s3_key, "image_data": ""} if s3_key else self.generate_test_case()
            if threshold is not None:
                event["threshold"] = float(threshold)
            events.append(event)
        return self.engine.start_executions(definition, events, state_machine_name=state_machine)

    def run_definition(self, text: str, input: Any = None, params: dict[str, str] | None = None) -> tuple[ExecutionRecord, list[dict]]:
        """`asl run`: fill placeholders (the workflow's function ARNs by default), validate, run to the end."""
        values = {k: self._arn(v) for k, v in PLACEHOLDERS.items()}
        values.update(params or {})
        filled = fill_placeholders(text, values)
        try:
            definition = json.loads(filled)
        except ValueError as exc:
            raise DefinitionInvalid([_json_diagnostic(exc)]) from None
        diagnostics = validate_definition(definition)
        if diagnostics:
            raise DefinitionInvalid(diagnostics)
        functions = called_functions(definition)
        if functions:
            machine = self._machine_row(DEFAULT_MACHINE) if self._has_machine(DEFAULT_MACHINE) else None
            if machine is None:
                endpoint = self._newest_endpoint() or ""
                machine = {"endpoint_name": endpoint, "threshold": self.settings.threshold, "mapping": {}}
            machine["mapping"] = {fn: SEED_HANDLERS[fn] for fn in functions if fn in SEED_HANDLERS}
            self._ensure_gateway()
            self._register_functions(machine)
            self.runtime.prewarm(machine["mapping"])
        record = self.engine.run_execution(definition, input, state_machine_name="asl-run")
        return record, self.engine.get_execution_history(record.arn)

    def _has_machine(self, name: str) -> bool:
        return self.db.query_one("SELECT 1 FROM state_machines WHERE name=?", (name,)) is not None

    def wait(self, arns: list[str], timeout: float = 300.0) -> list[Execution]:
        """Until every one has ended or `timeout` seconds have passed in all (not each)."""
        deadline = time.monotonic() + timeout
        out = []
        for arn in arns:
            try:
                out.append(self._execution(self.engine.wait(arn, max(0.0, deadline - time.monotonic()))))
            except ExecutionDoesNotExist:
                raise ExecutionDoesNotExist(
                    f"Execution {arn.rsplit(':', 1)[-1]} does not exist (any more): a cleanup may have removed the "
                    f"executions of {arn.split(':')[-2]} while this waited; run them again if they are still wanted.") from None
        return out

    def describe_execution(self, name_or_arn: str) -> Execution:
        return self._execution(self.engine.describe_execution(self._arn_of_execution(name_or_arn)))

    def _arn_of_execution(self, name_or_arn: str) -> str:
        if name_or_arn.startswith("arn:"):
            return name_or_arn
        matches = self.engine.arns_named(name_or_arn)
        if not matches:
            raise ResourceNotFound(f"No execution named {name_or_arn!r}: list the executions to see their names.")
        return matches[0]

    def _machine_names(self) -> list[str]:
        """The deployed state machines (executions of the one-off `asl run` ones are not the workflow's)."""
        return [r["name"] for r in self.db.query("SELECT name FROM state_machines")]

    def list_executions(self, state_machine: str | None = None, limit: int = 200) -> list[Execution]:
        """The newest `limit` executions of the deployed state machines (or of one): only those are read, so a
        page refresh costs the same after 10,000 executions as after 10 (it read them all: about 200 ms)."""
        records = self.engine.list_executions(state_machine, state_machine_names=self._machine_names(), limit=limit)
        return [self._execution(r) for r in records]

    def execution_history(self, name_or_arn: str) -> list[dict[str, Any]]:
        return self.engine.get_execution_history(self._arn_of_execution(name_or_arn))

    def execution_states(self, name_or_arn: str) -> list[StateRun]:
        arn = self._arn_of_execution(name_or_arn)
        return state_runs(self.execution_definition(arn), self.engine.get_execution_history(arn))

    def execution_definition(self, name_or_arn: str) -> dict[str, Any]:
        """The definition the execution ran: its state machine may have been updated (or deleted) since."""
        return json.loads(self.engine.execution_definition(self._arn_of_execution(name_or_arn)))

    def stop_execution(self, name_or_arn: str) -> Execution:
        return self._execution(self.engine.stop_execution(self._arn_of_execution(name_or_arn)))

    def _execution(self, r: ExecutionRecord) -> Execution:
        inp = r.input_value if hasattr(r, "input_value") else None
        out = r.output_value if r.output is not None else None
        inferences = find_inferences(out) if out is not None else None
        if inferences is None and r.status != "RUNNING":
            if r.arn not in self._ended_inferences:  # an ended execution's history no longer changes
                self._ended_inferences[r.arn] = self._inferences_from_history(r)
            inferences = self._ended_inferences[r.arn]
        label = confidence = None
        if inferences:
            best = max(range(len(inferences)), key=inferences.__getitem__)
            confidence = inferences[best]
            classes = self._classes_for(r.arn, r.state_machine_name, r.start_date)
            label = classes[best] if best < len(classes) else f"class {best}"
        functions = self._functions_of(r.arn)
        endpoint = self.function_classes.endpoint_at(functions, r.start_date)
        threshold = input_threshold(inp)
        if threshold is None:
            threshold = self.function_classes.threshold_at(functions, r.start_date)
        seconds = None
        if r.stop_date is not None:
            seconds = (r.stop_date - r.start_date).total_seconds()
        return Execution(
            name=r.name, arn=r.arn, state_machine=r.state_machine_name, status=r.status,
            start=_iso(r.start_date), stop=_iso(r.stop_date) if r.stop_date else None, seconds=seconds,
            error=r.error, cause=r.cause, s3_key=(inp or {}).get("s3_key") if isinstance(inp, dict) else None,
            label=label, confidence=confidence, input=inp, output=out, endpoint=endpoint, threshold=threshold,
        )

    def _inferences_from_history(self, r: ExecutionRecord) -> list[float] | None:
        try:
            history = self.engine.get_execution_history(r.arn)
        except SconesError:
            return None
        return inferences_from_history(history)

    def _classes_for(self, arn: str, state_machine: str, started: datetime) -> tuple[str, ...]:
        """The class names the functions the execution called had when it started (noted when they were
        configured); for executions from before such notes, those of the machine's endpoint now."""
        noted = self.function_classes.at(self._functions_of(arn), started)
        if noted is not None:
            return noted

        def load() -> tuple[str, ...]:
            try:
                return self._endpoint_classes(self._machine_row(state_machine)["endpoint_name"])
            except SconesError:  # the endpoint is gone: the staged classes still name the labels
                return self._staged_classes()
        return self._cached("classes", state_machine, load)

    def _functions_of(self, arn: str) -> tuple[str, ...]:
        """The functions the execution's own definition calls (its machine may have changed since)."""
        if arn not in self._execution_functions:
            if len(self._execution_functions) >= 100_000:  # a dashboard that runs for weeks: start over
                self._execution_functions.clear()
            self._execution_functions[arn] = self._functions_run(arn)
        return self._execution_functions[arn]

    def _functions_run(self, arn: str) -> tuple[str, ...]:
        try:
            text = self.engine.execution_definition(self._arn_of_execution(arn))
        except SconesError:
            return ()
        functions = self._functions_of_text.get(text)
        if functions is None:  # executions of one machine share its text: parsed once, not once each
            try:
                functions = tuple(called_functions(json.loads(text)))
            except ValueError:
                functions = ()
            if len(self._functions_of_text) >= 64:
                self._functions_of_text.clear()
            self._functions_of_text[text] = functions
        return functions

    def step_status(self) -> StepStatus:
        if not self.db.query_one("SELECT 1 FROM state_machines"):
            return StepStatus("workflow", "not_started", "No workflow deployed yet.")
        counts = self.engine.count_executions(self._machine_names())
        statuses = status_totals(counts)
        total = sum(statuses.values())
        if not total:
            return StepStatus("workflow", "not_started", "Workflow deployed; no execution yet.")
        running = statuses.get("RUNNING", 0)
        if running:
            return StepStatus("workflow", "in_progress", f"{running} execution(s) running.")
        ok = statuses.get("SUCCEEDED", 0)
        low = sum(n for (_, error), n in counts.items() if error == THRESHOLD_ERROR)
        other = total - ok - low
        return StepStatus("workflow", "done", f"{total} executions: {ok} succeeded, {low} below the threshold, "
                                              f"{other} failed otherwise.")


def _iso(value: Any) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else ""


def _json_diagnostic(exc: ValueError) -> Any:
    from backend.local.states import Diagnostic
    from backend.local.states.validation import json_error_text

    return Diagnostic("", "", f"the definition is not valid JSON: {json_error_text(exc)}")
