"""Float64 NumPy reference for the losses of spec/SPEC.md.

Written from the spec alone and kept plain: it is the oracle the golden cases come from,
so it favours being obviously right over being fast. Signatures follow
``torch.nn.functional`` with the class axis at position 1. Each loss has a companion
``<loss>_grad(..., grad_output=...)`` that returns the analytic gradient with respect to
``input`` (the vector-Jacobian product with ``grad_output``); the tests check every one
against central finite differences.

The golden cases do not come from here: their numbers are the exact results rounded once
to float64 (conformance/exact.py, spec section 1). This module is the plain, fast
second opinion on the same formulas: case generation stops when the two disagree
(conformance/cases.py), and tests/test_golden_files.py measures how far it is from the
goldens in units in the last place. Its sums are ``math.fsum``, correctly rounded, so
the only rounding errors left are those of the element-wise operations.

``checked=True`` is a checked call (spec section 10: bad values raise); ``checked=False``
computes what a traced call computes instead (spec section 11).

This module imports NumPy and the standard library only.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = [
    "ProbabilityInputWarning",
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "cross_entropy",
    "cross_entropy_grad",
    "nll_loss",
    "nll_loss_grad",
    "class_weights",
    "class_weights_from_labels",
    "pos_weight_from_labels",
    "sample_weights_from_labels",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_grad",
    "softmax_focal_loss",
    "softmax_focal_loss_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_grad",
]

REDUCTIONS = ("none", "mean", "sum")
BCE_LOG_CLAMP = -100.0  # [BCE-CLAMP]
BCE_GRAD_EPS = 9.999999960041972e-13  # [GRAD-BCE]: 1e-12 rounded to float32
PROBABILITY_ATOL = 1e-6  # [WARN-PROBABILITY-INPUT]


class ProbabilityInputWarning(UserWarning):
    """cross_entropy was given what looks like probabilities instead of logits."""


# ----------------------------------------------------------------------------------
# Exact element-wise primitives and sums.


def exp(a):
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(a, dtype=np.float64))


def log(a):
    with np.errstate(divide="ignore", invalid="ignore"):  # log 0 = -inf, log(<0) = NaN
        return np.log(np.asarray(a, dtype=np.float64))


def log1p(a):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log1p(np.asarray(a, dtype=np.float64))


def _fsum1(values) -> float:
    values = [float(v) for v in values]
    if any(math.isnan(v) for v in values):
        return math.nan
    infs = {v for v in values if math.isinf(v)}
    if len(infs) == 2:
        return math.nan  # inf - inf
    if infs:
        return infs.pop()
    return math.fsum(values)


def fsum(a, axis=None):
    """Correctly rounded sum of ``a`` (over all entries, or along ``axis``)."""
    a = np.asarray(a, dtype=np.float64)
    if axis is None:
        return np.float64(_fsum1(a.ravel()))
    moved = np.moveaxis(a, axis, -1)
    out = np.empty(moved.shape[:-1], dtype=np.float64)
    for idx in np.ndindex(out.shape):
        out[idx] = _fsum1(moved[idx])
    return out


def _divide(a, b):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.float64(a) / np.float64(b)


def log_softmax(x):
    """Shifted log-softmax along the last axis (spec section 0, Arithmetic)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[-1] == 0:
        return x.copy()
    m = np.max(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        shifted = x - m  # inf - inf = NaN for a +inf or all -inf row
    return shifted - log(fsum(exp(shifted), axis=-1))[..., None]


# ----------------------------------------------------------------------------------
# Argument checks (spec section 10). Static checks always run; value checks only in a
# checked call.


def _check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"reduction must be one of {REDUCTIONS}, got reduction={reduction!r}"
        )


def _as_floating_input(input):
    input = np.asarray(input)
    if input.dtype.kind != "f":
        raise TypeError(
            f"input must have a floating dtype, got input.dtype={input.dtype}"
        )
    return input.astype(np.float64)


def _as_param(value, name):
    """weight / pos_weight: None or a real array, converted to float64 [GEN-PARAM-DTYPE]."""
    if value is None:
        return None
    value = np.asarray(value)
    if value.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real array, got {name}.dtype={value.dtype}")
    return value.astype(np.float64)


def _check_class_weight(weight, num_classes, name="weight"):
    if weight is None:
        return np.ones(num_classes)
    if weight.shape != (num_classes,):
        raise ValueError(
            f"{name} must be a 1-D array with one entry per class, shape "
            f"({num_classes},), got {name}.shape={weight.shape}"
        )
    return weight


def _check_broadcast(value, name, shape):
    if value is None:
        return np.ones(shape)
    try:
        broadcast = np.broadcast_shapes(value.shape, shape)
    except ValueError:
        broadcast = None
    if broadcast != tuple(shape):
        raise ValueError(
            f"{name} must broadcast to the input shape {tuple(shape)} (right-aligned, "
            f"a 1-D {name} lines up with the last dimension), got "
            f"{name}.shape={value.shape}"
        )
    return np.broadcast_to(value, shape)


def _rows(input):
    """(C,) or (N, C, d1..dk) -> (M, C) with the class axis last (spec section 0)."""
    if input.ndim == 0:
        raise ValueError(
            "input must have a class axis: shape (C,), (N, C) or (N, C, d1, ..., dk), "
            "got a 0-d input"
        )
    if input.ndim == 1:
        return input[None, :]
    return np.moveaxis(input, 1, -1).reshape(-1, input.shape[1])


def _unrows(rows, input_shape):
    """Inverse of ``_rows`` for an (M, C) array."""
    if len(input_shape) == 1:
        return rows[0]
    moved = (input_shape[0],) + tuple(input_shape[2:]) + (input_shape[1],)
    return np.moveaxis(rows.reshape(moved), -1, 1)


def _class_target(input, target):
    """Check an integer class target against the input; return it as (M,) int64."""
    target = np.asarray(target)
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"target must hold class indices with an integer dtype, got "
            f"target.dtype={target.dtype}"
        )
    expected = () if input.ndim == 1 else (input.shape[0],) + tuple(input.shape[2:])
    if target.shape != expected:
        raise ValueError(
            f"target must have the input's shape without the class axis, {expected}, "
            f"got target.shape={target.shape} for input.shape={input.shape}"
        )
    return target.astype(np.int64).reshape(-1)


def _check_target_range(y, num_classes, ignore_index):
    bad = (y != ignore_index) & ((y < 0) | (y >= num_classes))
    if bad.any():
        value = int(y[bad][0])
        raise ValueError(
            f"target values must be class indices in [0, {num_classes}) or "
            f"ignore_index={ignore_index}, got target value {value}"
        )


def _check_smoothing(label_smoothing):
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(
            f"label_smoothing must be in [0, 1], got label_smoothing={label_smoothing!r}"
        )


def _warn_if_probabilities(rows):
    """[WARN-PROBABILITY-INPUT]"""
    num_rows, num_classes = rows.shape
    if num_classes < 2 or num_rows == 0:
        return
    sums = fsum(rows, axis=1)
    if (rows >= 0).all() and (np.abs(sums - 1.0) <= PROBABILITY_ATOL).all():
        warnings.warn(
            "cross_entropy expects logits, but every row of input along the class axis "
            "is non-negative and sums to 1: it looks like softmax output. Pass the "
            "logits instead; if these really are logits, silence this with "
            "warnings.filterwarnings('ignore', category=ProbabilityInputWarning).",
            ProbabilityInputWarning,
            stacklevel=3,
        )


def _reduce(losses, reduction, denominator, target_shape):
    """[CE-NONE] [CE-SUM] [CE-MEAN] and their twins for the other losses."""
    if reduction == "none":
        return losses.reshape(target_shape)
    total = fsum(losses)
    if reduction == "sum":
        return total
    if denominator == 0:
        return np.float64(np.nan)  # [EDGE-ALL-IGNORED] [EDGE-EMPTY] [EDGE-ZERO-WEIGHT-SUM]
    return _divide(total, denominator)


def _row_scale(grad_output, reduction, denominator, num_rows):
    """s_i of spec section 9: how the upstream gradient reaches row i."""
    g = np.asarray(grad_output, dtype=np.float64)
    if reduction == "none":
        return g.reshape(num_rows)
    if reduction == "sum":
        return np.full(num_rows, g)
    return np.full(num_rows, _divide(g, denominator))


# ----------------------------------------------------------------------------------
# cross_entropy and nll_loss with class-index targets (spec sections 3, 5, 8, 9, 11).


class _ClassTargets:
    """Per-row quantities shared by cross_entropy and nll_loss with class targets.

    ``valid`` marks rows whose target is not ``ignore_index``; ``w_y`` is the weight of
    the target class (0 when ignored, NaN for an out-of-range target in an unchecked
    call, [TRACE-TARGET-RANGE]); ``D`` is the weighted mean's denominator [CE-MEAN].
    """

    def __init__(self, input, target, weight, ignore_index, checked, weight_name="weight"):
        self.rows = _rows(input)
        self.num_classes = self.rows.shape[1]
        self.y = _class_target(input, target)
        self.target_shape = np.shape(target)
        self.w = _check_class_weight(_as_param(weight, weight_name), self.num_classes,
                                     weight_name)
        if checked:
            _check_target_range(self.y, self.num_classes, ignore_index)
        self.valid = self.y != ignore_index
        in_range = (self.y >= 0) & (self.y < self.num_classes)
        self.bad = self.valid & ~in_range
        self.y_safe = np.where(self.valid & in_range, self.y, 0)
        w_y = np.where(self.valid, self.w[self.y_safe], 0.0)
        self.w_y = np.where(self.bad, np.nan, w_y)
        self.D = fsum(self.w_y[self.valid])

    def picked(self, values):
        """values[i, y_i] for each row (NaN for out-of-range targets)."""
        out = values[np.arange(len(self.y)), self.y_safe]
        return np.where(self.bad, np.nan, out)


def _cross_entropy_parts(input, target, weight, ignore_index, reduction, label_smoothing,
                         checked):
    _check_reduction(reduction)
    _check_smoothing(label_smoothing)
    input = _as_floating_input(input)
    target_dtype = np.asarray(target).dtype
    if target_dtype.kind == "f":
        if ignore_index != -100:
            raise ValueError(
                f"ignore_index is not supported with probability targets (floating "
                f"target), got ignore_index={ignore_index}; expected the default -100"
            )
        return _ProbabilityParts(input, target, weight, label_smoothing, checked)
    return _ClassParts(input, target, weight, ignore_index, label_smoothing, checked)


class _ClassParts(_ClassTargets):
    """[CE-ELEM] [CE-SMOOTH] with [CE-IGNORE] [CE-IGNORE-NONFINITE]."""

    def __init__(self, input, target, weight, ignore_index, eps, checked,
                 weight_name="weight"):
        super().__init__(input, target, weight, ignore_index, checked, weight_name)
        if checked:
            _warn_if_probabilities(self.rows)
        self.eps = eps
        self.input_shape = input.shape
        self.lp = log_softmax(self.rows)
        with np.errstate(invalid="ignore"):  # 0 * inf is NaN, as spec section 0 says
            losses = (1.0 - eps) * self.w_y * -self.picked(self.lp)
        if eps > 0:
            with np.errstate(invalid="ignore"):
                smooth = fsum(self.w * -self.lp, axis=1)
            losses = losses + (eps / self.num_classes) * smooth
        self.losses = np.where(self.valid, losses, 0.0)

    def output(self, reduction):
        return _reduce(self.losses, reduction, self.D, self.target_shape)

    def grad(self, grad_output, reduction):
        """[GRAD-CE]"""
        s = _row_scale(grad_output, reduction, self.D, len(self.y))
        p = exp(self.lp)
        onehot = np.zeros_like(p)
        onehot[np.arange(len(self.y)), self.y_safe] = 1.0
        with np.errstate(invalid="ignore", over="ignore"):
            coef = s * (1.0 - self.eps) * self.w_y  # formed first, [EDGE-ZERO-WEIGHT-SUM]
            rows = coef[:, None] * (p - onehot)
            if self.eps > 0:
                smooth = (s * self.eps / self.num_classes)[:, None]
                rows = rows + smooth * (fsum(self.w) * p - self.w)
        rows = np.where(self.valid[:, None], rows, 0.0)
        return _unrows(rows, self.input_shape)

    def hvp(self, grad_output, reduction, tangent):
        """[HVP-CE]: row ``s_i ((1-eps) w[y_i] + (eps/C) W) dp_i``, 0 for ignored rows."""
        s = _row_scale(grad_output, reduction, self.D, len(self.y))
        dp = _softmax_tangent(exp(self.lp), _rows(tangent))
        with np.errstate(invalid="ignore", over="ignore"):
            coef = s * (1.0 - self.eps) * self.w_y
            rows = coef[:, None] * dp
            if self.eps > 0:
                rows = rows + (s * self.eps / self.num_classes)[:, None] * fsum(self.w) * dp
        rows = np.where(self.valid[:, None], rows, 0.0)
        return _unrows(rows, self.input_shape)


def _softmax_tangent(p, t):
    """``dp = p (t - <p, t>)``: the derivative of softmax rows ``p`` along ``t`` [HVP-CE]."""
    with np.errstate(invalid="ignore"):
        return p * (t - fsum(p * t, axis=1)[:, None])


class _ProbabilityParts:
    """[CEP-ELEM] [CEP-MEAN]"""

    def __init__(self, input, target, weight, eps, checked):
        target = np.asarray(target)
        if target.shape != input.shape:
            raise ValueError(
                f"a probability target (floating dtype) must have the input's shape "
                f"{input.shape}, got target.shape={target.shape}"
            )
        self.input_shape = input.shape
        self.rows = _rows(input)
        self.num_classes = self.rows.shape[1]
        if checked:
            _warn_if_probabilities(self.rows)
        self.w = _check_class_weight(_as_param(weight, "weight"), self.num_classes)
        t = _rows(target.astype(np.float64))
        self.t = (1.0 - eps) * t + eps / self.num_classes
        self.lp = log_softmax(self.rows)
        with np.errstate(invalid="ignore"):
            self.losses = fsum(self.w * self.t * -self.lp, axis=1)
        self.target_shape = () if input.ndim == 1 else (
            (input.shape[0],) + tuple(input.shape[2:])
        )
        self.D = np.float64(len(self.losses))

    def output(self, reduction):
        return _reduce(self.losses, reduction, self.D, self.target_shape)

    def grad(self, grad_output, reduction):
        """[GRAD-CEP]"""
        s = _row_scale(grad_output, reduction, self.D, len(self.losses))
        wt = self.w * self.t
        with np.errstate(invalid="ignore", over="ignore"):
            rows = s[:, None] * (fsum(wt, axis=1)[:, None] * exp(self.lp) - wt)
        return _unrows(rows, self.input_shape)

    def hvp(self, grad_output, reduction, tangent):
        """[HVP-CEP]: row ``s_i (sum_k w_k t'_ik) dp_i``."""
        s = _row_scale(grad_output, reduction, self.D, len(self.losses))
        dp = _softmax_tangent(exp(self.lp), _rows(tangent))
        with np.errstate(invalid="ignore", over="ignore"):
            rows = s[:, None] * fsum(self.w * self.t, axis=1)[:, None] * dp
        return _unrows(rows, self.input_shape)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, *, checked=True):
    """Cross-entropy of logits ``input`` against class indices or class probabilities.

    Class indices (integer ``target``): [CE-ELEM] ``l_i = w[y_i] * -log_softmax(x)_i[y_i]``,
    with [CE-SMOOTH] ``(1-eps) * w[y_i] * -lp[y_i] + (eps/C) * sum_c w_c * -lp_c``; ignored
    elements give exactly 0 [CE-IGNORE]; ``"mean"`` divides by the weights of the valid
    targets [CE-MEAN]. Probabilities (floating ``target`` of the input's shape):
    [CEP-ELEM] ``l_i = sum_c w_c * t'_ic * -lp_ic`` with ``t' = (1-eps) t + eps/C``;
    ``"mean"`` divides by the number of elements [CEP-MEAN].
    """
    parts = _cross_entropy_parts(input, target, weight, ignore_index, reduction,
                                 label_smoothing, checked)
    return parts.output(reduction)


def cross_entropy_grad(input, target, weight=None, ignore_index=-100, reduction="mean",
                       label_smoothing=0.0, *, grad_output=1.0, checked=True):
    """Gradient of :func:`cross_entropy` with respect to ``input``, times ``grad_output``.

    [GRAD-CE]: row ``s_i (1-eps) w[y_i] (p_i - e_{y_i}) + s_i (eps/C) (W p_i - w)``, zero
    for ignored rows. [GRAD-CEP]: ``s_i ((sum_k w_k t'_ik) p_ic - w_c t'_ic)``.
    """
    parts = _cross_entropy_parts(input, target, weight, ignore_index, reduction,
                                 label_smoothing, checked)
    return parts.grad(grad_output, reduction)


class _NLLParts(_ClassTargets):
    """[NLL-ELEM]"""

    def __init__(self, input, target, weight, ignore_index, reduction, checked):
        _check_reduction(reduction)
        input = _as_floating_input(input)
        if np.asarray(target).dtype.kind == "f":
            raise TypeError(
                "nll_loss takes class indices: target must have an integer dtype, got "
                f"target.dtype={np.asarray(target).dtype}"
            )
        super().__init__(input, target, weight, ignore_index, checked)
        self.input_shape = input.shape
        with np.errstate(invalid="ignore"):
            self.losses = np.where(self.valid, -self.w_y * self.picked(self.rows), 0.0)

    def output(self, reduction):
        return _reduce(self.losses, reduction, self.D, self.target_shape)

    def grad(self, grad_output, reduction):
        """[GRAD-NLL]"""
        s = _row_scale(grad_output, reduction, self.D, len(self.y))
        rows = np.zeros_like(self.rows)
        with np.errstate(invalid="ignore", over="ignore"):
            coef = np.where(self.valid, -s * self.w_y, 0.0)
        rows[np.arange(len(self.y)), self.y_safe] = coef
        rows[self.bad] = np.nan
        return _unrows(rows, self.input_shape)

    def hvp(self, grad_output, reduction, tangent):
        """[HVP-NLL]: the loss is linear in its input, so 0."""
        return np.zeros(self.input_shape)


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean", *,
             checked=True):
    """Negative log-likelihood of log-probabilities ``input`` at class targets.

    [NLL-ELEM] ``l_i = -w[y_i] * input[i, y_i]`` for valid elements, 0 for ignored ones;
    reductions as for cross_entropy ([CE-MEAN]: divide by the valid targets' weights).
    """
    return _NLLParts(input, target, weight, ignore_index, reduction, checked).output(
        reduction
    )


def nll_loss_grad(input, target, weight=None, ignore_index=-100, reduction="mean", *,
                  grad_output=1.0, checked=True):
    """Gradient of :func:`nll_loss`: ``-s_i w[y_i]`` at ``(i, y_i)``, 0 elsewhere [GRAD-NLL]."""
    parts = _NLLParts(input, target, weight, ignore_index, reduction, checked)
    return parts.grad(grad_output, reduction)


# ----------------------------------------------------------------------------------
# Binary losses (spec sections 6, 7).


def _binary_target(input, target):
    target = np.asarray(target)
    if target.dtype.kind not in "biuf":
        raise TypeError(
            f"target must be a real array, got target.dtype={target.dtype}"
        )
    if target.shape != input.shape:
        raise ValueError(
            f"target must have the input's shape {input.shape}, got "
            f"target.shape={target.shape}"
        )
    return target.astype(np.float64)


def _outside_unit_interval(a):
    with np.errstate(invalid="ignore"):
        return ~((a >= 0.0) & (a <= 1.0))  # NaN is outside


class _BCEParts:
    """[BCE-ELEM] [BCE-CLAMP] [BCE-WEIGHT] [BCE-MEAN]"""

    def __init__(self, input, target, weight, reduction, checked):
        _check_reduction(reduction)
        self.p = _as_floating_input(input)
        self.y = _binary_target(self.p, target)
        self.w = _check_broadcast(_as_param(weight, "weight"), "weight", self.p.shape)
        if checked:
            for name, a in (("input", self.p), ("target", self.y)):
                if _outside_unit_interval(a).any():
                    value = float(a[_outside_unit_interval(a)][0])
                    raise ValueError(
                        f"binary_cross_entropy {name} values must lie in [0, 1], got "
                        f"{name} value {value!r}"
                    )
        self.bad = _outside_unit_interval(self.p) | _outside_unit_interval(self.y)
        log_p = np.maximum(log(self.p), BCE_LOG_CLAMP)
        log_1mp = np.maximum(log(1.0 - self.p), BCE_LOG_CLAMP)
        losses = -self.w * (self.y * log_p + (1.0 - self.y) * log_1mp)
        self.losses = np.where(self.bad, np.nan, losses)  # [TRACE-BCE-RANGE]
        self.D = np.float64(self.p.size)

    def output(self, reduction):
        return _reduce(self.losses, reduction, self.D, self.p.shape)

    def grad(self, grad_output, reduction):
        """[GRAD-BCE]"""
        s = _row_scale(grad_output, reduction, self.D, self.p.size).reshape(self.p.shape)
        denominator = np.maximum(self.p * (1.0 - self.p), BCE_GRAD_EPS)
        grad = s * self.w * (self.p - self.y) / denominator
        return np.where(self.bad, np.nan, grad)

    def hvp(self, grad_output, reduction, tangent):
        """[HVP-BCE]: ``s w t (d - (p - y)(1 - 2p)) / d^2`` with ``d = p (1-p)``, and
        ``s w t / eta`` where the denominator is held at ``eta``."""
        s = _row_scale(grad_output, reduction, self.D, self.p.size).reshape(self.p.shape)
        d = self.p * (1.0 - self.p)
        held = d < BCE_GRAD_EPS
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(held, 1.0 / BCE_GRAD_EPS,
                             (d - (self.p - self.y) * (1.0 - 2.0 * self.p)) / (d * d))
        return np.where(self.bad, np.nan, s * self.w * np.asarray(tangent) * slope)


def binary_cross_entropy(input, target, weight=None, reduction="mean", *, checked=True):
    """Binary cross-entropy of probabilities ``input`` in [0, 1].

    [BCE-ELEM] ``l = -w (y max(log p, -100) + (1-y) max(log(1-p), -100))``; ``weight``
    broadcasts to the input [BCE-WEIGHT]; ``"mean"`` divides by the number of elements
    [BCE-MEAN].
    """
    return _BCEParts(input, target, weight, reduction, checked).output(reduction)


def binary_cross_entropy_grad(input, target, weight=None, reduction="mean", *,
                              grad_output=1.0, checked=True):
    """Gradient ``s w (p - y) / max(p (1-p), eta)`` with eta = float32(1e-12) [GRAD-BCE]."""
    parts = _BCEParts(input, target, weight, reduction, checked)
    return parts.grad(grad_output, reduction)


def log_sigmoid(x):
    """``min(x, 0) - log1p(exp(-|x|))``, exact for large ``|x|`` [BCEL-ELEM]."""
    x = np.asarray(x, dtype=np.float64)
    return np.minimum(x, 0.0) - log1p(exp(-np.abs(x)))


class _BCELogitsParts:
    """[BCEL-ELEM] [BCEL-POS-WEIGHT] [BCEL-WEIGHT] [BCEL-MEAN]"""

    def __init__(self, input, target, weight, reduction, pos_weight):
        _check_reduction(reduction)
        self.x = _as_floating_input(input)
        self.y = _binary_target(self.x, target)
        self.w = _check_broadcast(_as_param(weight, "weight"), "weight", self.x.shape)
        pos_weight = _check_broadcast(
            _as_param(pos_weight, "pos_weight"), "pos_weight", self.x.shape
        )
        self.q = 1.0 + (pos_weight - 1.0) * self.y
        with np.errstate(invalid="ignore"):
            self.losses = self.w * ((1.0 - self.y) * self.x - self.q * log_sigmoid(self.x))
        self.D = np.float64(self.x.size)

    def output(self, reduction):
        return _reduce(self.losses, reduction, self.D, self.x.shape)

    def grad(self, grad_output, reduction):
        """[GRAD-BCEL]"""
        s = _row_scale(grad_output, reduction, self.D, self.x.size).reshape(self.x.shape)
        sigmoid_neg_x = exp(log_sigmoid(-self.x))
        return s * self.w * ((1.0 - self.y) - self.q * sigmoid_neg_x)

    def hvp(self, grad_output, reduction, tangent):
        """[HVP-BCEL]: ``s w q sigmoid(x) sigmoid(-x) t``."""
        s = _row_scale(grad_output, reduction, self.D, self.x.size).reshape(self.x.shape)
        curvature = exp(log_sigmoid(self.x)) * exp(log_sigmoid(-self.x))
        return s * self.w * self.q * curvature * np.asarray(tangent)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None, *, checked=True):
    """Binary cross-entropy of logits ``input``.

    [BCEL-ELEM] ``l = w ((1-y) x - q log_sigmoid(x))`` with ``q = 1 + (pos_weight-1) y``;
    ``pos_weight`` broadcasts against the last dimension [BCEL-POS-WEIGHT]; ``"mean"``
    divides by the number of elements [BCEL-MEAN].
    """
    del checked  # no value is checked [BCEL-ELEM]
    return _BCELogitsParts(input, target, weight, reduction, pos_weight).output(reduction)


def binary_cross_entropy_with_logits_grad(input, target, weight=None, reduction="mean",
                                          pos_weight=None, *, grad_output=1.0,
                                          checked=True):
    """Gradient ``s w ((1-y) - q sigmoid(-x))`` [GRAD-BCEL]."""
    del checked
    parts = _BCELogitsParts(input, target, weight, reduction, pos_weight)
    return parts.grad(grad_output, reduction)


def merge_shards(a):
    """``(S, n, ...) -> (S*n, ...)``: the concatenated batch of data-parallel shards, whose
    losses [DP-GLOBAL] defines as the single-worker losses of that batch."""
    a = np.asarray(a)
    return a.reshape((-1,) + a.shape[2:])


# ----------------------------------------------------------------------------------
# Class-weight schemes (spec section 13).

SCHEMES = ("inverse", "balanced", "max", "inverse_sqrt", "effective_number",
           "median_frequency")
NORMALIZATIONS = (None, "classes", "samples")


def _raw_weights(n, scheme, beta):
    """[CW-INVERSE] [CW-BALANCED] [CW-MAX] [CW-INVERSE-SQRT] [CW-EFFECTIVE-NUMBER]
    [CW-MEDIAN-FREQUENCY] for classes with n_c > 0."""
    total, num_classes = fsum(n), len(n)
    if scheme == "inverse":
        return 1.0 / n
    if scheme == "balanced":
        return total / (num_classes * n)
    if scheme == "max":
        return np.max(n) / n
    if scheme == "inverse_sqrt":
        return 1.0 / np.sqrt(n)
    if scheme == "effective_number":
        # (1 - beta) / (1 - beta^n) written with expm1 so that neither side cancels.
        log_beta = np.log(beta) if beta > 0 else -np.inf
        with np.errstate(invalid="ignore"):
            return np.expm1(log_beta) / np.expm1(n * log_beta)
    frequency = n / total
    return np.median(frequency) / frequency


def _check_weight_options(scheme, beta, normalize, max_weight):
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got scheme={scheme!r}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got beta={beta!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got "
                         f"normalize={normalize!r}")
    if max_weight is not None and not max_weight > 0:
        raise ValueError(f"max_weight must be positive or None, got max_weight={max_weight!r}")


def _weights_from_counts(n, name, scheme, beta, normalize, max_weight, checked):
    """Shared by class_weights and pos_weight_from_labels: [CW-NORMALIZE] [CW-ZERO-COUNT]."""
    present = n > 0
    if checked and max_weight is None and not present.all():
        c = int(np.argmin(present))
        raise ValueError(
            f"{name}: class {c} has count 0, so its weight would be infinite; give "
            f"max_weight= to cap it, or leave the class out"
        )
    r = np.full(len(n), np.nan)
    with np.errstate(divide="ignore"):
        r[present] = _raw_weights(n, scheme, beta)[present]
    if normalize == "classes" and present.any():
        r[present] *= present.sum() / fsum(r[present])
    elif normalize == "samples" and present.any():
        r[present] *= fsum(n[present]) / fsum(n[present] * r[present])
    if max_weight is not None:
        r = np.where(present, np.minimum(r, max_weight), max_weight)
    return r


def class_weights(counts, scheme="balanced", *, beta=0.999, normalize=None, max_weight=None,
                  checked=True):
    """Class weights from per-class counts (spec section 13).

    Raw weights: inverse ``1/n_c``, balanced ``N/(C n_c)``, max ``max(n)/n_c``,
    inverse_sqrt ``1/sqrt(n_c)``, effective_number ``(1-beta)/(1-beta^n_c)``,
    median_frequency ``median(f)/f_c`` with ``f_c = n_c/N``; then [CW-NORMALIZE] and
    [CW-ZERO-COUNT].
    """
    _check_weight_options(scheme, beta, normalize, max_weight)
    n = np.asarray(counts)
    if n.ndim != 1 or n.dtype.kind not in "iuf":
        raise ValueError(f"counts must be a 1-D array of real counts, got counts with "
                         f"shape {n.shape} and dtype {n.dtype}")
    n = n.astype(np.float64)
    good = np.isfinite(n) & (n >= 0)
    if not good.all():
        if checked:
            raise ValueError(f"counts must be finite and non-negative, got count "
                             f"{n[~good][0]!r}")
        return np.full(len(n), np.nan)  # traced: no weight can be trusted
    return _weights_from_counts(n, "counts", scheme, beta, normalize, max_weight, checked)


def _label_counts(labels, num_classes, ignore_index, checked):
    """[CW-FROM-LABELS]: per-class counts of the labels that are not ignore_index."""
    if not (isinstance(num_classes, (int, np.integer)) and num_classes >= 1):
        raise ValueError(f"num_classes must be a positive integer, got "
                         f"num_classes={num_classes!r}")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must have an integer dtype, got labels.dtype={labels.dtype}")
    y = labels.astype(np.int64).ravel()
    if checked:
        bad = (y != ignore_index) & ((y < 0) | (y >= num_classes))
        if bad.any():
            raise ValueError(f"labels must be class indices in [0, {num_classes}) or "
                             f"ignore_index={ignore_index}, got label {int(y[bad][0])}")
    valid = (y != ignore_index) & (y >= 0) & (y < num_classes)
    return np.bincount(y[valid], minlength=num_classes).astype(np.float64), labels, valid


def class_weights_from_labels(labels, num_classes, scheme="balanced", *, ignore_index=-100,
                              beta=0.999, normalize=None, max_weight=None, checked=True):
    """:func:`class_weights` of the label counts, skipping ``ignore_index`` [CW-FROM-LABELS]."""
    _check_weight_options(scheme, beta, normalize, max_weight)
    counts, _, _ = _label_counts(labels, num_classes, ignore_index, checked)
    return _weights_from_counts(counts, "labels", scheme, beta, normalize, max_weight,
                                checked)


def sample_weights_from_labels(labels, num_classes, scheme="inverse", *, ignore_index=-100,
                               beta=0.999, normalize=None, max_weight=None, checked=True):
    """One weight per sample, ``w[y_i]`` (0 if ignored), for resampling [RS-SAMPLE-WEIGHTS]."""
    _check_weight_options(scheme, beta, normalize, max_weight)
    counts, labels, valid = _label_counts(labels, num_classes, ignore_index, checked)
    w = _weights_from_counts(counts, "labels", scheme, beta, normalize, max_weight, checked)
    y = labels.astype(np.int64).ravel()
    return np.where(valid, w[np.where(valid, y, 0)], 0.0).reshape(labels.shape)


def pos_weight_from_labels(targets, *, max_weight=None, checked=True):
    """Per-label negatives over positives along the last axis [CW-POS-WEIGHT]."""
    if max_weight is not None and not max_weight > 0:
        raise ValueError(f"max_weight must be positive or None, got max_weight={max_weight!r}")
    t = np.asarray(targets)
    if t.ndim < 1 or t.dtype.kind not in "biuf":
        raise ValueError(f"targets must be a real array of shape (..., L), got shape "
                         f"{t.shape} and dtype {t.dtype}")
    t = t.astype(np.float64).reshape(-1, t.shape[-1])
    if checked and _outside_unit_interval(t).any():
        raise ValueError(f"targets must lie in [0, 1], got target "
                         f"{float(t[_outside_unit_interval(t)][0])!r}")
    positives = fsum(t, axis=0)
    negatives = fsum(1.0 - t, axis=0)
    present = positives > 0
    if checked and max_weight is None and not present.all():
        raise ValueError(f"targets: label {int(np.argmin(present))} has no positive, so its "
                         f"pos_weight would be infinite; give max_weight= to cap it")
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(present, negatives / positives, np.nan)
    if max_weight is not None:
        w = np.where(present, np.minimum(w, max_weight), max_weight)
    return w


# ----------------------------------------------------------------------------------
# Focal losses (spec section 14).


def _check_gamma(gamma):
    if not gamma >= 0:
        raise ValueError(f"gamma must be non-negative, got gamma={gamma!r}")


def _power(u, gamma):
    """u^gamma with u^0 = 1, also at u = 0."""
    return np.ones_like(u) if gamma == 0 else u ** gamma


def _power_derivative_term(u, gamma, factor):
    """gamma u^(gamma-1) * factor, taken as 0 where u = 0 (its limit in the focal losses,
    where factor vanishes with u) [FOCAL-GRAD]."""
    if gamma == 0:
        return np.zeros_like(u)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(u > 0, gamma * np.where(u > 0, u, 1.0) ** (gamma - 1) * factor, 0.0)


class _SigmoidFocalParts:
    """[FOCAL-SIGMOID]"""

    def __init__(self, input, target, alpha, gamma, reduction):
        _check_reduction(reduction)
        _check_gamma(gamma)
        self.x = _as_floating_input(input)
        self.y = _binary_target(self.x, target)
        self.gamma = gamma
        sig_x, sig_neg_x = exp(log_sigmoid(self.x)), exp(log_sigmoid(-self.x))
        self.sig_x, self.sig_neg_x = sig_x, sig_neg_x
        self.u = self.y * sig_neg_x + (1.0 - self.y) * sig_x  # 1 - p_t
        with np.errstate(invalid="ignore"):
            self.ce = (1.0 - self.y) * self.x - log_sigmoid(self.x)
        if alpha is None or alpha < 0:
            self.alpha_t = np.ones_like(self.x)
        else:
            self.alpha_t = alpha * self.y + (1.0 - alpha) * (1.0 - self.y)
        with np.errstate(invalid="ignore"):
            self.losses = self.alpha_t * _power(self.u, gamma) * self.ce
        self.D = np.float64(self.x.size)

    def output(self, reduction):
        return _reduce(self.losses, reduction, self.D, self.x.shape)

    def grad(self, grad_output, reduction):
        s = _row_scale(grad_output, reduction, self.D, self.x.size).reshape(self.x.shape)
        du = (1.0 - 2.0 * self.y) * self.sig_x * self.sig_neg_x
        dce = (1.0 - self.y) - self.sig_neg_x
        with np.errstate(invalid="ignore"):
            d = (_power_derivative_term(self.u, self.gamma, du * self.ce)
                 + _power(self.u, self.gamma) * dce)
        return s * self.alpha_t * d

    def hvp(self, grad_output, reduction, tangent):
        """[HVP-FOCAL]: the derivative of the gradient's ``P'(u) u' ce + P(u) ce'``
        (``P(u) = u^gamma``, ``u' = (1-2y) a b``, ``ce' = (1-y) - b``, ``a = sigmoid(x)``,
        ``b = sigmoid(-x)``), with every power of ``u`` taken as 0 where ``u = 0``."""
        s = _row_scale(grad_output, reduction, self.D, self.x.size).reshape(self.x.shape)
        a, b, u, g = self.sig_x, self.sig_neg_x, self.u, self.gamma
        du = (1.0 - 2.0 * self.y) * a * b
        ddu = du * (b - a)
        dce = (1.0 - self.y) - b
        with np.errstate(invalid="ignore"):
            second = (_power_derivative_term(u, g, ddu * self.ce + 2.0 * du * dce)
                      + _power(u, g) * a * b)
            if g != 0:  # gamma (gamma-1) u^(gamma-2) u'^2 ce
                second = second + g * _power_derivative_term(u, g - 1, du * du * self.ce)
        return s * self.alpha_t * second * np.asarray(tangent)


def sigmoid_focal_loss(input, target, alpha=0.25, gamma=2.0, reduction="none", *,
                       checked=True):
    """RetinaNet's focal loss with torchvision's semantics [FOCAL-SIGMOID].

    ``l = alpha_t (1 - p_t)^gamma ce`` with ``ce`` the binary cross-entropy of the logits,
    ``1 - p_t = y sigmoid(-x) + (1-y) sigmoid(x)``, ``alpha_t = alpha y + (1-alpha)(1-y)``
    (1 if alpha is None or negative); ``"mean"`` divides by the number of elements.
    """
    del checked
    return _SigmoidFocalParts(input, target, alpha, gamma, reduction).output(reduction)


def sigmoid_focal_loss_grad(input, target, alpha=0.25, gamma=2.0, reduction="none", *,
                            grad_output=1.0, checked=True):
    """Gradient of :func:`sigmoid_focal_loss`, 0 where saturated [FOCAL-GRAD]."""
    del checked
    parts = _SigmoidFocalParts(input, target, alpha, gamma, reduction)
    return parts.grad(grad_output, reduction)


class _SoftmaxFocalParts(_ClassTargets):
    """[FOCAL-SOFTMAX]"""

    def __init__(self, input, target, alpha, gamma, ignore_index, reduction, checked):
        _check_reduction(reduction)
        _check_gamma(gamma)
        input = _as_floating_input(input)
        if np.asarray(target).dtype.kind == "f":
            raise TypeError("softmax_focal_loss takes class indices: target must have an "
                            f"integer dtype, got target.dtype={np.asarray(target).dtype}")
        super().__init__(input, target, alpha, ignore_index, checked, weight_name="alpha")
        self.input_shape = input.shape
        self.gamma = gamma
        self.lp = log_softmax(self.rows)
        self.lp_y = self.picked(self.lp)
        self.q = exp(self.lp_y)
        self.u = -np.expm1(self.lp_y)  # 1 - p_y without cancellation
        with np.errstate(invalid="ignore"):
            losses = self.w_y * _power(self.u, gamma) * -self.lp_y
        self.losses = np.where(self.valid, losses, 0.0)

    def output(self, reduction):
        return _reduce(self.losses, reduction, self.D, self.target_shape)

    def grad(self, grad_output, reduction):
        """Row i: ``s_i w[y_i] B_i (p_i - e_{y_i})``, ``B = u^g - g q lp_y u^(g-1)``."""
        s = _row_scale(grad_output, reduction, self.D, len(self.y))
        with np.errstate(invalid="ignore"):
            b = _power(self.u, self.gamma) - _power_derivative_term(
                self.u, self.gamma, self.q * self.lp_y)
        p = exp(self.lp)
        onehot = np.zeros_like(p)
        onehot[np.arange(len(self.y)), self.y_safe] = 1.0
        with np.errstate(invalid="ignore", over="ignore"):
            coef = s * self.w_y * b  # formed first, [EDGE-ZERO-WEIGHT-SUM]
            rows = coef[:, None] * (p - onehot)
        rows = np.where(self.valid[:, None], rows, 0.0)
        return _unrows(rows, self.input_shape)

    def hvp(self, grad_output, reduction, tangent):
        """[HVP-FOCAL]: row ``s_i w[y_i] (dB_i (p_i - e_{y_i}) + B_i dp_i)`` with
        ``dB = -gamma (lp_y + 2) u^(gamma-1) dq + gamma (gamma-1) q lp_y u^(gamma-2) dq``,
        ``dq = q (t_y - <p, t>)``, powers of ``u`` taken as 0 where ``u = 0``."""
        s = _row_scale(grad_output, reduction, self.D, len(self.y))
        g, u, q, lp_y = self.gamma, self.u, self.q, self.lp_y
        p = exp(self.lp)
        dp = _softmax_tangent(p, _rows(tangent))
        dq = self.picked(dp)
        onehot = np.zeros_like(p)
        onehot[np.arange(len(self.y)), self.y_safe] = 1.0
        with np.errstate(invalid="ignore", over="ignore"):
            b = _power(u, g) - _power_derivative_term(u, g, q * lp_y)
            db = -_power_derivative_term(u, g, (lp_y + 2.0) * dq)
            if g != 0:
                db = db + g * _power_derivative_term(u, g - 1, q * lp_y * dq)
            coef = s * self.w_y
            rows = coef[:, None] * (db[:, None] * (p - onehot) + b[:, None] * dp)
        rows = np.where(self.valid[:, None], rows, 0.0)
        return _unrows(rows, self.input_shape)


def softmax_focal_loss(input, target, alpha=None, gamma=2.0, ignore_index=-100,
                       reduction="mean", *, checked=True):
    """Multi-class focal loss [FOCAL-SOFTMAX]: ``l_i = alpha[y_i] (1 - p_i[y_i])^gamma
    (-log p_i[y_i])``, ignored elements 0, ``"mean"`` divided by the valid targets'
    ``alpha`` as the weighted cross-entropy [CE-MEAN]; ``gamma=0`` is that loss
    [FOCAL-GAMMA0]."""
    parts = _SoftmaxFocalParts(input, target, alpha, gamma, ignore_index, reduction, checked)
    return parts.output(reduction)


def softmax_focal_loss_grad(input, target, alpha=None, gamma=2.0, ignore_index=-100,
                            reduction="mean", *, grad_output=1.0, checked=True):
    """Gradient of :func:`softmax_focal_loss`, 0 where saturated [FOCAL-GRAD]."""
    parts = _SoftmaxFocalParts(input, target, alpha, gamma, ignore_index, reduction, checked)
    return parts.grad(grad_output, reduction)


# ----------------------------------------------------------------------------------
# Linear cross-entropy (spec section 17).


def _matmul(a, b):
    """``a @ b`` with every dot product correctly rounded (math.fsum)."""
    out = np.empty((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            out[i, j] = _fsum1(a[i] * b[:, j])
    return out


class _LinearParts:
    """[LCE-ELEM] [LCE-ZLOSS] [LCE-SOFTCAP] on the full logits (no chunks needed here)."""

    def __init__(self, hidden, weight, target, class_weight, ignore_index, reduction, eps,
                 z_loss, softcap, chunk_size, checked):
        _check_reduction(reduction)
        _check_smoothing(eps)
        h = _as_floating_input(hidden)
        w = _as_floating_input(weight)
        if w.ndim != 2 or h.ndim < 1 or w.shape[1] != h.shape[-1]:
            raise ValueError(f"weight must have shape (V, D) with D = hidden.shape[-1] = "
                             f"{h.shape[-1] if h.ndim else None}, got weight.shape={w.shape}")
        if not z_loss >= 0:
            raise ValueError(f"z_loss must be non-negative, got z_loss={z_loss!r}")
        if softcap is not None and not softcap > 0:
            raise ValueError(f"softcap must be positive or None, got softcap={softcap!r}")
        if chunk_size is not None and not (isinstance(chunk_size, (int, np.integer))
                                           and chunk_size >= 1):
            raise ValueError(f"chunk_size must be a positive integer or None, got "
                             f"chunk_size={chunk_size!r}")
        target = np.asarray(target)
        if target.shape != h.shape[:-1]:
            raise ValueError(f"target must have hidden's shape without the last axis, "
                             f"{h.shape[:-1]}, got target.shape={target.shape}")
        self.hidden_shape, self.h, self.w = h.shape, h.reshape(-1, h.shape[-1]), w
        self.a = _matmul(self.h, w.T)
        self.softcap, self.z_loss = softcap, z_loss
        z = self.a if softcap is None else softcap * np.tanh(self.a / softcap)
        self.ce = _ClassParts(z, target.reshape(-1), class_weight, ignore_index, eps, checked,
                              weight_name="class_weight")
        self.ce.target_shape = target.shape
        m = np.max(z, axis=1) if z.shape[1] else np.zeros(len(z))
        with np.errstate(invalid="ignore"):
            self.lse = m + log(fsum(exp(z - m[:, None]), axis=1))
            z_terms = z_loss * self.ce.w_y * self.lse ** 2 if z_loss else 0.0
            self.ce.losses = np.where(self.ce.valid, self.ce.losses + z_terms, 0.0)
        self.z = z

    def output(self, reduction):
        return self.ce.output(reduction)

    def _grad_z(self, grad_output, reduction):
        """d loss / d z: the cross-entropy part [GRAD-CE] plus the z-loss's."""
        g = self.ce.grad(grad_output, reduction)
        if self.z_loss:
            s = _row_scale(grad_output, reduction, self.ce.D, len(self.ce.y))
            with np.errstate(invalid="ignore", over="ignore"):
                coef = s * 2.0 * self.z_loss * self.ce.w_y * self.lse
                g = g + np.where(self.ce.valid[:, None],
                                 coef[:, None] * exp(self.ce.lp), 0.0)
        return g

    def _cap_slope(self):
        """dz/da of the softcap, ``1 - (z/c)^2`` [LCE-SOFTCAP]."""
        return 1.0 if self.softcap is None else 1.0 - (self.z / self.softcap) ** 2

    def grad(self, grad_output, reduction):
        """[LCE-GRAD]"""
        g = self._grad_z(grad_output, reduction) * self._cap_slope()
        return {"hidden": _matmul(g, self.w).reshape(self.hidden_shape),
                "weight": _matmul(g.T, self.h)}

    def _da(self, tangent):
        """The logits' tangent ``t_h W^T + h t_W^T``."""
        th = np.asarray(tangent["hidden"], np.float64).reshape(self.h.shape)
        return _matmul(th, self.w.T) + _matmul(self.h, np.asarray(tangent["weight"]).T), th

    def jvp(self, reduction, tangent):
        """[JVP]: the gradient with respect to the logits, contracted with their tangent."""
        da, _ = self._da(tangent)
        ones = 1.0 if reduction != "none" else np.ones(len(self.ce.y))
        g = self._grad_z(ones, reduction) * self._cap_slope()
        with np.errstate(invalid="ignore"):
            per_row = fsum(g * da, axis=1)
        if reduction == "none":
            return per_row.reshape(self.ce.target_shape)
        return fsum(per_row)

    def hvp(self, grad_output, reduction, tangent):
        """[HVP-LCE]: with ``G = d loss/d z``, ``f`` the softcap's slope and ``dz = f da``,
        ``d(G f) = dG f + G df`` (``df = -2 z dz / c^2``); then
        ``hvp_hidden = d(G f) W + G f t_W`` and ``hvp_weight = d(G f)^T h + (G f)^T t_h``,
        where ``dG`` is [HVP-CE]'s plus the z-loss's ``s 2 z_loss w_y (<p, dz> p + lse dp)``."""
        da, th = self._da(tangent)
        f = self._cap_slope()
        dz = da * f
        g = self._grad_z(grad_output, reduction)
        dg = self.ce.hvp(grad_output, reduction, dz)
        if self.z_loss:
            s = _row_scale(grad_output, reduction, self.ce.D, len(self.ce.y))
            p = exp(self.ce.lp)
            with np.errstate(invalid="ignore", over="ignore"):
                coef = s * 2.0 * self.z_loss * self.ce.w_y
                dlse = fsum(p * dz, axis=1)
                dz_loss = coef[:, None] * (dlse[:, None] * p + self.lse[:, None]
                                          * _softmax_tangent(p, dz))
            dg = dg + np.where(self.ce.valid[:, None], dz_loss, 0.0)
        dgz = dg * f
        if self.softcap is not None:
            dgz = dgz + g * (-2.0 * self.z * dz / self.softcap ** 2)
        gz = g * f
        tw = np.asarray(tangent["weight"], np.float64)
        return {"hidden": (_matmul(dgz, self.w) + _matmul(gz, tw)).reshape(self.hidden_shape),
                "weight": _matmul(dgz.T, self.h) + _matmul(gz.T, th)}


def linear_cross_entropy(hidden, weight, target, *, class_weight=None, ignore_index=-100,
                         reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None,
                         chunk_size=None, checked=True):
    """Cross-entropy of the logits ``hidden @ weight.T`` (``weight`` is ``(V, D)``, as
    ``torch.nn.Linear``'s), with [CE-*] semantics, z-loss and softcap (spec section 17)."""
    parts = _LinearParts(hidden, weight, target, class_weight, ignore_index, reduction,
                         label_smoothing, z_loss, softcap, chunk_size, checked)
    return parts.output(reduction)


def linear_cross_entropy_grad(hidden, weight, target, *, class_weight=None, ignore_index=-100,
                              reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None,
                              chunk_size=None, grad_output=1.0, checked=True):
    """Gradients of :func:`linear_cross_entropy`: ``{"hidden": ..., "weight": ...}``."""
    parts = _LinearParts(hidden, weight, target, class_weight, ignore_index, reduction,
                         label_smoothing, z_loss, softcap, chunk_size, checked)
    return parts.grad(grad_output, reduction)


# ----------------------------------------------------------------------------------
# Higher derivatives (spec section 18).


def _parts(loss, args):
    """The parts object of ``loss`` on keyword arguments ``args``, and the reduction."""
    a = dict(args)
    a.setdefault("reduction", "none" if loss == "sigmoid_focal_loss" else "mean")
    checked = a.pop("checked", True)
    r = a["reduction"]
    if loss == "cross_entropy":
        return _cross_entropy_parts(a["input"], a["target"], a.get("weight"),
                                    a.get("ignore_index", -100), r,
                                    a.get("label_smoothing", 0.0), checked), r
    if loss == "nll_loss":
        return _NLLParts(a["input"], a["target"], a.get("weight"), a.get("ignore_index", -100),
                         r, checked), r
    if loss == "binary_cross_entropy":
        return _BCEParts(a["input"], a["target"], a.get("weight"), r, checked), r
    if loss == "binary_cross_entropy_with_logits":
        return _BCELogitsParts(a["input"], a["target"], a.get("weight"), r,
                               a.get("pos_weight")), r
    if loss == "sigmoid_focal_loss":
        return _SigmoidFocalParts(a["input"], a["target"], a.get("alpha", 0.25),
                                  a.get("gamma", 2.0), r), r
    if loss == "softmax_focal_loss":
        return _SoftmaxFocalParts(a["input"], a["target"], a.get("alpha"), a.get("gamma", 2.0),
                                  a.get("ignore_index", -100), r, checked), r
    if loss == "linear_cross_entropy":
        return _LinearParts(a["hidden"], a["weight"], a["target"], a.get("class_weight"),
                            a.get("ignore_index", -100), r, a.get("label_smoothing", 0.0),
                            a.get("z_loss", 0.0), a.get("softcap"), a.get("chunk_size"),
                            checked), r
    raise ValueError(f"no derivatives for {loss!r}")


def jvp(loss, tangent, **args):
    """[JVP] The directional derivative of ``loss``'s output along ``tangent`` (an array of
    the input's shape; for linear_cross_entropy ``{"hidden": ..., "weight": ...}``): the
    gradient for an upstream 1 per output element, contracted with the tangent over the
    entries each output element depends on (its row, or itself for the binary losses)."""
    parts, reduction = _parts(loss, args)
    if loss == "linear_cross_entropy":
        return parts.jvp(reduction, tangent)
    shape = np.shape(parts.output("none"))
    g = parts.grad(np.ones(shape) if reduction == "none" else 1.0, reduction)
    with np.errstate(invalid="ignore"):
        product = g * np.asarray(tangent, np.float64)
    if reduction != "none":
        return fsum(product)
    if loss in ("binary_cross_entropy", "binary_cross_entropy_with_logits",
                "sigmoid_focal_loss"):
        return product
    return fsum(_rows(product), axis=1).reshape(shape)


def hvp(loss, tangent, grad_output=1.0, **args):
    """[HVP-*] The directional derivative along ``tangent`` of the gradient of section 9
    (the Hessian of ``<grad_output, output>`` times the tangent), from each loss's formula."""
    parts, reduction = _parts(loss, args)
    return parts.hvp(grad_output, reduction, tangent)
