"""Linear + cross-entropy for large vocabularies, in chunks (spec section 17).

The logits ``hidden @ weight.T`` of ``(rows, V)`` are never formed at once: rows are
processed ``chunk_size`` at a time. For ``"mean"`` and ``"sum"`` the forward pass also
computes the gradients, which the backward pass only scales (three matrix products per
chunk, as for the unfused loss); for ``"none"`` the backward pass recomputes each
chunk's logits with the per-row upstream gradient (four). When no gradient is needed
(``torch.no_grad()``, or neither ``hidden`` nor ``weight`` requires one), only the
losses are computed: one product per chunk and no gradient buffers.

Higher derivatives (spec section 18, [HVP-LCE]): under a torch.func transform or with a
forward-mode tangent the loss is computed by plain differentiable operations on the
whole ``(rows, V)`` logits; with ``create_graph=True`` the backward pass recomputes it
that way and differentiates it. Only the first-order path is chunked.
"""

from __future__ import annotations

import dataclasses

import torch

from wce_torch import _checks as check
from wce_torch import _core as core
from wce_torch._parallel import class_parallel_linear_cross_entropy


@core.autocast_matmul
def linear_cross_entropy(hidden, weight, target, *, class_weight=None, ignore_index=-100,
                         reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None,
                         chunk_size=None, process_group=None, class_process_group=None):
    r"""Cross-entropy of the logits ``hidden @ weight.T`` without forming them.

    ``hidden`` is ``(..., D)``, ``weight`` is ``(V, D)`` (``torch.nn.Linear(D, V).weight``,
    e.g. a language model's output layer), ``target`` holds class indices ``(...)``. The
    loss is [LCE-ELEM]: [CE-ELEM], [CE-SMOOTH], [CE-IGNORE] and [CE-MEAN] of ``z`` with
    ``class_weight`` as the class weights, plus [LCE-ZLOSS] ``z_loss * w[y_i] * lse_i**2``;
    ``softcap`` replaces the logits by ``softcap * tanh(a / softcap)`` [LCE-SOFTCAP].
    Gradients flow to ``hidden`` and ``weight`` [LCE-GRAD], not to ``class_weight``.

    ``chunk_size`` rows are processed at a time (default: about ``2**24 / V``). Half
    precision inputs are multiplied in float32. Without a gradient to compute (under
    ``torch.no_grad()``, or a frozen layer) one product a chunk is all it costs.
    ``process_group`` as in
    :func:`wce_torch.cross_entropy` [DP-PROCESS-GROUP]. Inside ``torch.autocast``,
    ``hidden`` and ``weight`` are cast to the autocast dtype (as the unfused
    ``F.linear`` would be) and the loss is float32. With ``class_process_group``,
    ``weight`` and ``class_weight`` hold this rank's rows of the vocabulary, ``hidden``
    is whole and gets its full gradient on every rank [CP-LINEAR].
    """
    hidden = check.floating(hidden, "hidden")
    weight = check.floating(weight, "weight")
    reduction = check.reduction(None, None, reduction)
    eps = check.label_smoothing(label_smoothing)
    ignore_index = check.ignore_index(ignore_index)
    check.linear_weight(weight, hidden)
    check.tensor(target, "target")
    check.class_indices(target, "linear_cross_entropy")
    check.target_shape(target, hidden.shape[:-1], "hidden's shape without the last axis")
    shards = (1 if class_process_group is None
              else torch.distributed.get_world_size(class_process_group))
    vocab = weight.shape[0] * shards  # the whole vocabulary [CP-LINEAR]
    class_weight = check.class_weight(class_weight, weight.shape[0], "class_weight")
    z_loss, softcap = check.z_loss(z_loss), check.softcap(softcap)
    chunk = check.chunk_size(chunk_size, vocab)
    check.class_target_range(target, vocab, ignore_index)
    if class_process_group is not None:  # [CP-LINEAR]
        return class_parallel_linear_cross_entropy(
            hidden, weight, target, class_weight, ignore_index, reduction, eps, z_loss,
            softcap, chunk, vocab, process_group, class_process_group)
    options = _Options(eps, z_loss, softcap, chunk)

    dtype = check.compute_dtype(torch.promote_types(hidden.dtype, weight.dtype))
    w = core.class_weights_or_ones(class_weight, vocab, dtype, hidden.device).detach()
    valid, y, w_y = core.class_terms(target.reshape(-1), w, vocab, ignore_index)
    h = hidden.reshape(-1, hidden.shape[-1])
    # Forward only (torch.no_grad, or a frozen layer and frozen inputs): one product a
    # chunk and no gradient buffers; the losses are the same numbers either way.
    forward_only = not (torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad))
    if core.higher_order(h, weight) and process_group is None:
        losses = _differentiable_rows(h, weight, y, valid, w_y, w, options)
        return core.reduce(losses, w_y, reduction, target.shape, None, valid).to(hidden.dtype)
    if reduction == "none":
        losses = (_run(h, weight, y, valid, w_y, w, None, options)[0] if forward_only
                  else _Rows.apply(h, weight, y, valid, w_y, w, options))
        return losses.reshape(target.shape).to(hidden.dtype)
    count = w_y.sum()
    if process_group is not None:
        count = core.all_reduced(count, process_group)
    scale = (torch.ones((), dtype=dtype, device=h.device) if reduction == "sum"
             else 1.0 / torch.where(count == 0, torch.nan, count))
    if forward_only:
        total = scale * _run(h, weight, y, valid, w_y, w, None, options)[0].sum()
    else:
        total, _, _ = _ScaledTotal.apply(h, weight, y, valid, w_y, w, scale, options)
    if process_group is not None:
        total = core.global_share(total, process_group)
    return total.to(hidden.dtype)


@dataclasses.dataclass(frozen=True)
class _Options:
    eps: float
    z_loss: float
    softcap: float | None
    chunk: int



def _chunk_terms(h, weight, y, valid, w_y, w, r, options, d_hidden=None, d_weight=None):
    """One chunk's per-row losses. With per-row upstream factors ``r``, also writes the
    chunk's gradient into ``d_hidden`` (its rows) and adds it to ``d_weight``.

    One ``(chunk, V)`` buffer (two with softcap) is updated in place from logits to
    shifted logits, to ``exp``, to the gradient.
    """
    vocab = weight.shape[0]
    z = h.to(w.dtype) @ weight.to(w.dtype).T
    t = None
    if options.softcap is not None:  # [LCE-SOFTCAP]: z = c tanh(a / c); keep tanh for later
        t = z.div_(options.softcap).tanh_()
        z = t * options.softcap
    m = z.amax(dim=-1, keepdim=True)
    shifted = z.sub_(m)
    picked = shifted.gather(1, y[:, None])[:, 0]
    weighted = shifted @ w if options.eps else None
    e = shifted.exp_()
    s = e.sum(dim=-1)
    log_s = s.log()
    losses = (1.0 - options.eps) * w_y * (log_s - picked)
    if options.eps:
        losses = losses + (options.eps / vocab) * (w.sum() * log_s - weighted)
    lse = m[:, 0] + log_s
    if options.z_loss:
        losses = losses + options.z_loss * w_y * lse ** 2  # [LCE-ZLOSS]
    losses = torch.where(valid, losses, 0.0)
    if r is None:
        return losses
    # [GRAD-CE] with the z-loss term 2 z_loss w[y] lse p, then the softcap's chain rule;
    # the coefficients of ignored rows are zero, so their rows of the gradient are too.
    c = torch.where(valid, r * (1.0 - options.eps) * w_y, 0.0)
    smooth = torch.where(valid, r * (options.eps / vocab), 0.0)
    zc = torch.where(valid, r * 2.0 * options.z_loss * w_y * lse, 0.0)
    grad = e.mul_(((c + smooth * w.sum() + zc) / s)[:, None])
    grad.scatter_add_(1, y[:, None], -c[:, None])
    if options.eps:
        grad.addr_(smooth, w, alpha=-1.0)
    if t is not None:
        grad.mul_(t.square_().neg_().add_(1.0))  # dz/da = 1 - tanh^2
    torch.mm(grad, weight.to(w.dtype), out=d_hidden)
    d_weight.addmm_(grad.T, h.to(w.dtype))
    return losses


def _differentiable_rows(h, weight, y, valid, w_y, w, options):
    """[LCE-ELEM] per row in plain operations on the whole logits, for higher derivatives
    [HVP-LCE] [JVP]: autograd differentiates it as often as asked."""
    z = h.to(w.dtype) @ weight.to(w.dtype).T
    if options.softcap is not None:  # [LCE-SOFTCAP]
        z = options.softcap * torch.tanh(z / options.softcap)
    lse = torch.logsumexp(z, dim=-1)
    lp = z - lse[:, None]
    losses = (1.0 - options.eps) * w_y * -lp.gather(1, y[:, None])[:, 0]
    if options.eps:
        losses = losses - (options.eps / weight.shape[0]) * (lp @ w)
    if options.z_loss:
        losses = losses + options.z_loss * w_y * lse ** 2  # [LCE-ZLOSS]
    return torch.where(valid, losses, 0.0)


def _differentiable_grads(ctx, ct, total):
    """The gradients of ``total(h, weight)`` times ``ct``, as a graph (``create_graph``)."""
    inputs = [t for t, needed in zip(ctx.h_weight, ctx.needs_input_grad[:2]) if needed]
    grads = iter(torch.autograd.grad(total, inputs, ct, create_graph=True, allow_unused=True))
    return [next(grads) if needed else None for needed in ctx.needs_input_grad[:2]]


def _run(h, weight, y, valid, w_y, w, r, options):
    """Losses over all chunks; with ``r``, also d hidden and d weight in ``w``'s dtype."""
    d_hidden = d_weight = None
    if r is not None:
        d_hidden = torch.empty(h.shape, dtype=w.dtype, device=h.device)
        d_weight = torch.zeros(weight.shape, dtype=w.dtype, device=h.device)
    losses = []
    for start in range(0, h.shape[0], options.chunk):
        rows = slice(start, start + options.chunk)
        losses.append(_chunk_terms(
            h[rows], weight, y[rows], valid[rows], w_y[rows], w,
            None if r is None else r[rows], options,
            None if r is None else d_hidden[rows], d_weight))
    losses = torch.cat(losses) if losses else torch.zeros(0, dtype=w.dtype, device=h.device)
    return losses, d_hidden, d_weight


class _ScaledTotal(torch.autograd.Function):
    """``scale * sum_i l_i``; its gradients are computed in the forward pass and returned
    with it (non-differentiable), so that ``setup_context`` can save them."""

    @staticmethod
    def forward(h, weight, y, valid, w_y, w, scale, options):
        r = scale.expand(y.shape)
        losses, d_hidden, d_weight = _run(h, weight, y, valid, w_y, w, r, options)
        return scale * losses.sum(), d_hidden.to(h.dtype), d_weight.to(weight.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        h, weight, y, valid, w_y, w, scale, options = inputs
        _, d_hidden, d_weight = output
        ctx.mark_non_differentiable(d_hidden, d_weight)
        ctx.set_materialize_grads(False)  # no zero-filled (V, D) for the gradients' slots
        # h and weight are kept (references, no copy) for a double backward [HVP-LCE].
        ctx.save_for_backward(d_hidden, d_weight, h, weight, y, valid, w_y, w, scale)
        ctx.options = options

    @staticmethod
    def backward(ctx, ct, _d_hidden_ct, _d_weight_ct):
        if ct is None:  # the total did not reach the output
            return None, None, None, None, None, None, None, None
        d_hidden, d_weight, h, weight, y, valid, w_y, w, scale = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient
            ctx.h_weight = (h, weight)
            total = scale * _differentiable_rows(h, weight, y, valid, w_y, w,
                                                 ctx.options).sum()
            return (*_differentiable_grads(ctx, ct, total), None, None, None, None, None, None)
        if not core.graph_is_kept():  # scale in place: no second (V, D) buffer at the peak
            d_hidden, d_weight = d_hidden.mul_(ct), d_weight.mul_(ct)
        else:
            d_hidden, d_weight = ct * d_hidden, ct * d_weight
        return d_hidden, d_weight, None, None, None, None, None, None


class _Rows(torch.autograd.Function):
    """Per-row losses (``"none"``); the backward pass recomputes the chunks' logits."""

    @staticmethod
    def forward(h, weight, y, valid, w_y, w, options):
        losses, _, _ = _run(h, weight, y, valid, w_y, w, None, options)
        return losses

    @staticmethod
    def setup_context(ctx, inputs, output):
        h, weight, y, valid, w_y, w, options = inputs
        ctx.save_for_backward(h, weight, y, valid, w_y, w)
        ctx.options = options

    @staticmethod
    def backward(ctx, ct):
        h, weight, y, valid, w_y, w = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient
            ctx.h_weight = (h, weight)
            losses = _differentiable_rows(h, weight, y, valid, w_y, w, ctx.options)
            return (*_differentiable_grads(ctx, ct, losses), None, None, None, None, None)
        _, d_hidden, d_weight = _run(h, weight, y, valid, w_y, w, ct.to(w.dtype),
                                     ctx.options)
        return d_hidden.to(h.dtype), d_weight.to(weight.dtype), None, None, None, None, None
