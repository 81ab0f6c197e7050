"""``python -m conformance fuzz``: differential testing of implementations against the
reference on random inputs, with hypothesis.

Each example draws a loss and its arguments: a shape (batch 0 to 8, 1 to 17 classes, up
to two spatial dimensions, sometimes unbatched), logits of ordinary or extreme size
(and now and then infinite), class weights with zeros, ignore patterns from none to all
(with ``ignore_index`` inside or outside the classes), smoothing, reduction and dtype.
The reference computes what the spec expects (the same way as for the golden cases, in
conformance/cases.py), and every implementation must pass it by the rule of spec
section 1, in the example's dtype. Four invariants are checked on the implementations
too, on the examples drawn in float64:
permuting the batch does not change ``"mean"`` or ``"sum"``; scaling every class weight
leaves the class-index ``"mean"`` unchanged; an ignored target equals a dropped one;
``softmax_focal_loss`` with ``gamma=0`` equals ``cross_entropy``.

Hypothesis shrinks a failing example to a small one, which is written as a candidate
golden case (``<out>/<case id>.json``, a golden file: replay it with
``python -m conformance run --cases <out>``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from conformance import cases as definitions
from conformance import clauses, golden, runner
from conformance.adapters import Adapter
from conformance.compare import compare
from conformance.golden import Case

LOSSES = ("cross_entropy", "nll_loss", "softmax_focal_loss", "binary_cross_entropy",
          "binary_cross_entropy_with_logits", "sigmoid_focal_loss")
CLASS_LOSSES = ("cross_entropy", "nll_loss", "softmax_focal_loss")


@dataclasses.dataclass
class Draw:
    """The structure of one example; array contents come from ``seed``."""

    loss: str
    batch: int | None  # None: unbatched
    classes: int
    spatial: tuple[int, ...]
    scale: float
    infinite: bool
    weighted: bool
    zero_weights: bool  # class or element weights may be exactly 0
    ignore: str
    ignore_index: int
    smoothing: float  # label_smoothing of cross_entropy
    probabilities: bool  # cross_entropy with class probabilities
    soft_targets: bool  # binary losses: targets anywhere in [0, 1], not only 0 or 1
    pos_weighted: bool  # binary_cross_entropy_with_logits with a pos_weight
    reduction: str
    gamma: float
    dtype: str  # the dtype each implementation runs the example in
    seed: int


@st.composite
def draws(draw) -> Draw:
    loss = draw(st.sampled_from(LOSSES))
    class_loss = loss in CLASS_LOSSES
    unbatched = class_loss and draw(st.integers(0, 9)) == 0
    return Draw(
        loss=loss,
        batch=None if unbatched else draw(st.sampled_from([1, 2, 3, 5, 8, 0])),
        classes=draw(st.sampled_from([2, 3, 5, 17, 1])),
        spatial=() if unbatched else draw(st.sampled_from([(), (), (2,), (2, 3), (1, 2, 2)])),
        scale=draw(st.sampled_from([1.0, 4.0, 30.0, 1e4])),
        infinite=draw(st.integers(0, 19)) == 0,
        weighted=draw(st.booleans()),
        zero_weights=draw(st.booleans()),
        ignore=draw(st.sampled_from(["none", "some", "all"])),
        ignore_index=draw(st.sampled_from([-100, -100, 0, 255])),
        smoothing=draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0])),
        probabilities=loss == "cross_entropy" and draw(st.integers(0, 3)) == 0,
        soft_targets=draw(st.booleans()),
        pos_weighted=draw(st.booleans()),
        reduction=draw(st.sampled_from(["mean", "sum", "none"])),
        gamma=draw(st.sampled_from([0.0, 0.5, 2.0])),
        dtype=draw(st.sampled_from(clauses.DTYPES)),
        seed=draw(st.integers(0, 2 ** 31 - 1)),
    )


def build(d: Draw) -> definitions.Definition:
    """The definition of the example's case, with inputs on the bfloat16 grid."""
    rng = np.random.RandomState(d.seed)
    c = d.classes
    if d.loss in CLASS_LOSSES:
        shape = (c,) if d.batch is None else (d.batch, c) + d.spatial
        target_shape = () if d.batch is None else (d.batch,) + d.spatial
    else:
        shape = target_shape = (d.batch,) + d.spatial + (c,)
    x = definitions.logits(rng, shape, d.scale)
    if d.infinite and x.size and d.loss != "binary_cross_entropy":
        x.ravel()[rng.randint(x.size)] = rng.choice([np.inf, -np.inf])
    args: dict = {"reduction": d.reduction}
    if d.loss in CLASS_LOSSES:
        if d.probabilities:
            target = definitions.probabilities(rng, shape, axis=0 if d.batch is None else 1)
        else:
            target = definitions.class_targets(rng, target_shape, c, d.ignore, d.ignore_index)
            args["ignore_index"] = d.ignore_index
        weight = definitions.class_weights(rng, c, d.zero_weights) if d.weighted else None
        args[{"softmax_focal_loss": "alpha"}.get(d.loss, "weight")] = weight
        if d.loss == "cross_entropy":
            args["label_smoothing"] = d.smoothing
        if d.loss == "softmax_focal_loss":
            args["gamma"] = d.gamma
    else:
        target = definitions.binary_targets(rng, shape, soft=d.soft_targets)
        if d.loss == "binary_cross_entropy":
            x = definitions.unit_interval(rng, shape, 0.0, 1.0)
        if d.weighted and d.loss != "sigmoid_focal_loss":
            args["weight"] = definitions.class_weights(rng, (c,), d.zero_weights)
        if d.loss == "binary_cross_entropy_with_logits" and d.pos_weighted:
            args["pos_weight"] = definitions.class_weights(rng, (c,))
        if d.loss == "sigmoid_focal_loss":
            args["gamma"] = d.gamma
    return definitions.value(f"fuzz-{d.loss}-{d.seed}", d.loss, [], **args,
                             input=x, target=target)


def realize(d: Draw) -> Case | None:
    """The golden case of an example, or None when its inputs fit no dtype."""
    try:
        return definitions.realize(build(d))
    except definitions.GenerationError:
        return None


def check(adapter: Adapter, case: Case, dtype: str) -> list[str]:
    """Problems of one implementation on one case in ``dtype`` (float64 if the case or
    the implementation does not have it)."""
    if dtype not in case.dtypes or dtype not in adapter.dtypes:
        dtype = "float64"
    record = runner.run_case(adapter, case, dtype)
    return [f"{adapter.name} {dtype}: {record.detail}"] if record.status == runner.FAIL else []


def _output(adapter, case, **changes):
    changed = Case(**{**case.__dict__, "args": {**case.args, **changes},
                      "grad_output": None, "expected": {}})
    return adapter.call(changed, "float64", traced=False).output


def invariants(adapter: Adapter, case: Case) -> list[str]:
    """The four invariants, on float64 runs of the implementation."""
    if "float64" not in adapter.dtypes or case.loss not in adapter.losses:
        return []
    args, problems = case.args, []
    reduction = args.get("reduction")
    x, y = args["input"], args["target"]
    base = _output(adapter, case)
    if reduction in ("mean", "sum") and x.ndim >= 2 and x.shape[0] > 1:
        order = np.random.RandomState(0).permutation(x.shape[0])
        permuted = _output(adapter, case, input=x[order], target=y[order])
        if not compare(permuted, base, "float64").ok:
            problems.append(f"{adapter.name}: permuting the batch changed {reduction}: "
                            f"{base} -> {permuted}")
    weight_key = "alpha" if case.loss == "softmax_focal_loss" else "weight"
    w = args.get(weight_key)
    class_target = case.loss in CLASS_LOSSES and y.dtype.kind in "iu"
    if class_target and reduction == "mean" and w is not None:
        scaled = _output(adapter, case, **{weight_key: w * 4.0})
        if not compare(scaled, base, "float64").ok:
            problems.append(f"{adapter.name}: scaling the class weights changed the mean: "
                            f"{base} -> {scaled}")
    if class_target and reduction in ("mean", "sum") and x.ndim == 2:
        kept = y != args.get("ignore_index", -100)
        if 0 < kept.sum() < len(y):
            dropped = _output(adapter, case, input=x[kept], target=y[kept])
            if not compare(dropped, base, "float64").ok:
                problems.append(f"{adapter.name}: ignored targets differ from dropped "
                                f"ones: {base} -> {dropped}")
    if case.loss == "softmax_focal_loss" and args.get("gamma") == 0 \
            and "cross_entropy" in adapter.losses:
        ce_case = Case(**{**case.__dict__, "loss": "cross_entropy", "args": {
            k: v for k, v in args.items() if k not in ("alpha", "gamma")} | {"weight": w}})
        ce = _output(adapter, ce_case)
        if not compare(base, ce, "float64").ok:
            problems.append(f"{adapter.name}: focal loss with gamma=0 differs from "
                            f"cross-entropy: {base} vs {ce}")
    return problems


@dataclasses.dataclass
class Result:
    examples: int
    failure: str | None = None
    candidate: Path | None = None


def fuzz(adapters: list[Adapter], examples: int, seed: int, out: Path | None) -> Result:
    """Run ``examples`` examples; on a failure, shrink it and write the candidate case."""
    state = {"count": 0, "last": None}

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(draws())
    def property_(d: Draw):
        state["count"] += 1
        case = realize(d)
        if case is None:
            return
        problems = []
        for adapter in adapters:
            if case.loss in adapter.losses:
                problems += check(adapter, case, d.dtype)
                if d.dtype == "float64":
                    problems += invariants(adapter, case)
        if problems:
            state["last"] = (case, problems)
            raise AssertionError("\n".join(problems))

    try:
        property_()
    except AssertionError:
        case, problems = state["last"]
        path = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"{case.id}.json"
            path.write_text(golden.dumps(case.loss, [case]), encoding="utf-8")
        return Result(state["count"], "\n".join(problems), path)
    return Result(state["count"])


def summary(result: Result) -> str:
    text = f"fuzz: {result.examples} examples"
    if result.failure is None:
        return text + ", no failure"
    text += f", failure (shrunk):\n{result.failure}"
    if result.candidate:
        text += f"\ncandidate golden case written to {result.candidate}"
    return text

