"""Class parallelism (spec section 19): the class axis split over a process group.

Rank ``r`` of the ``k`` ranks of ``class_process_group`` (in group-rank order) holds the
classes ``[r * Cl, (r + 1) * Cl)`` of ``C = k * Cl``: the logits' columns, or the
lm-head's rows, and the matching slice of the class weights. The result is the loss of
the whole, unsplit problem, the same on every rank of the group [CP-GLOBAL]. Only
per-row numbers cross ranks in the forward pass [CP-PROCESS-GROUP]:

* one all-reduce (MAX) of the row maxima ``m_i`` (a shift, not differentiated);
* one all-reduce (SUM) of the row statistics, sent as one flat tensor:
  ``s_i = sum_c exp(x_ic - m_i)``, the target's shifted logit and weight ``w[y_i]``
  (zero on every rank but the owner's), with label smoothing ``sum_c w_c (x_ic - m_i)``,
  and the global weight sum ``W``.

The backward pass of cross_entropy needs no communication. The linear cross-entropy
sends the target weights once, the two all-reduces above per chunk in the forward pass
and again in the backward pass (which recomputes each chunk's logits), and one
all-reduce of ``d hidden`` (rows x D): ``hidden`` is whole on every rank and gets its
full gradient there. Combined with ``process_group=`` (data parallel), the reduction is
that of [DP-PROCESS-GROUP] over the data group.

Mirror: wce_jax/_parallel.py.
"""

from __future__ import annotations

import dataclasses

import torch

from wce_torch import _checks as check
from wce_torch import _core as core


def class_parallel_cross_entropy(input, target, weight, ignore_index, reduction,
                                 label_smoothing, process_group, class_process_group):
    r"""[CP-GLOBAL] cross_entropy with the class axis (dim 1) split over
    ``class_process_group``: ``input`` holds this rank's ``Cl`` classes, ``weight`` their
    weights (shape ``(Cl,)``), ``target`` global class indices in ``[0, k Cl)``. The loss
    is that of [CE-ELEM] [CE-SMOOTH] with ``C = k Cl`` and ``W = sum_c w_c`` over all
    classes [CP-SMOOTH]; ignored elements and the reductions follow [CE-IGNORE]
    [CE-MEAN] [EDGE-ALL-IGNORED] [CP-REDUCE].
    """
    import torch.distributed as dist

    input = check.floating(input, "input")
    eps = check.label_smoothing(label_smoothing)
    ignore_index = check.ignore_index(ignore_index)
    axis, weight = check.class_index_arguments(
        input, target, weight, ignore_index, "cross_entropy with class_process_group",
        shards=dist.get_world_size(class_process_group))
    local, shape = input.shape[axis], check.without_axis(input.shape, axis)
    dtype = check.compute_dtype(input.dtype)
    w = core.class_weights_or_ones(weight, local, dtype, input.device)
    rows = Rows.of(target.reshape(-1), local, ignore_index, class_process_group)
    losses, w_y = _Elements.apply(core.rows(input), w, rows, eps, class_process_group)
    return core.reduce(losses, w_y, reduction, shape, process_group).to(input.dtype)


@dataclasses.dataclass
class Rows:
    """Where each element's target lives: ``valid`` (not ignored), ``here`` (valid and
    owned by this rank), ``local`` (its index on this rank, 0 where not here) and
    ``bad`` (valid but outside ``[0, C)``: NaN [TRACE-TARGET-RANGE])."""

    valid: torch.Tensor
    here: torch.Tensor
    local: torch.Tensor
    bad: torch.Tensor

    @classmethod
    def of(cls, target, local_classes, ignore_index, group):
        import torch.distributed as dist

        target = target.to(torch.int64)
        valid = target != ignore_index
        bad = valid & ~((target >= 0)
                        & (target < local_classes * dist.get_world_size(group)))
        local = target - dist.get_rank(group) * local_classes
        here = valid & (local >= 0) & (local < local_classes)
        return cls(valid, here, torch.where(here, local, 0), bad)

    def chunk(self, rows: slice) -> "Rows":
        return Rows(self.valid[rows], self.here[rows], self.local[rows], self.bad[rows])


def row_statistics(z, w, rows, eps, group, w_y=None):
    """The global row terms of the shifted log-softmax (spec section 0), from this rank's
    logits ``z`` (M, Cl), in two all-reduces [CP-PROCESS-GROUP]: ``m``, ``shifted = z - m``
    (local), ``log_s``, ``nll = -lp[i, y_i]``, ``w_y`` (NaN for a bad target), the
    smoothing sum (None without smoothing) and ``W``. A ``w_y`` known already (see
    :func:`target_weights`) is not sent again."""
    import torch.distributed as dist

    m = z.detach().amax(dim=-1) if z.shape[-1] else z.new_full(z.shape[:1], -torch.inf)
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    shifted = z - m[:, None]
    picked = shifted.gather(1, rows.local[:, None])[:, 0]
    stats = [torch.exp(shifted).sum(dim=-1), torch.where(rows.here, picked, 0.0)]
    if w_y is None:
        stats.append(torch.where(rows.here, w.index_select(0, rows.local), 0.0))
    if eps:
        stats.append(shifted @ w)
    stats = torch.stack(stats, dim=-1)
    flat = torch.cat([stats.reshape(-1), w.sum().reshape(1)])
    dist.all_reduce(flat, group=group)
    stats, total_w = flat[:-1].reshape(stats.shape), flat[-1]
    log_s = torch.log(stats[:, 0])
    if w_y is None:
        w_y = _target_weights(stats[:, 2], rows)
    smooth = stats[:, -1] if eps else None
    return m, shifted, log_s, log_s - stats[:, 1], w_y, smooth, total_w


def target_weights(w, rows, group):
    """``w[y_i]`` of every element (0 if ignored, NaN if bad) in one all-reduce."""
    import torch.distributed as dist

    owned = torch.where(rows.here, w.index_select(0, rows.local), 0.0)
    dist.all_reduce(owned, group=group)
    return _target_weights(owned, rows)


def _target_weights(owned, rows):
    return torch.where(rows.bad, torch.nan, torch.where(rows.valid, owned, 0.0))


def element_losses(log_s, nll, w_y, smooth, total_w, eps, num_classes):
    """[CE-ELEM] [CE-SMOOTH] with the global ``C`` and ``W`` [CP-SMOOTH]."""
    losses = (1.0 - eps) * w_y * nll
    if eps:
        losses = losses + (eps / num_classes) * (total_w * log_s - smooth)
    return losses


class _Elements(torch.autograd.Function):
    """Per-element losses and target weights ``w[y_i]`` (the mean's denominator)."""

    @staticmethod
    def forward(ctx, x, w, rows, eps, group):
        import torch.distributed as dist

        num_classes = x.shape[-1] * dist.get_world_size(group)
        _, shifted, log_s, nll, w_y, smooth, total_w = row_statistics(
            x.to(w.dtype), w, rows, eps, group)
        losses = element_losses(log_s, nll, w_y, smooth, total_w, eps, num_classes)
        ctx.rows, ctx.eps, ctx.num_classes, ctx.x_dtype = rows, eps, num_classes, x.dtype
        ctx.save_for_backward(shifted, w, log_s, nll, w_y, total_w)
        return torch.where(rows.valid, losses, 0.0), w_y

    @staticmethod
    def backward(ctx, ct, ct_w_y):
        """[GRAD-CE] on this rank's columns, with no communication [CP-GLOBAL]:
        ``ct_i (1-eps) w[y_i] (p_i - e_{y_i}) + ct_i (eps/C) (W p_i - w)``; the class
        weights' gradient is this rank's slice of the global one."""
        shifted, w, log_s, nll, w_y, total_w = ctx.saved_tensors
        rows, eps = ctx.rows, ctx.eps
        p = torch.exp(shifted - log_s[:, None])
        coef = ct * (1.0 - eps) * w_y  # NaN rows for a zero-weight mean
        onehot = torch.zeros_like(p, dtype=torch.bool)
        onehot.scatter_(1, rows.local[:, None], rows.here[:, None])
        grad = coef[:, None] * p - torch.where(onehot, coef[:, None], 0.0)
        ct_w = torch.zeros_like(w)
        if eps:
            smooth_ct = ct * (eps / ctx.num_classes)
            grad = grad + smooth_ct[:, None] * (total_w * p - w)
            minus_lp = torch.where(rows.valid[:, None], log_s[:, None] - shifted, 0.0)
            ct_w = (torch.where(rows.valid, smooth_ct, 0.0)[:, None] * minus_lp).sum(dim=0)
        grad_x = torch.where(rows.valid[:, None], grad, 0.0).to(ctx.x_dtype)
        # d w[y_i]: the loss's (1 - eps) nll_i and the mean's denominator, at the owner only.
        target_ct = ct * (1.0 - eps) * nll + (0.0 if ct_w_y is None else ct_w_y)
        ct_w = ct_w.index_add(0, rows.local, torch.where(rows.here, target_ct, 0.0))
        return grad_x, ct_w, None, None, None


# ----------------------------------------------------------------------------------
# Linear cross-entropy with the lm-head's rows split over the class group.


def class_parallel_linear_cross_entropy(hidden, weight, target, class_weight, ignore_index,
                                        reduction, eps, z_loss, softcap, chunk, vocab,
                                        process_group, class_process_group):
    r"""[CP-LINEAR] linear_cross_entropy with ``weight``'s rows (``Vl`` of the ``V = k Vl``
    classes) and ``class_weight`` split over ``class_process_group``; ``hidden`` is whole
    on every rank and gets its full gradient there (one all-reduce of ``d hidden``).

    The loss is [LCE-ELEM] of the whole vocabulary: the z-loss uses the global
    log-partition ``lse_i = m_i + log s_i`` [LCE-ZLOSS], and the softcap is applied to
    this rank's logits before their maxima and sums cross ranks [LCE-SOFTCAP]
    [CP-LINEAR]. Rows are processed ``chunk`` at a time; the backward pass recomputes
    each chunk. The arguments come checked from :func:`wce_torch.linear_cross_entropy`
    (``vocab`` is the whole vocabulary's size).
    """
    local = weight.shape[0]
    options = _LinearOptions(eps, z_loss, softcap, chunk, vocab, class_process_group)

    dtype = check.compute_dtype(torch.promote_types(hidden.dtype, weight.dtype))
    w = core.class_weights_or_ones(class_weight, local, dtype, hidden.device).detach()
    rows = Rows.of(target.reshape(-1), local, ignore_index, class_process_group)
    w_y = target_weights(w, rows, class_process_group)
    losses = _LinearRows.apply(hidden.reshape(-1, hidden.shape[-1]), weight, rows, w_y, w,
                               options)
    return core.reduce(losses, w_y, reduction, target.shape,
                       process_group).to(hidden.dtype)


@dataclasses.dataclass(frozen=True)
class _LinearOptions:
    eps: float
    z_loss: float
    softcap: float | None
    chunk: int
    vocab: int
    group: object


def _linear_chunk(h, weight, rows, w_y, w, r, options):
    """One chunk of rows: losses, and for per-row upstream factors ``r`` (not None) this
    rank's share of ``d hidden`` and its ``d weight``."""
    a = (h.to(w.dtype) @ weight.to(w.dtype).T)
    z = a if options.softcap is None else options.softcap * torch.tanh(a / options.softcap)
    m, shifted, log_s, nll, _, smooth, total_w = row_statistics(
        z, w, rows, options.eps, options.group, w_y=w_y)
    losses = element_losses(log_s, nll, w_y, smooth, total_w, options.eps, options.vocab)
    lse = m + log_s
    if options.z_loss:
        losses = losses + options.z_loss * w_y * lse ** 2  # [LCE-ZLOSS], global lse
    losses = torch.where(rows.valid, losses, 0.0)
    if r is None:
        return losses, None, None
    # [GRAD-CE] with the z-loss term 2 z_loss w[y] lse p, then the softcap's chain rule.
    c = r * (1.0 - options.eps) * w_y
    smooth_ct = r * (options.eps / options.vocab)
    zc = r * 2.0 * options.z_loss * w_y * lse
    grad = (c + smooth_ct * total_w + zc)[:, None] * torch.exp(shifted - log_s[:, None])
    onehot = torch.zeros_like(grad, dtype=torch.bool)
    onehot.scatter_(1, rows.local[:, None], rows.here[:, None])
    grad = grad - torch.where(onehot, c[:, None], 0.0)
    if options.eps:
        grad = grad - smooth_ct[:, None] * w
    grad = torch.where(rows.valid[:, None], grad, 0.0)
    if options.softcap is not None:
        grad = grad * (1.0 - (z / options.softcap) ** 2)
    return losses, grad @ weight.to(w.dtype), grad.T @ h.to(w.dtype)


class _LinearRows(torch.autograd.Function):
    """Per-row losses; the backward recomputes the chunks' logits for the per-row
    upstream gradient and sums ``d hidden`` over the class group."""

    @staticmethod
    def forward(ctx, h, weight, rows, w_y, w, options):
        ctx.rows, ctx.options = rows, options
        ctx.save_for_backward(h, weight, w_y, w)
        return torch.cat([_linear_chunk(h[s], weight, rows.chunk(s), w_y[s], w, None,
                                        options)[0] for s in _slices(h.shape[0], options)]
                         or [w_y.new_zeros(0)])

    @staticmethod
    def backward(ctx, ct):
        import torch.distributed as dist

        h, weight, w_y, w = ctx.saved_tensors
        rows, options = ctx.rows, ctx.options
        d_hidden = torch.zeros(h.shape, dtype=w.dtype, device=h.device)
        d_weight = torch.zeros(weight.shape, dtype=w.dtype, device=h.device)
        for s in _slices(h.shape[0], options):
            _, d_h, d_w = _linear_chunk(h[s], weight, rows.chunk(s), w_y[s], w,
                                        ct[s].to(w.dtype), options)
            d_hidden[s] = d_h
            d_weight += d_w
        dist.all_reduce(d_hidden, group=options.group)
        return d_hidden.to(h.dtype), d_weight.to(weight.dtype), None, None, None, None


def _slices(n, options):
    return [slice(start, min(start + options.chunk, n)) for start in range(0, n, options.chunk)]
