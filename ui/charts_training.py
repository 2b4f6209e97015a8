"""Training chart builders: DataFrame in, alt.Chart out; no Streamlit here, so they test on their own."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import altair as alt
import pandas as pd

ACCURACY_METRICS = ("train:accuracy", "validation:accuracy")
LOSS_METRICS = ("train:loss", "validation:loss")
METRIC_COLUMNS = ["epoch", "metric", "value"]
NO_VALUE = "—"


def stopped_early(job, planned: int) -> bool:
    """Early stopping ended the job: it completed with `early_stopping` on and fewer epochs than planned (the
    algorithm completes before its last epoch in no other way)."""
    on = str(getattr(job, "hyperparameters", {}).get("early_stopping", "")).strip().lower() in ("true", "1")
    return job.status == "Completed" and on and 0 < len(job.epochs) < planned


def planned_epochs(job) -> int:
    """The epochs a job was set to run (the algorithm's default, 30, where it left `epochs` unset)."""
    try:
        return int(job.hyperparameters.get("epochs", "30"))
    except (TypeError, ValueError):
        return 30


def status_text(job, separator: str = " · ") -> str:
    """Status and secondary status, the latter only where it adds something ("Completed", not twice)."""
    if job.secondary_status in ("", job.status):
        return job.status
    return f"{job.status}{separator}{job.secondary_status}"


POLL_SECONDS = 1.5
# Each redraw of the live chart costs the browser about 0.2 s of CPU, and on this 2-core machine the
# training beside it lost more than that (its two threads wait for each other): with epochs of 0.8 s the
# chart changed at every poll, and watching the Train page made an 80-epoch job 19-34% slower at 1.5-3 s
# polls, 5-10% at 6 s (measured 2026-11-30). Slower epochs keep the short poll, where most polls find
# nothing new to draw.
FAST_EPOCH_SECONDS = 2.0
FAST_EPOCH_POLL_SECONDS = 6.0


def training_poll_seconds(seconds_per_epoch: float | None, was_fast: bool = False) -> tuple[float, bool]:
    """(how often the Train page polls a running job, whether its epochs count as fast). Once fast, for the
    rest of the job: a pace near the line does not switch the interval back and forth."""
    fast = was_fast or (seconds_per_epoch is not None and seconds_per_epoch < FAST_EPOCH_SECONDS)
    return (FAST_EPOCH_POLL_SECONDS if fast else POLL_SECONDS), fast


def progress_text(job, planned: int, seconds_per_epoch: float | None = None) -> str:
    """A job's progress bar text: epochs done and what the job is doing; while it trains, about how long
    is left at `seconds_per_epoch` (the pace epochs were seen to end at, startup not counted)."""
    done = len(job.epochs)
    if stopped_early(job, planned):
        return f"stopped early after {done} of {planned} epochs (early_stopping)"
    text = f"{done} of {planned} epochs done"
    if job.status == "Stopping":
        return f"{text} · stopping"
    if job.status != "InProgress":
        return text
    training = job.secondary_status == "Training"
    if training and seconds_per_epoch and done:
        left = seconds_per_epoch * max(planned - done, 0)
        return f"{text} · about {left / 60:.0f} min left" if left >= 90 else f"{text} · about {left:.0f} s left"
    if training and not done:  # a ResNet-152 epoch on the CPU takes minutes: say the job is alive
        elapsed = getattr(job, "seconds", 0) or 0
        return f"{text} · training the first epoch" + (f" ({elapsed:.0f} s since the job started)" if elapsed >= 10 else "")
    doing = (job.secondary_status or "").lower()
    return f"{text} · {doing}" if doing else text


VALIDATED_ON = {"test": "test split", "holdout": "20% hold-out"}  # what validation accuracy was measured on


def jobs_frame(jobs: Iterable) -> pd.DataFrame:
    """The jobs table: one row per TrainingJob; metrics are the last recorded epoch's, "—" where a backend
    has none yet (a job still starting) or none at all (SageMaker's algorithm logs no loss). `seconds` stays a
    number: the page writes it with one decimal. Where some job's endpoint serves an 8-bit graph, "served
    accuracy" gives what the graph the endpoint would run scored on the same validation images (for a float
    graph that is the validation accuracy itself)."""
    def metric(value: float | None) -> str:
        return NO_VALUE if value is None else f"{value:.3f}"

    jobs = list(jobs)
    served = any(j.served_accuracy is not None for j in jobs)  # a column only where some job serves 8 bits
    rows = []
    for j in jobs:
        m = j.final_metrics
        status = j.status if j.secondary_status in ("", j.status) else f"{j.status} ({j.secondary_status})"
        planned = planned_epochs(j)
        rows.append({  # what an operator compares first comes first: the page's column shows about seven
            "job name": j.job_name, "status": status,
            "validation accuracy": metric(m.get("validation:accuracy")),
            **({"served accuracy": metric(j.served_accuracy if j.served_accuracy is not None
                                          else m.get("validation:accuracy") if j.model_artifact else None)}
               if served else {}),
            "train accuracy": metric(m.get("train:accuracy")),
            "train loss": metric(m.get("train:loss")),
            "epochs": f"{len(j.epochs)}/{planned}" + (" (stopped early)" if stopped_early(j, planned) else ""),
            "seconds": round(j.seconds, 1),
            "validated on": VALIDATED_ON.get(j.validation, j.validation),
            "created": j.created.replace("T", " ")[:19],
        })
    return pd.DataFrame(rows)


def metrics_frame(epochs: Iterable[Mapping[str, float]]) -> pd.DataFrame:
    """Per-epoch metric dicts -> long table (epoch, metric, value); only the metrics a backend gave."""
    rows = [
        {"epoch": int(e["epoch"]), "metric": name, "value": float(value)}
        for e in epochs for name, value in e.items() if name != "epoch" and value is not None
    ]
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def metrics_chart(df: pd.DataFrame, epochs_planned: int | None = None) -> alt.Chart:
    """Accuracy per epoch (train and validation) on the left axis and, when the backend reports one, the loss
    (dashed) on the right axis: one view, so it takes the page's width at any size. Two charts side by side
    cut their titles and legends at 1,000 px, and a concatenation has a fixed width (browser audits). AWS's
    algorithm logs no loss, so its jobs show accuracy only."""
    max_epoch = max(int(df["epoch"].max()) if len(df) else 1, epochs_planned or 1)
    accuracy = df[df["metric"].isin(ACCURACY_METRICS) | df["metric"].str.contains("accuracy")]
    loss = df[df["metric"].isin(LOSS_METRICS) | df["metric"].str.endswith(":loss")]
    x = alt.X("epoch:Q", title="epoch", scale=alt.Scale(domain=[1, max(max_epoch, 2)], nice=False),
              axis=alt.Axis(tickMinStep=1, format="d"))
    color = alt.Color("metric:N", title=None, legend=alt.Legend(orient="bottom"))
    tooltip = ["epoch:Q", "metric:N", alt.Tooltip("value:Q", format=".4f")]
    acc = alt.Chart(accuracy).mark_line(point=True).encode(
        x=x, y=alt.Y("value:Q", title="accuracy", scale=alt.Scale(domain=[0.0, 1.0])), color=color, tooltip=tooltip)
    if not len(loss):
        return acc.properties(title="Accuracy per epoch")
    lossy = alt.Chart(loss).mark_line(point=True, strokeDash=[5, 3]).encode(
        # From zero, like accuracy's axis: scaled to its own range (0.45-0.65, say) a small drop looked like a fall
        # to nothing across the accuracy grid, and one epoch's value made a raw "0.648670" tick (audit).
        x=x, y=alt.Y("value:Q", title="loss (dashed)", scale=alt.Scale(zero=True),
                     axis=alt.Axis(orient="right", format=".2f", tickCount=5)), color=color, tooltip=tooltip)
    return alt.layer(acc, lossy).resolve_scale(y="independent").properties(title="Accuracy and loss per epoch")


def confusion_frame(classes: Sequence[str], matrix: Sequence[Sequence[int]]) -> pd.DataFrame:
    """Long table (true, predicted, images, share of the true class) from a rows-are-true-class matrix."""
    rows = []
    for i, true in enumerate(classes):
        total = sum(matrix[i]) or 1
        for j, predicted in enumerate(classes):
            rows.append({"true": true, "predicted": predicted, "images": int(matrix[i][j]),
                         "share": matrix[i][j] / total})
    return pd.DataFrame(rows, columns=["true", "predicted", "images", "share"])


def confusion_chart(df: pd.DataFrame) -> alt.Chart:
    """Heat map: true class down, predicted class across, colour = share of the true class, count written in."""
    order = list(dict.fromkeys(df["true"]))
    base = alt.Chart(df, title=alt.TitleParams("Confusion matrix", subtitle="rows: true class")).encode(
        x=alt.X("predicted:N", title="predicted", sort=order, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("true:N", title="true", sort=order),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("share:Q", title="share of true class", scale=alt.Scale(domain=[0, 1], scheme="blues"),
                        legend=alt.Legend(orient="bottom")),  # below: the plot keeps the column's width
        tooltip=["true:N", "predicted:N", "images:Q", alt.Tooltip("share:Q", format=".1%")],
    )
    text = base.mark_text(fontSize=16).encode(
        text="images:Q",
        color=alt.condition(alt.datum.share > 0.5, alt.value("white"), alt.value("black")),
    )
    return cells + text  # as wide and as tall as the page gives it (confusion_chart_height)


def confusion_chart_height(classes: int) -> int:
    """Pixels for the whole confusion chart: rows of 70 px, plus the title, the axis and the legend below."""
    return 70 * max(classes, 2) + 170


def per_class_frame(per_class: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    rows = [{"class": c, "precision": v["precision"], "recall": v["recall"], "images": int(v.get("support", 0))}
            for c, v in per_class.items()]
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "images"]).set_index("class")
