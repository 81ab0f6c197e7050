"""Class parallelism (spec section 19): the class axis split over a named mesh axis.

Inside ``shard_map`` (or a named ``vmap``), device ``r`` of the ``k`` devices of
``class_axis_name`` holds the classes ``[r * Cl, (r + 1) * Cl)`` of ``C = k * Cl``: the
logits' columns, or the lm-head's rows, and the matching slice of the class weights.
The result is the loss of the whole, unsplit problem, the same on every class shard
[CP-GLOBAL]. Only per-row numbers cross devices in the forward pass [CP-COMM]:

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
    axis = check.class_axis(logits, axis, "logits")
    target = jnp.asarray(target)
    check.class_indices(target, "cross_entropy with class_axis_name")
    local = logits.shape[axis]
    weight = check.class_weight(weight, local, "weight", logits.shape, axis)
    check.target_shape(target, check.without_axis(logits.shape, axis),
                       "the logits' shape without the class axis")
    check.class_target_range(target, local * jax.lax.axis_size(class_axis_name),
                             ignore_index)
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


def row_statistics(z, w, rows, eps, class_axis_name):
    """The global row terms of the shifted log-softmax (spec section 0), from this
    shard's logits ``z`` (class axis last) in two all-reduces [CP-COMM].

    Returns ``shifted = z - m`` (local), ``log_s``, ``nll = -lp[i, y_i]``, ``w_y`` (NaN
    for a bad target), the smoothing sum ``sum_c w_c (z_c - m)`` (None without smoothing)
    and ``W``.
    """
    m = jax.lax.pmax(jnp.max(z, axis=-1), class_axis_name)
    shifted = z - m[..., None]
    picked = jnp.take_along_axis(shifted, rows.local[..., None], axis=-1)[..., 0]
    stats = [jnp.sum(jnp.exp(shifted), axis=-1),
             jnp.where(rows.here, picked, 0.0),
             jnp.where(rows.here, w[rows.local], 0.0)]
    if eps:
        stats.append(shifted @ w)
    stats, total_w = jax.lax.psum((jnp.stack(stats, axis=-1), jnp.sum(w)), class_axis_name)
    log_s = jnp.log(stats[..., 0])
    w_y = jnp.where(rows.bad, jnp.nan, jnp.where(rows.valid, stats[..., 2], 0.0))
    smooth = stats[..., 3] if eps else None
    return shifted, log_s, log_s - stats[..., 1], w_y, smooth, total_w


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
    shifted, log_s, nll, w_y, smooth, total_w = row_statistics(x, w, rows, eps,
                                                               class_axis_name)
    losses = element_losses(log_s, nll, w_y, smooth, total_w, eps, num_classes)
    losses = jnp.where(rows.valid, losses, 0.0)
    return (losses, w_y), (shifted, w, rows, log_s, nll, w_y, total_w)


def _elements_bwd(eps, class_axis_name, residuals, cts):
    """[GRAD-CE] on this shard's columns, with no communication [CP-GRAD]:
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
