"""Timing and memory of the registered cases: warm-up, interleaved rounds, statistics.

Each case runs in three modes (:data:`benchmarks.registry.MODES`): forward+backward,
the backward pass alone (its forward pass runs before each call, untimed) and inference
(the loss without gradients). For one shape, every case and mode is set up, warmed up
(the first call compiles) and its memory measured, and the number of calls per
measurement is chosen from the last warm-up call so that one measurement lasts at least
``min_time`` seconds. A case with a ``reference`` is then compared with it, mode by
mode: the outputs of their first warm-up calls must agree by conformance's comparison
(:func:`conformance.compare.compare`, spec/SPEC.md section 1) with the tolerance SPEC.md
gives the run's dtype, else the case is an error row in that mode and is not timed; the
differences are recorded either way. Then ``rounds`` rounds run every case and mode
one after another (round-robin, the starting one rotating from round to round), so
that a slow spell of the machine hits every implementation of the shape alike. A
measurement is the mean time of one call over its calls; each call blocks on its
result (``jax.block_until_ready``; ``torch.cuda.synchronize`` on a GPU; PyTorch on
the CPU returns when it is done).

Ratios are formed within the run, the shape and the mode: ``ratio`` is the case's mean
time over its baseline's mean time in the same mode, and ``ratio_std`` the standard
deviation of the per-round ratios (case time in round k / baseline time in round k),
which cancels the slow and fast spells that hit both alike.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
import traceback
from typing import Any, Callable, Optional, Sequence

from benchmarks.registry import FWD_BWD, MODES, SETTINGS, Case, Shape, Step, Unavailable
from conformance import clauses
from conformance.compare import compare as compare_outputs

OK, SKIPPED, ERROR = "ok", "skipped", "error"


@dataclasses.dataclass
class Row:
    """The measurements of one case on one shape (one row of the table and the JSON)."""

    shape: Shape
    case: str
    framework: str
    baseline: Optional[str]
    family: str = ""
    mode: str = FWD_BWD
    status: str = OK
    note: str = ""
    logits_shape: Optional[Shape] = None  # the logits the loss sees; None: ``shape``
    logits_bytes: int = 0
    calls_per_measurement: int = 0
    times_s: list = dataclasses.field(default_factory=list)  # one per round
    mean_s: Optional[float] = None
    std_s: Optional[float] = None
    min_s: Optional[float] = None
    max_s: Optional[float] = None
    ratio: Optional[float] = None
    ratio_std: Optional[float] = None
    round_ratios: list = dataclasses.field(default_factory=list)
    memory_bytes: Optional[int] = None
    memory_kind: Optional[str] = None
    memory_fraction: Optional[float] = None
    memory_ratio: Optional[float] = None
    goal_time_ratio: Optional[float] = None
    goal_memory_fraction: Optional[float] = None
    goal_memory_ratio: Optional[float] = None
    #: the comparison with the reference (:func:`agreement`); empty without one
    agreement: dict = dataclasses.field(default_factory=dict)
    #: ratios of means against every baseline of the run in the same mode, and against
    #: the other cases of the same framework and baseline (peers)
    context_ratios: dict = dataclasses.field(default_factory=dict)

    @property
    def elements(self) -> int:
        """The number of logits: N*C, or N*V for a linear+cross-entropy."""
        return math.prod(self.logits_shape or self.shape)

    def goals(self) -> dict:
        """``{"time": bool, "memory": bool, "memory_ratio": bool}`` for the goals this
        case has, where measured."""
        met = {}
        if self.goal_time_ratio is not None and self.ratio is not None:
            met["time"] = self.ratio <= self.goal_time_ratio
        if self.goal_memory_fraction is not None and self.memory_fraction is not None:
            met["memory"] = self.memory_fraction <= self.goal_memory_fraction
        if self.goal_memory_ratio is not None and self.memory_ratio is not None:
            met["memory_ratio"] = self.memory_ratio <= self.goal_memory_ratio
        return met


def blocker(framework: str) -> Callable[[Any], Any]:
    """What waits for a case's result: ``jax.block_until_ready`` for JAX, which
    dispatches asynchronously; ``torch.cuda.synchronize`` for PyTorch on a GPU; nothing
    for PyTorch on the CPU, which returns when done."""
    if framework == "jax":
        import jax

        return jax.block_until_ready
    if SETTINGS.device == "gpu":
        import torch

        def synchronized(result):
            torch.cuda.synchronize()
            return result
        return synchronized
    return lambda result: result


def _call(step: Step, wait: Callable[[Any], Any]) -> tuple[Any, float]:
    """One call of ``step`` and its seconds (``prepare`` runs first, untimed)."""
    if step.prepare is None:
        start = time.perf_counter()
        result = wait(step.run())
        return result, time.perf_counter() - start
    state = wait(step.prepare())
    start = time.perf_counter()
    result = wait(step.run(state))
    return result, time.perf_counter() - start


def _timed(step: Step, wait: Callable[[Any], Any], calls: int) -> float:
    """Mean seconds per call of ``calls`` blocking calls, garbage collection paused. A
    step without ``prepare`` is timed as one stretch; one with it call by call, only
    ``run``."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        if step.prepare is None:
            start = time.perf_counter()
            for _ in range(calls):
                wait(step.run())
            return (time.perf_counter() - start) / calls
        return sum(_call(step, wait)[1] for _ in range(calls)) / calls
    finally:
        if enabled:
            gc.enable()


def _std(values: Sequence[float]) -> Optional[float]:
    if len(values) < 2:
        return 0.0 if values else None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _describe(err: BaseException) -> str:
    last = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    where = f" (at {last[0].filename.split('/')[-1]}:{last[0].lineno})" if last else ""
    return f"{type(err).__name__}: {err}{where}"


def agreement(got: dict, want: dict, dtype: str = "float32") -> dict:
    """Compare two cases' named outputs with :func:`conformance.compare.compare` (spec
    section 1) and the spec's tolerance for ``dtype``, output by output.

    Returns ``{"agree": bool, "dtype": dtype, "rtol": ..., "atol": ..., "max_abs_diff":
    {name: float}, "max_rel_diff": {name: float}, "problems": [str]}``, the differences
    as conformance reports them (``max_rel_diff`` is ``max |got - want| / max |want|``,
    or the absolute difference where ``want`` is all zero)."""
    tolerance = clauses.tolerances()[dtype]
    result = {"agree": True, "dtype": dtype, "rtol": tolerance.rtol,
              "atol": tolerance.atol, "max_abs_diff": {}, "max_rel_diff": {},
              "problems": []}
    for name, w in want.items():
        if name not in got:
            result["problems"].append(f"no {name}")
            continue
        found = compare_outputs(got[name], w, dtype)
        result["max_abs_diff"][name] = found.abs_err
        result["max_rel_diff"][name] = found.rel_err
        if not found.ok:
            result["problems"].append(f"{name}: {found.reason}")
    result["agree"] = not result["problems"]
    return result


def run_shape(cases: Sequence[Case], shape: Shape, *, rounds: int, min_time: float,
              warmup: int = 2, modes: Sequence[str] = MODES,
              progress: Callable[[str], None] = lambda s: None) -> list[Row]:
    """Measure every case that applies to ``shape`` in each of ``modes`` it runs in;
    one :class:`Row` per case and mode. The rounds interleave every case and mode."""
    rows, steps, waits, outputs = {}, {}, {}, {}
    applying = [case for case in cases if case.applies(shape)]
    names = {case.name for case in applying}
    referenced = {case.reference for case in applying if case.reference in names}
    for case in applying:
        for mode in (m for m in modes if m in case.modes):
            key = (case.name, mode)
            row = rows[key] = Row(
                shape=tuple(shape), case=case.name, framework=case.framework,
                baseline=case.baseline, family=case.family, mode=mode,
                logits_shape=tuple(case.logits_shape(shape)),
                logits_bytes=case.logits_bytes(shape), memory_kind=case.memory_kind,
                goal_time_ratio=case.goal_time_ratio,
                goal_memory_fraction=case.goal_memory_fraction,
                goal_memory_ratio=case.goal_memory_ratio)
            progress(f"{_shape_str(shape)} {case.name} {mode}: set-up, warm-up, memory")
            try:
                step = case.setup(shape, mode)
                wait = blocker(case.framework)
                one = None
                for k in range(max(1, warmup)):
                    result, one = _call(step, wait)
                    if k == 0 and case.outputs is not None and (
                            case.name in referenced or case.reference in names):
                        outputs[key] = case.outputs(result)
                    del result
                row.memory_bytes = case.memory(shape, mode)
                row.calls_per_measurement = max(1, min(1000, math.ceil(
                    min_time / max(one, 1e-9))))
                steps[key], waits[key] = step, wait
            except Unavailable as err:
                row.status, row.note = SKIPPED, str(err)
            except Exception as err:  # a broken implementation is a row, not a crash
                row.status, row.note = ERROR, _describe(err)
    for (name, mode), row in rows.items():
        case = next(c for c in applying if c.name == name)
        mine, theirs = (name, mode), (case.reference, mode)
        if mine in outputs and theirs in outputs:
            row.agreement = dict(reference=case.reference, **agreement(
                outputs[mine], outputs[theirs], SETTINGS.dtype))
            if not row.agreement["agree"]:
                row.status = ERROR
                row.note = (f"disagrees with {case.reference}: "
                            + "; ".join(row.agreement["problems"]))
                steps.pop(mine, None)
        elif case.reference in names and mine in outputs:
            row.agreement = {"reference": case.reference, "agree": None,
                             "problems": [f"{case.reference} did not run"]}
    outputs.clear()
    keys = list(steps)
    for k in range(rounds):
        progress(f"{_shape_str(shape)} round {k + 1}/{rounds}")
        order = keys[k % len(keys):] + keys[:k % len(keys)] if keys else []
        for key in order:
            try:
                rows[key].times_s.append(
                    _timed(steps[key], waits[key], rows[key].calls_per_measurement))
            except Exception as err:
                rows[key].status, rows[key].note = ERROR, _describe(err)
                keys.remove(key)
                steps.pop(key)
        # The round's garbage is young; a full collection takes a third of a second
        # with JAX and PyTorch loaded, as long as a quick round.
        gc.collect(1)
    steps.clear()
    for case in applying:
        case.release()
    gc.collect()
    _summarise(list(rows.values()))
    return list(rows.values())


def _summarise(rows: list[Row]) -> None:
    """Means, spreads and the ratios against baselines (in place); a row is compared
    with rows of its own mode only."""
    by_key = {(r.case, r.mode): r for r in rows}
    for row in rows:
        if row.status == OK and row.times_s:
            row.mean_s = sum(row.times_s) / len(row.times_s)
            row.std_s = _std(row.times_s)
            row.min_s, row.max_s = min(row.times_s), max(row.times_s)
        if row.memory_bytes is not None and row.logits_bytes:
            row.memory_fraction = row.memory_bytes / row.logits_bytes
    for row in rows:
        base = by_key.get((row.baseline, row.mode)) if row.baseline else None
        if base is not None and row.mean_s is not None and base.mean_s is not None:
            row.ratio, row.round_ratios, row.ratio_std = compare(row.times_s, base.times_s)
        elif row.baseline is None and row.mean_s is not None:
            row.ratio, row.round_ratios, row.ratio_std = 1.0, [1.0] * len(row.times_s), 0.0
        if base is not None and row.memory_bytes is not None and base.memory_bytes:
            row.memory_ratio = row.memory_bytes / base.memory_bytes
        for other in rows:
            if other is row or other.mode != row.mode or other.mean_s is None or \
                    row.mean_s is None:
                continue
            peer = (other.baseline is not None and other.framework == row.framework
                    and other.baseline == row.baseline)
            if other.baseline is None or peer:
                ratio, _, spread = compare(row.times_s, other.times_s)
                row.context_ratios[other.case] = {"ratio": ratio, "ratio_std": spread}


def compare(times: Sequence[float], base: Sequence[float]):
    """``(ratio of means, per-round ratios, their std)``; rounds are paired by index."""
    ratio = (sum(times) / len(times)) / (sum(base) / len(base))
    per_round = [t / b for t, b in zip(times, base)]
    return ratio, per_round, _std(per_round)


def _shape_str(shape: Shape) -> str:
    return "x".join(map(str, shape))


def run(cases: Sequence[Case], shapes: Sequence[Shape], *, rounds: int, min_time: float,
        warmup: int = 2, modes: Sequence[str] = MODES,
        progress: Callable[[str], None] = lambda s: None) -> list[Row]:
    rows = []
    for shape in shapes:
        rows.extend(run_shape(cases, shape, rounds=rounds, min_time=min_time,
                              warmup=warmup, modes=modes, progress=progress))
    return rows
