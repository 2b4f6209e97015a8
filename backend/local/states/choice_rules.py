"""Choice rules compiled into predicates: every comparison operator, its ...Path form, And/Or/Not,
the Is* type tests and StringMatches with `*` wildcards."""
from __future__ import annotations

import re
from typing import Any, Callable

from . import errors
from .jsonpath import MISSING, JsonPath, PathSyntaxError, compile_path
from .values import is_number, parse_timestamp

Predicate = Callable[[Any, Callable[[], Any]], bool]


class RuleError(ValueError):
    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where = where
        self.message = message


def _lt(a, b): return a < b
def _gt(a, b): return a > b
def _le(a, b): return a <= b
def _ge(a, b): return a >= b
def _eq(a, b): return a == b


_ORDER = {"Equals": _eq, "LessThan": _lt, "GreaterThan": _gt, "LessThanEquals": _le, "GreaterThanEquals": _ge}


def _is_str(v): return type(v) is str


def _is_bool(v): return type(v) is bool


# operator -> (value check for the definition, value test at run time, comparison)
COMPARISONS: dict[str, tuple[Callable[[Any], bool], Callable[[Any], Any], Callable[[Any, Any], bool]]] = {}
for _suffix, _cmp in _ORDER.items():
    COMPARISONS["String" + _suffix] = (_is_str, lambda v: v if type(v) is str else MISSING, _cmp)
    COMPARISONS["Numeric" + _suffix] = (is_number, lambda v: v if is_number(v) else MISSING, _cmp)
    COMPARISONS["Timestamp" + _suffix] = (
        lambda v: parse_timestamp(v) is not None,
        lambda v: parse_timestamp(v) or MISSING,
        _cmp,
    )
COMPARISONS["BooleanEquals"] = (_is_bool, lambda v: v if type(v) is bool else MISSING, _eq)

TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "IsNull": lambda v: v is None,
    "IsPresent": lambda v: v is not MISSING,
    "IsNumeric": is_number,
    "IsString": _is_str,
    "IsBoolean": _is_bool,
    "IsTimestamp": lambda v: parse_timestamp(v) is not None,
}

OPERATORS = (
    set(COMPARISONS) | {op + "Path" for op in COMPARISONS} | set(TYPE_TESTS) | {"StringMatches"}
)
_TOP_FIELDS = {"Next", "Comment"}


def compile_rule(rule: Any, where: str, top: bool) -> Predicate:
    """Compile one rule (top-level rules carry Next, nested ones must not)."""
    if not isinstance(rule, dict):
        raise RuleError(where, "a choice rule must be a JSON object")
    if top and not isinstance(rule.get("Next"), str):
        raise RuleError(f"{where}.Next", "every top-level choice rule needs a Next naming a state")
    if not top and "Next" in rule:
        raise RuleError(f"{where}.Next", "only top-level choice rules have Next; nested rules inside And/Or/Not must not")
    combinators = [k for k in ("And", "Or", "Not") if k in rule]
    operators = [k for k in rule if k in OPERATORS]
    extra = [k for k in rule if k not in OPERATORS and k not in ("And", "Or", "Not", "Variable", "Next", "Comment")]
    if extra:
        raise RuleError(f"{where}.{extra[0]}", f"'{extra[0]}' is not a choice rule operator")
    if len(combinators) + len(operators) != 1:
        raise RuleError(where, "a choice rule needs exactly one operator (a comparison, And, Or or Not)")
    if combinators:
        op = combinators[0]
        if "Variable" in rule:
            raise RuleError(f"{where}.Variable", f"a rule using {op} takes no Variable")
        if op == "Not":
            inner = compile_rule(rule["Not"], f"{where}.Not", False)
            return lambda data, ctx: not inner(data, ctx)
        items = rule[op]
        if not isinstance(items, list) or not items:
            raise RuleError(f"{where}.{op}", f"{op} takes a non-empty array of rules")
        preds = [compile_rule(r, f"{where}.{op}[{i}]", False) for i, r in enumerate(items)]
        if op == "And":
            return lambda data, ctx: all(p(data, ctx) for p in preds)
        return lambda data, ctx: any(p(data, ctx) for p in preds)

    op = operators[0]
    if "Variable" not in rule:
        raise RuleError(f"{where}.Variable", f"a rule using {op} needs a Variable")
    variable = _path(rule["Variable"], f"{where}.Variable")
    operand = rule[op]
    read = _reader(variable)
    if op in TYPE_TESTS:
        if type(operand) is not bool:
            raise RuleError(f"{where}.{op}", f"{op} takes true or false")
        test = TYPE_TESTS[op]
        if op == "IsPresent":
            return lambda data, ctx: test(variable.find(ctx() if variable.context else data)) == operand
        return lambda data, ctx: test(read(data, ctx)) == operand
    if op == "StringMatches":
        if type(operand) is not str:
            raise RuleError(f"{where}.{op}", "StringMatches takes a string pattern")
        regex = _wildcard(operand)
        return lambda data, ctx: (lambda v: type(v) is str and regex.fullmatch(v) is not None)(read(data, ctx))
    if op.endswith("Path"):
        base = op[:-4]
        other = _path(operand, f"{where}.{op}")
        read_other = _reader(other)
        _check, coerce, cmp = COMPARISONS[base]

        def compare_paths(data, ctx):
            a = coerce(read(data, ctx))
            b = coerce(read_other(data, ctx))
            return a is not MISSING and b is not MISSING and cmp(a, b)

        return compare_paths
    check, coerce, cmp = COMPARISONS[op]
    if not check(operand):
        kind = op.split("Equals")[0].split("Less")[0].split("Greater")[0]
        raise RuleError(f"{where}.{op}", f"{op} needs a {kind.lower()} value, got {operand!r}")
    expected = coerce(operand)

    def compare(data, ctx):
        a = coerce(read(data, ctx))
        return a is not MISSING and cmp(a, expected)

    return compare


def _path(text: Any, where: str) -> JsonPath:
    if not isinstance(text, str):
        raise RuleError(where, "must be a path string starting with '$'")
    try:
        return compile_path(text)
    except PathSyntaxError as e:
        raise RuleError(where, str(e)) from None


def _reader(path: JsonPath) -> Callable[[Any, Callable[[], Any]], Any]:
    def read(data, ctx):
        value = path.find(ctx() if path.context else data)
        if value is MISSING:
            raise errors.StatesFailure(
                errors.RUNTIME,
                f"Invalid path '{path.text}': The choice state's condition path references an invalid value.",
            )
        return value

    return read


def _wildcard(pattern: str) -> re.Pattern:
    """`*` matches any run of characters; `\\*` is a literal star and `\\\\` a literal backslash."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "*\\":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)
