"""Train: the image-classification algorithm's hyperparameters, Start, a live chart, the jobs, evaluation."""
from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st

from backend.api import JOB_COMPLETED, JOB_IN_PROGRESS, SconesError, TrainingJob
from ui.charts_training import (
    confusion_chart, confusion_chart_height, confusion_frame, jobs_frame, metrics_chart, metrics_frame, per_class_frame,
    POLL_SECONDS, planned_epochs, progress_text, status_text, training_poll_seconds,
)
from ui.state import backend, kept, kept_value, press_refused, pressed, remember, second_press, watch_for_changes
from ui.widgets import image_grid, show_error

FIELDS_PER_ROW = 3
METRICS_CHART_PX = 360  # the whole chart: plot, axes, legend
# The form's first rows; every other hyperparameter of the algorithm sits in "More hyperparameters".
MAIN = ["num_layers", "epochs", "mini_batch_size", "learning_rate", "optimizer", "momentum", "weight_decay",
        "augmentation_type", "cutmix", "test_time_flip", "int8_serving", "lr_scheduler_step", "lr_scheduler_factor",
        "precision_dtype", "use_pretrained_model"]  # cutmix, test_time_flip, int8_serving: local options (not on AWS)
DATA = ["image_shape", "num_classes", "num_training_samples"]
EARLY = ["early_stopping", "early_stopping_patience", "early_stopping_min_epochs", "early_stopping_tolerance"]
PRESETS = {"local": "Local CPU defaults", "sagemaker": "SageMaker workflow (AWS values)"}
VALIDATION = {"test": "Test split (as the workflow does)", "holdout": "Hold-out: 20% of the training data"}

ACTIVE = (JOB_IN_PROGRESS, "Stopping")  # polled; SageMaker's Stopping comes between InProgress and Stopped

st.title("Train")

try:
    b = backend()
    where = ("as a SageMaker training job" if b.name == "aws" else "locally in a worker process")
    st.caption(f"SageMaker's built-in image-classification algorithm (a ResNet), run {where} on the staged "
               "`train/` + `train.lst`, validated on `test/` + `test.lst`. Hyperparameters keep the algorithm's "
               "names; a bad value is refused before anything starts. Three fields are not the algorithm's: "
               "`cutmix`, `test_time_flip` and `int8_serving`, local training options (the AWS backend has no "
               "such fields).")
    specs = {s["name"]: s for s in b.training_hyperparameter_specs()}
except SconesError as exc:
    show_error(exc)
    st.stop()


def load_preset(preset: str) -> bool:
    """Fill every form field from a preset (fields the preset leaves out become empty = the algorithm's default);
    False, with the error shown, when the backend cannot give it."""
    try:
        values = b.default_training_hyperparameters(preset)
    except SconesError as exc:
        show_error(exc)
        return False
    for name in specs:
        st.session_state[f"hp_{name}"] = values.get(name, "")
    st.session_state["train_preset"] = preset
    st.session_state["train_loaded"] = {name: values.get(name, "") for name in specs}
    forget_data_fields()
    return True


def forget_data_fields() -> None:
    """The form was filled anew (a preset, a copied job): its Data fields follow the staging from these values."""
    for key in ("train_data_filled", "train_data_seen"):
        st.session_state.pop(key, None)


def staged_data_values(staged) -> dict[str, str] | None:
    """The Data fields a staging decides (None while nothing is staged)."""
    return None if staged is None else staged.data_hyperparameters()


def data_label(staged: dict[str, str] | None) -> str:
    """What the Data fields hold, truly: the staged data's counts, or how they differ from it."""
    if staged is None:
        return "**Data** (no staged data to read now: stage it first, or wait for the staging that runs)"
    fields = {n: str(kept_value(f"hp_{n}", "")).strip() for n in staged}
    if fields == staged:
        return "**Data** (filled in from the staged data)"
    return (f"**Data** (the staged data has {int(staged['num_training_samples']):,} training images of "
            f"{staged['num_classes']} classes)")


def follow_staging(staged) -> None:
    """The Data fields follow a later staging (the CLI's, another tab's) unless the operator typed another
    value: a field still holding what the page put there takes the new staging's count."""
    now = staged_data_values(staged)
    for name in DATA[1:]:  # their values as the operator left them: Streamlit drops them on another page
        kept(f"hp_{name}", "")
    filled = st.session_state.get("train_data_filled")
    if filled is None or st.session_state.get("train_data_seen") == now:
        if filled is None:  # what the preset (or a copied job) put in the fields
            st.session_state["train_data_filled"] = {n: str(st.session_state.get(f"hp_{n}", "")) for n in DATA[1:]}
        st.session_state["train_data_seen"] = now
        return
    for name, value in (now or {}).items():
        key = f"hp_{name}"
        if str(st.session_state.get(key, "")) == filled.get(name):  # not edited since the page filled it
            st.session_state[key] = value
            remember(key)
            filled[name] = value
    st.session_state["train_data_seen"] = now


def copy_job(job: TrainingJob) -> None:
    """Fill the form with a job's hyperparameters (a button callback: it runs before the form is drawn),
    as the SageMaker console's Clone does; fields the job left unset become empty."""
    for name in specs:
        st.session_state[f"hp_{name}"] = job.hyperparameters.get(name, "")
        remember(f"hp_{name}")
    if job.validation in VALIDATION:  # the same validation data too, or the copy would not be the same job
        st.session_state["train_validation"] = job.validation
        remember("train_validation")
    st.session_state["train_preset"] = f"job:{job.job_name}"
    st.session_state["train_loaded"] = {name: job.hyperparameters.get(name, "") for name in specs}
    forget_data_fields()


if "train_preset" not in st.session_state and not load_preset("sagemaker" if b.name == "aws" else "local"):
    st.stop()  # the same error would follow from every read below: once is enough


def field(name: str, container: Any = st) -> str:
    """One hyperparameter's widget, its value kept while another page is shown (Streamlit drops it there)."""
    spec = specs[name]
    key = f"hp_{name}"
    label = name + (" *" if spec["required"] else "")
    kept(key, "")
    if spec["choices"]:
        options = ([""] if not spec["required"] else []) + spec["choices"]
        if st.session_state[key] not in options:
            st.session_state[key] = ""
        return container.selectbox(label, options, key=key, help=spec["help"], on_change=remember, args=(key,),
                                   format_func=lambda v: v if v else "(not set)")
    return container.text_input(label, key=key, help=spec["help"], on_change=remember, args=(key,),
                                placeholder=f"default {spec['default']}" if spec["default"] else "not set")


def edited_fields() -> list[str]:
    """The fields that differ from what the preset (or the copied job) filled in; the Data fields follow the
    staging and are not counted."""
    loaded = st.session_state.get("train_loaded")
    if not isinstance(loaded, dict):
        return []
    return [n for n in specs if n not in DATA
            and str(kept_value(f"hp_{n}", "")).strip() != str(loaded.get(n, "")).strip()]


def billing_ui() -> bool:
    """Where a start bills (AWS), the operator ticks what it costs first; True when it may start."""
    try:
        notice = b.billing_notice("training")
    except SconesError as exc:
        show_error(exc)
        return False
    if notice is None:
        return True
    return st.checkbox(notice.confirmation, key="train_confirm",
                       help="Billed per second while the job runs; a job stops at its maximum runtime at the latest.")


def form_ui() -> tuple[dict[str, str], str, str, bool]:
    """Returns (hyperparameters that are set, validation channel, job name, start pressed)."""
    presets = st.container(horizontal=True)  # each button as wide as its label
    if presets.button(PRESETS["local"], key="train_preset_local", help="Values chosen for CPU training on this machine."):
        load_preset("local")
    if presets.button(PRESETS["sagemaker"], key="train_preset_sagemaker",
                 help="The Scones notebook's values for AWS (ResNet-152, 30 epochs): slow on a CPU."):
        load_preset("sagemaker")
    preset = st.session_state.get("train_preset", "local")
    edited = edited_fields()
    st.caption((f"Preset: **{PRESETS[preset]}**" if preset in PRESETS
                else f"Copied from job **{preset.removeprefix('job:')}** (edit before starting)")
               + (f"; edited since: {', '.join(edited)}" if edited else ""))
    if preset == "sagemaker" and b.name == "local":
        st.warning("These are the notebook's values for a GPU on AWS. Here they train ResNet-152 on the CPU: about "
                   "a minute or more per epoch on 2 cores, so 30 epochs take half an hour or longer. "
                   f"**{PRESETS['local']}** trains in about a minute and a half (about a quarter longer while this "
                   "page watches it: the page shares the two cores).", icon=":material/schedule:")
    confirmed = billing_ui()
    # Not an st.form: a form sends its values only with its submit button, so an edit typed before going to
    # another page was lost; each field's value is kept (kept/remember) as soon as it is entered.
    with st.container(border=True):
        # Three to a row: with four, names such as augmentation_type broke mid-word at 1,000 px (browser audit).
        cols = st.columns(FIELDS_PER_ROW)
        for i, name in enumerate(n for n in MAIN if n in specs):
            field(name, cols[i % FIELDS_PER_ROW])
        follow_staging(report)
        st.markdown(data_label(staged_data_values(report)))
        cols = st.columns(FIELDS_PER_ROW)
        for i, name in enumerate(DATA):
            field(name, cols[i % FIELDS_PER_ROW])
        with st.expander("Early stopping"):
            cols = st.columns(2)
            for i, name in enumerate(EARLY):
                field(name, cols[i % 2])
        with st.expander("More hyperparameters"):
            rest = [n for n in specs if n not in MAIN + DATA + EARLY]
            cols = st.columns(FIELDS_PER_ROW)
            for i, name in enumerate(rest):
                field(name, cols[i % FIELDS_PER_ROW])
        c1, c2 = st.columns(2)
        kept("train_validation", "test")
        validation = c1.radio("Validation channel", list(VALIDATION), format_func=VALIDATION.get,
                              key="train_validation", horizontal=True, on_change=remember, args=("train_validation",))
        kept("train_job_name", "")
        job_name = c2.text_input("Job name (optional)", key="train_job_name", on_change=remember,
                                 args=("train_job_name",), placeholder="image-classification-<date-time>")
        values = {n: str(st.session_state.get(f"hp_{n}", "")).strip() for n in specs}
        set_values = {n: v for n, v in values.items() if v}
        try:
            notes = b.training_advisories(set_values)
        except SconesError:
            notes = []
        for note in notes:  # allowed, but not what the values seem to ask for (browser audit)
            st.warning(note, icon=":material/info:")
        start = st.button("Start training", type="primary", key="train_start", disabled=not confirmed)
    return set_values, validation, job_name.strip(), start


def epoch_pace(job: TrainingJob, from_epoch_ends: bool = False) -> float | None:
    """Seconds per epoch as this page saw the job's epochs end (so startup is not counted), once it has
    seen two epoch counts. The first count seen is when the page looked, not when an epoch ended:
    `from_epoch_ends` leaves it out (a slow job looked at just before an epoch ended would read fast)."""
    seen = st.session_state.setdefault("train_epochs_seen", {}).setdefault(job.job_name, {})
    done = len(job.epochs)
    if done and done not in seen:
        seen[done] = time.monotonic()
    counts = sorted(seen.items())[1 if from_epoch_ends else 0:]
    if len(counts) < 2:
        return None
    (first, t0), (last, t1) = counts[0], counts[-1]
    return (t1 - t0) / (last - first)


def jobs_table_view(polled: bool, drawn: frozenset[str] = frozenset()) -> None:
    """The job list; a fragment polled while any job runs, so it keeps up with the job panel below. `drawn`: the
    job names the page was drawn with (its Job selector)."""
    try:
        jobs = b.list_training_jobs()
    except SconesError as exc:
        show_error(exc)
        return
    if polled and {j.job_name for j in jobs} != drawn:
        st.rerun()  # a job started (or was deleted) elsewhere while one runs: the selector and the notice follow
    # The name stays in view when the table scrolls sideways (at 1,000 px it shows about three columns);
    # the status reads whole (audit).
    st.dataframe(jobs_frame(jobs), hide_index=True, width="stretch",
                 column_config={"job name": st.column_config.TextColumn(pinned=True),
                                "seconds": st.column_config.NumberColumn(format="%.1f"),
                                "status": st.column_config.TextColumn(width=170),
                                "served accuracy": st.column_config.TextColumn(
                                    help="What the graph the endpoint serves scored on the same validation images: "
                                         "the 8-bit graph's with int8_serving=1, else the validation accuracy.")})
    if polled and not any(j.status in ACTIVE for j in jobs):
        st.rerun()  # the last running job ended: redraw the page, which stops this polling


def poll_seconds(job: TrainingJob) -> float:
    """How often the job panel polls a running job: less often once its epochs are seen to be fast (and then
    for the rest of the job, so a pace near the line does not switch it back and forth)."""
    fast = st.session_state.setdefault("train_fast_jobs", set())
    seconds, is_fast = training_poll_seconds(epoch_pace(job, from_epoch_ends=True), job.job_name in fast)
    if is_fast:
        fast.add(job.job_name)
    return seconds


def job_view(name: str, every: float | None = None) -> None:
    """Status, live chart, Stop and log of one job; polled (every `every` s) while it runs."""
    try:
        job = b.describe_training_job(name)
    except SconesError as exc:
        show_error(exc)
        return
    planned = planned_epochs(job)
    running = job.status in ACTIVE
    if running and every is not None and poll_seconds(job) != every:
        st.rerun()  # the pace is known now: the page sets the fragment's interval again
    if running:
        st.session_state["train_watching"] = name
    elif st.session_state.pop("train_watching", None) == name:
        st.rerun()  # the job just ended: redraw the whole page (job list, evaluation)
    c1, c2, c3 = st.columns([2, 2, 1])
    c1.markdown(f"**{job.job_name}** · {status_text(job)}")
    done = 1.0 if job.status == JOB_COMPLETED else min(len(job.epochs) / planned, 1.0)  # early stopping: complete too
    c2.progress(done, text=progress_text(job, planned, epoch_pace(job)))
    if job.status == JOB_IN_PROGRESS and c3.button("Stop", key="train_stop", icon=":material/stop_circle:"):
        try:
            b.stop_training_job(name)
        except SconesError as exc:
            show_error(exc)
        st.rerun()
    if job.failure_reason:
        st.error(f"{job.status}: {job.failure_reason}", icon=":material/error:")
    df = metrics_frame(job.epochs)
    if len(df):
        # The height given here: left to the spec ("content"), a layered chart's plot came out a few pixels tall
        st.altair_chart(metrics_chart(df, planned), width="stretch", height=METRICS_CHART_PX)
    elif running:
        st.info(f"{job.secondary_status}: the chart fills in as each epoch ends.")
    st.caption(f"{len(job.epochs)} of {planned} epochs recorded · {job.seconds:.0f} s"
               + (f" · artifact `{job.model_artifact}`" if job.model_artifact else ""))
    with st.expander("Hyperparameters"):
        st.dataframe(pd.DataFrame(sorted(job.hyperparameters.items()), columns=["hyperparameter", "value"]),
                     hide_index=True)
        if st.button("Copy to the form", key="train_copy", on_click=copy_job, args=(job,),
                     help="Fill the New training job form with these values, to start a variant of this job."):
            st.rerun()  # redraw the whole page: the form is outside this fragment
    with st.expander("Log"):
        try:
            st.code(b.training_log(name)[-20000:] or "(empty)", language="text", wrap_lines=True)
        except SconesError as exc:  # on AWS: no permission to read CloudWatch Logs, or throttled
            st.warning(f"{exc} Without the log, the chart has no per-epoch metrics.", icon=":material/warning:")


def evaluation_view(job: TrainingJob) -> None:
    try:
        ev = b.evaluate_training_job(job.job_name)
    except SconesError as exc:
        show_error(exc)
        return
    # The table beside the accuracy and the matrix below at its own size: at 1,000 px the table lost its recall
    # column and the matrix, squeezed into a third of the page, ran its class labels together (browser audit).
    c1, c2 = st.columns([1, 3])
    c1.metric("Test accuracy", f"{ev.accuracy:.3f}")
    c2.dataframe(per_class_frame(ev.per_class), column_config={
        "precision": st.column_config.NumberColumn(format="%.3f"),
        "recall": st.column_config.NumberColumn(format="%.3f")})
    left, _ = st.columns(2)  # half the page, as wide as the column and as tall as given (not squeezed to a line)
    left.altair_chart(confusion_chart(confusion_frame(ev.classes, ev.confusion_matrix)), width="stretch",
                      height=confusion_chart_height(len(ev.classes)))
    st.markdown(f"**Most confidently wrong** ({len(ev.worst)} shown)")
    if not ev.worst:
        st.success("No test image is misclassified.")
    items = []
    for w in ev.worst:
        try:
            items.append((b.get_object(w["key"]), f"{w['label']} → {w['predicted']} {w['confidence']:.2f}"))
        except SconesError:
            continue
    image_grid(items, columns=6)


def still_running(name: str) -> bool:
    """The job is InProgress or Stopping (False when it cannot be read)."""
    try:
        return b.describe_training_job(name).status in ACTIVE
    except SconesError:
        return False


def start_training(hyperparameters: dict[str, str], validation: str, job_name: str) -> None:
    """Create the job and select it. A second press while the page reruns arrives as a second click: the same
    values again within 2 s, or while the job they started still runs, are that one start (its job selected)."""
    request = (tuple(sorted(hyperparameters.items())), validation, job_name)
    repeated = second_press("train_last_start", request, still_running if b.name == "local" else None)
    if repeated:
        if isinstance(repeated, str):
            st.session_state["train_selected"] = repeated  # the click carried the selector's older value
        st.toast("Already started: the second press was not taken.")
        return
    pressed("train_last_start", request)
    try:
        created = b.create_training_job(hyperparameters, job_name=job_name or None, validation=validation)
    except SconesError as exc:
        press_refused("train_last_start")
        show_error(exc)
        return
    pressed("train_last_start", request, created)
    st.session_state["train_selected"] = created
    st.session_state.setdefault("train_jobs_seen", set()).add(created)
    st.toast(f"Started {created}")
    st.rerun()


try:
    report = b.latest_stage_report()
except SconesError as exc:
    show_error(exc)
    st.stop()
if report is None:
    st.info("No data staged yet: stage the data first (Stage data page), then come back to train.")

st.subheader("New training job")
hyperparameters, validation, job_name, start = form_ui()
if start:
    start_training(hyperparameters, validation, job_name)

st.subheader("Training jobs")
try:
    jobs = b.list_training_jobs()
except SconesError as exc:
    show_error(exc)
    st.stop()


def new_elsewhere(jobs: list[TrainingJob]) -> None:
    """Say so when a job started from the CLI or another tab runs while this page shows another one, with a
    button to show it; the page does not switch by itself (the operator may be reading an evaluation). The
    jobs the page has seen are kept: each starts as seen when the page first opens, or when started here."""
    seen = st.session_state.setdefault("train_jobs_seen", None)
    names = {j.job_name for j in jobs}
    if seen is None:
        st.session_state["train_jobs_seen"] = names
        return
    selected = st.session_state.get("train_selected")
    seen |= {selected}
    fresh = [j for j in jobs if j.job_name not in seen and j.status in ACTIVE]
    seen |= names - {j.job_name for j in fresh}  # ended before anyone looked: the table shows it
    if not fresh:
        return
    job = fresh[0]  # the newest
    c1, c2 = st.columns([5, 1], vertical_alignment="center")
    c1.info(f"**{job.job_name}** started from the CLI or another tab and is {job.status}"
            + (f" (and {len(fresh) - 1} more)" if len(fresh) > 1 else "") + ".", icon=":material/fiber_new:")
    c2.button("Show it", key="train_show_new", on_click=show_job, args=(job.job_name,))


def show_job(name: str) -> None:
    st.session_state["train_selected"] = name
    st.session_state.setdefault("train_jobs_seen", set()).add(name)


def train_signature(jobs: list, staged) -> tuple:
    return tuple((j.job_name, j.status) for j in jobs), staged_data_values(staged)


# A job started from the CLI or another tab, or a new staging, shows without a click (while one runs, the
# job list polls itself).
watch_for_changes("train_signature", lambda: train_signature(b.list_training_jobs(), b.latest_stage_report()),
                  train_signature(jobs, report), aws=b.name == "aws", idle=not any(j.status in ACTIVE for j in jobs))
if not jobs:
    st.info("No training job yet: set the hyperparameters above and press Start training.")
    st.stop()

any_running = any(j.status in ACTIVE for j in jobs)
running_job = next((j for j in jobs if j.status in ACTIVE), None)
# Its rows change with each epoch too: as often as the job panel, half as often once epochs are fast.
table_every = None if running_job is None else (
    POLL_SECONDS if (s := poll_seconds(running_job)) == POLL_SECONDS else 2 * s)
names = [j.job_name for j in jobs]
st.fragment(run_every=table_every)(jobs_table_view)(any_running, frozenset(names))
if st.session_state.get("train_selected") not in names:
    # Streamlit forgets a widget's value on another page: come back to the job last looked at (and so
    # to its evaluation), else the newest.
    last = st.session_state.get("train_last_selected")
    st.session_state["train_selected"] = last if last in names else names[0]
new_elsewhere(jobs)
selected = st.selectbox("Job", names, key="train_selected")
st.session_state["train_last_selected"] = selected
current = next(j for j in jobs if j.job_name == selected)

every = poll_seconds(current) if current.status in ACTIVE else None
st.fragment(run_every=every)(job_view)(selected, every)

if current.status == JOB_COMPLETED:
    st.subheader("Evaluation on the test split")
    st.caption("On AWS the model runs only in SageMaker's container: deploy it and try the test images on the "
               "Deploy page." if b.name == "aws" else
               "The job's model.tar.gz, loaded with onnxruntime as the endpoint will load it, on the staged test images.")
    if st.button("Evaluate", key="train_evaluate") or st.session_state.get("train_evaluated") == selected:
        st.session_state["train_evaluated"] = selected
        evaluation_view(current)
    made = [m.model_name for m in b.list_models() if m.job_name == selected]
    if made:
        st.caption(f"Model `{made[0]}` exists (created from this job).")
    elif st.button("Create model", key="train_create_model", help="As CreateModel: the deploy page serves models."):
        try:
            b.create_model(selected)
        except SconesError as exc:
            show_error(exc)
        else:
            st.rerun()
