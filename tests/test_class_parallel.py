"""[CP-GLOBAL] [CP-AXIS] on real class-parallel engines: JAX with 8 host devices under
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
torch = None  # imported by the torch tests only, so the JAX ones run without it

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
    """[CP-AXIS]: pmax, then one psum of the row statistics over the class axis (groups
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
    """[CP-AXIS] of the forward pass: the target weights (with ``W``) once; per chunk
    (the scan's body, counted once) pmax and the row statistics; for "mean", the
    denominator and numerator over the data axis. (A gradient adds one psum of
    d hidden over the class axis.)"""
    counts = jax_report["all_reduces"]
    assert counts["linear_cross_entropy/dp2xtp4/none"] == {"4": 3}
    assert counts["linear_cross_entropy/dp2xtp4/mean"] == {"4": 3, "2": 2}


# ----------------------------------------------------------------------------------
# wce_torch with real gloo processes: class_process_group, alone and with process_group.

def _rel(a, b):
    assert torch.equal(torch.isnan(a), torch.isnan(b)), (a, b)
    keep = ~torch.isnan(b)
    if not keep.any():
        return 0.0
    return float((a[keep] - b[keep]).abs().max() / b[keep].abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("world_size", [2, 4])
def test_torch_class_process_group_equals_the_unsplit_loss(world_size, tmp_path):
    """[CP-GLOBAL] [CP-LINEAR] [CP-REDUCE]: every rank's value is the unsplit loss (its
    data rank's rows for "none"); the class-sharded gradients, averaged over the data
    group as DistributedDataParallel does, are the slices of the unsplit gradients, and
    ``hidden`` gets its full gradient on every rank of the class group. The class
    weights' gradient is checked without data parallelism only: [DP-PROCESS-GROUP]
    sums the mean's denominator with a detached all-reduce."""
    global torch
    torch = pytest.importorskip("torch")
    import torch.multiprocessing as mp

    from tests import torch_class_parallel_worker as worker

    mp.spawn(worker.rank_main, args=(world_size, str(tmp_path / "init"), str(tmp_path)),
             nprocs=world_size, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]
    data = worker.problem()
    checked = 0
    for name, dp, tp in worker.meshes(world_size):
        for key in [k for k in ranks[0] if k[0] == name]:
            _, loss, setting = key
            step = worker.cross_entropy_step if loss == "cross_entropy" else worker.linear_step
            want = step(setting, *data)
            for d in range(dp):
                rows = slice(d * worker.ROWS // dp, (d + 1) * worker.ROWS // dp)
                for t in range(tp):
                    got = ranks[d * tp + t][key]
                    value = want["value"][rows] if setting[0] == "none" else want["value"]
                    assert _rel(got["value"], value) <= 1e-12, (key, d, t)
                    if loss == "linear_cross_entropy":  # the full d hidden, times dp
                        assert _rel(got["grads"][0] / dp, want["grads"][0][rows]) <= 1e-12
            for t in range(tp):
                cols = slice(t * worker.CLASSES // tp, (t + 1) * worker.CLASSES // tp)
                sharded = [g for g in want["grads"]] if loss == "cross_entropy" \
                    else [None, want["grads"][1]]
                for i, full in enumerate(sharded):
                    if full is None or (dp > 1 and loss == "cross_entropy" and i == 1):
                        continue  # (with process_group the mean's denominator is a
                        # detached all-reduce: no class-weight gradient through it)
                    part = full[:, cols] if full.dim() == 2 and loss == "cross_entropy" \
                        else full[cols]
                    mean = sum(ranks[d * tp + t][key]["grads"][i] for d in range(dp)) / dp
                    assert _rel(mean, part) <= 1e-12, (key, t, i)
            checked += 1
    assert checked == (7 if world_size == 2 else 7 + 5)


def test_class_parallel_example_matches_one_device_and_megatron_drifts(tmp_path):
    """examples/class_parallel_jax.py, shortened: the dp=2 x tp=4 curve is the
    single-device one, and Megatron's local-vocabulary smoothing depends on tp."""
    out = tmp_path / "curves.json"
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "class_parallel_jax.py"),
                          "--steps", "5", "--json", str(out)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())["max_relative_difference"]
    assert report["class_parallel_vs_single"] <= 1e-12
    assert report["megatron_tp2_vs_tp1"] > 1e-3 and report["megatron_tp4_vs_tp1"] > 1e-3
