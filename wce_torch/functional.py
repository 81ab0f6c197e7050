"""``wce_torch.functional``: the losses as functions, the counterpart of
``torch.nn.functional`` (``import wce_torch.functional as WF``).

A public namespace only; the losses live in the private modules ``_losses``, ``_focal``
and ``_linear``, the mirrors of wce_jax's, and are the same objects as ``wce_torch.*``.
"""

from wce_torch._focal import sigmoid_focal_loss, softmax_focal_loss
from wce_torch._linear import linear_cross_entropy
from wce_torch._losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    nll_loss,
)

__all__ = [
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "linear_cross_entropy",
]
