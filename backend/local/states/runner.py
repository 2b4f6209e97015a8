"""Who runs an execution: a process id plus that process's start time (a pid alone is reused)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


@lru_cache(maxsize=1)
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """An opaque start-time token for `pid`, or None when the platform cannot say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    return f"{_boot_id()}:{fields[19]}" if len(fields) > 19 else None


def pid_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class RunnerIdentity:
    pid: int
    start: str

    @classmethod
    def current(cls) -> "RunnerIdentity":
        pid = os.getpid()
        return cls(pid, process_start(pid) or "")

    def alive(self) -> bool:
        if not pid_exists(self.pid):
            return False
        now = process_start(self.pid)
        return not (self.start and now is not None and now != self.start)

    def describe(self) -> str:
        return f"process {self.pid}"
