"""Adapters: one small module per implementation under test.

An adapter turns a golden case into a call of its implementation and hands back NumPy
float64 results; all comparison logic lives in :mod:`conformance.runner`. It declares:

* ``losses``: the losses it implements (others are n/a);
* ``dtypes``: the dtypes it runs (others are n/a);
* ``exact_errors``: whether errors must be ValueError/TypeError naming the argument (wce's
  own implementations), or any exception counts as raising (peers);
* ``traced``: whether it also runs every case traced (under jit), checking spec section 11;
* ``gradients``: whether it returns the gradient with respect to input;
* ``derivatives``: whether it returns the JVP and the HVP of a case with tangents (spec
  section 18); where it does not (an implementation without forward mode or a second
  derivative), [JVP] and [HVP-*] are n/a, never passed;
* ``deviations``: clause id -> reason, where the spec says this implementation differs
  on purpose; a case that fails on such a clause is reported as a documented deviation;
* ``unsupported(case)``: a reason the case is n/a, or None.

``call(case, dtype, traced)`` runs the loss and returns an :class:`Outcome`, with the
gradient when the case has a ``grad_output``; it lets the implementation's exceptions
through, and must raise nothing of its own (for peers any exception counts as raising).
With ``derivatives``, a case with ``tangents`` also gets the JVP and the HVP; an exception
of one of those transforms is kept in ``Outcome.derivative_errors`` (the runner fails
that clause with it), so the value and the gradient are still checked.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import numpy as np

from conformance.golden import Case

KNOWN = {
    "reference": "conformance.adapters.reference",
    "torch": "conformance.adapters.torch_nn",
    "wce_jax": "conformance.adapters.wce_jax",
    "wce_torch": "conformance.adapters.wce_torch",
    "optax": "conformance.adapters.optax",
    "keras": "conformance.adapters.keras",
    "onnxruntime": "conformance.adapters.onnxruntime",
}
OWN = ("reference", "torch", "wce_jax", "wce_torch")  # the default run
TORCH_LOSSES = frozenset({"cross_entropy", "nll_loss", "binary_cross_entropy",
                          "binary_cross_entropy_with_logits"})  # torch.nn.functional's
ALL_LOSSES = TORCH_LOSSES | {"sigmoid_focal_loss", "softmax_focal_loss", "class_weights",
                             "class_weights_from_labels", "pos_weight_from_labels",
                             "sample_weights_from_labels", "linear_cross_entropy"}


@dataclasses.dataclass
class Outcome:
    output: np.ndarray
    grad_input: np.ndarray | None
    output_dtype: str
    grad_dtype: str | None
    #: gradients with respect to other arguments (``grad_<name>`` in the case), as
    #: name -> (array, dtype name)
    grads: dict[str, tuple[np.ndarray, str]] = dataclasses.field(default_factory=dict)
    #: spec section 18, for a case with tangents: the JVP of the output (array, dtype)
    jvp: tuple[np.ndarray, str] | None = None
    #: the HVP along the tangents, per differentiated argument: name -> (array, dtype)
    hvps: dict[str, tuple[np.ndarray, str]] = dataclasses.field(default_factory=dict)
    #: arguments whose gradient came back detached from the input (no second derivative;
    #: its HVP is reported as 0, which fails wherever the golden HVP is not 0)
    detached: set[str] = dataclasses.field(default_factory=set)
    #: "jvp" or "hvp" -> the exception that transform raised
    derivative_errors: dict[str, BaseException] = dataclasses.field(default_factory=dict)


def grad_arguments(case: Case) -> list[str]:
    """The arguments a case expects gradients for (``grad_<name>``), ``input`` first."""
    want = case.expected.get("traced") if case.is_error else case.expected
    if not isinstance(want, dict):
        return []
    return sorted((k[len("grad_"):] for k in want if k.startswith("grad_")),
                  key=lambda name: name != "input")


def derivative_arguments(case: Case) -> list[str]:
    """The arguments a case has tangents for (spec section 18), ``input`` first."""
    if case.tangents is None or case.is_error:
        return []
    return [name for name in grad_arguments(case) if name in case.tangents]


class Adapter:
    name = "?"
    description = ""
    losses: frozenset[str] = ALL_LOSSES
    dtypes: tuple[str, ...] = ("float64", "float32", "bfloat16", "float16")
    exact_errors = False
    traced = False
    gradients = True  # returns the gradient with respect to input
    derivatives = False  # returns the JVP and HVP of cases with tangents (section 18)
    deviations: dict[str, str] = {}

    supports_shards = False  # runs [DP-GLOBAL] cases with a collective over the shards
    supports_class_shards = False  # runs [CP-GLOBAL] cases with the class axis split

    def unsupported(self, case: Case) -> str | None:
        if case.shards and not self.supports_shards:
            return ("data-parallel case: this adapter runs no collective over shards "
                    "(wce_jax and wce_torch are tested on devices and processes in tests/)")
        if case.class_shards and not self.supports_class_shards:
            return ("class-parallel case: this adapter splits no class axis (wce_torch "
                    "is tested with gloo processes in tests/test_class_parallel.py)")
        return None

    def modes(self, case: Case) -> tuple[str, ...]:
        """How the case is run: "checked" (eager), and "traced" for traced adapters."""
        return ("checked", "traced") if self.traced else ("checked",)

    def release(self) -> None:
        """Free what the runs so far have cached (the runner calls it after each dtype):
        JAX keeps every compiled program, and a few thousand of them exhaust the
        process's memory mappings."""

    def argument_name(self, loss: str, name: str) -> str:
        """What this implementation calls the spec's argument ``name`` (for error messages)."""
        return name

    def call(self, case: Case, dtype: str, traced: bool) -> Outcome:
        raise NotImplementedError


class UnknownImplementation(ValueError):
    pass


class Unavailable(RuntimeError):
    """The implementation's package is not installed."""


def load(name: str) -> Adapter:
    if name not in KNOWN:
        raise UnknownImplementation(
            f"unknown implementation {name!r}; known: {', '.join(KNOWN)}"
        )
    try:
        module = importlib.import_module(KNOWN[name])
    except ImportError as exc:
        raise Unavailable(f"{name}: cannot import ({exc}); install its extra, see README") from exc
    return module.ADAPTER


def to_host(a, dtype: str) -> np.ndarray:
    """A NumPy array of ``dtype`` (bfloat16 through ml_dtypes): what every adapter hands
    its framework, converted on the host so that no framework op runs or compiles."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.asarray(a).astype(ml_dtypes.bfloat16)
    return np.asarray(a).astype(dtype)


def split_args(case: Case, dtype: str, convert) -> dict[str, Any]:
    """The case's keyword arguments, arrays passed through ``convert(array, dtype)``.

    Floating arrays are converted to the run ``dtype`` unless the case keeps their own
    dtype; integer and boolean arrays keep theirs; Python scalars pass unchanged.
    """
    out = {}
    for key, value in case.args.items():
        if isinstance(value, np.ndarray):
            keep = value.dtype.kind != "f" or key in case.keep_dtype
            out[key] = convert(value, str(value.dtype) if keep else dtype)
        else:
            out[key] = value
    return out
