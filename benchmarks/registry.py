"""The registry of benchmark cases.

A :class:`Case` is one implementation of one loss, in one configuration, measured on a
shape. The harness only knows this interface, so a new loss or a new peer is one more
``register(Case(...))`` call in a module listed in :data:`CASE_MODULES`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Optional, Tuple

Shape = Tuple[int, ...]

#: Modules whose import registers cases, in table order.
CASE_MODULES = ("benchmarks.cross_entropy",)


class Unavailable(Exception):
    """Raised by ``setup`` or ``memory`` when an implementation cannot run here (a
    package that is not installed, or does not provide the function yet). The case's
    rows are reported as skipped, with the message as the note."""


def _logits_bytes(shape: Shape) -> int:
    size = 1
    for d in shape:
        size *= d
    return 4 * size  # float32 logits


def _two_dims(shape: Shape) -> bool:
    return len(shape) == 2


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of the benchmark table per shape.

    Attributes:
      name: unique short name, used in the table, the JSON and ``--cases``.
      framework: ``"jax"`` or ``"torch"`` (what ``--only`` selects on).
      setup: ``setup(shape)`` builds inputs and returns a callable that runs one
        forward+backward and returns something to block on (its result is discarded).
        The first calls compile; the harness warms it up before timing.
      memory: ``memory(shape)`` returns the case's memory beyond its inputs in bytes
        (see ``memory_kind``), or None when the case has no memory measure.
      baseline: the name of the case this one's time and memory are divided by, in the
        same run and shape; None for a baseline itself.
      description: what the case computes, for the README and ``--list``.
      memory_kind: ``"xla-temp"`` (the compiled program's temporary buffers, inputs
        and outputs excluded) or ``"torch-peak"`` (allocator peak beyond the inputs,
        the returned gradient included); see benchmarks/memory.py.
      goal_time_ratio: the goal for ``mean time / baseline mean time`` (or None).
      goal_memory_fraction: the goal for ``memory / logits bytes`` (or None).
      logits_bytes: ``logits_bytes(shape)``, what memory fractions are fractions of.
      applies: ``applies(shape)``: whether the case runs on that shape (a fused
        linear+cross-entropy, for instance, will want ``(N, H, C)`` shapes).
    """

    name: str
    framework: str
    setup: Callable[[Shape], Callable[[], Any]]
    memory: Callable[[Shape], Optional[int]]
    baseline: Optional[str]
    description: str = ""
    memory_kind: Optional[str] = None
    goal_time_ratio: Optional[float] = None
    goal_memory_fraction: Optional[float] = None
    logits_bytes: Callable[[Shape], int] = _logits_bytes
    applies: Callable[[Shape], bool] = _two_dims


_REGISTRY: dict[str, Case] = {}


def register(case: Case) -> Case:
    if case.name in _REGISTRY:
        raise ValueError(f"benchmark case {case.name!r} is registered twice")
    if case.framework not in ("jax", "torch"):
        raise ValueError(f"case {case.name!r}: unknown framework {case.framework!r}")
    _REGISTRY[case.name] = case
    return case


def all_cases() -> list[Case]:
    """Every registered case, in registration order (imports :data:`CASE_MODULES`)."""
    for module in CASE_MODULES:
        importlib.import_module(module)
    for case in _REGISTRY.values():
        if case.baseline is not None and case.baseline not in _REGISTRY:
            raise ValueError(f"case {case.name!r}: unknown baseline {case.baseline!r}")
    return list(_REGISTRY.values())


def select(only: Optional[str] = None, names: Optional[list[str]] = None) -> list[Case]:
    """The cases of one framework (``only``) and/or with the given names, plus the
    baselines they are compared with (so that every ratio can be formed)."""
    cases = all_cases()
    by_name = {c.name: c for c in cases}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise KeyError(f"unknown benchmark case(s) {', '.join(map(repr, unknown))}; "
                           f"known: {', '.join(by_name)}")
    chosen = {c.name for c in cases
              if (only is None or c.framework == only) and (not names or c.name in names)}
    for name in list(chosen):
        base = by_name[name].baseline
        if base is not None:
            chosen.add(base)
    return [c for c in cases if c.name in chosen]
