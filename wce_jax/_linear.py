"""Linear + cross-entropy for large vocabularies, in chunks (spec section 17).

The logits ``hidden @ weight.T`` of ``(rows, V)`` are never formed at once: rows are
processed ``chunk_size`` at a time inside ``lax.scan``. For ``"mean"`` and ``"sum"`` the
forward pass also computes the gradients (the loss is linear in the upstream scalar, so
the backward pass only scales them): three matrix products per chunk, as many as the
unfused loss and its gradient need. For ``"none"`` the backward pass recomputes each
chunk's logits with the per-row upstream gradient: four products.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from wce_jax import _checks as check
from wce_jax import _core as core
from wce_jax._parallel import class_parallel_linear_cross_entropy

Array = jax.Array


def linear_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    target: ArrayLike,
    *,
    class_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
    axis_name: str | tuple[str, ...] | None = None,
    class_axis_name: str | None = None,
) -> Array:
    r"""Cross-entropy of the logits ``hidden @ weight.T`` without forming them.

    ``hidden`` is ``(..., D)``, ``weight`` is ``(V, D)`` (the layout of
    ``torch.nn.Linear(D, V).weight`` and of Flax's ``Embed`` table; a Flax ``Dense``
    kernel is ``(D, V)``: pass its transpose), ``target`` holds class indices ``(...)``.
    The loss is [LCE-ELEM]: [CE-ELEM], [CE-SMOOTH], [CE-IGNORE] and [CE-MEAN] of
    ``z``, with ``class_weight`` as the class weights, plus [LCE-ZLOSS]
    ``z_loss * w[y_i] * lse_i**2``; ``softcap`` replaces the logits by
    ``softcap * tanh(a / softcap)`` [LCE-SOFTCAP]. Gradients flow to ``hidden`` and
    ``weight`` [LCE-GRAD], not to ``class_weight``.

    ``chunk_size`` rows are processed at a time (default: about ``2**24 / V``); memory
    beyond inputs and outputs is a few ``chunk_size x V`` buffers instead of several
    ``rows x V`` ones. Half-precision inputs multiply with float32 accumulation.
    ``axis_name`` as in :func:`wce_jax.cross_entropy` [DP-AXIS]. With
    ``class_axis_name``, ``weight`` and ``class_weight`` hold this shard's rows of the
    vocabulary, ``hidden`` is whole and gets its full gradient [CP-LINEAR].
    """
    hidden = check.floating(hidden, "hidden")
    weight = check.floating(weight, "weight")
    reduction = check.reduction(reduction)
    eps = check.label_smoothing(label_smoothing)
    ignore_index = check.ignore_index(ignore_index)
    check.linear_weight(weight, hidden)
    target = jnp.asarray(target)
    check.class_indices(target, "linear_cross_entropy")
    check.target_shape(target, hidden.shape[:-1], "hidden's shape without the last axis")
    shards = 1 if class_axis_name is None else jax.lax.axis_size(class_axis_name)
    vocab = weight.shape[0] * shards  # the whole vocabulary [CP-LINEAR]
    class_weight = check.class_weight(class_weight, weight.shape[0], "class_weight")
    z_loss, softcap = check.z_loss(z_loss), check.softcap(softcap)
    chunk = check.chunk_size(chunk_size, vocab)
    check.class_target_range(target, vocab, ignore_index)
    if class_axis_name is not None:
        return class_parallel_linear_cross_entropy(
            hidden, weight, target, class_weight, ignore_index, reduction, eps, z_loss,
            softcap, chunk, axis_name, class_axis_name)
    options = _Options(eps, z_loss, softcap, chunk, ignore_index)
    return _linear_cross_entropy(hidden, weight, target, class_weight, options=options,
                                 reduction=reduction, axis_name=axis_name)


@dataclasses.dataclass(frozen=True)
class _Options:
    eps: float
    z_loss: float
    softcap: float | None
    chunk: int
    ignore_index: int



@functools.partial(jax.jit, static_argnames=("options", "reduction", "axis_name"))
def _linear_cross_entropy(hidden, weight, target, class_weight, *, options, reduction,
                          axis_name):
    dtype = check.compute_dtype(jnp.result_type(hidden.dtype, weight.dtype))
    vocab = weight.shape[0]
    w = jax.lax.stop_gradient(core.class_weights_or_ones(class_weight, vocab, dtype))
    valid, y, w_y, _ = core.class_terms(target.reshape(-1), w, vocab, options.ignore_index)
    h = hidden.reshape(-1, hidden.shape[-1])
    # A chunk of at most the rows there are: no padding rows beyond them (under jacfwd,
    # jacrev or vmap every padding row would be computed once per direction).
    options = dataclasses.replace(options, chunk=max(1, min(options.chunk, h.shape[0])))
    weight, w = core.varying_like(h, weight, w)
    if reduction == "none":
        losses = _rows(h, weight, y, valid, w_y, w, options)
        return losses.reshape(target.shape).astype(hidden.dtype)
    count = core.all_reduced(jnp.sum(w_y), axis_name)
    scale = (jnp.ones((), dtype) if reduction == "sum"
             else 1.0 / jnp.where(count == 0, jnp.nan, count))
    total = _scaled_total(h, weight, y, valid, w_y, w, scale, options)
    return core.all_reduced(total, axis_name).astype(hidden.dtype)


def _chunks(options, n, *rows):
    """Rows padded to whole chunks (padding rows are ignored) and stacked chunk-wise."""
    padded = -(-n // options.chunk) * options.chunk
    out = []
    for a in rows:
        a = jnp.pad(a, [(0, padded - n)] + [(0, 0)] * (a.ndim - 1))
        out.append(a.reshape((padded // options.chunk, options.chunk) + a.shape[1:]))
    return out


def _chunk_terms(h, weight, y, valid, w_y, w, r, options, with_grad):
    """One chunk: per-row losses, and with ``with_grad`` the chunk's gradients for the
    per-row upstream factors ``r``: ``(losses, d hidden, d weight)``."""
    dtype = w.dtype
    losses, grad = _chunk_logits_terms(h, weight, y, valid, w_y, w, r, options, with_grad)
    if not with_grad:
        return losses
    d_hidden = jax.lax.dot_general(grad, weight, (((1,), (0,)), ((), ())),
                                   preferred_element_type=dtype)
    d_weight = jax.lax.dot_general(grad, h, (((0,), (0,)), ((), ())),
                                   preferred_element_type=dtype)
    return losses, d_hidden, d_weight


def _chunk_logits_terms(h, weight, y, valid, w_y, w, r, options, with_grad):
    """One chunk's per-row losses and, with ``with_grad``, the gradient with respect to
    the pre-softcap logits ``a`` for the per-row upstream factors ``r`` [LCE-GRAD]."""
    dtype = w.dtype
    a = _times_transposed(h, weight, dtype)
    z = a if options.softcap is None else options.softcap * jnp.tanh(a / options.softcap)
    m = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))  # a shift, no tangent
    e = jnp.exp(z - m)
    s = jnp.sum(e, axis=-1)
    log_s = jnp.log(s)
    nll = log_s - (jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0] - m[:, 0])
    losses = (1.0 - options.eps) * w_y * nll
    vocab = z.shape[-1]
    if options.eps:
        losses = losses + (options.eps / vocab) * (jnp.sum(w) * log_s - (z - m) @ w)
    lse = m[:, 0] + log_s
    if options.z_loss:
        losses = losses + options.z_loss * w_y * lse ** 2  # [LCE-ZLOSS]
    losses = jnp.where(valid, losses, 0.0)
    if not with_grad:
        return losses, None
    # [GRAD-CE] with the z-loss term 2 z_loss w[y] lse p, then the softcap's chain rule.
    c = r * (1.0 - options.eps) * w_y
    smooth = r * (options.eps / vocab)
    zc = r * 2.0 * options.z_loss * w_y * lse
    grad = ((c + smooth * jnp.sum(w) + zc) / s)[:, None] * e
    grad = grad - jnp.where(jnp.arange(vocab) == y[:, None], c[:, None], 0.0)
    if options.eps:
        grad = grad - smooth[:, None] * w
    grad = jnp.where(valid[:, None], grad, 0.0)
    if options.softcap is not None:
        grad = grad * (1.0 - (z / options.softcap) ** 2)
    return losses, grad


@functools.partial(jax.custom_jvp, nondiff_argnums=(7,))
def _scan_gradients(h, weight, y, valid, w_y, w, r, options):
    """Losses, d hidden and d weight over all chunks, for per-row factors ``r``, in the
    computation dtype (float32 for half-precision inputs [GEN-HALF]): the tangent
    contracts them before anything is rounded to the input dtype.

    A custom JVP call for reverse mode's sake, with JAX's own JVP: reverse mode
    linearizes :func:`_scaled_total_jvp` by partial evaluation, which evaluates a
    custom JVP call whose inputs are all known as it is, but takes a bare scan apart
    and hoists what no chunk changes out of its body, the zeros ``jnp.where`` fills a
    chunk's logits with among them: one chunk of logits more in memory."""
    n = h.shape[0]
    xs = _chunks(options, n, h, y, valid, w_y, r)

    def body(d_weight, chunk):
        h_c, y_c, valid_c, w_y_c, r_c = chunk
        losses, d_h, d_w = _chunk_terms(h_c, weight, y_c, valid_c, w_y_c, w, r_c, options,
                                        with_grad=True)
        return d_weight + d_w, (losses, d_h)

    (zeros,) = core.varying_like(h, jnp.zeros(weight.shape, w.dtype))  # a per-shard sum
    d_weight, (losses, d_hidden) = jax.lax.scan(body, zeros, xs)
    return losses.reshape(-1)[:n], d_hidden.reshape(-1, h.shape[1])[:n], d_weight


@functools.partial(_scan_gradients.defjvp, symbolic_zeros=True)
def _scan_gradients_jvp(options, primals, tangents):
    """JAX's own JVP of the scan along the perturbed inputs (for [HVP-LCE])."""
    moving = [i for i, t in enumerate(tangents) if core.perturbed(t)]

    def along(*values):
        args = list(primals)
        for i, value in zip(moving, values):
            args[i] = value
        return _scan_gradients.fun(*args, options)

    return jax.jvp(along, [primals[i] for i in moving], [tangents[i] for i in moving])


@functools.partial(jax.custom_jvp, nondiff_argnums=(7,))
def _scaled_total(h, weight, y, valid, w_y, w, scale, options):
    n = h.shape[0]
    xs = _chunks(options, n, h, y, valid, w_y)
    losses = jax.lax.map(lambda c: _chunk_terms(*c[:1], weight, *c[1:], w, None, options,
                                                with_grad=False), xs)
    return scale * jnp.sum(losses)


@functools.partial(_scaled_total.defjvp, symbolic_zeros=True)
def _scaled_total_jvp(options, primals, tangents):
    """``scale * sum_i l_i`` and its gradients, computed in the same pass; the tangent is
    ``<d hidden, t_hidden> + <d weight, t_weight>`` [JVP], which JAX transposes into the
    gradients times the upstream scalar, and differentiates for the HVP [HVP-LCE]."""
    h, weight, y, valid, w_y, w, scale = primals
    dh, dweight = tangents[:2]
    r = jnp.broadcast_to(scale, y.shape).astype(w.dtype)
    losses, d_hidden, d_weight = _scan_gradients(h, weight, y, valid, w_y, w, r, options)
    total = scale * jnp.sum(losses)
    return total, core.tangent(total, *(
        jnp.sum(g.astype(w.dtype) * t.astype(w.dtype)) if core.perturbed(t) else None
        for g, t in ((d_hidden, dh), (d_weight, dweight))))


def _rows(h, weight, y, valid, w_y, w, options):
    """Per-row losses (``"none"``). Each chunk is rematerialized in the backward pass
    (``jax.checkpoint``): reverse mode keeps no chunk's logits, and recomputes them once
    with the per-row upstream gradient."""
    n = h.shape[0]
    xs = _chunks(options, n, h, y, valid, w_y)

    @jax.checkpoint
    def one_chunk(weight, c):
        h_c, y_c, valid_c, w_y_c = c
        return _chunk_rows(h_c, weight, y_c, valid_c, w_y_c, w, options)

    losses = jax.lax.map(lambda c: one_chunk(weight, c), xs)
    return losses.reshape(-1)[:n]


@functools.partial(jax.custom_jvp, nondiff_argnums=(6,))
def _chunk_rows(h, weight, y, valid, w_y, w, options):
    return _chunk_logits_terms(h, weight, y, valid, w_y, w, None, options, False)[0]


@functools.partial(_chunk_rows.defjvp, symbolic_zeros=True)
def _chunk_rows_jvp(options, primals, tangents):
    """[JVP] of one chunk's rows: ``sum_c G_ic da_ic`` with
    ``da = t_hidden weight^T + hidden t_weight^T``."""
    h, weight, y, valid, w_y, w = primals
    dh, dweight = tangents[:2]
    ones = jnp.ones(y.shape, w.dtype)
    losses, grad = _chunk_logits_terms(h, weight, y, valid, w_y, w, ones, options, True)
    da = core.tangent(
        grad, _times_transposed(dh, weight, w.dtype) if core.perturbed(dh) else None,
        _times_transposed(h, dweight, w.dtype) if core.perturbed(dweight) else None)
    return losses, jnp.sum(grad * da, axis=-1)


def _times_transposed(a, b, dtype):
    """``a @ b.T`` with sums in ``dtype`` (float32 for half-precision inputs)."""
    return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=dtype)
