"""Evaluation numbers from predicted probabilities: pure numpy, so a known case can be checked by hand."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from backend.api import Evaluation

WORST_COUNT = 12


def evaluate_predictions(job_name: str, classes: Sequence[str], labels: np.ndarray, probabilities: np.ndarray,
                         keys: Sequence[str], worst_count: int = WORST_COUNT) -> Evaluation:
    """Accuracy, confusion matrix (rows = true class), per-class precision and recall, and the
    most confidently wrong images (highest probability given to a wrong class first)."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    k = len(classes)
    if probabilities.shape != (len(labels), k):
        raise ValueError(f"probabilities must have shape ({len(labels)}, {k}), got {probabilities.shape}")
    predicted = probabilities.argmax(1) if len(labels) else np.zeros(0, dtype=np.int64)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    per_class: dict[str, dict[str, float]] = {}
    for i, name in enumerate(classes):
        tp = matrix[i, i]
        predicted_i, actual_i = matrix[:, i].sum(), matrix[i, :].sum()
        per_class[name] = {
            "precision": float(tp / predicted_i) if predicted_i else 0.0,
            "recall": float(tp / actual_i) if actual_i else 0.0,
            "support": int(actual_i),
        }
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]] if len(wrong) else np.zeros(0)
    order = wrong[np.argsort(-confidence, kind="stable")][:worst_count]
    worst = tuple(
        {"key": keys[i], "label": classes[labels[i]], "predicted": classes[predicted[i]],
         "confidence": float(probabilities[i, predicted[i]])}
        for i in order
    )
    accuracy = float((predicted == labels).mean()) if len(labels) else 0.0
    return Evaluation(
        job_name=job_name, accuracy=accuracy, classes=tuple(classes),
        confusion_matrix=tuple(tuple(int(v) for v in row) for row in matrix),
        per_class=per_class, worst=worst,
    )


def evaluation_to_dict(ev: Evaluation) -> dict:
    return {
        "job_name": ev.job_name, "accuracy": ev.accuracy, "classes": list(ev.classes),
        "confusion_matrix": [list(r) for r in ev.confusion_matrix], "per_class": ev.per_class,
        "worst": [dict(w) for w in ev.worst],
    }


def evaluation_from_dict(d: dict) -> Evaluation:
    return Evaluation(
        job_name=d["job_name"], accuracy=float(d["accuracy"]), classes=tuple(d["classes"]),
        confusion_matrix=tuple(tuple(int(v) for v in r) for r in d["confusion_matrix"]),
        per_class=d["per_class"], worst=tuple(d["worst"]),
    )
