"""[CP-GLOBAL] [CP-COMM] on real class-parallel engines: JAX with 8 host devices under
shard_map (meshes tp=8, tp=2, dp=2 x tp=4), against the unsplit single-device loss.
The checks run in one subprocess, tests/jax_class_parallel_checks.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def jax_report():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "jax_class_parallel_checks.py")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    return out


def test_jax_class_sharded_cross_entropy_equals_the_unsplit_loss(jax_report):
    cases = jax_report["cross_entropy"]
    assert len(cases) == 3 + 3 + 12  # tp=8, tp=2: three settings each; dp2 x tp4: all
    for case, errors in cases.items():
        assert max(errors) <= 1e-12, (case, errors)


def test_jax_class_sharded_cross_entropy_sends_two_row_all_reduces(jax_report):
    """[CP-COMM]: pmax, then one psum of the row statistics over the class axis (groups
    of 4 devices); the data-parallel mean adds one over the data axis (groups of 2)."""
    for case, counts in jax_report["all_reduces"].items():
        if case.startswith("cross_entropy/"):
            assert counts == {"4": 2, "2": 1}, (case, counts)


def test_jax_class_sharded_linear_cross_entropy_equals_the_unsplit_loss(jax_report):
    """[CP-LINEAR]: value, the full d hidden and the local rows of d weight."""
    cases = jax_report["linear_cross_entropy"]
    assert len(cases) == 3 * 3
    for case, errors in cases.items():
        assert max(errors) <= 1e-12, (case, errors)


def test_jax_class_sharded_linear_cross_entropy_all_reduces(jax_report):
    """[CP-COMM] of the forward pass: the target weights (with ``W``) once; per chunk
    (the scan's body, counted once) pmax and the row statistics; for "mean", the
    denominator and numerator over the data axis. (A gradient adds one psum of
    d hidden over the class axis.)"""
    counts = jax_report["all_reduces"]
    assert counts["linear_cross_entropy/dp2xtp4/none"] == {"4": 3}
    assert counts["linear_cross_entropy/dp2xtp4/mean"] == {"4": 3, "2": 2}
