"""Pages run headless with Streamlit's AppTest against a real local backend."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.apptest import app_page


@pytest.fixture(autouse=True)
def fresh_backend_cache(home):
    from ui.state import backend

    backend.clear()
    yield
    backend.clear()


def page(name: str) -> AppTest:
    """The whole app (navigation included), switched to one page ('home.py', 'stage.py', ...)."""
    return app_page(name.removesuffix(".py"))


def test_home_shows_six_steps_backend_and_workspace(home):
    at = page("home.py").run()
    assert not at.exception
    assert [m.value for m in at.metric] == ["local"]
    assert [c.value for c in at.code] == [str(home)]  # whole, however long (a metric cut it to one line)
    titles = [m.value for m in at.markdown if m.value.startswith("##### ")]  # in reading order (not 1, 4, 2, ...)
    assert titles == ["##### 1 · Stage", "##### 2 · Train", "##### 3 · Deploy", "##### 4 · Workflow",
                      "##### 5 · Monitor", "##### 6 · Clean up"]
    assert sum("not started" in m.value for m in at.markdown) == 6


def test_home_says_resources_to_clean_up_rather_than_in_progress_after_a_clean_up(home, backend, monkeypatch):
    """'6 · Clean up — in progress' after a clean up read as a deletion under way (audit)."""
    from backend.api import StepStatus

    backend.record_cleanup([("endpoint", "a")], [])
    backend.stage_data("sample")
    monkeypatch.setattr(type(backend), "resource_step_statuses",
                        lambda self: {"train": StepStatus("train", "done", "a model")})
    at = page("home.py").run()
    assert not at.exception
    assert any(m.value == ":orange-badge[resources to clean up]" for m in at.markdown)
    assert not any("in progress" in m.value for m in at.markdown)
    assert any("Made since or left: training jobs; the Clean up page lists every resource." in c.value
               for c in at.caption)


def test_home_reflects_a_staged_dataset(home, backend):
    backend.stage_data("sample")
    at = page("home.py").run()
    assert not at.exception
    assert any("done" in m.value for m in at.markdown)
    assert any("1,200 images of bicycle, motorcycle" in c.value for c in at.caption)


def test_stage_page_defaults_and_empty_state(home):
    at = page("stage.py").run()
    assert not at.exception
    assert at.multiselect(key="stage_classes").value == ["bicycle", "motorcycle"]
    # the bundled sample (the default source) offers what it has images of: it offered all 100 (browser audit)
    assert at.multiselect(key="stage_classes").options == ["bicycle", "motorcycle"]
    at.radio(key="stage_source").set_value("Official download (169 MB, falls back to the sample offline)").run()
    assert len(at.multiselect(key="stage_classes").options) == 100
    at.multiselect(key="stage_classes").set_value(["bicycle", "motorcycle", "lawn_mower"]).run()
    at.radio(key="stage_source").set_value("Bundled sample (offline, 1,200 real images)").run()
    assert not at.exception and at.multiselect(key="stage_classes").value == ["bicycle", "motorcycle"]
    assert any("No data staged yet" in i.value for i in at.info)


def test_stage_page_starts_a_job_and_shows_the_report(home, backend):
    at = page("stage.py").run()
    at.button(key="stage_start").click().run()
    assert not at.exception
    job = backend.latest_job("stage")
    assert job is not None
    assert backend.wait_job(job.job_id, timeout=60).status == "Completed"
    at.run()
    assert not at.exception
    assert [m.value for m in at.metric][:2] == ["1,200", "2"]
    assert at.metric[3].value == "Sample"  # "Bundled sample" was cut to "Bund…" at 1,000 px (browser audit)
    # when it ran and what the figure is: a re-run changed only "Seconds 0.50" to "0.62" (audit)
    report = backend.latest_stage_report()
    assert at.metric[2].label == "Staging time" and at.metric[2].value == f"{report.seconds:.2f} s"
    assert report.staged_at.endswith("Z") and report.staged_at[:10] == job.updated[:10]
    assert any(c.value.startswith(f"Staged at {report.staged_at.replace('T', ' ')[:19]} UTC") for c in at.caption)
    table = at.dataframe[0].value
    assert table.loc["bicycle", "train"] == 500 and table.loc["motorcycle", "test"] == 100
    assert any(m.value == "**bicycle**" for m in at.markdown)


def test_the_stage_report_names_its_source_whole(home, backend, tmp_path):
    """Any source of 24 characters or more read "local file": a URL or the official download too."""
    import shutil

    from backend.settings import SAMPLE_ARCHIVE

    copy = tmp_path / "archives" / "cifar-100-python.tar.gz"
    copy.parent.mkdir()
    shutil.copy(SAMPLE_ARCHIVE, copy)
    backend.stage_data(str(copy))
    at = page("stage.py").run()
    assert at.metric[3].value == "Local file"
    assert any(c.value.endswith(f" UTC · Source: `{copy}`") for c in at.caption)
    backend.stage_data(backend.save_upload("my archive.tar.gz", SAMPLE_ARCHIVE.read_bytes()))
    at.run()
    assert at.metric[3].value == "Upload" and any(c.value.endswith(" UTC · Source: `my_archive.tar.gz`") for c in at.caption)
    import json  # a download's report, without downloading: the URL is what the report keeps as its source

    row = backend.db.query_one("SELECT report FROM datasets WHERE bucket=? AND state='staged'", (backend.objects.bucket,))
    report = {**json.loads(row["report"]), "source": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"}
    backend.db.execute("UPDATE datasets SET report=? WHERE bucket=?", (json.dumps(report), backend.objects.bucket))
    at.run()
    assert at.metric[3].value == "URL"
    assert any(c.value.endswith(f" UTC · Source: `{report['source']}`") for c in at.caption)
    assert not at.exception


def test_stage_page_rejects_one_class_and_a_missing_path(home, backend):
    at = page("stage.py").run()
    at.multiselect(key="stage_classes").set_value(["bicycle"]).run()
    at.button(key="stage_start").click().run()
    assert any("at least two classes" in e.value for e in at.error)
    at.multiselect(key="stage_classes").set_value(["bicycle", "motorcycle"])
    at.radio(key="stage_source").set_value("Local file path").run()
    at.text_input(key="stage_path").input("/no/such.tar.gz").run()
    at.button(key="stage_start").click().run()
    assert any("No archive file at /no/such.tar.gz" in e.value for e in at.error)
    assert backend.latest_job("stage") is None
    assert not at.exception


def test_a_failed_staging_reads_as_the_last_attempt_and_does_not_stack_under_a_new_error(home, backend, tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    backend.wait_job(backend.start_staging(str(junk)), timeout=60)
    at = page("stage.py").run()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("The last staging attempt (") and " UTC) failed: " in errors[0]
    at.radio(key="stage_source").set_value("Local file path").run()
    at.text_input(key="stage_path").input("/no/such.tar.gz").run()
    at.button(key="stage_start").click().run()
    assert [e.value.split(":")[0] for e in at.error] == ["No archive file at /no/such.tar.gz"]  # this press's alone
    # a URL refused as typed, before any press: its sentence alone too (audit: the old failure stood beside it)
    at.radio(key="stage_source").set_value("A URL (a mirror of the official archive)").run()
    at.text_input(key="stage_url").input("https://me:secret@example.com/cifar.tar.gz").run()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "user name or password" in errors[0] and "secret" not in errors[0], errors
    assert not at.exception


def test_a_press_that_meets_a_staging_started_elsewhere_says_it_did_not_start(home, backend):
    """The button was disabled while a staging ran: a press whose rerun found one just started (another tab,
    the CLI) was dropped by Streamlit without a word, the page then showing the other staging's result."""
    at = page("stage.py").run()
    # A staging job with no worker behind it: it stays InProgress for as long as the test needs.
    other = backend.jobs.create("stage", {"source": "sample", "classes": ["bicycle", "motorcycle"]})
    try:
        at.button(key="stage_start").click().run()
        assert not at.exception
        assert [e.value for e in at.error] == [f"Staging job {other} is still running; wait for it to finish."]
        assert [j.job_id for j in backend.jobs.list("stage")] == [other]  # nothing else started
    finally:
        backend.jobs.fail(other, "Ended by the test.")


def test_a_double_click_on_start_staging_is_one_staging(home, backend):
    at = page("stage.py").run()
    at.button(key="stage_start").click().run()
    first = backend.latest_job("stage")
    at.button(key="stage_start").click().run()  # the second click of a double-click, in the next rerun
    assert not at.exception
    assert not at.error, [e.value for e in at.error]  # not refused as "still running": it is that staging
    assert any("second press was not taken" in t.value for t in at.toast)
    assert [j.job_id for j in backend.jobs.list("stage")] == [first.job_id]
    backend.wait_job(first.job_id, timeout=60)


def test_explore_archive_view(home):
    at = page("stage.py").run()
    at.button(key="explore_go").click().run()
    assert not at.exception
    frames = [d.value for d in at.dataframe]
    members = frames[0]
    assert list(members["name"]) == ["cifar-100-python", "cifar-100-python/meta", "cifar-100-python/test",
                                     "cifar-100-python/train"]
    keys = frames[1]
    data_row = keys[(keys["pickle"] == "train") & (keys["key"] == "data")].iloc[0]
    assert data_row["shape"] == "1000 x 3072" and data_row["dtype"] == "uint8"
    assert len(frames[2]) == 100 and len(frames[3]) == 20


def test_the_stage_page_takes_a_url_and_says_what_to_do_with_another_archive(home, backend, tmp_path):
    """The README lists a URL as a source; the page had no such choice (a URL typed as a path was taken), and
    an archive that is not the official one was refused with an environment variable as the only way on."""
    import functools
    import http.server
    import shutil
    import threading

    from backend.settings import SAMPLE_ARCHIVE

    shutil.copy(SAMPLE_ARCHIVE, tmp_path / "subset.tar.gz")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        at = page("stage.py").run()
        at.radio(key="stage_source").set_value("A URL (a mirror of the official archive)").run()
        at.text_input(key="stage_url").input("www.example.com/cifar.tar.gz").run()
        assert any("is not an http:// or https:// address" in e.value for e in at.error)
        assert at.button(key="stage_start").disabled
        at.text_input(key="stage_url").input("https://").run()  # it failed later as "could not reach https://"
        assert any("https:// names no host" in e.value for e in at.error) and at.button(key="stage_start").disabled
        url = f"HTTP://127.0.0.1:{server.server_port}/subset.tar.gz"  # a scheme in capitals is a scheme too
        at.text_input(key="stage_url").input(url).run()
        assert not at.error and not at.button(key="stage_start").disabled
        at.button(key="stage_start").click().run()
        job = backend.latest_job("stage")
        assert backend.wait_job(job.job_id, timeout=60).status == "Failed"  # not the official archive's md5
        at.run()
        failure = " ".join(e.value for e in at.error)
        assert "md5" in failure and "download it and give its path or upload it" in failure
    finally:
        server.shutdown()
    assert not at.exception


def test_a_question_a_page_asked_is_dropped_when_another_page_is_shown(home):
    """Deploy's "delete it anyway?" left unanswered was still open (and once deleted by itself) on coming back."""
    at = page("deploy.py").run()
    at.session_state["deploy_delete:question"] = ("ep", "2026-11-29T17:00:00Z")
    at.run()
    assert "deploy_delete:question" in at.session_state  # reruns of the same page keep it
    at.switch_page("views/home.py").run()
    assert "deploy_delete:question" not in at.session_state
    assert not at.exception
