"""The registry of loss families and benchmark cases.

A :class:`Family` is one loss (cross-entropy, NLL, a focal loss, ...): a section of the
table with its own shapes, goal shapes and number of rounds. A :class:`Case` is one
implementation of that loss, in one configuration, measured on a shape and compared
with a peer of the same family. The harness only knows these interfaces, so a new loss
or a new peer is one more ``register_family(...)`` or ``register(Case(...))`` call in a
module listed in :data:`CASE_MODULES`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any, Callable, Optional, Tuple

Shape = Tuple[int, ...]

#: Modules whose import registers families and cases, in table order.
CASE_MODULES = ("benchmarks.cross_entropy", "benchmarks.nll", "benchmarks.binary",
                "benchmarks.focal", "benchmarks.linear")


#: What one measured call runs: the loss and its gradients, the gradients alone (the
#: forward pass that builds what they need runs before, untimed), or the loss alone
#: (``torch.no_grad()``; no VJP in JAX).
FWD_BWD, BACKWARD, INFERENCE = "fwd+bwd", "backward", "inference"
MODES = (FWD_BWD, BACKWARD, INFERENCE)

#: Where and in what floating dtype the run's inputs are made (``python -m benchmarks
#: --device/--dtype``): every case of the run sees the same.
DEVICES = ("cpu", "gpu")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass
class RunSettings:
    device: str = "cpu"
    dtype: str = "float32"

    @property
    def itemsize(self) -> int:
        return {"float32": 4, "bfloat16": 2}[self.dtype]


SETTINGS = RunSettings()


def configure(device: str = "cpu", dtype: str = "float32") -> None:
    """Set the device and dtype of the cases' inputs (before any case is set up)."""
    if device not in DEVICES:
        raise ValueError(f"device={device!r}; expected one of {DEVICES}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; expected one of {DTYPES}")
    SETTINGS.device, SETTINGS.dtype = device, dtype


@dataclasses.dataclass(frozen=True)
class Step:
    """One measured call: ``run()``, or ``run(prepare())`` with only ``run`` timed (the
    backward pass, whose forward pass ``prepare`` runs untimed each time)."""

    run: Callable[..., Any]
    prepare: Optional[Callable[[], Any]] = None


class Unavailable(Exception):
    """Raised by ``setup`` or ``memory`` when an implementation cannot run here (a
    package that is not installed, or does not provide the function yet). The case's
    rows are reported as skipped, with the message as the note."""


def _same(shape: Shape) -> Shape:
    return tuple(shape)


def _two_dims(shape: Shape) -> bool:
    return len(shape) == 2


def _nothing() -> None:
    return None


@dataclasses.dataclass(frozen=True)
class Family:
    """One loss, whose cases are measured together and shown as one table section.

    Attributes:
      name: short name, used by ``--family`` and in the JSON.
      title: what is computed, for the table's section header and the README.
      shape_names: what a shape's dimensions are, e.g. ``"N x C"`` or ``"N x D x V"``.
      logits_names: the logits' dimensions in those names, e.g. ``"N x V"``: the plot's
        x axis is their product.
      shapes: the default grid; quick_shapes: the ``--quick`` grid (tiny);
      goal_shapes: the shapes the goals are stated for (``*`` in the table).
      rounds, quick_rounds: interleaved rounds per shape, without and with ``--quick``.
      warmup: calls before timing (the first compiles JAX programs); 1 for heavy steps.
    """

    name: str
    title: str
    shapes: Tuple[Shape, ...]
    quick_shapes: Tuple[Shape, ...]
    goal_shapes: Tuple[Shape, ...] = ()
    shape_names: str = "N x C"
    logits_names: str = "N x C"
    rounds: int = 15
    quick_rounds: int = 3
    warmup: int = 2


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of the benchmark table per shape.

    Attributes:
      name: unique short name, used in the table, the JSON and ``--cases``.
      framework: ``"jax"`` or ``"torch"`` (what ``--only`` selects on).
      setup: ``setup(shape, mode)`` builds inputs and returns the :class:`Step` of
        one call in that mode (one of ``modes``): a forward+backward, a backward pass,
        or a forward pass without gradients; its result is something to block on.
        The first calls compile; the harness warms it up before timing.
      memory: ``memory(shape, mode)`` returns the case's memory beyond its inputs in
        bytes (see ``memory_kind``), or None when the case has no memory measure. It
        is called after ``setup`` and the warm-up calls (which compiled the program
        and did any lazy initialisation).
      modes: the modes the case runs in (:data:`MODES`).
      baseline: the name of the case this one's time and memory are divided by, in the
        same run and shape; None for a baseline itself.
      family: the name of the case's :class:`Family`.
      description: what the case computes, for the README and ``--list``.
      memory_kind: ``"xla-temp"`` (the compiled program's temporary buffers, inputs
        and outputs excluded) or ``"torch-peak"`` (allocator peak beyond the inputs,
        the returned gradients included); see benchmarks/memory.py.
      goal_time_ratio: the goal for ``mean time / baseline mean time`` (or None).
      goal_memory_fraction: the goal for ``memory / logits bytes`` (or None).
      goal_memory_ratio: the goal for ``memory / baseline memory`` (or None).
      logits_shape: ``logits_shape(shape)``, the shape of the logits the loss sees
        (``(N, V)`` for a fused linear+cross-entropy of shape ``(N, D, V)``): memory
        fractions are fractions of their bytes in the run's dtype, and the plot's x axis is their
        number of elements.
      applies: ``applies(shape)``: whether the case runs on that shape (two-dimensional
        by default).
      reference: the name of a case that computes the same loss and gradients on the
        same inputs; before timing, this case's outputs are compared with the
        reference's with conformance's comparison (spec section 1, the tolerance of
        ``dtype`` in SPEC.md's table) and a disagreement is an error row. None: not
        checked.
      outputs: ``outputs(result)`` turns what the step returned into named NumPy
        arrays (``{"loss": ..., "d_logits": ...}``) for that comparison, which is
        made in every mode, between the case's and the reference's outputs of that
        mode, in the run's dtype.
      release: frees what ``setup`` cached (inputs, compiled programs) once a shape is
        done.
    """

    name: str
    framework: str
    setup: Callable[[Shape, str], Step]
    memory: Callable[[Shape, str], Optional[int]]
    baseline: Optional[str]
    family: str = "ce"
    description: str = ""
    memory_kind: Optional[str] = None
    goal_time_ratio: Optional[float] = None
    goal_memory_fraction: Optional[float] = None
    goal_memory_ratio: Optional[float] = None
    logits_shape: Callable[[Shape], Shape] = _same
    applies: Callable[[Shape], bool] = _two_dims
    reference: Optional[str] = None
    outputs: Optional[Callable[[Any], dict]] = None
    release: Callable[[], None] = _nothing
    modes: Tuple[str, ...] = MODES

    def logits_bytes(self, shape: Shape) -> int:
        return SETTINGS.itemsize * math.prod(self.logits_shape(shape))


_FAMILIES: dict[str, Family] = {}
_REGISTRY: dict[str, Case] = {}


def register_family(family: Family) -> Family:
    if family.name in _FAMILIES:
        raise ValueError(f"benchmark family {family.name!r} is registered twice")
    _FAMILIES[family.name] = family
    return family


def register(case: Case) -> Case:
    if case.name in _REGISTRY:
        raise ValueError(f"benchmark case {case.name!r} is registered twice")
    if case.framework not in ("jax", "torch"):
        raise ValueError(f"case {case.name!r}: unknown framework {case.framework!r}")
    if case.family not in _FAMILIES:
        raise ValueError(f"case {case.name!r}: unknown family {case.family!r} (register "
                         f"the family first)")
    _REGISTRY[case.name] = case
    return case


def _load() -> None:
    for module in CASE_MODULES:
        importlib.import_module(module)


def all_families() -> list[Family]:
    """Every registered family, in registration order."""
    _load()
    return list(_FAMILIES.values())


def all_cases() -> list[Case]:
    """Every registered case, in registration order (imports :data:`CASE_MODULES`)."""
    _load()
    for case in _REGISTRY.values():
        for role, other in (("baseline", case.baseline), ("reference", case.reference)):
            if other is None:
                continue
            if other not in _REGISTRY:
                raise ValueError(f"case {case.name!r}: unknown {role} {other!r}")
            if _REGISTRY[other].family != case.family:
                raise ValueError(f"case {case.name!r}: its {role} {other!r} is of another "
                                 f"family")
    return list(_REGISTRY.values())


def select(only: Optional[str] = None, names: Optional[list[str]] = None,
           families: Optional[list[str]] = None) -> list[Case]:
    """The cases of one framework (``only``), with the given names and/or of the given
    families, plus the baselines and references they are compared with (so that every
    ratio can be formed and every agreement checked)."""
    cases = all_cases()
    by_name = {c.name: c for c in cases}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise KeyError(f"unknown benchmark case(s) {', '.join(map(repr, unknown))}; "
                           f"known: {', '.join(by_name)}")
    if families:
        unknown = [f for f in families if f not in _FAMILIES]
        if unknown:
            raise KeyError(f"unknown benchmark family(ies) {', '.join(map(repr, unknown))}; "
                           f"known: {', '.join(_FAMILIES)}")
    chosen = {c.name for c in cases
              if (only is None or c.framework == only) and (not names or c.name in names)
              and (not families or c.family in families)}
    for name in list(chosen):
        for other in (by_name[name].baseline, by_name[name].reference):
            if other is not None:
                chosen.add(other)
    return [c for c in cases if c.name in chosen]
