"""Argument checks for wce_torch (spec section 10).

Every check runs in eager calls. Under ``torch.compile`` and the torch.func transforms
(``vmap``, ``grad``, ``jvp``, ...) the checks that look at tensor values (target range,
probabilities in [0, 1], the softmax-input warning) are skipped, since they would break
the graph or the transform; the losses then follow spec section 11: an
out-of-range target gives NaN, never another class.
"""

from __future__ import annotations

import numbers
import warnings

import torch

from wce_torch import _core as core

REDUCTIONS = ("none", "mean", "sum")
PROBABILITY_ATOL = 1e-6  # [WARN-PROBABILITY-INPUT]


class ProbabilityInputWarning(UserWarning):
    """cross_entropy was given what looks like probabilities instead of logits."""


def values_visible() -> bool:
    """False while torch.compile traces or a torch.func transform runs: value checks
    would cost a graph break, or break the transform."""
    return not core.traced()


def reduction(size_average, reduce, reduction: str) -> str:
    """torch's legacy ``size_average``/``reduce`` arguments map to ``reduction`` as in torch."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        reduction = "none" if not reduce else ("mean" if size_average else "sum")
        warnings.warn("size_average and reduce are deprecated; use reduction="
                      f"{reduction!r} instead", DeprecationWarning, stacklevel=3)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got reduction={reduction!r}")
    return reduction


def tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def floating(x, name: str) -> torch.Tensor:
    tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {name}.dtype={x.dtype}")
    return x


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs, the input's dtype otherwise [GEN-HALF]."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def class_axis(x: torch.Tensor, name: str) -> int:
    """The class axis, as in torch: 0 for ``(C,)``, 1 otherwise."""
    if x.dim() == 0:
        raise ValueError(f"{name} must have a class axis: shape (C,), (N, C) or "
                         f"(N, C, d1, ..., dk), got a 0-d {name}")
    return 0 if x.dim() == 1 else 1


def real_param(value, name: str):
    """weight / pos_weight: None or a real tensor; converted later [GEN-PARAM-DTYPE]."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_complex():
        raise TypeError(f"{name} must be a real tensor, got {name}.dtype={value.dtype}")
    return value


def class_weight(weight, num_classes: int, name: str = "weight", shape=None):
    """A class-weight vector of shape ``(num_classes,)``; with the input's ``shape``, a
    wrong size that matches another axis hints at the class axis."""
    weight = real_param(weight, name)
    if weight is not None and tuple(weight.shape) != (num_classes,):
        raise ValueError(f"{name} must be a 1-D tensor with one entry per class, shape "
                         f"({num_classes},), got {name}.shape={tuple(weight.shape)}"
                         + _class_axis_hint(weight, shape))
    return weight


def _class_axis_hint(weight, shape) -> str:
    if shape is None or len(shape) < 2:
        return ""
    hint = f"; the class axis is axis 1 of the input's shape {tuple(shape)}, as in torch"
    others = [k for k, d in enumerate(shape) if k != 1 and tuple(weight.shape) == (d,)]
    if others:
        hint += (f", and {weight.shape[0]} is the size of axis {others[-1]}: move the "
                 f"classes of channels-last input to axis 1 with input.movedim("
                 f"{others[-1]}, 1)")
    return hint


def broadcastable(value, name: str, shape):
    value = real_param(value, name)
    if value is None:
        return None
    try:
        ok = torch.broadcast_shapes(value.shape, shape) == torch.Size(shape)
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must broadcast to the input shape {tuple(shape)} "
                         f"(right-aligned, a 1-D {name} lines up with the last dimension), "
                         f"got {name}.shape={tuple(value.shape)}")
    return value


def label_smoothing(eps) -> float:
    if isinstance(eps, torch.Tensor):
        eps = eps.item()
    eps = float(eps)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got label_smoothing={eps!r}")
    return eps


def ignore_index(value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"ignore_index must be a Python integer, got ignore_index={value!r}")
    return int(value)


def is_probability_target(target: torch.Tensor) -> bool:
    """Floating target: probabilities; integer: class indices [CE-*] [CEP-*]."""
    if target.is_floating_point():
        return True
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"target must hold class indices (an integer dtype) or class "
                        f"probabilities (a floating dtype), got target.dtype={target.dtype}")
    return False


def without_axis(shape, axis: int) -> tuple:
    """``shape`` without the class axis: the shape of class-index targets."""
    return tuple(d for i, d in enumerate(shape) if i != axis)


def linear_weight(weight, hidden) -> None:
    """[LCE-ELEM]: ``weight`` is ``(V, D)`` for ``hidden`` of ``(..., D)``."""
    if weight.dim() != 2 or hidden.dim() < 1 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must have shape (V, D) with D = hidden.shape[-1] = "
                         f"{hidden.shape[-1] if hidden.dim() else None}, got "
                         f"weight.shape={tuple(weight.shape)}")


def class_indices(target, loss: str) -> None:
    """A loss of class indices only: an integer target [GEN-INT-TARGET]."""
    if is_probability_target(target):
        raise TypeError(f"{loss} takes class indices: target must have an integer dtype, "
                        f"got target.dtype={target.dtype}")


def target_shape(target: torch.Tensor, expected, what: str) -> None:
    if tuple(target.shape) != tuple(expected):
        raise ValueError(f"target must have {what}, {tuple(expected)}, got "
                         f"target.shape={tuple(target.shape)}")


def probability_target_shape(target: torch.Tensor, shape, axis: int) -> None:
    """A floating target holds probabilities of the input's shape; one of the shape of
    class indices is most likely class labels in a floating dtype, and says so."""
    if tuple(target.shape) == without_axis(shape, axis) != tuple(shape):
        raise ValueError(f"target must have the input's shape {tuple(shape)} for class "
                         f"probabilities (a floating target), got target.shape="
                         f"{tuple(target.shape)} and target.dtype={target.dtype}: class "
                         f"indices need an integer dtype, e.g. target.long()")
    target_shape(target, shape, "the input's shape (probabilities)")


def class_target_range(target: torch.Tensor, num_classes: int, ignore: int) -> None:
    """[ERR-TARGET-RANGE]: never wrapped or clamped to another class."""
    if not values_visible() or target.numel() == 0:
        return
    t = target.to(torch.int64)
    bad = (t != ignore) & ((t < 0) | (t >= num_classes))
    if bad.any():
        raise ValueError(f"target values must be class indices in [0, {num_classes}) or "
                         f"ignore_index={ignore}, got target value {t[bad][0].item()}")


def class_index_arguments(input, target, weight, ignore_index: int, loss: str,
                          weight_name: str = "weight", shards: int = 1,
                          target_range: bool = True) -> tuple:
    """The arguments of a loss of class indices, checked in one order: ``input``'s class
    axis, an integer ``target`` of the input's shape without it, ``weight`` of shape
    ``(C,)`` and targets in ``[0, shards * C)`` or ``ignore_index`` (a class-parallel
    loss's shards each hold ``C`` of the classes; ``target_range=False`` leaves this last
    check to the caller). Returns ``(axis, weight)``."""
    axis = class_axis(input, "input")
    tensor(target, "target")
    class_indices(target, loss)
    weight = class_weight(weight, input.shape[axis], weight_name, input.shape)
    target_shape(target, without_axis(input.shape, axis),
                 "the input's shape without the class axis")
    if target_range:
        class_target_range(target, input.shape[axis] * shards, ignore_index)
    return axis, weight


def unit_interval(values: torch.Tensor, name: str) -> None:
    """[ERR-BCE-RANGE] [ERR-BCE-TARGET-RANGE]; NaN is outside."""
    if not values_visible() or values.numel() == 0:
        return
    low, high = torch.aminmax(values.detach())  # one pass, no mask; NaN propagates
    if not (low >= 0 and high <= 1):
        bad = ~((values >= 0) & (values <= 1))
        raise ValueError(f"binary_cross_entropy {name} values must lie in [0, 1], got "
                         f"{name} value {values[bad][0].item()}")


def warn_if_probabilities(rows: torch.Tensor) -> None:
    """[WARN-PROBABILITY-INPUT] on ``(M, C)`` rows; one row decides in the common case."""
    if not values_visible() or rows.shape[0] == 0 or rows.shape[-1] < 2:
        return

    def looks_like_probabilities(r):
        r = r.detach()
        sums = r.sum(dim=-1, dtype=torch.float64)
        return bool((r >= 0).all() and ((sums - 1.0).abs() <= PROBABILITY_ATOL).all())

    if looks_like_probabilities(rows[0]) and looks_like_probabilities(rows):
        warnings.warn(
            "cross_entropy expects logits, but every row of input along the class axis is "
            "non-negative and sums to 1: it looks like softmax output. Pass the logits "
            "instead; if these really are logits, silence this with "
            "warnings.filterwarnings('ignore', category=wce_torch.ProbabilityInputWarning).",
            ProbabilityInputWarning,
            stacklevel=3,
        )


def binary_target(target, shape):
    tensor(target, "target")
    if target.is_complex():
        raise TypeError(f"target must be a real tensor, got target.dtype={target.dtype}")
    target_shape(target, shape, "the input's shape")
    return target


# ----------------------------------------------------------------------------------
# Options of the focal, linear and weight functions (Python values).

SCHEMES = ("inverse", "balanced", "max", "inverse_sqrt", "effective_number",
           "median_frequency")
NORMALIZATIONS = (None, "classes", "samples")


def gamma(value) -> float:
    """[FOCAL-SIGMOID] [FOCAL-SOFTMAX]: the focusing exponent, non-negative."""
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
