"""Focal losses (spec section 14)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from wce_jax import _checks as check
from wce_jax import _core as core
from wce_jax._losses import target_nll

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
    axis, target, alpha = check.class_index_arguments(
        logits, target, alpha, ignore_index, axis, "softmax_focal_loss", "logits", "alpha")
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


def _slope_term(u, gamma, factor):
    """``gamma u^(gamma-1) factor``, 0 where ``u = 0`` (the limit: ``factor`` vanishes with
    ``u``, or is NaN at an infinite logit) and its derivative 0 there [FOCAL-GRAD]
    [HVP-FOCAL]; nothing at all for ``gamma = 0``."""
    if gamma == 0:
        return jnp.zeros_like(u)
    return jnp.where(u > 0, gamma * _modulating(u, gamma - 1.0) * factor, 0.0)


@functools.partial(jax.jit, static_argnames=("alpha", "gamma", "reduction", "axis_name"))
def _sigmoid_focal(logits, target, *, alpha, gamma, reduction, axis_name):
    dtype = check.compute_dtype(logits.dtype)
    x, y = logits.astype(dtype), target.astype(dtype)
    losses = _sigmoid_focal_elements(x, y, alpha, gamma)
    # Summed by rows: at 8192 x 1000 (float32, CPU) the training step keeps one logits-sized
    # temporary instead of four, and inference one instead of two.
    return core.reduce(losses, None, reduction, axis_name, by_rows=True).astype(logits.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _sigmoid_focal_elements(x, y, alpha, gamma):
    """[FOCAL-SIGMOID] element-wise, with the derivatives of
    :func:`_sigmoid_focal_derivatives`."""
    a, b, ce = _sigmoids(x, y, one_exponential=True)
    return _alpha_t(y, alpha) * _modulating(y * b + (1.0 - y) * a, gamma) * ce


def _sigmoids(x, y, one_exponential):
    """``a = sigmoid(x)``, ``b = sigmoid(-x)`` and ``ce = (1 - y) x + softplus(-x)``
    [BCEL-ELEM], without cancellation, written two ways: from the one exponential
    ``exp(-|x|)`` (for the loss), or with jax.nn's sigmoid and softplus (for its derivatives).
    XLA merges equal expressions, and an exponential used by two loops is written to memory
    for both; written apart, the loss and its derivative each fuse into one loop, and the
    training step keeps one logits-sized buffer (benchmarks, family sigmoid_focal)."""
    if one_exponential:
        e = jnp.exp(-jnp.abs(x))
        r = 1.0 / (1.0 + e)
        a, b = jnp.where(x >= 0, r, e * r), jnp.where(x >= 0, e * r, r)
        return a, b, (1.0 - y) * x + jnp.maximum(-x, 0.0) + jnp.log1p(e)
    return jax.nn.sigmoid(x), jax.nn.sigmoid(-x), (1.0 - y) * x + jax.nn.softplus(-x)


def _alpha_t(y, alpha):
    return 1.0 if alpha is None else alpha * y + (1.0 - alpha) * (1.0 - y)


def _sigmoid_focal_derivatives(x, y, alpha, gamma, with_dx, with_dy):
    """``dl/dx`` [FOCAL-GRAD] and ``dl/dy`` of [FOCAL-SIGMOID] (each None unless asked for).

    With ``a, b, ce`` of :func:`_sigmoids`, ``u = y b + (1 - y) a = 1 - p_t`` and
    ``m = u^gamma``::

        dl/dx = alpha_t (m'(u) (1 - 2y) a b ce + m (a - y))
        dl/dy = alpha_t' m ce + alpha_t (m'(u) (b - a) ce - m x)

    JAX differentiates these for the HVP [HVP-FOCAL]."""
    a, b, ce = _sigmoids(x, y, one_exponential=False)
    u = y * b + (1.0 - y) * a
    m, alpha_t = _modulating(u, gamma), _alpha_t(y, alpha)
    dx = (alpha_t * (_slope_term(u, gamma, (1.0 - 2.0 * y) * a * b * ce) + m * (a - y))
          if with_dx else None)
    dy = None
    if with_dy:
        dy = alpha_t * (_slope_term(u, gamma, (b - a) * ce) - m * x)
        if alpha is not None:
            dy = dy + (2.0 * alpha - 1.0) * m * ce
    return dx, dy


@functools.partial(_sigmoid_focal_elements.defjvp, symbolic_zeros=True)
def _sigmoid_focal_jvp(alpha, gamma, primals, tangents):
    x, y = primals
    tx, ty = tangents
    losses = _sigmoid_focal_elements(x, y, alpha, gamma)
    dx, dy = _sigmoid_focal_derivatives(x, y, alpha, gamma, core.perturbed(tx),
                                        core.perturbed(ty))
    return losses, core.tangent(losses, None if dx is None else dx * tx,
                                None if dy is None else dy * ty)


@functools.partial(jax.jit, static_argnames=("gamma", "ignore_index", "reduction", "axis",
                                             "axis_name"))
def _softmax_focal(logits, target, alpha, *, gamma, ignore_index, reduction, axis,
                   axis_name):
    dtype = check.compute_dtype(logits.dtype)
    x = jnp.moveaxis(logits, axis, -1).astype(dtype)
    w = core.class_weights_or_ones(alpha, x.shape[-1], dtype)
    valid, y, w_y, _ = core.class_terms(target, w, x.shape[-1], ignore_index)
    # -log p_y is the row's cross-entropy without weights or smoothing: its custom JVP
    # makes the gradient one fused pass (p - e_y times a per-row factor), and ignored rows
    # give exactly 0 with a zero gradient. The focal factor is a function of it per row,
    # so training holds no (N, C) array beyond the gradient.
    nll = target_nll(x, y, valid)
    u = -jnp.expm1(-nll)  # 1 - p_y without cancellation
    losses = jnp.where(valid, w_y * _modulating(u, gamma) * nll, 0.0)
    return core.reduce(losses, w_y, reduction, axis_name, valid).astype(logits.dtype)
