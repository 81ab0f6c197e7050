"""Binary cross-entropies, of logits with ``pos_weight`` and of probabilities with
weights: wce_jax against optax and jax.numpy, wce_torch against torch.nn.functional.

Every case of a shape ``(N, C)`` (N samples, C independent labels) sees the same
float32 logits (standard normal), their sigmoids as probabilities, the same 0/1 targets
(30% ones), one ``pos_weight`` per label (uniform in [0.5, 4)) and one weight per label
(uniform in [0.5, 2)), both broadcast over the samples. Each step runs the loss with
``reduction="mean"`` (over the N*C elements) and its gradient with respect to the
logits or the probabilities. These losses are elementwise: what differs between
implementations is how many passes over the elements they make and how many
logits-sized buffers the backward pass keeps.
"""

from __future__ import annotations

import numpy as np

from benchmarks import peers
from benchmarks.builders import Impl, Inputs, class_weights, function, normal, peer_cases, rng_for
from benchmarks.registry import Family, register_family

POSITIVE_FRACTION = 0.3
SHAPES = ((1024, 1000), (8192, 1000), (512, 32000), (2048, 32000))

WITH_LOGITS = register_family(Family(
    name="bcel",
    title="binary_cross_entropy_with_logits: 0/1 targets, pos_weight per label, mean",
    shapes=SHAPES, quick_shapes=((256, 100),), rounds=10))
PROBABILITIES = register_family(Family(
    name="bce",
    title="binary_cross_entropy: probabilities, 0/1 targets, weight per label, mean",
    shapes=SHAPES, quick_shapes=((256, 100),), rounds=10))


def _inputs(shape):
    n, c = shape
    rng = rng_for(shape)
    logits = normal(rng, (n, c))
    return {"logits": logits,
            "probs": (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32),
            "target": (rng.random((n, c)) < POSITIVE_FRACTION).astype(np.float32),
            "pos_weight": rng.uniform(0.5, 4.0, c).astype(np.float32),
            "weight": class_weights(rng, c)}


INPUTS = Inputs(_inputs)

BCEL, BCEL_CALL = "binary_cross_entropy_with_logits", "(x, y, pos_weight=pw)"
peer_cases(
    WITH_LOGITS.name, INPUTS, args=("logits", "target", "pos_weight"), wrt=("logits",),
    jax_peers=[Impl("optax+pw", peers.optax_bce_with_logits,
                    "optax.sigmoid_binary_cross_entropy(x, y) times 1 + (pw - 1) y, mean "
                    "(optax has no pos_weight)", requires=("optax",)),
               Impl("jnp", peers.jnp_bce_with_logits,
                    "-(pw y log_sigmoid(x) + (1 - y) log_sigmoid(-x)), mean, in jax.numpy")],
    wce_jax=Impl("wce_jax", function(f"wce_jax:{BCEL}", "pos_weight"),
                 f"wce_jax.{BCEL}{BCEL_CALL}"),
    torch_peers=[Impl("torch_F", function(f"torch.nn.functional:{BCEL}", "pos_weight"),
                      f"torch.nn.functional.{BCEL}{BCEL_CALL}")],
    wce_torch=Impl("wce_torch", function(f"wce_torch:{BCEL}", "pos_weight"),
                   f"wce_torch.{BCEL}{BCEL_CALL}"))

BCE, BCE_CALL = "binary_cross_entropy", "(p, y, weight=w)"
peer_cases(
    PROBABILITIES.name, INPUTS, args=("probs", "target", "weight"), wrt=("probs",),
    jax_peers=[Impl("jnp", peers.jnp_bce,
                    "-w (y max(log p, -100) + (1 - y) max(log(1 - p), -100)), mean, in "
                    "jax.numpy")],
    wce_jax=Impl("wce_jax", function(f"wce_jax:{BCE}", "weight"), f"wce_jax.{BCE}{BCE_CALL}"),
    torch_peers=[Impl("torch_F", function(f"torch.nn.functional:{BCE}", "weight"),
                      f"torch.nn.functional.{BCE}{BCE_CALL}")],
    wce_torch=Impl("wce_torch", function(f"wce_torch:{BCE}", "weight"),
                   f"wce_torch.{BCE}{BCE_CALL}"))
