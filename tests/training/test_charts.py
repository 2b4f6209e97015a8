"""Training chart builders: DataFrame in, Altair chart out, no Streamlit."""
from __future__ import annotations

import altair as alt

from ui.charts_training import (
    confusion_chart, confusion_frame, metrics_chart, metrics_frame, per_class_frame, progress_text,
)

EPOCHS = [
    {"epoch": 1.0, "train:accuracy": 0.6, "train:loss": 0.7, "validation:accuracy": 0.55},
    {"epoch": 2.0, "train:accuracy": 0.8, "train:loss": 0.4, "validation:accuracy": 0.75},
]


def test_metrics_frame_is_long_and_keeps_only_given_metrics():
    df = metrics_frame(EPOCHS)
    assert list(df.columns) == ["epoch", "metric", "value"] and len(df) == 6
    assert df[(df.epoch == 2) & (df.metric == "validation:accuracy")].value.item() == 0.75
    assert metrics_frame([]).empty


def test_the_metrics_chart_is_one_view_with_accuracy_left_and_loss_right_that_takes_the_pages_width():
    spec = metrics_chart(metrics_frame(EPOCHS), epochs_planned=10).to_dict()
    assert spec["title"] == "Accuracy and loss per epoch" and "width" not in spec  # fixed widths ran past 1,000 px
    accuracy, loss = spec["layer"]
    assert spec["resolve"]["scale"]["y"] == "independent"
    assert accuracy["encoding"]["y"]["scale"]["domain"] == [0.0, 1.0]
    assert loss["encoding"]["y"]["axis"]["orient"] == "right" and loss["mark"]["strokeDash"] == [5, 3]
    # loss from zero with two-decimal ticks: on its own range a small drop looked like a fall to nothing (audit)
    assert loss["encoding"]["y"]["scale"] == {"zero": True} and loss["encoding"]["y"]["axis"]["format"] == ".2f"
    assert accuracy["encoding"]["x"]["scale"]["domain"] == [1, 10]
    data = spec["datasets"]
    metrics = {name: {r["metric"] for r in data[layer["data"]["name"]]} for name, layer in (("acc", accuracy), ("loss", loss))}
    assert metrics == {"acc": {"train:accuracy", "validation:accuracy"}, "loss": {"train:loss"}}


def test_without_loss_only_accuracy_is_drawn():
    """AWS's algorithm logs no loss: the chart shows what the backend gives."""
    no_loss = [{k: v for k, v in e.items() if k != "train:loss"} for e in EPOCHS]
    chart = metrics_chart(metrics_frame(no_loss))
    assert isinstance(chart, alt.Chart) and chart.to_dict()["title"] == "Accuracy per epoch"


def test_confusion_chart_and_frames():
    df = confusion_frame(["bicycle", "motorcycle"], [[90, 10], [5, 95]])
    assert df.loc[(df.true == "bicycle") & (df.predicted == "motorcycle"), "images"].item() == 10
    assert df.loc[(df.true == "motorcycle") & (df.predicted == "motorcycle"), "share"].item() == 0.95
    spec = confusion_chart(df).to_dict()
    assert [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]] == ["rect", "text"]
    table = per_class_frame({"bicycle": {"precision": 0.9, "recall": 0.8, "support": 100}})
    assert table.loc["bicycle", "recall"] == 0.8 and table.loc["bicycle", "images"] == 100


def test_jobs_frame_shows_a_dash_where_a_metric_is_missing_and_the_secondary_status():
    from backend.api import TrainingJob
    from ui.charts_training import jobs_frame

    jobs = [
        TrainingJob("starting", "InProgress", "Downloading", {"epochs": "80"}, "2026-11-27T10:00:00Z", seconds=3.04),
        TrainingJob("aws-done", "Completed", "Completed", {"epochs": "2"}, "2026-11-27T09:00:00Z", seconds=600.0,
                    epochs=({"epoch": 1, "train:accuracy": 0.5, "validation:accuracy": 0.45},
                            {"epoch": 2, "train:accuracy": 0.91, "validation:accuracy": 0.8764})),
    ]
    df = jobs_frame(jobs)
    assert list(df.columns[:5]) == ["job name", "status", "validation accuracy", "train accuracy", "train loss"]
    assert list(df["status"]) == ["InProgress (Downloading)", "Completed"]
    assert list(df["epochs"]) == ["0/80", "2/2"]
    assert df.loc[0, ["train accuracy", "validation accuracy", "train loss"]].tolist() == ["—", "—", "—"]
    assert df.loc[1, ["train accuracy", "validation accuracy", "train loss"]].tolist() == ["0.910", "0.876", "—"]
    assert df.loc[0, "seconds"] == 3.0


def test_jobs_frame_gives_the_served_graphs_accuracy_beside_pytorchs_where_some_job_serves_8_bits():
    from backend.api import TrainingJob
    from ui.charts_training import jobs_frame

    last = ({"epoch": 1, "train:accuracy": 0.9, "validation:accuracy": 0.915},)
    int8 = TrainingJob("int8", "Completed", "Completed", {"epochs": "1"}, "2026-11-27T10:00:00Z", epochs=last,
                       model_artifact="s3://b/int8/model.tar.gz", served_accuracy=0.91)
    float_graph = TrainingJob("float", "Completed", "Completed", {"epochs": "1"}, "2026-11-27T09:00:00Z", epochs=last,
                              model_artifact="s3://b/float/model.tar.gz")
    running = TrainingJob("running", "InProgress", "Training", {"epochs": "9"}, "2026-11-27T11:00:00Z", epochs=last)
    df = jobs_frame([running, int8, float_graph])
    assert list(df.columns[:4]) == ["job name", "status", "validation accuracy", "served accuracy"]
    # the 8-bit graph's own score; a float graph serves what validation measured; no artifact yet: nothing served
    assert df["served accuracy"].tolist() == ["—", "0.910", "0.915"]
    assert df["validation accuracy"].tolist() == ["0.915"] * 3
    assert "served accuracy" not in jobs_frame([float_graph, running]).columns  # no 8-bit graph: no column


def test_progress_text_says_what_a_job_is_doing_and_about_how_long_is_left():
    from types import SimpleNamespace

    def job(epochs: int, secondary: str = "Training", status: str = "InProgress", seconds: float = 3.0):
        return SimpleNamespace(epochs=EPOCHS[:1] * epochs, status=status, secondary_status=secondary, seconds=seconds)

    assert progress_text(job(0, "Downloading"), 30) == "0 of 30 epochs done · downloading"
    assert progress_text(job(0), 30, 1.1) == "0 of 30 epochs done · training the first epoch"
    # a long first epoch (ResNet-152 on the CPU) said the same for minutes: the time says it is alive (audit)
    assert progress_text(job(0, seconds=65.4), 30) == "0 of 30 epochs done · training the first epoch (65 s since the job started)"
    assert progress_text(job(1), 30) == "1 of 30 epochs done · training"  # no pace seen yet: no guess
    assert progress_text(job(2), 3, 5.0) == "2 of 3 epochs done · about 5 s left"
    assert progress_text(job(3), 30, 60.0) == "3 of 30 epochs done · about 27 min left"
    assert progress_text(job(30, "Uploading"), 30, 1.0) == "30 of 30 epochs done · uploading"
    assert progress_text(job(3, "Training", "Stopping"), 30, 1.0) == "3 of 30 epochs done · stopping"
    assert progress_text(job(3, "", "InProgress"), 30) == "3 of 30 epochs done"  # AWS's empty secondary status
    assert progress_text(job(3, "Completed", "Completed"), 3, 1.0) == "3 of 3 epochs done"


def test_the_train_page_polls_a_job_with_fast_epochs_less_often_and_keeps_to_it():
    """Watching the live chart of 0.8 s epochs at a 1.5 s poll made the job 21-30% slower: once epochs are
    seen to end faster than 2 s, the page polls every 6 s, for the rest of that job."""
    from ui.charts_training import training_poll_seconds

    assert training_poll_seconds(None) == (1.5, False)  # the pace is not known yet: the first epoch shows soon
    assert training_poll_seconds(30.0) == (1.5, False)  # slow epochs: most polls find nothing new to draw
    assert training_poll_seconds(0.8) == (6.0, True)
    assert training_poll_seconds(2.5, was_fast=True) == (6.0, True)  # no switching back and forth near the line
    assert training_poll_seconds(None, was_fast=True) == (6.0, True)
