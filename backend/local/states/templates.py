"""Payload templates: Parameters, ItemSelector, ResultSelector and Credentials.

A key ending in `.$` takes its value from a path (`$.x`), the context object (`$$.Execution.Id`)
or an intrinsic function; every other value is copied as written. Templates are compiled once.
"""
from __future__ import annotations

from typing import Any, Callable

from . import errors, intrinsics
from .jsonpath import JsonPath, PathNotFound, PathSyntaxError, compile_path
from .values import dumps


class TemplateError(ValueError):
    """A template that cannot be compiled; `where` is the dotted field inside it."""

    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where = where
        self.message = message


def compile_dynamic_value(text: Any, where: str) -> JsonPath | intrinsics.Call:
    """A `.$` value: a path or an intrinsic call."""
    if not isinstance(text, str):
        raise TemplateError(where, "the value of a field ending in '.$' must be a string: a path or an intrinsic function")
    if intrinsics.looks_like_call(text):
        try:
            return intrinsics.parse(text)
        except intrinsics.IntrinsicSyntaxError as e:
            raise TemplateError(where, f"bad intrinsic function call: {e}") from None
    try:
        return compile_path(text)
    except PathSyntaxError as e:
        raise TemplateError(where, str(e)) from None


class Template:
    """A compiled payload template; `apply` builds the value for one input."""

    def __init__(self, source: Any, field: str):
        self.field = field
        self.uses_context = False
        self._build = self._compile(source, field)

    def apply(self, data: Any, context: Callable[[], Any]) -> Any:
        return self._build(data, context)

    def _compile(self, node: Any, where: str) -> Callable[[Any, Callable[[], Any]], Any]:
        if isinstance(node, dict):
            if not _is_dynamic(node):
                return lambda data, ctx, v=node: v
            entries = []
            seen: set[str] = set()
            for key, value in node.items():
                if key.endswith(".$"):
                    out_key = key[:-2]
                    compiled = compile_dynamic_value(value, f"{where}.{key}")
                    if isinstance(compiled, JsonPath):
                        self.uses_context |= compiled.context
                        entries.append((out_key, 0, compiled, key))
                    else:
                        self.uses_context |= compiled.uses_context
                        entries.append((out_key, 1, compiled, key))
                else:
                    out_key = key
                    entries.append((out_key, 2, self._compile(value, f"{where}.{key}"), key))
                if out_key in seen:
                    raise TemplateError(f"{where}.{key}", f"the field '{out_key}' appears twice (with and without '.$')")
                seen.add(out_key)
            return self._object_builder(entries)
        if isinstance(node, list):
            if not any(_is_dynamic(x) for x in node):
                return lambda data, ctx, v=node: v
            items = [self._compile(x, f"{where}[{i}]") for i, x in enumerate(node)]
            return lambda data, ctx: [f(data, ctx) for f in items]
        return lambda data, ctx, v=node: v

    def _object_builder(self, entries: list) -> Callable[[Any, Callable[[], Any]], Any]:
        def build(data: Any, ctx: Callable[[], Any]) -> dict:
            out = {}
            for out_key, kind, item, key in entries:
                if kind == 2:
                    out[out_key] = item(data, ctx)
                    continue
                try:
                    if kind == 0:
                        out[out_key] = item.get(ctx() if item.context else data)
                    else:
                        out[out_key] = intrinsics.evaluate(item, data, ctx)
                except PathNotFound as e:
                    source = ctx() if (kind == 0 and item.context) else data
                    raise errors.StatesFailure(  # as AWS reports it, not the spec's catchable ParameterPathFailure
                        errors.RUNTIME,
                        f"The JSONPath '{e.args[0]}' specified for the field '{key}' could not be found "
                        f"in the input '{_clip(source)}'",
                    ) from None
            return out

        return build


def _clip(value: Any) -> str:
    try:
        text = dumps(value)
    except (TypeError, ValueError):
        text = str(value)
    return text if len(text) <= 1000 else text[:1000] + "..."


def _is_dynamic(node: Any) -> bool:
    if isinstance(node, dict):
        return any(k.endswith(".$") or _is_dynamic(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_is_dynamic(x) for x in node)
    return False
