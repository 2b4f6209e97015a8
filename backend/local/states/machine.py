"""A definition compiled into linked state objects, ready to run many times.

Compiling validates first (a definition with diagnostics raises DefinitionInvalid), then builds one
object per state and links each Next to its state. Compiled machines are cached by their JSON
text, so starting 1,000 executions of one definition compiles it once.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from .errors import DefinitionInvalid
from .state_types import STATE_TYPES
from .state_types.base import State
from .validation import parse_definition, validate_definition
from .values import dumps


@dataclass
class Block:
    """A StartAt and its States: the machine itself, a Parallel branch or a Map's processor."""

    start: State
    states: dict[str, State]


class Compiler:
    def block(self, spec: dict, owner: str = "") -> Block:
        states = {name: STATE_TYPES[s["Type"]](name, s, self) for name, s in spec["States"].items()}
        for state in states.values():
            state.link(states)
        return Block(states[spec["StartAt"]], states)


@dataclass
class Machine:
    text: str
    root: Block
    timeout_seconds: int | None


_cache: OrderedDict[str, Machine] = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 64


def canonical_text(definition: dict | str) -> str:
    if isinstance(definition, str):
        return definition
    try:
        return dumps(definition)
    except (TypeError, ValueError, RecursionError):
        return repr(definition)


def compile_machine(definition: dict | str) -> Machine:
    """The compiled machine for `definition`; DefinitionInvalid lists what is wrong."""
    text = canonical_text(definition)
    with _cache_lock:
        machine = _cache.get(text)
        if machine is not None:
            _cache.move_to_end(text)
            return machine
    diagnostics = validate_definition(definition)
    if diagnostics:
        raise DefinitionInvalid(diagnostics)
    parsed, _ = parse_definition(definition)
    root = Compiler().block(parsed)
    machine = Machine(text=text, root=root, timeout_seconds=parsed.get("TimeoutSeconds"))
    with _cache_lock:
        _cache[text] = machine
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return machine
