"""Cross-entropy with class-index targets: wce_jax and wce_torch against their peers.

Every case of a shape ``(N, C)`` sees the same float32 logits (standard normal), the
same class weights (uniform in [0.5, 2)) and the same targets, about 10% of which are
``ignore_index`` (optax, which has neither weights nor ``ignore_index``, gets the
targets before they were ignored). Each callable runs one forward+backward with
``reduction="mean"`` and returns the gradient with respect to the logits.
"""

from __future__ import annotations

import functools
import importlib

import numpy as np

from benchmarks.memory import jax_temp_bytes, torch_peak_bytes
from benchmarks.registry import Case, Shape, Unavailable, register

IGNORE_INDEX = -100
IGNORED_FRACTION = 0.1
SMOOTHING = 0.1


@functools.lru_cache(maxsize=1)
def class_inputs(shape: Shape):
    """``(logits, labels, target, weight)`` as NumPy arrays; one shape cached at a time."""
    n, c = shape
    rng = np.random.default_rng([n, c])
    logits = rng.standard_normal((n, c), dtype=np.float32)
    labels = rng.integers(0, c, n)
    target = np.where(rng.random(n) < IGNORED_FRACTION, IGNORE_INDEX, labels)
    target[0] = IGNORE_INDEX  # at least one ignored element at every size
    weight = rng.uniform(0.5, 2.0, c).astype(np.float32)
    return logits, labels, target, weight


# ----------------------------------------------------------------------------------
# JAX: jax.jit(jax.value_and_grad(loss)) with respect to the logits, targets and
# weights passed as arguments (not baked into the program as constants).


def _optax_unweighted(x, labels, weight):
    import optax

    del weight
    return optax.softmax_cross_entropy_with_integer_labels(x, labels).mean()


def _wce_jax(smoothing):
    def loss(x, target, weight):
        import wce_jax

        return wce_jax.cross_entropy(x, target, weight=weight, ignore_index=IGNORE_INDEX,
                                     reduction="mean", label_smoothing=smoothing)
    return loss


def _jnp_naive_weighted(x, target, weight):
    """What a port writes first: log_softmax, gather, w[y], sum / sum(w_y)."""
    import jax
    import jax.numpy as jnp

    lp = jax.nn.log_softmax(x, axis=-1)
    valid = target != IGNORE_INDEX
    safe = jnp.where(valid, target, 0)
    w_y = jnp.where(valid, weight[safe], 0.0)
    picked = jnp.take_along_axis(lp, safe[:, None], axis=-1)[:, 0]
    return -jnp.sum(w_y * picked) / jnp.sum(w_y)


def _require(*modules):
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise Unavailable(f"{module} is not importable ({err})") from err


def _jax_args(shape: Shape, labels: bool):
    import jax.numpy as jnp

    x, y_all, y, w = class_inputs(shape)
    return (jnp.asarray(x), jnp.asarray((y_all if labels else y).astype(np.int32)),
            jnp.asarray(w))


def _jax_case(name, loss, *, requires, labels=False, constant_weight=False, **kwargs):
    """``loss(x, y, w)``, differentiated with respect to ``x``. With ``constant_weight``
    the weights are closed over (a constant of the compiled program) instead of passed."""

    @functools.lru_cache(maxsize=1)
    def program(shape):
        """The jitted step and its arguments, shared by setup and memory: the program
        that is timed is the one whose memory is analysed, and it is compiled once."""
        _require("jax", *requires)
        import jax

        x, y, w = _jax_args(shape, labels)
        if constant_weight:
            return jax.jit(jax.value_and_grad(lambda x, y: loss(x, y, w))), (x, y)
        return jax.jit(jax.value_and_grad(loss)), (x, y, w)

    def setup(shape):
        step, args = program(shape)
        return lambda: step(*args)

    def memory(shape):
        step, args = program(shape)
        return jax_temp_bytes(step, *args)

    return register(Case(name=name, framework="jax", setup=setup, memory=memory,
                         memory_kind="xla-temp", **kwargs))


# ----------------------------------------------------------------------------------
# PyTorch: the loss, then torch.autograd.grad with respect to the logits.


def _torch_args(shape: Shape):
    _require("torch")
    import torch

    x, _, y, w = class_inputs(shape)
    return (torch.from_numpy(x).requires_grad_(), torch.from_numpy(y.astype(np.int64)),
            torch.from_numpy(w))


def _torch_functional():
    import torch.nn.functional as F

    return F.cross_entropy


def _wce_torch():
    try:
        from wce_torch import cross_entropy
    except ImportError as err:
        reason = str(err).split(" (")[0]  # without the file path
        raise Unavailable(f"wce_torch.cross_entropy is not available yet ({reason})") from err
    return cross_entropy


def _torch_step(fn, smoothing, args):
    import torch

    x, y, w = args

    def step():
        loss = fn(x, y, weight=w, ignore_index=IGNORE_INDEX, reduction="mean",
                  label_smoothing=smoothing)
        (grad,) = torch.autograd.grad(loss, x)
        return grad
    return step


def _check_against_functional(fn, smoothing, args):
    """A ratio means something only if both sides compute the same loss and gradient."""
    import torch

    x, y, w = args
    got = fn(x, y, weight=w, ignore_index=IGNORE_INDEX, reduction="mean",
             label_smoothing=smoothing)
    want = _torch_functional()(x, y, weight=w, ignore_index=IGNORE_INDEX, reduction="mean",
                               label_smoothing=smoothing)
    (grad_got,) = torch.autograd.grad(got, x)
    (grad_want,) = torch.autograd.grad(want, x)
    if not (torch.allclose(got, want, rtol=1e-4, atol=1e-6)
            and torch.allclose(grad_got, grad_want, rtol=1e-4, atol=1e-8)):
        raise RuntimeError(
            f"disagrees with torch.nn.functional.cross_entropy: loss {got.item()!r} vs "
            f"{want.item()!r}, largest gradient difference "
            f"{(grad_got - grad_want).abs().max().item():.3g}")


def _torch_case(name, get_fn, smoothing, *, check=False, **kwargs):
    def setup(shape):
        fn, args = get_fn(), _torch_args(shape)
        if check:
            _check_against_functional(fn, smoothing, args)
        return _torch_step(fn, smoothing, args)

    def memory(shape):
        return torch_peak_bytes(_torch_step(get_fn(), smoothing, _torch_args(shape)))

    return register(Case(name=name, framework="torch", setup=setup, memory=memory,
                         memory_kind="torch-peak", **kwargs))


# ----------------------------------------------------------------------------------
# The cases, in table order.


_jax_case("optax", _optax_unweighted, requires=["optax"], labels=True, baseline=None,
          description="optax.softmax_cross_entropy_with_integer_labels(x, y).mean(): "
                      "unweighted, no ignore_index (the JAX baseline)")
_jax_case("wce_jax", _wce_jax(0.0), requires=["wce_jax"], baseline="optax",
          goal_time_ratio=1.0, goal_memory_fraction=0.1,
          description="wce_jax.cross_entropy(x, y, weight=w, ignore_index=-100)")
_jax_case(f"wce_jax-ls{SMOOTHING}", _wce_jax(SMOOTHING), requires=["wce_jax"],
          baseline="optax", goal_time_ratio=1.0, goal_memory_fraction=0.1,
          description=f"wce_jax.cross_entropy(..., label_smoothing={SMOOTHING})")
_jax_case(f"wce_jax-ls{SMOOTHING}-wconst", _wce_jax(SMOOTHING), requires=["wce_jax"],
          constant_weight=True, baseline="optax",
          description=f"wce_jax.cross_entropy(..., label_smoothing={SMOOTHING}) with the "
                      "weights closed over (a constant of the program), for context")
_jax_case("jnp_naive", _jnp_naive_weighted, requires=[], baseline="optax",
          description="log_softmax, gather, w[y], sum / sum(w_y) in jax.numpy "
                      "(a port's first version, for context)")
_torch_case("torch_F", _torch_functional, 0.0, baseline=None,
            description="torch.nn.functional.cross_entropy(x, y, weight=w, "
                        "ignore_index=-100) (the PyTorch baseline)")
_torch_case(f"torch_F-ls{SMOOTHING}", _torch_functional, SMOOTHING, baseline=None,
            description=f"torch.nn.functional.cross_entropy(..., "
                        f"label_smoothing={SMOOTHING}) (the PyTorch baseline, smoothed)")
_torch_case("wce_torch", _wce_torch, 0.0, check=True, baseline="torch_F",
            goal_time_ratio=1.0,
            description="wce_torch.cross_entropy(x, y, weight=w, ignore_index=-100)")
_torch_case(f"wce_torch-ls{SMOOTHING}", _wce_torch, SMOOTHING, check=True,
            baseline=f"torch_F-ls{SMOOTHING}", goal_time_ratio=1.0,
            description=f"wce_torch.cross_entropy(..., label_smoothing={SMOOTHING})")
