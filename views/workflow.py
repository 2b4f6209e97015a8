"""Workflow: deploy the state machine, run executions (one, a batch, an uploaded image), watch them
settle, and open one to see its graph, each state's input and output, and its event history."""
from __future__ import annotations

import json
from datetime import timezone

import pandas as pd
import streamlit as st

from backend.api import (
    DEFAULT_STATE_MACHINE as DEFAULT_MACHINE, SERVING_STATUSES, THRESHOLD_ERROR, BatchPartlyStarted, SconesError,
    confidence_text,
)
from backend.workflow_defs import encode_upload
from ui.cards import execution_cards, lost_endpoint_text
from ui.graphs import LEGEND, COLORS, state_machine_dot
from ui.state import backend, kept, press_refused, pressed, remember, second_press, watch_for_changes
from ui.widgets import THRESHOLD_FORMAT, THRESHOLD_STEP, show_error, threshold_text, utc_time

st.title("Workflow")
st.caption("serializeImageData → classifyImage → filterInferences, as Step Functions runs it: the real Lambda "
           "handlers from `lambdas/`, the definition from `asl/`. An execution below the threshold fails on purpose "
           f"with `{THRESHOLD_ERROR}`.")

SHOWN = 500  # executions counted and listed; a note says when there are more
DEFINITION_LIMIT = 1024 * 1024  # Step Functions' limit on a definition, as `scones workflow import` applies it
MAX_DRAWN_STATES = 200  # an execution's graph is drawn up to this many states
MAX_LISTED_STATES = 100  # and this many states that ran get their input/output panel
DETAILS_CHARS = 160  # an event's details in the history table; the selected event's are shown whole

try:
    b = backend()
    machines = b.list_state_machines()
    all_endpoints = b.list_endpoints()
except SconesError as exc:
    show_error(exc)
    st.stop()


def page_signature(endpoints: list, machines: list) -> tuple:
    """What the State machine section is drawn from: a change made elsewhere (the CLI deployed or deleted an
    endpoint, updated the workflow) redraws the page."""
    return (tuple(sorted((e.endpoint_name, e.status) for e in endpoints)),
            tuple((m.name, m.endpoint_name, m.threshold, len(m.functions), m.imported) for m in machines))


# Locally two quick reads; on AWS ListEndpoints and the machines' reads, so less often.
watch_for_changes("wf_signature", lambda: page_signature(b.list_endpoints(), b.list_state_machines()),
                  page_signature(all_endpoints, machines), aws=b.name == "aws")


def deploy_ui(said: bool = False) -> None:
    """Deploy or update the workflow. `said`: a warning above already says no endpoint serves and what to do."""
    endpoints = [e.endpoint_name for e in all_endpoints if e.status == "InService"]
    if not endpoints:
        if not said:  # the same advice twice, one under the other (audit)
            st.info("No endpoint is InService: deploy a model on the Deploy page first.")
        return
    current = next((m for m in machines if m.name == DEFAULT_MACHINE), None)
    if b.name == "aws":
        st.caption("On AWS this creates or updates three Lambda functions (lambdas/ as one zip) and a Standard state "
                   "machine in your account: both bill per request and transition, nothing by the hour.")
    with st.form("workflow_deploy"):
        c1, c2 = st.columns(2)
        endpoint = c1.selectbox("Endpoint the classify step calls", endpoints,
                                index=endpoints.index(current.endpoint_name) if current and current.endpoint_name in endpoints else 0)
        default = current.threshold if current else b.default_threshold()
        threshold = c2.slider("Threshold (filterInferences passes max(inferences) ≥ this)", 0.0, 1.0, float(default),
                              THRESHOLD_STEP, format=THRESHOLD_FORMAT)
        if st.form_submit_button("Update the workflow" if current else "Deploy the workflow", type="primary"):
            try:
                machine = b.deploy_workflow(endpoint, threshold)
                # The functions are shared: a machine imported onto them follows the update (said, not silent).
                before = {m.name: (m.endpoint_name, m.threshold) for m in machines}
                also = [m.name for m in b.list_state_machines() if m.name != machine.name and m.name in before
                        and before[m.name] != (m.endpoint_name, m.threshold)]
            except SconesError as exc:
                show_error(exc)
            else:
                st.toast(f"{'Updated' if current else 'Deployed'} {machine.name}: endpoint {machine.endpoint_name}, "
                         f"threshold {threshold_text(machine.threshold)}"
                         + (f"; {', '.join(also)} call{'s' if len(also) == 1 else ''} the same functions and changed too" if also else "")
                         + ".", icon=":material/check_circle:")
                st.rerun()


def checked_upload(upload) -> str | None:
    """Why the chosen file cannot run, said when it is chosen rather than after Start (None: it can). Each file is
    decoded once: the answer is kept for its name and size."""
    if upload is None:
        return None
    signature = (upload.name, upload.size)
    kept_answer = st.session_state.get("wf_upload_checked")
    if kept_answer is None or kept_answer[0] != signature:
        try:
            encode_upload(upload.name, upload.getvalue(), (32, 32))
            problem = None
        except SconesError as exc:
            problem = str(exc)
        st.session_state["wf_upload_checked"] = kept_answer = (signature, problem)
    return kept_answer[1]


def import_ui() -> None:
    imported = st.session_state.pop("wf_imported", None)  # said once, on the redraw that lists it
    # Open after an import and while a file is chosen: a changed `expanded` would fold it on the next rerun.
    opened = bool(imported) or st.session_state.get("wf_import_file") is not None
    with st.expander("Import a definition exported from the Step Functions console", expanded=opened):
        if imported:
            st.success(imported)
        up = st.file_uploader("Definition (JSON)", type=["json", "asl"], key="wf_import_file",
                              max_upload_size=2)  # decimal MB; DEFINITION_LIMIT (1,048,576 bytes) is checked below
        mapping_text = st.text_area("Function → handler (one `FUNCTION=handler` a line; the workflow's three names map "
                                    "by themselves)", key="wf_import_map", placeholder="my-classify-fn=classify_image")
        name = st.text_input("State machine name", value="imported-workflow", key="wf_import_name")
        if st.button("Import", disabled=up is None, key="wf_import_go"):
            mapping = {}
            for line in mapping_text.splitlines():
                fn, sep, stem = line.partition("=")
                if sep:
                    mapping[fn.strip()] = stem.strip()
            if up.size > DEFINITION_LIMIT:
                st.error(f"{up.name} is {up.size:,} bytes; Step Functions takes definitions of at most "
                         f"{DEFINITION_LIMIT:,} bytes (1 MiB): export the state machine again or split it.")
                return
            try:
                sm = b.import_workflow(up.getvalue().decode("utf-8", "replace"), mapping, name.strip())
            except SconesError as exc:
                show_error(exc)
                for d in getattr(exc, "diagnostics", [])[1:]:
                    st.error(f"{d.state or '-'} · {d.field or '-'}: {d.message}")
            else:
                mapped = b.workflow_mapping(sm.name)
                st.session_state["wf_imported"] = (
                    f"Imported {sm.name}: " + ", ".join(f"{fn} → lambdas/{stem}.py" for fn, stem in mapped.items())
                    if mapped else f"Imported {sm.name} (it calls no Lambda function).")
                st.session_state["wf_machine"] = sm.name  # ready to run below
                st.rerun()  # the state machine list and the Run selector read it


def run_ui() -> None:
    names = sorted((m.name for m in machines), key=lambda n: n != DEFAULT_MACHINE)
    c1, c2 = st.columns([2, 1])
    if st.session_state.get("_kept:wf_machine") not in names:  # deleted since
        st.session_state.pop("_kept:wf_machine", None)
    if st.session_state.get("wf_machine") not in names:
        st.session_state.pop("wf_machine", None)
    kept("wf_machine", names[0])
    machine = c1.selectbox("State machine", names, key="wf_machine")
    kept("wf_source", "Random test images")
    source = c2.radio("Image", ["Random test images", "A chosen test image", "Upload an image"], key="wf_source")
    key, upload, upload_problem = None, None, None
    if source == "A chosen test image":
        keys = b.test_image_keys()
        if st.session_state.get("_kept:wf_key") not in keys:  # restaged since: start from the first image
            st.session_state.pop("_kept:wf_key", None)
            st.session_state.pop("wf_key", None)
        kept("wf_key", keys[0] if keys else None)
        key = st.selectbox("Test image", keys, key="wf_key")
    elif source == "Upload an image":
        upload = st.file_uploader("PNG or JPEG up to 50 megapixels (stored as a PNG at the model's size)",
                                  type=["png", "jpg", "jpeg"], key="wf_upload")
        upload_problem = checked_upload(upload)
        if upload_problem:
            st.error(upload_problem)
    c3, c4, c5 = st.columns(3)
    # One field per image source: a chosen or uploaded image runs once unless asked, random ones five times.
    count_key = {"A chosen test image": "wf_count_chosen", "Upload an image": "wf_count_upload"}.get(source, "wf_count")
    kept(count_key, 5 if source == "Random test images" else 1)
    # No min/max on the widget: a value outside them would be shown red but not sent, and Start would run
    # the last valid count. The count is checked here instead.
    count = c3.number_input("Executions", step=1, help="1 to 500 a start", key=count_key, on_change=remember,
                            args=(count_key,))
    count_problem = None if 1 <= count <= 500 else f"Executions must be 1 to 500 a start, not {count:,}."
    chosen = next((m for m in machines if m.name == machine), None)
    # A one-off threshold is for the state machine it was set against: another one, or this one deleted and
    # deployed again, starts from its own threshold (after a clean up and a redeploy it stayed ticked, and new
    # executions ran against it while the page's header gave the workflow's: audit). An update keeps it.
    kept("wf_override", False, follow=(machine, chosen.created) if chosen else machine)
    override = c4.checkbox("Another threshold", key="wf_override",  # a longer label is cut at 1,000 px (audit)
                           help="For this run only: the threshold travels in these executions' input, and the "
                                "workflow's own threshold stays as it is.")
    current = chosen.threshold if chosen else b.default_threshold()
    if not override:
        st.session_state["wf_threshold"] = float(current)  # follows the workflow's until asked for another
    kept("wf_threshold", float(current))
    threshold = c5.slider("Threshold", 0.0, 1.0, step=THRESHOLD_STEP, format=THRESHOLD_FORMAT, key="wf_threshold",
                          disabled=not override)
    if count_problem:
        st.error(count_problem)
    lost = chosen is not None and chosen.functions and chosen.endpoint_name not in {
        e.endpoint_name for e in all_endpoints if e.status in SERVING_STATUSES}
    if lost:  # Start stays, as in the console: what runs then is what the table will show (audit: said at Start)
        st.warning(f"{machine} calls endpoint {chosen.endpoint_name}, which does not serve now: these executions "
                   "will fail at the step that invokes it.", icon=":material/link_off:")
    if override and threshold != current:
        st.caption(f"These executions run with threshold **{threshold_text(threshold)}**, not the workflow's "
                   f"{threshold_text(current)}: for this start only.")
    if st.button("Start", type="primary", key="wf_start",
                 disabled=bool(count_problem) or (source == "Upload an image" and (upload is None or bool(upload_problem)))):
        # A second press while the page reruns arrives as a second click: the same start within 2 s is one start.
        request = (machine, source, key, upload.name if upload else None, upload.size if upload else None, int(count),
                   threshold if override else None)
        if second_press("wf_last_start", request):
            st.toast("Already started: the second press was not taken.")
            return
        pressed("wf_last_start", request)
        try:
            if upload is not None:
                key = b.upload_workflow_image(upload.name, upload.getvalue())
            arns = b.start_workflow_batch(int(count), key, threshold if override else None, machine)
        except BatchPartlyStarted as exc:  # the started ones run and show below; say how many did not
            show_error(exc)
            if not exc.started:
                press_refused("wf_last_start")
            if exc.started:
                st.session_state["wf_pick"] = exc.started[-1].rsplit(":", 1)[-1]
        except SconesError as exc:
            show_error(exc)
            press_refused("wf_last_start")
        else:
            st.session_state["wf_pick"] = arns[-1].rsplit(":", 1)[-1]
            st.toast(f"Started {len(arns)} execution(s).")


def test_labels() -> dict[str, str]:
    """The staged test images' classes by key, read once a staging (the page polls every second)."""
    try:
        report = b.latest_stage_report()
    except SconesError:
        return {}  # the table goes without them; the page's own sections say what failed
    stamp = None if report is None else (report.test_lst, report.staged_at)
    kept_labels = st.session_state.get("wf_test_labels")
    if kept_labels is None or kept_labels[0] != stamp:
        try:
            labels = b.test_image_labels()
        except SconesError:  # test.lst unreadable: without them, and not read again every second (review)
            labels = {}
        kept_labels = (stamp, labels)
        st.session_state["wf_test_labels"] = kept_labels
    return kept_labels[1]


def executions_frame(executions, truth: dict[str, str] | None = None) -> pd.DataFrame:
    """One row an execution. Seconds and confidence are text: blank while running or unread, not 'None'. The
    threshold each was judged against (its own, or the workflow's when it started), since the workflow's may
    have changed since: blank when unknown. What an operator reads first comes first: the page's centred
    column shows about five at 1,000 px (the error was cut to "THRESH" behind the threshold: audit), the rest
    scroll."""
    truth = truth or {}
    columns = ["name", "status", "class", "right", "confidence", "error", "threshold", "seconds", "start", "image",
               "true class", "machine"]
    return pd.DataFrame([{
        "name": e.name, "machine": e.state_machine, "status": e.status,
        "error": e.error or ("(not read yet)" if e.details_pending else ""), "start": e.start,
        "seconds": "" if e.seconds is None else f"{e.seconds:.3f}", "class": e.label or "",
        "confidence": "" if e.confidence is None else confidence_text(e.confidence), "image": e.s3_key or "",
        "threshold": "" if e.threshold is None else threshold_text(e.threshold),
        # a staged test image's own class, and whether the answer was it (uploads have none: blank)
        "true class": truth.get(e.s3_key or "", ""),
        "right": "" if not e.label or not truth.get(e.s3_key or "") else "✓" if e.label == truth[e.s3_key] else "✗",
    } for e in executions], columns=columns)


def pick_label(e) -> str:
    """An execution as the Execution picker lists it: its name, status, answer or error, and start time."""
    answer = e.error or (f"{e.label} {confidence_text(e.confidence, 2)}" if e.label and e.confidence is not None else "")
    return " · ".join(part for part in (e.name, e.status, answer, utc_time(e.start) if e.start else "") if part)


def history_time(value) -> str:
    """An event's time as the table writes an execution's start: 2026-11-29T02:27:11.418Z."""
    if hasattr(value, "isoformat"):
        return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(value)


def failure(error: str, cause: str | None) -> None:
    """The error and the Lambda's errorMessage in one line; the raw cause (stack trace and all) folded away."""
    try:
        parsed = json.loads(cause or "")
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("errorMessage"):
        st.error(f"{error}: {parsed['errorMessage']}")
        with st.popover("Raw cause"):
            st.json(parsed, expanded=True)
    else:
        st.error(f"{error}: {cause}" if cause else error)
    if error == "EndpointNotFound":  # the handler's words are Lambda's (ENDPOINT_NAME); here the fix is two clicks
        st.caption("On this dashboard: deploy a model on the Deploy page, then choose its endpoint in the State "
                   "machine section above and press *Update the workflow*.")


def details_ui(name: str) -> None:
    try:
        execution = b.describe_workflow_execution(name)
        runs = b.workflow_execution_states(name)
        definition = b.workflow_execution_definition(name)  # the machine may have been updated since
        history = b.workflow_execution_history(name)
    except SconesError as exc:
        show_error(exc)
        return
    left, right = st.columns(2)  # in two fifths of the page the graph's labels were 6 px tall at 1,000 px (audit)
    with left:
        if len(runs) <= MAX_DRAWN_STATES:
            st.graphviz_chart(state_machine_dot(definition, runs))
        else:  # graphviz takes minutes over thousands of nodes, and the page redraws it every second
            st.info(f"{len(runs):,} states are too many to draw (at most {MAX_DRAWN_STATES}); each state that ran is "
                    "listed on the right.")
        st.caption(" · ".join(f":{'green' if k == 'succeeded' else 'red' if k == 'failed' else 'orange' if k == 'caught' else 'blue' if k == 'running' else 'gray'}[{v}]"
                              for k, v in LEGEND.items() if k in COLORS))
    with right:
        st.markdown(f"**{execution.name}** · {execution.status}"
                    + (f" · {execution.seconds:.3f} s" if execution.seconds is not None else ""))
        if execution.error:
            failure(execution.error, execution.cause)
        ran = [run for run in runs if run.status != "not_run"]
        if len(ran) > MAX_LISTED_STATES:
            st.caption(f"The {MAX_LISTED_STATES} states that ran last of {len(ran):,}; the event history below has "
                       "them all.")
        for run in ran[-MAX_LISTED_STATES:]:
            with st.expander(f"{run.name} · {run.status}"):
                if run.error:
                    failure(run.error, run.cause)
                st.markdown("Input")
                st.json(run.input if run.input is not None else {}, expanded=False)
                st.markdown("Output")
                st.json(run.output if run.output is not None else {}, expanded=False)
    st.markdown("**Event history**")
    picked = st.dataframe(history_frame(history), hide_index=True, on_select="rerun", selection_mode="single-row",
                          key=f"wf_event:{name}")
    rows = picked.selection.rows if picked is not None else []
    if rows and rows[0] < len(history):
        event = history[rows[0]]
        st.markdown(f"Event {event['id']} · {event['type']}")
        st.json(event_details(event), expanded=True)
    else:
        st.caption("Select an event's row to read its details in full.")


def event_details(event: dict) -> dict:
    """The event's ...EventDetails, as GetExecutionHistory gives them (JSON strings such as input and output
    shown parsed, so nested values can be folded)."""
    out: dict = {}
    for key, value in event.items():
        if not key.endswith("EventDetails"):
            continue
        value = dict(value)
        for field in ("input", "output", "parameters"):
            if isinstance(value.get(field), str):
                try:
                    value[field] = json.loads(value[field])
                except ValueError:
                    pass
        out[key] = value
    return out


def history_frame(history: list[dict]) -> pd.DataFrame:
    """One row an event; the details shortened to a line (the selected row's are shown in full below)."""
    def summary(e: dict) -> str:
        text = json.dumps({k: v for k, v in e.items() if k.endswith("EventDetails")}, default=str)
        return text if len(text) <= DETAILS_CHARS else text[:DETAILS_CHARS - 1] + "…"

    return pd.DataFrame([{"id": e["id"], "previous": e["previousEventId"], "type": e["type"],
                          "timestamp": history_time(e["timestamp"]), "details": summary(e)} for e in history],
                        columns=["id", "previous", "type", "timestamp", "details"])


with st.container(border=True):
    st.subheader("State machine")
    endpoint_status = {e.endpoint_name: e.status for e in all_endpoints}
    flagged: dict[str, list[str]] = {}  # endpoint not serving -> the machines that call it
    for m in machines:
        if not m.functions:  # a machine that calls no function calls no endpoint and has no threshold
            st.markdown(f"**{m.name}** · calls no Lambda function" + (" · imported" if m.imported else ""))
            continue
        st.markdown(f"**{m.name}** · endpoint `{m.endpoint_name}` · threshold **{threshold_text(m.threshold)}** · "
                    f"{len(m.functions)} functions" + (" · imported" if m.imported else ""))
        if endpoint_status.get(m.endpoint_name) not in SERVING_STATUSES:
            flagged.setdefault(m.endpoint_name, []).append(m.name)
    serving = any(s == "InService" for s in endpoint_status.values())
    for endpoint, names in flagged.items():
        st.warning(lost_endpoint_text(endpoint, names, endpoint_status.get(endpoint), serving))
    deploy_ui(said=bool(flagged))
    import_ui()

if machines:
    with st.container(border=True):
        st.subheader("Run")
        run_ui()

    try:
        # Over the executions shown, as the list below decides: an older one still running would otherwise make
        # the two disagree for good, and the page rerun without end.
        running = any(e.status == "RUNNING" or e.details_pending for e in b.list_workflow_executions(limit=SHOWN))
    except SconesError as exc:  # shown by the list below, which keeps polling until it reads again
        running = True

    # AWS's DescribeExecution and GetExecutionHistory are rate-limited per account: poll it less often.
    # While nothing runs it still looks now and then, for executions started elsewhere (the CLI, another tab).
    @st.fragment(run_every=(3.0 if b.name == "aws" else 1.0) if running else (30.0 if b.name == "aws" else 10.0))
    def executions_view() -> None:
        try:
            executions = b.list_workflow_executions(limit=SHOWN + 1)
        except SconesError as exc:  # throttled, say: say so and try again at the next poll
            show_error(exc)
            return
        if not executions:
            st.info("No executions yet: start one above.")
            return
        more = len(executions) > SHOWN
        executions = executions[:SHOWN]
        df = executions_frame(executions, test_labels())
        cards = execution_cards(executions)
        cols = st.columns([0.9, 0.9, 1.4, 1.4, 0.8])  # the two long labels read whole at 1,000 px (audit)
        cols[0].metric("Executions", cards["executions"],  # not this start's: every one listed below (audit)
                       help="Every execution in the table below (all of this workspace's, up to the newest "
                            f"{SHOWN}), not only the last start's.")
        cols[1].metric("Succeeded", cards["succeeded"])
        cols[2].metric("Below threshold", cards["below_threshold"], help=f"Executions that failed with "
                       f"{THRESHOLD_ERROR} at the threshold they ran with (Monitor counts inferences against its "
                       "own slider).")
        cols[3].metric("Failed otherwise", cards["failed_otherwise"],
                       help="Failed, timed out or aborted for another reason than the threshold.")
        cols[4].metric("Running", cards["running"])
        if more:
            st.caption(f"The newest {SHOWN} executions: the counts and the table are of these, older ones are not "
                       "counted here.")
        if cards["unread"]:
            st.caption(f"{cards['unread']} finished execution(s) not read yet: AWS rate-limits DescribeExecution, so "
                       f"their error and class fill in over the next refreshes; {cards['unread_failed']} failed "
                       "one(s) among them count in Below threshold or Failed otherwise once read.")
        st.dataframe(df, hide_index=True, height=min(260, 38 + 35 * len(df)),  # no empty rows under a short list
                     column_config={"threshold": st.column_config.TextColumn(
                                        width=80, help="The threshold the execution was judged against: its own "
                                                       "(Another threshold, for one run) or the workflow's "
                                                       "when it started; blank when not known"),
                                    "name": st.column_config.TextColumn(width=120, pinned=True),
                                    "status": st.column_config.TextColumn(width=100),
                                    "class": st.column_config.TextColumn(width=95),
                                    "right": st.column_config.TextColumn(
                                        width=50, help="For a staged test image: ✓ when the class is the image's "
                                                       "own (true class), ✗ when not; blank for uploads"),
                                    "confidence": st.column_config.TextColumn(width=90),
                                    "error": st.column_config.TextColumn(width=240),
                                    "seconds": st.column_config.TextColumn(width=70)})
        names = list(df["name"])
        if st.session_state.get("wf_pick") not in names:
            st.session_state["wf_pick"] = names[0]
        labels = {e.name: pick_label(e) for e in executions}  # a bare name told nothing of which one it was (audit)
        details_ui(st.selectbox("Execution", names, key="wf_pick", format_func=lambda n: labels.get(n, n)))
        if any(e.status == "RUNNING" or e.details_pending for e in executions) != running:
            st.rerun()  # poll fast while something runs (started here or elsewhere), stop when all have ended

    executions_view()
