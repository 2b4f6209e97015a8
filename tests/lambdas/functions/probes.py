"""Small handlers the runtime tests invoke: each shows one Lambda behaviour. Standard library only."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from typing import Any

logger = logging.getLogger(__name__)
print("probes imported")  # an init-phase line: it belongs to the first invocation's log


def echo(event: Any, context: Any) -> Any:
    return event


def describe(event: Any, context: Any) -> dict[str, Any]:
    """What the environment and the context look like from inside."""
    names = event.get("env", []) if isinstance(event, dict) else []
    try:
        import backend  # noqa: F401  (the project must not be importable from a handler)
        project_importable = True
    except ImportError:
        project_importable = False
    return {
        "env": {n: os.environ.get(n) for n in names},
        "pid": os.getpid(),
        "sys_path_0": sys.path[0],
        "project_importable": project_importable,
        "context": {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
        },
    }


def sleep(event: Any, context: Any) -> dict[str, Any]:
    print(f"sleeping {event['seconds']} s")
    began = time.time()
    time.sleep(float(event["seconds"]))
    return {"slept": event["seconds"], "pid": os.getpid(), "began": began, "ended": time.time()}


def sleep_with_child(event: Any, context: Any) -> None:
    """Starts a grandchild, reports its pid, then hangs: a timeout must end both."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print(f"child pid {child.pid}")
    time.sleep(60)


def talk(event: Any, context: Any) -> str:
    print("hello from print", event.get("n"))
    print("to stderr", file=sys.stderr)
    logger.warning("a warning %s", event.get("n"))
    logger.info("an info line the default level hides")
    return "ok"


class CustomFailure(Exception):
    pass


def fail(event: Any, context: Any) -> None:
    raise CustomFailure(f"it broke on {event.get('what', 'purpose')}")


def not_json(event: Any, context: Any) -> Any:
    return {"when": object()}


def leave(event: Any, context: Any) -> None:
    os._exit(3)


def fill_stdout(event: Any, context: Any) -> str:
    os.write(1, b"raw bytes on fd 1 must not break the protocol\n")
    return "still fine"
