"""Focal losses: wce_jax and wce_torch against hand-written versions (optax has no
softmax focal loss, torchvision's sigmoid one is not a dependency; see
benchmarks/peers.py).

* ``softmax_focal``: every case of a shape ``(N, C)`` sees the same float32 logits
  (standard normal), per-class ``alpha`` (uniform in [0.5, 2)) and class-index targets,
  about 10% of them ``ignore_index``; ``gamma=2``, ``reduction="mean"`` (divided by the
  ``alpha`` of the valid targets, as the weighted cross-entropy).
* ``sigmoid_focal``: the same logits read as N x C independent labels, 0/1 targets (10%
  ones, as for detection), RetinaNet's ``alpha=0.25, gamma=2``, ``reduction="mean"``.

Each step runs the loss and its gradient with respect to the logits.
"""

from __future__ import annotations

from benchmarks import peers
from benchmarks.builders import (IGNORE_INDEX, Impl, Inputs, class_targets, class_weights,
                                 function, normal, peer_cases, rng_for)
from benchmarks.registry import Family, register_family

POSITIVE_FRACTION = 0.1
SHAPES = ((1024, 1000), (8192, 1000), (512, 32000), (2048, 32000))

SOFTMAX = register_family(Family(
    name="softmax_focal",
    title=f"softmax_focal_loss: class indices, alpha per class, gamma={peers.FOCAL_GAMMA:g}, "
          "ignore_index, mean",
    shapes=SHAPES, quick_shapes=((256, 100),), rounds=10))
SIGMOID = register_family(Family(
    name="sigmoid_focal",
    title=f"sigmoid_focal_loss: 0/1 targets, alpha={peers.FOCAL_ALPHA:g}, "
          f"gamma={peers.FOCAL_GAMMA:g}, mean",
    shapes=SHAPES, quick_shapes=((256, 100),), rounds=10))


def _inputs(shape):
    n, c = shape
    rng = rng_for(shape)
    logits = normal(rng, (n, c))
    _, target = class_targets(rng, n, c)
    return {"logits": logits, "target": target, "alpha": class_weights(rng, c),
            "binary": (rng.random((n, c)) < POSITIVE_FRACTION).astype(logits.dtype)}


INPUTS = Inputs(_inputs)

SOFTMAX_KEYWORDS = dict(gamma=peers.FOCAL_GAMMA, ignore_index=IGNORE_INDEX, reduction="mean")
SOFTMAX_CALL = f"(x, y, alpha=a, gamma={peers.FOCAL_GAMMA:g}, ignore_index=-100)"
peer_cases(
    SOFTMAX.name, INPUTS, args=("logits", "target", "alpha"), wrt=("logits",),
    jax_peers=[Impl("jnp", peers.jnp_softmax_focal,
                    "-a[y] (1 - p_y)^gamma log p_y from log_softmax and a gather, "
                    "sum / sum(a[y]), in jax.numpy")],
    wce_jax=Impl("wce_jax", function("wce_jax:softmax_focal_loss", "alpha",
                                     **SOFTMAX_KEYWORDS),
                 f"wce_jax.softmax_focal_loss{SOFTMAX_CALL}"),
    torch_peers=[Impl("torch", peers.torch_softmax_focal,
                      "the jax.numpy version's operations in torch")],
    wce_torch=Impl("wce_torch", function("wce_torch:softmax_focal_loss", "alpha",
                                         **SOFTMAX_KEYWORDS),
                   f"wce_torch.softmax_focal_loss{SOFTMAX_CALL}"))

SIGMOID_KEYWORDS = dict(alpha=peers.FOCAL_ALPHA, gamma=peers.FOCAL_GAMMA, reduction="mean")
SIGMOID_CALL = (f"(x, y, alpha={peers.FOCAL_ALPHA:g}, gamma={peers.FOCAL_GAMMA:g}, "
                "reduction='mean')")
peer_cases(
    SIGMOID.name, INPUTS, args=("logits", "binary"), wrt=("logits",),
    jax_peers=[Impl("jnp", peers.jnp_sigmoid_focal,
                    "torchvision's sigmoid_focal_loss formula in jax.numpy")],
    wce_jax=Impl("wce_jax", function("wce_jax:sigmoid_focal_loss", **SIGMOID_KEYWORDS),
                 f"wce_jax.sigmoid_focal_loss{SIGMOID_CALL}"),
    torch_peers=[Impl("torch", peers.torch_sigmoid_focal,
                      "torchvision.ops.sigmoid_focal_loss's code (torchvision is not "
                      "installed)")],
    wce_torch=Impl("wce_torch", function("wce_torch:sigmoid_focal_loss", **SIGMOID_KEYWORDS),
                   f"wce_torch.sigmoid_focal_loss{SIGMOID_CALL}"))
