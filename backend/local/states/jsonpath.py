"""JSONPath as Step Functions reads it (the Jayway dialect), compiled once, applied many times.

Three uses, three rules (States Language spec, "Paths"):
  * a *Path* (InputPath, OutputPath, ItemsPath, `.$` values) may use wildcards, slices, unions,
    `..` and filters; a path that can match several nodes answers a list (possibly empty);
  * a *Reference Path* (ResultPath, Choice `Variable`) names exactly one node: names and indexes only;
  * a path starting `$$` reads the context object instead of the state's input.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MISSING = object()


class PathSyntaxError(ValueError):
    """The text is not a path this engine understands."""


class PathNotFound(LookupError):
    """A definite path names a node the data does not have."""


@dataclass(frozen=True)
class JsonPath:
    text: str
    steps: tuple
    definite: bool
    context: bool  # starts with $$

    @property
    def is_reference(self) -> bool:
        return all(s[0] == "name" or (s[0] == "index" and s[1] >= 0) for s in self.steps)

    @property
    def is_root(self) -> bool:
        return not self.steps

    def get(self, data: Any) -> Any:
        """The node (definite path) or the list of matches (indefinite); PathNotFound if absent."""
        if self.definite:
            node = data
            for step in self.steps:
                node = _child(node, step)
                if node is MISSING:
                    raise PathNotFound(self.text)
            return node
        nodes = [data]
        for step in self.steps:
            nodes = _apply(nodes, step)
        return nodes

    def find(self, data: Any) -> Any:
        """Like get, but answers MISSING instead of raising."""
        try:
            return self.get(data)
        except PathNotFound:
            return MISSING


def _child(node: Any, step: tuple) -> Any:
    kind = step[0]
    if kind == "name":
        if type(node) is dict:
            return node.get(step[1], MISSING)
        return MISSING
    # index
    if type(node) is list:
        i = step[1]
        if -len(node) <= i < len(node):
            return node[i]
    return MISSING


def _apply(nodes: list, step: tuple) -> list:
    kind = step[0]
    out: list = []
    if kind in ("name", "index"):
        for n in nodes:
            v = _child(n, step)
            if v is not MISSING:
                out.append(v)
    elif kind == "names":
        for n in nodes:
            if type(n) is dict:
                out.extend(n[k] for k in step[1] if k in n)
    elif kind == "indices":
        for n in nodes:
            if type(n) is list:
                out.extend(n[i] for i in step[1] if -len(n) <= i < len(n))
    elif kind == "slice":
        _, start, end, stride = step
        for n in nodes:
            if type(n) is list:
                out.extend(n[slice(start, end, stride)])
    elif kind == "wild":
        for n in nodes:
            if type(n) is dict:
                out.extend(n.values())
            elif type(n) is list:
                out.extend(n)
    elif kind == "filter":
        pred = step[1]
        for n in nodes:
            candidates = n if type(n) is list else ([n] if type(n) is dict else [])
            out.extend(c for c in candidates if pred(c))
    elif kind == "deep":
        inner = step[1]
        for n in nodes:
            out.extend(_apply(_descendants(n), inner))
    return out


def _descendants(node: Any) -> list:
    """The node and every node below it, document order (Jayway's `..`)."""
    out = [node]
    stack = [node]
    while stack:
        n = stack.pop()
        children = list(n.values()) if type(n) is dict else (n if type(n) is list else [])
        out.extend(children)
        stack.extend(reversed(children))
    return out


# --------------------------------------------------------------------------------------------
# Compiling
# --------------------------------------------------------------------------------------------

_CACHE: dict[str, JsonPath] = {}
_NAME_STOP = set(".[]'\"()*?@, \t\r\n")
_INT = re.compile(r"\s*-?\d+\s*$")


def compile_path(text: str) -> JsonPath:
    """Compile `text`; PathSyntaxError says what is wrong with it."""
    cached = _CACHE.get(text)
    if cached is not None:
        return cached
    if not isinstance(text, str) or not text.startswith("$"):
        raise PathSyntaxError(f"a path must start with '$', got {text!r}")
    context = text.startswith("$$")
    body = text[2:] if context else text[1:]
    steps = tuple(_Parser(body, text).steps())
    definite = all(s[0] in ("name", "index") for s in steps)
    path = JsonPath(text, steps, definite, context)
    if len(_CACHE) < 10000:
        _CACHE[text] = path
    return path


def compile_reference_path(text: str) -> JsonPath:
    path = compile_path(text)
    if path.context:
        raise PathSyntaxError(f"{text!r} reads the context object; a reference path reads the input")
    if not path.is_reference:
        raise PathSyntaxError(
            f"{text!r} is not a reference path (only names and array indexes, no wildcards, "
            "slices, unions, filters or '..')"
        )
    return path


class _Parser:
    def __init__(self, body: str, text: str):
        self.s = body
        self.i = 0
        self.text = text

    def fail(self, why: str) -> PathSyntaxError:
        return PathSyntaxError(f"invalid path {self.text!r}: {why}")

    def steps(self) -> list:
        out = []
        s = self.s
        while self.i < len(s):
            if s.startswith("..", self.i):
                self.i += 2
                if self.i < len(s) and s[self.i] == "[":
                    inner = self.bracket()
                else:
                    inner = self.dot_name()
                out.append(("deep", inner))
            elif s[self.i] == ".":
                self.i += 1
                out.append(self.dot_name())
            elif s[self.i] == "[":
                out.append(self.bracket())
            else:
                raise self.fail(f"unexpected {s[self.i]!r} at position {self.i + 1}")
        return out

    def dot_name(self) -> tuple:
        s = self.s
        if self.i < len(s) and s[self.i] == "*":
            self.i += 1
            return ("wild",)
        start = self.i
        while self.i < len(s) and s[self.i] not in _NAME_STOP:
            self.i += 1
        if self.i == start:
            raise self.fail("a '.' must be followed by a field name")
        if self.i < len(s) and s[self.i] == "(":
            raise self.fail("path functions such as length() are not supported")
        return ("name", s[start:self.i])

    def bracket(self) -> tuple:
        s = self.s
        end_quote_aware = self._find_close(self.i)
        content = s[self.i + 1:end_quote_aware].strip()
        self.i = end_quote_aware + 1
        if content == "*":
            return ("wild",)
        if not content:
            raise self.fail("empty brackets")
        if content.startswith("?"):
            inner = content[1:].strip()
            if not (inner.startswith("(") and inner.endswith(")")):
                raise self.fail("a filter is written [?(...)]")
            return ("filter", _FilterParser(inner[1:-1], self.text).parse())
        if content[0] in "'\"":
            names = _split_quoted(content, self.fail)
            return ("name", names[0]) if len(names) == 1 else ("names", tuple(names))
        if ":" in content:
            parts = content.split(":")
            if len(parts) > 3 or not all(p.strip() == "" or _INT.match(p) for p in parts):
                raise self.fail(f"bad slice [{content}]")
            nums = [int(p) if p.strip() else None for p in parts] + [None] * (3 - len(parts))
            if nums[2] == 0:
                raise self.fail("a slice step cannot be 0")
            return ("slice", nums[0], nums[1], nums[2])
        parts = content.split(",")
        if not all(_INT.match(p) for p in parts):
            raise self.fail(f"bad array index [{content}]")
        idx = tuple(int(p) for p in parts)
        return ("index", idx[0]) if len(idx) == 1 else ("indices", idx)

    def _find_close(self, start: int) -> int:
        s = self.s
        depth = 0
        quote = None
        j = start
        while j < len(s):
            c = s[j]
            if quote:
                if c == "\\":
                    j += 1
                elif c == quote:
                    quote = None
            elif c in "'\"":
                quote = c
            elif c == "[":
                depth += 1
            elif c == "]":
                depth -= 1
                if depth == 0:
                    return j
            j += 1
        raise self.fail("unclosed '['")


def _split_quoted(content: str, fail) -> list[str]:
    names = []
    i = 0
    while i < len(content):
        q = content[i]
        if q not in "'\"":
            raise fail(f"expected a quoted name in [{content}]")
        j = i + 1
        buf = []
        while j < len(content) and content[j] != q:
            if content[j] == "\\" and j + 1 < len(content):
                j += 1
            buf.append(content[j])
            j += 1
        if j >= len(content):
            raise fail(f"unclosed quote in [{content}]")
        names.append("".join(buf))
        i = j + 1
        while i < len(content) and content[i] in " ,":
            i += 1
    return names


# --------------------------------------------------------------------------------------------
# Filter expressions: [?(@.price < 10 && @.kind == 'book')]
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<op>==|!=|<=|>=|<|>|&&|\|\||!|\(|\))"
    r"|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
    r"|(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<kw>true|false|null)\b"
    r"|(?P<path>[@$](?:\.[^\s.\[\]()=!<>&|]+|\[[^\]]*\])*))"
)


class _FilterParser:
    def __init__(self, text: str, whole: str):
        self.text = text
        self.whole = whole
        self.tokens = self._tokenize(text)
        self.i = 0

    def _tokenize(self, text: str) -> list[tuple[str, Any]]:
        out = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise PathSyntaxError(f"invalid filter in {self.whole!r} near {text[pos:]!r}")
            pos = m.end()
            kind = m.lastgroup
            val = m.group(kind)
            if kind == "num":
                out.append(("lit", float(val) if any(c in val for c in ".eE") else int(val)))
            elif kind == "str":
                out.append(("lit", re.sub(r"\\(.)", r"\1", val[1:-1])))
            elif kind == "kw":
                out.append(("lit", {"true": True, "false": False, "null": None}[val]))
            elif kind == "path":
                root = val[0]
                sub = compile_path("$" + val[1:])
                out.append(("path", (root, sub)))
            else:
                out.append(("op", val))
        return out

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else (None, None)

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def parse(self):
        expr = self.parse_or()
        if self.i != len(self.tokens):
            raise PathSyntaxError(f"invalid filter in {self.whole!r}")
        return expr

    def parse_or(self):
        left = self.parse_and()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.parse_and()
            left = (lambda a, b: lambda n: a(n) or b(n))(left, right)
        return left

    def parse_and(self):
        left = self.parse_unary()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.parse_unary()
            left = (lambda a, b: lambda n: a(n) and b(n))(left, right)
        return left

    def parse_unary(self):
        tok = self.peek()
        if tok == ("op", "!"):
            self.take()
            inner = self.parse_unary()
            return lambda n: not inner(n)
        if tok == ("op", "("):
            self.take()
            inner = self.parse_or()
            if self.take() != ("op", ")"):
                raise PathSyntaxError(f"unbalanced parentheses in filter {self.whole!r}")
            return inner
        left = self.operand()
        op = self.peek()
        if op[0] == "op" and op[1] in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            right = self.operand()
            return _comparison(left, op[1], right)
        return lambda n: _truthy(left(n))

    def operand(self):
        kind, val = self.take()
        if kind == "lit":
            return lambda n, v=val: v
        if kind == "path":
            root, sub = val
            if root == "@":
                return lambda n, p=sub: p.find(n)
            raise PathSyntaxError(f"filters may only compare fields of '@' in {self.whole!r}")
        raise PathSyntaxError(f"invalid filter in {self.whole!r}")


def _truthy(v: Any) -> bool:
    return v is not MISSING and v is not None and v is not False


def _comparable(a: Any, b: Any) -> bool:
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b)
    if isinstance(a, num) and isinstance(b, num):
        return True
    return isinstance(a, str) and isinstance(b, str)


def _comparison(left, op: str, right):
    def pred(n: Any) -> bool:
        a, b = left(n), right(n)
        if a is MISSING or b is MISSING:
            return False
        if op == "==":
            return _comparable(a, b) and a == b or (a is None and b is None)
        if op == "!=":
            return not (_comparable(a, b) and a == b or (a is None and b is None))
        if not _comparable(a, b) or isinstance(a, bool):
            return False
        if op == "<":
            return a < b
        if op == "<=":
            return a <= b
        if op == ">":
            return a > b
        return a >= b

    return pred


# --------------------------------------------------------------------------------------------
# ResultPath: put a result into the input, copying only what changes
# --------------------------------------------------------------------------------------------


class ResultPathMismatch(ValueError):
    pass


def set_reference(data: Any, path: JsonPath, value: Any) -> Any:
    """A copy of `data` with `value` at `path`; shared structure elsewhere (values are never mutated)."""
    if not path.steps:
        return value
    return _set(data, path.steps, 0, value, path.text)


def _set(node: Any, steps: tuple, k: int, value: Any, text: str) -> Any:
    if k == len(steps):
        return value
    kind, key = steps[k]
    if kind == "name":
        if type(node) is not dict:
            raise ResultPathMismatch(text)
        new = dict(node)
        child = node.get(key, MISSING)
        if child is MISSING:
            child = {}
        new[key] = _set(child, steps, k + 1, value, text)
        return new
    if type(node) is not list or not (0 <= key < len(node)):
        raise ResultPathMismatch(text)
    new_list = list(node)
    new_list[key] = _set(node[key], steps, k + 1, value, text)
    return new_list
