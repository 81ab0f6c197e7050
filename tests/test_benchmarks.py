"""python -m benchmarks: the quick run end to end, the statistics and the torch memory
measure. No assertion here depends on how fast anything ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

for module in ("jax", "optax", "torch", "matplotlib"):
    pytest.importorskip(module)

from benchmarks import harness, registry  # noqa: E402
from benchmarks.__main__ import QUICK_GRID, parse_shapes  # noqa: E402


def _wce_torch_available() -> bool:
    try:
        from wce_torch import cross_entropy  # noqa: F401
    except ImportError:
        return False
    return True


def test_quick_run_writes_table_json_and_plot(tmp_path):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--quiet", "--json", str(out_json),
         "--plot", str(out_png)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out_png.stat().st_size > 0 and out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    cases = registry.all_cases()
    lines = proc.stdout.splitlines()
    for shape in QUICK_GRID:
        for case in cases:
            row = [l for l in lines if l.split()[:2] == ["x".join(map(str, shape)), case.name]]
            assert len(row) == 1, f"no table row for {case.name} at {shape}:\n{proc.stdout}"
            # every row is measured; wce_torch's say why not while it does not exist
            if case.name.startswith("wce_torch") and not _wce_torch_available():
                assert "skipped: wce_torch.cross_entropy is not available" in row[0]
            else:
                assert " ± " in row[0], row[0]
            if case.baseline is not None and "skipped:" not in row[0]:
                assert case.baseline in row[0].split()

    doc = json.loads(out_json.read_text())
    assert doc["settings"]["quick"] is True
    assert set(doc["cases"]) == {c.name for c in cases}
    rows = {(tuple(r["shape"]), r["case"]): r for r in doc["rows"]}
    assert set(rows) == {(s, c.name) for s in QUICK_GRID for c in cases}
    for (shape, name), r in rows.items():
        if name.startswith("wce_torch") and not _wce_torch_available():
            assert r["status"] == "skipped" and r["mean_s"] is None, r
            continue
        assert r["status"] == "ok", r
        assert len(r["times_s"]) == doc["settings"]["rounds"] and r["mean_s"] > 0
        assert r["memory_bytes"] is not None and r["memory_fraction"] >= 0
        assert r["ratio"] is not None
    # deterministic measures: the naive JAX version and torch keep logits-sized buffers
    for shape in QUICK_GRID:
        assert rows[(shape, "jnp_naive")]["memory_fraction"] >= 1.0
        assert rows[(shape, "wce_jax")]["memory_fraction"] < 0.1
        assert rows[(shape, "torch_F")]["memory_fraction"] == pytest.approx(3.0, abs=0.01)


def test_torch_peak_memory_is_deterministic_and_counts_from_the_step():
    import torch
    import torch.nn.functional as F

    from benchmarks.memory import allocation_timeline, peak_of, torch_peak_bytes

    x = torch.randn(64, 10, requires_grad=True)
    y = torch.randint(0, 10, (64,))

    def step():
        (grad,) = torch.autograd.grad(F.cross_entropy(x, y), x)
        return grad

    peaks = {torch_peak_bytes(step) for _ in range(2)}
    assert len(peaks) == 1
    # log-softmax, its gradient and the input's gradient are live at once
    assert peaks.pop() == pytest.approx(3 * x.numel() * 4, rel=0.01)
    timeline = allocation_timeline(step)
    assert sum(timeline) == 0 and peak_of(timeline) > 0  # the result is dropped inside
    assert peak_of([100, -100, 40, 30, -70]) == 100


def test_ratio_pairs_rounds_and_rows_summarise():
    ratio, per_round, spread = harness.compare([2.0, 4.0], [1.0, 2.0])
    assert ratio == 2.0 and per_round == [2.0, 2.0] and spread == 0.0
    base = harness.Row(shape=(4, 3), case="b", framework="jax", baseline=None,
                       times_s=[1.0, 2.0], memory_bytes=10, logits_bytes=48)
    row = harness.Row(shape=(4, 3), case="a", framework="jax", baseline="b",
                      times_s=[1.5, 1.0], memory_bytes=5, logits_bytes=48,
                      goal_time_ratio=1.0, goal_memory_fraction=0.1)
    harness._summarise([base, row])
    assert row.ratio == pytest.approx(2.5 / 3.0)
    assert row.round_ratios == [1.5, 0.5]
    assert row.memory_ratio == 0.5 and row.memory_fraction == pytest.approx(5 / 48)
    assert row.goals() == {"time": True, "memory": False}
    assert base.ratio == 1.0 and base.context_ratios == {}


def test_selection_adds_baselines_and_rejects_unknown_names():
    names = [c.name for c in registry.select(names=["wce_torch"])]
    assert names == ["torch_F", "wce_torch"]
    assert {c.framework for c in registry.select(only="jax")} == {"jax"}
    with pytest.raises(KeyError, match="nosuch"):
        registry.select(names=["nosuch"])
    assert parse_shapes("8192x1000, 2048x32000") == [(8192, 1000), (2048, 32000)]


def test_an_unavailable_or_broken_case_is_a_row_not_a_crash():
    def missing(shape):
        raise registry.Unavailable("not here")

    def broken(shape):
        raise ZeroDivisionError("boom")

    cases = [registry.Case("gone", "torch", setup=missing, memory=lambda s: None,
                           baseline=None),
             registry.Case("bad", "torch", setup=broken, memory=lambda s: None,
                           baseline="gone"),
             registry.Case("fine", "torch", setup=lambda s: (lambda: 1),
                           memory=lambda s: None, baseline=None)]
    rows = harness.run_shape(cases, (2, 3), rounds=2, min_time=0.0)
    status = {r.case: (r.status, r.note) for r in rows}
    assert status["gone"] == ("skipped", "not here")
    assert status["bad"][0] == "error" and "ZeroDivisionError: boom" in status["bad"][1]
    assert status["fine"] == ("ok", "") and len(rows[2].times_s) == 2
