"""Test-split scores that a majority-class bias cannot hide, computed from a confusion matrix.

* per-class recall: the fraction of a class's test images predicted as that class;
* balanced accuracy: the mean of the per-class recalls (every class counts the same);
* macro-F1: the mean over classes of ``2 precision recall / (precision + recall)``, with
  0 for a class that is never predicted or never recognised (scikit-learn's value);
* minority recall: the mean recall over the ``k`` classes with the fewest *training*
  images, the classes a reweighting is meant to rescue.
"""

from __future__ import annotations

import numpy as np

SCORES = ("macro_f1", "balanced_accuracy", "minority_recall")


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray,
                     num_classes: int) -> np.ndarray:
    """Counts ``m[true, predicted]``."""
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2)
    return flat.reshape(num_classes, num_classes)


def scores(confusion: np.ndarray, minority_classes: np.ndarray) -> dict:
    """The three scores of :data:`SCORES` and the per-class recall, from one confusion
    matrix."""
    hits = np.diag(confusion).astype(np.float64)
    recall = hits / confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    return {
        "macro_f1": float(f1.mean()),
        "balanced_accuracy": float(recall.mean()),
        "minority_recall": float(recall[minority_classes].mean()),
        "per_class_recall": recall.tolist(),
    }


def mean_and_std(values) -> dict:
    """Mean and sample standard deviation (0 for a single value) over seeds."""
    values = np.asarray(values, dtype=np.float64)
    std = values.std(ddof=1) if values.size > 1 else 0.0
    return {"mean": float(values.mean()), "std": float(std), "per_seed": values.tolist()}


def table(results: dict) -> str:
    """The scores of every method as ``mean ± std`` over seeds, one row per method."""
    header = ["method", "macro-F1", "balanced accuracy", "minority recall"]
    rows = [[name] + [f"{summary[s]['mean']:.3f} ± {summary[s]['std']:.3f}" for s in SCORES]
            for name, summary in results["methods"].items()]
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [header] + rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
