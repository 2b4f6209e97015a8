"""The workflow's definition and the rules both backends share: the `asl/` template and its
placeholders, the three functions and their handler files, importing a console-exported
definition, the console's per-state view of an execution, and an uploaded image re-encoded for
the model.

Pure Python (no boto3, no SQLite): the local WorkflowService and the AWS workflow both build on it,
so a definition that imports locally imports the same way on AWS.
"""
from __future__ import annotations

import io
import json
import re
import uuid
from pathlib import Path, PurePath
from typing import Any, Callable

from backend.api import ResourceInUse, ResourceNotFound, StateRun, ValidationError
from backend.images import eight_bit, refuse_decompression_bombs

REPO_ROOT = Path(__file__).resolve().parents[1]
ASL_DIR = REPO_ROOT / "asl"
LAMBDAS_DIR = REPO_ROOT / "lambdas"
WORKFLOW_FILE = ASL_DIR / "scones_workflow.asl.json"
SEED_HANDLERS = {
    "serializeImageData": "serialize_image_data",
    "classifyImage": "classify_image",
    "filterInferences": "filter_inferences",
}
PLACEHOLDERS = {
    "SerializeImageDataArn": "serializeImageData",
    "ClassifyImageArn": "classifyImage",
    "FilterInferencesArn": "filterInferences",
}
UPLOAD_PREFIX = "uploads/"
# uploads/<12 hex>-<the file's own name, made safe>.png: an execution that fails names the image the operator
# chose (uploads/bdace0f6902d.png named nothing: audit); the hex keeps two uploads of one name apart.
UPLOAD_KEY_RE = re.compile(rf"{UPLOAD_PREFIX}[0-9a-f]{{12}}(-[A-Za-z0-9_.-]{{1,40}})?\.png")
MAX_UPLOAD_PIXELS = 50_000_000
_PLACEHOLDER_RE = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
FUNCTION_ARN_RE = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:([^:]+)(:[^:]+)?$")


def upload_key(filename: str) -> str:
    """Where an uploaded image is stored (as a PNG): uploads/3f9c2a1b7d4e-My_photo.png for "My photo!.jpg"."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", PurePath(filename or "").stem).strip("._-")[:40].strip("._-")
    key = f"{UPLOAD_PREFIX}{uuid.uuid4().hex[:12]}" + (f"-{stem}" if stem else "") + ".png"
    assert UPLOAD_KEY_RE.fullmatch(key), key
    return key


def fill_placeholders(text: str, values: dict[str, str]) -> str:
    """`${KEY}` -> value; a placeholder without a value is a clear error naming it."""
    missing = sorted({m for m in _PLACEHOLDER_RE.findall(text) if m not in values})
    if missing:
        raise ValidationError(f"The definition has placeholder(s) {', '.join('${' + m + '}' for m in missing)} "
                              "with no value: pass --param KEY=VALUE for each.")
    # Inside a JSON string a value is escaped, so one holding a quote or a backslash stays that value instead
    # of breaking the definition or adding JSON of its own; outside one (`"Items": ${ITEMS}`) it is JSON text.
    out, last, in_string, escaped, scanned = [], 0, False, False, 0
    for m in _PLACEHOLDER_RE.finditer(text):
        for ch in text[scanned:m.start()]:  # the quoting state at the placeholder
            if escaped:
                escaped = False
            elif ch == "\\" and in_string:
                escaped = True
            elif ch == '"':
                in_string = not in_string
        scanned = m.end()
        value = str(values[m.group(1)])
        out += [text[last:m.start()], json.dumps(value)[1:-1] if in_string else value]
        last = m.end()
    return "".join(out) + text[last:]


def workflow_definition(arn_of: Callable[[str], str], template: str | None = None) -> str:
    """The `asl/` template (or another) with each function placeholder set to `arn_of(function name)`."""
    text = WORKFLOW_FILE.read_text() if template is None else template
    return fill_placeholders(text, {key: arn_of(fn) for key, fn in PLACEHOLDERS.items()})


def function_name_of(value: str) -> str:
    """'name', 'name:qualifier' or a function ARN -> the function's name."""
    m = FUNCTION_ARN_RE.match(value)
    if m:
        return m.group(1)
    return value.split(":", 1)[0]


def called_functions(definition: dict[str, Any]) -> list[str]:
    """Function names the Task states call (Parallel branches and Map iterators included)."""
    found: list[str] = []

    def walk(states: dict[str, Any]) -> None:
        for state in states.values():
            if not isinstance(state, dict):
                continue
            if state.get("Type") == "Task":
                resource = state.get("Resource", "")
                params = state.get("Parameters") or {}
                if resource.startswith("arn:aws:states:::lambda:invoke") and isinstance(params.get("FunctionName"), str):
                    found.append(function_name_of(params["FunctionName"]))
                elif FUNCTION_ARN_RE.match(resource):
                    found.append(function_name_of(resource))
            for branch in state.get("Branches", []) or []:
                walk(branch.get("States", {}))
            for key in ("Iterator", "ItemProcessor"):
                if isinstance(state.get(key), dict):
                    walk(state[key].get("States", {}))

    walk(definition.get("States", {}))
    return list(dict.fromkeys(found))


def handler_stems() -> list[str]:
    """The handler files in lambdas/ a function can run (by file stem)."""
    return sorted(p.stem for p in LAMBDAS_DIR.glob("*.py") if p.stem != "event_shapes" and not p.stem.startswith("_"))


def parse_definition(text: str) -> dict[str, Any]:
    """A definition's JSON text -> its object; a clear error, with where the JSON breaks, otherwise."""
    try:
        definition = json.loads(text)
    except RecursionError:
        raise ValidationError("The definition's JSON is nested too deeply.") from None
    except ValueError as exc:
        from backend.local.states.validation import json_error_text

        raise ValidationError(f"The definition is not valid JSON: {json_error_text(exc)}.") from None
    if not isinstance(definition, dict):
        raise ValidationError("The definition is not a JSON object with StartAt and States.")
    return definition


def resolve_import(definition: dict[str, Any], mapping: dict[str, str] | None) -> dict[str, str]:
    """{function the definition calls: handler stem}; refused, naming the function, when one has none.

    The seed's function names map to their handlers by default; `mapping` adds or overrides.
    """
    stems = handler_stems()
    mapping = dict(mapping or {})
    bad = {fn: stem for fn, stem in mapping.items() if stem not in stems}
    if bad:
        fn, stem = next(iter(bad.items()))
        raise ValidationError(f"The mapping {fn}={stem} names no handler file lambdas/{stem}.py; map {fn} to one of "
                              f"{', '.join(stems)}.")
    called = called_functions(definition)
    unused = [fn for fn in mapping if fn not in called]
    if unused:
        raise ValidationError(f"The mapping names function {unused[0]!r}, which the definition does not call; it calls "
                              f"{', '.join(called) or 'no Lambda function'}.")
    resolved: dict[str, str] = {}
    for fn in called:
        stem = mapping.get(fn) or SEED_HANDLERS.get(fn)
        if stem is None:
            raise ValidationError(f"The definition calls function {fn!r}, which has no handler file in lambdas/: map it "
                                  f"to one of {', '.join(stems)} ({fn}=<handler>).")
        resolved[fn] = stem
    return resolved


def rewrite_function_arns(definition: dict[str, Any], functions: list[str], arn_of: Callable[[str], str]) -> str:
    """The definition as text, with each function ARN of another account or region made `arn_of(name)`."""
    text = json.dumps(definition)
    for fn in functions:
        text = re.sub(rf"arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{{12}}:function:{re.escape(fn)}(?=[\":])",
                      arn_of(fn), text)
    return text


def find_inferences(value: Any) -> list[float] | None:
    """The classifier's `inferences` (a list of floats) wherever a state's output carries them."""
    if isinstance(value, dict):
        inf = value.get("inferences")
        if isinstance(inf, list) and inf and all(isinstance(x, (int, float)) for x in inf):
            return [float(x) for x in inf]
        for key in ("body", "Payload"):
            if key in value:
                found = find_inferences(value[key])
                if found:
                    return found
    return None


def parse_json(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def inferences_from_history(history: list[dict[str, Any]]) -> list[float] | None:
    """The newest inferences in an execution's history (a threshold failure has no output)."""
    for event in reversed(history):
        d = event.get("stateExitedEventDetails") or event.get("taskSucceededEventDetails")
        if d:
            found = find_inferences(parse_json(d.get("output")))
            if found:
                return found
    return None


_BLOCK_TYPES = ("Map", "Parallel")  # states whose inner states' events come between their own


def state_runs(definition: dict[str, Any], history: list[dict[str, Any]]) -> list[StateRun]:
    """Each top-level state's part in one execution, from its history (as the console's graph).

    Inside a Map or Parallel state the events of its inner states are its own: they never make another
    state current (a definition's state names are unique), an inner Task's failure is only a candidate
    for its error, and the last ...StateSucceeded or ...StateFailed before it exits is how it ended
    (its inner Maps and Parallels end before it does).
    """
    top = definition.get("States", {})
    runs: dict[str, dict[str, Any]] = {name: {"status": "not_run"} for name in top}
    current: str | None = None
    block = False  # the current state is a Map or Parallel
    for event in history:
        etype = event["type"]
        if etype.endswith("StateEntered"):
            d = event.get("stateEnteredEventDetails", {})
            if d.get("name") in runs:  # an inner state's name is never a top-level one
                current = d["name"]
                spec = top[current]
                block = isinstance(spec, dict) and spec.get("Type") in _BLOCK_TYPES
                runs[current] = {"status": "running", "input": parse_json(d.get("input"))}
            continue
        if current not in runs:
            continue
        run = runs[current]
        if etype.endswith("StateExited"):
            d = event.get("stateExitedEventDetails", {})
            if d.get("name") != current:
                continue  # an inner state's
            output = parse_json(d.get("output"))
            # A state that failed but handed on through Catch exits too: caught.
            caught = run.pop("attempt_failed", False) if block else bool(run.get("error"))
            if caught and block:
                run["error"], run["cause"] = _caught_error(output) or (run.get("error"), run.get("cause"))
            run.update(status="caught" if caught else "succeeded", output=output)
        elif block and etype in ("MapStateFailed", "ParallelStateFailed"):
            run.update(attempt_failed=True, error=run.get("inner_error"), cause=run.get("inner_cause"))
        elif block and etype in ("MapStateSucceeded", "ParallelStateSucceeded"):
            run.update(attempt_failed=False, error=None, cause=None)  # an inner one, or a retry that worked
        elif etype == "TaskSucceeded" and not block:  # a retry that worked clears the failure
            run.pop("error", None)
            run.pop("cause", None)
        elif etype in ("TaskFailed", "TaskTimedOut"):
            d = event.get("taskFailedEventDetails") or event.get("taskTimedOutEventDetails") or {}
            if block:
                run.update(inner_error=d.get("error"), inner_cause=d.get("cause"))
            else:
                run.update(error=d.get("error"), cause=d.get("cause"))
        elif etype in ("ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted"):
            d = next((v for k, v in event.items() if k.endswith("EventDetails")), {}) or {}
            if block:  # what a Map or Parallel raised is what the execution failed with
                error, cause = d.get("error") or run.get("error"), d.get("cause") or run.get("cause")
            else:
                error, cause = run.get("error") or d.get("error"), run.get("cause") or d.get("cause")
            run.update(status="failed", error=error, cause=cause)
    return [StateRun(name, r["status"], r.get("input"), r.get("output"), r.get("error"), r.get("cause"))
            for name, r in runs.items()]


def _caught_error(value: Any, depth: int = 0) -> tuple[str, str | None] | None:
    """The {"Error", "Cause"} a Catch put in a state's output (at its ResultPath), when it is there."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("Error"), str) and set(value) <= {"Error", "Cause"}:
        cause = value.get("Cause")
        return value["Error"], cause if isinstance(cause, str) else None
    if depth >= 20:
        return None
    for item in value.values():
        found = _caught_error(item, depth + 1)
        if found:
            return found
    return None


def encode_upload(filename: str, data: bytes, size: tuple[int, int]) -> bytes:
    """Any image file -> PNG bytes at the model's input size; a clear error for what is not an image.

    An image of more than MAX_UPLOAD_PIXELS is refused from its header, before its pixels are decoded:
    Pillow itself only warns up to twice its limit, and raises above it."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValidationError(f"{filename or 'The upload'} is empty: choose a PNG or JPEG image.")
    def too_big(size: tuple[int, int] | None = None, pixels: int | None = None) -> ValidationError:
        has = (f"is {size[0]:,}×{size[1]:,} ({size[0] * size[1]:,} pixels)" if size else
               f"has {pixels:,} pixels" if pixels else "has more pixels than that")
        return ValidationError(f"{filename} {has}; the limit is {MAX_UPLOAD_PIXELS:,} pixels: send a smaller image.")

    def pillows_count(exc: Exception) -> int | None:  # "Image size (81000000 pixels) exceeds limit of ..."
        found = re.search(r"\((\d+) pixels\)", str(exc))
        return int(found.group(1)) if found else None

    Image.MAX_IMAGE_PIXELS = MAX_UPLOAD_PIXELS
    refuse_decompression_bombs()  # Pillow's warning for an image over its limit is our refusal, not stderr
    try:
        img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise too_big(pixels=pillows_count(exc)) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ValidationError(f"{filename} is not an image that can be read: send a PNG or JPEG.") from None
    with img:
        if img.width * img.height > MAX_UPLOAD_PIXELS:  # Pillow's limit set higher elsewhere in this process
            raise too_big(img.size)
        try:
            img.load()
            rgb = eight_bit(img).convert("RGB")  # a 16-bit PNG scaled, not clipped to white
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise too_big(img.size) from None
        except (OSError, ValueError, SyntaxError):  # the header read, the pixels did not
            raise ValidationError(f"{filename} is a {img.format or 'image'} file whose data is cut short or "
                                  "corrupt: send the whole image again.") from None
    buf = io.BytesIO()
    rgb.resize(size, Image.BILINEAR).save(buf, format="PNG")
    return buf.getvalue()


def check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValidationError(f"Threshold {threshold} is outside 0..1: choose a confidence between 0 and 1.")
    return threshold


_MACHINE_NAME_FORBIDDEN = re.compile(r'[\s<>{}\[\]?*"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]')


def check_state_machine_name(name: str) -> str:
    """Step Functions' naming rule: 1 to 80 characters, none of whitespace, brackets, wildcards,
    the special characters " # % \\ ^ | ~ ` $ & , ; : / or control characters."""
    if not isinstance(name, str) or not 1 <= len(name) <= 80:
        raise ValidationError(f"State machine name {name!r} must be 1 to 80 characters long.")
    bad = _MACHINE_NAME_FORBIDDEN.search(name)
    if bad:
        raise ValidationError(f"State machine name {name!r} contains {bad.group()!r}: use letters, digits, '-' and '_' "
                              "(no spaces, brackets, wildcards, slashes or other special characters).")
    return name


def shared_function_target(machines: list[Any], handlers_of: Callable[[str], dict[str, str]], name: str,
                           resolved: dict[str, str], endpoint_name: str | None,
                           threshold: float | None) -> tuple[str | None, float | None]:
    """The endpoint and threshold an import of `name` calling `resolved` ({function: handler stem}) must use.

    A Lambda function has one configuration: functions the import shares with another state machine keep
    that machine's endpoint and threshold (taken when not given), or the import would silently re-point
    it; a different one given, or the shared function mapped to another handler file, is refused."""
    for other in machines:
        shared = sorted(set(other.functions) & set(resolved))
        if other.name == name or not shared:
            continue
        endpoint_name = endpoint_name or other.endpoint_name
        threshold = other.threshold if threshold is None else threshold
        if endpoint_name != other.endpoint_name or abs(float(threshold) - other.threshold) > 1e-12:
            raise ResourceInUse(
                f"This definition calls {', '.join(shared)}, which state machine {other.name} uses too (endpoint "
                f"{other.endpoint_name}, threshold {other.threshold:g}) and a Lambda function has one "
                f"configuration: import with that endpoint and threshold, or name other functions in the definition.")
        handlers = handlers_of(other.name)
        rewired = [fn for fn in shared if handlers.get(fn) not in (None, "?", resolved[fn])]
        if rewired:
            fn = rewired[0]
            raise ResourceInUse(
                f"Function {fn} runs lambdas/{handlers[fn]}.py for state machine {other.name}; mapping it to "
                f"{resolved[fn]} would change that machine too: map it to {handlers[fn]}, or name another "
                "function in the definition.")
    return endpoint_name, threshold


def import_target(machines: list[Any], handlers_of: Callable[[str], dict[str, str]], name: str,
                  resolved: dict[str, str], endpoint_name: str | None, threshold: float | None,
                  target: Callable[[str | None, float | None], tuple[str, float]],
                  describe_endpoint: Callable[[str], Any]) -> tuple[str, float]:
    """The endpoint and threshold an import runs with: shared_function_target's, checked by the backend's
    `target` (the newest InService endpoint when none; ResourceNotFound for one that does not exist). An
    endpoint inherited from a machine the import shares functions with, and since deleted, is named as such
    (only when the endpoint itself is gone: a deleted model behind it keeps the target's own message)."""
    given = endpoint_name
    endpoint_name, threshold = shared_function_target(machines, handlers_of, name, resolved, endpoint_name, threshold)
    try:
        return target(endpoint_name, threshold)
    except ResourceNotFound:
        if given is None and endpoint_name:
            try:
                describe_endpoint(endpoint_name)
            except ResourceNotFound:
                raise ResourceNotFound(inherited_endpoint_gone(machines, name, resolved, endpoint_name)) from None
        raise


def inherited_endpoint_gone(machines: list[Any], name: str, resolved: dict[str, str], endpoint: str) -> str:
    """What an import is told when a function it shares with another state machine (so that machine's
    endpoint, see shared_function_target) classifies with an endpoint that no longer exists."""
    sharers = [m.name for m in machines if m.name != name and set(m.functions) & set(resolved)]
    # The deployed workflow first: deploying it to another endpoint re-points the functions for every machine.
    sharer = "scones-workflow" if "scones-workflow" in sharers else (sharers or ["another"])[0]
    return (f"This definition calls functions that state machine {sharer} uses too, and they classify with "
            f"endpoint {endpoint}, which no longer exists: point {sharer} at an InService endpoint first ("
            + ("'scones workflow deploy --endpoint NAME', or Deploy on the Workflow page" if sharer == "scones-workflow"
               else "import it again, or delete it") + "), then import this one.")


def deployed_not_replaced(name: str) -> str:
    """Why an import may not take the name of the workflow that 'workflow deploy' made."""
    return (f"State machine {name} is the workflow deployed from asl/ ('scones workflow deploy'); an import does not "
            f"replace it: choose another state machine name, or delete it first (Clean up page, or "
            f"'scones cleanup state-machine:{name} --yes').")


def check_batch(count: int) -> int:
    if not 1 <= int(count) <= 1000:
        raise ValidationError(f"A batch of {count} is not possible: run 1 to 1,000 executions at a time.")
    return int(count)
