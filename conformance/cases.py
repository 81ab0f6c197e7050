"""Golden case definitions.

Each definition names the clauses of spec/SPEC.md it covers, its arguments, and the
dtypes it applies to; ``build()`` turns them into golden cases by running the float64
reference (conformance/reference.py) and nothing else. Random inputs come from a
``RandomState`` seeded by the case id, so adding a case never changes another, and they
are rounded to the bfloat16 grid (and kept inside float16's normal range), so every
dtype sees exactly the same numbers.

Run ``python -m conformance generate`` after changing this file.
"""

from __future__ import annotations

import dataclasses
import warnings
import zlib
from typing import Any, Callable, Iterator

import numpy as np

from conformance import clauses, exact, reference
from conformance.golden import Case

ALL = clauses.DTYPES
REDUCTIONS = ("none", "mean", "sum")
WEIGHTS = ("float64", "float32")
LOSSES = {
    "cross_entropy": (reference.cross_entropy, reference.cross_entropy_grad),
    "nll_loss": (reference.nll_loss, reference.nll_loss_grad),
    "binary_cross_entropy": (reference.binary_cross_entropy,
                             reference.binary_cross_entropy_grad),
    "binary_cross_entropy_with_logits": (reference.binary_cross_entropy_with_logits,
                                         reference.binary_cross_entropy_with_logits_grad),
    "sigmoid_focal_loss": (reference.sigmoid_focal_loss, reference.sigmoid_focal_loss_grad),
    "softmax_focal_loss": (reference.softmax_focal_loss, reference.softmax_focal_loss_grad),
    "class_weights": (reference.class_weights, None),
    "class_weights_from_labels": (reference.class_weights_from_labels, None),
    "pos_weight_from_labels": (reference.pos_weight_from_labels, None),
    "sample_weights_from_labels": (reference.sample_weights_from_labels, None),
    "linear_cross_entropy": (reference.linear_cross_entropy,
                             reference.linear_cross_entropy_grad),
}
#: Functions of integer labels: their result has the framework's default float dtype.
DEFAULT_DTYPE_RESULT = ("class_weights_from_labels", "sample_weights_from_labels")
FLOAT16_MAX = 65504.0
FLOAT16_TINY = 2.0 ** -14  # smallest normal float16
INF = np.inf


class GenerationError(RuntimeError):
    """A definition the reference cannot turn into a golden case."""


@dataclasses.dataclass
class Definition:
    id: str
    loss: str
    clauses: tuple[str, ...]
    args: dict[str, Any]
    dtypes: tuple[str, ...] = ALL
    keep_dtype: tuple[str, ...] = ()
    error: tuple[str, str] | None = None  # (kind, argument the message must name)
    shards: int | None = None  # [DP-GLOBAL]: input and target stacked on axis 0
    class_shards: int | None = None  # [CP-GLOBAL]: unsplit arguments, split when run
    derivatives: bool = False  # section 18: draw tangents, expect the JVP and HVP


# ----------------------------------------------------------------------------------
# Inputs on the bfloat16 grid.


def grid(a) -> np.ndarray:
    """Round to the nearest bfloat16 value; flush magnitudes below float16's normal range.

    A value within 2^-48 (16 units in the last place) of a rounding boundary is refused:
    the random draws pass through the C library's ``log`` (Gaussians) and a multiply-add
    (uniforms), whose last bit may differ between platforms, and this margin makes sure
    such a difference can never change an input (spec section 1).
    """
    a = np.asarray(a, dtype=np.float64)
    rounded = _bfloat16_grid(a)
    for nudge in (1.0 - 2.0 ** -48, 1.0 + 2.0 ** -48):
        if not np.array_equal(_bfloat16_grid(a * nudge), rounded, equal_nan=True):
            raise GenerationError("an input lies within 2^-48 of a bfloat16 rounding "
                                  "boundary; draw it differently")
    return rounded


def _bfloat16_grid(a: np.ndarray) -> np.ndarray:
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    rounded = bits.astype(np.uint32).view(np.float32).astype(np.float64)
    rounded = np.where(np.abs(rounded) < FLOAT16_TINY, 0.0, rounded)
    return np.where(np.isfinite(a), rounded, a)


def representable(a: np.ndarray, dtype: str) -> bool:
    a = np.asarray(a, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if dtype == "float64":
        return True
    if dtype == "float32":
        return bool((finite.astype(np.float32).astype(np.float64) == finite).all())
    if dtype == "bfloat16":
        return bool((grid(finite) == finite).all())
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return bool((finite.astype(np.float16).astype(np.float64) == finite).all())
    raise ValueError(dtype)


def rng_for(case_id: str) -> np.random.RandomState:
    return np.random.RandomState(zlib.crc32(case_id.encode()))


def logits(rng, shape, scale=1.0):
    return grid(rng.standard_normal(shape) * scale)


def class_targets(rng, shape, num_classes, ignore="none", ignore_index=-100,
                  dtype=np.int64):
    """Random class indices; ``ignore`` is "none", "some" (about a quarter) or "all"."""
    y = rng.randint(0, num_classes, size=shape).astype(np.int64)
    if ignore == "all":
        y[...] = ignore_index
    elif ignore == "some" and y.size:
        flat = y.reshape(-1)
        mask = rng.random_sample(flat.size) < 0.25
        mask[0], mask[-1] = True, False  # at least one ignored, one valid
        flat[mask] = ignore_index
    return y.astype(dtype)


def class_weights(rng, num_classes, zeros=False):
    w = grid(rng.uniform(0.25, 4.0, size=num_classes))
    if zeros:
        w[rng.random_sample(num_classes) < 0.3] = 0.0
        w[0] = 0.0
    return w


def probabilities(rng, shape, axis=1):
    """Softmax of Gaussian logits, rounded exactly (no CPU-dependent ``exp`` or sum)."""
    return grid(exact.softmax(rng.standard_normal(shape), axis))


def unit_interval(rng, shape, low=0.02, high=0.98):
    return grid(rng.uniform(low, high, size=shape))


def binary_targets(rng, shape, soft=False):
    if soft:
        return grid(rng.uniform(0.0, 1.0, size=shape))
    return rng.randint(0, 2, size=shape).astype(np.float64)


def _grad_output(rng, output: np.ndarray) -> np.ndarray:
    """The cotangent: random per element for "none", one random scalar otherwise."""
    if output.ndim == 0:
        return grid(rng.uniform(0.5, 2.0))
    return grid(rng.uniform(-2.0, 2.0, size=output.shape))


# ----------------------------------------------------------------------------------
# Definitions, grouped by the part of the spec they cover.

_CLASS_REDUCTION = {"none": "CE-NONE", "sum": "CE-SUM", "mean": "CE-MEAN"}
_REDUCTION_CLAUSE = {
    "cross_entropy": {"none": "CE-NONE", "sum": "CE-SUM", "mean": "CE-MEAN"},
    "nll_loss": {"none": "CE-NONE", "sum": "CE-SUM", "mean": "CE-MEAN"},
    "binary_cross_entropy": {"none": "GEN-REDUCTION", "sum": "GEN-REDUCTION",
                             "mean": "BCE-MEAN"},
    "binary_cross_entropy_with_logits": {"none": "GEN-REDUCTION", "sum": "GEN-REDUCTION",
                                         "mean": "BCEL-MEAN"},
    "sigmoid_focal_loss": {"none": "GEN-REDUCTION", "sum": "GEN-REDUCTION",
                           "mean": "GEN-REDUCTION"},
    "softmax_focal_loss": _CLASS_REDUCTION,
    "linear_cross_entropy": _CLASS_REDUCTION,
}
_GRAD_CLAUSE = {
    "linear_cross_entropy": "LCE-GRAD",
    "cross_entropy": "GRAD-CE",
    "nll_loss": "GRAD-NLL",
    "binary_cross_entropy": "GRAD-BCE",
    "binary_cross_entropy_with_logits": "GRAD-BCEL",
    "sigmoid_focal_loss": "FOCAL-GRAD",
    "softmax_focal_loss": "FOCAL-GRAD",
}
_ELEM_CLAUSE = {
    "linear_cross_entropy": "LCE-ELEM",
    "cross_entropy": "CE-ELEM",
    "nll_loss": "NLL-ELEM",
    "binary_cross_entropy": "BCE-ELEM",
    "binary_cross_entropy_with_logits": "BCEL-ELEM",
    "sigmoid_focal_loss": "FOCAL-SIGMOID",
    "softmax_focal_loss": "FOCAL-SOFTMAX",
}


def value(case_id, loss, clauses, dtypes=ALL, keep_dtype=(), **args) -> Definition:
    """A case with an expected value and gradient.

    Besides ``clauses`` it names the element-wise clause, the reduction's clause, the
    gradient clause and [GEN-RESULT-DTYPE], which every value case checks.
    """
    reduction = args.get("reduction", "none" if loss == "sigmoid_focal_loss" else "mean")
    probability_target = loss == "cross_entropy" and np.asarray(
        args["target"]).dtype.kind == "f"
    if probability_target:
        auto = ["CEP-ELEM", "CEP-MEAN" if reduction == "mean" else "GEN-REDUCTION",
                "GRAD-CEP"]
    else:
        auto = [_ELEM_CLAUSE[loss], _REDUCTION_CLAUSE[loss][reduction], _GRAD_CLAUSE[loss]]
    named = tuple(dict.fromkeys([*clauses, *auto, "GEN-RESULT-DTYPE"]))
    return Definition(case_id, loss, named, args, tuple(dtypes), tuple(keep_dtype))


def error(case_id, loss, clauses, kind, mentions, dtypes=ALL, **args) -> Definition:
    """A case whose checked call must raise ``kind`` naming ``mentions``."""
    return Definition(case_id, loss, tuple(clauses), args, tuple(dtypes), (),
                      (kind, mentions))


def cross_entropy_class_targets() -> Iterator[Definition]:
    # [CE-ELEM] [CE-WEIGHT] [CE-MEAN] [CE-SUM] [CE-NONE] over a range of class counts.
    for n, c in ((8, 5), (16, 2), (6, 10), (4, 100), (3, 1000)):
        for weighted in (False, True):
            for reduction in REDUCTIONS:
                cid = f"ce-{'weighted' if weighted else 'unweighted'}-{reduction}-n{n}-c{c}"
                rng = rng_for(cid)
                yield value(
                    cid, "cross_entropy", ["CE-WEIGHT"],
                    input=logits(rng, (n, c), scale=2.0),
                    target=class_targets(rng, (n,), c),
                    weight=class_weights(rng, c) if weighted else None,
                    reduction=reduction,
                )
    # [CE-KDIM]: up to three spatial dimensions, weights and some ignored targets.
    for spatial in ((3,), (3, 2), (2, 2, 2)):
        for reduction in REDUCTIONS:
            cid = f"ce-kdim{len(spatial)}-weighted-ignore-{reduction}"
            rng = rng_for(cid)
            yield value(
                cid, "cross_entropy", ["CE-KDIM", "CE-WEIGHT", "CE-IGNORE"],
                input=logits(rng, (2, 4) + spatial),
                target=class_targets(rng, (2,) + spatial, 4, ignore="some"),
                weight=class_weights(rng, 4),
                reduction=reduction,
            )
    # [CE-UNBATCHED]
    for reduction in REDUCTIONS:
        cid = f"ce-unbatched-weighted-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "cross_entropy", ["CE-UNBATCHED", "CE-WEIGHT"],
                    input=logits(rng, (6,)), target=np.int64(4),
                    weight=class_weights(rng, 6), reduction=reduction)
    for reduction in ("mean", "sum"):
        cid = f"ce-unbatched-ignored-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "cross_entropy", ["CE-UNBATCHED", "CE-IGNORE", "EDGE-ALL-IGNORED"],
                    input=logits(rng, (6,)), target=np.int64(-100), reduction=reduction)
    # [CE-IGNORE] [EDGE-ALL-IGNORED]
    for pattern in ("some", "all"):
        for weighted in (False, True):
            for reduction in REDUCTIONS:
                cid = f"ce-ignore-{pattern}-{'weighted' if weighted else 'unweighted'}-{reduction}"
                rng = rng_for(cid)
                extra = ["EDGE-ALL-IGNORED"] if pattern == "all" else []
                yield value(
                    cid, "cross_entropy", ["CE-IGNORE", "CE-WEIGHT", *extra],
                    input=logits(rng, (10, 7)),
                    target=class_targets(rng, (10,), 7, ignore=pattern),
                    weight=class_weights(rng, 7) if weighted else None,
                    reduction=reduction,
                )
    for ignore_index, label in ((-1, "minus1"), (255, "255"), (2, "inside")):
        for reduction in ("mean", "none"):
            cid = f"ce-ignore-index-{label}-{reduction}"
            rng = rng_for(cid)
            target = class_targets(rng, (12,), 5)
            if ignore_index == 2:
                target[:3] = 2  # targets of class 2 are ignored
            else:
                target[::4] = ignore_index
            yield value(cid, "cross_entropy", ["CE-IGNORE", "CE-WEIGHT"],
                        input=logits(rng, (12, 5)), target=target,
                        weight=class_weights(rng, 5), ignore_index=ignore_index,
                        reduction=reduction)
    # Weights with zeros: those classes contribute nothing, to numerator or denominator.
    for reduction in REDUCTIONS:
        cid = f"ce-weight-zeros-ignore-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "cross_entropy", ["CE-WEIGHT", "CE-IGNORE"],
                    input=logits(rng, (20, 6)),
                    target=class_targets(rng, (20,), 6, ignore="some"),
                    weight=class_weights(rng, 6, zeros=True), reduction=reduction)


def cross_entropy_smoothing() -> Iterator[Definition]:
    # [CE-SMOOTH] [CE-SMOOTH-MEAN]: weighted smoothing, several eps, every reduction.
    for eps in (0.1, 0.5, 1.0):
        for weighted in (False, True):
            for reduction in REDUCTIONS:
                cid = (f"ce-smooth{eps}-{'weighted' if weighted else 'unweighted'}"
                       f"-ignore-{reduction}")
                rng = rng_for(cid)
                yield value(
                    cid, "cross_entropy",
                    ["CE-SMOOTH", "CE-SMOOTH-MEAN", "CE-IGNORE", "CE-WEIGHT"],
                    input=logits(rng, (9, 6), scale=2.0),
                    target=class_targets(rng, (9,), 6, ignore="some"),
                    weight=class_weights(rng, 6) if weighted else None,
                    label_smoothing=eps, reduction=reduction,
                )
    # The check value of the design notes: mean 0.8878642267961276.
    for reduction in ("mean", "none"):
        yield value(
            f"ce-smooth-worked-example-{reduction}", "cross_entropy",
            ["CE-SMOOTH", "CE-SMOOTH-MEAN", "CE-IGNORE", "CE-WEIGHT"],
            input=np.array([[1.0, 2.0, 3.0], [1.0, 0.0, -2.0], [0.5, 0.5, 0.0]]),
            target=np.array([2, 1, -100]), weight=np.array([1.0, 2.0, 3.0]),
            label_smoothing=0.2, reduction=reduction,
        )
    for reduction in REDUCTIONS:
        cid = f"ce-smooth-kdim2-weighted-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "cross_entropy",
                    ["CE-SMOOTH", "CE-SMOOTH-MEAN", "CE-KDIM", "CE-WEIGHT", "CE-IGNORE"],
                    input=logits(rng, (2, 5, 3, 2)),
                    target=class_targets(rng, (2, 3, 2), 5, ignore="some"),
                    weight=class_weights(rng, 5), label_smoothing=0.3, reduction=reduction)
    for reduction in ("mean", "sum"):
        cid = f"ce-smooth-c1000-weighted-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "cross_entropy", ["CE-SMOOTH", "CE-SMOOTH-MEAN", "CE-WEIGHT"],
                    input=logits(rng, (4, 1000), scale=3.0),
                    target=class_targets(rng, (4,), 1000),
                    weight=class_weights(rng, 1000), label_smoothing=0.1,
                    reduction=reduction)


def cross_entropy_probability_targets() -> Iterator[Definition]:
    # [CEP-ELEM] [CEP-MEAN]
    for n, c in ((8, 5), (4, 100)):
        for weighted in (False, True):
            for reduction in REDUCTIONS:
                cid = f"cep-{'weighted' if weighted else 'unweighted'}-{reduction}-n{n}-c{c}"
                rng = rng_for(cid)
                yield value(cid, "cross_entropy", ["CE-WEIGHT"],
                            input=logits(rng, (n, c), scale=2.0),
                            target=probabilities(rng, (n, c)),
                            weight=class_weights(rng, c) if weighted else None,
                            reduction=reduction)
    for eps in (0.1, 0.6):
        for reduction in REDUCTIONS:
            cid = f"cep-smooth{eps}-weighted-{reduction}"
            rng = rng_for(cid)
            yield value(cid, "cross_entropy", ["CE-WEIGHT"],
                        input=logits(rng, (7, 4)), target=probabilities(rng, (7, 4)),
                        weight=class_weights(rng, 4), label_smoothing=eps,
                        reduction=reduction)
    for spatial in ((3,), (2, 2)):
        for reduction in ("mean", "none"):
            cid = f"cep-kdim{len(spatial)}-weighted-{reduction}"
            rng = rng_for(cid)
            yield value(cid, "cross_entropy", ["CE-KDIM", "CE-WEIGHT"],
                        input=logits(rng, (2, 4) + spatial),
                        target=probabilities(rng, (2, 4) + spatial),
                        weight=class_weights(rng, 4), reduction=reduction)
    for reduction in ("mean", "none"):
        cid = f"cep-unbatched-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "cross_entropy", ["CE-UNBATCHED"],
                    input=logits(rng, (5,)), target=probabilities(rng, (5,), axis=0),
                    reduction=reduction)
    cid = "cep-soft-unnormalised-weighted-mean"
    rng = rng_for(cid)
    yield value(cid, "cross_entropy", ["CE-WEIGHT"],
                input=logits(rng, (6, 3)), target=grid(rng.uniform(0, 2, (6, 3))),
                weight=class_weights(rng, 3), reduction="mean")


def nll() -> Iterator[Definition]:
    for n, c in ((8, 5), (4, 100)):
        for weighted in (False, True):
            for reduction in REDUCTIONS:
                cid = f"nll-{'weighted' if weighted else 'unweighted'}-{reduction}-n{n}-c{c}"
                rng = rng_for(cid)
                yield value(cid, "nll_loss", ["CE-WEIGHT"],
                            input=logits(rng, (n, c), scale=3.0),
                            target=class_targets(rng, (n,), c),
                            weight=class_weights(rng, c) if weighted else None,
                            reduction=reduction)
    for reduction in REDUCTIONS:
        cid = f"nll-kdim2-weighted-ignore-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "nll_loss", ["CE-KDIM", "CE-WEIGHT", "CE-IGNORE"],
                    input=logits(rng, (3, 4, 2, 2)),
                    target=class_targets(rng, (3, 2, 2), 4, ignore="some"),
                    weight=class_weights(rng, 4), reduction=reduction)
    for reduction in ("mean", "none"):
        cid = f"nll-unbatched-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "nll_loss", ["CE-UNBATCHED", "CE-WEIGHT"],
                    input=logits(rng, (4,)), target=np.int64(1),
                    weight=class_weights(rng, 4), reduction=reduction)
    for pattern in ("some", "all"):
        for reduction in REDUCTIONS:
            cid = f"nll-ignore-{pattern}-weighted-{reduction}"
            rng = rng_for(cid)
            extra = ["EDGE-ALL-IGNORED"] if pattern == "all" else []
            yield value(cid, "nll_loss", ["CE-IGNORE", "CE-WEIGHT", *extra],
                        input=logits(rng, (10, 4)),
                        target=class_targets(rng, (10,), 4, ignore=pattern),
                        weight=class_weights(rng, 4), reduction=reduction)
    cid = "nll-ignore-index-inside-mean"
    rng = rng_for(cid)
    target = class_targets(rng, (8,), 3)
    target[:2] = 0
    yield value(cid, "nll_loss", ["CE-IGNORE"], input=logits(rng, (8, 3)), target=target,
                ignore_index=0, reduction="mean")


def binary() -> Iterator[Definition]:
    # [BCE-ELEM] [BCE-WEIGHT] [BCE-MEAN] and the same for the logits version.
    weight_shapes = {"none": None, "last": (4,), "rows": (6, 1), "full": (6, 4)}
    for wname, wshape in weight_shapes.items():
        for reduction in REDUCTIONS:
            cid = f"bce-weight-{wname}-{reduction}"
            rng = rng_for(cid)
            yield value(cid, "binary_cross_entropy", ["BCE-WEIGHT", "BCE-TARGET"],
                        input=unit_interval(rng, (6, 4)),
                        target=binary_targets(rng, (6, 4), soft=wname == "rows"),
                        weight=None if wshape is None else class_weights(rng, wshape),
                        reduction=reduction)
    for pname, pshape in {"none": None, "last": (4,), "rows": (6, 1), "scalar": (1,)}.items():
        for wname in ("none", "last"):
            for reduction in REDUCTIONS:
                cid = f"bcel-pos-{pname}-weight-{wname}-{reduction}"
                rng = rng_for(cid)
                yield value(
                    cid, "binary_cross_entropy_with_logits",
                    ["BCEL-POS-WEIGHT", "BCEL-WEIGHT"],
                    input=logits(rng, (6, 4), scale=3.0),
                    target=binary_targets(rng, (6, 4), soft=pname == "rows"),
                    weight=None if wname == "none" else class_weights(rng, (4,)),
                    pos_weight=None if pshape is None else class_weights(rng, pshape),
                    reduction=reduction,
                )
    # Square logits, so that pos_weight on the wrong axis still broadcasts but is wrong.
    for reduction in ("mean", "none"):
        cid = f"bcel-square-pos-last-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "binary_cross_entropy_with_logits", ["BCEL-POS-WEIGHT"],
                    input=logits(rng, (4, 4), scale=2.0), target=binary_targets(rng, (4, 4)),
                    pos_weight=grid(np.array([0.25, 1.0, 4.0, 16.0])), reduction=reduction)
    for reduction in ("mean", "none"):
        cid = f"bce-kdim-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "binary_cross_entropy", ["BCE-WEIGHT"],
                    input=unit_interval(rng, (2, 3, 4)),
                    target=binary_targets(rng, (2, 3, 4)),
                    weight=class_weights(rng, (3, 1)), reduction=reduction)
        cid = f"bcel-multilabel-3d-pos-last-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "binary_cross_entropy_with_logits", ["BCEL-POS-WEIGHT"],
                    input=logits(rng, (2, 3, 5), scale=2.0),
                    target=binary_targets(rng, (2, 3, 5)),
                    pos_weight=class_weights(rng, (5,)), reduction=reduction)
    # [BCE-CLAMP]: probabilities exactly 0 and 1 give 100 per element, not inf.
    for reduction in REDUCTIONS:
        yield value(f"bce-clamp-exact-01-{reduction}", "binary_cross_entropy",
                    ["BCE-CLAMP", "GRAD-BCE"],
                    input=np.array([0.0, 1.0, 0.0, 1.0, 0.5]),
                    target=np.array([1.0, 0.0, 0.0, 1.0, 0.25]),
                    weight=np.array([1.0, 2.0, 0.5, 1.5, 1.0]), reduction=reduction)
    # Near 0 and 1: the clamp at -100 and the gradient's 1e-12 guard (float64 only).
    yield value("bce-clamp-near-01-none", "binary_cross_entropy", ["BCE-CLAMP", "GRAD-BCE"],
                dtypes=("float64",),
                input=np.array([1e-50, 1e-30, 1e-13, 1 - 1e-13, 1 - 1e-6, 1e-6]),
                target=np.array([1.0, 1.0, 1.0, 0.0, 0.0, 1.0]), reduction="none")
    yield value("bce-scalar-input-sum", "binary_cross_entropy", [],
                input=np.float64(0.375), target=np.float64(1.0), reduction="sum")
    # Integer and boolean 0/1 targets [BCE-TARGET].
    for dtype in ("int64", "bool"):
        cid = f"bce-target-{dtype}-mean"
        rng = rng_for(cid)
        yield value(cid, "binary_cross_entropy", ["BCE-TARGET"],
                    input=unit_interval(rng, (5, 3)),
                    target=rng.randint(0, 2, (5, 3)).astype(dtype), reduction="mean")
        cid = f"bcel-target-{dtype}-mean"
        rng = rng_for(cid)
        yield value(cid, "binary_cross_entropy_with_logits", ["BCE-TARGET"],
                    input=logits(rng, (5, 3)),
                    target=rng.randint(0, 2, (5, 3)).astype(dtype),
                    pos_weight=class_weights(rng, (3,)), reduction="mean")
    # [EDGE-LARGE-LOGITS] [BCEL-NONFINITE]
    for reduction in ("none", "mean"):
        cid = f"bcel-large-logits-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "binary_cross_entropy_with_logits",
                    ["EDGE-LARGE-LOGITS", "BCEL-POS-WEIGHT"],
                    input=grid(np.array([[1e4, -1e4, 80.0], [-80.0, 3e4, -3e4]])),
                    target=np.array([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]]),
                    pos_weight=np.array([3.0, 0.5, 2.0]), reduction=reduction)
    yield value("bcel-infinite-logits-none", "binary_cross_entropy_with_logits",
                ["BCEL-NONFINITE"],
                input=np.array([INF, -INF, INF, -INF, 0.0]),
                target=np.array([1.0, 0.0, 0.0, 1.0, 1.0]), reduction="none")


def edge_cases() -> Iterator[Definition]:
    # [EDGE-EMPTY]
    for reduction in REDUCTIONS:
        yield value(f"ce-empty-batch-{reduction}", "cross_entropy", ["EDGE-EMPTY"],
                    input=np.zeros((0, 4)), target=np.zeros((0,), np.int64),
                    weight=np.array([1.0, 2.0, 3.0, 4.0]), reduction=reduction)
        yield value(f"ce-empty-spatial-{reduction}", "cross_entropy",
                    ["EDGE-EMPTY", "CE-KDIM"],
                    input=np.zeros((2, 3, 0)), target=np.zeros((2, 0), np.int64),
                    reduction=reduction)
        yield value(f"nll-empty-batch-{reduction}", "nll_loss", ["EDGE-EMPTY"],
                    input=np.zeros((0, 3)), target=np.zeros((0,), np.int64),
                    reduction=reduction)
        yield value(f"bce-empty-{reduction}", "binary_cross_entropy", ["EDGE-EMPTY"],
                    input=np.zeros((0, 2)), target=np.zeros((0, 2)), reduction=reduction)
        yield value(f"bcel-empty-{reduction}", "binary_cross_entropy_with_logits",
                    ["EDGE-EMPTY", "BCEL-POS-WEIGHT"],
                    input=np.zeros((0, 2)), target=np.zeros((0, 2)),
                    pos_weight=np.array([2.0, 0.5]), reduction=reduction)
    yield value("cep-empty-batch-mean", "cross_entropy", ["EDGE-EMPTY"],
                input=np.zeros((0, 3)), target=np.zeros((0, 3)), reduction="mean")
    # [EDGE-ZERO-WEIGHT-SUM]
    zero_classes = np.array([0.0, 0.0, 2.0])
    for reduction in ("mean", "sum"):
        for eps in (0.0, 0.25):
            cid = f"ce-zero-weight-sum-smooth{eps}-{reduction}"
            rng = rng_for(cid)
            yield value(cid, "cross_entropy", ["EDGE-ZERO-WEIGHT-SUM", "CE-WEIGHT",
                                               "CE-IGNORE"],
                        input=logits(rng, (5, 3)),
                        target=np.array([0, 1, -100, 1, 0]), weight=zero_classes,
                        label_smoothing=eps, reduction=reduction)
        cid = f"nll-zero-weight-sum-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "nll_loss", ["EDGE-ZERO-WEIGHT-SUM", "CE-IGNORE"],
                    input=logits(rng, (4, 3)), target=np.array([1, -100, 0, 1]),
                    weight=zero_classes, reduction=reduction)
    # [EDGE-LARGE-LOGITS]
    for c in (3, 50):
        for reduction in REDUCTIONS:
            for eps in (0.0, 0.2):
                cid = f"ce-large-logits-c{c}-smooth{eps}-{reduction}"
                rng = rng_for(cid)
                extra = ["CE-SMOOTH", "CE-SMOOTH-MEAN"] if eps else []
                yield value(cid, "cross_entropy",
                            ["EDGE-LARGE-LOGITS", "CE-WEIGHT", *extra],
                            input=logits(rng, (6, c), scale=1e4),
                            target=class_targets(rng, (6,), c),
                            weight=class_weights(rng, c), label_smoothing=eps,
                            reduction=reduction)
    # [EDGE-INF-LOGITS]
    finite = [0.5, -1.0, 2.0]
    rows = np.array([
        [-INF, 0.5, 1.0],   # -inf at a non-target class
        [-INF, 0.5, 1.0],   # -inf at the target
        [INF, 0.5, 1.0],    # +inf: NaN
        [-INF, -INF, -INF],  # all -inf: NaN
        finite,
    ])
    for eps in (0.0, 0.1):
        for reduction in ("none", "sum"):
            yield value(f"ce-inf-logits-smooth{eps}-{reduction}", "cross_entropy",
                        ["EDGE-INF-LOGITS"] + (["CE-SMOOTH"] if eps else []),
                        input=rows, target=np.array([2, 0, 1, 1, 0]),
                        weight=np.array([1.0, 2.0, 0.5]), label_smoothing=eps,
                        reduction=reduction)
    yield value("ce-inf-nontarget-only-mean", "cross_entropy", ["EDGE-INF-LOGITS"],
                input=np.array([[-INF, 0.5, 1.0], [2.0, -INF, -INF], finite]),
                target=np.array([2, 0, 1]), reduction="mean")
    # [CE-IGNORE-NONFINITE]: ignored rows with +inf or all -inf logits change nothing.
    for reduction in REDUCTIONS:
        for eps in (0.0, 0.1):
            yield value(f"ce-ignored-nonfinite-rows-smooth{eps}-{reduction}",
                        "cross_entropy",
                        ["CE-IGNORE-NONFINITE", "CE-IGNORE"] + (["CE-SMOOTH"] if eps else []),
                        input=np.array([[INF, 0.0, 1.0], [-INF, -INF, -INF], finite,
                                        [1.0, 0.0, -1.0]]),
                        target=np.array([-100, -100, 1, 0]),
                        weight=np.array([1.0, 2.0, 0.5]), label_smoothing=eps,
                        reduction=reduction)


def dtype_rules() -> Iterator[Definition]:
    # [GEN-INT-TARGET]: every integer dtype holds class indices.
    for dtype, ignore_index in (("int8", -100), ("int16", -100), ("int32", -100),
                                ("uint8", 255), ("uint16", 255), ("uint32", 7),
                                ("uint64", 7), ("int64", -100)):
        cid = f"ce-target-{dtype}-mean"
        rng = rng_for(cid)
        target = class_targets(rng, (9,), 5)
        target[1] = ignore_index
        yield value(cid, "cross_entropy", ["GEN-INT-TARGET", "CE-IGNORE", "CE-WEIGHT"],
                    input=logits(rng, (9, 5)), target=target.astype(dtype),
                    weight=class_weights(rng, 5), ignore_index=ignore_index,
                    reduction="mean")
    for dtype in ("int32", "uint8"):
        cid = f"nll-target-{dtype}-sum"
        rng = rng_for(cid)
        yield value(cid, "nll_loss", ["GEN-INT-TARGET"],
                    input=logits(rng, (6, 4)),
                    target=class_targets(rng, (6,), 4, dtype=dtype), reduction="sum")
    # [GEN-PARAM-DTYPE]: float64 weights with inputs of any dtype.
    cid = "ce-weight-float64-with-any-input-mean"
    rng = rng_for(cid)
    yield value(cid, "cross_entropy", ["GEN-PARAM-DTYPE", "CE-WEIGHT"],
                keep_dtype=("weight",),
                input=logits(rng, (8, 4)), target=class_targets(rng, (8,), 4),
                weight=np.array([0.1, 1.3, 2.7, 0.3]), reduction="mean")
    cid = "bcel-pos-weight-float64-with-any-input-sum"
    rng = rng_for(cid)
    yield value(cid, "binary_cross_entropy_with_logits", ["GEN-PARAM-DTYPE", "BCEL-POS-WEIGHT"],
                keep_dtype=("pos_weight", "weight"),
                input=logits(rng, (4, 3)), target=binary_targets(rng, (4, 3)),
                weight=np.array([0.7, 1.1, 0.9]), pos_weight=np.array([2.2, 0.3, 5.1]),
                reduction="sum")
    # [GEN-HALF]: long reductions that half-precision accumulation would get wrong.
    for reduction in ("mean", "sum"):
        cid = f"ce-long-reduction-weighted-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "cross_entropy", ["GEN-HALF", "CE-WEIGHT", "CE-IGNORE"],
                    input=logits(rng, (4096, 3), scale=2.0),
                    target=class_targets(rng, (4096,), 3, ignore="some"),
                    weight=class_weights(rng, 3), reduction=reduction)
        cid = f"bcel-long-reduction-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "binary_cross_entropy_with_logits", ["GEN-HALF"],
                    input=logits(rng, (2048, 2)), target=binary_targets(rng, (2048, 2)),
                    reduction=reduction)
    cid = "ce-wide-rows-half-mean"
    rng = rng_for(cid)
    yield value(cid, "cross_entropy", ["GEN-HALF", "CE-SMOOTH", "CE-SMOOTH-MEAN"],
                input=logits(rng, (8, 1000), scale=2.0),
                target=class_targets(rng, (8,), 1000), label_smoothing=0.1,
                reduction="mean")


def warnings_() -> Iterator[Definition]:
    # [WARN-PROBABILITY-INPUT]: softmax output passed as logits warns, and still computes.
    cid = "ce-warn-softmax-input-mean"
    rng = rng_for(cid)
    probs = np.array([[0.25, 0.75, 0.0], [0.5, 0.25, 0.25], [0.125, 0.125, 0.75]])
    yield value(cid, "cross_entropy", ["WARN-PROBABILITY-INPUT"], input=probs,
                target=np.array([1, 0, 2]), reduction="mean")
    yield value("ce-warn-softmax-input-prob-target-none", "cross_entropy",
                ["WARN-PROBABILITY-INPUT"], input=probs,
                target=np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
                reduction="none")
    # One row that is not a probability vector: no warning.
    yield value("ce-no-warn-one-row-off-mean", "cross_entropy", ["WARN-PROBABILITY-INPUT"],
                input=np.array([[0.25, 0.75, 0.0], [0.5, 0.25, 0.5]]),
                target=np.array([1, 0]), reduction="mean")


def errors() -> Iterator[Definition]:
    x = grid(rng_for("errors").standard_normal((3, 4)))
    y = np.array([0, 3, 1])
    p = np.array([[0.25, 0.5], [0.75, 0.125]])
    t = np.array([[1.0, 0.0], [0.0, 1.0]])
    for loss, inp, tgt in (("cross_entropy", x, y), ("nll_loss", x, y),
                           ("binary_cross_entropy", p, t),
                           ("binary_cross_entropy_with_logits", p, t)):
        tag = {"cross_entropy": "ce", "nll_loss": "nll", "binary_cross_entropy": "bce",
               "binary_cross_entropy_with_logits": "bcel"}[loss]
        yield error(f"{tag}-error-unknown-reduction", loss,
                    ["ERR-REDUCTION", "GEN-REDUCTION", "TRACE-STATIC"], "ValueError",
                    "reduction", input=inp, target=tgt, reduction="average")
        yield error(f"{tag}-error-integer-input", loss, ["ERR-INPUT-DTYPE", "TRACE-STATIC"],
                    "TypeError", "input", input=np.array([[1, 2], [3, 4]]) if tag in (
                        "bce", "bcel") else np.array([[1, 2, 3, 4]] * 3), target=tgt)
    for loss in ("cross_entropy", "nll_loss"):
        tag = "ce" if loss == "cross_entropy" else "nll"
        yield error(f"{tag}-error-target-too-large", loss,
                    ["ERR-TARGET-RANGE", "TRACE-TARGET-RANGE"], "ValueError", "target",
                    input=x, target=np.array([0, 4, 1]),
                    weight=np.array([1.0, 2.0, 3.0, 4.0]), reduction="sum")
        yield error(f"{tag}-error-target-minus1-mean", loss,
                    ["ERR-TARGET-RANGE", "TRACE-TARGET-RANGE"], "ValueError", "target",
                    input=x, target=np.array([0, -1, 1]), reduction="mean")
        yield error(f"{tag}-error-target-minus1-none", loss,
                    ["ERR-TARGET-RANGE", "TRACE-TARGET-RANGE"], "ValueError", "target",
                    input=x, target=np.array([0, -1, 1]), reduction="none")
        yield error(f"{tag}-error-weight-length", loss,
                    ["ERR-WEIGHT-SHAPE", "CE-WEIGHT", "TRACE-STATIC"], "ValueError",
                    "weight", input=x, target=y, weight=np.array([1.0, 2.0, 3.0]))
        yield error(f"{tag}-error-weight-2d", loss, ["ERR-WEIGHT-SHAPE", "TRACE-STATIC"],
                    "ValueError", "weight", input=x, target=y, weight=np.ones((4, 1)))
        yield error(f"{tag}-error-target-shape", loss, ["ERR-TARGET-SHAPE", "TRACE-STATIC"],
                    "ValueError", "target", input=x, target=np.array([[0, 3, 1]]))
        yield error(f"{tag}-error-kdim-target-shape", loss,
                    ["ERR-TARGET-SHAPE", "CE-KDIM", "TRACE-STATIC"], "ValueError", "target",
                    input=grid(np.ones((2, 3, 4))), target=np.array([0, 2]))
        yield error(f"{tag}-error-bool-target", loss, ["ERR-TARGET-DTYPE", "TRACE-STATIC"],
                    "TypeError", "target", input=x, target=np.array([True, False, True]))
        yield error(f"{tag}-error-0d-input", loss, ["ERR-INPUT-RANK", "TRACE-STATIC"],
                    "ValueError", "input", input=np.float64(1.5), target=np.int64(0))
    yield error("nll-error-float-target", "nll_loss", ["ERR-TARGET-DTYPE", "TRACE-STATIC"],
                "TypeError", "target", input=x, target=np.array([0.0, 3.0, 1.0]))
    for eps in (1.5, -0.1):
        yield error(f"ce-error-smoothing-{eps}", "cross_entropy",
                    ["ERR-SMOOTHING", "TRACE-STATIC"], "ValueError", "label_smoothing",
                    input=x, target=y, label_smoothing=eps)
    probs = probabilities(rng_for("errors-cep"), (3, 4))
    yield error("cep-error-ignore-index", "cross_entropy",
                ["ERR-PROB-IGNORE", "CEP-NO-IGNORE", "TRACE-STATIC"], "ValueError",
                "ignore_index", input=x, target=probs, ignore_index=0)
    yield error("cep-error-target-shape", "cross_entropy", ["ERR-TARGET-SHAPE", "TRACE-STATIC"],
                "ValueError", "target", input=x, target=probs[:, :3])
    for label, bad in (("negative", -0.25), ("above-one", 1.5), ("nan", np.nan)):
        yield error(f"bce-error-input-{label}", "binary_cross_entropy",
                    ["ERR-BCE-RANGE", "TRACE-BCE-RANGE"], "ValueError", "input",
                    input=np.array([[0.25, bad], [0.75, 0.125]]), target=t,
                    reduction="mean")
    yield error("bce-error-input-above-one-none", "binary_cross_entropy",
                ["ERR-BCE-RANGE", "TRACE-BCE-RANGE"], "ValueError", "input",
                input=np.array([[0.25, 1.5], [0.75, 0.125]]), target=t, reduction="none")
    yield error("bce-error-target-above-one", "binary_cross_entropy",
                ["ERR-BCE-TARGET-RANGE", "TRACE-BCE-RANGE", "BCE-TARGET"], "ValueError",
                "target", input=p, target=np.array([[1.0, 2.0], [0.0, 1.0]]),
                reduction="sum")
    for loss, tag in (("binary_cross_entropy", "bce"),
                      ("binary_cross_entropy_with_logits", "bcel")):
        yield error(f"{tag}-error-target-shape", loss, ["ERR-TARGET-SHAPE", "TRACE-STATIC"],
                    "ValueError", "target", input=p, target=np.array([1.0, 0.0]))
        yield error(f"{tag}-error-weight-enlarges", loss,
                    ["ERR-BCE-WEIGHT-SHAPE", "TRACE-STATIC"], "ValueError", "weight",
                    input=p[0], target=t[0], weight=np.ones((2, 2)))
        yield error(f"{tag}-error-weight-mismatch", loss,
                    ["ERR-BCE-WEIGHT-SHAPE", "TRACE-STATIC"], "ValueError", "weight",
                    input=p, target=t, weight=np.ones(3))
    x23 = grid(rng_for("errors-bcel").standard_normal((2, 3)))
    yield error("bcel-error-pos-weight-batch-length", "binary_cross_entropy_with_logits",
                ["ERR-POS-WEIGHT-SHAPE", "BCEL-POS-WEIGHT", "TRACE-STATIC"], "ValueError",
                "pos_weight", input=x23, target=np.ones((2, 3)), pos_weight=np.ones(2))
    yield error("bcel-error-pos-weight-enlarges", "binary_cross_entropy_with_logits",
                ["ERR-POS-WEIGHT-SHAPE", "TRACE-STATIC"], "ValueError", "pos_weight",
                input=x23[0], target=np.ones(3), pos_weight=np.ones((2, 3)))


def weights(case_id, fn, clauses, dtypes=WEIGHTS, **args) -> Definition:
    """A case of a weight function: a value, no gradient."""
    return Definition(case_id, fn, tuple(dict.fromkeys([*clauses, "CW-DTYPE"])), args,
                      tuple(dtypes))


LONG_TAIL = np.array([500.0, 120.0, 30.0, 5.0, 1.0])
_SCHEME_CLAUSE = {"inverse": "CW-INVERSE", "balanced": "CW-BALANCED", "max": "CW-MAX",
                  "inverse_sqrt": "CW-INVERSE-SQRT", "effective_number": "CW-EFFECTIVE-NUMBER",
                  "median_frequency": "CW-MEDIAN-FREQUENCY"}


def weight_schemes() -> Iterator[Definition]:
    # Every scheme with every normalisation on one long-tailed count vector.
    for scheme, clause in _SCHEME_CLAUSE.items():
        for normalize in (None, "classes", "samples"):
            yield weights(f"cw-{scheme}-normalize-{normalize}", "class_weights",
                          [clause, "CW-NORMALIZE"], counts=LONG_TAIL, scheme=scheme,
                          normalize=normalize)
    for beta in (0.0, 0.9, 0.9999):
        yield weights(f"cw-effective-number-beta{beta}", "class_weights",
                      ["CW-EFFECTIVE-NUMBER"], counts=np.array([1.0, 2.0, 10.0, 1000.0]),
                      scheme="effective_number", beta=beta)
    yield weights("cw-median-frequency-even-classes", "class_weights",
                  ["CW-MEDIAN-FREQUENCY"], counts=np.array([40.0, 10.0, 7.0, 3.0]),
                  scheme="median_frequency")
    yield weights("cw-weighted-counts", "class_weights", ["CW-BALANCED"],
                  counts=np.array([10.5, 0.25, 3.75]), scheme="balanced")
    # [CW-ZERO-COUNT]: an opt-in cap, or an error (NaN when traced).
    for scheme in ("inverse", "balanced", "median_frequency"):
        yield weights(f"cw-zero-count-capped-{scheme}", "class_weights",
                      ["CW-ZERO-COUNT", _SCHEME_CLAUSE[scheme]],
                      counts=np.array([100.0, 0.0, 10.0, 1.0]), scheme=scheme,
                      normalize="samples", max_weight=8.0)
    yield Definition("cw-zero-count-error", "class_weights", ("CW-ZERO-COUNT", "CW-DTYPE"),
                     {"counts": np.array([100.0, 0.0, 10.0])}, WEIGHTS, (),
                     ("ValueError", "counts"))
    bad_options = {"scheme": {"scheme": "focal"}, "beta": {"beta": 1.0},
                   "normalize": {"normalize": "mean"}, "max_weight": {"max_weight": 0.0}}
    for name, option in bad_options.items():
        yield Definition(f"cw-error-{name}", "class_weights", ("CW-ERRORS", "TRACE-STATIC"),
                         {"counts": LONG_TAIL, **option}, WEIGHTS, (), ("ValueError", name))
    for label, counts in (("negative", np.array([3.0, -1.0])), ("nan", np.array([3.0, np.nan])),
                          ("2d", np.ones((2, 2)))):
        static = ("TRACE-STATIC",) if label == "2d" else ()
        yield Definition(f"cw-error-counts-{label}", "class_weights", ("CW-ERRORS", *static),
                         {"counts": counts}, WEIGHTS, (), ("ValueError", "counts"))
    # [CW-FROM-LABELS]
    labels = np.repeat(np.arange(4), [40, 9, 3, 1])
    labels[::7] = -100
    for scheme in ("balanced", "inverse_sqrt"):
        yield weights(f"cw-from-labels-{scheme}", "class_weights_from_labels",
                      ["CW-FROM-LABELS", _SCHEME_CLAUSE[scheme]], labels=labels,
                      num_classes=4, scheme=scheme)
    rng = rng_for("cw-from-labels-kdim-int32")
    yield weights("cw-from-labels-kdim-int32", "class_weights_from_labels",
                  ["CW-FROM-LABELS", "CW-NORMALIZE"],
                  labels=rng.randint(0, 5, (2, 6, 7)).astype(np.int32), num_classes=5,
                  scheme="max", normalize="classes")
    yield weights("cw-from-labels-ignore-255-capped", "class_weights_from_labels",
                  ["CW-FROM-LABELS", "CW-ZERO-COUNT"],
                  labels=np.array([0, 0, 1, 255, 255, 0], np.uint8), num_classes=3,
                  scheme="inverse", ignore_index=255, max_weight=5.0)
    yield Definition("cw-from-labels-error-range", "class_weights_from_labels",
                     ("CW-FROM-LABELS", "ERR-TARGET-RANGE"),
                     {"labels": np.array([0, 3, 1]), "num_classes": 3}, WEIGHTS, (),
                     ("ValueError", "labels"))
    yield Definition("cw-from-labels-error-num-classes", "class_weights_from_labels",
                     ("CW-ERRORS", "TRACE-STATIC"),
                     {"labels": np.array([0, 1]), "num_classes": 0}, WEIGHTS, (),
                     ("ValueError", "num_classes"))
    # [CW-POS-WEIGHT]
    rng = rng_for("cw-pos-weight")
    multilabel = (rng.random_sample((20, 4)) < np.array([0.5, 0.2, 0.05, 0.9])).astype(float)
    multilabel[0] = 1.0  # every label has a positive
    yield weights("cw-pos-weight-multilabel", "pos_weight_from_labels", ["CW-POS-WEIGHT"],
                  targets=multilabel)
    yield weights("cw-pos-weight-3d-soft", "pos_weight_from_labels", ["CW-POS-WEIGHT"],
                  targets=grid(rng.uniform(0, 1, (3, 5, 2))))
    yield weights("cw-pos-weight-no-positive-capped", "pos_weight_from_labels",
                  ["CW-POS-WEIGHT", "CW-ZERO-COUNT"],
                  targets=np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]), max_weight=10.0)
    yield Definition("cw-pos-weight-error-no-positive", "pos_weight_from_labels",
                     ("CW-POS-WEIGHT", "CW-ZERO-COUNT"),
                     {"targets": np.array([[1.0, 0.0], [0.0, 0.0]])}, WEIGHTS, (),
                     ("ValueError", "targets"))
    # [RS-SAMPLE-WEIGHTS]
    for scheme in ("inverse", "balanced"):
        yield weights(f"rs-sample-weights-{scheme}", "sample_weights_from_labels",
                      ["RS-SAMPLE-WEIGHTS", "CW-FROM-LABELS"], labels=labels,
                      num_classes=4, scheme=scheme)


def focal() -> Iterator[Definition]:
    # [FOCAL-SIGMOID] with torchvision's defaults and variations.
    for alpha in (0.25, None, -1.0):
        for gamma in (0.0, 0.5, 2.0):
            for reduction in ("none", "mean"):
                cid = f"focal-sigmoid-alpha{alpha}-gamma{gamma}-{reduction}"
                rng = rng_for(cid)
                extra = ["FOCAL-GAMMA0"] if gamma == 0 and alpha is None else []
                yield value(cid, "sigmoid_focal_loss", extra,
                            input=logits(rng, (6, 4), scale=3.0),
                            target=binary_targets(rng, (6, 4), soft=alpha == -1.0),
                            alpha=alpha, gamma=gamma, reduction=reduction)
    yield value("focal-sigmoid-saturated-gamma0.5-sum", "sigmoid_focal_loss",
                ["FOCAL-GRAD"], input=np.array([800.0, -800.0, 0.0, 40.0, -3.0]),
                target=np.array([1.0, 0.0, 1.0, 1.0, 1.0]), alpha=0.25, gamma=0.5,
                reduction="sum")
    yield value("focal-sigmoid-kdim-gamma5-none", "sigmoid_focal_loss", [],
                input=logits(rng_for("fsk"), (2, 3, 4)), target=binary_targets(
                    rng_for("fsk-t"), (2, 3, 4)), gamma=5.0, reduction="none")
    # [FOCAL-SOFTMAX], reductions of the weighted cross-entropy.
    for gamma in (0.0, 0.5, 1.0, 2.0):
        for reduction in REDUCTIONS:
            cid = f"focal-softmax-alpha-gamma{gamma}-ignore-{reduction}"
            rng = rng_for(cid)
            yield value(cid, "softmax_focal_loss",
                        ["CE-IGNORE"] + (["FOCAL-GAMMA0"] if gamma == 0 else []),
                        input=logits(rng, (9, 5), scale=2.0),
                        target=class_targets(rng, (9,), 5, ignore="some"),
                        alpha=class_weights(rng, 5), gamma=gamma, reduction=reduction)
    for reduction in ("mean", "none"):
        cid = f"focal-softmax-kdim2-{reduction}"
        rng = rng_for(cid)
        yield value(cid, "softmax_focal_loss", ["CE-KDIM", "CE-IGNORE"],
                    input=logits(rng, (2, 4, 3, 2)),
                    target=class_targets(rng, (2, 3, 2), 4, ignore="some"),
                    alpha=class_weights(rng, 4), gamma=2.0, reduction=reduction)
    yield value("focal-softmax-unbatched-sum", "softmax_focal_loss", ["CE-UNBATCHED"],
                input=logits(rng_for("fsu"), (6,)), target=np.int64(2), reduction="sum")
    yield value("focal-softmax-all-ignored-mean", "softmax_focal_loss",
                ["EDGE-ALL-IGNORED", "CE-IGNORE"], input=logits(rng_for("fsai"), (3, 4)),
                target=np.array([-100, -100, -100]), alpha=np.array([1.0, 2.0, 3.0, 4.0]))
    yield value("focal-softmax-zero-weight-sum-mean", "softmax_focal_loss",
                ["EDGE-ZERO-WEIGHT-SUM"], input=logits(rng_for("fszw"), (3, 3)),
                target=np.array([0, 1, -100]), alpha=np.array([0.0, 0.0, 2.0]))
    yield value("focal-softmax-saturated-gamma0.5-none", "softmax_focal_loss", ["FOCAL-GRAD"],
                input=np.array([[800.0, 0.0], [40.0, 0.0], [0.5, 1.0]]),
                target=np.array([0, 0, 0]), gamma=0.5, reduction="none")
    for loss, tag in (("sigmoid_focal_loss", "sigmoid"), ("softmax_focal_loss", "softmax")):
        target = np.array([1.0, 0.0]) if tag == "sigmoid" else np.array([1, 0])
        inp = np.array([0.5, -1.0]) if tag == "sigmoid" else np.array([[0.5, -1.0], [2.0, 0.0]])
        yield error(f"focal-{tag}-error-negative-gamma", loss,
                    ["FOCAL-" + tag.upper(), "TRACE-STATIC"], "ValueError", "gamma",
                    input=inp, target=target, gamma=-1.0)
    yield error("focal-softmax-error-alpha-length", "softmax_focal_loss",
                ["FOCAL-SOFTMAX", "ERR-WEIGHT-SHAPE", "TRACE-STATIC"], "ValueError", "alpha",
                input=np.array([[0.5, -1.0], [2.0, 0.0]]), target=np.array([1, 0]),
                alpha=np.ones(3))
    yield error("focal-softmax-error-target-range", "softmax_focal_loss",
                ["FOCAL-SOFTMAX", "ERR-TARGET-RANGE", "TRACE-TARGET-RANGE"], "ValueError",
                "target", input=np.array([[0.5, -1.0], [2.0, 0.0]]), target=np.array([1, 2]))


def sharded(case_id, loss, clauses, shards, dtypes=ALL, **args) -> Definition:
    """A data-parallel case [DP-GLOBAL]: input and target stacked shard by shard."""
    d = value(case_id, loss, ["DP-GLOBAL", "DP-AXIS", "DP-PROCESS-GROUP", *clauses], dtypes,
              **args)
    d.shards = shards
    return d


def data_parallel() -> Iterator[Definition]:
    """Four shards whose sums of valid target weights differ widely; one is all ignored."""
    patterns = ("none", "some", "all", "some")
    for reduction in ("mean", "sum"):
        for eps in (0.0, 0.2):
            cid = f"dp-ce-weighted-ignore-smooth{eps}-{reduction}"
            rng = rng_for(cid)
            target = np.stack([class_targets(rng, (5,), 4, ignore=p) for p in patterns])
            target[0] = 3  # the first shard holds only the heaviest class
            yield sharded(cid, "cross_entropy", ["CE-IGNORE", "CE-WEIGHT"] + (
                ["CE-SMOOTH", "CE-SMOOTH-MEAN"] if eps else []), 4,
                input=logits(rng, (4, 5, 4)), target=target,
                weight=grid(np.array([0.25, 1.0, 2.0, 8.0])), label_smoothing=eps,
                reduction=reduction)
    cid = "dp-ce-kdim-mean"
    rng = rng_for(cid)
    yield sharded(cid, "cross_entropy", ["CE-KDIM", "CE-IGNORE"], 3,
                  input=logits(rng, (3, 2, 4, 3)),
                  target=np.stack([class_targets(rng, (2, 3), 4, ignore=p)
                                   for p in ("none", "all", "some")]),
                  weight=class_weights(rng, 4))
    cid = "dp-cep-mean"
    rng = rng_for(cid)
    yield sharded(cid, "cross_entropy", [], 3, input=logits(rng, (3, 4, 5)),
                  target=probabilities(rng, (3, 4, 5), axis=2), weight=class_weights(rng, 5))
    cid = "dp-nll-mean"
    rng = rng_for(cid)
    yield sharded(cid, "nll_loss", ["CE-IGNORE"], 4, input=logits(rng, (4, 3, 6)),
                  target=np.stack([class_targets(rng, (3,), 6, ignore=p) for p in patterns]),
                  weight=class_weights(rng, 6))
    cid = "dp-bce-mean"
    rng = rng_for(cid)
    yield sharded(cid, "binary_cross_entropy", [], 2, input=unit_interval(rng, (2, 3, 4)),
                  target=binary_targets(rng, (2, 3, 4)), weight=class_weights(rng, (4,)))
    cid = "dp-bcel-mean"
    rng = rng_for(cid)
    yield sharded(cid, "binary_cross_entropy_with_logits", ["BCEL-POS-WEIGHT"], 2,
                  input=logits(rng, (2, 3, 4)), target=binary_targets(rng, (2, 3, 4)),
                  pos_weight=class_weights(rng, (4,)))
    cid = "dp-focal-softmax-mean"
    rng = rng_for(cid)
    yield sharded(cid, "softmax_focal_loss", ["CE-IGNORE"], 4, input=logits(rng, (4, 5, 3)),
                  target=np.stack([class_targets(rng, (5,), 3, ignore=p) for p in patterns]),
                  alpha=class_weights(rng, 3), gamma=2.0)


def class_sharded(case_id, loss, clauses, class_shards, **args) -> Definition:
    """A class-parallel case [CP-GLOBAL]: the unsplit arguments; an implementation splits
    the class axis into ``class_shards`` equal shards, and expects the unsplit results."""
    d = value(case_id, loss, ["CP-GLOBAL", "CP-REDUCE", "CP-AXIS", "CP-PROCESS-GROUP",
                              *clauses], **args)
    d.class_shards = class_shards
    return d


def class_parallel() -> Iterator[Definition]:
    """Class weights (one zero, on a target), ignored elements, a shard that holds no
    target; the Megatron regression: one, two and four shards of the same smoothed
    problem at a large logit scale must give the same loss; the linear cross-entropy
    with every option over two and four shards of the lm-head."""
    for reduction in REDUCTIONS:
        for eps in (0.0, 0.1):
            cid = f"cp-ce-weighted-ignore-smooth{eps}-{reduction}"
            rng = rng_for(cid)
            target = class_targets(rng, (7,), 6, ignore="some")
            target[target >= 4] += 2  # classes 4 and 5 (the third of four shards): none
            weight = class_weights(rng, 8)
            weight[target[-1]] = 0.0
            yield class_sharded(cid, "cross_entropy", ["CE-IGNORE", "CE-WEIGHT"] + (
                ["CE-SMOOTH", "CP-SMOOTH"] if eps else []), 4,
                input=logits(rng, (7, 8)), target=target, weight=weight,
                label_smoothing=eps, reduction=reduction)
    rng = rng_for("cp-ce-megatron")
    x, y = logits(rng, (6, 16), scale=1000.0), class_targets(rng, (6,), 16)
    for shards in (1, 2, 4):
        yield class_sharded(f"cp-ce-megatron-smooth-tp{shards}", "cross_entropy",
                            ["CE-SMOOTH", "CP-SMOOTH"], shards, input=x, target=y,
                            label_smoothing=0.1)
    cid = "cp-ce-all-ignored-mean"
    rng = rng_for(cid)
    yield class_sharded(cid, "cross_entropy", ["CE-IGNORE", "EDGE-ALL-IGNORED"], 2,
                        input=logits(rng, (3, 4)), target=np.array([-100, -100, -100]),
                        weight=class_weights(rng, 4), label_smoothing=0.1)
    for shards in (2, 4):
        for reduction in ("mean", "none"):
            cid = f"cp-lce-all-tp{shards}-{reduction}"
            rng = rng_for(cid)
            yield class_sharded(
                cid, "linear_cross_entropy",
                ["LCE-GRAD", "LCE-ZLOSS", "LCE-SOFTCAP", "CE-SMOOTH", "CE-IGNORE",
                 "CE-WEIGHT", "CP-SMOOTH", "CP-LINEAR"], shards,
                hidden=logits(rng, (6, 4)), weight=logits(rng, (8, 4), scale=2.0),
                target=class_targets(rng, (6,), 8, ignore="some"),
                class_weight=class_weights(rng, 8), label_smoothing=0.1, z_loss=1e-2,
                softcap=3.0, chunk_size=4, reduction=reduction)


def linear() -> Iterator[Definition]:
    """[LCE-*]: small shapes, every option; the chunking is the implementations' affair."""
    options = {
        "plain": {},
        "weighted-ignore": {"class_weight": True, "ignore": True},
        "smooth": {"label_smoothing": 0.2, "class_weight": True, "ignore": True},
        "zloss": {"z_loss": 1e-2, "class_weight": True, "ignore": True},
        "softcap": {"softcap": 4.0, "ignore": True},
        "all-chunked": {"label_smoothing": 0.1, "z_loss": 1e-2, "softcap": 3.0,
                        "class_weight": True, "ignore": True, "chunk_size": 4},
    }
    clause_of = {"label_smoothing": ["CE-SMOOTH", "CE-SMOOTH-MEAN"], "z_loss": ["LCE-ZLOSS"],
                 "softcap": ["LCE-SOFTCAP"], "class_weight": ["CE-WEIGHT"],
                 "ignore": ["CE-IGNORE"], "chunk_size": []}
    for name, option in options.items():
        for reduction in REDUCTIONS:
            cid = f"lce-{name}-{reduction}"
            rng = rng_for(cid)
            vocab, hidden_size = 7, 4
            args = {k: v for k, v in option.items() if k not in ("class_weight", "ignore")}
            yield value(
                cid, "linear_cross_entropy",
                ["LCE-GRAD", *(c for k in option for c in clause_of[k])],
                hidden=logits(rng, (6, hidden_size)),
                weight=logits(rng, (vocab, hidden_size), scale=0.5),
                target=class_targets(rng, (6,), vocab,
                                     ignore="some" if option.get("ignore") else "none"),
                class_weight=class_weights(rng, vocab) if option.get("class_weight") else None,
                reduction=reduction, **args)
    cid = "lce-kdim-hidden-mean"
    rng = rng_for(cid)
    yield value(cid, "linear_cross_entropy", ["LCE-GRAD", "CE-IGNORE"],
                hidden=logits(rng, (2, 3, 5)), weight=logits(rng, (6, 5), scale=0.5),
                target=class_targets(rng, (2, 3), 6, ignore="some"), z_loss=1e-3)
    cid = "lce-all-ignored-mean"
    rng = rng_for(cid)
    yield value(cid, "linear_cross_entropy", ["LCE-GRAD", "EDGE-ALL-IGNORED"],
                hidden=logits(rng, (3, 4)), weight=logits(rng, (5, 4)),
                target=np.array([-100, -100, -100]), z_loss=1e-2, label_smoothing=0.1)
    h, w = logits(rng_for("lce-errors"), (3, 4)), logits(rng_for("lce-errors-w"), (5, 4))
    y = np.array([0, 4, 1])
    bad = {"weight-shape": ({"weight": w[:, :3]}, "weight"),
           "target-shape": ({"target": y[:2]}, "target"),
           "class-weight-shape": ({"class_weight": np.ones(4)}, "class_weight"),
           "z-loss": ({"z_loss": -1.0}, "z_loss"), "softcap": ({"softcap": 0.0}, "softcap"),
           "chunk-size": ({"chunk_size": 0}, "chunk_size")}
    for name, (change, mentions) in bad.items():
        args = {"hidden": h, "weight": w, "target": y, **change}
        yield error(f"lce-error-{name}", "linear_cross_entropy",
                    ["LCE-ERRORS", "TRACE-STATIC"], "ValueError", mentions, **args)
    yield error("lce-error-target-range", "linear_cross_entropy",
                ["LCE-ERRORS", "ERR-TARGET-RANGE", "TRACE-TARGET-RANGE"], "ValueError",
                "target", hidden=h, weight=w, target=np.array([0, 5, 1]))


_HVP_CLAUSE = {
    "cross_entropy": "HVP-CE",
    "nll_loss": "HVP-NLL",
    "binary_cross_entropy": "HVP-BCE",
    "binary_cross_entropy_with_logits": "HVP-BCEL",
    "sigmoid_focal_loss": "HVP-FOCAL",
    "softmax_focal_loss": "HVP-FOCAL",
    "linear_cross_entropy": "HVP-LCE",
}


def derivative(case_id, loss, clauses, **args) -> Definition:
    """A value case that also carries tangents and expects the JVP and HVP (section 18)."""
    probability_target = loss == "cross_entropy" and np.asarray(
        args["target"]).dtype.kind == "f"
    hvp = "HVP-CEP" if probability_target else _HVP_CLAUSE[loss]
    return dataclasses.replace(value(case_id, loss, ["JVP", hvp, *clauses], **args),
                               derivatives=True)


def derivatives() -> Iterator[Definition]:
    """[JVP] [HVP-*]: every loss, its options and the places where a rule takes over from
    the formula (ignored rows, all ignored, the BCE clamp and guard, saturated focal)."""
    for reduction in REDUCTIONS:
        cid = f"hvp-ce-weighted-ignore-{reduction}"
        rng = rng_for(cid)
        yield derivative(cid, "cross_entropy", ["CE-WEIGHT", "CE-IGNORE"],
                         input=logits(rng, (6, 5), scale=2.0),
                         target=class_targets(rng, (6,), 5, ignore="some"),
                         weight=class_weights(rng, 5), reduction=reduction)
        cid = f"hvp-ce-smooth-{reduction}"
        rng = rng_for(cid)
        yield derivative(cid, "cross_entropy", ["CE-SMOOTH", "CE-IGNORE"],
                         input=logits(rng, (5, 4), scale=2.0),
                         target=class_targets(rng, (5,), 4, ignore="some"),
                         weight=class_weights(rng, 4), label_smoothing=0.2,
                         reduction=reduction)
    rng = rng_for("hvp-ce-kdim-sum")
    yield derivative("hvp-ce-kdim-sum", "cross_entropy", ["CE-KDIM"],
                     input=logits(rng, (2, 3, 2, 2)),
                     target=class_targets(rng, (2, 2, 2), 3, ignore="some"), reduction="sum")
    yield derivative("hvp-ce-unbatched-mean", "cross_entropy", ["CE-UNBATCHED"],
                     input=logits(rng_for("hvp-ce-unbatched"), (5,)), target=np.int64(3),
                     weight=class_weights(rng_for("hvp-ce-unbatched-w"), 5))
    yield derivative("hvp-ce-all-ignored-mean", "cross_entropy", ["EDGE-ALL-IGNORED"],
                     input=logits(rng_for("hvp-ce-all-ignored"), (3, 4)),
                     target=np.array([-100, -100, -100]),
                     weight=np.array([1.0, 2.0, 3.0, 4.0]))
    yield derivative("hvp-ce-large-logits-none", "cross_entropy", ["EDGE-LARGE-LOGITS"],
                     input=np.array([[300.0, -200.0, 0.0], [1e4, 1e4, -1e4], [0.5, 0.0, 40.0]]),
                     target=np.array([0, 1, 0]), reduction="none")
    for reduction in ("mean", "none"):
        cid = f"hvp-cep-weighted-smooth-{reduction}"
        rng = rng_for(cid)
        yield derivative(cid, "cross_entropy", ["CE-SMOOTH"],
                         input=logits(rng, (4, 5), scale=2.0),
                         target=probabilities(rng, (4, 5)), weight=class_weights(rng, 5),
                         label_smoothing=0.1, reduction=reduction)
    rng = rng_for("hvp-nll")
    yield derivative("hvp-nll-weighted-ignore-mean", "nll_loss", ["CE-IGNORE"],
                     input=logits(rng, (5, 4)), target=class_targets(rng, (5,), 4, "some"),
                     weight=class_weights(rng, 4))
    for reduction in ("mean", "none"):
        cid = f"hvp-bce-weighted-{reduction}"
        rng = rng_for(cid)
        yield derivative(cid, "binary_cross_entropy", ["BCE-WEIGHT"],
                         input=unit_interval(rng, (4, 3)),
                         target=binary_targets(rng, (4, 3), soft=True),
                         weight=class_weights(rng, 3), reduction=reduction)
    yield derivative("hvp-bce-clamp-guard-none", "binary_cross_entropy",
                     ["BCE-CLAMP", "GRAD-BCE"],
                     input=np.array([0.0, 1.0, 0.0, 1.0, 2.0 ** -14, 1.0 - 2.0 ** -8, 0.5]),
                     target=np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.25]), reduction="none")
    for reduction in ("sum", "none"):
        cid = f"hvp-bcel-pos-weight-{reduction}"
        rng = rng_for(cid)
        yield derivative(cid, "binary_cross_entropy_with_logits", ["BCEL-POS-WEIGHT"],
                         input=logits(rng, (4, 3), scale=3.0),
                         target=binary_targets(rng, (4, 3), soft=True),
                         weight=class_weights(rng, 3), pos_weight=class_weights(rng, 3),
                         reduction=reduction)
    yield derivative("hvp-bcel-large-logits-none", "binary_cross_entropy_with_logits",
                     ["EDGE-LARGE-LOGITS"], input=np.array([80.0, -80.0, 30.0, -30.0, 0.0]),
                     target=np.array([1.0, 1.0, 0.0, 0.0, 0.5]), reduction="none")
    for gamma in (0.0, 0.5, 1.0, 2.0):
        for reduction in ("none", "mean"):
            cid = f"hvp-focal-sigmoid-gamma{gamma}-{reduction}"
            rng = rng_for(cid)
            yield derivative(cid, "sigmoid_focal_loss", ["FOCAL-SIGMOID"],
                             input=logits(rng, (4, 3), scale=3.0),
                             target=binary_targets(rng, (4, 3)), alpha=0.25, gamma=gamma,
                             reduction=reduction)
    yield derivative("hvp-focal-sigmoid-saturated-none", "sigmoid_focal_loss", ["FOCAL-GRAD"],
                     input=np.array([40.0, -40.0, 0.0, 12.0, -3.0]),
                     target=np.array([1.0, 0.0, 1.0, 1.0, 1.0]), alpha=0.25, gamma=0.5,
                     reduction="none")
    for gamma in (0.0, 0.5, 1.0, 2.0):
        cid = f"hvp-focal-softmax-gamma{gamma}-mean"
        rng = rng_for(cid)
        yield derivative(cid, "softmax_focal_loss", ["FOCAL-SOFTMAX", "CE-IGNORE"],
                         input=logits(rng, (6, 4), scale=2.0),
                         target=class_targets(rng, (6,), 4, ignore="some"),
                         alpha=class_weights(rng, 4), gamma=gamma)
    yield derivative("hvp-focal-softmax-saturated-none", "softmax_focal_loss", ["FOCAL-GRAD"],
                     input=np.array([[40.0, 0.0], [12.0, 0.0], [0.5, 1.0]]),
                     target=np.array([0, 0, 0]), gamma=0.5, reduction="none")
    for name, option in (("weighted-ignore", {}),
                         ("all-options", {"label_smoothing": 0.1, "z_loss": 1e-2,
                                          "softcap": 3.0})):
        for reduction in ("mean", "none"):
            cid = f"hvp-lce-{name}-{reduction}"
            rng = rng_for(cid)
            yield derivative(cid, "linear_cross_entropy",
                             ["LCE-GRAD", "CE-IGNORE", "CE-WEIGHT"],
                             hidden=logits(rng, (5, 4)), weight=logits(rng, (6, 4), scale=0.5),
                             target=class_targets(rng, (5,), 6, ignore="some"),
                             class_weight=class_weights(rng, 6), reduction=reduction, **option)


GROUPS: tuple[Callable[[], Iterator[Definition]], ...] = (
    cross_entropy_class_targets,
    cross_entropy_smoothing,
    cross_entropy_probability_targets,
    nll,
    binary,
    edge_cases,
    dtype_rules,
    warnings_,
    errors,
    weight_schemes,
    focal,
    data_parallel,
    linear,
    class_parallel,
    derivatives,
)


def definitions() -> list[Definition]:
    return [d for group in GROUPS for d in group()]


# ----------------------------------------------------------------------------------
# Definitions -> golden cases, through the reference.

def _call(fn, args, **extra):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(**args, **extra)
    return np.asarray(out, dtype=np.float64), caught


def _gradients(grad_fn, args, **extra) -> dict[str, np.ndarray]:
    """``{"grad_input": ...}``, or ``{"grad_<name>": ...}`` for functions whose gradient
    function returns one per argument (linear_cross_entropy)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", reference.ProbabilityInputWarning)
        grads = grad_fn(**args, **extra)
    if isinstance(grads, dict):
        return {f"grad_{k}": np.asarray(v, np.float64) for k, v in grads.items()}
    return {"grad_input": np.asarray(grads, np.float64)}


def realize(d: Definition) -> Case:
    """One golden case: the reference checks the arguments (errors, warnings), and the
    expected numbers are the exact results rounded once to float64 (conformance/exact.py),
    which the reference must match (:func:`_agree`)."""
    fn, grad_fn = LOSSES[d.loss]
    if d.shards:
        fn, grad_fn = _on_merged_shards(fn), _on_merged_shards(grad_fn, restack=True)
    rng = rng_for(d.id + "/grad_output")
    grad_output = tangents = None
    args = {k: np.asarray(v) if isinstance(v, (np.ndarray, np.generic)) else v
            for k, v in d.args.items()}
    if d.error:
        kind, mentions = d.error
        try:
            fn(**d.args)
        except (ValueError, TypeError) as exc:
            if type(exc).__name__ != kind or mentions not in str(exc):
                raise GenerationError(f"{d.id}: reference raised {exc!r}, expected {kind} "
                                      f"naming {mentions!r}") from exc
        else:
            raise GenerationError(f"{d.id}: reference did not raise {kind}")
        try:
            output, _ = _call(fn, d.args, checked=False)
        except (ValueError, TypeError):
            traced = "error"
        else:
            approximate = {"output": output}
            if grad_fn is not None:
                grad_output = _grad_output(rng, output)
                approximate.update(_gradients(grad_fn, d.args, grad_output=grad_output,
                                              checked=False))
            traced = _exact(d, grad_output, approximate)
        expected = {"error": kind, "mentions": mentions, "traced": traced}
        if d.loss in DEFAULT_DTYPE_RESULT:
            expected["result_dtype"] = "default"
    else:
        output, caught = _call(fn, d.args)
        approximate = {"output": output}
        if grad_fn is not None:
            grad_output = _grad_output(rng, output)
            approximate.update(_gradients(grad_fn, d.args, grad_output=grad_output))
        if d.derivatives:
            tangents = _tangents(d)
            approximate.update(_higher_derivatives(d, tangents, grad_output))
        expected = _exact(d, grad_output, approximate, tangents)
        if d.loss in DEFAULT_DTYPE_RESULT:
            expected["result_dtype"] = "default"
        expected.update(_exact_zeros(d))
        names = {type(w.message).__name__ for w in caught}
        if names - {"ProbabilityInputWarning"}:
            raise GenerationError(f"{d.id}: the reference warned {names}")
        if names:
            expected["warns"] = names.pop()
    case = Case(d.id, d.loss, list(d.clauses), [], args, list(d.keep_dtype), grad_output,
                expected, shards=d.shards, class_shards=d.class_shards, tangents=tangents)
    case.dtypes = [dt for dt in d.dtypes if _fits(case, dt)]
    if not case.dtypes:
        raise GenerationError(f"{d.id}: fits none of the dtypes {d.dtypes}")
    return case


#: How far the float64 reference may be from the exact values while generating (norm-wise,
#: relative): far looser than its measured error (tests/test_golden_files.py), tight
#: enough to stop a case whose two computations disagree on the formula.
AGREEMENT = 1e-9


def _tangents(d: Definition) -> dict[str, np.ndarray]:
    """Directions for the JVP and HVP: one per differentiated argument, on the grid."""
    rng = rng_for(d.id + "/tangent")
    names = ("hidden", "weight") if d.loss == "linear_cross_entropy" else ("input",)
    return {name: grid(rng.uniform(-2.0, 2.0, size=np.shape(d.args[name])))
            for name in names}


def _higher_derivatives(d: Definition, tangents, grad_output) -> dict[str, np.ndarray]:
    """The reference's JVP and HVP [JVP] [HVP-*]."""
    tangent = tangents if d.loss == "linear_cross_entropy" else tangents["input"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", reference.ProbabilityInputWarning)
        jvp = reference.jvp(d.loss, tangent, **d.args)
        hvp = reference.hvp(d.loss, tangent, grad_output=grad_output, **d.args)
    hvp = hvp if isinstance(hvp, dict) else {"input": hvp}
    return {"jvp_output": np.asarray(jvp, np.float64),
            **{f"hvp_{k}": np.asarray(v, np.float64) for k, v in hvp.items()}}


def _exact(d: Definition, grad_output, approximate: dict, tangents=None) -> dict:
    """The exact results of ``d``, checked against the reference's ``approximate`` ones."""
    results = exact.evaluate(d.loss, d.args, grad_output, tangents,
                             merge_shards=bool(d.shards))
    if results.keys() != approximate.keys():
        raise GenerationError(f"{d.id}: exact results {sorted(results)} but reference "
                              f"results {sorted(approximate)}")
    for name, want in results.items():
        got = approximate[name]
        same_shape = np.shape(got) == np.shape(want)
        if not same_shape or not _agree(got, want):
            raise GenerationError(f"{d.id}: {name}: the reference gives {got!r}, the exact "
                                  f"value is {want!r}")
    return results


def _agree(got, want) -> bool:
    """Same NaN and infinity positions, finite values within :data:`AGREEMENT`."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if not (np.array_equal(np.isnan(got), np.isnan(want))
            and np.array_equal(np.where(np.isinf(got), got, 0), np.where(np.isinf(want),
                                                                        want, 0))):
        return False
    finite = np.isfinite(want)
    scale = np.max(np.abs(want[finite]), initial=0.0)
    return bool(np.max(np.abs(got[finite] - want[finite]), initial=0.0)
                <= AGREEMENT * max(scale, 1e-300))


def _on_merged_shards(fn, restack=False):
    """``fn`` on the concatenated batch of a sharded case; gradients stacked back."""
    def on_merged(input, target, **args):
        out = fn(reference.merge_shards(input), reference.merge_shards(target), **args)
        return np.asarray(out).reshape(np.shape(input)) if restack else out
    return on_merged


def _exact_zeros(d: Definition) -> dict:
    """Positions [CE-IGNORE] makes exactly zero: ignored elements and their gradient rows."""
    target = np.asarray(d.args.get("target"))
    if (d.loss not in ("cross_entropy", "nll_loss", "softmax_focal_loss")
            or target.dtype.kind not in "iu"):
        return {}
    ignored = target == d.args.get("ignore_index", -100)
    if not ignored.any() or d.shards:
        return {}
    zeros = {}
    if d.args.get("reduction", "mean") == "none":
        zeros["zero_output"] = ignored
    x = np.asarray(d.args["input"])
    rows = ignored[None] if x.ndim == 1 else np.expand_dims(ignored, 1)
    zeros["zero_grad"] = np.broadcast_to(rows, x.shape).copy()
    return zeros


def _fits(case: Case, dtype: str) -> bool:
    """Every input that is converted to ``dtype`` is exact there; float16 does not overflow."""
    arrays = [v for k, v in case.args.items() if isinstance(v, np.ndarray)
              and k not in case.keep_dtype and v.dtype.kind == "f"]
    if case.grad_output is not None:
        arrays.append(case.grad_output)
    arrays += list((case.tangents or {}).values())
    if not all(representable(a, dtype) for a in arrays):
        return False
    if dtype == "float16":
        results = [v for k, v in case.expected.items()
                   if k == "output" or k.startswith(("grad_", "jvp_", "hvp_"))]
        traced = case.expected.get("traced")
        if isinstance(traced, dict):
            results += list(traced.values())
        for r in results:
            finite = np.abs(r[np.isfinite(r)])
            if finite.size and finite.max() > FLOAT16_MAX / 2:
                return False
    return True


def build() -> dict[str, list[Case]]:
    """All golden cases, by loss."""
    by_loss: dict[str, list[Case]] = {loss: [] for loss in LOSSES}
    for d in definitions():
        by_loss[d.loss].append(realize(d))
    return by_loss
