import json
from pathlib import Path

from backend.api import StateRun
from ui.graphs import COLORS, NOT_TAKEN, TAKEN, state_machine_dot

REPO = Path(__file__).resolve().parents[2]


def test_workflow_graph_colours_each_state_by_its_run():
    definition = json.loads((REPO / "asl" / "scones_workflow.asl.json").read_text())
    runs = [StateRun("serializeImageData", "succeeded"), StateRun("classifyImage", "succeeded"),
            StateRun("filterInferences", "caught", error="THRESHOLD_CONFIDENCE_NOT_MET"),
            StateRun("ThresholdConfidenceNotMet", "failed")]
    dot = state_machine_dot(definition, runs)
    assert dot.startswith("digraph workflow {") and dot.endswith("}")
    # the path taken dark, the rest pale; the Catch taken in the Caught error colour
    assert f'__start__ -> "serializeImageData" [color="{TAKEN}", penwidth=2];' in dot
    assert f'"serializeImageData" -> "classifyImage" [color="{TAKEN}", penwidth=2];' in dot
    assert f'"filterInferences" -> __end__ [color="{NOT_TAKEN}"];' in dot
    assert f'"ThresholdConfidenceNotMet" -> __end__ [color="{TAKEN}", penwidth=2];' in dot
    assert f'"classifyImage" [label="classifyImage\\n(Task)", color="{COLORS["succeeded"][0]}"' in dot
    assert f'"ThresholdConfidenceNotMet" [label="ThresholdConfidenceNotMet\\n(Fail)", color="{COLORS["failed"][0]}"' in dot
    assert ('"filterInferences" -> "ThresholdConfidenceNotMet" [label="THRESHOLD_CONFIDENCE_NOT_MET", style=dashed, '
            f'color="{COLORS["caught"][0]}", penwidth=2];') in dot
    # an execution that succeeded: its way to End dark, the Catch it did not take pale, not the Caught colour
    ok = state_machine_dot(definition, [StateRun(n, "succeeded") for n in ("serializeImageData", "classifyImage",
                                                                           "filterInferences")]
                           + [StateRun("ThresholdConfidenceNotMet", "not_run")])
    assert f'"filterInferences" -> __end__ [color="{TAKEN}", penwidth=2];' in ok
    assert ('"filterInferences" -> "ThresholdConfidenceNotMet" [label="THRESHOLD_CONFIDENCE_NOT_MET", style=dashed, '
            f'color="{NOT_TAKEN}"];') in ok
    assert COLORS["caught"][0] not in ok
    plain = state_machine_dot(definition)  # no execution: every edge as drawn, none pale, no Caught colour
    assert plain.count(COLORS["not_run"][0]) == 4
    assert '"serializeImageData" -> "classifyImage";' in plain and NOT_TAKEN not in plain
    assert COLORS["caught"][0] not in plain
