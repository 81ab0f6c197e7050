"""``python -m conformance check MODULE:FUNCTION --loss LOSS``: your own loss against the
golden cases of ``LOSS``.

The function is called like ``torch.nn.functional``'s losses: the first argument
(``input``) positionally, the others by their names in the spec (``target``,
``weight``, ``ignore_index``, ``reduction``, ``label_smoothing``, ``pos_weight``, ...),
and only those that differ from the spec's defaults, so a function need not accept
options it does not implement (the cases that use them then fail, and say why).

``--framework`` says what the function takes and returns: NumPy arrays (no gradients
are checked), JAX arrays (the gradient comes from ``jax.vjp``, under ``jax.jit``), or
torch tensors (the gradient from autograd). ``--layout channels_last`` moves the class
axis last before the call and moves the gradient back, for functions with JAX's layout.

A case whose call raises where the spec expects a value fails with the exception's type,
message and the line that raised; a case that expects an error passes when the call
raises anything.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np

from conformance import reference
from conformance.adapters import Adapter, Outcome, split_args
from conformance.golden import Case

FRAMEWORKS = ("numpy", "jax", "torch")
LAYOUTS = ("channels_first", "channels_last")


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


class UserAdapter(Adapter):
    """Runs a user's function on the golden cases of one loss."""

    exact_errors = False  # any exception answers a case that expects an error

    def __init__(self, target: str, loss: str, framework: str = "numpy",
                 layout: str = "channels_first"):
        if framework not in FRAMEWORKS:
            raise CheckError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
        if layout not in LAYOUTS:
            raise CheckError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if not hasattr(reference, loss) or loss.endswith("_grad"):
            raise CheckError(f"unknown loss {loss!r}")
        self.fn = load_function(target)
        self.name, self.description = target, f"{target} ({framework}, {layout})"
        self.losses = frozenset({loss})
        self.framework, self.layout = framework, layout
        self.gradients = framework != "numpy"
        self.traced = False
        self.dtypes = (("float64", "float32", "float16") if framework == "numpy"
                       else ("float64", "float32", "bfloat16", "float16"))
        self.defaults = _defaults(loss)

    def unsupported(self, case: Case) -> str | None:
        if case.shards:
            return "data-parallel case"
        return None

    def _arguments(self, case: Case) -> dict:
        return {k: v for k, v in case.args.items()
                if k not in self.defaults or not _same(v, self.defaults[k])}

    def call(self, case: Case, dtype: str, traced: bool) -> Outcome:
        trimmed = Case(**{**case.__dict__, "args": self._arguments(case)})
        if self.framework == "torch":
            from conformance.adapters.torch_nn import run_torch

            if self.layout == "channels_last":
                raise CheckError("--layout channels_last is for the numpy and jax frameworks")
            return run_torch(self.fn, trimmed, dtype)
        if self.framework == "jax":
            from conformance.adapters.wce_jax import run_jax

            return run_jax(self.fn, trimmed, dtype, traced=True, layout=self.layout)
        return _run_numpy(self.fn, trimmed, dtype, self.layout)


def _same(value, default) -> bool:
    return not isinstance(value, np.ndarray) and value == default


def _run_numpy(fn, case: Case, dtype: str, layout: str) -> Outcome:
    from conformance.adapters.wce_jax import channels_last

    args = split_args(case, dtype, lambda a, dt: np.asarray(a).astype(dt))
    if layout == "channels_last":
        args, _ = channels_last(case, args)
    x = args.pop("input")
    output = np.asarray(fn(x, **args))
    return Outcome(output.astype(np.float64), None, str(output.dtype), None)
