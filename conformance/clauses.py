"""Read spec/SPEC.md: its clauses, their torch marks, and the tolerance table.

SPEC.md is the single source of these facts; nothing here restates them.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from importlib import resources
from pathlib import Path

DTYPES = ("float64", "float32", "bfloat16", "float16")

_CLAUSE = re.compile(r"^\*\*\[([A-Z][A-Z0-9-]*)\]\*\* \*torch: (same|differs|n/a)([^*]*)\*")
_REFERENCE = re.compile(r"\[([A-Z][A-Z0-9-]*)\]")
_NUMBER = r"\s*([0-9.e+-]+)\s*\|"
_TOLERANCE = re.compile(r"^\|\s*(" + "|".join(DTYPES) + r")\s*\|" + _NUMBER + _NUMBER)


@dataclasses.dataclass(frozen=True)
class Clause:
    id: str
    torch: str  # "same", "differs" or "n/a"
    torch_note: str  # why, for "differs"
    text: str  # the clause's paragraph as written


@dataclasses.dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


def spec_dir() -> Path:
    """The folder holding SPEC.md and cases/ (installed as the ``wce_spec`` package)."""
    return Path(str(resources.files("wce_spec")))


@functools.lru_cache(maxsize=None)
def _text() -> str:
    return (spec_dir() / "SPEC.md").read_text(encoding="utf-8")


def _paragraphs(text: str):
    block: list[str] = []
    for line in text.splitlines():
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


@functools.lru_cache(maxsize=None)
def clauses() -> dict[str, Clause]:
    """Every clause of SPEC.md by id, in document order."""
    found: dict[str, Clause] = {}
    for paragraph in _paragraphs(_text()):
        match = _CLAUSE.match(paragraph)
        if not match:
            continue
        clause_id, torch, note = match.groups()
        if clause_id in found:
            raise ValueError(f"SPEC.md defines clause {clause_id} twice")
        note = " ".join(note.lstrip(":").split()).rstrip(".")
        found[clause_id] = Clause(clause_id, torch, note, " ".join(paragraph.split()))
    return found


@functools.lru_cache(maxsize=None)
def referenced_ids() -> frozenset[str]:
    """Every ``[ID]`` that SPEC.md mentions, defined or not."""
    return frozenset(_REFERENCE.findall(_text()))


@functools.lru_cache(maxsize=None)
def tolerances() -> dict[str, Tolerance]:
    """The per-dtype tolerance table of spec section 1."""
    table = {}
    for line in _text().splitlines():
        match = _TOLERANCE.match(line)
        if match:
            dtype, rtol, atol = match.groups()
            table[dtype] = Tolerance(float(rtol), float(atol))
    missing = set(DTYPES) - set(table)
    if missing:
        raise ValueError(f"SPEC.md's tolerance table lacks {sorted(missing)}")
    return table


def torch_deviations() -> dict[str, str]:
    """Clauses where the spec departs from torch on purpose, with the reason."""
    return {c.id: c.torch_note for c in clauses().values() if c.torch == "differs"}
