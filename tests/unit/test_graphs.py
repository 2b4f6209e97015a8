import json
from pathlib import Path

from backend.api import StateRun
from ui.graphs import COLORS, state_machine_dot

REPO = Path(__file__).resolve().parents[2]


def test_workflow_graph_colours_each_state_by_its_run():
    definition = json.loads((REPO / "asl" / "scones_workflow.asl.json").read_text())
    runs = [StateRun("serializeImageData", "succeeded"), StateRun("classifyImage", "succeeded"),
            StateRun("filterInferences", "caught", error="THRESHOLD_CONFIDENCE_NOT_MET"),
            StateRun("ThresholdConfidenceNotMet", "failed")]
    dot = state_machine_dot(definition, runs)
    assert dot.startswith("digraph workflow {") and dot.endswith("}")
    assert '__start__ -> "serializeImageData";' in dot
    assert '"serializeImageData" -> "classifyImage";' in dot
    assert '"filterInferences" -> __end__;' in dot
    assert f'"classifyImage" [label="classifyImage\\n(Task)", color="{COLORS["succeeded"][0]}"' in dot
    assert f'"ThresholdConfidenceNotMet" [label="ThresholdConfidenceNotMet\\n(Fail)", color="{COLORS["failed"][0]}"' in dot
    assert '"filterInferences" -> "ThresholdConfidenceNotMet" [label="THRESHOLD_CONFIDENCE_NOT_MET", style=dashed' in dot
    plain = state_machine_dot(definition)
    assert plain.count(COLORS["not_run"][0]) == 4
