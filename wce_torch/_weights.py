"""Class-weight schemes, pos_weight, and balanced resampling (spec sections 13 and 15)."""

from __future__ import annotations

import torch

from wce_torch import _checks as check

def class_weights(counts, scheme="balanced", *, beta=0.999, normalize=None, max_weight=None):
    r"""Class weights from per-class counts ``n_c`` (``N`` in all, ``C`` classes).

    Schemes [CW-INVERSE] ``1/n_c``, [CW-BALANCED] ``N/(C n_c)`` (scikit-learn's
    "balanced"), [CW-MAX] ``max(n)/n_c``, [CW-INVERSE-SQRT] ``1/sqrt(n_c)``,
    [CW-EFFECTIVE-NUMBER] ``(1-beta)/(1-beta^n_c)`` (Cui et al. 2019),
    [CW-MEDIAN-FREQUENCY] ``median(f)/f_c`` with ``f_c = n_c/N``.
    [CW-NORMALIZE] ``normalize="classes"``: mean 1 over the classes that occur;
    ``"samples"``: mean 1 per sample, ``sum_c n_c w_c = N``.
    [CW-ZERO-COUNT] a class with count 0 is an error, or gets ``max_weight`` (which also
    caps every weight). Pass the result as ``weight=`` to the losses.
    """
    check.weight_options(scheme, beta, normalize, max_weight)
    counts = torch.as_tensor(counts)
    if counts.dim() != 1 or counts.is_complex() or counts.dtype == torch.bool:
        raise ValueError(f"counts must be a 1-D array of real counts, got counts with shape "
                         f"{tuple(counts.shape)} and dtype {counts.dtype}")
    n = counts.to(_float_dtype(counts))
    bad = ~(torch.isfinite(n) & (n >= 0))
    if check.values_visible() and bad.any():
        raise ValueError(f"counts must be finite and non-negative, got count "
                         f"{n[bad][0].item()}")
    if max_weight is None:
        _require_positive(n, "counts", "class {index} has count {value}, so its weight "
                          "would be infinite; give max_weight= to cap it, or leave the class out")
    return torch.where(bad.any(), torch.nan, _scheme_weights(n, scheme, beta, normalize,
                                                            max_weight))


def class_weights_from_labels(labels, num_classes, scheme="balanced", *, ignore_index=-100,
                              beta=0.999, normalize=None, max_weight=None):
    """:func:`class_weights` of the label counts, ``ignore_index`` skipped [CW-FROM-LABELS]."""
    check.weight_options(scheme, beta, normalize, max_weight)
    counts, _, _ = _label_counts(labels, num_classes, ignore_index)
    if max_weight is None:
        _require_positive(counts, "labels", "class {index} has count {value}, so its weight "
                          "would be infinite; give max_weight= to cap it, or leave the class out")
    return _scheme_weights(counts, scheme, beta, normalize, max_weight)


def sample_weights_from_labels(labels, num_classes, scheme="inverse", *, ignore_index=-100,
                               beta=0.999, normalize=None, max_weight=None):
    """One weight per sample, ``w[y_i]`` (0 if ignored) [RS-SAMPLE-WEIGHTS]: the weights of
    ``torch.utils.data.WeightedRandomSampler``, which with ``"inverse"`` draws every class
    that occurs equally often (see :func:`balanced_sampler`)."""
    check.weight_options(scheme, beta, normalize, max_weight)
    counts, y, valid = _label_counts(labels, num_classes, ignore_index)
    if max_weight is None:
        _require_positive(counts, "labels", "class {index} has count {value}, so its weight "
                          "would be infinite; give max_weight= to cap it, or leave the class out")
    w = _scheme_weights(counts, scheme, beta, normalize, max_weight)
    return torch.where(valid, w.index_select(0, torch.where(valid, y, 0)), 0.0).reshape(
        torch.as_tensor(labels).shape)


def balanced_sampler(labels, num_classes, num_samples=None, scheme="inverse", *,
                     ignore_index=-100, generator=None, **options):
    """A ``WeightedRandomSampler`` over the dataset's labels (one per sample, any integer
    dtype) that draws classes in balance, with replacement; ``num_samples`` defaults to
    the number of labels."""
    weights = sample_weights_from_labels(labels, num_classes, scheme,
                                         ignore_index=ignore_index, **options)
    weights = weights.reshape(-1).to(torch.float64)
    return torch.utils.data.WeightedRandomSampler(
        weights, weights.numel() if num_samples is None else num_samples, replacement=True,
        generator=generator)


def pos_weight_from_labels(targets, *, max_weight=None):
    """Per-label negatives over positives along the last axis: the ``pos_weight`` that
    balances each label of a multi-label problem [CW-POS-WEIGHT]."""
    check.cap(max_weight)
    t = torch.as_tensor(targets)
    if t.dim() < 1 or t.is_complex():
        raise ValueError(f"targets must be a real array of shape (..., L), got shape "
                         f"{tuple(t.shape)} and dtype {t.dtype}")
    t = t.to(_float_dtype(t))
    check.unit_interval(t, "targets")
    t = t.reshape(-1, t.shape[-1])
    positives = t.sum(dim=0)
    if max_weight is None:
        _require_positive(positives, "targets", "label {index} has {value} positives, so "
                          "its pos_weight would be infinite; give max_weight= to cap it")
    weights = (1.0 - t).sum(dim=0) / torch.where(positives > 0, positives, torch.nan)
    if max_weight is not None:
        weights = torch.where(positives > 0, weights.clamp_max(max_weight), max_weight)
    return weights


def _require_positive(values, name, message):
    """[CW-ZERO-COUNT] in eager calls (under torch.compile the weight is NaN)."""
    if check.values_visible() and not (values > 0).all():
        index = int(torch.argmin((values > 0).to(torch.uint8)))
        raise ValueError(f"{name}: " + message.format(index=index, value=values[index].item()))


def _float_dtype(a):
    """[CW-DTYPE]: floating inputs keep their dtype; others get the default float."""
    return a.dtype if a.is_floating_point() else torch.get_default_dtype()


def _label_counts(labels, num_classes, ignore_index):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got "
                         f"num_classes={num_classes!r}")
    ignore_index = check.ignore_index(ignore_index)
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must have an integer dtype, got labels.dtype={labels.dtype}")
    y = labels.reshape(-1).to(torch.int64)
    if check.values_visible():
        bad = (y != ignore_index) & ((y < 0) | (y >= num_classes))
        if bad.any():
            raise ValueError(f"labels must be class indices in [0, {num_classes}) or "
                             f"ignore_index={ignore_index}, got label {y[bad][0].item()}")
    valid = (y != ignore_index) & (y >= 0) & (y < num_classes)
    counts = torch.bincount(y[valid], minlength=num_classes)
    return counts.to(torch.get_default_dtype()), y, valid


def _scheme_weights(n, scheme, beta, normalize, max_weight):
    """Raw weights of the classes that occur, normalised, then capped (spec section 13)."""
    present = n > 0
    safe = torch.where(present, n, 1.0)
    total, num_classes = n.sum(), n.shape[0]
    if scheme == "inverse":
        raw = 1.0 / safe
    elif scheme == "balanced":
        raw = total / (num_classes * safe)
    elif scheme == "max":
        raw = n.max() / safe
    elif scheme == "inverse_sqrt":
        raw = safe.rsqrt()
    elif scheme == "effective_number":
        log_beta = torch.log(torch.tensor(beta, dtype=n.dtype))
        raw = torch.expm1(log_beta) / torch.expm1(safe * log_beta)  # (1-b)/(1-b^n)
    else:  # median_frequency
        frequency = n / total
        sorted_frequency = frequency.sort().values
        middle = (num_classes - 1) // 2  # the mean of the middle two when C is even
        median = (sorted_frequency[middle] + sorted_frequency[num_classes // 2]) / 2
        raw = median / torch.where(present, frequency, 1.0)
    raw = torch.where(present, raw, 0.0)
    if normalize == "classes":
        raw = raw * present.sum() / raw.sum()
    elif normalize == "samples":
        raw = raw * total / (n * raw).sum()
    if max_weight is not None:
        return torch.where(present, raw.clamp_max(max_weight), max_weight)
    return torch.where(present, raw, torch.nan)
