"""Deliberately wrong implementations: each makes one classic porting mistake.

The meta-test requires the golden suite to catch every one of them. Most compute the
forward value only (float64) and reuse the reference where they are not wrong, so each
differs from the spec in exactly one way. The torch mutants (``TORCH_MUTANTS``) are run
like wce_torch, with gradients, JVP and HVP, and are right up to their first derivative.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from conformance import clauses, reference
from conformance.adapters import Adapter, Outcome, split_args
from conformance.adapters.runners import run_torch


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


class _DetachedBackward(torch.autograd.Function):
    """torch's cross-entropy with a hand-written backward that is right to first order
    but detached from the input (the gradient is recomputed on a detached copy), and a
    right forward-mode rule; so the value, the gradient and the JVP are exact, and the
    second derivative is 0."""

    @staticmethod
    def forward(input, target, weight, ignore_index, reduction, label_smoothing):
        return F.cross_entropy(input, target, weight, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=label_smoothing)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, *ctx.options = inputs
        ctx.save_for_backward(input, target, weight)
        ctx.save_for_forward(input, target, weight)
        ctx.output_shape = output.shape

    @staticmethod
    def _gradient(ctx, upstream):
        input, target, weight = ctx.saved_tensors
        _, vjp = torch.func.vjp(
            lambda x: _DetachedBackward.forward(x, target, weight, *ctx.options),
            input.detach())
        return vjp(upstream)[0].detach()

    @staticmethod
    def backward(ctx, grad_output):
        return _DetachedBackward._gradient(ctx, grad_output), None, None, None, None, None

    @staticmethod
    def jvp(ctx, input_t, *_):
        """[JVP]: the gradient for an upstream 1 per output element, contracted with the
        tangent over the class axis (each output element's row)."""
        input, _, _ = ctx.saved_tensors
        ones = torch.ones(ctx.output_shape, dtype=input.dtype)
        product = _DetachedBackward._gradient(ctx, ones) * input_t
        if ctx.options[1] != "none" or input.ndim == 1:
            return product.sum()
        return product.sum(dim=1)


def detached_second_derivative(input, target, weight=None, ignore_index=-100,
                               reduction="mean", label_smoothing=0.0):
    """A custom autograd.Function whose backward is right but detached from the input:
    double backward gives a Hessian of 0 without a word."""
    return _DetachedBackward.apply(input, target, weight, ignore_index, reduction,
                                   label_smoothing)


MUTANTS = {
    "mean-over-count": ("cross_entropy", mean_over_count),
    "ignored-in-denominator": ("cross_entropy", ignored_in_denominator),
    "smoothing-without-weights": ("cross_entropy", smoothing_without_weights),
    "pos-weight-first-axis": ("binary_cross_entropy_with_logits", pos_weight_first_axis),
    "bce-without-clamp": ("binary_cross_entropy", bce_without_clamp),
    "minus-one-wraps": ("cross_entropy", minus_one_wraps),
    "local-vocabulary-smoothing": ("cross_entropy", local_vocabulary_smoothing),
}
TORCH_MUTANTS = {
    "detached-second-derivative": ("cross_entropy", detached_second_derivative),
}
MUTANTS.update(TORCH_MUTANTS)


class MutantAdapter(Adapter):
    dtypes = ("float64",)
    gradients = False
    supports_class_shards = True  # the mutants split nothing but local_vocabulary_smoothing

    def __init__(self, name):
        self.name = name
        loss, self.fn = MUTANTS[name]
        self.losses = frozenset({loss})
        self.description = self.fn.__doc__
        if name in TORCH_MUTANTS:  # run as wce_torch is; built on torch, so its departures
            self.gradients = self.derivatives = True
            self.deviations = clauses.torch_deviations()

    def call(self, case, dtype, traced):
        if self.name in TORCH_MUTANTS:
            return run_torch(self.fn, case, dtype, derivatives=True)
        args = split_args(case, dtype, lambda a, dt: a.astype(dt))
        if case.class_shards and self.fn is local_vocabulary_smoothing:
            args["class_shards"] = case.class_shards
        output = np.asarray(self.fn(**args), np.float64)
        return Outcome(output, None, "float64", None)
