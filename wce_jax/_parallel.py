"""Class parallelism (spec section 19): the class axis split over a named mesh axis.

Inside ``shard_map`` (or a named ``vmap``), device ``r`` of the ``k`` devices of
``class_axis_name`` holds the classes ``[r * Cl, (r + 1) * Cl)`` of ``C = k * Cl``: the
logits' columns, or the lm-head's rows, and the matching slice of the class weights.
The result is the loss of the whole, unsplit problem, the same on every class shard
[CP-GLOBAL]. Only per-row numbers cross devices in the forward pass [CP-AXIS]:

* one ``pmax`` of the row maxima ``m_i`` (a shift, not differentiated);
* one ``psum`` of the row statistics, sent as one tuple: ``s_i = sum_c exp(x_ic - m_i)``,
  the target's shifted logit ``x_{i,y_i} - m_i`` and weight ``w[y_i]`` (zero on every
  shard but the owner's), with label smoothing ``sum_c w_c (x_ic - m_i)``, and the
  global weight sum ``W = sum_c w_c`` (one scalar).

So a class-index cross-entropy costs 2 all-reduces of O(rows) numbers over the class
axis, plus those of the data-parallel reduction over ``axis_name`` [DP-GLOBAL]. The
backward pass of cross_entropy needs none: every shard's slice of
``p - onehot`` follows from its own logits and the row statistics. The linear
cross-entropy adds one ``psum`` of ``d hidden`` (rows x D), since every class shard
holds ``hidden`` whole and contributes to its gradient.

Mirror: wce_torch/_parallel.py.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from wce_jax import _checks as check
from wce_jax import _core as core


def class_parallel_cross_entropy(logits, target, weight, ignore_index, reduction,
                                 label_smoothing, axis, axis_name, class_axis_name):
    r"""[CP-GLOBAL] cross_entropy with the class axis split over ``class_axis_name``.

    ``logits`` holds this shard's ``Cl`` classes, ``weight`` their weights (shape
    ``(Cl,)``), ``target`` global class indices in ``[0, k Cl)``. With ``lp`` the global
    log-softmax, the loss is that of [CE-ELEM] [CE-SMOOTH] with ``C = k Cl`` and
    ``W = sum_c w_c`` over all classes [CP-SMOOTH]; ignored elements and the reductions
    follow [CE-IGNORE] [CE-MEAN] [EDGE-ALL-IGNORED] [CP-REDUCE].
    """
    logits = check.floating(logits, "logits")
    reduction = check.reduction(reduction)
    eps = check.label_smoothing(label_smoothing)
    ignore_index = check.ignore_index(ignore_index)
    axis, target, weight = check.class_index_arguments(
        logits, target, weight, ignore_index, axis, "cross_entropy with class_axis_name",
        "logits", shards=jax.lax.axis_size(class_axis_name))
    return _cross_entropy(logits, target, weight, ignore_index=ignore_index, eps=eps,
                          reduction=reduction, axis=axis, axis_name=axis_name,
                          class_axis_name=class_axis_name)


@functools.partial(jax.jit, static_argnames=("ignore_index", "eps", "reduction", "axis",
                                             "axis_name", "class_axis_name"))
def _cross_entropy(logits, target, weight, *, ignore_index, eps, reduction, axis,
                   axis_name, class_axis_name):
    dtype = check.compute_dtype(logits.dtype)
    x = jnp.moveaxis(logits, axis, -1).astype(dtype)
    w = core.class_weights_or_ones(weight, x.shape[-1], dtype)
    (w,) = core.varying_like(x, w)
    rows = _Rows.of(target, x.shape[-1], ignore_index, class_axis_name)
    losses, w_y = _elements(x, w, rows, eps, class_axis_name)
    return core.reduce(losses, w_y, reduction, axis_name).astype(logits.dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _Rows:
    """Where each element's target lives: ``valid`` (not ignored), ``here`` (valid and
    owned by this shard), ``local`` (its index in this shard, 0 where not here) and
    ``bad`` (valid but outside ``[0, C)``: NaN [TRACE-TARGET-RANGE])."""

    valid: jax.Array
    here: jax.Array
    local: jax.Array
    bad: jax.Array

    @classmethod
    def of(cls, target, local_classes, ignore_index, class_axis_name):
        target = target.astype(jax.dtypes.canonicalize_dtype(jnp.int64))
        shards = jax.lax.axis_size(class_axis_name)
        valid = target != ignore_index
        bad = valid & ~((target >= 0) & (target < local_classes * shards))
        local = target - jax.lax.axis_index(class_axis_name) * local_classes
        here = valid & (local >= 0) & (local < local_classes)
        return cls(valid, here, jnp.where(here, local, 0).astype(jnp.int32), bad)


def row_statistics(z, w, rows, eps, class_axis_name, w_y=None):
    """The global row terms of the shifted log-softmax (spec section 0), from this
    shard's logits ``z`` (class axis last), in two all-reduces [CP-AXIS].

    Returns ``m``, ``shifted = z - m`` (local), ``log_s``, ``nll = -lp[i, y_i]``, ``w_y``
    (NaN for a bad target), the smoothing sum ``sum_c w_c (z_c - m)`` (None without
    smoothing) and ``W``. A ``w_y`` known already (see :func:`target_weights`) is not
    sent again.
    """
    m = jax.lax.pmax(jnp.max(z, axis=-1), class_axis_name)
    shifted = z - m[..., None]
    picked = jnp.take_along_axis(shifted, rows.local[..., None], axis=-1)[..., 0]
    stats = [jnp.sum(jnp.exp(shifted), axis=-1), jnp.where(rows.here, picked, 0.0)]
    if w_y is None:
        stats.append(jnp.where(rows.here, w[rows.local], 0.0))
    if eps:
        stats.append(shifted @ w)
    stats, total_w = jax.lax.psum((jnp.stack(stats, axis=-1), jnp.sum(w)), class_axis_name)
    log_s = jnp.log(stats[..., 0])
    if w_y is None:
        w_y = _target_weights(stats[..., 2], rows)
    smooth = stats[..., -1] if eps else None
    return m, shifted, log_s, log_s - stats[..., 1], w_y, smooth, total_w


def target_weights(w, rows, class_axis_name):
    """``w[y_i]`` of every element (0 if ignored, NaN if bad) in one all-reduce."""
    return _target_weights(jax.lax.psum(jnp.where(rows.here, w[rows.local], 0.0),
                                        class_axis_name), rows)


def _target_weights(owned, rows):
    return jnp.where(rows.bad, jnp.nan, jnp.where(rows.valid, owned, 0.0))


def element_losses(log_s, nll, w_y, smooth, total_w, eps, num_classes):
    """[CE-ELEM] [CE-SMOOTH] with the global ``C`` and ``W`` [CP-SMOOTH]."""
    losses = (1.0 - eps) * w_y * nll
    if eps:
        losses = losses + (eps / num_classes) * (total_w * log_s - smooth)
    return losses


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _elements(x, w, rows, eps, class_axis_name):
    return _elements_fwd(x, w, rows, eps, class_axis_name)[0]


def _elements_fwd(x, w, rows, eps, class_axis_name):
    """Per-element losses and target weights ``w[y_i]`` (the mean's denominator)."""
    num_classes = x.shape[-1] * jax.lax.axis_size(class_axis_name)
    _, shifted, log_s, nll, w_y, smooth, total_w = row_statistics(x, w, rows, eps,
                                                                  class_axis_name)
    losses = element_losses(log_s, nll, w_y, smooth, total_w, eps, num_classes)
    losses = jnp.where(rows.valid, losses, 0.0)
    return (losses, w_y), (shifted, w, rows, log_s, nll, w_y, total_w)


def _elements_bwd(eps, class_axis_name, residuals, cts):
    """[GRAD-CE] on this shard's columns, with no communication [CP-GLOBAL]:
    ``ct_i (1-eps) w[y_i] (p_i - e_{y_i}) + ct_i (eps/C) (W p_i - w)``; the class weights'
    cotangent is this shard's slice of the global one."""
    shifted, w, rows, log_s, nll, w_y, total_w = residuals
    ct, ct_w_y = cts
    num_classes = shifted.shape[-1] * jax.lax.axis_size(class_axis_name)
    p = jnp.exp(shifted - log_s[..., None])
    coef = ct * (1.0 - eps) * w_y  # NaN rows for a zero-weight mean [EDGE-ZERO-WEIGHT-SUM]
    onehot = (jnp.arange(shifted.shape[-1]) == rows.local[..., None]) & rows.here[..., None]
    grad = coef[..., None] * p - jnp.where(onehot, coef[..., None], 0.0)
    ct_w = jnp.zeros_like(w)
    if eps:
        smooth_ct = ct * (eps / num_classes)
        grad = grad + smooth_ct[..., None] * (total_w * p - w)
        minus_lp = jnp.where(rows.valid[..., None], log_s[..., None] - shifted, 0.0)
        ct_w = jnp.sum(jnp.where(rows.valid, smooth_ct, 0.0)[..., None] * minus_lp,
                       axis=tuple(range(shifted.ndim - 1)))
    grad_x = jnp.where(rows.valid[..., None], grad, 0.0)
    # d w[y_i]: the loss's (1 - eps) nll_i and the mean's denominator, at the owner only.
    target_ct = jnp.where(rows.here, ct * (1.0 - eps) * nll + ct_w_y, 0.0)
    ct_w = ct_w + jnp.zeros_like(w).at[rows.local.ravel()].add(target_ct.ravel())
    return grad_x, ct_w, None


_elements.defvjp(_elements_fwd, _elements_bwd)


# ----------------------------------------------------------------------------------
# Linear cross-entropy with the lm-head's rows split over the class axis.


def class_parallel_linear_cross_entropy(hidden, weight, target, class_weight, ignore_index,
                                        reduction, eps, z_loss, softcap, chunk, axis_name,
                                        class_axis_name):
    r"""[CP-LINEAR] linear_cross_entropy with ``weight``'s rows (``Vl`` of the ``V = k Vl``
    classes) and ``class_weight`` split over ``class_axis_name``; ``hidden`` is whole on
    every class shard and gets its full gradient (one ``psum`` of ``d hidden``).

    The loss is [LCE-ELEM] of the whole vocabulary: the z-loss uses the global
    log-partition ``lse_i = m_i + log s_i`` [LCE-ZLOSS], and the softcap is applied to
    this shard's logits before their maxima and sums cross devices [LCE-SOFTCAP]
    [CP-LINEAR]. Rows are processed ``chunk`` at a time. The arguments come checked from
    :func:`wce_jax.linear_cross_entropy`.
    """
    options = _LinearOptions(eps, z_loss, softcap, chunk, ignore_index, class_axis_name)
    return _linear_cross_entropy(hidden, weight, target, class_weight, options=options,
                                 reduction=reduction, axis_name=axis_name)


@dataclasses.dataclass(frozen=True)
class _LinearOptions:
    eps: float
    z_loss: float
    softcap: float | None
    chunk: int
    ignore_index: int
    class_axis_name: str


@functools.partial(jax.jit, static_argnames=("options", "reduction", "axis_name"))
def _linear_cross_entropy(hidden, weight, target, class_weight, *, options, reduction,
                          axis_name):
    dtype = check.compute_dtype(jnp.result_type(hidden.dtype, weight.dtype))
    cax = options.class_axis_name
    w = jax.lax.stop_gradient(core.class_weights_or_ones(class_weight, weight.shape[0],
                                                         dtype))
    rows = _Rows.of(target.reshape(-1), weight.shape[0], options.ignore_index, cax)
    w_y = target_weights(w, rows, cax)
    h = hidden.reshape(-1, hidden.shape[-1])
    weight, w = core.varying_like(h, weight, w)
    if reduction == "none":
        losses = _linear_rows(h, weight, rows, w_y, w, options)
        return losses.reshape(target.shape).astype(hidden.dtype)
    count = core.all_reduced(jnp.sum(w_y), axis_name)
    scale = (jnp.ones((), dtype) if reduction == "sum"
             else 1.0 / jnp.where(count == 0, jnp.nan, count))
    total = _linear_total(h, weight, rows, w_y, w, scale, options)
    return core.all_reduced(total, axis_name).astype(hidden.dtype)


def _linear_chunk(h, weight, rows, w_y, w, r, options, with_grad):
    """One chunk of rows: losses, and with ``with_grad`` this shard's share of
    ``d hidden`` and its ``d weight`` for the per-row upstream factors ``r``."""
    dtype = w.dtype
    a = jax.lax.dot_general(h, weight, (((1,), (1,)), ((), ())), preferred_element_type=dtype)
    z = a if options.softcap is None else options.softcap * jnp.tanh(a / options.softcap)
    m, shifted, log_s, nll, _, smooth, total_w = row_statistics(
        z, w, rows, options.eps, options.class_axis_name, w_y=w_y)
    vocab = z.shape[-1] * jax.lax.axis_size(options.class_axis_name)
    losses = element_losses(log_s, nll, w_y, smooth, total_w, options.eps, vocab)
    lse = m + log_s
    if options.z_loss:
        losses = losses + options.z_loss * w_y * lse ** 2  # [LCE-ZLOSS], global lse
    losses = jnp.where(rows.valid, losses, 0.0)
    if not with_grad:
        return losses
    # [GRAD-CE] with the z-loss term 2 z_loss w[y] lse p, then the softcap's chain rule.
    c = r * (1.0 - options.eps) * w_y
    smooth_ct = r * (options.eps / vocab)
    zc = r * 2.0 * options.z_loss * w_y * lse
    grad = (c + smooth_ct * total_w + zc)[:, None] * jnp.exp(shifted - log_s[:, None])
    onehot = (jnp.arange(z.shape[-1]) == rows.local[:, None]) & rows.here[:, None]
    grad = grad - jnp.where(onehot, c[:, None], 0.0)
    if options.eps:
        grad = grad - smooth_ct[:, None] * w
    grad = jnp.where(rows.valid[:, None], grad, 0.0)
    if options.softcap is not None:
        grad = grad * (1.0 - (z / options.softcap) ** 2)
    d_hidden = jax.lax.dot_general(grad, weight, (((1,), (0,)), ((), ())),
                                   preferred_element_type=dtype)
    d_weight = jax.lax.dot_general(grad, h, (((0,), (0,)), ((), ())),
                                   preferred_element_type=dtype)
    return losses, d_hidden, d_weight


def _linear_chunks(options, n, *arrays):
    """Row arrays (and _Rows) padded to whole chunks (padding rows are ignored: not
    valid, not here) and stacked chunk-wise."""
    padded = -(-n // options.chunk) * options.chunk

    def stack(a):
        a = jnp.pad(a, [(0, padded - n)] + [(0, 0)] * (a.ndim - 1))
        return a.reshape((padded // options.chunk, options.chunk) + a.shape[1:])

    return jax.tree_util.tree_map(stack, arrays)


def _linear_gradients(h, weight, rows, w_y, w, r, options):
    """Losses, the full ``d hidden`` (summed over the class shards) and this shard's
    ``d weight``, for per-row factors ``r``."""
    n = h.shape[0]
    xs = _linear_chunks(options, n, h, rows, w_y, r)

    def body(d_weight, chunk):
        h_c, rows_c, w_y_c, r_c = chunk
        losses, d_h, d_w = _linear_chunk(h_c, weight, rows_c, w_y_c, w, r_c, options,
                                         with_grad=True)
        return d_weight + d_w, (losses, d_h)

    (zeros,) = core.varying_like(weight, jnp.zeros(weight.shape, w.dtype))
    d_weight, (losses, d_hidden) = jax.lax.scan(body, zeros, xs)
    d_hidden = jax.lax.psum(d_hidden.reshape(-1, h.shape[1])[:n], options.class_axis_name)
    return (losses.reshape(-1)[:n], d_hidden.astype(h.dtype), d_weight.astype(weight.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _linear_total(h, weight, rows, w_y, w, scale, options):
    return _linear_total_fwd(h, weight, rows, w_y, w, scale, options)[0]


def _linear_total_fwd(h, weight, rows, w_y, w, scale, options):
    """``scale * sum_i l_i`` with its gradients, computed in the same pass."""
    r = jnp.broadcast_to(scale, w_y.shape).astype(w.dtype)
    losses, d_hidden, d_weight = _linear_gradients(h, weight, rows, w_y, w, r, options)
    return scale * jnp.sum(losses), (d_hidden, d_weight)


def _linear_total_bwd(options, residuals, ct):
    d_hidden, d_weight = residuals
    return ((ct * d_hidden).astype(d_hidden.dtype), (ct * d_weight).astype(d_weight.dtype),
            None, None, None, None)


_linear_total.defvjp(_linear_total_fwd, _linear_total_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _linear_rows(h, weight, rows, w_y, w, options):
    return _linear_rows_fwd(h, weight, rows, w_y, w, options)[0]


def _linear_rows_fwd(h, weight, rows, w_y, w, options):
    """Per-row losses (``"none"``); the backward recomputes the chunks' logits."""
    n = h.shape[0]
    xs = _linear_chunks(options, n, h, rows, w_y)
    losses = jax.lax.map(lambda c: _linear_chunk(c[0], weight, c[1], c[2], w, None, options,
                                                 with_grad=False), xs)
    return losses.reshape(-1)[:n], (h, weight, rows, w_y, w)


def _linear_rows_bwd(options, residuals, ct):
    h, weight, rows, w_y, w = residuals
    _, d_hidden, d_weight = _linear_gradients(h, weight, rows, w_y, w, ct.astype(w.dtype),
                                              options)
    return d_hidden, d_weight, None, None, None


_linear_rows.defvjp(_linear_rows_fwd, _linear_rows_bwd)
