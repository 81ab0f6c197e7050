"""Cross-entropy with class-index targets: wce_jax and wce_torch against their peers.

Every case of a shape ``(N, C)`` sees the same float32 logits (standard normal), the
same class weights (uniform in [0.5, 2)) and the same targets, about 10% of which are
``ignore_index`` (optax, which has neither weights nor ``ignore_index``, gets the
targets before they were ignored). Each step runs one forward+backward with
``reduction="mean"``: the loss and its gradient with respect to the logits.
"""

from __future__ import annotations

from benchmarks import peers
from benchmarks.builders import (IGNORE_INDEX, Inputs, class_targets, class_weights,
                                 function, jax_case, normal, rng_for, torch_case)
from benchmarks.registry import Family, register_family

SMOOTHING = 0.1

FAMILY = register_family(Family(
    name="ce",
    title="cross_entropy: class indices, class weights, ignore_index, mean",
    shapes=((1024, 1000), (4096, 1000), (8192, 1000), (512, 32000), (1024, 32000),
            (2048, 32000)),
    quick_shapes=((256, 100),),
    goal_shapes=((8192, 1000), (2048, 32000)),
    rounds=15))


def _inputs(shape):
    n, c = shape
    rng = rng_for(shape)
    logits = normal(rng, (n, c))
    labels, target = class_targets(rng, n, c)
    return {"logits": logits, "labels": labels, "target": target,
            "weight": class_weights(rng, c)}


INPUTS = Inputs(_inputs)
ARGS = ("logits", "target", "weight")


def _optax_unweighted(x, labels, weight):
    import optax

    del weight
    return optax.softmax_cross_entropy_with_integer_labels(x, labels).mean()


def _optax_smoothed(x, labels, weight):
    import jax
    import optax

    del weight
    smoothed = optax.smooth_labels(jax.nn.one_hot(labels, x.shape[-1], dtype=x.dtype),
                                   SMOOTHING)
    return optax.softmax_cross_entropy(x, smoothed).mean()


def _gradient_write(x, labels, weight):
    """``sum(x^2) / 2``, whose gradient is ``x``: one read of the logits and one
    logits-sized gradient written into a fresh buffer, the least a forward+backward of
    any loss with a dense gradient costs."""
    del labels, weight
    return 0.5 * (x * x).sum()


def _cross_entropy(module, smoothing):
    """``module.cross_entropy`` (``wce_jax``, ``torch.nn.functional`` or ``wce_torch``)
    with the family's arguments."""
    return function(f"{module}:cross_entropy", "weight", ignore_index=IGNORE_INDEX,
                    reduction="mean", label_smoothing=smoothing)


def _jax(name, loss, **kwargs):
    return jax_case(name, INPUTS, loss, args=kwargs.pop("args", ARGS), wrt=("logits",),
                    family=FAMILY.name, **kwargs)


def _torch(name, module, smoothing, **kwargs):
    return torch_case(name, INPUTS, _cross_entropy(module, smoothing), args=ARGS,
                      wrt=("logits",), family=FAMILY.name, **kwargs)


# ----------------------------------------------------------------------------------
# The cases, in table order.

TORCH_F_LS = f"torch_F-ls{SMOOTHING}"
OPTAX_LS = f"optax-ls{SMOOTHING}"

_jax("optax", _optax_unweighted, args=("logits", "labels", "weight"), requires=["optax"],
     baseline=None,
     description="optax.softmax_cross_entropy_with_integer_labels(x, y).mean(): "
                 "unweighted, no ignore_index (the JAX baseline)")
_jax(OPTAX_LS, _optax_smoothed, args=("logits", "labels", "weight"), requires=["optax"],
     baseline=None,
     description=f"optax.softmax_cross_entropy(x, optax.smooth_labels(one_hot(y), "
                 f"{SMOOTHING})).mean(): unweighted, no ignore_index (the JAX baseline, "
                 "smoothed)")
_jax("wce_jax", _cross_entropy("wce_jax", 0.0), baseline="optax",
     reference="jnp_naive", goal_time_ratio=1.0, goal_memory_fraction=0.1,
     description="wce_jax.cross_entropy(x, y, weight=w, ignore_index=-100)")
_jax(f"wce_jax-ls{SMOOTHING}", _cross_entropy("wce_jax", SMOOTHING),
     baseline=OPTAX_LS, goal_time_ratio=1.0, goal_memory_fraction=0.1,
     description=f"wce_jax.cross_entropy(..., label_smoothing={SMOOTHING})")
_jax(f"wce_jax-ls{SMOOTHING}-wconst", _cross_entropy("wce_jax", SMOOTHING),
     closed=("weight",), baseline=OPTAX_LS,
     description=f"wce_jax.cross_entropy(..., label_smoothing={SMOOTHING}) with the "
                 "weights closed over (a constant of the program), for context")
_jax("jnp_naive", peers.jnp_cross_entropy, baseline="optax",
     description="log_softmax, gather, w[y], sum / sum(w_y) in jax.numpy "
                 "(a port's first version, for context)")
_jax("gradient_write", _gradient_write, args=("logits", "labels", "weight"),
     baseline="optax",
     description="sum(x^2) / 2, whose gradient x is written into a fresh buffer: the "
                 "memory traffic every forward+backward pays, for context")
_torch("torch_F", "torch.nn.functional", 0.0, baseline=None,
       description="torch.nn.functional.cross_entropy(x, y, weight=w, "
                   "ignore_index=-100) (the PyTorch baseline)")
_torch(TORCH_F_LS, "torch.nn.functional", SMOOTHING, baseline=None,
       description=f"torch.nn.functional.cross_entropy(..., "
                   f"label_smoothing={SMOOTHING}) (the PyTorch baseline, smoothed)")
_torch("wce_torch", "wce_torch", 0.0, baseline="torch_F", reference="torch_F",
       goal_time_ratio=1.0,
       description="wce_torch.cross_entropy(x, y, weight=w, ignore_index=-100)")
_torch(f"wce_torch-ls{SMOOTHING}", "wce_torch", SMOOTHING, baseline=TORCH_F_LS,
       reference=TORCH_F_LS, goal_time_ratio=1.0,
       description=f"wce_torch.cross_entropy(..., label_smoothing={SMOOTHING})")
