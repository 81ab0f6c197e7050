"""Deliberately wrong implementations: each makes one classic porting mistake.

The meta-test requires the golden suite to catch every one of them. They compute the
forward value only (float64) and reuse the reference where they are not wrong, so each
differs from the spec in exactly one way.
"""

from __future__ import annotations

import numpy as np

from conformance import reference
from conformance.adapters import Adapter, Outcome, split_args


def _class_rows(input, target):
    x = np.asarray(input, np.float64)
    rows = x[None] if x.ndim == 1 else np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    return rows, np.asarray(target).reshape(-1).astype(np.int64)


def mean_over_count(input, target, weight=None, ignore_index=-100, reduction="mean",
                    label_smoothing=0.0):
    """'mean' divides by the number of elements instead of the valid targets' weights."""
    none = reference.cross_entropy(input, target, weight, ignore_index, "none",
                                   label_smoothing)
    if reduction != "mean" or np.asarray(target).dtype.kind == "f":
        return reference.cross_entropy(input, target, weight, ignore_index, reduction,
                                       label_smoothing)
    return np.sum(none) / max(np.size(none), 1)


def ignored_in_denominator(input, target, weight=None, ignore_index=-100, reduction="mean",
                           label_smoothing=0.0):
    """Ignored targets are clipped to a class and counted in the mean's denominator."""
    if reduction != "mean" or np.asarray(target).dtype.kind == "f":
        return reference.cross_entropy(input, target, weight, ignore_index, reduction,
                                       label_smoothing)
    rows, y = _class_rows(input, target)
    w = np.ones(rows.shape[1]) if weight is None else np.asarray(weight, np.float64)
    none = reference.cross_entropy(input, target, weight, ignore_index, "none",
                                   label_smoothing)
    return np.sum(none) / np.sum(w[np.clip(y, 0, rows.shape[1] - 1)])


def smoothing_without_weights(input, target, weight=None, ignore_index=-100,
                              reduction="mean", label_smoothing=0.0):
    """The smoothing term sums -log p over classes without the class weights."""
    if np.asarray(target).dtype.kind == "f" or label_smoothing == 0:
        return reference.cross_entropy(input, target, weight, ignore_index, reduction,
                                       label_smoothing)
    rows, y = _class_rows(input, target)
    lp = reference.log_softmax(rows)
    w = np.ones(rows.shape[1]) if weight is None else np.asarray(weight, np.float64)
    valid = y != ignore_index
    ys = np.where(valid, y, 0)
    nll = -lp[np.arange(len(y)), ys]
    eps, c = label_smoothing, rows.shape[1]
    losses = np.where(valid, (1 - eps) * w[ys] * nll + eps / c * np.sum(-lp, axis=1), 0.0)
    if reduction == "none":
        return losses.reshape(np.shape(target))
    if reduction == "sum":
        return np.sum(losses)
    return np.sum(losses) / np.sum(np.where(valid, w[ys], 0.0))


def pos_weight_first_axis(input, target, weight=None, reduction="mean", pos_weight=None):
    """pos_weight is applied along the first (batch) axis instead of the last."""
    if pos_weight is not None and np.ndim(input) >= 2 and np.ndim(pos_weight) == 1:
        pos_weight = np.reshape(pos_weight, (-1,) + (1,) * (np.ndim(input) - 1))
    return reference.binary_cross_entropy_with_logits(input, target, weight, reduction,
                                                      pos_weight)


def bce_without_clamp(input, target, weight=None, reduction="mean"):
    """log p and log(1 - p) are not clamped at -100."""
    p = np.asarray(input, np.float64)
    y = np.asarray(target, np.float64)
    w = 1.0 if weight is None else np.asarray(weight, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        losses = -w * (y * np.log(p) + (1 - y) * np.log(1 - p))
    if reduction == "none":
        return losses
    return np.sum(losses) if reduction == "sum" else np.mean(losses)


def minus_one_wraps(input, target, weight=None, ignore_index=-100, reduction="mean",
                    label_smoothing=0.0):
    """A target of -1 silently means the last class (NumPy-style negative indexing)."""
    target = np.asarray(target)
    if target.dtype.kind in "iu":
        c = np.shape(input)[0 if np.ndim(input) == 1 else 1]
        target = np.where(target == -1, c - 1, target)
    return reference.cross_entropy(input, target, weight, ignore_index, reduction,
                                   label_smoothing)


def local_vocabulary_smoothing(input, target, weight=None, ignore_index=-100,
                               reduction="mean", label_smoothing=0.0, class_shards=1):
    """Class-parallel label smoothing over the shard's own classes, divided by the shard's
    number of classes (Megatron-LM's vocabulary-parallel cross-entropy); the first shard's
    loss. Right when the class axis is not split [CP-SMOOTH]."""
    if np.asarray(target).dtype.kind == "f" or label_smoothing == 0 or class_shards == 1:
        return reference.cross_entropy(input, target, weight, ignore_index, reduction,
                                       label_smoothing)
    rows, y = _class_rows(input, target)
    lp = reference.log_softmax(rows)
    w = np.ones(rows.shape[1]) if weight is None else np.asarray(weight, np.float64)
    local = rows.shape[1] // class_shards
    valid = y != ignore_index
    ys = np.where(valid, y, 0)
    eps = label_smoothing
    smooth = np.sum(w[:local] * -lp[:, :local], axis=1) / local
    losses = np.where(valid, (1 - eps) * w[ys] * -lp[np.arange(len(y)), ys] + eps * smooth,
                      0.0)
    if reduction == "none":
        return losses.reshape(np.shape(target))
    total = np.sum(losses)
    return total if reduction == "sum" else total / np.sum(np.where(valid, w[ys], 0.0))


MUTANTS = {
    "mean-over-count": ("cross_entropy", mean_over_count),
    "ignored-in-denominator": ("cross_entropy", ignored_in_denominator),
    "smoothing-without-weights": ("cross_entropy", smoothing_without_weights),
    "pos-weight-first-axis": ("binary_cross_entropy_with_logits", pos_weight_first_axis),
    "bce-without-clamp": ("binary_cross_entropy", bce_without_clamp),
    "minus-one-wraps": ("cross_entropy", minus_one_wraps),
    "local-vocabulary-smoothing": ("cross_entropy", local_vocabulary_smoothing),
}


class MutantAdapter(Adapter):
    dtypes = ("float64",)
    gradients = False
    supports_class_shards = True  # the mutants split nothing but local_vocabulary_smoothing

    def __init__(self, name):
        self.name = name
        loss, self.fn = MUTANTS[name]
        self.losses = frozenset({loss})
        self.description = self.fn.__doc__

    def call(self, case, dtype, traced):
        args = split_args(case, dtype, lambda a, dt: a.astype(dt))
        if case.class_shards and self.fn is local_vocabulary_smoothing:
            args["class_shards"] = case.class_shards
        output = np.asarray(self.fn(**args), np.float64)
        return Outcome(output, None, "float64", None)
