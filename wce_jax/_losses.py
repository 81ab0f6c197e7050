"""The losses of spec/SPEC.md in JAX: jit-, grad- and vmap-safe, on any XLA device.

Names and arguments follow ``torch.nn.functional``; ``axis`` is the class axis (JAX's
channels-last convention by default, ``axis=1`` for torch's layout). Half-precision
inputs are computed in float32 and rounded once at the end [GEN-HALF].

The class-target losses and the binary cross-entropy of probabilities run through custom
JVPs that are linear in the tangents: JAX transposes them for reverse mode, where the
backward pass is one fused elementwise expression (softmax minus one-hot, scaled per
row), so training keeps no logits-sized buffer beyond the logits and their gradient; and
forward mode, ``jax.linearize``, ``jacfwd`` and second derivatives work as for any JAX
function (spec section 18).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from wce_jax import _checks as check
from wce_jax import _core as core
from wce_jax._parallel import class_parallel_cross_entropy

Array = jax.Array

#: [GRAD-BCE]: 1e-12 rounded to float32, the guard torch uses in every dtype.
BCE_GRAD_EPS = 9.999999960041972e-13
BCE_LOG_CLAMP = -100.0  # [BCE-CLAMP]


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    axis: int = -1,
    axis_name: str | tuple[str, ...] | None = None,
    class_axis_name: str | None = None,
) -> Array:
    r"""Weighted softmax cross-entropy with class indices or class probabilities.

    With ``lp = log_softmax(logits, axis)`` and class weights ``w`` (ones by default):

    * integer ``target`` (class indices, any integer dtype) [CE-ELEM] [CE-SMOOTH]::

        l_i = (1 - eps) * w[y_i] * -lp[i, y_i] + (eps / C) * sum_c w_c * -lp[i, c]

      Elements with ``y_i == ignore_index`` give exactly 0 and their logits have no
      influence [CE-IGNORE] [CE-IGNORE-NONFINITE]. ``"mean"`` is the weighted mean
      ``sum_i l_i / sum_{i valid} w[y_i]`` [CE-MEAN]: NaN, with a zero gradient, when
      every target is ignored [EDGE-ALL-IGNORED].
    * floating ``target`` of the logits' shape (probabilities) [CEP-ELEM]::

        l_i = sum_c w_c * t'_ic * -lp_ic,   t' = (1 - eps) * t + eps / C

      and ``"mean"`` divides by the number of elements [CEP-MEAN].

    Args:
      logits: floating array; the class axis is ``axis``.
      target: class indices with the logits' shape without the class axis, or
        probabilities with the logits' shape.
      weight: optional class weights of shape ``(C,)``.
      ignore_index: class index to ignore (class-index targets only).
      reduction: ``"none"`` (the target's shape), ``"sum"`` or ``"mean"``.
      label_smoothing: ``eps`` in ``[0, 1]``, a Python number.
      axis: the class axis; ``-1`` (default) for channels-last, ``1`` for torch's layout.
      axis_name: inside ``shard_map``, ``pmap`` or a named ``vmap``, the axis (or axes)
        over which numerator and denominator are summed, so that ``"mean"`` is the global
        mean of all shards [DP-AXIS]. Not needed under plain ``jit`` with sharded inputs.
      class_axis_name: inside ``shard_map``, the named axis over which the class axis is
        split (``logits`` and ``weight`` hold this shard's classes, ``target`` global
        class indices); the loss is that of the unsplit problem [CP-GLOBAL].

    Returns:
      The loss, in the logits' dtype.

    Eager calls raise ValueError/TypeError on bad arguments (spec section 10). Under
    ``jit`` an out-of-range target cannot raise and makes the loss NaN, never another
    class's value [TRACE-TARGET-RANGE]; :func:`wce_jax.checked` turns it into an error.
    """
    if class_axis_name is not None:
        return class_parallel_cross_entropy(logits, target, weight, ignore_index, reduction,
                                            label_smoothing, axis, axis_name,
                                            class_axis_name)
    logits = check.floating(logits, "logits")
    reduction = check.reduction(reduction)
    eps = check.label_smoothing(label_smoothing)
    ignore_index = check.ignore_index(ignore_index)
    axis = check.class_axis(logits, axis, "logits")
    target = jnp.asarray(target)
    weight = check.class_weight(weight, logits.shape[axis], "weight", logits.shape, axis)
    if check.is_probability_target(target):
        if ignore_index != -100:
            raise ValueError(
                f"ignore_index is not supported with probability targets (floating "
                f"target), got ignore_index={ignore_index}; expected the default -100"
            )
        check.probability_target_shape(target, logits.shape, axis)
        check.warn_if_probabilities(logits, axis)
        return _probability_cross_entropy(logits, target, weight, eps=eps,
                                          reduction=reduction, axis=axis, axis_name=axis_name)
    check.target_shape(target, check.without_axis(logits.shape, axis),
                       "the logits' shape without the class axis")
    check.class_target_range(target, logits.shape[axis], ignore_index)
    check.warn_if_probabilities(logits, axis)
    return _class_cross_entropy(logits, target, weight, ignore_index=ignore_index, eps=eps,
                                reduction=reduction, axis=axis, strategy=_strategy(eps),
                                axis_name=axis_name)


def nll_loss(
    log_probs: ArrayLike,
    target: ArrayLike,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    axis: int = -1,
    axis_name: str | tuple[str, ...] | None = None,
) -> Array:
    r"""Weighted negative log-likelihood of log-probabilities at class indices.

    [NLL-ELEM] ``l_i = -w[y_i] * log_probs[i, y_i]`` for valid elements and exactly 0 for
    ignored ones; ``"mean"`` divides by the weights of the valid targets [CE-MEAN]. The
    rules for ``target``, ``weight``, ``ignore_index``, ``axis``, ``axis_name`` and errors
    are those of :func:`cross_entropy` with class indices; ``log_probs`` is not checked.
    """
    log_probs = check.floating(log_probs, "log_probs")
    reduction = check.reduction(reduction)
    ignore_index = check.ignore_index(ignore_index)
    axis, target, weight = check.class_index_arguments(
        log_probs, target, weight, ignore_index, axis, "nll_loss", "log_probs")
    return _nll(log_probs, target, weight, ignore_index=ignore_index, reduction=reduction,
                axis=axis, axis_name=axis_name)


def binary_cross_entropy(
    probs: ArrayLike,
    target: ArrayLike,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    axis_name: str | tuple[str, ...] | None = None,
) -> Array:
    r"""Binary cross-entropy of probabilities in ``[0, 1]``.

    [BCE-ELEM] [BCE-CLAMP]::

        l = -w * (y * max(log p, -100) + (1 - y) * max(log(1 - p), -100))

    ``weight`` is a per-element weight broadcast to ``probs`` [BCE-WEIGHT]; ``"mean"``
    divides by the number of elements [BCE-MEAN]. The gradient is
    ``w (p - y) / max(p (1 - p), 1e-12)`` [GRAD-BCE]. ``target`` may have any real
    dtype [BCE-TARGET]. Values outside ``[0, 1]`` raise in eager calls and give NaN under
    ``jit`` [TRACE-BCE-RANGE]. ``axis_name`` as in :func:`cross_entropy` [DP-AXIS].
    """
    probs = check.floating(probs, "probs")
    reduction = check.reduction(reduction)
    target = check.binary_target(target, probs.shape)
    weight = check.broadcastable(weight, "weight", probs.shape)
    check.unit_interval(probs, "probs")
    check.unit_interval(target, "target")
    return _bce(probs, target, weight, reduction=reduction, axis_name=axis_name)


def binary_cross_entropy_with_logits(
    logits: ArrayLike,
    target: ArrayLike,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    pos_weight: ArrayLike | None = None,
    axis_name: str | tuple[str, ...] | None = None,
) -> Array:
    r"""Binary cross-entropy of logits, with an optional weight for positives.

    [BCEL-ELEM] with ``q = 1 + (pos_weight - 1) * y``::

        l = w * ((1 - y) * x - q * log_sigmoid(x))

    ``pos_weight`` broadcasts against the last dimension, one weight per label for
    ``(N, C)`` multi-label logits [BCEL-POS-WEIGHT]; ``weight`` broadcasts to the logits
    [BCEL-WEIGHT]; ``"mean"`` divides by the number of elements [BCEL-MEAN]. The
    gradient is ``w ((1 - y) - q sigmoid(-x))`` [GRAD-BCEL]. ``axis_name`` as in
    :func:`cross_entropy` [DP-AXIS].
    """
    logits = check.floating(logits, "logits")
    reduction = check.reduction(reduction)
    target = check.binary_target(target, logits.shape)
    weight = check.broadcastable(weight, "weight", logits.shape)
    pos_weight = check.broadcastable(pos_weight, "pos_weight", logits.shape)
    return _bce_with_logits(logits, target, weight, pos_weight, reduction=reduction,
                            axis_name=axis_name)


# ----------------------------------------------------------------------------------
# The jitted computations behind the checks: one compiled program per shape, in eager
# calls as under the caller's jit.


@functools.partial(jax.jit, static_argnames=("ignore_index", "eps", "reduction", "axis",
                                             "strategy", "axis_name"))
def _class_cross_entropy(logits, target, weight, *, ignore_index, eps, reduction, axis,
                         strategy, axis_name):
    dtype = check.compute_dtype(logits.dtype)
    x = jnp.moveaxis(logits, axis, -1)
    w = core.class_weights_or_ones(weight, x.shape[-1], dtype)
    valid, y, w_y, _ = core.class_terms(target, w, x.shape[-1], ignore_index)
    (w,) = core.varying_like(x, w)
    losses = _ce_elements(x.astype(dtype), y, valid, w_y, w, eps, strategy)
    return core.reduce(losses, w_y, reduction, axis_name, valid).astype(logits.dtype)


@functools.partial(jax.jit, static_argnames=("eps", "reduction", "axis", "axis_name"))
def _probability_cross_entropy(logits, target, weight, *, eps, reduction, axis,
                               axis_name):
    """[CEP-ELEM]; differentiated by JAX, the target too (for distillation)."""
    dtype = check.compute_dtype(logits.dtype)
    x = jnp.moveaxis(logits, axis, -1).astype(dtype)
    t = jnp.moveaxis(target, axis, -1).astype(dtype)
    w = core.class_weights_or_ones(weight, x.shape[-1], dtype)
    if eps:
        t = (1.0 - eps) * t + eps / x.shape[-1]
    losses = -jnp.sum(w * t * jax.nn.log_softmax(x, axis=-1), axis=-1)
    return core.reduce(losses, None, reduction, axis_name).astype(logits.dtype)


@functools.partial(jax.jit,
                   static_argnames=("ignore_index", "reduction", "axis", "axis_name"))
def _nll(log_probs, target, weight, *, ignore_index, reduction, axis, axis_name):
    dtype = check.compute_dtype(log_probs.dtype)
    x = jnp.moveaxis(log_probs, axis, -1)
    w = core.class_weights_or_ones(weight, x.shape[-1], dtype)
    valid, y, w_y, bad = core.class_terms(target, w, x.shape[-1], ignore_index)
    losses = _nll_elements(x, y, valid, bad, w_y)
    return core.reduce(losses, w_y, reduction, axis_name, valid).astype(log_probs.dtype)


@functools.partial(jax.jit, static_argnames=("reduction", "axis_name"))
def _bce(probs, target, weight, *, reduction, axis_name):
    dtype = check.compute_dtype(probs.dtype)
    w = jnp.broadcast_to(jnp.ones((), dtype) if weight is None else weight.astype(dtype),
                         probs.shape)
    target, w = core.varying_like(probs, target, w)
    losses = _bce_elements(probs.astype(dtype), target.astype(dtype), w)
    # Summed by rows where differentiated: the training step keeps one logits-sized
    # temporary instead of three. The loss alone is summed as it is made, with no buffer
    # (by rows, it wrote the losses out first: 3.1x the peer's time instead of 0.9-1.1x
    # at 8192 x 1000 and 2048 x 32000 on an AVX-512 CPU).
    return core.reduce(losses, None, reduction, axis_name,
                       by_rows="differentiated").astype(probs.dtype)


@functools.partial(jax.jit, static_argnames=("reduction", "axis_name"))
def _bce_with_logits(logits, target, weight, pos_weight, *, reduction, axis_name):
    dtype = check.compute_dtype(logits.dtype)
    x, y = logits.astype(dtype), target.astype(dtype)
    q = 1.0 if pos_weight is None else 1.0 + (pos_weight.astype(dtype) - 1.0) * y
    losses = (1.0 - y) * x + q * jax.nn.softplus(-x)  # -log_sigmoid(x) = softplus(-x)
    if weight is not None:
        losses = weight.astype(dtype) * losses
    return core.reduce(losses, None, reduction, axis_name).astype(logits.dtype)


def target_nll(x, y, valid):
    """``-log softmax(x)[i, y_i]`` (class axis last, ``x`` in the computation dtype), 0
    with a zero gradient where not ``valid``: [CE-ELEM] with unit weights and no
    smoothing, with its fused gradient ``p_i - e_{y_i}`` and the JVP of spec section 18.
    The softmax focal loss is a function of it, row by row."""
    ones = valid.astype(x.dtype)
    return _ce_elements(x, y, valid, ones, jnp.ones(x.shape[-1:], x.dtype), 0.0,
                        _strategy(0.0))


#: The settings of :func:`gradient_strategy`.
STRATEGIES = ("auto", "logits", "exp", "shifted")
_STRATEGY = contextvars.ContextVar("wce_jax_gradient_strategy", default="auto")


@contextlib.contextmanager
def gradient_strategy(strategy: str = "auto"):
    """Choose how the class-index cross-entropy computes the softmax its gradient is made
    of, for the calls traced inside the ``with`` block::

        with wce_jax.gradient_strategy("logits"):
            step = jax.jit(jax.grad(loss_fn)).lower(params, batch).compile()

    Every strategy computes the same loss and gradient up to rounding; they differ in
    what the compiler can fuse, so in speed and memory.

    * ``"auto"`` (default): ``"logits"`` on GPU and TPU, ``"exp"`` on CPU, or
      ``"shifted"`` there with label smoothing.
    * ``"logits"``: ``p = exp(x - m - log s)`` recomputed from the shifted logits; best
      where XLA fuses row reductions into their producers.
    * ``"exp"``: ``p = exp(x - m) / s`` from the exponentials the row sums were made of,
      which XLA on CPU writes to memory anyway.
    * ``"shifted"``: as ``"logits"``, with the smoothing term written as the product
      ``(x - m) @ w``; XLA may compile it to the same program as ``"logits"``.

    Either way the compiled forward+backward holds no logits-sized temporary beyond the
    one that becomes the gradient. The setting is read when a call is traced, and JAX
    reuses a function's traces: a function traced before the block keeps its strategy
    until ``jax.clear_caches()``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got strategy={strategy!r}")
    token = _STRATEGY.set(strategy)
    try:
        yield
    finally:
        _STRATEGY.reset(token)


def _strategy(eps: float) -> str:
    """The strategy of :func:`gradient_strategy` for this call."""
    chosen = _STRATEGY.get()
    if chosen != "auto":
        return chosen
    if jax.default_backend() != "cpu":
        return "logits"
    return "shifted" if eps else "exp"


# ----------------------------------------------------------------------------------
# Per-element losses with custom JVPs. Each JVP rule is linear in the tangents: the
# tangent of element i is sum_c G_ic t_ic, with G the gradient of spec section 9 for an
# upstream 1 [JVP]. JAX transposes it for reverse mode (the gradient is ct_i G_i, one
# fused elementwise product), and differentiates the rule's G for second derivatives
# [HVP-CE] [HVP-NLL] [HVP-BCE]. Tangents of unperturbed arguments (weights, targets)
# are symbolic zeros, so their terms cost nothing unless asked for.


@functools.partial(jax.custom_jvp, nondiff_argnums=(5, 6))
def _ce_elements(x, y, valid, w_y, w, eps, strategy):
    return _ce_losses(x, y, valid, w_y, w, eps, strategy)[0]


def _ce_losses(x, y, valid, w_y, w, eps, strategy):
    """Per-element [CE-ELEM] [CE-SMOOTH], with the shifted log-softmax of spec section 0.

    ``x`` is in the computation dtype, class axis last. The smoothing term
    ``sum_c w_c * -lp_c = W log_s - sum_c w_c (x_c - m)`` is summed relative to the row
    maximum, so large logits do not cancel. Also returns what the gradient is made of.
    """
    m = jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))  # a shift, no tangent
    shifted = x - m
    e = jnp.exp(shifted)
    log_s = jnp.log(jnp.sum(e, axis=-1))
    x_y = jnp.take_along_axis(x, y[..., None], axis=-1)[..., 0]  # gathered from x itself
    nll = log_s - (x_y - m[..., 0])  # -lp[i, y_i]
    losses = (1.0 - eps) * w_y * nll
    if eps:
        weighted = shifted @ w if strategy == "shifted" else jnp.sum(w * shifted, axis=-1)
        losses = losses + (eps / x.shape[-1]) * (jnp.sum(w) * log_s - weighted)
    return jnp.where(valid, losses, 0.0), (shifted, e, log_s, nll)


def _ce_gradient(shifted, e, log_s, y, valid, w_y, w, eps, strategy):
    """[GRAD-CE] for an upstream 1: row i is ``(1-eps) w[y_i] (p_i - e_{y_i}) +
    (eps/C) (W p_i - w)``, exactly zero for ignored rows.

    ``strategy`` picks what ``p`` is computed from (see :func:`gradient_strategy`)."""
    num_classes = shifted.shape[-1]
    if strategy == "exp":
        p = e * jnp.exp(-log_s)[..., None]
    else:
        p = jnp.exp(shifted - log_s[..., None])
    coef = ((1.0 - eps) * w_y)[..., None]
    if eps:
        p_scale = coef + (eps / num_classes) * jnp.sum(w)
        grad = p_scale * p - (eps / num_classes) * w
    else:
        grad = coef * p
    grad = grad - jnp.where(jnp.arange(num_classes) == y[..., None], coef, 0.0)
    return jnp.where(valid[..., None], grad, 0.0)


@functools.partial(_ce_elements.defjvp, symbolic_zeros=True)
def _ce_elements_jvp(eps, strategy, primals, tangents):
    """[JVP] of [CE-ELEM] [CE-SMOOTH]: ``sum_c G_ic dx_ic``, plus the class weights'
    terms ``(1-eps) nll_i dw_y_i + (eps/C) sum_c -lp_ic dw_c`` when they are perturbed."""
    x, y, valid, w_y, w = primals
    dx, _, _, dw_y, dw = tangents
    losses, (shifted, e, log_s, nll) = _ce_losses(x, y, valid, w_y, w, eps, strategy)
    terms = [None, None, None]
    if core.perturbed(dx):
        grad = _ce_gradient(shifted, e, log_s, y, valid, w_y, w, eps, strategy)
        # Masked, so that its transpose masks the upstream gradient: a NaN mean's
        # ignored rows get exactly 0 [EDGE-ZERO-WEIGHT-SUM].
        terms[0] = jnp.where(valid, jnp.sum(grad * dx, axis=-1), 0.0)
    if core.perturbed(dw_y):
        terms[1] = jnp.where(valid, (1.0 - eps) * nll * dw_y, 0.0)
    if core.perturbed(dw) and eps:
        minus_lp = log_s[..., None] - shifted
        terms[2] = jnp.where(valid, (eps / x.shape[-1]) * (minus_lp @ dw), 0.0)
    return losses, core.tangent(losses, *terms)


@jax.custom_jvp
def _nll_elements(x, y, valid, bad, w_y):
    """Per-element [NLL-ELEM]."""
    picked = jnp.take_along_axis(x, y[..., None], axis=-1)[..., 0].astype(w_y.dtype)
    return jnp.where(valid, -w_y * picked, 0.0)


@functools.partial(_nll_elements.defjvp, symbolic_zeros=True)
def _nll_elements_jvp(primals, tangents):
    """[JVP] of [NLL-ELEM]: the tangent at ``(i, y_i)`` times ``-w[y_i]`` (NaN rows for bad
    targets [TRACE-TARGET-RANGE]); linear in ``x``, so its HVP is 0 [HVP-NLL]."""
    x, y, valid, bad, w_y = primals
    dx, _, _, _, dw_y = tangents
    losses = _nll_elements(x, y, valid, bad, w_y)
    terms = [None, None]
    if core.perturbed(dx):
        # The entries other than (i, y_i) are selected away, not multiplied by 0, so
        # that the transpose is exactly 0 there even for a NaN upstream gradient.
        picked_dx = jnp.sum(jnp.where((jnp.arange(x.shape[-1]) == y[..., None])
                                      | bad[..., None], dx, 0.0), axis=-1)
        coef = jnp.where(bad, jnp.nan, -w_y)
        terms[0] = jnp.where(valid, coef * picked_dx.astype(w_y.dtype), 0.0)
    if core.perturbed(dw_y):
        picked = jnp.take_along_axis(x, y[..., None], axis=-1)[..., 0].astype(w_y.dtype)
        terms[1] = jnp.where(valid, -picked * dw_y, 0.0)
    return losses, core.tangent(losses, *terms)


@jax.custom_jvp
def _bce_elements(p, y, w):
    return _bce_losses(p, y, w, select=False)[0]


def _bce_losses(p, y, w, select):
    """Per-element [BCE-ELEM] [BCE-CLAMP]; NaN outside [0, 1] [TRACE-BCE-RANGE].

    The NaN comes from a select where the gradient is formed too (the JVP rule), and
    otherwise (the loss alone) from the arithmetic itself: the logarithm of a ``p``
    outside is NaN (``max`` keeps it), and ``0 * sqrt(y (1 - y))`` is NaN for a ``y``
    outside and 0 inside, with no derivative. Measured at 8192 x 1000 and 2048 x 32000
    (float32, CPU) against the loss without the check in jax.numpy: with a select,
    inference takes 1.5x to 2.3x its time, with the arithmetic 1.1x to 1.2x; the training
    step is faster with the select (it shares the mask with the gradient's)."""
    log_p = jnp.maximum(jnp.log(p), BCE_LOG_CLAMP)
    log_1mp = jnp.maximum(jnp.log(1.0 - p), BCE_LOG_CLAMP)
    per_weight = -(y * log_p + (1.0 - y) * log_1mp)
    if select:
        bad = ~((p >= 0) & (p <= 1) & (y >= 0) & (y <= 1))
        return jnp.where(bad, jnp.nan, w * per_weight), (bad, log_p, log_1mp, per_weight)
    nan_outside = 0.0 * jnp.sqrt(jax.lax.stop_gradient(y * (1.0 - y)))
    return w * per_weight + nan_outside, None


@functools.partial(_bce_elements.defjvp, symbolic_zeros=True)
def _bce_elements_jvp(primals, tangents):
    """[JVP] through the guarded gradient [GRAD-BCE] ``w (p - y) / max(p (1 - p), eta)``,
    whose derivative is [HVP-BCE]; also the target's and the weight's terms."""
    p, y, w = primals
    dp, dy, dw = tangents
    losses, (bad, log_p, log_1mp, per_weight) = _bce_losses(p, y, w, select=True)
    terms = [None, None, None]
    if core.perturbed(dp):
        grad = w * (p - y) / jnp.maximum(p * (1.0 - p), BCE_GRAD_EPS)
        terms[0] = jnp.where(bad, jnp.nan, grad) * dp
    if core.perturbed(dy):
        terms[1] = -w * (log_p - log_1mp) * dy
    if core.perturbed(dw):
        terms[2] = per_weight * dw
    return losses, core.tangent(losses, *terms)
