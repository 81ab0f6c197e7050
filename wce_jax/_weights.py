"""Class-weight schemes, pos_weight, and balanced resampling (spec sections 13 and 15)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from wce_jax import _checks as check

Array = jax.Array

def class_weights(
    counts: ArrayLike,
    scheme: str = "balanced",
    *,
    beta: float = 0.999,
    normalize: str | None = None,
    max_weight: float | None = None,
) -> Array:
    r"""Class weights from per-class counts ``n_c`` (``N`` in all, ``C`` classes).

    Schemes [CW-INVERSE] ``1/n_c``, [CW-BALANCED] ``N/(C n_c)`` (scikit-learn's
    "balanced"), [CW-MAX] ``max(n)/n_c``, [CW-INVERSE-SQRT] ``1/sqrt(n_c)``,
    [CW-EFFECTIVE-NUMBER] ``(1-beta)/(1-beta^n_c)`` (Cui et al. 2019),
    [CW-MEDIAN-FREQUENCY] ``median(f)/f_c`` with ``f_c = n_c/N``.
    [CW-NORMALIZE] ``normalize="classes"``: mean 1 over the classes that occur;
    ``"samples"``: mean 1 per sample, ``sum_c n_c w_c = N``.
    [CW-ZERO-COUNT] a class with count 0 is an error, or gets ``max_weight`` (which also
    caps every weight); under ``jit`` it gets NaN unless ``max_weight`` is given.
    """
    check.weight_options(scheme, beta, normalize, max_weight)
    counts = jnp.asarray(counts)
    if counts.ndim != 1 or not jnp.issubdtype(counts.dtype, jnp.number) or jnp.iscomplexobj(
            counts):
        raise ValueError(f"counts must be a 1-D array of real counts, got counts with shape "
                         f"{counts.shape} and dtype {counts.dtype}")
    check.require(check.FiniteNonNegative(), counts,
                  "counts must be finite and non-negative, got count {value}")
    if max_weight is None:
        check.require(check.Positive(), counts,
                      "counts: class {index} has count {value}, so its weight would be "
                      "infinite; give max_weight= to cap it, or leave the class out")
    n = counts.astype(_float_dtype(counts))
    weights = _scheme_weights(n, scheme, beta, normalize, max_weight)
    trusted = jnp.all(check.FiniteNonNegative()(n))  # traced bad counts: all NaN
    return jnp.where(trusted, weights, jnp.nan)


def class_weights_from_labels(
    labels: ArrayLike,
    num_classes: int,
    scheme: str = "balanced",
    *,
    ignore_index: int = -100,
    beta: float = 0.999,
    normalize: str | None = None,
    max_weight: float | None = None,
) -> Array:
    """:func:`class_weights` of the label counts, ``ignore_index`` skipped [CW-FROM-LABELS]."""
    check.weight_options(scheme, beta, normalize, max_weight)
    counts = _label_counts(labels, num_classes, ignore_index)
    if max_weight is None:
        check.require(check.Positive(), counts,
                      "labels: class {index} has count {value}, so its weight would be "
                      "infinite; give max_weight= to cap it, or leave the class out")
    return _scheme_weights(counts, scheme, beta, normalize, max_weight)


def sample_weights_from_labels(
    labels: ArrayLike,
    num_classes: int,
    scheme: str = "inverse",
    *,
    ignore_index: int = -100,
    beta: float = 0.999,
    normalize: str | None = None,
    max_weight: float | None = None,
) -> Array:
    """One weight per sample, ``w[y_i]`` (0 if ignored), for resampling [RS-SAMPLE-WEIGHTS]."""
    labels = jnp.asarray(labels)
    w = class_weights_from_labels(labels, num_classes, scheme, ignore_index=ignore_index,
                                  beta=beta, normalize=normalize, max_weight=max_weight)
    y = labels.astype(jax.dtypes.canonicalize_dtype(jnp.int64))
    valid = (y != ignore_index) & (y >= 0) & (y < num_classes)
    return jnp.where(valid, w[jnp.where(valid, y, 0)], 0.0)


def balanced_indices(
    key: Array,
    labels: ArrayLike,
    num_classes: int,
    num_samples: int,
    scheme: str = "inverse",
    *,
    ignore_index: int = -100,
    **options,
) -> Array:
    """Indices of a resampled batch: ``num_samples`` draws (with replacement) of positions
    of ``labels`` (flattened), each with probability proportional to its sample weight
    [RS-SAMPLE-WEIGHTS]; with ``"inverse"`` every class that occurs is equally likely.
    The JAX counterpart of ``torch.utils.data.WeightedRandomSampler``."""
    w = sample_weights_from_labels(labels, num_classes, scheme, ignore_index=ignore_index,
                                   **options).ravel()
    return jax.random.choice(key, w.size, (num_samples,), replace=True, p=w / jnp.sum(w))


def pos_weight_from_labels(targets: ArrayLike, *, max_weight: float | None = None) -> Array:
    """Per-label negatives over positives along the last axis: the ``pos_weight`` that
    balances each label of a multi-label problem [CW-POS-WEIGHT]."""
    check.cap(max_weight)
    t = jnp.asarray(targets)
    if t.ndim < 1 or jnp.iscomplexobj(t) or not (jnp.issubdtype(t.dtype, jnp.number)
                                                 or t.dtype == jnp.bool_):
        raise ValueError(f"targets must be a real array of shape (..., L), got shape "
                         f"{t.shape} and dtype {t.dtype}")
    check.require(check.UnitInterval(), t, "targets must lie in [0, 1], got target {value}")
    t = t.astype(_float_dtype(t)).reshape(-1, t.shape[-1])
    positives = jnp.sum(t, axis=0)
    if max_weight is None:
        check.require(check.Positive(), positives,
                      "targets: label {index} has {value} positives, so its pos_weight "
                      "would be infinite; give max_weight= to cap it")
    weights = jnp.sum(1.0 - t, axis=0) / jnp.where(positives > 0, positives, jnp.nan)
    if max_weight is not None:
        weights = jnp.where(positives > 0, jnp.minimum(weights, max_weight), max_weight)
    return weights


def _float_dtype(a):
    """[CW-DTYPE]: floating inputs keep their dtype; others get the default float."""
    if jnp.issubdtype(a.dtype, jnp.floating):
        return a.dtype
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _label_counts(labels, num_classes, ignore_index):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got "
                         f"num_classes={num_classes!r}")
    ignore_index = check.ignore_index(ignore_index)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must have an integer dtype, got labels.dtype={labels.dtype}")
    check.require(check.ClassRange(num_classes, ignore_index), labels,
                  f"labels must be class indices in [0, {num_classes}) or "
                  f"ignore_index={ignore_index}, got label {{value}}")
    y = labels.astype(jax.dtypes.canonicalize_dtype(jnp.int64)).ravel()
    valid = (y != ignore_index) & (y >= 0) & (y < num_classes)
    counts = jnp.zeros(num_classes, jnp.int32).at[jnp.where(valid, y, 0)].add(valid)
    return counts.astype(jax.dtypes.canonicalize_dtype(jnp.float64))  # exact counts


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _scheme_weights(n, scheme, beta, normalize, max_weight):
    """Raw weights of the classes that occur, normalised, then capped (spec section 13)."""
    present = n > 0
    safe = jnp.where(present, n, 1.0)
    total, num_classes = jnp.sum(n), n.shape[0]
    if scheme == "inverse":
        raw = 1.0 / safe
    elif scheme == "balanced":
        raw = total / (num_classes * safe)
    elif scheme == "max":
        raw = jnp.max(n) / safe
    elif scheme == "inverse_sqrt":
        raw = 1.0 / jnp.sqrt(safe)
    elif scheme == "effective_number":
        log_beta = jnp.log(jnp.asarray(beta, n.dtype))
        raw = jnp.expm1(log_beta) / jnp.expm1(safe * log_beta)  # (1-b)/(1-b^n), no cancel
    else:  # median_frequency
        frequency = n / total
        raw = jnp.median(frequency) / jnp.where(present, frequency, 1.0)
    raw = jnp.where(present, raw, 0.0)
    if normalize == "classes":
        raw = raw * jnp.sum(present) / jnp.sum(raw)
    elif normalize == "samples":
        raw = raw * total / jnp.sum(n * raw)
    if max_weight is not None:
        return jnp.where(present, jnp.minimum(raw, max_weight), max_weight)
    return jnp.where(present, raw, jnp.nan)  # reached only under jit [CW-ZERO-COUNT]
