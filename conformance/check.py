"""Your own loss against the golden cases of one loss: ``python -m conformance check
MODULE:FUNCTION --loss LOSS`` and :func:`conformance.assert_conforms`.

The function is called like ``torch.nn.functional``'s losses: the first argument
(``input``) positionally, the others by their names in the spec (``target``,
``weight``, ``ignore_index``, ``reduction``, ``label_smoothing``, ``pos_weight``, ...),
and only those that differ from the spec's defaults, so a function need not accept
options it does not implement (the cases that use them then fail, and say why).

``framework`` says what the function takes and returns: NumPy arrays (no gradients are
checked), JAX arrays (the gradient from ``jax.vjp``; called eagerly for the cases whose
eager behaviour differs, errors and warnings, and under ``jax.jit`` for every case, as
the wce_jax adapter does), or torch tensors (the gradient from autograd).
``layout="channels_last"`` moves the class axis last before the call and moves the
gradient back, for functions with JAX's layout.

A case whose call raises where the spec expects a value fails with the exception's type,
message and the line that raised; a case that expects an error passes when the call
raises anything. When the function is a known peer (from ``torch.nn.functional`` or
``optax``), the departures the spec documents for it are reported as deviations.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np

from conformance import clauses, reference
from conformance.adapters import Adapter, Outcome
from conformance.adapters import runners
from conformance.golden import Case

FRAMEWORKS = ("numpy", "jax", "torch")
LAYOUTS = runners.LAYOUTS


class CheckError(ValueError):
    """The function to check cannot be found or used."""


def load_function(target: str):
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise CheckError(f"expected MODULE:FUNCTION, got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CheckError(f"cannot import {module_name!r}: {exc}") from exc
    fn = module
    for part in attribute.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise CheckError(f"{module_name!r} has no attribute {attribute!r}")
    if not callable(fn):
        raise CheckError(f"{target} is not callable")
    return fn


def _defaults(loss: str) -> dict:
    """The spec's defaults of ``loss``'s keyword arguments (from the reference)."""
    parameters = inspect.signature(getattr(reference, loss)).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not p.empty}


def peer_deviations(fn) -> tuple[str, dict[str, str]]:
    """(peer name, documented departures) when ``fn`` belongs to a known peer, else
    ("", {}). torch.nn.functional's are the clauses SPEC.md marks *torch: differs*;
    optax's are its adapter's (conformance/adapters/optax.py)."""
    module = getattr(fn, "__module__", "") or ""
    if module.startswith("torch.nn.functional") or module == "torch._C._nn" or (
            module.startswith("torch") and getattr(fn, "__name__", "") in _torch_losses()):
        return "torch.nn.functional", clauses.torch_deviations()
    if module.split(".")[0] == "optax":
        from conformance.adapters.optax import ADAPTER

        return "optax", dict(ADAPTER.deviations)
    return "", {}


def _torch_losses():
    from conformance.adapters import TORCH_LOSSES

    return TORCH_LOSSES


class UserAdapter(Adapter):
    """Runs a user's function on the golden cases of one loss."""

    exact_errors = False  # any exception answers a case that expects an error

    def __init__(self, target, loss: str, framework: str = "numpy",
                 layout: str = "channels_first"):
        if framework not in FRAMEWORKS:
            raise CheckError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
        if layout not in LAYOUTS:
            raise CheckError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if not hasattr(reference, loss) or loss.endswith("_grad"):
            raise CheckError(f"unknown loss {loss!r}")
        if callable(target):
            self.fn = target
            target = f"{getattr(target, '__module__', '?')}:" \
                     f"{getattr(target, '__qualname__', repr(target))}"
        else:
            self.fn = load_function(target)
        self.name, self.description = target, f"{target} ({framework}, {layout})"
        self.losses = frozenset({loss})
        self.framework, self.layout = framework, layout
        self.gradients = framework != "numpy"
        self.traced = framework == "jax"
        self.dtypes = (("float64", "float32", "float16") if framework == "numpy"
                       else ("float64", "float32", "bfloat16", "float16"))
        self.defaults = _defaults(loss)
        self.peer, self.deviations = peer_deviations(self.fn)
        if framework == "jax":
            runners.jax_compilation_cache()

    def unsupported(self, case: Case) -> str | None:
        if case.shards:
            return "data-parallel case"
        if case.class_shards:
            return "class-parallel case"
        return None

    def modes(self, case: Case) -> tuple[str, ...]:
        if self.framework == "jax":  # as the wce_jax adapter: eager where it differs
            return runners.jax_modes(case)
        return ("checked",)

    def release(self):
        if self.framework == "jax":
            runners.release_jax()

    def _arguments(self, case: Case) -> dict:
        return {k: v for k, v in case.args.items()
                if k not in self.defaults or not _same(v, self.defaults[k])}

    def call(self, case: Case, dtype: str, traced: bool) -> Outcome:
        trimmed = Case(**{**case.__dict__, "args": self._arguments(case)})
        if self.framework == "torch":
            return runners.run_torch(self.fn, trimmed, dtype, self.layout)
        if self.framework == "jax":
            return runners.run_jax(self.fn, trimmed, dtype, traced, self.layout)
        return runners.run_numpy(self.fn, trimmed, dtype, self.layout)


def _same(value, default) -> bool:
    return not isinstance(value, np.ndarray) and value == default
