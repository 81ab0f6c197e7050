"""wce_jax: weighted classification losses for JAX, as defined by spec/SPEC.md.

Drop-in names for ``torch.nn.functional``'s losses, jit-, grad- and vmap-safe on CPU,
GPU and TPU::

    import wce_jax
    loss = wce_jax.cross_entropy(logits, labels, weight=class_weights, ignore_index=-100,
                                 label_smoothing=0.1)            # class axis last

``axis=1`` takes torch's channels-first layout.
"""

from wce_jax._checks import ProbabilityInputWarning, checked
from wce_jax._losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    nll_loss,
)

__all__ = [
    "ProbabilityInputWarning",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "checked",
    "cross_entropy",
    "nll_loss",
]
