"""`scones ...`: the dashboard's operations for scripts, JSON out. See shared docs CLI.md.

Exit codes: 0 done; 1 a job the command waited for ended Failed or Stopped; 2 bad usage, bad input
or a backend error (one sentence on stderr, never a traceback).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

from backend.api import JOB_COMPLETED, SconesError

EXIT_OK, EXIT_JOB_FAILED, EXIT_ERROR = 0, 1, 2


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence, exit 2, no usage dump
        raise UsageError(f"{message} (see 'scones --help').")


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

    p = sub.add_parser("status", help="the six workflow steps and their state")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("train", help="start a training job (the image-classification algorithm)")
    p.add_argument("--epochs", type=int, default=None, help="same as --hp epochs=N")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="a hyperparameter; repeat it")
    p.add_argument("--preset", default="local", help="defaults to start from: local (CPU here) or sagemaker")
    p.add_argument("--wait", action="store_true", help="wait for the job to end")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("jobs", help="training jobs, newest first")
    p.set_defaults(handler=cmd_jobs)

    p = sub.add_parser("evaluate", help="evaluate a training job's model on the test split")
    p.add_argument("--job", required=True, help="training job name")
    p.set_defaults(handler=cmd_evaluate)

    for p in sub.choices.values():
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


def _wait(backend: Any, job_id: str, out: Output) -> Any:
    while True:
        job = backend.describe_job(job_id)
        if job.done:
            return job
        out.progress(f"{job.job_id}: {job.message} ({job.progress:.0%})")
        time.sleep(0.1)


# -- commands ----------------------------------------------------------------------------------


def cmd_stage(backend: Any, args: argparse.Namespace, out: Output) -> int:
    classes = [c for c in args.classes.split(",")] if args.classes else None
    source = args.source
    fallback = source is None  # the default official URL falls back to the sample, with a note
    job_id = backend.start_staging(source or "official", classes, fallback_to_sample=fallback)
    job = _wait(backend, job_id, out)
    if job.status != JOB_COMPLETED:
        doc = {"job_id": job.job_id, "status": job.status, "error": job.failure_reason}
        if out.as_json:
            out.done(doc, "")
        print(f"Staging {job.status.lower()}: {job.failure_reason}", file=sys.stderr)
        return EXIT_JOB_FAILED
    doc = dict(job.result)
    doc["job_id"] = job.job_id
    lines = [f"Staged into s3://{doc['bucket']}/ in {doc['seconds']:.2f} s (source: {doc['source']})"]
    for split, counts in doc["counts"].items():
        lines.append(f"  {split:5}: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
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


def parse_hps(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--hp {pair!r} is not NAME=VALUE, for example --hp learning_rate=0.05")
        out[name.strip()] = value.strip()
    return out


def job_doc(job: Any) -> dict[str, Any]:
    return {"job_name": job.job_name, "status": job.status, "secondary_status": job.secondary_status,
            "created": job.created, "seconds": round(job.seconds, 1), "metrics": job.final_metrics,
            "failure_reason": job.failure_reason, "model_artifact": job.model_artifact}


def cmd_train(backend: Any, args: argparse.Namespace, out: Output) -> int:
    hps = backend.default_training_hyperparameters(args.preset)
    hps.update(parse_hps(args.hp))
    if args.epochs is not None:
        hps["epochs"] = str(args.epochs)
    name = backend.create_training_job(hps)
    job = backend.describe_training_job(name)
    while args.wait and job.status not in ("Completed", "Failed", "Stopped"):
        last = job.epochs[-1] if job.epochs else {}
        acc = f", validation accuracy {last['validation:accuracy']:.3f}" if "validation:accuracy" in last else ""
        out.progress(f"{name}: {job.secondary_status}, epoch {len(job.epochs)} of {hps.get('epochs')}{acc}")
        time.sleep(0.5)
        job = backend.describe_training_job(name)
    doc = job_doc(job) if args.wait else {"job_name": job.job_name, "status": job.status}
    text = f"{job.job_name}: {job.status}"
    if args.wait and job.final_metrics:
        text += " · " + ", ".join(f"{k} {v:.4f}" for k, v in job.final_metrics.items())
    if job.failure_reason:
        text += f" · {job.failure_reason}"
    out.done(doc, text)
    return EXIT_JOB_FAILED if args.wait and job.status in ("Failed", "Stopped") else EXIT_OK


def cmd_jobs(backend: Any, args: argparse.Namespace, out: Output) -> int:
    jobs = backend.list_training_jobs()
    doc = {"jobs": [job_doc(j) for j in jobs]}
    lines = [f"{j.job_name:40} {j.status:11} {j.seconds:7.1f}s  "
             + " ".join(f"{k}={v:.3f}" for k, v in j.final_metrics.items()) for j in jobs]
    out.done(doc, "\n".join(lines) or "No training jobs yet.")
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


# -- entry point -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            raise UsageError("Name a command, for example 'scones status' (see 'scones --help').")
        from backend import get_backend
        from backend.settings import load_settings

        settings = load_settings().with_overrides(home=args.home, backend=args.backend)
        backend = get_backend(settings)
        handler: Callable[..., int] = args.handler
        return handler(backend, args, Output(bool(args.json)))
    except UsageError as exc:
        print(f"scones: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except SconesError as exc:
        print(f"scones: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("scones: interrupted.", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
