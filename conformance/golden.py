"""Golden case files: lossless JSON encoding, loading, and validation.

A file ``spec/cases/<loss>.json`` holds::

    {"format": "wce-golden/1", "loss": "<loss>", "cases": [<case>, ...]}

with one case per line. A case is::

    {"id": str, "loss": str, "clauses": [clause ids], "dtypes": [dtypes it applies to],
     "args": {argument: array or JSON scalar},   # keyword arguments of the loss
     "keep_dtype": [arguments not converted to the run dtype],
     "shards": S,   # optional [DP-GLOBAL]: input and target carry S shards on axis 0
     "grad_output": array,                        # cotangent of the output (value cases)
     "tangents": {argument: array},               # optional, spec section 18: then
                                                  # expected has "jvp_output" and
                                                  # "hvp_<argument>" for each
     "expected": {"output": array, "grad_input": array,  # no gradient: neither this
                                                          # nor grad_output; other
                                                          # arguments: grad_<name>
                  "zero_output": bool array, "zero_grad": bool array,  # optional
                  "warns": warning class name,    # optional
                  "result_dtype": "default"}      # optional: the framework's default
                                                  # float dtype, not the run dtype
              or {"error": "ValueError" | "TypeError", "mentions": argument name,
                  "traced": "error" | {"output": array, "grad_input": array}}}

An array is ``{"dtype": str, "shape": [int, ...], "data": [flat values]}``. Floats are
written with Python's shortest round-trip repr, so float64 values survive exactly;
non-finite values are the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, which
keeps the files valid JSON for readers in any language.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from conformance import clauses

FORMAT = "wce-golden/1"
ERROR_KINDS = ("ValueError", "TypeError")
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class GoldenFormatError(ValueError):
    """A golden file or case does not follow the format above."""


def encode_array(a: np.ndarray) -> dict:
    a = np.asarray(a)
    if a.dtype.kind == "f":
        data = [_encode_float(float(v)) for v in a.ravel()]
    elif a.dtype.kind == "b":
        data = [bool(v) for v in a.ravel()]
    elif a.dtype.kind in "iu":
        data = [int(v) for v in a.ravel()]
    else:
        raise TypeError(f"cannot store an array of dtype {a.dtype}")
    return {"dtype": str(a.dtype), "shape": list(a.shape), "data": data}


def _encode_float(v: float):
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def decode_array(obj: dict) -> np.ndarray:
    dtype = np.dtype(obj["dtype"])
    data = obj["data"]
    if dtype.kind == "f":
        data = [_NONFINITE[v] if isinstance(v, str) else v for v in data]
    return np.array(data, dtype=dtype).reshape(obj["shape"])


def _is_array(obj: Any) -> bool:
    return isinstance(obj, dict) and set(obj) == {"dtype", "shape", "data"}


def encode_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return encode_array(value)
    if isinstance(value, (np.floating, float)):
        return _encode_float(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def decode_value(obj: Any) -> Any:
    if _is_array(obj):
        return decode_array(obj)
    if isinstance(obj, str) and obj in _NONFINITE:
        return _NONFINITE[obj]
    return obj


@dataclasses.dataclass
class Case:
    """A golden case, decoded."""

    id: str
    loss: str
    clauses: list[str]
    dtypes: list[str]
    args: dict[str, Any]
    keep_dtype: list[str]
    grad_output: np.ndarray | None
    expected: dict[str, Any]
    source: str = ""  # file it came from, for messages
    shards: int | None = None  # [DP-GLOBAL]: input and target hold shards on axis 0
    class_shards: int | None = None  # [CP-GLOBAL]: split the class axis into this many
    tangents: dict[str, np.ndarray] | None = None  # section 18: directions of JVP and HVP

    @property
    def is_error(self) -> bool:
        return "error" in self.expected

    def to_json(self) -> dict:
        expected = {k: encode_value(v) if k != "traced" else _encode_traced(v)
                    for k, v in self.expected.items()}
        obj = {
            "id": self.id,
            "loss": self.loss,
            "clauses": list(self.clauses),
            "dtypes": list(self.dtypes),
            "args": {k: encode_value(v) for k, v in self.args.items()},
            "keep_dtype": list(self.keep_dtype),
            "expected": expected,
        }
        if self.grad_output is not None:
            obj["grad_output"] = encode_array(self.grad_output)
        if self.shards is not None:
            obj["shards"] = self.shards
        if self.class_shards is not None:
            obj["class_shards"] = self.class_shards
        if self.tangents is not None:
            obj["tangents"] = {k: encode_array(v) for k, v in self.tangents.items()}
        return obj


def _encode_traced(traced):
    if traced == "error":
        return traced
    return {k: encode_array(v) for k, v in traced.items()}


def _decode_case(obj: dict, source: str) -> Case:
    where = f"{source}: case {obj.get('id', '<no id>')!r}"
    try:
        expected = dict(obj["expected"])
        for key, value in expected.items():
            if key == "traced" and value != "error":
                expected[key] = {k: decode_array(v) for k, v in value.items()}
            else:
                expected[key] = decode_value(value)
        case = Case(
            id=obj["id"],
            loss=obj["loss"],
            clauses=list(obj["clauses"]),
            dtypes=list(obj["dtypes"]),
            args={k: decode_value(v) for k, v in obj["args"].items()},
            keep_dtype=list(obj.get("keep_dtype", [])),
            grad_output=decode_array(obj["grad_output"]) if "grad_output" in obj else None,
            expected=expected,
            source=source,
            shards=obj.get("shards"),
            class_shards=obj.get("class_shards"),
            tangents=({k: decode_array(v) for k, v in obj["tangents"].items()}
                      if "tangents" in obj else None),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise GoldenFormatError(f"{where}: malformed ({type(exc).__name__}: {exc})") from exc
    _validate(case, where)
    return case


def _validate(case: Case, where: str) -> None:
    unknown = sorted(set(case.dtypes) - set(clauses.DTYPES))
    if unknown or not case.dtypes:
        raise GoldenFormatError(f"{where}: dtypes {case.dtypes} must be a non-empty subset "
                                f"of {clauses.DTYPES}")
    if not case.clauses:
        raise GoldenFormatError(f"{where}: names no clause")
    if case.is_error:
        if case.expected["error"] not in ERROR_KINDS:
            raise GoldenFormatError(f"{where}: error kind must be one of {ERROR_KINDS}")
        if "mentions" not in case.expected or "traced" not in case.expected:
            raise GoldenFormatError(f"{where}: an error case needs 'mentions' and 'traced'")
    elif "output" not in case.expected or (
            any(k.startswith("grad_") for k in case.expected) != (case.grad_output is not None)):
        raise GoldenFormatError(f"{where}: a value case needs output, and grad_<argument> "
                                f"with grad_output or neither")
    derivatives = {k for k in case.expected if k.startswith(("jvp_", "hvp_"))}
    wanted = set() if case.tangents is None else (
        {"jvp_output"} | {f"hvp_{k}" for k in case.tangents})
    if derivatives != wanted or (wanted and case.grad_output is None):
        raise GoldenFormatError(f"{where}: tangents need jvp_output, hvp_<argument> for each "
                                f"tangent and grad_output; got {sorted(derivatives)}")


def case_files(directory: Path | None = None) -> list[Path]:
    directory = directory or clauses.spec_dir() / "cases"
    return sorted(directory.glob("*.json"))


def load_file(path: Path) -> list[Case]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GoldenFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise GoldenFormatError(f"{path}: expected a JSON object with format {FORMAT!r}")
    if not isinstance(obj.get("cases"), list):
        raise GoldenFormatError(f"{path}: 'cases' must be a list")
    return [_decode_case(c, path.name) for c in obj["cases"]]


def load_cases(directory: Path | None = None) -> list[Case]:
    """Every golden case, in file order; ids are unique across files."""
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for path in case_files(directory):
        for case in load_file(path):
            if case.id in seen:
                raise GoldenFormatError(
                    f"{path.name}: case {case.id!r} repeats an id from {seen[case.id]}"
                )
            seen[case.id] = path.name
            cases.append(case)
    return cases


def dumps(loss: str, cases: list[Case]) -> str:
    """The exact text of a golden file: one case per line, keys sorted."""
    lines = [json.dumps(c.to_json(), sort_keys=True, separators=(",", ":"),
                        allow_nan=False) for c in cases]
    head = json.dumps({"format": FORMAT, "loss": loss})[:-1]
    return head + ', "cases": [\n' + ",\n".join(lines) + "\n]}\n"
