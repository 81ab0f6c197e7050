"""Focal losses (spec section 14)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from wce_jax import _checks as check
from wce_jax import _core as core

Array = jax.Array


def sigmoid_focal_loss(
    logits: ArrayLike,
    target: ArrayLike,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
    axis_name: str | tuple[str, ...] | None = None,
) -> Array:
    r"""RetinaNet's focal loss, with ``torchvision.ops.sigmoid_focal_loss``'s semantics.

    [FOCAL-SIGMOID]::

        l = alpha_t * (1 - p_t)^gamma * ce,   1 - p_t = y sigmoid(-x) + (1 - y) sigmoid(x)

    with ``ce`` the binary cross-entropy of the logits and
    ``alpha_t = alpha y + (1 - alpha)(1 - y)`` (1 when ``alpha`` is None or negative).
    ``reduction`` defaults to ``"none"`` as in torchvision; ``"mean"`` divides by the
    number of elements. ``gamma=0, alpha=None`` is the binary cross-entropy
    [FOCAL-GAMMA0]; saturated logits have a zero gradient for any ``gamma`` [FOCAL-GRAD].
    ``axis_name`` as in :func:`wce_jax.cross_entropy` [DP-AXIS].
    """
    logits = check.floating(logits, "logits")
    reduction = check.reduction(reduction)
    gamma = check.gamma(gamma)
    target = check.binary_target(target, logits.shape)
    alpha = None if alpha is None or alpha < 0 else float(alpha)
    return _sigmoid_focal(logits, target, alpha=alpha, gamma=gamma, reduction=reduction,
                          axis_name=axis_name)


def softmax_focal_loss(
    logits: ArrayLike,
    target: ArrayLike,
    alpha: ArrayLike | None = None,
    gamma: float = 2.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    axis: int = -1,
    axis_name: str | tuple[str, ...] | None = None,
) -> Array:
    r"""Multi-class focal loss with per-class weights, reduced like the weighted
    cross-entropy.

    [FOCAL-SOFTMAX]: ``l_i = alpha[y_i] * (1 - p_i[y_i])^gamma * -log p_i[y_i]``, ignored
    elements exactly 0, ``"mean"`` divided by ``sum_{i valid} alpha[y_i]`` [CE-MEAN].
    ``gamma=0`` is :func:`wce_jax.cross_entropy` with ``weight=alpha`` [FOCAL-GAMMA0].
    ``alpha`` has shape ``(C,)``; targets, ``ignore_index``, ``axis``, ``axis_name`` and
    errors as in :func:`wce_jax.cross_entropy`.
    """
    logits = check.floating(logits, "logits")
    reduction = check.reduction(reduction)
    gamma = check.gamma(gamma)
    ignore_index = check.ignore_index(ignore_index)
    axis = check.class_axis(logits, axis, "logits")
    target = jnp.asarray(target)
    check.class_indices(target, "softmax_focal_loss")
    num_classes = logits.shape[axis]
    alpha = check.class_weight(alpha, num_classes, "alpha", logits.shape, axis)
    check.target_shape(target, check.without_axis(logits.shape, axis),
                       "the logits' shape without the class axis")
    check.class_target_range(target, num_classes, ignore_index)
    return _softmax_focal(logits, target, alpha, gamma=gamma, ignore_index=ignore_index,
                          reduction=reduction, axis=axis, axis_name=axis_name)


def _modulating(u, gamma):
    """``u^gamma``, with ``0^0 = 1`` and a zero derivative at ``u = 0`` [FOCAL-GRAD]:
    where the logits saturate, the derivative of ``u^gamma`` for ``gamma < 1`` is
    infinite but the loss's gradient tends to 0."""
    if gamma == 0:
        return jnp.ones_like(u)
    if float(gamma).is_integer():
        # A product of u's (as a peer's u ** 2), not exp(gamma log u): 0 at u = 0 with a
        # derivative gamma u^(gamma-1) that is 0 there too for gamma >= 2, and for gamma = 1
        # multiplies u', itself 0 where u underflows to 0.
        return jax.lax.integer_pow(u, int(gamma))
    return jnp.where(u > 0, jnp.where(u > 0, u, 1.0) ** gamma, 0.0)


@functools.partial(jax.jit, static_argnames=("alpha", "gamma", "reduction", "axis_name"))
def _sigmoid_focal(logits, target, *, alpha, gamma, reduction, axis_name):
    dtype = check.compute_dtype(logits.dtype)
    x, y = logits.astype(dtype), target.astype(dtype)
    ce = (1.0 - y) * x + jax.nn.softplus(-x)  # [BCEL-ELEM] with q = 1
    u = y * jax.nn.sigmoid(-x) + (1.0 - y) * jax.nn.sigmoid(x)  # 1 - p_t, no cancellation
    losses = _modulating(u, gamma) * ce
    if alpha is not None:
        losses = (alpha * y + (1.0 - alpha) * (1.0 - y)) * losses
    return core.reduce(losses, None, reduction, axis_name).astype(logits.dtype)


@functools.partial(jax.jit, static_argnames=("gamma", "ignore_index", "reduction", "axis",
                                             "axis_name"))
def _softmax_focal(logits, target, alpha, *, gamma, ignore_index, reduction, axis,
                   axis_name):
    dtype = check.compute_dtype(logits.dtype)
    x = jnp.moveaxis(logits, axis, -1).astype(dtype)
    w = core.class_weights_or_ones(alpha, x.shape[-1], dtype)
    valid, y, w_y, _ = core.class_terms(target, w, x.shape[-1], ignore_index)
    x = jnp.where(valid[..., None], x, 0.0)  # ignored rows have no influence
    lp_y = jnp.take_along_axis(jax.nn.log_softmax(x, axis=-1), y[..., None], axis=-1)[..., 0]
    u = -jnp.expm1(lp_y)  # 1 - p_y without cancellation
    losses = jnp.where(valid, w_y * _modulating(u, gamma) * -lp_y, 0.0)
    return core.reduce(losses, w_y, reduction, axis_name, valid).astype(logits.dtype)
