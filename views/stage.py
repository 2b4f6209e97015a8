"""Stage: choose a CIFAR-100 source and classes, stage them, see what was written."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from backend.api import JOB_COMPLETED, JOB_IN_PROGRESS, SconesError
from backend.settings import DEFAULT_CLASSES
from ui.charts import class_balance_chart, counts_frame
from ui.state import backend, pressed, second_press, watch_for_changes
from ui.widgets import image_grid, show_error, utc_time

SOURCES = {
    "Bundled sample (offline, 1,200 real images)": "sample",
    "Official download (169 MB, falls back to the sample offline)": "official",
    "A URL (a mirror of the official archive)": "url",
    "Local file path": "path",
    "Upload an archive": "upload",
}

st.title("Stage data")
st.caption("The CIFAR-100 python archive, filtered to the classes you choose, written to the bucket as PNGs "
           "under `train/` and `test/` with SageMaker `.lst` files. Labels come from `fine_labels`, never filenames.")

try:
    b = backend()
except SconesError as exc:
    show_error(exc)
    st.stop()


@st.cache_data(show_spinner=False)
def stageable_classes(source: str) -> tuple[str, ...]:
    return backend().stageable_classes(source)


def source_text(source: str) -> tuple[str, str]:
    """What a staging was read from: a short name for the metric, and the whole of it (URL or path)."""
    if source == "sample":
        return "Sample", "the bundled sample"
    if source == "official":
        return "Official download", "the official CIFAR-100 download"
    if source.startswith(("http://", "https://")):
        return "URL", source
    try:
        uploaded = Path(source).resolve().is_relative_to(b.settings.uploads_dir.resolve())
    except (OSError, AttributeError):
        uploaded = False
    return ("Upload" if uploaded else "Local file"), (Path(source).name if uploaded else source)


def source_ui() -> tuple[str | None, bytes | None, str]:
    """Returns (source, uploaded bytes, uploaded file name). A source refused as typed says so here, and sets
    `stage_input_refused` (the older attempt's failure is then not shown under it: two red boxes at once)."""
    st.session_state["stage_input_refused"] = False
    choice = SOURCES[st.radio("Source", list(SOURCES), key="stage_source")]
    if choice == "url":
        url = st.text_input("Archive URL", placeholder="https://mirror.example.com/cifar-100-python.tar.gz",
                            key="stage_url", help="An http(s) address serving the official archive: the download "
                            "is checked against the official md5. For another archive, download it and give its "
                            "path, or upload it.")
        url = url.strip()
        if not url:
            return None, None, ""
        if not url.lower().startswith(("http://", "https://")):  # else the backend would look for a file of that name
            st.error(f"{url} is not an http:// or https:// address: enter the archive's URL, or choose Local file path.")
            st.session_state["stage_input_refused"] = True
            return None, None, ""
        try:
            return b.resolve_source(url), None, ""  # no host, say: refused as typed, with Start disabled
        except SconesError as exc:
            show_error(exc)
            st.session_state["stage_input_refused"] = True
            return None, None, ""
    if choice == "path":
        path = st.text_input("Archive path on this machine", placeholder="/data/cifar-100-python.tar.gz", key="stage_path")
        return (path.strip() or None), None, ""
    if choice == "upload":
        up = st.file_uploader("CIFAR-100 python archive (.tar.gz)", type=["gz", "tgz"], key="stage_upload")
        return ("upload" if up else None), (up.getvalue() if up else None), (up.name if up else "")
    return choice, None, ""


def start(source: str, data: bytes | None, filename: str, classes: list[str], request: tuple) -> bool:
    """Start a staging, or say in one sentence why not (another one running included: the backend refuses it)."""
    saved = None
    try:
        if source == "upload":
            source = saved = b.save_upload(filename, data or b"")
        job_id = b.start_staging(source, classes, fallback_to_sample=(source == "official"))
    except SconesError as exc:
        if saved is not None:  # refused before it started (another staging, a training job): the copy goes
            b.discard_upload(saved)
        show_error(exc)
        return False
    pressed("stage_last_start", request, job_id)
    return True


def still_staging(job_id: str) -> bool:
    try:
        return b.describe_job(job_id).status == JOB_IN_PROGRESS
    except SconesError:
        return False


tab_stage, tab_explore = st.tabs(["Stage", "Explore archive"])

with tab_stage:
    with st.container(border=True):
        source, data, filename = source_ui()
        # The bundled sample offers the classes it has images of: it offered all 100 and refused the rest only
        # after Start (browser audit). Any other source may hold every fine label.
        names = stageable_classes(source or "official")
        classes = st.multiselect("Classes (fine labels; the order sets the class index)", names,
                                 default=[c for c in DEFAULT_CLASSES if c in names], key="stage_classes")
        # this press (or the source as typed) was refused, with its own message: no older failure under it
        refused = bool(st.session_state.get("stage_input_refused"))
        # Enabled while a staging runs: a disabled button's click is dropped by Streamlit, so a press that met
        # a staging started just before (another tab, the CLI) was lost without a word; the backend refuses it.
        if st.button("Start staging", type="primary", disabled=source is None, key="stage_start"):
            request = (source, filename, len(data) if data else None, tuple(classes))
            if second_press("stage_last_start", request, still_staging):
                st.toast("Already started: the second press was not taken.")
            elif len(classes) < 2:
                st.error("Choose at least two classes: a classifier needs two or more.")
                refused = True
            elif start(source, data, filename, classes, request):
                st.rerun()
            else:
                refused = True

    job = b.latest_job("stage")
    active = job is not None and job.status == JOB_IN_PROGRESS
    def staging_signature() -> tuple | None:
        latest = b.latest_job("stage")
        return (latest.job_id, latest.status) if latest else None

    # A staging started or ended elsewhere (the CLI, another tab) shows without a click.
    watch_for_changes("stage_signature", staging_signature, (job.job_id, job.status) if job else None,
                      aws=b.name == "aws", idle=not active)

    @st.fragment(run_every=0.5 if active else None)
    def progress_view() -> None:
        current = b.latest_job("stage")
        if current is None:
            return
        if current.status == JOB_IN_PROGRESS:
            st.progress(current.progress, text=f"{current.job_id}: {current.message}")
            st.session_state["stage_watching"] = current.job_id
        elif st.session_state.pop("stage_watching", None) == current.job_id:
            st.rerun()  # the job just ended: redraw the whole page with its report
        elif current.status != JOB_COMPLETED and not refused:
            st.error(f"The last staging attempt ({utc_time(current.updated)}) {current.status.lower()}: "
                     f"{current.failure_reason}",
                     icon=":material/error:")

    progress_view()

    def staged_view() -> None:
        """The staged dataset: counts, balance, sample images."""
        try:
            report = b.latest_stage_report()
        except SconesError as exc:
            show_error(exc)
            return
        if report is None:
            st.info("No data staged yet: choose a source and classes, then Start staging.")
            return
        total = sum(sum(c.values()) for c in report.counts.values())
        st.subheader("Staged dataset")
        if report.note:
            st.warning(report.note)
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Images", f"{total:,}")
        m2.metric("Classes", len(report.classes))
        # A re-run changed only "Seconds 0.50" to "0.62": when it ran, and what the figure is, are said (audit)
        when = f"Staged at {report.staged_at.replace('T', ' ')[:19]} UTC" if report.staged_at else ""
        m3.metric("Staging time", f"{report.seconds:.2f} s", help=when or None)
        short, full = source_text(report.source)
        m4.metric("Source", short, help=full)
        if full != short:
            st.caption(" · ".join(x for x in (when, f"Source: `{full}`") if x))
        elif when:
            st.caption(when)
        df = counts_frame(report.counts)
        left, right = st.columns([2, 3])
        with left:
            table = df.pivot(index="class", columns="split", values="images").reindex(
                index=list(report.classes), columns=[s for s in ("train", "test") if s in report.counts])
            st.dataframe(table)
            st.markdown(
                f"Bucket `s3://{report.bucket}/` · images under `{report.train_prefix}` and `{report.test_prefix}` · "
                f"lists `{report.train_lst}`, `{report.test_lst}`"
            )
        with right:
            st.altair_chart(class_balance_chart(df), width="stretch")
        st.subheader("Sample images")
        split = st.segmented_control("Split", ["train", "test"], default="train", key="stage_sample_split") or "train"
        samples = b.staged_samples(split, per_class=8)
        for cls in report.classes:
            st.markdown(f"**{cls}**")
            image_grid([(s.data, s.key.rsplit('/', 1)[-1]) for s in samples if s.label == cls], columns=8)

    staged_view()

with tab_explore:
    st.caption("Look inside an archive before staging it: its files, the pickles' keys and array shapes, "
               "and the 100 fine / 20 coarse label names.")
    which = st.selectbox("Archive", ["Bundled sample", "Official download (once downloaded)", "Local file path"], key="explore_which")
    target = {"Bundled sample": "sample", "Official download (once downloaded)": "official"}.get(which)
    if target is None:
        target = st.text_input("Archive path", key="explore_path").strip() or None
    if target and st.button("Explore", key="explore_go"):
        try:
            info = b.archive_info(target)
        except SconesError as exc:
            show_error(exc)
        else:
            st.markdown("**Files**")
            st.dataframe(pd.DataFrame([vars(m) for m in info.members]), hide_index=True)
            st.markdown("**Pickle keys**")
            st.dataframe(pd.DataFrame([
                {"pickle": p, "key": a.key, "kind": a.kind, "shape": " x ".join(map(str, a.shape)), "dtype": a.dtype}
                for p, arrays in info.pickles.items() for a in arrays
            ]), hide_index=True)
            c1, c2 = st.columns(2)
            c1.markdown(f"**{len(info.fine_label_names)} fine labels**")
            c1.dataframe(pd.DataFrame({"fine label": info.fine_label_names}), height=300)
            c2.markdown(f"**{len(info.coarse_label_names)} coarse labels**")
            c2.dataframe(pd.DataFrame({"coarse label": info.coarse_label_names}), height=300)
            st.markdown("**Images per fine label present**")
            st.dataframe(pd.DataFrame(info.counts).fillna(0).astype(int), height=200)
