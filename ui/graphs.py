"""State machine graphs as Graphviz DOT text (pure: definition and state runs in, DOT out), drawn
like the Step Functions console: each state coloured by its part in the selected execution."""
from __future__ import annotations

from typing import Any, Iterable

from backend.api import StateRun

COLORS = {  # status -> (border, fill)
    "succeeded": ("#2e7d32", "#c8e6c9"),
    "failed": ("#c62828", "#ffcdd2"),
    "caught": ("#ef6c00", "#ffe0b2"),
    "running": ("#1565c0", "#bbdefb"),
    "not_run": ("#9e9e9e", "#f5f5f5"),
}
LEGEND = {"succeeded": "Succeeded", "failed": "Failed", "caught": "Caught error", "running": "In progress",
          "not_run": "Not run"}


def _q(text: str) -> str:
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _edges(name: str, state: dict[str, Any]) -> Iterable[tuple[str, str, str, bool]]:
    """(from, to, label, dashed) for one state's transitions."""
    if state.get("Next"):
        yield name, state["Next"], "", False
    for rule in state.get("Choices", []) or []:
        if rule.get("Next"):
            yield name, rule["Next"], "choice", False
    if state.get("Default"):
        yield name, state["Default"], "default", False
    for catch in state.get("Catch", []) or []:
        yield name, catch.get("Next", ""), ", ".join(catch.get("ErrorEquals", [])), True
    if state.get("End") or state.get("Type") in ("Succeed", "Fail"):
        yield name, "__end__", "", False


EDGE = "#607d8b"  # a transition, with no execution selected
TAKEN = "#263238"  # the path the selected execution took
NOT_TAKEN = "#cfd8dc"


def _taken(src: str, dst: str, dashed: bool, state: dict[str, Any], status: dict[str, str]) -> bool:
    """Whether the selected execution went along this edge (an edge both of whose ends ran; a Catch only from
    a state that caught; End from a state that succeeded, or from a Fail state)."""
    if dashed:
        return status.get(src) == "caught" and dst in status
    if dst == "__end__":
        return status.get(src) == "succeeded" or (state.get("Type") == "Fail" and status.get(src) == "failed")
    return status.get(src) == "succeeded" and dst in status


def state_machine_dot(definition: dict[str, Any], runs: list[StateRun] | None = None) -> str:
    """The graph; with `runs`, the selected execution's path is drawn dark and the rest pale. A Catch is dashed,
    in the Caught error colour only when it was taken (orange on every Catch read as a caught error in an
    execution that succeeded: audit)."""
    status = {r.name: r.status for r in runs or [] if r.status != "not_run"}
    start = definition.get("StartAt", "")
    start_edge = "" if not runs else f' [color="{TAKEN}", penwidth=2]' if start in status else f' [color="{NOT_TAKEN}"]'
    lines = ["digraph workflow {", '  graph [rankdir=TB, bgcolor="transparent", nodesep=0.4, ranksep=0.45];',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, penwidth=2];',
             f'  edge [color="{EDGE}", fontname="Helvetica", fontsize=9];',
             '  __start__ [label="Start", shape=circle, fillcolor="#eceff1", color="#607d8b", width=0.6];',
             '  __end__ [label="End", shape=circle, fillcolor="#eceff1", color="#607d8b", width=0.6];',
             f'  __start__ -> {_q(start)}{start_edge};']
    for name, state in (definition.get("States") or {}).items():
        border, fill = COLORS[status.get(name, "not_run")]
        label = f"{name}\n({state.get('Type', '?')})"
        lines.append(f'  {_q(name)} [label={_q(label)}, color="{border}", fillcolor="{fill}"];')
        for src, dst, text, dashed in _edges(name, state):
            attrs = []
            if text:
                attrs.append(f"label={_q(text)}")
            taken = bool(runs) and _taken(src, dst, dashed, state, status)
            if dashed:
                attrs.append(f'style=dashed, color="{COLORS["caught"][0] if taken else EDGE if not runs else NOT_TAKEN}"')
            elif runs:
                attrs.append(f'color="{TAKEN if taken else NOT_TAKEN}"')
            if taken:
                attrs.append("penwidth=2")
            lines.append(f"  {_q(src)} -> {_q(dst) if dst != '__end__' else '__end__'}"
                         + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines)
