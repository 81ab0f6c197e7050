"""Argument checks for wce_jax (spec section 10), and the checked mode for traced code.

Static checks (shapes, dtypes, argument values) raise in every call, traced or not
[TRACE-STATIC]. Value checks look at array contents: they raise in eager calls with
concrete arrays; in traced calls they do nothing [TRACE-TARGET-RANGE] [TRACE-BCE-RANGE],
unless the call is traced inside :func:`checked`, where they become checkify checks.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import numbers
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify
try:
    from jax.extend.core import concrete_or_error
except ImportError:  # JAX < 0.10 keeps it in jax.core
    from jax.core import concrete_or_error

REDUCTIONS = ("none", "mean", "sum")
PROBABILITY_ATOL = 1e-6  # [WARN-PROBABILITY-INPUT]

_CHECKS_ON = contextvars.ContextVar("wce_jax_checks_on", default=False)


class ProbabilityInputWarning(UserWarning):
    """cross_entropy was given what looks like probabilities instead of logits."""


def checked(fn):
    """Turn wce_jax's value checks into errors inside jitted or vmapped code.

    Returns ``checkify.checkify(fn)`` with the checks of every wce_jax loss that ``fn``
    calls switched on: the result is a function returning ``(error, out)``, which can be
    jitted; call ``error.throw()`` outside jit to raise. Without it, a traced call cannot
    raise on values and follows spec section 11 (an out-of-range target gives NaN)::

        err, loss = jax.jit(wce_jax.checked(loss_fn))(params, batch)
        err.throw()  # ValueError-like JaxRuntimeError naming the bad target value
    """

    @functools.wraps(fn)
    def with_checks(*args, **kwargs):
        token = _CHECKS_ON.set(True)
        try:
            return fn(*args, **kwargs)
        finally:
            _CHECKS_ON.reset(token)

    return checkify.checkify(with_checks, errors=checkify.user_checks)


def is_traced(*arrays) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


def concrete(x):
    """``x``'s value if it is known now (eager calls, also under an eager ``jax.grad``),
    else None (inside ``jit`` or ``vmap``)."""
    if not isinstance(x, jax.core.Tracer):
        return x
    try:
        return concrete_or_error(None, x)
    except jax.errors.ConcretizationTypeError:
        return None


@dataclasses.dataclass(frozen=True)
class ClassRange:
    """[ERR-TARGET-RANGE]: a class index in [0, C) or ignore_index."""

    num_classes: int
    ignore_index: int

    def __call__(self, target):
        wide = np.int64 if isinstance(target, np.ndarray) else jax.dtypes.canonicalize_dtype(
            jnp.int64)
        t = target.astype(wide)  # compare without wrap-around
        return (t == self.ignore_index) | ((t >= 0) & (t < self.num_classes))


@dataclasses.dataclass(frozen=True)
class UnitInterval:
    """[ERR-BCE-RANGE] [ERR-BCE-TARGET-RANGE]: in [0, 1]; NaN is outside."""

    def __call__(self, values):
        return (values >= 0) & (values <= 1)


@dataclasses.dataclass(frozen=True)
class FiniteNonNegative:
    """[CW-ERRORS]: counts are finite and non-negative."""

    def __call__(self, values):
        return (values >= 0) & (values < float("inf"))


@dataclasses.dataclass(frozen=True)
class Positive:
    """[CW-ZERO-COUNT]: a count or number of positives above zero."""

    def __call__(self, values):
        return values > 0


@functools.partial(jax.jit, static_argnums=0)
def _violation(predicate, values):
    """(all ok, index of the first offender, its value), computed on the device."""
    ok = predicate(values).ravel()
    index = jnp.argmin(ok) if ok.size else jnp.zeros((), jnp.int32)
    return jnp.all(ok), index, values.ravel()[index] if ok.size else jnp.zeros((), values.dtype)


def require(predicate, values, message: str) -> None:
    """A value check: ``predicate(values)`` must hold everywhere.

    Eager calls raise ValueError with ``message`` formatted with ``{value}`` and
    ``{index}``, the first offending value and its flat index. Calls inside ``jit`` or
    ``vmap`` cannot look at values: they check nothing, unless traced inside
    :func:`checked`, where the check becomes a checkify check.
    """
    known = concrete(values)
    if known is None:
        if _CHECKS_ON.get():
            ok, index, first = _violation(predicate, values)
            checkify.check(ok, message, value=first, index=index)
        return
    ok, index, first = _violation(predicate, known)
    if is_traced(ok):  # known values closed over inside someone's trace: look on the host
        host = np.asarray(known).ravel()
        ok_host = np.asarray(predicate(host))
        ok, index = ok_host.all(), int(np.argmin(ok_host)) if host.size else 0
        first = host[index] if host.size else 0
    if not bool(ok):
        raise ValueError(message.format(value=np.asarray(first).item(),
                                        index=np.asarray(index).item()))


def reduction(reduction) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got reduction={reduction!r}")
    return reduction


def floating(x, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {name}.dtype={x.dtype}")
    return x


def compute_dtype(dtype) -> jnp.dtype:
    """float32 for half-precision inputs, the input's dtype otherwise [GEN-HALF]."""
    return jnp.float32 if jnp.finfo(dtype).bits < 32 else jnp.dtype(dtype)


def class_axis(x, axis: int, name: str) -> int:
    if x.ndim == 0:
        raise ValueError(
            f"{name} must have a class axis: shape (C,), (N, C) or (N, ..., C), got a 0-d {name}"
        )
    if not isinstance(axis, numbers.Integral) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis must be an integer in [{-x.ndim}, {x.ndim}) for {name} of "
                         f"shape {x.shape}, got axis={axis!r}")
    return int(axis) % x.ndim


def real_param(value, name: str):
    """weight / pos_weight: None or a real array; converted later [GEN-PARAM-DTYPE]."""
    if value is None:
        return None
    value = jnp.asarray(value)
    if jnp.iscomplexobj(value) or not (jnp.issubdtype(value.dtype, jnp.number)
                                       or value.dtype == jnp.bool_):
        raise TypeError(f"{name} must be a real array, got {name}.dtype={value.dtype}")
    return value


def class_weight(weight, num_classes: int, name: str = "weight", shape=None, axis=None):
    """A class-weight vector of shape ``(num_classes,)``; with the input's ``shape`` and
    class ``axis``, a wrong size that matches another axis hints at the class axis."""
    weight = real_param(weight, name)
    if weight is not None and weight.shape != (num_classes,):
        raise ValueError(f"{name} must be a 1-D array with one entry per class, shape "
                         f"({num_classes},), got {name}.shape={weight.shape}"
                         + _class_axis_hint(weight, shape, axis))
    return weight


def _class_axis_hint(weight, shape, axis) -> str:
    if shape is None or len(shape) < 2:
        return ""
    hint = f"; the class axis is axis={axis} of the input's shape {tuple(shape)}"
    others = [k for k, d in enumerate(shape) if k != axis and weight.shape == (d,)]
    if others:
        hint += (f", and {weight.shape[0]} is the size of axis {others[0]}: for "
                 f"channels-first (N, C, ...) input as in torch, pass axis={others[0]}")
    return hint


def broadcastable(value, name: str, shape):
    value = real_param(value, name)
    if value is None:
        return None
    try:
        ok = np.broadcast_shapes(value.shape, tuple(shape)) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must broadcast to the input shape {tuple(shape)} "
                         f"(right-aligned, a 1-D {name} lines up with the last dimension), "
                         f"got {name}.shape={value.shape}")
    return value


def label_smoothing(eps) -> float:
    if is_traced(eps):
        raise TypeError("label_smoothing must be a Python number (it is static under jit), "
                        "got a traced value")
    eps = float(eps)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got label_smoothing={eps!r}")
    return eps


def ignore_index(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"ignore_index must be a Python integer, got ignore_index={value!r}")
    return int(value)


def is_probability_target(target) -> bool:
    """Floating target: probabilities; integer: class indices [CE-*] [CEP-*]."""
    if jnp.issubdtype(target.dtype, jnp.floating):
        return True
    if target.dtype == jnp.bool_ or not jnp.issubdtype(target.dtype, jnp.integer):
        raise TypeError(f"target must hold class indices (an integer dtype) or class "
                        f"probabilities (a floating dtype), got target.dtype={target.dtype}")
    return False


def without_axis(shape, axis: int) -> tuple:
    """``shape`` without the class axis: the shape of class-index targets."""
    return tuple(d for i, d in enumerate(shape) if i != axis)


def linear_weight(weight, hidden) -> None:
    """[LCE-ELEM]: ``weight`` is ``(V, D)`` for ``hidden`` of ``(..., D)``."""
    if weight.ndim != 2 or hidden.ndim < 1 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must have shape (V, D) with D = hidden.shape[-1] = "
                         f"{hidden.shape[-1] if hidden.ndim else None}, got "
                         f"weight.shape={weight.shape}")


def class_indices(target, loss: str) -> None:
    """A loss of class indices only: an integer target [GEN-INT-TARGET]."""
    if is_probability_target(target):
        raise TypeError(f"{loss} takes class indices: target must have an integer dtype, "
                        f"got target.dtype={target.dtype}")


def target_shape(target, expected, what: str) -> None:
    if target.shape != tuple(expected):
        raise ValueError(f"target must have {what}, {tuple(expected)}, got "
                         f"target.shape={target.shape}")


def probability_target_shape(target, shape, axis: int) -> None:
    """A floating target holds probabilities of the input's shape; one of the shape of
    class indices is most likely class labels in a floating dtype, and says so."""
    if target.shape == without_axis(shape, axis) and target.shape != tuple(shape):
        raise ValueError(f"target must have the input's shape {tuple(shape)} for class "
                         f"probabilities (a floating target), got target.shape="
                         f"{target.shape} and target.dtype={target.dtype}: class indices "
                         f"need an integer dtype, e.g. target.astype(jnp.int32)")
    target_shape(target, shape, "the logits' shape (probabilities)")


def class_target_range(target, num_classes: int, ignore: int) -> None:
    """[ERR-TARGET-RANGE]: never wrapped or clamped to another class."""
    require(ClassRange(num_classes, ignore), target,
            f"target values must be class indices in [0, {num_classes}) or "
            f"ignore_index={ignore}, got target value {{value}}")


def class_index_arguments(x, target, weight, ignore_index: int, axis: int, loss: str,
                          x_name: str, weight_name: str = "weight", shards: int = 1):
    """The arguments of a loss of class indices, checked in one order: ``x``'s class axis,
    an integer ``target`` of ``x``'s shape without it, ``weight`` of shape ``(C,)`` and
    targets in ``[0, shards * C)`` or ``ignore_index`` (a class-parallel loss's shards
    each hold ``C`` of the classes). Returns ``(axis, target, weight)``."""
    axis = class_axis(x, axis, x_name)
    target = jnp.asarray(target)
    class_indices(target, loss)
    weight = class_weight(weight, x.shape[axis], weight_name, x.shape, axis)
    target_shape(target, without_axis(x.shape, axis),
                 f"the {x_name}' shape without the class axis")
    class_target_range(target, x.shape[axis] * shards, ignore_index)
    return axis, target, weight


def unit_interval(values, name: str) -> None:
    """[ERR-BCE-RANGE] [ERR-BCE-TARGET-RANGE]"""
    require(UnitInterval(), values,
            f"binary_cross_entropy {name} values must lie in [0, 1], got {name} value {{value}}")


def warn_if_probabilities(x, axis: int) -> None:
    """[WARN-PROBABILITY-INPUT], eager calls only; one row decides in the common case."""
    x = concrete(x)
    if x is None or x.ndim == 0 or x.shape[axis] < 2 or x.size == 0:
        return

    def looks_like_probabilities(rows):
        rows = np.asarray(rows, dtype=np.float64)
        sums = rows.sum(axis=-1)
        return bool((rows >= 0).all() and (np.abs(sums - 1.0) <= PROBABILITY_ATOL).all())

    index = tuple(slice(None) if d == axis else 0 for d in range(x.ndim))
    first = x[index]
    if is_traced(first):  # known values closed over inside someone's trace
        x = np.asarray(x)
        first = x[index]
    if looks_like_probabilities(first) and looks_like_probabilities(
            np.moveaxis(np.asarray(x), axis, -1)):
        warnings.warn(
            "cross_entropy expects logits, but every row of the input along the class axis "
            "is non-negative and sums to 1: it looks like softmax output. Pass the logits "
            "instead; if these really are logits, silence this with "
            "warnings.filterwarnings('ignore', category=wce_jax.ProbabilityInputWarning).",
            ProbabilityInputWarning,
            stacklevel=3,
        )


def binary_target(target, shape):
    target = jnp.asarray(target)
    if jnp.iscomplexobj(target) or not (jnp.issubdtype(target.dtype, jnp.number)
                                        or target.dtype == jnp.bool_):
        raise TypeError(f"target must be a real array, got target.dtype={target.dtype}")
    target_shape(target, shape, "the input's shape")
    return target


# ----------------------------------------------------------------------------------
# Options of the focal, linear and weight functions (Python values, static under jit).

SCHEMES = ("inverse", "balanced", "max", "inverse_sqrt", "effective_number",
           "median_frequency")
NORMALIZATIONS = (None, "classes", "samples")


def gamma(value) -> float:
    """[FOCAL-SIGMOID] [FOCAL-SOFTMAX]: the focusing exponent, non-negative."""
    if is_traced(value):
        raise TypeError("gamma must be a Python number (it is static under jit), got a "
                        "traced value")
    value = float(value)
    if not value >= 0:
        raise ValueError(f"gamma must be non-negative, got gamma={value!r}")
    return value


def z_loss(value) -> float:
    """[LCE-ZLOSS]: non-negative."""
    value = float(value)
    if not value >= 0:
        raise ValueError(f"z_loss must be non-negative, got z_loss={value!r}")
    return value


def softcap(value) -> float | None:
    """[LCE-SOFTCAP]: positive, or None for no cap."""
    if value is None:
        return None
    value = float(value)
    if not value > 0:
        raise ValueError(f"softcap must be positive or None, got softcap={value!r}")
    return value


#: A default chunk holds about 2**24 logits (64 MiB in float32), whatever V is.
CHUNK_LOGITS = 2 ** 24


def chunk_size(value, vocab: int) -> int:
    """The rows a chunk of the linear cross-entropy holds: ``value``, a positive integer,
    or for None about ``CHUNK_LOGITS`` logits of a ``vocab``-class row (at least 16)."""
    if value is None:
        return max(16, CHUNK_LOGITS // max(vocab, 1))
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got "
                         f"chunk_size={value!r}")
    return int(value)


def weight_options(scheme, beta, normalize, max_weight) -> None:
    """Spec section 13: the scheme, ``beta``, ``normalize`` and ``max_weight``."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got scheme={scheme!r}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got beta={beta!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got "
                         f"normalize={normalize!r}")
    cap(max_weight)


def cap(max_weight) -> None:
    """[CW-ZERO-COUNT] [CW-POS-WEIGHT]: ``max_weight`` is positive or None."""
    if max_weight is not None and not max_weight > 0:
        raise ValueError(f"max_weight must be positive or None, got max_weight={max_weight!r}")
