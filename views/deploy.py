"""Deploy: a model to an endpoint with data capture, its status as it changes, and Try it on images."""
from __future__ import annotations

import hashlib
import io

import pandas as pd
import streamlit as st

from backend.api import DEFAULT_ENDPOINT, JOB_COMPLETED, SERVED_ACCURACY, SERVING_STATUSES, CaptureConfig, SconesError
from backend.images import refuse_decompression_bombs
from backend.local.serving.server import MAX_BODY_BYTES, MAX_PIXELS
from ui.charts_deploy import probabilities_frame, probability_chart, probability_chart_height
from ui.state import backend, kept, remember, watch_for_changes
from ui.widgets import show_error, show_image, utc_time

INSTANCE_TYPES = ("ml.m5.xlarge", "ml.m5.large", "ml.t2.medium", "ml.c5.large", "ml.c5.xlarge")
BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")  # SageMaker's transitions
STATUS_COLORS = {"InService": "green", "Creating": "blue", "Updating": "blue", "Deleting": "orange",
                 "Failed": "red", "OutOfService": "gray"}
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg"}
MB = 1024 * 1024  # InvokeEndpoint's 6 MB: 6,291,456 bytes (MAX_BODY_BYTES)

st.title("Deploy")
st.caption("A model behind an endpoint with SageMaker's serving contract (POST /invocations, a JSON list of "
           "probabilities) and data capture in Model Monitor's JSONL format. Locally each endpoint is one process "
           "on 127.0.0.1; models do not cross backends.")

try:
    b = backend()
    workspace = b.describe_workspace()
    models = b.list_models()
    endpoints = b.list_endpoints()
except SconesError as exc:
    show_error(exc)
    st.stop()
try:  # completed jobs whose model is not made yet: CreateModel from here too, not only on the Train page
    with_model = {m.job_name for m in models}
    unmodelled = [j.job_name for j in b.list_training_jobs()
                  if j.status == JOB_COMPLETED and j.job_name not in with_model]
except SconesError as exc:  # a side feature: the rest of the page still serves
    unmodelled = []
    st.caption(f"Training jobs could not be listed ({exc}); create models on the Train page.")


def act(call, *args) -> None:
    """Run an action; redraw on success, one sentence on failure."""
    try:
        call(*args)
    except SconesError as exc:
        show_error(exc)
    else:
        st.rerun()


CARD_METRICS = ((SERVED_ACCURACY, "served accuracy"), ("validation:accuracy", "validation accuracy"),
                ("train:accuracy", "train accuracy"))
METRIC_HELP = {
    SERVED_ACCURACY: "the accuracy of the 8-bit graph the endpoint serves, on the job's validation images",
    "validation:accuracy": "PyTorch's at the last epoch, as the training chart shows it",
    "train:accuracy": "on the augmented training batches of the last epoch",
}


def badge(status: str) -> str:
    return f":{STATUS_COLORS.get(status, 'gray')}-badge[{status}]"


def model_label(name: str) -> str:
    model = next(m for m in models if m.model_name == name)
    served = model.metrics.get(SERVED_ACCURACY)
    if served is not None:  # what the endpoint will answer with (the card below gives PyTorch's beside it)
        return f"{name} · served accuracy {served:.3f} (8-bit graph)"
    acc = model.metrics.get("validation:accuracy")
    return f"{name} · validation accuracy {acc:.3f}" if acc is not None else name


def create_model_ui() -> None:
    """CreateModel from a completed training job that has no model yet."""
    cols = st.columns([3, 1], vertical_alignment="bottom")
    job = cols[0].selectbox("Completed training job without a model", unmodelled, key="deploy_job")
    if cols[1].button("Create model", key="deploy_create_model", help="As CreateModel: the job's artifact, ready to deploy."):
        try:
            model = b.create_model(job)
        except SconesError as exc:
            show_error(exc)
        else:
            st.session_state["deploy_model"] = model.model_name  # the one just made, not the one shown before
            st.rerun()


def model_ui() -> str | None:
    """The chosen model's name, with its metrics shown."""
    if not models:
        if unmodelled:
            st.info("No model yet: create one from a completed training job to deploy it.")
            create_model_ui()
        else:
            st.info("No model yet: train a job on the Train page; once it completes, create its model here "
                    "(or with Create model under the job on the Train page).")
        return None
    if unmodelled:
        with st.expander(f"Create a model from a completed training job ({len(unmodelled)} without one)"):
            create_model_ui()
    name = st.selectbox("Model", [m.model_name for m in models], format_func=model_label, key="deploy_model")
    model = next(m for m in models if m.model_name == name)
    # Plain labels, at most four cards: the raw names (validation:accuracy_served...) were cut to
    # "validation:ac..." at 1,000 px, and the served and PyTorch figures could not be told apart (audit).
    shown = [(metric, label) for metric, label in CARD_METRICS if metric in model.metrics]
    cols = st.columns(len(shown) + 1)
    for col, (metric, label) in zip(cols, shown):
        col.metric(label, f"{model.metrics[metric]:.3f}", help=f"{metric}: {METRIC_HELP[metric]}")
    cols[len(shown)].metric("Classes", len(model.classes))
    others = ", ".join(f"{k} {v:.3f}" for k, v in sorted(model.metrics.items()) if k not in dict(CARD_METRICS))
    st.caption(f"Classes in order: {', '.join(model.classes)} · image shape {'x'.join(map(str, model.image_shape))} "
               f"· training job {model.job_name} · backend {model.backend}" + (f" · {others}" if others else ""))
    if model.backend != workspace["backend"]:
        st.warning(f"This model belongs to the {model.backend} backend: the {workspace['backend']} backend cannot "
                   "serve it (models do not cross backends).")
    return name


def endpoint_instance_type(endpoint) -> str | None:
    """The instance type an endpoint runs on (its endpoint config's), or None where it cannot be read."""
    try:
        return b.describe_endpoint_config(endpoint.config_name).instance_type
    except SconesError:
        return None


def settings_ui() -> dict:
    """Endpoint and data-capture settings, as keyword arguments of backend.deploy."""
    default_name = endpoints[0].endpoint_name if endpoints else DEFAULT_ENDPOINT  # as the CLI suggests
    left, right = st.columns(2)
    name = left.text_input("Endpoint name (an existing endpoint is updated)", value=default_name,
                           key="deploy_endpoint_name").strip()
    endpoint = next((e for e in endpoints if e.endpoint_name == name), None)
    existing = endpoint.capture if endpoint is not None else None
    first = "deploy_capture" not in st.session_state
    loaded_from = st.session_state.get("deploy_settings_for")
    from_endpoint = any(e.endpoint_name == loaded_from for e in endpoints)
    if first or (loaded_from != name and (existing is not None or from_endpoint)):
        # An update starts from the endpoint's own instance type and capture: deploying again must not move
        # them back to the defaults unasked. A new name starts from the defaults when the form held another
        # endpoint's settings (it silently took that endpoint's 50%), and keeps what was typed otherwise.
        st.session_state["deploy_settings_for"] = name
        if endpoint is not None and (instance_type := endpoint_instance_type(endpoint)) in INSTANCE_TYPES:
            st.session_state["deploy_instance"] = instance_type
        elif endpoint is None and not first:
            st.session_state["deploy_instance"] = INSTANCE_TYPES[0]
        cap = existing or CaptureConfig()
        st.session_state["deploy_capture"] = cap.enabled
        st.session_state["deploy_percent"] = int(cap.sampling_percent) if cap.enabled else 100
        st.session_state["deploy_options"] = [o for o, on in (("Input", cap.capture_input),
                                                              ("Output", cap.capture_output)) if on]
        st.session_state["deploy_destination"] = cap.destination or b.default_capture_destination()
    if endpoint is not None:
        left.caption(f"Updates {name}: it starts from its own instance type and capture settings.")
    elif name:
        left.caption(f"A new endpoint {name}: it starts from the default settings (kept as you edit them).")
    instance = right.selectbox("Instance type", INSTANCE_TYPES, key="deploy_instance", help=b.endpoint_cost_notice())
    enabled = st.toggle("Data capture", key="deploy_capture")
    percent = st.slider("Sampling percentage", 0, 100, key="deploy_percent", disabled=not enabled)
    c1, c2 = st.columns(2)
    options = c1.multiselect("Capture options", ["Input", "Output"], key="deploy_options", disabled=not enabled)
    destination = c2.text_input("Destination", key="deploy_destination", disabled=not enabled).strip()
    return {"endpoint_name": name, "capture_percent": int(percent), "capture_enabled": enabled,
            "capture_input": "Input" in options, "capture_output": "Output" in options,
            "destination": destination, "instance_type": instance}


with st.container(border=True):
    st.subheader("Deploy a model")
    chosen = model_ui()
    if chosen is not None:
        settings = settings_ui()
        st.caption(b.endpoint_cost_notice())
        billing = b.billing_notice("endpoint", settings["instance_type"])  # None where nothing bills
        confirmed = billing is None or st.checkbox(billing.confirmation,
                                                   key=f"deploy_confirm_{settings['instance_type']}")
        if st.button("Deploy", type="primary", key="deploy_go", disabled=not confirmed):
            if not settings["endpoint_name"]:  # the backend would name it after the model, unasked
                st.error("Enter an endpoint name: a new one to create, or an existing endpoint's to update it.")
            elif settings["capture_enabled"] and not (settings["capture_input"] or settings["capture_output"]):
                st.error("Choose Input, Output or both as capture options, or turn data capture off.")
            else:
                try:
                    endpoint = b.deploy(chosen, **settings)
                except SconesError as exc:
                    show_error(exc)
                else:
                    st.session_state["deploy_notice"] = (f"Deploying {chosen} to endpoint {endpoint.endpoint_name}: "
                                                         "its status below follows it until it is InService.")
                    if settings["capture_enabled"] and hasattr(b, "capture_retention_note"):
                        # on AWS: why the capture got no S3 lifecycle rule, if it did not
                        st.session_state["deploy_retention_note"] = b.capture_retention_note(endpoint)
                    st.rerun()
    notice = st.session_state.pop("deploy_notice", None)
    if notice:
        st.success(notice, icon=":material/rocket_launch:")
    retention_note = st.session_state.pop("deploy_retention_note", "")
    if retention_note:
        st.warning(retention_note)


busy_now = any(e.status in BUSY for e in endpoints)


def deploy_signature(models: list, endpoints: list) -> tuple:
    """What the page is drawn from: models to deploy, endpoints and their states."""
    return (tuple(m.model_name for m in models),
            tuple((e.endpoint_name, e.status, e.model_name) for e in endpoints))


# A deploy, model or deletion made elsewhere (the CLI, another tab) shows without a click.
watch_for_changes("deploy_signature", lambda: deploy_signature(b.list_models(), b.list_endpoints()),
                  deploy_signature(models, endpoints), aws=b.name == "aws", idle=not busy_now)


def machines_calling(endpoint: str) -> list[str] | SconesError:
    """The state machines whose functions invoke this endpoint, or the error that kept them from being read."""
    try:
        return b.state_machines_calling(endpoint)
    except SconesError as exc:
        return exc


def delete_endpoint(endpoint: str) -> None:
    """Delete, then redraw with a toast that says so; a refused delete (permissions, already gone) is its
    one sentence, and no toast follows on a later redraw."""
    try:
        b.delete_endpoint(endpoint)
    except SconesError as exc:
        show_error(exc)
        return
    st.session_state["deploy_deleted"] = endpoint  # said on the redraw, where its card is gone
    st.rerun()


def confirm_delete(endpoint: str) -> None:
    """Deleting an endpoint a workflow calls (or may call): say what breaks, then Delete anyway or Keep it. Only
    a press of Delete anyway deletes: never a rerun (a poll, another widget) that finds the question open."""
    callers = machines_calling(endpoint)
    if isinstance(callers, SconesError):
        st.warning(f"The state machines could not be read ({callers}), so whether a workflow calls {endpoint} is "
                   "not known: if one does, its executions fail at the step that invokes it. Delete it anyway?",
                   icon=":material/warning:")
    elif callers:
        st.warning(f"{', '.join(callers)} call{'s' if len(callers) == 1 else ''} {endpoint}: once it is deleted, "
                   f"{'its' if len(callers) == 1 else 'their'} executions fail at the step that invokes it until the "
                   "workflow is pointed at another "
                   "endpoint (Workflow page, Update the workflow). Delete it anyway?", icon=":material/warning:")
    else:
        st.info(f"No state machine calls {endpoint} now. Delete it? Its endpoint configuration goes with it; the "
                "model and the captured data stay.")
    yes, no, _ = st.columns([2, 2, 4])  # "Keep it" read "K..." at 1,000 px in a narrower column (audit)
    if yes.button("Delete anyway" if callers else "Delete", key=f"delete_confirm_{endpoint}", type="primary"):
        st.session_state.pop("deploy_delete:question", None)
        delete_endpoint(endpoint)
    if no.button("Keep it", key=f"delete_keep_{endpoint}"):
        st.session_state.pop("deploy_delete:question", None)
        st.rerun()


@st.fragment(run_every=0.5 if busy_now else None)
def endpoints_view() -> None:
    """The endpoint list: polls while one is Creating/Updating, redraws the page when that ends."""
    try:
        current = b.list_endpoints()
    except SconesError as exc:
        show_error(exc)
        return
    st.subheader("Endpoints")
    if (deleted := st.session_state.pop("deploy_deleted", None)) is not None:
        st.toast(f"Deleted endpoint {deleted}.", icon=":material/delete:")
    if not current:
        st.info("No endpoint: choose a model and Deploy.")
        return
    for e in current:
        with st.container(border=True):
            c1, c2, c3 = st.columns([3, 3, 4])
            c1.markdown(f"**{e.endpoint_name}** {badge(e.status)}")
            c2.markdown(f"model `{e.model_name}`")
            capture = f"capture {e.capture.sampling_percent}% to {e.capture.destination}" if e.capture.enabled \
                else "capture off"
            if e.backend == "aws":
                where = "SageMaker Runtime InvokeEndpoint"
            elif not e.url:
                where = "no URL yet"
            else:  # a link only where something answers it: a Failed endpoint's port is dead
                # Not a link: the container contract answers POST /invocations and GET /ping, not a browser's GET /
                where = f"`{e.url}/invocations`" if e.status in SERVING_STATUSES else f"`{e.url}` not serving"
            c3.caption(f"{capture} · {where} · updated {utc_time(e.updated)}")
            asked = (e.endpoint_name, e.created)  # a question about this endpoint, not a later one of its name
            # The buttons in a row of their own, each as wide as its label: a narrow fourth column cut "Delete"
            # to "De…" at 1,000 px (browser audit).
            actions = st.container(horizontal=True)
            if actions.button("Delete", key=f"delete_{e.endpoint_name}", icon=":material/delete:"):
                if e.status == "Failed" and machines_calling(e.endpoint_name) == []:
                    delete_endpoint(e.endpoint_name)  # serves nothing and nothing calls it
                else:  # it serves, or a workflow would fail at its classify step from now on: ask first
                    st.session_state["deploy_delete:question"] = asked
            if st.session_state.get("deploy_delete:question") == asked:
                confirm_delete(e.endpoint_name)
            if e.status in b.restartable_statuses and actions.button("Start", key=f"start_{e.endpoint_name}",
                                                                     icon=":material/play_arrow:"):
                act(b.start_endpoint, e.endpoint_name)
            if e.failure_reason:
                (st.error if e.status == "Failed" else st.warning)(e.failure_reason)
    if any(e.status in BUSY for e in current) != busy_now:
        st.rerun()  # a transition started or ended: redraw the page (polling, Try it)


endpoints_view()


def limits_text(local: bool) -> str:
    """What an endpoint takes per image: InvokeEndpoint's payload limit, and the local endpoint's pixel limit."""
    return f"up to {MAX_BODY_BYTES:,} bytes (6 MiB)" + (f" and {MAX_PIXELS // 1_000_000} megapixels" if local else "")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image's header (nothing decoded), None where Pillow cannot read it; (0, 0) for
    one over Pillow's own limit (Image.MAX_IMAGE_PIXELS, which this process may have set as low as MAX_PIXELS)."""
    from PIL import Image

    refuse_decompression_bombs()
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return (0, 0)
    except Exception:  # noqa: BLE001 - not an image: the endpoint answers that itself, with its 400
        return None


def too_large(name: str, data: bytes, local: bool) -> str:
    """Why the endpoint would refuse this image for its size, in one sentence; "" when it would not."""
    if len(data) > MAX_BODY_BYTES:
        # In bytes: the uploader writes decimal megabytes (6.7MB) and the limit is binary (6 MiB), so a size
        # in either unit read as two sizes for one file (audit).
        return (f"{name} is {len(data):,} bytes; the endpoint takes at most {MAX_BODY_BYTES:,} bytes (6 MiB, "
                "SageMaker's InvokeEndpoint limit): send a smaller image.")
    size = image_size(data) if local else None
    if size is not None and (size == (0, 0) or size[0] * size[1] > MAX_PIXELS):
        # (0, 0): over Pillow's own limit (never below ours), so its size was not read
        shape = f"is {size[0]}x{size[1]} pixels" if size != (0, 0) else f"has more than {MAX_PIXELS:,} pixels"
        return (f"{name} {shape}; the endpoint takes at most {MAX_PIXELS // 1_000_000} megapixels "
                f"({MAX_PIXELS:,} pixels): send a smaller image.")
    return ""


def images_ui(local: bool) -> list[tuple[str, bytes, str, str | None]]:
    """(name, bytes, content type, true class or None) of the images to classify: uploads, or staged test
    images (whose class is known). The choice is kept while another page is shown (an upload cannot be: the
    browser drops the file)."""
    kept("try_source", "Upload")
    source = st.segmented_control("Images", ["Upload", "Staged test images"], key="try_source",
                                  on_change=remember, args=("try_source",)) or "Upload"
    if source == "Upload":
        files = st.file_uploader(
            f"PNG or JPEG images, {limits_text(local)} each", type=["png", "jpg", "jpeg"],
            # Streamlit's limit counts decimal megabytes (6 would refuse files InvokeEndpoint takes): one above,
            # and too_large() below holds each file to the exact 6,291,456 bytes, with a card of its own.
            accept_multiple_files=True, key="try_upload", max_upload_size=MAX_BODY_BYTES // 1_000_000 + 1,
            help=f"SageMaker's InvokeEndpoint takes at most {MAX_BODY_BYTES // MB} MB per request"
                 + (f"; the endpoint refuses an image over {MAX_PIXELS:,} pixels" if local else "")
                 + ". The endpoint resizes each image to the model's input, so a smaller one loses nothing.",
        ) or []
        return [(f.name, f.getvalue(), CONTENT_TYPES.get(f.name.rsplit(".", 1)[-1].lower(), "application/x-image"),
                 None) for f in files]
    samples = b.staged_samples("test", per_class=4)
    if not samples:
        st.info("No staged test images: stage data first, or upload images.")
        return []
    names = [s.key.rsplit("/", 1)[-1] for s in samples]
    kept("try_staged", names[:2], follow=tuple(names))  # the picks start over when the staged images change
    picked = st.multiselect("Staged test images", names, key="try_staged", on_change=remember, args=("try_staged",))
    return [(n, s.data, "image/png", s.label) for n, s in zip(names, samples) if n in picked]


def images_signature(images: list[tuple[str, bytes, str, str | None]]) -> list[tuple[str, str]]:
    """Which images were classified: their names and a digest of their bytes (another file of the same name and
    size is another image)."""
    return [(name, hashlib.blake2b(data, digest_size=8).hexdigest()) for name, data, _, _ in images]


def show_results(results: list[dict]) -> None:
    for r in results:
        with st.container(border=True):
            c1, c2 = st.columns([1, 4])
            if r["error"]:  # the endpoint refused it: not an image the page should try to draw either
                c1.markdown(f"`{r['name']}`")
                c2.error(r["error"])
                continue
            show_image(c1, r["data"], r["name"], 96)
            if r.get("tied"):  # a 50/50 answer is no prediction: shown as such, never marked right (audit)
                c2.markdown(f"**Undecided**: {' and '.join(r['tied'])} tie at {r['confidence']:.1%} each")
            else:
                c2.markdown(f"**{r['label']}** · confidence {r['confidence']:.1%}")
            df = probabilities_frame(r["classes"], r["probabilities"])
            c2.altair_chart(probability_chart(df), width="stretch", height=probability_chart_height(df))


st.subheader("Try it")
serving = {e.endpoint_name: e for e in endpoints if e.status in SERVING_STATUSES}
if not serving:
    stopped = [e for e in endpoints if e.status in b.restartable_statuses]  # Failed; locally OutOfService too
    if len(stopped) == 1:
        st.info(f"{stopped[0].endpoint_name} is {stopped[0].status}: press Start on its card above, then try it here.")
    elif stopped:
        st.info(f"{', '.join(e.endpoint_name for e in stopped)} are not serving ("
                f"{', '.join(sorted({e.status for e in stopped}))}): press Start on their cards above, then try it here.")
    else:
        st.info("No endpoint is InService: deploy a model, then try it here.")
else:
    kept("try_endpoint", next(iter(serving)))
    if st.session_state["try_endpoint"] not in serving:  # the one tried last is gone or not serving now
        st.session_state["try_endpoint"] = next(iter(serving))
    target = st.selectbox("Endpoint", list(serving), key="try_endpoint", on_change=remember, args=("try_endpoint",))
    serves = serving[target].model_name
    local = serving[target].backend == "local"
    images = images_ui(local)
    if st.button("Classify", type="primary", disabled=not images, key="try_go"):
        results = []
        for name, data, content_type, truth in images:
            refused = too_large(name, data, local)  # said here, with what to do, before anything is sent
            if refused:
                results.append({"name": name, "data": data, "error": refused})
                continue
            try:
                p = b.invoke_endpoint(target, data, content_type)
            except SconesError as exc:
                results.append({"name": name, "data": data, "error": str(exc)})
            else:
                results.append({"name": name, "data": data, "error": "", "label": p.label, "confidence": p.confidence,
                                "classes": list(p.classes), "probabilities": list(p.probabilities), "truth": truth,
                                "tied": list(p.tied)})
        st.session_state["try_results"] = {"endpoint": target, "model": serves, "results": results,
                                           "images": images_signature(images)}
    shown = st.session_state.get("try_results")
    if shown and images and shown.get("images") != images_signature(images):
        # Answers under another selection read as its answers (audit): they go until Classify is pressed again.
        st.caption("The images changed since the last Classify: press **Classify** to answer these.")
        shown = None
    if shown and shown["endpoint"] == target and shown.get("model") != serves:
        st.info(f"Endpoint {target} serves model {serves} now: the results model {shown.get('model')} gave were "
                "cleared; classify again.")
        st.session_state.pop("try_results")
    elif shown and shown["endpoint"] == target:
        st.caption(f"Answers of model `{serves}` on endpoint {target}.")
        show_results(shown["results"])
        ok = [r for r in shown["results"] if not r["error"]]
        if ok:  # confidence as the cards write it; for staged test images, their class and whether it was right
            table = pd.DataFrame([{"image": r["name"], "confidence": r["confidence"] * 100,
                                   "predicted": f"tie: {', '.join(r['tied'])}" if r.get("tied") else r["label"]}
                                  for r in ok])[["image", "predicted", "confidence"]]
            truths = [r.get("truth") for r in ok]
            if any(truths):
                table["true class"] = [t or "" for t in truths]
                table["right"] = ["" if not t or r.get("tied") else "✓" if r["label"] == t else "✗"
                                  for r, t in zip(ok, truths)]
            st.dataframe(table, hide_index=True, column_config={
                "confidence": st.column_config.NumberColumn(format="%.1f%%")})
