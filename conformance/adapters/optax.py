"""optax on JAX: the spec's losses written the way a user porting from PyTorch writes them
with optax, under ``jax.jit``, with the gradient from ``jax.vjp``.

optax computes per-example losses and has no class weights, no ``ignore_index`` argument
and no reductions; those are a few lines of jnp glue, kept as small as a user would keep
them. What is optax and what is glue, loss by loss:

``cross_entropy``, class-index targets, ``label_smoothing == 0``
    optax: ``optax.softmax_cross_entropy_with_integer_labels(input, target, axis=1,
    where=valid)`` (``axis=-1`` for an unbatched ``(C,)`` input), torch's layout kept
    through optax's ``axis``; ``where`` masks the ignored rows.
    glue: ``valid = target != ignore_index``; ``w_y = where(valid, weight[target], 0)``
    (1 without weight); element loss ``w_y * l``; ``"sum"`` is ``sum(w_y * l)``,
    ``"mean"`` is ``sum(w_y * l) / sum(w_y)``.

``cross_entropy``, class-index targets, ``label_smoothing > 0``
    optax: ``optax.smooth_labels(one_hot, label_smoothing, axis=1)`` and
    ``optax.softmax_cross_entropy(input, labels, axis=1, where=valid)``.
    glue: ``one_hot = jax.nn.one_hot(target, C, axis=1)``; the class weights multiply the
    smoothed target distribution class by class (``labels = w_c * smoothed``), which is
    torch's weighted smoothing exactly; the reductions as above, ``"mean"`` dividing by
    ``sum(w_y)`` of the valid rows.

``cross_entropy``, probability targets
    optax: ``optax.smooth_labels(target, label_smoothing, axis=1)`` when smoothing,
    ``optax.softmax_cross_entropy(input, labels, axis=1)``.
    glue: ``labels = w_c * smoothed`` with a weight; ``"mean"`` is ``jnp.mean``.
    optax has no ``ignore_index``; the argument is not used.

``binary_cross_entropy_with_logits``
    optax: ``optax.sigmoid_binary_cross_entropy(input, target)``. optax has no
    ``pos_weight``; with one, the positive and negative terms come from two calls,
    ``pos_weight * y * sbce(x, 1) + (1 - y) * sbce(x, 0)``, which is torch's formula
    for any target in [0, 1].
    glue: ``weight * l``; ``jnp.sum`` / ``jnp.mean``.

``sigmoid_focal_loss``
    optax: ``optax.sigmoid_focal_loss(input, target, alpha=alpha, gamma=gamma)``, with
    ``alpha=None`` where torchvision's negative ``alpha`` means no balancing.
    glue: ``jnp.sum`` / ``jnp.mean``.

n/a: ``softmax_focal_loss`` (optax has no multi-class focal loss); ``nll_loss`` (optax has no loss on log-probabilities: a jnp gather would test jnp,
not optax); ``binary_cross_entropy`` (optax has no BCE on probabilities, only on
logits); an unknown ``reduction`` (the reduction is the caller's ``jnp.sum``/``jnp.mean``:
optax has no argument to validate).

float64 runs enable JAX's x64 mode for the call; the other dtypes run in JAX's default
32-bit mode, as most JAX code does, so a float64 weight arrives as float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from conformance.adapters import Adapter, jax_peer

porting_notes = """\
**optax** has per-example losses only: no class weights, no `ignore_index`, no
`pos_weight`, no reductions, no BCE on probabilities and no NLL on log-probabilities.
The spec's semantics take a few lines of glue, and then agree with the goldens to
6.6e-16 (float64) and 2.6e-7 (float32) relative wherever the differences below do not
apply:

```python
valid = y != ignore_index
l = optax.softmax_cross_entropy_with_integer_labels(x, y, axis=1, where=valid)
w_y = jnp.where(valid, w[y], 0.0)
mean = jnp.sum(w_y * l) / jnp.sum(w_y)          # torch's weighted mean
```

* **Out-of-range targets are not checked**: a target of `-1` silently takes the last
  class (JAX's negative indexing); a target `>= C`, or `-100` without `where=`, gives
  a NaN loss. Pass `where=y != ignore_index` (optax >= 0.2.4): ignored rows are then
  exactly 0 with a zero gradient, even when their logits are infinite.
* **A `+inf` logit at a non-target class** gives loss `+inf` and a partly finite
  gradient row (optax computes `logsumexp(x) - x[y]`); the spec says NaN for both.
  `sigmoid_binary_cross_entropy` gives `+inf` for `x = -inf, y = 1`, where the spec
  says NaN.
* **Class weights with label smoothing** multiply the smoothed target distribution
  class by class: `softmax_cross_entropy(x, w * smooth_labels(one_hot(y, C, axis=1),
  eps, axis=1), axis=1)`. Weighting the smoothed loss by `w[y]` instead weights the
  smoothing term wrongly (that is what Keras's sample weights do: up to 56% off).
  When the valid weights sum to 0, `sum / sum(w_y)` is `+inf` with smoothing, where
  the spec says NaN.
* **`pos_weight`**: `pos_weight * y * sigmoid_binary_cross_entropy(x, 1) + (1 - y) *
  sigmoid_binary_cross_entropy(x, 0)`; multiplying the whole loss by
  `1 + (pos_weight - 1) * y` is only right for 0/1 targets.
* **Half precision**: optax computes in the input's dtype. bfloat16 losses stay within
  1%, but gradients are off by up to 2.8%; float16 sums overflow (weighted means of
  large losses become `inf`). Cast the logits to float32 for the loss to get the
  spec's float32 accumulation. A float32 weight with bfloat16 logits promotes the
  loss to float32.
* **`optax.sigmoid_focal_loss` defaults to `alpha=None`** (no balancing), where
  torchvision's default is `alpha=0.25`: pass `alpha=0.25` explicitly. It has no
  reduction (`jnp.mean` is torchvision's `"mean"`) and no multi-class focal loss.
* **No argument checks**: wrong target shapes broadcast, a short weight is indexed
  with clamping, `label_smoothing` outside [0, 1] is used as given, and `ignore_index`
  has no meaning for probability targets.
"""

CLASS_LOSSES = ("cross_entropy",)


def _class_axis(x):
    return 1 if x.ndim >= 2 else -1


def _class_weights(w, x):
    """weight (C,) shaped to broadcast against the class axis 1 of x (glue)."""
    return w.reshape(w.shape + (1,) * (x.ndim - 2)) if x.ndim >= 2 else w


def _reduce(losses, reduction, denominator):
    if reduction == "none":
        return losses
    if reduction == "sum":
        return jnp.sum(losses)
    return jnp.sum(losses) / denominator


def cross_entropy(x, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    axis = _class_axis(x)
    if jnp.issubdtype(target.dtype, jnp.floating):  # probability targets
        labels = target
        if label_smoothing:
            labels = optax.smooth_labels(labels, label_smoothing, axis=axis)
        if weight is not None:
            labels = labels * _class_weights(weight, x)
        losses = optax.softmax_cross_entropy(x, labels, axis=axis)
        return losses if reduction == "none" else (
            jnp.sum(losses) if reduction == "sum" else jnp.mean(losses))
    valid = target != ignore_index
    if label_smoothing:
        one_hot = jax.nn.one_hot(target, x.shape[axis], axis=axis, dtype=x.dtype)
        labels = optax.smooth_labels(one_hot, label_smoothing, axis=axis)
        if weight is not None:
            labels = labels * _class_weights(weight, x)
        losses = optax.softmax_cross_entropy(x, labels, axis=axis, where=valid)
    else:
        losses = optax.softmax_cross_entropy_with_integer_labels(
            x, target, axis=axis, where=valid)
    w_y = valid.astype(x.dtype) if weight is None else jnp.where(valid, weight[target], 0)
    if not label_smoothing:
        losses = w_y * losses
    return _reduce(losses, reduction, jnp.sum(w_y))


def binary_cross_entropy_with_logits(x, target, weight=None, reduction="mean",
                                     pos_weight=None):
    if pos_weight is None:
        losses = optax.sigmoid_binary_cross_entropy(x, target)
    else:
        y = jnp.asarray(target, x.dtype)
        losses = (pos_weight * y * optax.sigmoid_binary_cross_entropy(x, jnp.ones_like(x))
                  + (1 - y) * optax.sigmoid_binary_cross_entropy(x, jnp.zeros_like(x)))
    if weight is not None:
        losses = weight * losses
    if reduction == "mean":
        return jnp.mean(losses)
    return _reduce(losses, reduction, None)


def sigmoid_focal_loss(x, target, alpha=0.25, gamma=2.0, reduction="none"):
    balance = None if alpha is None or alpha < 0 else alpha  # torchvision: alpha < 0 is off
    losses = optax.sigmoid_focal_loss(x, target, alpha=balance, gamma=gamma)
    if reduction == "mean":
        return jnp.mean(losses)
    return _reduce(losses, reduction, None)


LOSSES = {"cross_entropy": cross_entropy,
          "binary_cross_entropy_with_logits": binary_cross_entropy_with_logits,
          "sigmoid_focal_loss": sigmoid_focal_loss}


_run = jax_peer.jitted_value_and_grad(LOSSES)


class OptaxAdapter(Adapter):
    name = "optax"
    description = (f"optax {optax.__version__} (jax {jax.__version__}, "
                   f"{jax.default_backend()}), under jit")
    losses = frozenset(LOSSES)
    derivatives = True  # jax.jvp, and jax.jvp of the VJP, in the value's jitted program

    def unsupported(self, case):
        if reason := super().unsupported(case):
            return reason
        if case.args.get("reduction", "mean") not in ("none", "sum", "mean"):
            return ("optax has no reduction argument: the reduction is the caller's "
                    "jnp.sum/jnp.mean, nothing in optax to validate")
        return None

    def release(self):
        jax_peer.release()

    def call(self, case, dtype, traced):
        return jax_peer.call(_run, case, dtype, derivatives=True)


ADAPTER = OptaxAdapter()
