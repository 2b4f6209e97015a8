"""The loopback gateway in a process of its own: `python -m backend.local.gateway_process`.

The handlers' S3 and InvokeEndpoint calls are parsed and answered here, on the other core, instead
of in the process that runs the States engine (one GIL would carry both). The process writes its
port to a ready file, and ends when the process that started it is gone.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from backend.api import SconesError

READY_TIMEOUT = 30.0
LOW_DISK_BYTES = 1024 * 1024  # under this much free space, a start that failed is put down to a full disk


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="backend.local.gateway_process")
    ap.add_argument("--home", required=True)
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--ready", required=True, help="file to write {port} into once serving")
    args = ap.parse_args(argv)

    from backend import get_backend
    from backend.local.gateway import Gateway, probabilities_json
    from backend.settings import load_settings

    backend = get_backend(load_settings().with_overrides(home=args.home, backend="local"))

    def invoke_bytes(name: str, body: bytes, content_type: str) -> bytes:
        return probabilities_json(backend.invoke_endpoint(name, body, content_type))

    gateway = Gateway(backend.store, invoke_bytes).start()
    ready = Path(args.ready)
    tmp = ready.with_name(ready.name + ".tmp")
    try:
        tmp.write_text(json.dumps({"port": gateway.port, "pid": os.getpid()}))
        tmp.replace(ready)
    except OSError:
        gateway.close()
        tmp.unlink(missing_ok=True)
        raise
    try:
        while os.getppid() == args.parent:
            time.sleep(0.5)
    finally:
        gateway.close()
    return 0


class GatewayProcess:
    """Starts the gateway process for this process and stops it on close()."""

    def __init__(self, home: Path, logs_dir: Path):
        run_dir = Path(home) / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        logs_dir.mkdir(parents=True, exist_ok=True)
        self.ready = run_dir / f"gateway-{os.getpid()}-{time.monotonic_ns()}.json"
        self.log_path = logs_dir / "gateway.log"
        with open(self.log_path, "ab") as log:
            log_start = log.tell()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "backend.local.gateway_process", "--home", str(home),
                 "--parent", str(os.getpid()), "--ready", str(self.ready)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, close_fds=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                timed_out = self.proc.poll() is None
                self.close()
                raise SconesError(self._start_failure(Path(home), log_start, timed_out))
            time.sleep(0.02)
        self.port = json.loads(self.ready.read_text())["port"]
        self.ready.unlink(missing_ok=True)  # read once: a process that ends without close() leaves nothing behind
        self.url = f"http://127.0.0.1:{self.port}"

    def _start_failure(self, home: Path, log_start: int, timed_out: bool) -> str:
        """Why the process did not start, in one sentence: a full disk, or the last line it logged."""
        try:
            free: int | None = shutil.disk_usage(home).free
        except OSError:
            free = None
        if free is not None and free < LOW_DISK_BYTES:
            return (f"The local AWS gateway did not start: the disk holding the workspace {home} is full "
                    f"({free:,} bytes free); free some space there and try again.")
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(log_start, log.seek(0, os.SEEK_END) - 64 * 1024))
                lines = [line.strip() for line in log.read().decode("utf-8", "replace").splitlines()]
        except OSError:
            lines = []
        said = next((line for line in reversed(lines) if line), "")
        if len(said) > 300:
            said = said[:300] + "..."
        reason = f": {said}" if said else f" within {READY_TIMEOUT:.0f} s" if timed_out else ""
        return f"The local AWS gateway did not start{reason} (see {self.log_path})."

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.ready.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
