"""Every clause of SPEC.md has a golden case, and every case names only real clauses."""

from __future__ import annotations

import re

import numpy as np

from conformance import clauses


def test_every_clause_has_a_case(cases):
    covered = {c for case in cases for c in case.clauses}
    missing = [c for c in clauses.clauses() if c not in covered]
    assert not missing, f"clauses with no golden case: {missing}"


def test_every_case_names_existing_clauses(cases):
    known = set(clauses.clauses())
    unknown = {(case.id, c) for case in cases for c in case.clauses if c not in known}
    assert not unknown, f"cases naming clauses SPEC.md does not define: {sorted(unknown)}"


def test_spec_references_resolve():
    undefined = clauses.referenced_ids() - set(clauses.clauses())
    assert not undefined, f"SPEC.md mentions undefined clauses: {sorted(undefined)}"


def test_every_clause_states_torch_behaviour():
    """Every clause heading of SPEC.md, found with a loose pattern, carries a torch mark
    that clauses.clauses() reads: a heading with a missing or misspelt mark ("*torch:
    similar*", "*Torch: same*") would otherwise drop out of the clause list unseen."""
    text = (clauses.spec_dir() / "SPEC.md").read_text(encoding="utf-8")
    headings = re.findall(r"^\*\*\[([A-Z][A-Z0-9-]*)\]\*\*", text, flags=re.MULTILINE)
    marks = re.findall(r"^\*\*\[([A-Z][A-Z0-9-]*)\]\*\*\s*\*\s*torch\s*:\s*([^\s*.:(]*)", text,
                       flags=re.MULTILINE | re.IGNORECASE)
    parsed = clauses.clauses()
    assert len(headings) == len(marks) == len(parsed) > 0, (len(headings), len(marks),
                                                             len(parsed))
    for clause_id, mark in marks:
        assert parsed[clause_id].torch == mark.strip(), (clause_id, mark)
    for clause in parsed.values():
        if clause.torch == "differs":
            assert clause.torch_note, f"{clause.id} differs from torch without saying why"


def test_case_count_and_spread(cases):
    """The foundation's floor: 150 cases, C from 2 to 1000, K-dim up to 3 spatial dims."""
    assert len(cases) >= 150
    class_counts = {case.args["input"].shape[1] for case in cases
                    if case.loss in ("cross_entropy", "nll_loss") and not case.is_error
                    and case.args["input"].ndim >= 2}
    assert min(class_counts) == 2 and max(class_counts) == 1000
    spatial = {case.args["input"].ndim - 2 for case in cases if "CE-KDIM" in case.clauses}
    assert {1, 2, 3} <= spatial
    finite_inputs = [x[np.isfinite(x)] for x in (c.args["input"] for c in cases
                                                 if "input" in c.args) if x.dtype.kind == "f"]
    assert max(np.abs(x).max(initial=0.0) for x in finite_inputs) >= 1e4


def test_tolerances_cover_every_dtype():
    table = clauses.tolerances()
    assert set(table) == set(clauses.DTYPES)
    assert all(t.rtol > 0 and t.atol >= 0 for t in table.values())
