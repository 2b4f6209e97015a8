"""Evaluation numbers on a case small enough to check by hand."""
from __future__ import annotations

import numpy as np
import pytest

from backend.local.training.evaluation import evaluate_predictions, evaluation_from_dict, evaluation_to_dict


def test_known_case():
    classes = ("bicycle", "motorcycle")
    labels = np.array([0, 0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.55, 0.45]])
    keys = [f"test/{i}.png" for i in range(5)]
    ev = evaluate_predictions("job", classes, labels, probs, keys)
    # predicted: 0, 1, 1, 1, 0 -> matrix rows = true: [[1, 2], [1, 1]]
    assert ev.confusion_matrix == ((1, 2), (1, 1))
    assert ev.accuracy == pytest.approx(2 / 5)
    assert ev.per_class["bicycle"]["precision"] == pytest.approx(1 / 2)
    assert ev.per_class["bicycle"]["recall"] == pytest.approx(1 / 3)
    assert ev.per_class["motorcycle"]["precision"] == pytest.approx(1 / 3)
    assert ev.per_class["motorcycle"]["recall"] == pytest.approx(1 / 2)
    assert [w["key"] for w in ev.worst] == ["test/2.png", "test/1.png", "test/4.png"]  # 0.8, 0.6, 0.55
    assert ev.worst[0] == {"key": "test/2.png", "label": "bicycle", "predicted": "motorcycle", "confidence": 0.8}
    assert evaluation_from_dict(evaluation_to_dict(ev)) == ev


def test_a_class_never_predicted_has_zero_precision_not_an_error():
    ev = evaluate_predictions("j", ("a", "b", "c"), np.array([0, 1, 2]), np.eye(3)[[0, 0, 0]], ["x", "y", "z"], worst_count=1)
    assert ev.per_class["b"]["precision"] == 0.0 and ev.per_class["a"]["recall"] == 1.0
    assert len(ev.worst) == 1
