"""The workflow page in AppTest, against the shared workspace (a real endpoint and workflow)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def wf_page(wf_home, wf, monkeypatch):
    from ui.state import backend

    monkeypatch.setenv("SCONES_HOME", str(wf_home))
    backend.clear()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.switch_page("views/workflow.py")
    yield at
    if "workflow" in vars(backend()):
        backend().workflow.close()
    backend.clear()


def test_workflow_page_runs_a_batch_and_shows_an_execution(wf_page, wf):
    at = wf_page.run()
    assert not at.exception
    assert any("scones-workflow" in m.value and "threshold" in m.value for m in at.markdown)
    at.number_input(key="wf_count").set_value(3)
    at.checkbox(key="wf_override").check().run()
    at.slider(key="wf_threshold").set_value(0.0)
    at.button(key="wf_start").click().run()
    assert not at.exception
    from ui.state import backend

    started = backend().list_workflow_executions(limit=3)
    names = [e.name for e in started]
    backend().wait_workflow_executions([e.arn for e in started], timeout=60)
    time.sleep(0.2)
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(names) <= set(table["name"])
    assert set(table[table["name"].isin(names)]["status"]) == {"SUCCEEDED"}
    labels = [m.label for m in at.metric]
    assert labels == ["Executions", "Succeeded", "Below threshold", "Running"]
    assert at.selectbox(key="wf_pick").value in set(table["name"])
    history = at.dataframe[1].value
    assert history["type"].iloc[0] == "ExecutionStarted"
    labels = [e.label for e in at.expander]
    assert any(label.startswith("serializeImageData") for label in labels), (labels, at.selectbox(key="wf_pick").value, names)


def test_workflow_page_import_names_an_unknown_function(wf_page):
    at = wf_page.run()
    assert not at.exception
    assert any(e.label.startswith("Import a definition") for e in at.expander)
