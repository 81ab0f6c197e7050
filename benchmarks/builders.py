"""What every family's cases share: the inputs of a shape, and the JAX and PyTorch steps.

A family module describes its inputs once, as an :class:`Inputs` (NumPy arrays made
from the shape, so every case of a shape sees the same numbers, converted once per
framework), and each implementation as a loss function of some of them, by name.
:func:`jax_case` and :func:`torch_case` turn that into a registered
:class:`~benchmarks.registry.Case`:

* JAX: ``jax.jit(jax.value_and_grad(loss, argnums))`` with the named inputs as
  arguments (not constants of the program, unless ``closed`` says so), differentiated
  with respect to the inputs named in ``wrt``, blocked on with
  ``jax.block_until_ready``. Memory: the temporaries of that very compiled program
  (:func:`benchmarks.memory.jax_temp_bytes`).
* PyTorch: the loss, then ``torch.autograd.grad`` with respect to ``wrt``; PyTorch on
  CPU is synchronous. Memory: the allocator peak of such a step, profiled after the
  harness's warm-up calls (:func:`benchmarks.memory.torch_peak_bytes`).

Each case runs in the three modes of :data:`~benchmarks.registry.MODES`: forward+backward,
the backward pass alone and inference (the loss without gradients). Every step returns
``(loss, (gradient, ...))`` (``None`` for the loss of a backward pass, no gradients for
inference), which the case's ``outputs`` names ``loss`` and ``d_<input>`` for the
harness's agreement check. Inputs are made on the run's device, in its dtype
(:data:`~benchmarks.registry.SETTINGS`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from benchmarks.memory import jax_temp_bytes, torch_peak_bytes
from benchmarks.registry import (BACKWARD, FWD_BWD, INFERENCE, SETTINGS, Case, Shape, Step,
                                 Unavailable, register)

IGNORE_INDEX = -100
IGNORED_FRACTION = 0.1


# ----------------------------------------------------------------------------------
# Inputs


def rng_for(shape: Shape) -> np.random.Generator:
    """The generator of a shape's inputs: the same numbers in every run."""
    return np.random.default_rng(list(shape))


def normal(rng: np.random.Generator, shape: Shape, scale: float = 1.0) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    return x if scale == 1.0 else (x * np.float32(scale))


def class_targets(rng: np.random.Generator, n: int, c: int):
    """``(labels, target)``: class indices, and the same with about 10% of them
    ``IGNORE_INDEX`` (always at least the first)."""
    labels = rng.integers(0, c, n)
    target = np.where(rng.random(n) < IGNORED_FRACTION, IGNORE_INDEX, labels)
    target[0] = IGNORE_INDEX
    return labels, target


def class_weights(rng: np.random.Generator, c: int) -> np.ndarray:
    """Per-class weights, uniform in [0.5, 2)."""
    return rng.uniform(0.5, 2.0, c).astype(np.float32)


class Inputs:
    """The named NumPy arrays of one shape (``make(shape)``), cached for the shape being
    measured, with their JAX and PyTorch versions. Integer arrays become int32 in JAX
    (its default) and int64 in PyTorch; PyTorch tensors share the NumPy memory."""

    def __init__(self, make: Callable[[Shape], dict]):
        self._make = make
        self.clear()

    def clear(self) -> None:
        self._shape, self._numpy, self._jax, self._torch = None, {}, {}, {}

    def numpy(self, shape: Shape) -> dict:
        if self._shape != tuple(shape):
            self.clear()
            self._numpy, self._shape = self._make(tuple(shape)), tuple(shape)
        return self._numpy

    def jax(self, shape: Shape, names: Sequence[str]) -> tuple:
        """JAX arrays on the run's device; floating ones in the run's dtype."""
        import jax
        import jax.numpy as jnp

        arrays = self.numpy(shape)
        device = jax.devices("gpu" if SETTINGS.device == "gpu" else "cpu")[0]
        for name in names:
            if name not in self._jax:
                a = arrays[name]
                a = jnp.asarray(a.astype(np.int32) if a.dtype.kind in "iu" else a,
                                device=device)
                self._jax[name] = a.astype(SETTINGS.dtype) if a.dtype.kind == "f" else a
        return tuple(self._jax[name] for name in names)

    def torch(self, shape: Shape, names: Sequence[str], wrt: Sequence[str]) -> tuple:
        """Tensors on the run's device (sharing the NumPy memory on the CPU in float32);
        floating ones in the run's dtype, those in ``wrt`` requiring gradients."""
        import torch

        arrays = self.numpy(shape)
        device = "cuda" if SETTINGS.device == "gpu" else "cpu"
        for name in names:
            if name not in self._torch:
                a = arrays[name]
                t = torch.from_numpy(a.astype(np.int64) if a.dtype.kind in "iu" else a)
                if t.is_floating_point():
                    t = t.to(getattr(torch, SETTINGS.dtype))
                t = t.to(device)
                self._torch[name] = t.requires_grad_() if name in wrt else t
        return tuple(self._torch[name] for name in names)


# ----------------------------------------------------------------------------------
# Cases


def require(*names: str) -> None:
    """Raise :class:`Unavailable` unless every ``"module"`` imports and every
    ``"module:function"`` exists."""
    for name in names:
        module, _, attr = name.partition(":")
        try:
            loaded = importlib.import_module(module)
        except ImportError as err:
            raise Unavailable(f"{module} is not importable ({err})") from err
        if attr and not hasattr(loaded, attr):
            raise Unavailable(f"{module}.{attr} is not available")


def function(path: str, *keywords: str, **fixed) -> Callable:
    """A loss that calls ``path`` (``"module:function"``, imported at the first call)
    with the case's arguments: the last ``len(keywords)`` under those names, the others
    positionally, and the ``fixed`` keywords. ``function("wce_jax:nll_loss", "weight",
    ignore_index=-100)(lp, y, w)`` is ``wce_jax.nll_loss(lp, y, weight=w,
    ignore_index=-100)``."""
    module, _, attr = path.partition(":")
    resolved = []

    def loss(*args):
        if not resolved:
            resolved.append(getattr(importlib.import_module(module), attr))
        cut = len(args) - len(keywords)
        return resolved[0](*args[:cut], **dict(zip(keywords, args[cut:])), **fixed)

    loss.__qualname__ = loss.__name__ = path.replace(":", ".")
    loss.requires = (path,)  # what jax_case and torch_case check before using it
    return loss


def _named_outputs(wrt: Sequence[str], to_numpy: Callable) -> Callable:
    """Names a step's ``(loss, gradients)``; the loss is None in the backward mode and
    the gradients empty in inference."""
    def outputs(result) -> dict:
        loss, grads = result
        named = {} if loss is None else {"loss": to_numpy(loss)}
        named.update((f"d_{name}", to_numpy(g)) for name, g in zip(wrt, grads))
        return named
    return outputs


def _jax_numpy(a) -> np.ndarray:
    return np.array(a, dtype=np.float64)


def _torch_numpy(t) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(np.float64)


def jax_case(name: str, inputs: Inputs, loss: Callable, *, args: Sequence[str],
             wrt: Sequence[str], requires: Sequence[str] = (), closed: Sequence[str] = (),
             **kwargs) -> Case:
    """Register ``loss(*args)`` (JAX arrays, by input name) as a JAX case.

    Its modes: ``jax.jit(jax.value_and_grad(...))``; the backward pass alone, a jitted
    call of the VJP function that a jitted ``jax.vjp`` returned (its residuals are the
    forward pass's, computed untimed before each call); and the jitted loss alone.
    ``closed`` names inputs that are closed over (constants of the compiled program)
    instead of passed as arguments. ``requires`` as in :func:`require` (a
    :func:`function` brings its own); ``kwargs`` go to :class:`Case`."""
    args, wrt, closed = tuple(args), tuple(wrt), tuple(closed)
    free = tuple(a for a in args if a not in closed)
    argnums = tuple(free.index(w) for w in wrt)

    @functools.lru_cache(maxsize=1)
    def prepared(shape):
        require("jax", *requires, *getattr(loss, "requires", ()))
        import jax

        values = dict(zip(args, inputs.jax(shape, args)))
        constants = {a: values[a] for a in closed}

        def f(*given):
            full = dict(constants, **dict(zip(free, given)))
            return loss(*(full[a] for a in args))

        def vjp(*given):
            def of_wrt(*differentiated):
                full = list(given)
                for i, value in zip(argnums, differentiated):
                    full[i] = value
                return f(*full)
            return jax.vjp(of_wrt, *(given[i] for i in argnums))

        return f, vjp, tuple(values[a] for a in free)

    @functools.lru_cache(maxsize=None)
    def program(shape, mode):
        """The jitted program of a mode and its arguments, shared by setup and memory:
        the program that is timed is the one whose memory is analysed, compiled once."""
        import jax
        import jax.numpy as jnp

        f, vjp, arrays = prepared(shape)
        if mode == FWD_BWD:
            return jax.jit(jax.value_and_grad(f, argnums=argnums)), arrays
        if mode == INFERENCE:
            return jax.jit(f), arrays
        forward, backward = jax.jit(vjp), jax.jit(lambda pullback, ct: pullback(ct))
        value, pullback = forward(*arrays)
        one = jnp.ones_like(value)
        return backward, (pullback, one), forward

    def setup(shape, mode):
        if mode == BACKWARD:
            backward, (_, one), forward = program(shape, mode)
            arrays = prepared(shape)[2]
            return Step(prepare=lambda: forward(*arrays)[1],
                        run=lambda pullback: (None, backward(pullback, one)))
        step, arrays = program(shape, mode)
        if mode == INFERENCE:
            return Step(lambda: (step(*arrays), ()))
        return Step(lambda: step(*arrays))

    def memory(shape, mode):
        step, arrays, *_ = program(shape, mode)
        return jax_temp_bytes(step, *arrays)

    def release():
        program.cache_clear()
        prepared.cache_clear()
        inputs.clear()

    return register(Case(name=name, framework="jax", setup=setup, memory=memory,
                         memory_kind="xla-temp", outputs=_named_outputs(wrt, _jax_numpy),
                         release=release, **kwargs))


def torch_case(name: str, inputs: Inputs, loss: Callable, *, args: Sequence[str],
               wrt: Sequence[str], requires: Sequence[str] = (), memory_runs: int = 2,
               **kwargs) -> Case:
    """Register ``loss(*args)`` (tensors, by input name) as a PyTorch case.

    Its modes: the loss then ``torch.autograd.grad``; that ``torch.autograd.grad`` alone
    (the loss, which builds the graph, runs untimed before each call); and the loss
    under ``torch.no_grad()``. ``memory_runs`` profiled runs measure the memory (they
    must agree; 1 for steps that take seconds). ``requires`` as in :func:`require` (a
    :func:`function` brings its own); ``kwargs`` go to :class:`Case`."""
    args, wrt = tuple(args), tuple(wrt)

    @functools.lru_cache(maxsize=1)
    def program(shape):
        require("torch", *requires, *getattr(loss, "requires", ()))
        import torch

        tensors = inputs.torch(shape, args, wrt)
        by_name = dict(zip(args, tensors))
        differentiated = [by_name[w] for w in wrt]

        def forward():
            return loss(*tensors)

        def backward(value):
            return None, torch.autograd.grad(value, differentiated)

        def fwd_bwd():
            value = loss(*tensors)
            return value.detach(), torch.autograd.grad(value, differentiated)

        def inference():
            with torch.no_grad():
                return loss(*tensors), ()

        return {FWD_BWD: Step(fwd_bwd), BACKWARD: Step(backward, prepare=forward),
                INFERENCE: Step(inference)}

    def setup(shape, mode):
        return program(shape)[mode]

    def memory(shape, mode):  # after the harness's warm-up calls
        step = program(shape)[mode]
        return torch_peak_bytes(step.run, runs=memory_runs, warm_up=False,
                                prepare=step.prepare)

    def release():
        program.cache_clear()
        inputs.clear()

    return register(Case(name=name, framework="torch", setup=setup, memory=memory,
                         memory_kind="torch-peak", outputs=_named_outputs(wrt, _torch_numpy),
                         release=release, **kwargs))


# ----------------------------------------------------------------------------------
# A family's usual cases


@dataclasses.dataclass(frozen=True)
class Impl:
    """One implementation of a family's loss: the case is named ``family/name``."""

    name: str
    loss: Callable
    description: str
    requires: Tuple[str, ...] = ()


def peer_cases(family: str, inputs: Inputs, *, args: Sequence[str], wrt: Sequence[str],
               jax_peers: Sequence[Impl], wce_jax: Impl, torch_peers: Sequence[Impl],
               wce_torch: Impl, goals: Optional[dict] = None, torch_memory_runs: int = 2,
               **kwargs) -> None:
    """Register a family's cases, in table order: per framework, the first peer is the
    baseline and the reference (same loss, same gradients) of wce's function, and the
    other peers are context against that baseline. ``goals`` (``goal_time_ratio=`` ...)
    are wce's; ``kwargs`` (``applies=``, ``logits_shape=``) go to every case."""
    goals = goals or {}
    for framework, peers, wce in (("jax", jax_peers, wce_jax),
                                  ("torch", torch_peers, wce_torch)):
        build = jax_case if framework == "jax" else functools.partial(
            torch_case, memory_runs=torch_memory_runs)
        (base, *others) = peers
        base_name = f"{family}/{base.name}"

        def add(impl, description, **extra):
            build(f"{family}/{impl.name}", inputs, impl.loss, args=args, wrt=wrt,
                  requires=impl.requires, family=family, description=description,
                  **extra, **kwargs)

        add(base, f"{base.description} (the {_FRAMEWORKS[framework]} baseline)",
            baseline=None)
        add(wce, wce.description, baseline=base_name, reference=base_name, **goals)
        for impl in others:
            add(impl, f"{impl.description}, for context", baseline=base_name)


_FRAMEWORKS = {"jax": "JAX", "torch": "PyTorch"}
