"""`scones ...`: the dashboard's operations for scripts, JSON out. See shared docs CLI.md.

Exit codes: 0 done; 1 a job the command waited for ended Failed or Stopped; 2 bad usage, bad input
or a backend error (one sentence on stderr, never a traceback).
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import stat
import sys
import threading
import time
from dataclasses import replace
from typing import Any, Callable

from backend.api import (
    DEFAULT_ENDPOINT, DEFAULT_STATE_MACHINE, JOB_COMPLETED, BatchPartlyStarted, ResourceNotFound, SconesError,
    confidence_text, human_size,
)
from backend.inventory import NOT_CREATED_HERE, left_by_this_workspace
from backend.workflow_defs import check_batch, check_threshold

EXIT_OK, EXIT_JOB_FAILED, EXIT_ERROR = 0, 1, 2
LIST_ROUNDS = 60  # workflow list on AWS: up to a minute of DescribeExecution (25 a call) for a long list
WAITED_FOR = 200  # `workflow list` on AWS waits for the details of this many executions at most
ALL_EXECUTIONS = 1_000_000_000  # `workflow list` asks the backend for every execution (its default is 200)
DEFAULT_CAPTURE_PERCENT = 100  # the notebook's data capture


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--epoch 2` is an unknown option, not --epochs by a guess
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one sentence, exit 2, no usage dump
        raise UsageError(f"{message} (see '{self.prog} --help').")  # the command's own help, where it has one


def _add_globals(p: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    p.add_argument("--home", default=default, help="workspace folder (env SCONES_HOME, default ~/.scones)")
    p.add_argument("--backend", choices=["local", "aws"], default=default, help="env SCONES_BACKEND, default local")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                   help="print exactly one JSON document on stdout")


def build_parser() -> Parser:
    parser = Parser(prog="scones", description="Scones Unlimited workflow: stage, train, deploy, run, monitor, clean up.")
    _add_globals(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("stage", help="stage CIFAR-100 images and .lst files into the bucket")
    p.add_argument("--source", default=None,
                   help="the official URL (default; falls back to the bundled sample when unreachable), another URL, a local path, or 'sample'")
    p.add_argument("--classes", default=None, help="comma-separated fine label names (default bicycle,motorcycle)")
    p.set_defaults(handler=cmd_stage)

    p = sub.add_parser("status", help="the five workflow steps (stage, train, deploy, workflow, monitor) and their state")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("train", help="start a training job (the image-classification algorithm)")
    p.add_argument("--epochs", type=int, default=None, help="same as --hp epochs=N")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="a hyperparameter; repeat it")
    p.add_argument("--preset", default=None, help="defaults to start from: local (CPU here) or sagemaker (the "
                   "notebook's); default: the backend's own, as on the Train page")
    p.add_argument("--wait", action="store_true", help="wait for the job to end")
    p.add_argument("--yes", action="store_true",
                   help="on AWS: start the billable instance (without it: say what it costs, start nothing, exit 2)")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("jobs", help="training jobs, newest first")
    p.set_defaults(handler=cmd_jobs)

    p = sub.add_parser("stop", help="stop a running training job (as StopTrainingJob)")
    p.add_argument("--job", required=True, help="training job name")
    p.set_defaults(handler=cmd_stop)

    p = sub.add_parser("evaluate", help="evaluate a training job's model on the test split")
    p.add_argument("--job", required=True, help="training job name")
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("deploy", help="deploy a model to an endpoint with data capture")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--job", help="training job whose model to deploy (default: the newest Completed job)")
    which.add_argument("--model", help="model name to deploy")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help=f"endpoint name (default {DEFAULT_ENDPOINT}; updated if it exists)")
    p.add_argument("--capture-percent", type=int, default=None,
                   help=f"data-capture sampling percentage, 0-100, which turns capture on (default: an existing "
                        f"endpoint keeps its whole capture setting, a new one captures {DEFAULT_CAPTURE_PERCENT})")
    p.add_argument("--wait", action="store_true", help="wait until the endpoint is InService or Failed")
    p.add_argument("--yes", action="store_true",
                   help="on AWS: start the billable endpoint (without it: say what it costs, create nothing, exit 2)")
    p.set_defaults(handler=cmd_deploy)

    p = sub.add_parser("endpoints", help="endpoints and their status")
    p.set_defaults(handler=cmd_endpoints)

    p = sub.add_parser("invoke", help="send one image to an endpoint")
    p.add_argument("--endpoint", required=True, help="the endpoint's name (see 'scones endpoints')")
    p.add_argument("image", help="a PNG or JPEG file")
    p.set_defaults(handler=cmd_invoke)

    asl = sub.add_parser("asl", help="validate or run an Amazon States Language definition locally")
    asl_sub = asl.add_subparsers(dest="asl_command", metavar="ACTION", parser_class=Parser, required=True)
    p = asl_sub.add_parser("validate", help="check a definition as ValidateStateMachineDefinition does")
    p.add_argument("file", help="the definition: an Amazon States Language JSON file")
    p.set_defaults(handler=cmd_asl_validate)
    p = asl_sub.add_parser("run", help="run a definition on the local engine to its end")
    p.add_argument("file", help="the definition: an Amazon States Language JSON file")
    p.add_argument("--input", default=None, help="execution input as JSON")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="fills ${KEY}; repeat it")
    p.set_defaults(handler=cmd_asl_run)

    wf = sub.add_parser("workflow", help="the Step Functions workflow: deploy, run, list, history, import")
    wf_sub = wf.add_subparsers(dest="workflow_command", metavar="ACTION", parser_class=Parser, required=True)
    p = wf_sub.add_parser("deploy", help="create or update the state machine and its three functions")
    p.add_argument("--endpoint", default=None, help="endpoint to classify with (default: the newest InService one)")
    p.add_argument("--threshold", type=float, default=None, help="confidence threshold (default SCONES_THRESHOLD, 0.93)")
    p.set_defaults(handler=cmd_workflow_deploy)
    p = wf_sub.add_parser("run", help="run executions and wait for them")
    p.add_argument("--count", type=int, default=1, help="how many executions to start (default 1)")
    p.add_argument("--image", default=None, help="an image file to classify (default: random staged test images)")
    p.add_argument("--threshold", type=float, default=None, help="threshold for these executions only")
    p.add_argument("--state-machine", default="scones-workflow",
                   help="the state machine to run (default scones-workflow; an imported one by its name)")
    p.set_defaults(handler=cmd_workflow_run)
    p = wf_sub.add_parser("list", help="executions, newest first")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="the newest N executions only (default: all of them)")
    p.set_defaults(handler=cmd_workflow_list)
    p = wf_sub.add_parser("history", help="one execution's event history")
    p.add_argument("name", help="the execution's name or ARN (see 'scones workflow list')")
    p.set_defaults(handler=cmd_workflow_history)
    p = wf_sub.add_parser("import", help="import a definition exported from the Step Functions console")
    p.add_argument("file", help="the exported definition (JSON)")
    p.add_argument("--map", action="append", default=[], metavar="FUNCTION=HANDLER",
                   help="run FUNCTION with lambdas/HANDLER.py; repeat it")
    p.add_argument("--name", default="imported-workflow",
                   help="the state machine's name here (default imported-workflow; importing again updates it)")
    p.set_defaults(handler=cmd_workflow_import)

    p = sub.add_parser("monitor", help="captured confidence against the threshold")
    p.add_argument("--endpoint", default=None, help="default: every endpoint with capture")
    p.add_argument("--threshold", type=float, default=None, help="default: the workflow's threshold")
    p.add_argument("--since", default=None, help="ISO 8601 time (UTC when no offset)")
    p.set_defaults(handler=cmd_monitor)

    p = sub.add_parser("inventory", help="everything this workspace created, with status and size")
    p.set_defaults(handler=cmd_inventory)

    p = sub.add_parser("cleanup", help="delete what the project created (dependency order)")
    p.add_argument("targets", nargs="*", metavar="KIND:NAME", help="e.g. endpoint:scones-endpoint data:capture")
    p.add_argument("--all", action="store_true", help="everything, data included unless --keep-data")
    p.add_argument("--keep-data", action="store_true", help="with --all: keep staged images, capture and uploads")
    p.add_argument("--yes", action="store_true", help="really delete (without it: list what would go, exit 2)")
    p.set_defaults(handler=cmd_cleanup)

    p = sub.add_parser("roles", help="AWS: the IAM roles for SageMaker, Lambda and Step Functions (least privilege)")
    p.add_argument("--yes", action="store_true", help="create or update them (without it: print the plan, exit 2)")
    p.set_defaults(handler=cmd_roles)

    for p in [*sub.choices.values(), *asl_sub.choices.values(), *wf_sub.choices.values()]:
        _add_globals(p, suppress=True)
    return parser


# -- output ------------------------------------------------------------------------------------


class Output:
    def __init__(self, as_json: bool):
        self.as_json = as_json

    def progress(self, text: str) -> None:
        if not self.as_json and sys.stderr.isatty():
            sys.stderr.write(f"\r{text[:100]:<100}")
            sys.stderr.flush()

    def done(self, doc: dict[str, Any], text: str) -> None:
        if not self.as_json and sys.stderr.isatty():
            sys.stderr.write("\r" + " " * 100 + "\r")
        print(json.dumps(doc, indent=2, default=str) if self.as_json else text)
        self.printed = True

    printed = False  # a document went to stdout: an error after it adds none (one document, ever)

    def error(self, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
        """An error: its one sentence on stderr and, with --json, as the one document on stdout, so a
        script that parses stdout reads what went wrong instead of failing on empty output. `extra`:
        more keys of that document (the diagnostics of an invalid definition)."""
        if self.as_json and not self.printed:
            print(json.dumps({**(extra or {}), "error": {"code": code, "message": message}}, indent=2))
            self.printed = True
        print(f"scones: {message}", file=sys.stderr)


def validate_pointer(message: str, extra: dict[str, Any] | None, file: str | None, as_json: bool) -> str:
    """A definition's first problem of several, in text, points at `asl validate FILE` for the rest (--json lists
    them all in `diagnostics`). `file`: the definition's file, where the command took one."""
    if extra and len(extra["diagnostics"]) > 1 and not as_json and file:
        return message.rstrip(".") + f"; 'scones asl validate {file}' lists them all."
    return message


def diagnostics_doc(exc: Any) -> dict[str, Any] | None:
    """`valid` and `diagnostics`, as `asl validate` gives them, for an error that carries diagnostics."""
    found = getattr(exc, "diagnostics", None)
    if not found:
        return None
    return {"valid": False, "diagnostics": [{"state": d.state, "field": d.field, "message": d.message} for d in found]}


def _wait(backend: Any, job_id: str, out: Output) -> Any:
    while True:
        job = backend.describe_job(job_id)
        if job.done:
            return job
        out.progress(f"{job.job_id}: {job.message} ({job.progress:.0%})")
        time.sleep(0.1)


# -- commands ----------------------------------------------------------------------------------


def cmd_stage(backend: Any, args: argparse.Namespace, out: Output) -> int:
    classes = None
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",")]
        if not all(classes):
            raise UsageError(f"--classes {args.classes!r} names an empty class: give comma-separated fine label "
                             "names such as bicycle,motorcycle, or leave the option out for those two.")
    source = args.source
    fallback = source is None  # the default official URL falls back to the sample, with a note
    job_id = backend.start_staging(source or "official", classes, fallback_to_sample=fallback)
    job = _wait(backend, job_id, out)
    if job.status != JOB_COMPLETED:
        doc = {"job_id": job.job_id, "status": job.status, "error": job.failure_reason}
        if out.as_json:
            out.done(doc, "")
        print(f"scones: staging {job.status.lower()}: {job.failure_reason}", file=sys.stderr)
        return EXIT_JOB_FAILED
    doc = dict(job.result)
    doc["job_id"] = job.job_id
    lines = [f"Staged into s3://{doc['bucket']}/ in {doc['seconds']:.2f} s (source: {doc['source']})"]
    classes = doc.get("classes", [])
    for split, counts in doc["counts"].items():  # classes in index order, as the lists number them
        order = [c for c in classes if c in counts] + [c for c in counts if c not in classes]
        lines.append(f"  {split:5}: " + ", ".join(f"{c} {counts[c]}" for c in order))
    lines.append(f"  lists: {doc['train_lst']}, {doc['test_lst']}")
    if doc.get("note"):
        lines.append(f"Note: {doc['note']}")
    out.done(doc, "\n".join(lines))
    return EXIT_OK


def cmd_status(backend: Any, args: argparse.Namespace, out: Output) -> int:
    ws = backend.describe_workspace()
    steps = backend.step_statuses()
    doc = {
        "backend": ws["backend"], "home": ws["home"],
        "steps": {name: {"state": s.state, "detail": s.detail} for name, s in steps.items() if name != "cleanup"},
    }
    lines = [f"backend: {doc['backend']}   workspace: {doc['home']}"]
    lines += [f"  {name:9} {s['state']:12} {s['detail']}" for name, s in doc["steps"].items()]
    out.done(doc, "\n".join(lines))
    return EXIT_OK


def parse_pairs(pairs: list[str], flag: str, example: str, form: str = "KEY=VALUE",
                allow_empty: bool = True) -> dict[str, str]:
    """Repeated `--flag KEY=VALUE` options as a dict; a malformed one is a usage error, and so is an
    empty VALUE where `allow_empty` is False (a hyperparameter or a mapping left blank)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {pair!r} is not {form}, for example {flag} {example}")
        if not allow_empty and not value.strip():
            raise UsageError(f"{flag} {pair!r} gives {key.strip()} no value: write {form} (for example {flag} {example}), "
                             "or leave it out to keep the default.")
        out[key.strip()] = value.strip()
    return out


def job_doc(job: Any) -> dict[str, Any]:
    return {"job_name": job.job_name, "status": job.status, "secondary_status": job.secondary_status,
            "created": job.created, "seconds": round(job.seconds, 1), "metrics": job.final_metrics,
            "failure_reason": job.failure_reason, "model_artifact": job.model_artifact,
            "validation": job.validation,  # what metrics' validation:accuracy was measured on: test | holdout
            "served_accuracy": job.served_accuracy}  # the served 8-bit graph's, on the same images; null: float


def served_text(job: Any, digits: int) -> str:
    """' · served 8-bit graph 0.905' for a job whose endpoint serves an 8-bit graph, else ''."""
    return "" if job.served_accuracy is None else f" · served 8-bit graph {job.served_accuracy:.{digits}f}"


def confirm_billing(backend: Any, kind: str, yes: bool) -> None:
    """On a backend that bills (AWS), nothing starts without --yes; elsewhere --yes is accepted and ignored."""
    notice = backend.billing_notice(kind)
    if notice is not None and not yes:
        raise UsageError(f"Nothing was started: this {notice.starts}; add --yes to start it.")


def cmd_train(backend: Any, args: argparse.Namespace, out: Output) -> int:
    confirm_billing(backend, "training", args.yes)
    hps = backend.default_training_hyperparameters(*([args.preset] if args.preset else []))
    given = parse_pairs(args.hp, "--hp", "learning_rate=0.05", form="NAME=VALUE", allow_empty=False)
    if args.epochs is not None and "epochs" in given and given["epochs"].strip() != str(args.epochs):
        raise UsageError(f"--epochs {args.epochs} and --hp epochs={given['epochs']} disagree: give the epochs once.")
    hps.update(given)
    if args.epochs is not None:
        hps["epochs"] = str(args.epochs)
    name = backend.create_training_job(hps)
    for note in backend.training_advisories(hps):  # allowed, but not what the values seem to ask for
        param = note.split("=", 1)[0]
        if param in hps and param not in given:  # a default the command line did not set: say where it came from
            note = note.rstrip(".") + f" ({param} is the defaults' value; --hp {param}=... sets another)."
        print(f"scones: note: {note}", file=sys.stderr)
    job = backend.describe_training_job(name)
    while args.wait and job.status not in ("Completed", "Failed", "Stopped"):
        last = job.epochs[-1] if job.epochs else {}
        acc = f", validation accuracy {last['validation:accuracy']:.3f}" if "validation:accuracy" in last else ""
        out.progress(f"{name}: {job.secondary_status}, epoch {len(job.epochs)} of {hps.get('epochs')}{acc}")
        time.sleep(0.5 if backend.name == "local" else 10.0)  # each AWS look reads the job's CloudWatch log
        job = backend.describe_training_job(name)
    doc = job_doc(job) if args.wait else {"job_name": job.job_name, "status": job.status}
    text = f"{job.job_name}: {job.status}"
    if args.wait and job.final_metrics:
        text += " · " + ", ".join(f"{k} {v:.4f}" for k, v in job.final_metrics.items()) + served_text(job, 4)
    if job.failure_reason:
        text += f" · {job.failure_reason}"
    out.done(doc, text)
    return EXIT_JOB_FAILED if args.wait and job.status in ("Failed", "Stopped") else EXIT_OK


def cmd_jobs(backend: Any, args: argparse.Namespace, out: Output) -> int:
    jobs = backend.list_training_jobs()
    doc = {"jobs": [job_doc(j) for j in jobs]}
    lines = [f"{j.job_name:40} {j.status:11} {j.seconds:7.1f}s  "
             + " ".join(f"{k}={v:.3f}" for k, v in j.final_metrics.items()) + served_text(j, 3) for j in jobs]
    out.done(doc, "\n".join(lines) or "No training jobs yet.")
    return EXIT_OK


def cmd_stop(backend: Any, args: argparse.Namespace, out: Output) -> int:
    """Stop a training job; one that has already ended is told as it is (stopping twice is harmless)."""
    job = backend.stop_training_job(args.job)
    out.done(job_doc(job), f"{job.job_name}: {job.status}" + (f" ({job.secondary_status})" if job.secondary_status
                                                              not in ("", job.status) else ""))
    return EXIT_OK


def cmd_evaluate(backend: Any, args: argparse.Namespace, out: Output) -> int:
    ev = backend.evaluate_training_job(args.job)
    doc = {"job_name": ev.job_name, "accuracy": ev.accuracy, "classes": list(ev.classes),
           "confusion_matrix": [list(r) for r in ev.confusion_matrix], "per_class": ev.per_class,
           "worst": list(ev.worst)}
    lines = [f"{ev.job_name}: accuracy {ev.accuracy:.4f}"]
    lines += [f"  {c:12} precision {m['precision']:.3f}  recall {m['recall']:.3f}" for c, m in ev.per_class.items()]
    out.done(doc, "\n".join(lines))
    return EXIT_OK


IMAGE_FILE_LIMIT = 200 * 1024 * 1024  # a workflow image (any size, re-encoded); the dashboard's upload limit
INVOKE_FILE_LIMIT = 6 * 1024 * 1024  # InvokeEndpoint's payload limit
DEFINITION_FILE_LIMIT = 1024 * 1024  # Step Functions' definition limit (1,048,576 characters)


def read_file(path: str, what: str, limit: int) -> bytes:
    """A regular file's bytes, at most `limit` of them: /dev/zero, a FIFO or a 5 GB file is refused in
    one sentence instead of being read into memory."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UsageError(f"The {what} {path!r} is not a regular file: give the path of a file.")
            data = f.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"Cannot read the {what} {path!r}: {exc.strerror}.") from None
    if len(data) > limit:
        raise UsageError(f"The {what} {path!r} is larger than {limit // 2**20} MB, the most this command takes.")
    return data


def endpoint_doc(e: Any) -> dict[str, Any]:
    return {"endpoint_name": e.endpoint_name, "status": e.status, "model_name": e.model_name, "created": e.created,
            "capture": {"enabled": e.capture.enabled, "percent": e.capture.sampling_percent,
                        "prefix": e.capture.destination, "input": e.capture.capture_input,
                        "output": e.capture.capture_output}, "failure_reason": e.failure_reason}


def capture_options(backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The deploy's capture: an existing endpoint keeps all of its own (on or off, percentage, destination,
    input/output), --capture-percent changing only the percentage (and turning it on); a new endpoint
    captures --capture-percent, or 100%, of input and output to the default destination."""
    try:
        capture = backend.describe_endpoint(args.endpoint).capture
    except ResourceNotFound:
        percent = DEFAULT_CAPTURE_PERCENT if args.capture_percent is None else args.capture_percent
        return {"capture_percent": percent}
    kept = {"capture_input": capture.capture_input, "capture_output": capture.capture_output,
            "destination": capture.destination or None}
    if args.capture_percent is not None:
        return {**kept, "capture_percent": args.capture_percent, "capture_enabled": True}
    return {**kept, "capture_percent": capture.sampling_percent, "capture_enabled": capture.enabled}


def cmd_deploy(backend: Any, args: argparse.Namespace, out: Output) -> int:
    confirm_billing(backend, "endpoint", args.yes)
    model_name, created = args.model, None
    if model_name is None:
        job_name = args.job
        if job_name is None:
            done = [j for j in backend.list_training_jobs() if j.status == "Completed"]
            if not done:
                raise UsageError("No Completed training job to deploy: train one first ('scones train --wait').")
            job_name = done[0].job_name
        existing = [m for m in backend.list_models() if m.job_name == job_name]
        if not existing:
            model_name = created = backend.create_model(job_name).model_name
        else:
            model_name = existing[0].model_name
    try:
        options = capture_options(backend, args)  # reads the endpoint: may be refused too (a bad name, throttled)
        endpoint = backend.deploy(model_name, args.endpoint, **options)
    except Exception:
        if created is not None:  # a refused deploy leaves nothing behind
            try:
                backend.delete_model(created)
            except SconesError:
                pass
        raise
    if args.wait:
        endpoint = backend.wait_endpoint(endpoint.endpoint_name)
    serving = endpoint.model_name
    if endpoint.status in ("Creating", "Updating"):  # DescribeEndpoint gives the old model and capture until the switch
        serving = model_name
        endpoint = replace(endpoint, model_name=model_name, capture=replace(
            endpoint.capture, sampling_percent=options["capture_percent"],
            enabled=options.get("capture_enabled", endpoint.capture.enabled),
            capture_input=options.get("capture_input", endpoint.capture.capture_input),
            capture_output=options.get("capture_output", endpoint.capture.capture_output)))
    doc = endpoint_doc(endpoint)
    c = endpoint.capture
    taken = " and ".join(n for n, on in (("input", c.capture_input), ("output", c.capture_output)) if on)
    out.done(doc, f"{endpoint.endpoint_name}: {endpoint.status} (model {serving}, " + (
        f"capture {c.sampling_percent}% of {taken or 'nothing'} to {c.destination})" if c.enabled else "capture off)"))
    note = backend.capture_retention_note(endpoint) if c.enabled and hasattr(backend, "capture_retention_note") else ""
    if note:  # AWS: the capture got no S3 lifecycle rule, and why
        print(f"scones: note: {note}", file=sys.stderr)
    if args.wait and endpoint.status == "Failed":
        print(f"scones: endpoint {endpoint.endpoint_name} failed: {endpoint.failure_reason or 'no reason given'}",
              file=sys.stderr)
        return EXIT_JOB_FAILED
    return EXIT_OK


def cmd_endpoints(backend: Any, args: argparse.Namespace, out: Output) -> int:
    endpoints = backend.list_endpoints()
    out.done({"endpoints": [endpoint_doc(e) for e in endpoints]},
             "\n".join(f"{e.endpoint_name:30} {e.status:12} {e.model_name}" for e in endpoints) or "No endpoints.")
    return EXIT_OK


def image_content_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    return "application/x-image"


def cmd_invoke(backend: Any, args: argparse.Namespace, out: Output) -> int:
    data = read_file(args.image, "image", INVOKE_FILE_LIMIT)
    p = backend.invoke_endpoint(args.endpoint, data, image_content_type(data))
    doc = {"probabilities": list(p.probabilities), "classes": list(p.classes), "label": p.label,
           "confidence": p.confidence}
    out.done(doc, f"{p.label} ({p.confidence:.4f})")
    return EXIT_OK


def cmd_asl_validate(backend: Any, args: argparse.Namespace, out: Output) -> int:
    text = read_file(args.file, "definition", DEFINITION_FILE_LIMIT).decode("utf-8", "replace")
    diagnostics = backend.validate_definition(text)
    doc = {"valid": not diagnostics,
           "diagnostics": [{"state": d.state, "field": d.field, "message": d.message} for d in diagnostics]}
    text = "valid" if not diagnostics else "\n".join(f"{d.state or '-'} {d.field or '-'}: {d.message}" for d in diagnostics)
    if diagnostics:
        n = len(diagnostics)
        message = (f"{args.file} is not a valid state machine definition: {n} problem{'s' if n > 1 else ''}, "
                   f"listed {'in diagnostics' if out.as_json else 'above'}.")
        doc["error"] = {"code": "InvalidDefinition", "message": message}  # as every exit 2 of --json has
    out.done(doc, text)
    if diagnostics:
        print(f"scones: {message}", file=sys.stderr)
    return EXIT_OK if not diagnostics else EXIT_ERROR


def cmd_asl_run(backend: Any, args: argparse.Namespace, out: Output) -> int:
    from backend.local.states import DefinitionInvalid

    if args.input is not None:
        try:
            json.loads(args.input)
        except ValueError as exc:
            raise UsageError(f"--input is not valid JSON ({exc.msg}).") from None
    inp = args.input if args.input is not None else {}  # the text itself: the engine parses it, once
    text = read_file(args.file, "definition", DEFINITION_FILE_LIMIT).decode("utf-8", "replace")
    ended = threading.Event()
    threading.Thread(target=say_still_running, args=(ended,), daemon=True).start()
    try:
        record, events = backend.run_definition(text, inp, parse_pairs(args.param, "--param", "Name=value"))
    except DefinitionInvalid as exc:
        extra = diagnostics_doc(exc) or {"valid": False, "diagnostics": []}
        out.error(exc.code, validate_pointer(str(exc), extra, args.file, out.as_json), extra)
        return EXIT_ERROR
    finally:
        ended.set()
    doc = {"execution": record.arn, "status": record.status, "output": record.output_value,
           "error": record.error, "cause": record.cause, "events": [_event(e) for e in events]}
    out.done(doc, f"{record.status}" + (f": {record.error}: {record.cause}" if record.error else
                                       f": {short_json(record.output_value)}"))
    return EXIT_OK


def say_still_running(ended: threading.Event, first: float = 5.0, every: float = 60.0) -> None:
    """`asl run` runs the execution to its end, and a Wait state may last hours: after `first` seconds, and
    then every `every`, say on stderr that it is still running and how to stop it (it printed nothing)."""
    began, wait = time.monotonic(), first
    while not ended.wait(wait):
        print(f"scones: note: the execution is still running after {time.monotonic() - began:,.0f} s (a Wait state "
              "or a slow task); Ctrl-C stops it.", file=sys.stderr, flush=True)
        wait = every


def short_json(value: Any, limit: int = 400) -> str:
    """JSON for a terminal: long strings (a base64 image, say) cut to 40 characters, the whole to `limit`."""
    def cut(v: Any) -> Any:
        if isinstance(v, str) and len(v) > 60:
            return f"{v[:40]}... ({len(v):,} characters)"
        if isinstance(v, dict):
            return {k: cut(x) for k, x in v.items()}
        if isinstance(v, list):
            return [cut(x) for x in v]
        return v
    text = json.dumps(cut(value))
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters; --json prints it all)"


def _event(e: dict[str, Any]) -> dict[str, Any]:
    return {**e, "timestamp": e["timestamp"].isoformat() if hasattr(e["timestamp"], "isoformat") else e["timestamp"]}


def execution_doc(e: Any) -> dict[str, Any]:
    return {"name": e.name, "status": e.status, "error": e.error, "cause": e.cause, "label": e.label,
            "confidence": e.confidence, "seconds": e.seconds, "s3_key": e.s3_key, "start": e.start,
            "state_machine": e.state_machine, "threshold": e.threshold}


def _executions_text(executions: list[Any]) -> str:
    several = len({e.state_machine for e in executions}) > 1  # then each line names its state machine
    return "\n".join(
        f"{e.name:38} {e.status:9} {e.label or '-':11} "
        f"{'' if e.confidence is None else confidence_text(e.confidence):6} {e.error or ''}"
        + (f"  [{e.state_machine}]" if several else "") for e in executions
    ) or "No executions."


def cmd_workflow_deploy(backend: Any, args: argparse.Namespace, out: Output) -> int:
    try:
        before = backend.describe_state_machine(DEFAULT_STATE_MACHINE)
    except SconesError:  # none yet, or not readable now: the deploy alone decides, without the notes below
        before = None
    sm = backend.deploy_workflow(args.endpoint, args.threshold)
    if before is not None:  # a redeploy: say what changed that the flags did not ask for
        if args.endpoint is None and before.endpoint_name and before.endpoint_name != sm.endpoint_name:
            print(f"scones: the workflow now calls {sm.endpoint_name}, the newest InService endpoint (it called "
                  f"{before.endpoint_name}); pass --endpoint {before.endpoint_name} to keep that one.", file=sys.stderr)
        if args.threshold is None and before.threshold != sm.threshold:
            print(f"scones: the threshold is now {sm.threshold:g}, the default (it was {before.threshold:g}); "
                  f"pass --threshold {before.threshold:g} to keep it.", file=sys.stderr)
    doc = {"state_machine": sm.name, "state_machine_arn": sm.arn, "endpoint_name": sm.endpoint_name,
           "threshold": sm.threshold, "functions": sm.functions}
    out.done(doc, f"{sm.name}: endpoint {sm.endpoint_name}, threshold {sm.threshold}")
    return EXIT_OK


def cmd_workflow_run(backend: Any, args: argparse.Namespace, out: Output) -> int:
    key = None
    if args.image:
        data = read_file(args.image, "image", IMAGE_FILE_LIMIT)
        check_batch(args.count)  # refused before the image is stored, so a refused run leaves nothing behind
        if args.threshold is not None:
            check_threshold(args.threshold)
        backend.describe_state_machine(args.state_machine)
        key = backend.upload_workflow_image(args.image, data)
    try:
        arns, partly = backend.start_workflow_batch(args.count, key, args.threshold, args.state_machine), None
    except BatchPartlyStarted as exc:  # what started still runs: wait for it and list it, then say what did not
        arns, partly = exc.started, exc
    try:
        executions = backend.wait_workflow_executions(arns)
    except ResourceNotFound:  # a cleanup removed some while this waited: list the others, say how many went
        executions, gone = [], 0
        for arn in arns:
            try:
                executions.extend(backend.wait_workflow_executions([arn]))
            except ResourceNotFound:
                gone += 1
        message = (f"{gone} of the {len(arns)} executions were removed while this waited (a cleanup of the state "
                   "machine's executions?); " + (f"the other {len(executions)} are listed." if executions
                                                 else "run them again if they are still wanted."))
        if partly is not None:
            message += f" {partly}"
        out.done({"executions": [execution_doc(e) for e in executions],
                  "error": {"code": "ExecutionDoesNotExist", "message": message}}, _executions_text(executions))
        print(f"scones: {message}", file=sys.stderr)
        return EXIT_ERROR
    out.done({"executions": [execution_doc(e) for e in executions]}, _executions_text(executions))
    if partly is not None:
        raise partly
    return EXIT_OK


def cmd_workflow_list(backend: Any, args: argparse.Namespace, out: Output) -> int:
    """Every execution (the backend's own default lists the newest 200), or the newest --limit N, saying
    how many more there are."""
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit} is not possible: list 1 or more executions, or leave --limit out "
                         "for all of them.")
    executions = backend.list_workflow_executions(limit=ALL_EXECUTIONS)
    shown = executions[:args.limit]
    for _ in range(LIST_ROUNDS):  # AWS describes a long list a few executions a call (newest first); waits for
        # the newest WAITED_FOR at most: older ones unread by then say "(not read yet)" rather than take minutes
        if not any(e.details_pending for e in shown[:WAITED_FOR]):
            break
        time.sleep(1.0)
        executions = backend.list_workflow_executions(limit=ALL_EXECUTIONS)
        shown = executions[:args.limit]
    total, hidden = len(executions), len(executions) - len(shown)
    text = _executions_text(shown)
    if hidden:
        text += (f"\n{hidden:,} older execution{'s' if hidden != 1 else ''} not shown ({total:,} in all): "
                 f"leave out --limit to list them all.")
    out.done({"executions": [execution_doc(e) for e in shown], "total": total, "truncated": hidden > 0}, text)
    return EXIT_OK


def cmd_workflow_history(backend: Any, args: argparse.Namespace, out: Output) -> int:
    e = backend.describe_workflow_execution(args.name)
    events = backend.workflow_execution_history(e.arn)
    doc = {"execution": e.arn, "status": e.status, "events": [_event(ev) for ev in events]}
    out.done(doc, "\n".join(f"{ev['id']:4} {ev['type']}" for ev in events))
    return EXIT_OK


def cmd_workflow_import(backend: Any, args: argparse.Namespace, out: Output) -> int:
    text = read_file(args.file, "definition", DEFINITION_FILE_LIMIT).decode("utf-8", "replace")
    mapping = parse_pairs(args.map, "--map", "classifyImage=classify_image", form="FUNCTION=HANDLER", allow_empty=False)
    sm = backend.import_workflow(text, mapping, args.name)
    doc = {"state_machine": sm.name, "mapping": {fn: stem for fn, stem in
                                                  backend.workflow_mapping(sm.name).items()}}
    out.done(doc, f"{sm.name}: " + ", ".join(f"{k} -> lambdas/{v}.py" for k, v in doc["mapping"].items()))
    return EXIT_OK


def cmd_monitor(backend: Any, args: argparse.Namespace, out: Output) -> int:
    doc = backend.monitor_summary(endpoint=args.endpoint, threshold=args.threshold, since=args.since)
    conf = doc["confidence"]
    text = (f"{doc['records']} records, {doc['below_threshold']} below the threshold {doc.get('threshold')}"
            + (f" ({doc['share_below']:.1%})" if doc["records"] else "")
            + (f"; confidence min {conf['min']:.3f}, p50 {conf['p50']:.3f}, mean {conf['mean']:.3f}" if doc["records"] else "")
            + (f"; {doc['broken_lines']} broken line(s)" if doc["broken_lines"] else ""))
    out.done(doc, text)
    return EXIT_OK


def resource_doc(r: Any) -> dict[str, Any]:
    return {"kind": r.kind, "name": r.name, "status": r.status, "size_bytes": r.size_bytes,
            "hourly_usd": r.hourly_usd, "detail": r.detail, "data": r.is_data, "created_here": r.created_here,
            "busy": r.busy}


def say_inventory_notes(backend: Any) -> None:
    """What the inventory just made could not look at (AWS: a tag search refused), on stderr."""
    for note in backend.inventory_notes():
        print(f"scones: {note}", file=sys.stderr)


def cmd_inventory(backend: Any, args: argparse.Namespace, out: Output) -> int:
    resources = backend.inventory()
    say_inventory_notes(backend)
    out.done({"resources": [resource_doc(r) for r in resources]},
             "\n".join(f"{r.kind:16} {r.name:45} {r.status:16} {human_size(r.size_bytes):>10}"
                       + ("" if r.created_here else f"  ({NOT_CREATED_HERE})") for r in resources)
             or "Nothing: the workspace holds no resources.")
    return EXIT_OK


def cmd_cleanup(backend: Any, args: argparse.Namespace, out: Output) -> int:
    if args.keep_data and not args.all:
        raise UsageError("--keep-data goes with --all.")
    if args.all and args.targets:
        raise UsageError(f"--all deletes everything, so it takes no KIND:NAME ({args.targets[0]}): pass --all "
                         "alone, or name what to delete without it.")
    if not args.all and not args.targets:
        raise UsageError("Name what to delete as KIND:NAME, or pass --all (see 'scones inventory').")
    targets = None
    if args.targets:
        targets = []
        for t in args.targets:
            kind, sep, name = t.partition(":")
            if not sep or not kind or not name:
                raise UsageError(f"{t!r} is not KIND:NAME, for example endpoint:scones-endpoint.")
            targets.append((kind, name))
    include_data = args.all and not args.keep_data

    def kept_data() -> list[tuple[str, str, str]]:  # what --keep-data kept is said in 'left', not left out
        if not args.keep_data:
            return []
        return [(r.kind, r.name, "kept: --keep-data") for r in backend.data_resources()]

    if not args.yes:
        resources = backend.inventory()
        going, left = backend.cleanup_plan(targets, include_data=include_data, resources=resources)
        left = [*left, *kept_data()]
        warnings = backend.cleanup_warnings(going, resources)
        doc = {"deleted": [], "would_delete": [{"kind": k, "name": n} for k, n in going],
               "left": [{"kind": k, "name": n, "reason": r} for k, n, r in left], "warnings": warnings}
        if out.as_json:
            out.done(doc, "")
        else:
            print("\n".join([f"would delete {k}:{n}" for k, n in going] + [f"would leave {k}:{n}: {r}" for k, n, r in left]
                             + [f"warning: {w}" for w in warnings])
                  or "Nothing to delete.")
        say_inventory_notes(backend)
        print("scones: nothing was deleted; " + ("add --yes to delete what is marked 'would delete'." if going
                                                  else "nothing would be deleted."), file=sys.stderr)
        return EXIT_ERROR
    report = backend.cleanup(targets, include_data=include_data)
    say_inventory_notes(backend)
    kept = kept_data()
    doc = {"deleted": [{"kind": k, "name": n} for k, n in report.deleted],
           "left": [{"kind": k, "name": n, "reason": r} for k, n, r in (*report.left, *kept)]}
    # Left because it was refused or failed: the command did not do what was asked, and a script must be able
    # to tell (exit 2, with the error object).
    refused = [(k, n, r) for k, n, r in report.left if left_by_this_workspace(r)]
    message = ""
    if refused:
        k, n, r = refused[0]
        more = f" (and {len(refused) - 1} more, in 'left')" if len(refused) > 1 else ""
        message = f"{k}:{n} was not deleted{more}: {r}"
        doc["error"] = {"code": "CleanupIncomplete", "message": message}
    out.done(doc, "\n".join([f"deleted {k}:{n}" for k, n in report.deleted]
                            + [f"left    {k}:{n}: {r}" for k, n, r in (*report.left, *kept)]) or "Nothing to delete.")
    if refused:
        print(f"scones: {message}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def role_doc(plan: Any, arn: str | None = None) -> dict[str, Any]:
    doc = {"kind": plan.kind, "name": plan.name, "exists": plan.exists, "trust_policy": plan.trust_policy,
           "policies": plan.policies}
    if arn is not None:
        doc["arn"] = arn
    return doc


def cmd_roles(backend: Any, args: argparse.Namespace, out: Output) -> int:
    plan = backend.role_plan()
    if not args.yes:
        doc = {"roles": [role_doc(p) for p in plan], "created": False}
        if out.as_json:
            out.done(doc, "")
        else:
            print("\n\n".join(f"{'update' if p.exists else 'create'} role {p.name} ({p.kind}), trusted by "
                                f"{p.trust_policy['Statement'][0]['Principal']['Service']}:\n"
                                + json.dumps(p.policies, indent=2) for p in plan))
        print("scones: no role was created; add --yes to create (or update) the roles shown.", file=sys.stderr)
        return EXIT_ERROR
    arns = backend.provision_roles(plan)
    doc = {"roles": [role_doc(p, arns.get(p.kind)) for p in plan], "created": True}
    out.done(doc, "\n".join(f"{p.kind:10} {arns.get(p.kind)}" for p in plan))
    return EXIT_OK


# -- entry point -------------------------------------------------------------------------------


def database_problem(exc: sqlite3.DatabaseError, home: str) -> str:
    """The workspace database's failure as one sentence that says what to do."""
    text = str(exc)
    if "full" in text:
        return f"The disk holding the workspace {home} is full ({text}): free some space there and run the command again."
    if "malformed" in text or "not a database" in text:
        return (f"The workspace database in {home} is damaged ({text}): move scones.db aside to start the workspace's "
                "records afresh (the data in its buckets stays), or restore it from a copy.")
    if "locked" in text or "busy" in text:
        return f"The workspace database in {home} stayed locked by another process ({text}): run the command again."
    if "readonly" in text or "unable to open" in text:
        return f"The workspace database in {home} cannot be written ({text}): check the folder's permissions and space."
    return f"The workspace database in {home} failed ({text}); set SCONES_DEBUG=1 for the traceback."


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    out = Output("--json" in (sys.argv[1:] if argv is None else argv))  # errors before parsing know no more
    home = "the workspace"
    args: argparse.Namespace | None = None
    try:
        args = parser.parse_args(argv)
        out = Output(bool(args.json))
        if not getattr(args, "command", None):
            raise UsageError("Name a command, for example 'scones status' (see 'scones --help').")
        from backend import get_backend
        from backend.settings import load_settings

        env = dict(os.environ)  # the flags win over the environment, which is then not consulted for them
        env.update({k: v for k, v in (("SCONES_HOME", args.home), ("SCONES_BACKEND", args.backend)) if v})
        settings = load_settings(env)
        home = str(settings.home)
        backend = get_backend(settings)
        handler: Callable[..., int] = args.handler
        return handler(backend, args, out)
    except UsageError as exc:
        out.error("UsageError", str(exc))
        return EXIT_ERROR
    except SconesError as exc:
        extra = diagnostics_doc(exc)
        out.error(exc.code, validate_pointer(str(exc), extra, getattr(args, "file", None), out.as_json), extra)
        return EXIT_ERROR
    except KeyboardInterrupt:
        out.error("Interrupted", "interrupted.")
        return EXIT_ERROR
    except BrokenPipeError:  # the reader went away (`scones ... | head`): the work is done, say nothing
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail again
        return EXIT_OK
    except sqlite3.DatabaseError as exc:
        if os.environ.get("SCONES_DEBUG"):
            raise
        out.error("WorkspaceDatabaseError", database_problem(exc, home))
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the contract is one sentence, never a traceback
        if os.environ.get("SCONES_DEBUG"):
            raise
        out.error(type(exc).__name__, f"unexpected {type(exc).__name__}: {exc} (set SCONES_DEBUG=1 for the traceback).")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
