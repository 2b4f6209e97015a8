"""Intrinsic functions (`States.Format(...)` and friends), parsed once and evaluated per state.

A call is parsed into a small tree at validation time, so a definition with a bad call is refused
before it runs. At run time a failing function raises States.IntrinsicFailure; a path argument that
names nothing raises PathNotFound, which the caller maps to the error its field calls for.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from . import errors
from .jsonpath import JsonPath, PathSyntaxError, compile_path

MAX_NESTING = 10  # "You can nest up to 10 intrinsic functions within a field"
_MAX_INPUT_CHARS = 10000
_MAX_ARRAY = 1000
_BRACE_OPEN, _BRACE_CLOSE = "\ue000", "\ue001"  # escaped braces inside literals, until Format sees them


class IntrinsicSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class PathArg:
    path: JsonPath


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple
    text: str

    @property
    def uses_context(self) -> bool:
        return any(
            (isinstance(a, PathArg) and a.path.context) or (isinstance(a, Call) and a.uses_context)
            for a in self.args
        )


def looks_like_call(text: str) -> bool:
    return isinstance(text, str) and text.lstrip().startswith("States.")


def parse(text: str) -> Call:
    parser = _Parser(text)
    call = parser.call(depth=1)
    parser.skip_ws()
    if parser.i != len(text):
        raise IntrinsicSyntaxError(f"unexpected text after the call in {text!r}")
    return call


class _Parser:
    def __init__(self, text: str):
        self.s = text
        self.i = 0

    def skip_ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t\r\n":
            self.i += 1

    def call(self, depth: int) -> Call:
        if depth > MAX_NESTING:
            raise IntrinsicSyntaxError(f"intrinsic functions nest at most {MAX_NESTING} deep")
        self.skip_ws()
        start = self.i
        j = self.s.find("(", self.i)
        if j < 0:
            raise IntrinsicSyntaxError(f"expected '(' after the function name in {self.s!r}")
        name = self.s[self.i:j].strip()
        if name not in FUNCTIONS:
            raise IntrinsicSyntaxError(f"unknown intrinsic function {name!r}")
        self.i = j + 1
        args = []
        self.skip_ws()
        if self.i < len(self.s) and self.s[self.i] == ")":
            self.i += 1
        else:
            while True:
                args.append(self.argument(depth))
                self.skip_ws()
                if self.i >= len(self.s):
                    raise IntrinsicSyntaxError(f"missing ')' in {self.s!r}")
                c = self.s[self.i]
                self.i += 1
                if c == ")":
                    break
                if c != ",":
                    raise IntrinsicSyntaxError(f"expected ',' or ')' in {self.s!r}, found {c!r}")
        call = Call(name, tuple(args), self.s[start:self.i])
        _check_arity(call)
        return call

    def argument(self, depth: int):
        self.skip_ws()
        s = self.s
        if self.i >= len(s):
            raise IntrinsicSyntaxError(f"missing argument in {s!r}")
        c = s[self.i]
        if c == "'":
            return Literal(self.string())
        if c == "$":
            return PathArg(self.path())
        if s.startswith("States.", self.i):
            return self.call(depth + 1)
        j = self.i
        while j < len(s) and s[j] not in ",) \t\r\n":
            j += 1
        token = s[self.i:j]
        self.i = j
        if token in ("true", "false", "null"):
            return Literal({"true": True, "false": False, "null": None}[token])
        try:
            value = json.loads(token)
        except ValueError:
            value = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return Literal(value)
        raise IntrinsicSyntaxError(f"invalid argument {token!r} (strings are written in single quotes)")

    def string(self) -> str:
        s = self.s
        self.i += 1
        out = []
        while self.i < len(s):
            c = s[self.i]
            if c == "\\":
                if self.i + 1 >= len(s):
                    break
                nxt = s[self.i + 1]
                out.append({"{": _BRACE_OPEN, "}": _BRACE_CLOSE}.get(nxt, nxt))
                self.i += 2
                continue
            if c == "'":
                self.i += 1
                return "".join(out)
            out.append(c)
            self.i += 1
        raise IntrinsicSyntaxError(f"unclosed string literal in {s!r}")

    def path(self) -> JsonPath:
        s = self.s
        j = self.i
        depth = 0
        quote = None
        while j < len(s):
            c = s[j]
            if quote:
                if c == quote:
                    quote = None
            elif c in "'\"" and depth > 0:
                quote = c
            elif c in "[(":
                depth += 1
            elif c in "])":
                if depth == 0:
                    break
                depth -= 1
            elif c == "," and depth == 0:
                break
            elif c in " \t\r\n" and depth == 0:
                break
            j += 1
        text = s[self.i:j]
        self.i = j
        try:
            return compile_path(text)
        except PathSyntaxError as e:
            raise IntrinsicSyntaxError(str(e)) from None


_ARITY = {
    "States.Format": (1, None), "States.StringToJson": (1, 1), "States.JsonToString": (1, 1),
    "States.Array": (0, None), "States.ArrayPartition": (2, 2), "States.ArrayContains": (2, 2),
    "States.ArrayRange": (3, 3), "States.ArrayGetItem": (2, 2), "States.ArrayLength": (1, 1),
    "States.ArrayUnique": (1, 1), "States.Base64Encode": (1, 1), "States.Base64Decode": (1, 1),
    "States.Hash": (2, 2), "States.JsonMerge": (3, 3), "States.MathRandom": (2, 3),
    "States.MathAdd": (2, 2), "States.StringSplit": (2, 2), "States.UUID": (0, 0),
}


def _check_arity(call: Call) -> None:
    lo, hi = _ARITY[call.name]
    n = len(call.args)
    if n < lo or (hi is not None and n > hi):
        want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
        raise IntrinsicSyntaxError(f"{call.name} takes {want} argument(s), got {n}")
    if call.name == "States.Format":
        first = call.args[0]
        if isinstance(first, Literal) and not isinstance(first.value, str):
            raise IntrinsicSyntaxError("States.Format's first argument must be a string")
        if isinstance(first, Literal):
            holes = first.value.count("{}")
            if holes != n - 1:
                raise IntrinsicSyntaxError(
                    f"States.Format's template has {holes} '{{}}' but {n - 1} value(s) follow it"
                )
    if call.name == "States.Hash" and isinstance(call.args[1], Literal):
        if call.args[1].value not in _HASHES:
            raise IntrinsicSyntaxError(
                f"States.Hash algorithm must be one of {', '.join(_HASHES)}, got {call.args[1].value!r}"
            )


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def evaluate(call: Call, data: Any, context: Callable[[], Any]) -> Any:
    """Evaluate against the state's input `data`; `context()` builds the $$ object when needed."""
    args = [_arg_value(a, data, context) for a in call.args]
    keep_markers = 1 if call.name == "States.Format" else 0
    for k in range(keep_markers, len(args)):
        args[k] = _plain(args[k])
    try:
        return FUNCTIONS[call.name](*args)
    except errors.StatesFailure:
        raise
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, RecursionError) as e:
        raise _fail(call.name, str(e)) from None


def _arg_value(arg, data: Any, context: Callable[[], Any]) -> Any:
    if isinstance(arg, Literal):
        return arg.value
    if isinstance(arg, PathArg):
        return arg.path.get(context() if arg.path.context else data)
    return evaluate(arg, data, context)


def _plain(value: Any) -> Any:
    """A string result loses the markers of escaped braces once it leaves Format's template."""
    if isinstance(value, str) and (_BRACE_OPEN in value or _BRACE_CLOSE in value):
        return value.replace(_BRACE_OPEN, "{").replace(_BRACE_CLOSE, "}")
    return value


def _fail(name: str, why: str) -> errors.StatesFailure:
    return errors.StatesFailure(errors.INTRINSIC_FAILURE, f"Invalid arguments in {name}: {why}")


def _is_int(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


def _int(name: str, v: Any, what: str) -> int:
    if not _is_int(v):
        raise _fail(name, f"{what} must be an integer, got {json.dumps(v)}")
    return int(v)


def _array(name: str, v: Any) -> list:
    if not isinstance(v, list):
        raise _fail(name, f"expected an array, got {json.dumps(v)[:100]}")
    return v


def _string(name: str, v: Any, limit: int | None = None) -> str:
    if not isinstance(v, str):
        raise _fail(name, f"expected a string, got {json.dumps(v)[:100]}")
    if limit is not None and len(v) > limit:
        raise _fail(name, f"the string has {len(v)} characters; the limit is {limit}")
    return v


def _json_key(v: Any) -> str:
    """Equality as JSON sees it (1 and true differ, key order does not matter)."""
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def _format_value(v: Any) -> str:
    # Matches what Step Functions prints for non-string arguments (Java's toString of
    # maps and lists, JSON for scalars): {"a": [1, 2]} -> "{a=[1, 2]}".
    if isinstance(v, str):
        return _plain(v)
    if isinstance(v, list):
        return "[" + ", ".join(_format_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_format_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)


def f_format(template: Any, *values: Any) -> str:
    template = _string("States.Format", template)
    pieces = template.split("{}")
    if len(pieces) - 1 != len(values):
        raise _fail("States.Format", f"the template has {len(pieces) - 1} '{{}}' but {len(values)} value(s) were given")
    out = [pieces[0]]
    for value, piece in zip(values, pieces[1:]):
        out.append(_format_value(value))
        out.append(piece)
    return _plain("".join(out))


def f_string_to_json(s: Any) -> Any:
    s = _string("States.StringToJson", s)
    if not s.strip():
        return None
    try:
        return json.loads(s)
    except ValueError as e:
        raise _fail("States.StringToJson", f"not JSON text ({e})") from None


def f_json_to_string(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def f_array(*values: Any) -> list:
    return list(values)


def f_array_partition(arr: Any, size: Any) -> list:
    arr = _array("States.ArrayPartition", arr)
    size = _int("States.ArrayPartition", size, "the chunk size")
    if size <= 0:
        raise _fail("States.ArrayPartition", "the chunk size must be a positive integer")
    return [arr[i:i + size] for i in range(0, len(arr), size)]


def f_array_contains(arr: Any, value: Any) -> bool:
    arr = _array("States.ArrayContains", arr)
    key = _json_key(value)
    return any(_json_key(x) == key for x in arr)


def f_array_range(start: Any, end: Any, step: Any) -> list:
    start = _int("States.ArrayRange", start, "start")
    end = _int("States.ArrayRange", end, "end")
    step = _int("States.ArrayRange", step, "step")
    if step == 0:
        raise _fail("States.ArrayRange", "step cannot be 0")
    count = max(0, (end - start) // step + 1)
    if count > _MAX_ARRAY:
        raise _fail("States.ArrayRange", f"the range has {count} items; the limit is {_MAX_ARRAY}")
    return list(range(start, end + (1 if step > 0 else -1), step))


def f_array_get_item(arr: Any, index: Any) -> Any:
    arr = _array("States.ArrayGetItem", arr)
    index = _int("States.ArrayGetItem", index, "the index")
    if not 0 <= index < len(arr):
        raise _fail("States.ArrayGetItem", f"index {index} is out of bounds for an array of {len(arr)} item(s)")
    return arr[index]


def f_array_length(arr: Any) -> int:
    return len(_array("States.ArrayLength", arr))


def f_array_unique(arr: Any) -> list:
    arr = _array("States.ArrayUnique", arr)
    seen: set[str] = set()
    out = []
    for x in arr:
        key = _json_key(x)
        if key not in seen:
            seen.add(key)
            out.append(x)
    return out


def f_base64_encode(s: Any) -> str:
    s = _string("States.Base64Encode", s, _MAX_INPUT_CHARS)
    return base64.b64encode(s.encode("utf-8")).decode("ascii")


def f_base64_decode(s: Any) -> str:
    s = _string("States.Base64Decode", s, _MAX_INPUT_CHARS)
    try:
        return base64.b64decode(s.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError) as e:
        raise _fail("States.Base64Decode", f"not valid base64 text ({e})") from None


_HASHES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}


def f_hash(data: Any, algorithm: Any) -> str:
    data = _string("States.Hash", data, _MAX_INPUT_CHARS)
    if algorithm not in _HASHES:
        raise _fail("States.Hash", f"the algorithm must be one of {', '.join(_HASHES)}, got {json.dumps(algorithm)}")
    return hashlib.new(_HASHES[algorithm], data.encode("utf-8")).hexdigest()


def f_json_merge(a: Any, b: Any, deep: Any) -> dict:
    if not isinstance(a, dict) or not isinstance(b, dict):
        raise _fail("States.JsonMerge", "both values to merge must be JSON objects")
    if deep is not False:
        raise _fail("States.JsonMerge", "only the shallow merging mode is supported: the third argument must be false")
    return {**a, **b}


def f_math_random(start: Any, end: Any, seed: Any = None) -> int:
    start = _int("States.MathRandom", start, "start")
    end = _int("States.MathRandom", end, "end")
    if end < start:
        raise _fail("States.MathRandom", "end must not be less than start")
    rng = random.Random(_int("States.MathRandom", seed, "the seed")) if seed is not None else random
    return rng.randint(start, end)


_JAVA_INT = (-(2**31), 2**31 - 1)


def f_math_add(a: Any, b: Any) -> int:
    a = _int("States.MathAdd", a, "the first value")
    b = _int("States.MathAdd", b, "the second value")
    for v in (a, b):
        if not _JAVA_INT[0] <= v <= _JAVA_INT[1]:
            raise _fail("States.MathAdd", f"{v} is outside the 32-bit integer range")
    return a + b


def f_string_split(s: Any, delimiters: Any) -> list:
    s = _string("States.StringSplit", s)
    delimiters = _string("States.StringSplit", delimiters)
    if not delimiters:
        return [s] if s else []
    parts = [s]
    for d in delimiters:
        parts = [piece for part in parts for piece in part.split(d)]
    return [p for p in parts if p]


def f_uuid() -> str:
    return str(uuid.uuid4())


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "States.Format": f_format, "States.StringToJson": f_string_to_json,
    "States.JsonToString": f_json_to_string, "States.Array": f_array,
    "States.ArrayPartition": f_array_partition, "States.ArrayContains": f_array_contains,
    "States.ArrayRange": f_array_range, "States.ArrayGetItem": f_array_get_item,
    "States.ArrayLength": f_array_length, "States.ArrayUnique": f_array_unique,
    "States.Base64Encode": f_base64_encode, "States.Base64Decode": f_base64_decode,
    "States.Hash": f_hash, "States.JsonMerge": f_json_merge, "States.MathRandom": f_math_random,
    "States.MathAdd": f_math_add, "States.StringSplit": f_string_split, "States.UUID": f_uuid,
}
