"""NLL of log-probabilities with class weights and ``ignore_index``: wce_jax against a
jax.numpy version (optax has no NLL), wce_torch against ``torch.nn.functional.nll_loss``.

Every case of a shape ``(N, C)`` sees the same float32 log-probabilities (the
``log_softmax`` of standard normal logits), class weights (uniform in [0.5, 2)) and
targets, about 10% of them ``ignore_index``. Each step runs the loss with
``reduction="mean"`` (divided by the weights of the valid targets) and its gradient
with respect to the log-probabilities, which is zero but at the targets: an NLL step is
a gather forward and a scatter backward, so writing the logits-sized gradient dominates.
"""

from __future__ import annotations

import numpy as np

from benchmarks import peers
from benchmarks.builders import (IGNORE_INDEX, Impl, Inputs, class_targets, class_weights,
                                 function, normal, peer_cases, rng_for)
from benchmarks.registry import Family, register_family

FAMILY = register_family(Family(
    name="nll",
    title="nll_loss: log-probabilities, class weights, ignore_index, mean",
    shapes=((1024, 1000), (8192, 1000), (512, 32000), (2048, 32000)),
    quick_shapes=((256, 100),),
    rounds=10))


def _inputs(shape):
    n, c = shape
    rng = rng_for(shape)
    x = normal(rng, (n, c)).astype(np.float64)
    log_probs = x - x.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    _, target = class_targets(rng, n, c)
    return {"log_probs": log_probs.astype(np.float32), "target": target,
            "weight": class_weights(rng, c)}


INPUTS = Inputs(_inputs)
KEYWORDS = dict(ignore_index=IGNORE_INDEX, reduction="mean")
CALL = "(lp, y, weight=w, ignore_index=-100)"

peer_cases(
    FAMILY.name, INPUTS, args=("log_probs", "target", "weight"), wrt=("log_probs",),
    jax_peers=[Impl("jnp", peers.jnp_nll, "gather, w[y], sum / sum(w_y) in jax.numpy")],
    wce_jax=Impl("wce_jax", function("wce_jax:nll_loss", "weight", **KEYWORDS),
                 f"wce_jax.nll_loss{CALL}"),
    torch_peers=[Impl("torch_F", function("torch.nn.functional:nll_loss", "weight",
                                          **KEYWORDS),
                      f"torch.nn.functional.nll_loss{CALL}")],
    wce_torch=Impl("wce_torch", function("wce_torch:nll_loss", "weight", **KEYWORDS),
                   f"wce_torch.nll_loss{CALL}"))
