"""wce_jax: weighted classification losses for JAX, as defined by spec/SPEC.md.

Drop-in names for ``torch.nn.functional``'s losses, jit-, grad- and vmap-safe on CPU,
GPU and TPU::

    import wce_jax
    loss = wce_jax.cross_entropy(logits, labels, weight=class_weights, ignore_index=-100,
                                 label_smoothing=0.1)            # class axis last

``axis=1`` takes torch's channels-first layout.
"""

from wce_jax._checks import ProbabilityInputWarning, checked
from wce_jax._focal import sigmoid_focal_loss, softmax_focal_loss
from wce_jax._linear import linear_cross_entropy
from wce_jax._losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    gradient_strategy,
    nll_loss,
)
from wce_jax._weights import (
    balanced_indices,
    class_weights,
    class_weights_from_labels,
    pos_weight_from_labels,
    sample_weights_from_labels,
)

# The names both packages share come first, in the same order as in wce_torch.
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
    # JAX only
    "balanced_indices",
    "checked",
    "gradient_strategy",
]
