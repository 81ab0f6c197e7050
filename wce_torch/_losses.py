"""The losses of spec/SPEC.md in PyTorch, drop-in for ``torch.nn.functional``.

Same names, argument order and defaults as torch (class axis 1), including the legacy
``size_average``/``reduce``. Where the spec departs from torch on purpose, these
functions follow the spec: any integer target dtype [GEN-INT-TARGET], weights of another
dtype [GEN-PARAM-DTYPE], integer/boolean BCE targets [BCE-TARGET], no influence of
ignored rows [CE-IGNORE-NONFINITE], an error for negative ``label_smoothing``
[ERR-SMOOTHING], a warning for softmax output passed as logits
[WARN-PROBABILITY-INPUT], and float32 accumulation for half inputs [GEN-HALF].

Every loss also takes ``process_group=`` for data-parallel training: with a group,
``"mean"`` is the global mean over all ranks' batches and the gradients that
DistributedDataParallel averages are those of that global loss [DP-PROCESS-GROUP].

The class-target cross-entropy is a ``torch.autograd.Function`` with a fused gradient:
it keeps the log-probabilities for the backward pass and turns them into the gradient in
place, so forward plus backward allocate one logits-sized buffer where torch's own
weighted path allocates three (log-probabilities, their gradient, the input gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wce_torch import _checks as check
from wce_torch import _core as core
from wce_torch._parallel import class_parallel_cross_entropy

#: [GRAD-BCE]: 1e-12 rounded to float32, the guard torch uses in every dtype.
BCE_GRAD_EPS = 9.999999960041972e-13
BCE_LOG_CLAMP = -100.0  # [BCE-CLAMP]


@core.autocast_float32
def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                  reduce=None, reduction="mean", label_smoothing=0.0, *, process_group=None,
                  class_process_group=None):
    r"""Weighted softmax cross-entropy with class indices or class probabilities.

    With ``lp = log_softmax(input, dim=1)`` and class weights ``w`` (ones by default):

    * integer ``target`` (class indices, any integer dtype) [CE-ELEM] [CE-SMOOTH]::

        l_i = (1 - eps) * w[y_i] * -lp[i, y_i] + (eps / C) * sum_c w_c * -lp[i, c]

      Elements with ``y_i == ignore_index`` give exactly 0 and their logits have no
      influence [CE-IGNORE] [CE-IGNORE-NONFINITE]. ``"mean"`` is the weighted mean
      ``sum_i l_i / sum_{i valid} w[y_i]`` [CE-MEAN]: NaN, with a zero gradient, when
      every target is ignored [EDGE-ALL-IGNORED].
    * floating ``target`` of the input's shape (probabilities) [CEP-ELEM]::

        l_i = sum_c w_c * t'_ic * -lp_ic,   t' = (1 - eps) * t + eps / C

      and ``"mean"`` divides by the number of elements [CEP-MEAN].

    Bad arguments raise ValueError/TypeError naming the argument (spec section 10).
    With ``process_group`` the reductions are global over its ranks [DP-PROCESS-GROUP].
    With ``class_process_group`` the class axis is split over its ranks: ``input`` and
    ``weight`` hold this rank's classes, ``target`` global class indices, and the loss
    is that of the unsplit problem [CP-GLOBAL].
    """
    if class_process_group is not None:
        return class_parallel_cross_entropy(
            input, target, weight, ignore_index, check.reduction(size_average, reduce,
                                                                 reduction),
            label_smoothing, process_group, class_process_group)
    input = check.floating(input, "input")
    reduction = check.reduction(size_average, reduce, reduction)
    eps = check.label_smoothing(label_smoothing)
    ignore_index = check.ignore_index(ignore_index)
    axis = check.class_axis(input, "input")
    check.tensor(target, "target")
    num_classes, shape = input.shape[axis], check.without_axis(input.shape, axis)
    weight = check.class_weight(weight, num_classes, "weight", input.shape)
    x = core.rows(input)
    dtype = check.compute_dtype(input.dtype)
    w = core.class_weights_or_ones(weight, num_classes, dtype, input.device)
    if check.is_probability_target(target):
        if ignore_index != -100:
            raise ValueError(
                f"ignore_index is not supported with probability targets (floating "
                f"target), got ignore_index={ignore_index}; expected the default -100"
            )
        check.probability_target_shape(target, input.shape, axis)
        check.warn_if_probabilities(x)
        t = core.rows(target).to(dtype)
        if eps:
            t = (1.0 - eps) * t + eps / num_classes
        losses = -((torch.log_softmax(x.to(dtype), dim=-1) * t) @ w)
        return core.reduce(losses, None, reduction, shape, process_group).to(input.dtype)
    check.target_shape(target, shape, "the input's shape without the class axis")
    check.class_target_range(target, num_classes, ignore_index)
    check.warn_if_probabilities(x)
    valid, y, w_y = core.class_terms(target.reshape(-1), w, num_classes, ignore_index)
    if (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
            or core.higher_order(x, w) or not x.shape[0]):
        fused = (_ClassCrossEntropy if torch.compiler.is_compiling()
                 else _ClassCrossEntropyWithJvp)
        losses, _ = fused.apply(x, y, valid, w_y, w, eps)
    else:  # the loss alone: by blocks of rows, whose log-probabilities stay in the caches
        losses = torch.cat([_ClassCrossEntropy.forward(x[s], y[s], valid[s], w_y[s], w, eps)[0]
                            for s in core.row_blocks(x)])
    return core.reduce(losses, w_y, reduction, shape, process_group, valid).to(input.dtype)


@core.autocast_float32
def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean", *, process_group=None):
    r"""Weighted negative log-likelihood of log-probabilities at class indices.

    [NLL-ELEM] ``l_i = -w[y_i] * input[i, y_i]`` for valid elements and exactly 0 for
    ignored ones; ``"mean"`` divides by the weights of the valid targets [CE-MEAN].
    Targets, weights, ``ignore_index`` and errors as in :func:`cross_entropy`.
    """
    input = check.floating(input, "input")
    reduction = check.reduction(size_average, reduce, reduction)
    ignore_index = check.ignore_index(ignore_index)
    # ATen's reduced NLL is this one once the targets are known to be in range: the
    # weighted mean, NaN over zero weight with a NaN gradient for valid elements and 0 for
    # ignored ones, in one kernel. (Its forward-mode tangent of an all-ignored mean is
    # 0/0, not the 0 of [JVP]: forward mode takes the general path.) On the CPU that
    # kernel checks the targets as it reads them, and its IndexError becomes the spec's
    # error [ERR-TARGET-RANGE]; elsewhere a bad index is a device-side assert.
    aten = (reduction != "none" and process_group is None and not core.higher_order(input)
            and (weight is None or not weight.requires_grad))
    kernel_checks = aten and input.device.type == "cpu"
    axis, weight = check.class_index_arguments(input, target, weight, ignore_index,
                                               "nll_loss", target_range=not kernel_checks)
    num_classes, shape = input.shape[axis], check.without_axis(input.shape, axis)
    dtype = check.compute_dtype(input.dtype)
    x = core.rows(input).to(dtype)
    if aten:
        w = None if weight is None else weight.to(dtype=dtype, device=input.device)
        try:
            return F.nll_loss(x, target.reshape(-1).to(torch.int64), weight=w,
                              ignore_index=ignore_index, reduction=reduction).to(input.dtype)
        except IndexError:  # raised again below as the spec's error, not chained to it
            pass
        check.class_target_range(target, num_classes, ignore_index)
    w = core.class_weights_or_ones(weight, num_classes, dtype, input.device)
    valid, y, w_y = core.class_terms(target.reshape(-1), w, num_classes, ignore_index)
    bad = torch.isnan(w_y)  # an out-of-range target under torch.compile [TRACE-TARGET-RANGE]
    if w.requires_grad:  # composed: ATen's nll_loss has no gradient for the weights
        losses = torch.where(valid, -w_y * x.gather(1, y[:, None])[:, 0], 0.0)
    else:  # ATen's per-element NLL is [NLL-ELEM]; its backward writes the gradient in one pass
        kept = torch.where(valid & ~bad, y, ignore_index)
        losses = F.nll_loss(x, kept, weight=None if weight is None else w, reduction="none",
                            ignore_index=ignore_index)
    losses = losses + core.nan_rows(bad, core.rows(input))
    return core.reduce(losses, w_y, reduction, shape, process_group, valid).to(input.dtype)


@core.autocast_float32
def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean", *, process_group=None):
    r"""Binary cross-entropy of probabilities in ``[0, 1]``.

    [BCE-ELEM] [BCE-CLAMP]::

        l = -w * (y * max(log p, -100) + (1 - y) * max(log(1 - p), -100))

    ``weight`` broadcasts to the input [BCE-WEIGHT]; ``"mean"`` divides by the number of
    elements [BCE-MEAN]; the gradient is ``w (p - y) / max(p (1 - p), 1e-12)``
    [GRAD-BCE]. ``target`` may have any real dtype [BCE-TARGET].
    """
    input = check.floating(input, "input")
    reduction = check.reduction(size_average, reduce, reduction)
    target = check.binary_target(target, input.shape)
    weight = check.broadcastable(weight, "weight", input.shape)
    check.unit_interval(input, "input")
    check.unit_interval(target, "target")
    dtype = check.compute_dtype(input.dtype)
    w = torch.ones((), dtype=dtype, device=input.device) if weight is None else weight.to(dtype)
    p, y, w = input.to(dtype), target.to(dtype), w.expand(input.shape)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (p, y, w))
            or core.higher_order(p, y, w)):
        return core.elementwise_loss_alone(
            lambda p, y, w: _bce_per_weight(p, y).mul_(w), reduction, input.shape,
            process_group, p, y, w).to(input.dtype)
    fused = _BinaryCrossEntropy if torch.compiler.is_compiling() else _BinaryCrossEntropyWithJvp
    losses, _ = fused.apply(p, y, w)
    return core.reduce(losses, None, reduction, input.shape, process_group).to(input.dtype)


@core.autocast_float32
def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None,
                                     reduce=None, reduction="mean", pos_weight=None, *,
                                     process_group=None):
    r"""Binary cross-entropy of logits, with an optional weight for positives.

    [BCEL-ELEM] with ``q = 1 + (pos_weight - 1) * y``::

        l = w * ((1 - y) * x - q * log_sigmoid(x))

    ``pos_weight`` broadcasts against the last dimension, one weight per label for
    ``(N, C)`` multi-label logits [BCEL-POS-WEIGHT]; ``"mean"`` divides by the number of
    elements [BCEL-MEAN]; the gradient is ``w ((1 - y) - q sigmoid(-x))`` [GRAD-BCEL].
    """
    input = check.floating(input, "input")
    reduction = check.reduction(size_average, reduce, reduction)
    target = check.binary_target(target, input.shape)
    weight = check.broadcastable(weight, "weight", input.shape)
    pos_weight = check.broadcastable(pos_weight, "pos_weight", input.shape)
    dtype = check.compute_dtype(input.dtype)
    x, y = input.to(dtype), target.to(dtype)
    w = None if weight is None else weight.to(dtype)
    pw = None if pos_weight is None else pos_weight.to(dtype)
    if core.higher_order(x, y, w, pw) or any(
            t is not None and t.requires_grad for t in (y, w, pw)):
        # Composed, so that every transform and every argument's gradient come from
        # autograd (forward over forward mode included).
        q = 1.0 if pw is None else 1.0 + (pw - 1.0) * y
        losses = (1.0 - y) * x - q * F.logsigmoid(x)
        if w is not None:
            losses = w * losses
    elif torch.is_grad_enabled() and x.requires_grad:
        losses = _BinaryCrossEntropyWithLogits.apply(x, y, w, pw)
    else:
        return core.elementwise_loss_alone(_bcel_elements, reduction, input.shape,
                                           process_group, x, y, w, pw).to(input.dtype)
    return core.reduce(losses, None, reduction, input.shape, process_group).to(input.dtype)


# ----------------------------------------------------------------------------------
# Fused autograd functions.


class _ClassCrossEntropy(torch.autograd.Function):
    """Per-element [CE-ELEM] [CE-SMOOTH] on ``(M, C)`` rows, with [GRAD-CE] fused.

    Forward: ``lp = log_softmax(x)`` (one kernel), ``-lp[i, y_i]`` gathered, the
    smoothing term ``-(lp @ w)``. Saved for backward: ``lp``, the one logits-sized buffer.
    Backward turns ``lp`` into the gradient in place (on a copy if the graph is kept)::

        grad_i = a_i * exp(lp_i) - c_i * e_{y_i} - s_i * w,
        c_i = ct_i (1-eps) w[y_i],  s_i = ct_i eps / C,  a_i = c_i + s_i W

    with ``c_i = s_i = 0`` for ignored rows, whose log-probabilities were zeroed if they
    were not finite [CE-IGNORE-NONFINITE]. ``c_i`` is formed first, so a zero-weight mean
    (``ct = NaN``) gives NaN rows [EDGE-ZERO-WEIGHT-SUM].

    Higher derivatives (spec section 18): ``lp`` is also a differentiable output, whose
    backward is log-softmax's. When the gradient itself must be differentiable
    (``create_graph=True``, or a torch.func transform), the backward pass writes the same
    formula out of place in terms of ``lp``, so autograd differentiates it through ``lp``
    back to ``x`` [HVP-CE]. The subclass's ``jvp`` gives forward mode [JVP], and the vmap
    rule is generated from these methods.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, y, valid, w_y, w, eps):
        lp = torch.log_softmax(x.to(w.dtype), dim=-1)
        # An ignored row's non-finite logits have no influence: such a row is NaN in every
        # entry (its max or its sum is not finite), and is zeroed.
        poisoned = ~valid & torch.isnan(lp[:, 0])
        if core.traced():
            lp.masked_fill_(poisoned[:, None], 0.0)
        elif poisoned.any():
            lp[poisoned] = 0.0
        nll = -lp.gather(1, y[:, None])[:, 0]
        losses = (1.0 - eps) * w_y * nll
        if eps:
            losses = losses - (eps / x.shape[-1]) * (lp @ w)
        return torch.where(valid, losses, 0.0), lp

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, valid, w_y, w, eps = inputs
        _, lp = output
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(y, valid, w_y, w, lp)
        ctx.save_for_forward(y, valid, w_y, w, lp)
        ctx.eps, ctx.input_dtype = eps, x.dtype

    @staticmethod
    def backward(ctx, ct, lp_ct):
        y, valid, w_y, w, lp = ctx.saved_tensors
        eps, num_classes = ctx.eps, lp.shape[-1]
        grad = grad_w_y = grad_w = None
        differentiable = torch.is_grad_enabled() or core.traced()
        if ct is not None:
            ct = ct.to(w.dtype)
            c = torch.where(valid, ct * (1.0 - eps) * w_y, 0.0)
            s = torch.where(valid, ct * (eps / num_classes), 0.0)
            if eps and ctx.needs_input_grad[4]:  # d/dw of the smoothing term: -lp weighted by s
                grad_w = -(s @ torch.where(valid[:, None], lp, 0.0))
            nll = -lp.gather(1, y[:, None])[:, 0]
            grad_w_y = torch.where(valid, ct * (1.0 - eps) * nll, 0.0)
            if differentiable:  # [GRAD-CE] out of place, differentiable through lp
                grad = (c + s * w.sum())[:, None] * lp.exp()
                grad = grad - torch.zeros_like(lp).scatter(1, y[:, None], c[:, None])
                if eps:
                    grad = grad - s[:, None] * w
            else:
                # The gradient is written over the log-probabilities, unless the graph is
                # kept for another backward pass (retain_graph, gradcheck) or they are
                # still needed below (a second-order pass reaching lp too).
                grad = lp.clone() if core.graph_is_kept() or lp_ct is not None else lp
                grad.exp_().mul_((c + s * w.sum())[:, None])
                grad.scatter_add_(1, y[:, None], -c[:, None])
                if eps:
                    grad.addr_(s, w, alpha=-1.0)
        if lp_ct is not None:  # log-softmax's backward, reached by higher derivatives only
            lp_ct = torch.where(valid[:, None], lp_ct, 0.0)
            from_lp = lp_ct - lp.exp() * lp_ct.sum(dim=-1, keepdim=True)
            grad = from_lp if grad is None else grad + from_lp
        grad = None if grad is None else grad.to(ctx.input_dtype)
        return grad, None, None, grad_w_y, grad_w, None


class _ClassCrossEntropyWithJvp(_ClassCrossEntropy):
    """:class:`_ClassCrossEntropy` with forward mode; torch.compile (which cannot trace a
    custom ``jvp``) uses the base class."""

    @staticmethod
    def jvp(ctx, x_t, _y_t, _valid_t, w_y_t, w_t, _eps_t):
        """[JVP]: ``dlp = t - <p, t>`` per row; the losses' tangent follows [CE-ELEM]."""
        core.refuse_forward_over_forward("cross_entropy")
        y, valid, w_y, w, lp = ctx.saved_tensors
        eps, num_classes = ctx.eps, lp.shape[-1]
        dlp = torch.zeros_like(lp)
        if x_t is not None:
            x_t = torch.where(valid[:, None], x_t.to(lp.dtype), 0.0)
            dlp = x_t - (lp.exp() * x_t).sum(dim=-1, keepdim=True)
        dlosses = (1.0 - eps) * w_y * -dlp.gather(1, y[:, None])[:, 0]
        if eps:
            dlosses = dlosses - (eps / num_classes) * (dlp @ w)
        if w_y_t is not None:
            dlosses = dlosses + (1.0 - eps) * w_y_t * -lp.gather(1, y[:, None])[:, 0]
        if eps and w_t is not None:
            dlosses = dlosses - (eps / num_classes) * (lp @ w_t)
        return torch.where(valid, dlosses, 0.0), dlp


def _bcel_elements(x, y, w, pw):
    """[BCEL-ELEM] per element; see _BinaryCrossEntropyWithLogits."""
    ls = F.logsigmoid(x)
    one = torch.ones((), dtype=y.dtype, device=y.device)
    if pw is None:
        losses = torch.sub(one, y)
    else:  # q ls = ls + (pw - 1) y ls, then the buffer of y ls takes the losses
        y_ls = torch.mul(y, ls)
        ls.addcmul_(y_ls, pw - 1.0)
        losses = torch.sub(one, y, out=y_ls)
    losses.mul_(x).sub_(ls)
    return losses if w is None else losses.mul_(w)


class _BinaryCrossEntropyWithLogits(torch.autograd.Function):
    """Per-element [BCEL-ELEM] with [GRAD-BCEL] fused, for the logits' gradient only
    (first order, or double backward through the differentiable backward formula); the
    caller composes the loss instead under a transform, with a forward-mode tangent, or
    when the target or a weight needs a gradient.

    Forward, with ``ls = log_sigmoid(x)``: ``q ls`` in place on ``ls``, then
    ``(1 - y) x - q ls`` in place on one more buffer (the product ``(1 - y) x`` is kept,
    so that infinite logits give [BCEL-NONFINITE]'s values).
    Saved: only the arguments. Backward, in place on one buffer, the same gradient as
    torch's own::

        (1 - y) - q sigmoid(-x) = q sigmoid(x) - pos_weight y

    equal up to the rounding of ``sigmoid(x)`` near 1, an absolute error of one unit
    in the last place of 1, inside the spec's norm-wise tolerance.
    """

    @staticmethod
    def forward(ctx, x, y, w, pw):
        ctx.save_for_backward(x, y, w, pw)
        return _bcel_elements(x, y, w, pw)

    @staticmethod
    def backward(ctx, ct):
        x, y, w, pw = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: [GRAD-BCEL] out of place, differentiable
            q = 1.0 if pw is None else 1.0 + (pw - 1.0) * y
            grad = ((1.0 - y) - q * torch.sigmoid(-x)) * ct
            return (grad if w is None else grad * w), None, None, None
        grad = torch.sigmoid(x)
        if pw is None:
            grad.sub_(y)
        else:
            grad.mul_(torch.addcmul(torch.ones((), dtype=x.dtype, device=x.device), y,
                                    pw - 1.0)).addcmul_(y, pw, value=-1.0)
        if w is not None:
            grad.mul_(w)
        return grad.mul_(ct), None, None, None


def _bce_logs(p):
    """``max(log p, -100)`` and ``max(log(1 - p), -100)`` [BCE-CLAMP]."""
    return (torch.log(p).clamp_min_(BCE_LOG_CLAMP),
            torch.rsub(p, 1.0).log_().clamp_min_(BCE_LOG_CLAMP))


def _bce_per_weight(p, y, in_place=True):
    """``-(y max(log p, -100) + (1 - y) max(log(1 - p), -100))`` [BCE-ELEM]; in place on
    its own temporaries unless it must be differentiable or batched by vmap."""
    log_p, log_1mp = _bce_logs(p)
    if in_place:  # log(1 - p) + y (log p - log(1 - p)): two buffers, not three
        return log_1mp.addcmul_(y, log_p.sub_(log_1mp)).neg_()
    return -(y * log_p + (1.0 - y) * log_1mp)


def _bce_slope(p, y):
    """``(p - y) / max(p (1 - p), eta)``: [GRAD-BCE] per unit weight and upstream."""
    return (p - y) / (p * (1.0 - p)).clamp_min(BCE_GRAD_EPS)


class _BinaryCrossEntropy(torch.autograd.Function):
    """Per-element [BCE-ELEM] [BCE-CLAMP] with [GRAD-BCE]'s guarded gradient. Only the
    inputs and a mask are saved; the backward pass recomputes the logarithms if the
    weight or the target needs a gradient.

    The backward formula is differentiable, so double backward gives the derivative of
    the guarded gradient [HVP-BCE]; the subclass's ``jvp`` goes through the same held
    denominator [JVP]; the vmap rule is generated.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(p, y, w):
        if core.traced():  # vmap may batch y or w and not p: out of place
            # Values out of range, unchecked while traced, give NaN.
            bad = ~((p >= 0) & (p <= 1) & (y >= 0) & (y <= 1))
            return (_bce_per_weight(p, y, False) * w).masked_fill(bad, torch.nan), bad
        # Checked in eager mode: nothing to mask, and no logits-sized mask to keep.
        return _bce_per_weight(p, y).mul_(w), torch.zeros((), dtype=torch.bool,
                                                          device=p.device)

    @staticmethod
    def setup_context(ctx, inputs, output):
        p, y, w = inputs
        _, bad = output
        ctx.mark_non_differentiable(bad)
        ctx.save_for_backward(p, y, w, bad)
        ctx.save_for_forward(p, y, w, bad)

    @staticmethod
    def backward(ctx, ct, _):
        p, y, w, bad = ctx.saved_tensors
        in_place = not (torch.is_grad_enabled() or core.traced())  # else: differentiable
        if in_place:  # [GRAD-BCE] is ATen's formula: one pass, and one for the weight
            grad_p = torch.ops.aten.binary_cross_entropy_backward(ct, p, y, w, 0)
            if bad.dim():
                grad_p.masked_fill_(bad, torch.nan)
        else:
            grad_p = (_bce_slope(p, y) * w * ct).masked_fill(bad, torch.nan)
        grad_w = _bce_per_weight(p, y, in_place) * ct if ctx.needs_input_grad[2] else None
        grad_y = None
        if ctx.needs_input_grad[1]:  # -w log-odds
            log_p, log_1mp = _bce_logs(p)
            grad_y = -(log_p - log_1mp) * w * ct
        return grad_p, grad_y, grad_w


class _BinaryCrossEntropyWithJvp(_BinaryCrossEntropy):
    """:class:`_BinaryCrossEntropy` with forward mode; torch.compile (which cannot trace a
    custom ``jvp``) uses the base class."""

    @staticmethod
    def jvp(ctx, p_t, y_t, w_t):
        """[JVP] through [GRAD-BCE]'s held denominator."""
        core.refuse_forward_over_forward("binary_cross_entropy")
        p, y, w, bad = ctx.saved_tensors
        out = torch.zeros_like(p * w)
        if p_t is not None:
            out = out + _bce_slope(p, y) * w * p_t
        if y_t is not None:
            log_p, log_1mp = _bce_logs(p)
            out = out - (log_p - log_1mp) * w * y_t
        if w_t is not None:
            out = out + _bce_per_weight(p, y, in_place=False) * w_t
        return out.masked_fill(bad, torch.nan), None
