"""Numbers the README states are recomputed here, so the README cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conformance import clauses, reference
from conformance.golden import load_cases

README_PATH = Path(__file__).resolve().parent.parent / "README.md"
README = README_PATH.read_text()


def _row(label):
    line = next(l for l in README.splitlines() if l.startswith(f"| {label} |"))
    return [float(v) for v in line.strip("|").split("|")[1:]]


def test_which_weights_table():
    counts = np.array([500.0, 120.0, 30.0, 5.0, 1.0])
    rows = {
        "`inverse`": reference.class_weights(counts, "inverse"),
        "`balanced`": reference.class_weights(counts, "balanced"),
        "`max`": reference.class_weights(counts, "max"),
        "`inverse_sqrt`": reference.class_weights(counts, "inverse_sqrt"),
        "`effective_number` (β = 0.999)": reference.class_weights(counts, "effective_number"),
        "`median_frequency`": reference.class_weights(counts, "median_frequency"),
        '`effective_number`, `normalize="classes"`': reference.class_weights(
            counts, "effective_number", normalize="classes"),
        '`inverse`, `normalize="samples"`': reference.class_weights(
            counts, "inverse", normalize="samples"),
    }
    for label, weights in rows.items():
        stated = _row(label)
        expected = list(weights) + [weights @ counts / counts.sum()]
        np.testing.assert_allclose(stated, expected, rtol=1e-3, err_msg=label)  # 4 digits


def test_counts_of_clauses_and_cases():
    assert f"{len(clauses.clauses())} clauses" in README
    assert f"{len(load_cases())} golden cases" in README


def test_peer_counts_match_the_compatibility_matrix():
    """The README's summary of the peers quotes docs/compatibility.md's totals."""
    matrix = (README_PATH.parent / "docs" / "compatibility.md").read_text()
    readme = " ".join(README.split())
    totals = {}
    for line in matrix.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`") and cells[2].isdigit():
            totals[cells[0].strip("`")] = tuple(int(c) for c in cells[2:])
    assert f"all {totals['wce_jax'][0]} runs" in readme and totals["wce_jax"][1] == 0
    assert f"all {totals['wce_torch'][0]} it supports" in readme
    assert totals["wce_torch"][1] == 0 and totals["torch"][1] == 0
    assert f"({totals['torch'][2]} runs:" in readme
    for peer in ("optax", "keras", "onnxruntime"):
        passed, failed = totals[peer][:2]
        assert f"{passed} passed, {failed} failed" in readme, peer
