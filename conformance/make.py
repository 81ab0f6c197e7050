"""Your own inputs and options as a golden case: :func:`make_case` and
``python -m conformance make-case``.

The expected values come from the reference, through the same path as the project's own
goldens (``conformance.cases.realize``), so a case frozen from a training configuration
(its weights, ignore_index, smoothing, shapes, dtypes) is judged exactly as the
project's cases are, by ``run``, ``check`` and ``assert_conforms`` with ``--cases``.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from conformance import cases, golden
from conformance.clauses import DTYPES
from conformance.golden import Case


def _clauses(loss: str, args: dict) -> tuple[str, ...]:
    """The clauses the case checks, as the project's own value cases name them."""
    definition = cases.value("_", loss, (), **args)
    return definition.clauses


def make_case(loss: str, input, target, *, id: str | None = None, dtypes=None,
              clauses=(), **options) -> Case:
    """A golden case of ``loss`` on ``input`` and ``target`` (class axis 1, as in
    torch.nn.functional) with ``options`` (``weight=``, ``ignore_index=``,
    ``reduction=``, ``label_smoothing=``, ``pos_weight=``, ...), its expected output and
    gradients from the reference. ``dtypes``: those it applies to (default: every dtype
    in which its inputs are exact). Raises ValueError when the reference rejects it."""
    if loss not in cases.LOSSES or cases.LOSSES[loss][1] is None:
        known = sorted(k for k, (_, g) in cases.LOSSES.items() if g is not None)
        raise ValueError(f"loss must be one of {known}, got {loss!r}")
    args = {"input": np.asarray(input), "target": np.asarray(target)}
    for key, value in options.items():
        args[key] = np.asarray(value) if isinstance(value, (list, tuple, np.ndarray)) \
            else value
    if args["input"].dtype.kind != "f":
        raise ValueError(f"input must be floating point, got dtype {args['input'].dtype}")
    args["input"] = args["input"].astype(np.float64)
    for key in ("weight", "pos_weight"):
        if isinstance(args.get(key), np.ndarray):
            args[key] = args[key].astype(np.float64)
    if args["target"].dtype.kind == "f":
        args["target"] = args["target"].astype(np.float64)
    wanted = tuple(dtypes or DTYPES)
    unknown = sorted(set(wanted) - set(DTYPES))
    if unknown:
        raise ValueError(f"dtypes must be among {DTYPES}, got {unknown}")
    if id is None:
        digest = zlib.crc32(json.dumps(golden.Case(
            "", loss, [], [], args, [], None, {}).to_json(), sort_keys=True).encode())
        id = f"user-{loss.replace('_', '-')}-{digest:08x}"
    definition = cases.Definition(id, loss, tuple(dict.fromkeys(
        [*clauses, *_clauses(loss, args)])), args, wanted)
    try:
        return cases.realize(definition)
    except cases.GenerationError as exc:
        raise ValueError(f"cannot make a case: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the reference rejects these arguments: {exc}") from exc


def write_cases(path, new: list[Case]) -> None:
    """Write ``new`` to the golden file ``path``, keeping its other cases (a case with
    the same id is replaced)."""
    path = Path(path)
    kept = golden.load_file(path) if path.exists() else []
    ids = {c.id for c in new}
    all_cases = [c for c in kept if c.id not in ids] + list(new)
    losses = {c.loss for c in all_cases}
    name = losses.pop() if len(losses) == 1 else "mixed"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(golden.dumps(name, all_cases), encoding="utf-8")


def parse_value(text: str):
    """A command-line option value: JSON (numbers, true/false/null, lists), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
