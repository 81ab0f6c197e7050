"""Focal losses (spec section 14)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wce_torch import _checks as check
from wce_torch import _core as core


@core.autocast_float32
def sigmoid_focal_loss(input, target, alpha=0.25, gamma=2.0, reduction="none", *,
                       process_group=None):
    r"""RetinaNet's focal loss, with ``torchvision.ops.sigmoid_focal_loss``'s semantics.

    [FOCAL-SIGMOID]::

        l = alpha_t * (1 - p_t)^gamma * ce,   1 - p_t = y sigmoid(-x) + (1 - y) sigmoid(x)

    with ``ce`` the binary cross-entropy of the logits and
    ``alpha_t = alpha y + (1 - alpha)(1 - y)`` (1 when ``alpha`` is None or negative).
    ``reduction`` defaults to ``"none"`` as in torchvision; ``"mean"`` divides by the
    number of elements. Saturated logits have a zero gradient for any ``gamma``
    [FOCAL-GRAD], where torchvision's is NaN for ``gamma < 1``.
    """
    input = check.floating(input, "input")
    reduction = check.reduction(None, None, reduction)
    gamma = check.gamma(gamma)
    target = check.binary_target(target, input.shape)
    dtype = check.compute_dtype(input.dtype)
    x, y = input.to(dtype), target.to(dtype)
    alpha = alpha if alpha is not None and alpha >= 0 else None
    if gamma >= 1 and not (core.higher_order(x, y) or y.requires_grad):
        losses = _SigmoidFocal.apply(x, y, alpha, gamma)
    else:  # composed: transforms, forward mode, a target's gradient, [FOCAL-GRAD] at gamma < 1
        ce = (1.0 - y) * x - F.logsigmoid(x)  # [BCEL-ELEM] with q = 1
        u = y * torch.sigmoid(-x) + (1.0 - y) * torch.sigmoid(x)  # 1 - p_t, no cancellation
        losses = _modulating(u, gamma) * ce
        if alpha is not None:
            losses = (alpha * y + (1.0 - alpha) * (1.0 - y)) * losses
    return core.reduce(losses, None, reduction, input.shape, process_group).to(input.dtype)


class _SigmoidFocal(torch.autograd.Function):
    """[FOCAL-SIGMOID] with its gradient fused, for ``gamma >= 1`` (where ``u^(gamma-1)``
    is finite) and the logits' gradient only, first order or double backward.

    With ``s = sigmoid(x)``, ``n = sigmoid(-x)``, ``u = lerp(s, n, y)`` (exactly ``n`` or
    ``s`` for 0/1 targets) and ``ce`` of [BCEL-ELEM], the forward pass keeps ``u`` and
    ``ce`` for the backward pass, which forms [FOCAL-GRAD]::

        dl/dx = alpha_t (gamma u^(gamma-1) (1 - 2y) s n ce + u^gamma ((1 - y) s - y n))

    in place on the buffers of ``s`` and ``n``.
    """

    @staticmethod
    def forward(ctx, x, y, alpha, gamma):
        u = torch.sigmoid(x)
        ce = torch.neg(x).sigmoid_()
        torch.lerp(u, ce, y, out=u)  # 1 - p_t
        ls = F.logsigmoid(x)
        torch.sub(torch.ones((), dtype=y.dtype, device=y.device), y, out=ce)
        ce.mul_(x).sub_(ls)  # [BCEL-ELEM] with q = 1
        losses = torch.pow(u, gamma).mul_(ce)
        if alpha is not None:
            losses.mul_(_alpha_t(y, alpha, out=ls))
        ctx.save_for_backward(x, y, u, ce)
        ctx.alpha, ctx.gamma = alpha, gamma
        return losses

    @staticmethod
    def backward(ctx, ct):
        x, y, u, ce = ctx.saved_tensors
        alpha, gamma = ctx.alpha, ctx.gamma
        if torch.is_grad_enabled():  # create_graph: out of place, differentiable in x
            s, n = torch.sigmoid(x), torch.sigmoid(-x)
            u = y * n + (1.0 - y) * s
            ce = (1.0 - y) * x - F.logsigmoid(x)
            grad = (gamma * _modulating(u, gamma - 1.0) * (1.0 - 2.0 * y) * s * n * ce
                    + _modulating(u, gamma) * ((1.0 - y) * s - y * n))
            if alpha is not None:
                grad = (alpha * y + (1.0 - alpha) * (1.0 - y)) * grad
            return grad * ct, None, None, None
        s = torch.sigmoid(x)
        n = torch.neg(x).sigmoid_()
        ds = torch.mul(s, n)  # s n
        torch.lerp(s, n.neg_(), y, out=s)  # (1 - y) s - y n, the derivative of ce
        modulating = torch.pow(u, gamma - 1.0, out=n)
        ds.mul_(modulating).mul_(ce).addcmul_(ds, y, value=-2.0)  # (1 - 2y) s n ce u^(g-1)
        grad = s.mul_(modulating).mul_(u).add_(ds, alpha=gamma)
        if alpha is not None:
            grad.mul_(_alpha_t(y, alpha, out=n))
        return grad.mul_(ct), None, None, None


def _alpha_t(y, alpha, out):
    """``alpha y + (1 - alpha)(1 - y)`` of [FOCAL-SIGMOID], written to ``out``."""
    return torch.mul(y, 2.0 * alpha - 1.0, out=out).add_(1.0 - alpha)


@core.autocast_float32
def softmax_focal_loss(input, target, alpha=None, gamma=2.0, ignore_index=-100,
                       reduction="mean", *, process_group=None):
    r"""Multi-class focal loss with per-class weights, reduced like the weighted
    cross-entropy.

    [FOCAL-SOFTMAX]: ``l_i = alpha[y_i] * (1 - p_i[y_i])^gamma * -log p_i[y_i]``, ignored
    elements exactly 0, ``"mean"`` divided by ``sum_{i valid} alpha[y_i]`` [CE-MEAN].
    ``gamma=0`` is :func:`cross_entropy` with ``weight=alpha`` [FOCAL-GAMMA0]. ``alpha``
    has shape ``(C,)``; targets, ``ignore_index`` and errors as in :func:`cross_entropy`.
    """
    input = check.floating(input, "input")
    reduction = check.reduction(None, None, reduction)
    gamma = check.gamma(gamma)
    ignore_index = check.ignore_index(ignore_index)
    axis, alpha = check.class_index_arguments(input, target, alpha, ignore_index,
                                              "softmax_focal_loss", "alpha")
    num_classes, shape = input.shape[axis], check.without_axis(input.shape, axis)
    dtype = check.compute_dtype(input.dtype)
    w = core.class_weights_or_ones(alpha, num_classes, dtype, input.device)
    valid, y, w_y = core.class_terms(target.reshape(-1), w, num_classes, ignore_index)
    x = core.rows(input).to(dtype)
    if core.higher_order(x, w_y) or w_y.requires_grad:  # composed, for autograd's transforms
        x = torch.where(valid[:, None], x, 0.0)  # ignored: no influence
        lp_y = torch.log_softmax(x, dim=-1).gather(1, y[:, None])[:, 0]
        losses = _focal_of(lp_y, valid, w_y, gamma)
    elif torch.is_grad_enabled() and x.requires_grad:
        losses = _SoftmaxFocal.apply(x, y, valid, w_y, gamma)
    else:  # the loss alone: log_softmax by blocks of rows, no logits-sized buffer (at
        # 2048 x 32000, 0.23x the time of one log_softmax over all rows)
        lp_y = torch.cat([torch.log_softmax(x[s], dim=-1).gather(1, y[s, None])[:, 0]
                          for s in core.row_blocks(x)]) if x.shape[0] else x[:, 0]
        losses = _focal_of(lp_y, valid, w_y, gamma)
    return core.reduce(losses, w_y, reduction, shape, process_group, valid).to(input.dtype)


class _SoftmaxFocal(torch.autograd.Function):
    """[FOCAL-SOFTMAX] on ``(M, C)`` rows with its gradient fused, for the logits'
    gradient only (first order, or double backward).

    The loss depends on the logits through ``lp_y = log_softmax(x)[y]`` alone, so the
    gradient of a row is that of log-softmax at the target scaled by one number::

        grad_i = a_i (p_i - e_{y_i}),
        a_i = ct_i alpha_{y_i} (u^gamma - gamma u^(gamma-1) p_y lp_y),  u = 1 - p_y

    (``u^(gamma-1)`` is 0 where ``u = 0``, [FOCAL-GRAD]). The forward pass keeps the
    probabilities, one logits-sized buffer, and the backward pass scales them into the
    gradient in place. ``lp_y = (x_y - m) - log s`` as in log-softmax, with ``m`` the row
    maximum and ``1 / s`` the largest probability (the exponential of the maximum's
    shifted logit is exactly 1): no log-probabilities are
    written, and the backward pass needs no exponential. Ignored rows have ``a_i = 0``;
    their probabilities are zeroed if not finite [CE-IGNORE-NONFINITE].
    """

    @staticmethod
    def forward(ctx, x, y, valid, w_y, gamma):
        p = torch.softmax(x, dim=-1)
        m = x.amax(dim=-1, keepdim=True)
        log_s = -torch.log(p.amax(dim=-1, keepdim=True))
        lp_y = ((x.gather(1, y[:, None]) - m) - log_s)[:, 0]
        poisoned = ~valid & torch.isnan(p[:, 0])
        if poisoned.any():
            p[poisoned] = 0.0
        ctx.save_for_backward(x, y, valid, w_y, p, lp_y)
        ctx.gamma = gamma
        return _focal_of(lp_y, valid, w_y, gamma)

    @staticmethod
    def backward(ctx, ct):
        x, y, valid, w_y, p, lp_y = ctx.saved_tensors
        gamma = ctx.gamma
        if torch.is_grad_enabled():  # create_graph: out of place, differentiable in x
            lp = torch.log_softmax(torch.where(valid[:, None], x, 0.0), dim=-1)
            p, lp_y = lp.exp(), lp.gather(1, y[:, None])[:, 0]
        u = -torch.expm1(lp_y)  # 1 - p_y without cancellation
        slope = _modulating(u, gamma)
        if gamma:
            slope = slope - gamma * _modulating(u, gamma - 1.0) * lp_y.exp() * lp_y
        a = torch.where(valid, ct * w_y * slope, 0.0)
        if torch.is_grad_enabled():
            grad = a[:, None] * p - torch.zeros_like(p).scatter(1, y[:, None], a[:, None])
            return grad, None, None, None, None
        grad = p.clone() if core.graph_is_kept() else p
        grad.mul_(a[:, None]).scatter_add_(1, y[:, None], -a[:, None])
        return grad, None, None, None, None


def _focal_of(lp_y, valid, w_y, gamma):
    """[FOCAL-SOFTMAX] from ``lp_y = log p_y``: ``w_y u^gamma (-lp_y)``, 0 where not valid."""
    u = -torch.expm1(lp_y)  # 1 - p_y without cancellation
    return torch.where(valid, w_y * _modulating(u, gamma) * -lp_y, 0.0)


def _modulating(u, gamma):
    """``u^gamma``, with ``0^0 = 1`` and a zero derivative at ``u = 0`` [FOCAL-GRAD]:
    where the logits saturate, the derivative of ``u^gamma`` for ``gamma < 1`` is
    infinite but the loss's gradient tends to 0."""
    if gamma == 0:
        return torch.ones_like(u)
    return torch.where(u > 0, torch.where(u > 0, u, 1.0) ** gamma, 0.0)
