"""Keras 3 on the JAX backend: the spec's losses through ``keras.losses`` classes, the way
a user porting from PyTorch writes them, with the gradient from ``jax.vjp`` on the loss
call, under ``jax.jit`` as in Keras's own JAX training step (Keras ops on the JAX
backend are JAX-traceable).

Every loss object gets ``reduction`` mapped from torch's: ``"none"`` -> ``None``,
``"sum"`` -> ``"sum"``, and ``"mean"`` -> the Keras reduction that divides like torch:
``"mean_with_sample_weight"`` (sum of the weighted losses over the sum of the sample
weights) for class-index targets, ``"sum_over_batch_size"`` (over the number of
elements) for probability targets and the binary losses. Any other ``reduction`` goes to
Keras as given. Keras is channels-last: inputs with spatial axes have the class axis
moved last (``keras.ops.moveaxis``) inside the differentiated call, so the gradient comes
back in torch's layout. Loss by loss:

``cross_entropy``, class-index (integer or boolean) targets, ``label_smoothing == 0``
    ``keras.losses.SparseCategoricalCrossentropy(from_logits=True,
    ignore_class=ignore_index, reduction=...)(target, input, sample_weight)`` with
    ``sample_weight = weight[target]`` (0 for ignored targets), as Keras's
    ``class_weight`` does in ``fit()``; no ``sample_weight`` without a weight.

``cross_entropy``, class-index targets, ``label_smoothing > 0``
    Keras's sparse loss has no smoothing: ``keras.ops.one_hot(target, C)`` and
    ``keras.losses.CategoricalCrossentropy(from_logits=True,
    label_smoothing=label_smoothing, reduction=...)``; that loss has no ``ignore_class``,
    so ``sample_weight = weight[target] * valid`` (``valid`` alone without a weight).

``cross_entropy``, probability targets
    ``keras.losses.CategoricalCrossentropy(from_logits=True,
    label_smoothing=label_smoothing, reduction=...)``, with ``sample_weight =
    weight[argmax(target)]`` as ``fit(class_weight=...)`` does for one-hot or soft
    targets. ``ignore_index`` has no Keras counterpart and is not used.

``binary_cross_entropy`` / ``binary_cross_entropy_with_logits``
    ``keras.losses.BinaryCrossentropy(from_logits=False / True, reduction=...)`` on
    ``input[..., None]`` and ``target[..., None]``: Keras averages the last axis, and a
    trailing axis of size 1 keeps one loss per element as torch does. ``sample_weight =
    weight``; Keras has no ``pos_weight``, so with one ``sample_weight = weight * (1 +
    (pos_weight - 1) * target)``, which equals torch's formula for 0/1 targets only.

``sigmoid_focal_loss``
    ``keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=alpha,
    gamma=gamma, from_logits=True, reduction=...)`` on ``input[..., None]``
    (``apply_class_balancing=False`` where torchvision's ``alpha`` is None or negative).

``softmax_focal_loss``
    ``keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=gamma,
    from_logits=True, reduction=...)`` on one-hot targets, with ``sample_weight =
    alpha[target] * valid`` (``valid`` alone without per-class alpha), so that
    ``"mean_with_sample_weight"`` divides by the valid targets' alpha as the spec does;
    Keras's own ``alpha`` is one factor for every class or a list, multiplied in
    without entering the mean's denominator.

n/a: ``nll_loss`` (Keras has no loss on log-probabilities).

dtypes: a Keras loss computes in its ``dtype``, by default ``keras.backend.floatx()``
(float32). float64 runs pass ``dtype="float64"`` and enable JAX's x64 mode for the call;
float32, bfloat16 and float16 runs use the default, so half-precision inputs are cast to
float32 and the loss comes back as float32 (Keras's mixed-precision convention), which
the runner reports. The gradient keeps the input's dtype.

Importing this module sets ``KERAS_BACKEND=jax`` before Keras is imported, refuses a
Keras already imported with another backend, and leaves JAX's global configuration
(x64 mode) as it found it.
"""

from __future__ import annotations

import os

import jax

from conformance.adapters import Adapter, jax_peer

os.environ["KERAS_BACKEND"] = "jax"
_x64 = jax.config.jax_enable_x64
import keras  # noqa: E402

if jax.config.jax_enable_x64 != _x64:  # keep importing Keras free of global effects
    jax.config.update("jax_enable_x64", _x64)
if keras.backend.backend() != "jax":
    raise ImportError(f"keras is already imported with the {keras.backend.backend()!r} "
                      "backend; this adapter needs KERAS_BACKEND=jax before the import")

from keras import ops  # noqa: E402

porting_notes = """\
**Keras 3** has class-index and probability cross-entropy, binary cross-entropy on
probabilities and on logits, and focal variants (`BinaryFocalCrossentropy`,
`CategoricalFocalCrossentropy`). It has no class
weights inside the losses, no `pos_weight` and no NLL on log-probabilities. To get the
spec's semantics (measured on Keras 3.15.1, JAX backend):

```python
loss = keras.losses.SparseCategoricalCrossentropy(
    from_logits=True, ignore_class=ignore_index,
    reduction="mean_with_sample_weight")            # not the default!
loss(y, logits_channels_last, sample_weight=w[y])  # fit(class_weight=...) does w[y]
```

* **The default reduction is not torch's weighted mean.** `"sum_over_batch_size"`
  divides by the number of non-ignored elements, not by the sum of their weights, so
  the weighted mean comes out multiplied by the mean valid weight: 9% to 250% off on
  the golden cases. `"mean_with_sample_weight"` divides by the sum of the sample
  weights and agrees with the goldens.
* **Degenerate means are 0, not NaN**: Keras divides with `divide_no_nan`, so an
  all-ignored batch, or valid weights that sum to 0, give a mean of 0 (and a zero
  gradient); an empty 1-D batch gives its empty per-element array instead of a
  scalar, for `"sum"` as well as for the means.
* **An unbatched `(C,)` input** gives a 0-d loss that Keras never reduces: with a
  sample weight the "mean" is `w[y] * l`, not `l` (158% off on the golden case).
* **Class weights are sample weights.** With label smoothing (only
  `CategoricalCrossentropy` has it: one-hot the targets) the smoothing term is then
  weighted by `w[y]`, not class by class: up to 56% off on the weighted smoothing
  cases. With probability targets `fit(class_weight=...)` weighs each row by the
  weight of its argmax class: up to 74% off.
* **`ignore_class` exists only in `SparseCategoricalCrossentropy`**; with one-hot
  targets ignore through a zero sample weight, which multiplies: a non-finite ignored
  row still makes the loss NaN.
* **Out-of-range targets are not checked**: a target of `-1` or `>= C` has loss 0 (its
  one-hot row is all zero).
* **Eager and jitted results differ for `-inf` logits**: the loss is
  `-sum(one_hot * log_softmax)`, so a `-inf` logit at a non-target class gives NaN
  (`0 * -inf`) eagerly, while under `jax.jit` (as in Keras's JAX training step) XLA
  turns the product into a select and the loss is finite, as the spec says.
* **Binary losses average the last axis**: `BinaryCrossentropy(reduction=None)`
  returns one value per row; add a trailing axis of size 1 to keep one per element.
  `from_logits=False` clips probabilities to `[1e-7, 1 - 1e-7]`, so log-terms stop at
  `log(1e-7) = -16.1` instead of torch's `-100` (losses 84% low at `p` = 0 or 1) and
  the gradient is 0 beyond the clip. There is no `pos_weight`: `sample_weight = 1 +
  (pos_weight - 1) * y` is exact for 0/1 targets only (up to 31% off for soft ones).
* **Focal losses**: `BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.25,
  from_logits=True)` on `x[..., None]` is torchvision's `sigmoid_focal_loss`
  (float32-accurate only, as the binary losses). For the multi-class focal loss with
  per-class alpha and torch's weighted mean, pass `alpha=1.0` to
  `CategoricalFocalCrossentropy` and the class alpha as `sample_weight=alpha[y]` with
  `"mean_with_sample_weight"`; its own list `alpha` does not enter the mean's
  denominator, and an all-ignored mean is 0, not NaN.
* **Channels last**: transpose `(N, C, ...)` logits to `(N, ..., C)`.
  `SparseCategoricalCrossentropy(axis=1)` raises for inputs with spatial axes on the
  JAX backend, and `CategoricalCrossentropy`'s smoothing takes the class count from
  the last axis.
* **dtypes**: Keras casts inputs to the loss's `dtype` (default floatx, float32):
  bfloat16/float16 inputs give a float32 loss, and integer inputs are cast silently
  instead of rejected. float64 needs `dtype="float64"` and JAX's x64 mode, and is then
  exact for cross-entropy, but the binary losses are only float32-accurate (5e-8
  relative): `keras.ops.mean`, which they use over the last axis, computes float64 in
  float32.
"""

# torch's "mean" in Keras: class-index targets divide by the summed sample weights,
# probability targets and the binary losses by the number of elements.
MEAN = (("binary", "sum_over_batch_size"), ("class", "mean_with_sample_weight"),
        ("prob", "sum_over_batch_size"))


def keras_reduction(reduction, mean, kind):
    """Keras's reduction for torch's ``reduction``; ``mean`` maps the kind of target to
    the Keras reduction standing for torch's "mean" (as ``(kind, reduction)`` pairs)."""
    return {"none": None, "sum": "sum", "mean": dict(mean)[kind]}.get(reduction, reduction)


def channels_last(x):
    return ops.moveaxis(x, 1, -1) if len(x.shape) >= 3 else x


def cross_entropy(x, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, dtype=None, mean=MEAN):
    x = channels_last(x)
    if jax.numpy.issubdtype(target.dtype, jax.numpy.floating):  # probability targets
        target = channels_last(target)
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing,
            reduction=keras_reduction(reduction, mean, "prob"), dtype=dtype)
        sample_weight = None if weight is None else ops.take(
            weight, ops.argmax(target, axis=-1))
        return loss(target, x, sample_weight=sample_weight)
    valid = ops.not_equal(target, ignore_index)
    sample_weight = None if weight is None else ops.where(
        valid, ops.take(weight, ops.where(valid, target, 0)), 0)
    if not label_smoothing:
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=ignore_index,
            reduction=keras_reduction(reduction, mean, "class"), dtype=dtype)
        return loss(target, x, sample_weight=sample_weight)
    loss = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=label_smoothing,
        reduction=keras_reduction(reduction, mean, "class"), dtype=dtype)
    if sample_weight is None:
        sample_weight = ops.cast(valid, x.dtype)
    return loss(ops.one_hot(target, x.shape[-1]), x, sample_weight=sample_weight)


def _binary(from_logits):
    def binary(x, target, weight=None, reduction="mean", pos_weight=None, dtype=None,
               mean=MEAN):
        loss = keras.losses.BinaryCrossentropy(
            from_logits=from_logits, reduction=keras_reduction(reduction, mean, "binary"),
            dtype=dtype)
        sample_weight = weight
        if pos_weight is not None:
            q = 1 + (pos_weight - 1) * ops.cast(target, pos_weight.dtype)
            sample_weight = q if weight is None else weight * q
        return loss(target[..., None], x[..., None], sample_weight=sample_weight)
    return binary


def sigmoid_focal_loss(x, target, alpha=0.25, gamma=2.0, reduction="none", dtype=None,
                       mean=MEAN):
    balance = alpha is not None and alpha >= 0  # torchvision: alpha < 0 is off
    loss = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=balance, alpha=alpha if balance else 0.25, gamma=gamma,
        from_logits=True, reduction=keras_reduction(reduction, mean, "binary"), dtype=dtype)
    return loss(target[..., None], x[..., None])


def softmax_focal_loss(x, target, alpha=None, gamma=2.0, ignore_index=-100,
                       reduction="mean", dtype=None, mean=MEAN):
    x = channels_last(x)
    valid = ops.not_equal(target, ignore_index)
    sample_weight = ops.cast(valid, x.dtype) if alpha is None else ops.where(
        valid, ops.take(alpha, ops.where(valid, target, 0)), 0)
    loss = keras.losses.CategoricalFocalCrossentropy(
        alpha=1.0, gamma=gamma, from_logits=True,
        reduction=keras_reduction(reduction, mean, "class"), dtype=dtype)
    return loss(ops.one_hot(target, x.shape[-1]), x, sample_weight=sample_weight)


LOSSES = {"cross_entropy": cross_entropy,
          "sigmoid_focal_loss": sigmoid_focal_loss,
          "softmax_focal_loss": softmax_focal_loss,
          "binary_cross_entropy": _binary(from_logits=False),
          "binary_cross_entropy_with_logits": _binary(from_logits=True)}


_run = jax_peer.jitted_value_and_grad(LOSSES)


class KerasAdapter(Adapter):
    name = "keras"
    description = (f"keras {keras.__version__} on jax {jax.__version__} "
                   f"({jax.default_backend()}), under jit")
    losses = frozenset(LOSSES)
    mean = dict(MEAN)  # the Keras reduction standing for torch's "mean", by kind of target

    def release(self):
        jax_peer.release()

    def call(self, case, dtype, traced):
        return jax_peer.call(_run, case, dtype, mean=tuple(sorted(self.mean.items())),
                             dtype="float64" if dtype == "float64" else None)


ADAPTER = KerasAdapter()
