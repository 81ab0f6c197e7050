"""wce_torch: weighted classification losses for PyTorch, as defined by spec/SPEC.md.

A drop-in for ``torch.nn.functional`` and ``torch.nn``::

    import wce_torch
    loss = wce_torch.cross_entropy(logits, labels, weight=class_weights, ignore_index=-100,
                                   label_smoothing=0.1)          # class axis 1, as in torch
    criterion = wce_torch.CrossEntropyLoss(weight=class_weights)  # like nn.CrossEntropyLoss
"""

from wce_torch._checks import ProbabilityInputWarning
from wce_torch._focal import sigmoid_focal_loss, softmax_focal_loss
from wce_torch._linear import linear_cross_entropy
from wce_torch._losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    nll_loss,
)
from wce_torch._weights import (
    balanced_sampler,
    class_weights,
    class_weights_from_labels,
    pos_weight_from_labels,
    sample_weights_from_labels,
)
from wce_torch.modules import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, NLLLoss

# The names both packages share come first, in the same order as in wce_jax.
__all__ = [
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "linear_cross_entropy",
    "class_weights",
    "class_weights_from_labels",
    "sample_weights_from_labels",
    "pos_weight_from_labels",
    "ProbabilityInputWarning",
    # PyTorch only
    "balanced_sampler",
    "CrossEntropyLoss",
    "NLLLoss",
    "BCELoss",
    "BCEWithLogitsLoss",
]
