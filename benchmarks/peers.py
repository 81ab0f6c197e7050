"""Hand-written versions of the losses, as a port writes them first: the peers that the
libraries without the loss (optax has no weighted NLL, no focal loss; torchvision, which
has ``sigmoid_focal_loss``, is not a dependency) are compared with.

Each computes what wce's function computes for the inputs of its family (spec/SPEC.md
gives the formulas), with the operations a reader would expect: ``log_softmax``, a
gather, the weights at the targets, masks for ``ignore_index``. Automatic
differentiation gives their gradients, so they keep whatever their forward pass keeps.
"""

from __future__ import annotations

from benchmarks.builders import IGNORE_INDEX

FOCAL_GAMMA = 2.0
FOCAL_ALPHA = 0.25  # sigmoid focal loss: RetinaNet's (and torchvision's) default


# ----------------------------------------------------------------------------------
# jax.numpy


def _jnp_at_target(lp, target, weight):
    """``(lp[i, y_i], w[y_i])`` with ignored elements' weight 0 (and index 0)."""
    import jax.numpy as jnp

    valid = target != IGNORE_INDEX
    safe = jnp.where(valid, target, 0)
    w_y = jnp.where(valid, weight[safe], 0.0)
    return jnp.take_along_axis(lp, safe[:, None], axis=-1)[:, 0], w_y


def jnp_nll(lp, target, weight):
    """Weighted NLL, mean over the weights of the valid targets: gather, ``w[y]``,
    ``sum / sum(w_y)``."""
    import jax.numpy as jnp

    lp_y, w_y = _jnp_at_target(lp, target, weight)
    return -jnp.sum(w_y * lp_y) / jnp.sum(w_y)


def jnp_cross_entropy(x, target, weight):
    """``log_softmax`` then :func:`jnp_nll`."""
    import jax

    return jnp_nll(jax.nn.log_softmax(x, axis=-1), target, weight)


def jnp_softmax_focal(x, target, alpha):
    """``-alpha[y] (1 - p_y)^gamma log p_y``, mean over ``sum alpha[y]`` of valid targets."""
    import jax
    import jax.numpy as jnp

    lp_y, a_y = _jnp_at_target(jax.nn.log_softmax(x, axis=-1), target, alpha)
    return -jnp.sum(a_y * (1.0 - jnp.exp(lp_y)) ** FOCAL_GAMMA * lp_y) / jnp.sum(a_y)


def jnp_bce_with_logits(x, y, pos_weight):
    """``-(pos_weight y log sigmoid(x) + (1 - y) log sigmoid(-x))``, mean."""
    import jax
    import jax.numpy as jnp

    return -jnp.mean(pos_weight * y * jax.nn.log_sigmoid(x)
                     + (1.0 - y) * jax.nn.log_sigmoid(-x))


def jnp_bce(p, y, weight):
    """``-w (y max(log p, -100) + (1 - y) max(log(1 - p), -100))``, mean (torch's clamp)."""
    import jax.numpy as jnp

    return -jnp.mean(weight * (y * jnp.maximum(jnp.log(p), -100.0)
                               + (1.0 - y) * jnp.maximum(jnp.log(1.0 - p), -100.0)))


def jnp_sigmoid_focal(x, y):
    """torchvision's ``sigmoid_focal_loss`` in jax.numpy (``p_t``, ``(1 - p_t)^gamma``,
    ``alpha_t``), mean."""
    import jax
    import jax.numpy as jnp

    p = jax.nn.sigmoid(x)
    ce = (1.0 - y) * x - jax.nn.log_sigmoid(x)
    p_t = p * y + (1.0 - p) * (1.0 - y)
    alpha_t = FOCAL_ALPHA * y + (1.0 - FOCAL_ALPHA) * (1.0 - y)
    return jnp.mean(alpha_t * ce * (1.0 - p_t) ** FOCAL_GAMMA)


def optax_bce_with_logits(x, y, pos_weight):
    """``optax.sigmoid_binary_cross_entropy`` with ``pos_weight`` glued on: optax has no
    ``pos_weight``, and for 0/1 targets the weighted loss is the unweighted one times
    ``q = 1 + (pos_weight - 1) y``."""
    import jax.numpy as jnp
    import optax

    q = 1.0 + (pos_weight - 1.0) * y
    return jnp.mean(q * optax.sigmoid_binary_cross_entropy(x, y))


# ----------------------------------------------------------------------------------
# torch


def torch_softmax_focal(x, target, alpha):
    """:func:`jnp_softmax_focal` in torch."""
    import torch

    valid = target != IGNORE_INDEX
    safe = torch.where(valid, target, 0)
    a_y = torch.where(valid, alpha[safe], 0.0)
    lp_y = torch.log_softmax(x, dim=1).gather(1, safe[:, None])[:, 0]
    return -(a_y * (1.0 - lp_y.exp()) ** FOCAL_GAMMA * lp_y).sum() / a_y.sum()


def torch_sigmoid_focal(x, y):
    """torchvision's ``sigmoid_focal_loss`` (torchvision/ops/focal_loss.py), mean."""
    import torch
    import torch.nn.functional as F

    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** FOCAL_GAMMA)
    alpha_t = FOCAL_ALPHA * y + (1 - FOCAL_ALPHA) * (1 - y)
    return (alpha_t * loss).mean()
