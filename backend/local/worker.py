"""Worker process entry point: `python -m backend.local.worker --home DIR JOB_ID`.

Runs one job to its end and records the outcome; a named error becomes the job's failure reason
(one sentence), anything else becomes a failure that points at the job's log.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback

from backend.api import SconesError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backend.local.worker")
    parser.add_argument("--home", required=True)
    parser.add_argument("--backend", default="local")
    parser.add_argument("job_id")
    args = parser.parse_args(argv)

    from backend import get_backend
    from backend.settings import load_settings

    backend = get_backend(load_settings().with_overrides(home=args.home, backend=args.backend))
    runner = backend.jobs
    job = runner.describe(args.job_id)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.25 or fraction >= 1.0:
            last[0] = now
            runner.progress(job.job_id, fraction, message)

    try:
        result = backend.run_job(job, progress)
    except SconesError as exc:
        runner.fail(job.job_id, str(exc))
        return 1
    except Exception as exc:  # noqa: BLE001 - the job must end Failed, with the log holding the trace
        traceback.print_exc()
        runner.fail(job.job_id, f"Internal error: {type(exc).__name__}: {exc} (see logs/{job.job_id}.log).")
        return 1
    runner.complete(job.job_id, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
