"""Row machinery shared by wce_jax's losses: class terms, weight casting, reduction,
and the collectives of data parallelism [DP-AXIS].

Every loss module imports these by their public names; the mirror of this file is
wce_torch/_core.py.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def varying_like(reference, *arrays):
    """``arrays`` made to vary over the same ``shard_map`` axes as ``reference``.

    Inside ``shard_map``, JAX types each value as varying or not over each mesh axis, and
    a custom VJP must return cotangents of its inputs' types. A replicated weight vector
    used with sharded logits has a cotangent that varies; casting the weight to varying
    first makes that legal, and JAX sums the cotangent over the axes when it transposes
    the cast, which is the weight's global gradient. Outside ``shard_map`` nothing changes.
    """
    axes = _varying_axes(reference)
    out = []
    for a in arrays:
        missing = tuple(sorted(axes - _varying_axes(a), key=str))
        out.append(jax.lax.pcast(a, missing, to="varying") if missing else a)
    return out


def _varying_axes(a) -> frozenset:
    if not hasattr(jax, "typeof"):  # JAX < 0.6.1 types no value as varying
        return frozenset()
    manual = getattr(jax.typeof(a), "manual_axis_type", None)
    return frozenset(manual.varying) if manual is not None else frozenset()


def class_weights_or_ones(weight, num_classes, dtype):
    """The class weights ``w`` of [CE-ELEM] in ``dtype``: ``weight``, or ones if None."""
    return jnp.ones((num_classes,), dtype) if weight is None else weight.astype(dtype)


def class_terms(target, w, num_classes, ignore_index):
    """Per-element valid mask, safe class index, and target weight.

    ``w_y`` is 0 for ignored elements and NaN for an out-of-range target in a traced
    call [TRACE-TARGET-RANGE]; it is also what the weighted mean divides by [CE-MEAN].
    """
    target = target.astype(jax.dtypes.canonicalize_dtype(jnp.int64))  # no wrap-around
    valid = target != ignore_index
    in_range = (target >= 0) & (target < num_classes)
    bad = valid & ~in_range
    y = jnp.where(valid & in_range, target, 0).astype(jnp.int32)
    w_y = jnp.where(bad, jnp.nan, jnp.where(valid, w[y], 0.0))
    return valid, y, w_y, bad


def reduce(losses, target_weights, reduction, axis_name=None, valid=None, by_rows=False):
    """[CE-NONE] [CE-SUM] [CE-MEAN]; ``target_weights=None`` means the plain mean.

    A mean over zero weight is undefined: its value is NaN, and its gradient is NaN for
    valid elements and exactly zero for ignored ones [EDGE-ZERO-WEIGHT-SUM]
    [EDGE-ALL-IGNORED] [EDGE-EMPTY]; with ``valid`` (the mask of non-ignored elements)
    its tangent is 0 when every element is ignored and NaN otherwise [JVP]. With
    ``axis_name``, numerator and denominator are summed over that named axis first: the
    global mean of all shards [DP-GLOBAL]. ``by_rows``: the sum as :func:`summed_by_rows`
    (``"differentiated"``: with ``differentiated_only=True``).
    """
    if reduction == "none":
        return losses
    total = (summed_by_rows(losses, differentiated_only=by_rows == "differentiated")
             if by_rows else jnp.sum(losses))
    total = all_reduced(total, axis_name)
    if reduction == "sum":
        return total
    if target_weights is None:
        count = all_reduced(losses.size, axis_name)
        return total / jnp.where(count == 0, jnp.nan, count)
    if valid is None:
        count = all_reduced(jnp.sum(target_weights), axis_name)
        return total / jnp.where(count == 0, jnp.nan, count)
    count, num_valid = all_reduced(
        jnp.stack([jnp.sum(target_weights), jnp.sum(valid, dtype=target_weights.dtype)]),
        axis_name)
    # Divided by NaN if some element is valid, else by infinity: total is 0 then, and so
    # is its tangent; the value is NaN either way.
    undefined = jnp.where(num_valid == 0, jnp.inf, jnp.nan)
    nan_if_undefined = jnp.where(count == 0, jnp.nan, 0.0).astype(total.dtype)
    return total / jnp.where(count == 0, undefined, count) + nan_if_undefined


def summed_by_rows(losses, differentiated_only=False):
    """The sum of ``losses``; on the CPU, for a matrix of them, the row sums are a product
    with a vector of ones. XLA's CPU backend hands a reduction to a library fusion that
    takes some element-wise operations along but not others (the sigmoid's division, a
    select): their operands are then written to memory, several logits-sized arrays. A
    matrix-vector product takes the losses from one loop, one buffer.
    ``differentiated_only``: the product only where the sum is differentiated (a training
    step, where the losses share their operands with the gradient); the loss alone keeps
    the plain sum, which the library fusion then computes with no buffer at all. Which is
    faster depends on the expression: each loss that uses this says what it measured.
    Elsewhere, XLA fuses the reduction itself."""
    if losses.ndim < 2 or losses.size == 0:
        return jnp.sum(losses)
    rows = losses.reshape(losses.size // losses.shape[-1], losses.shape[-1])
    return (_summed_by_rows_if_differentiated if differentiated_only else _by_rows)(rows)


def _by_rows(rows):
    def on_cpu(rows):
        ones = jnp.ones((rows.shape[-1],), rows.dtype)
        return jnp.sum(jnp.dot(rows, ones, precision=jax.lax.Precision.HIGHEST))

    return jax.lax.platform_dependent(rows, cpu=on_cpu, default=jnp.sum)


@jax.custom_jvp
def _summed_by_rows_if_differentiated(rows):
    return jnp.sum(rows)


@_summed_by_rows_if_differentiated.defjvp
def _summed_by_rows_jvp(primals, tangents):
    (rows,), (d_rows,) = primals, tangents
    return _by_rows(rows), jnp.sum(d_rows)


def perturbed(t) -> bool:
    """Whether a tangent given to a custom JVP rule (``symbolic_zeros=True``) is not a
    symbolic zero: only the perturbed arguments' terms are computed."""
    return not isinstance(t, jax.custom_derivatives.SymbolicZero)


def tangent(output, *terms):
    """A JVP rule's tangent output: the sum of the terms that are not None, or zeros like
    ``output`` if every term is None."""
    terms = [t for t in terms if t is not None]
    return functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(output)


def all_reduced(value, axis_name):
    """``value`` summed over the named axis (or axes) ``axis_name``; itself if None."""
    return value if axis_name is None else jax.lax.psum(value, axis_name)
