"""python -m benchmarks: the quick run end to end, the statistics and the torch memory
measure. No assertion here depends on how fast anything ran."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

for module in ("jax", "optax", "torch", "matplotlib"):
    pytest.importorskip(module)

from benchmarks import harness, registry  # noqa: E402
from benchmarks.__main__ import build_parser, parse_shapes, plan  # noqa: E402


def test_quick_run_writes_table_json_and_plot(tmp_path):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--quiet", "--json", str(out_json),
         "--plot", str(out_png)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out_png.stat().st_size > 0 and out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    cases, families = registry.all_cases(), registry.all_families()
    expected = {(shape, case.name, mode) for family in families
                for shape in family.quick_shapes for case in cases
                if case.family == family.name for mode in registry.MODES}
    gpu_only = {"lce/liger", "lce/cce"}  # skipped on the CPU
    # every family runs at least one JAX and one PyTorch case
    assert {(c.family, c.framework) for c in cases} == {
        (f.name, fw) for f in families for fw in ("jax", "torch")}
    lines = proc.stdout.splitlines()
    for shape, name, mode in expected:
        case = next(c for c in cases if c.name == name)
        row = [l for l in lines if l.split()[:3] == ["x".join(map(str, shape)), name, mode]]
        assert len(row) == 1, f"no table row for {name} {mode} at {shape}:\n{proc.stdout}"
        if name in gpu_only:
            assert "skipped: " in row[0], row[0]
            continue
        assert " ± " in row[0], row[0]
        if case.baseline is not None:
            assert case.baseline in row[0].split()
        if case.reference is not None:
            assert " ok " in row[0], row[0]  # the agrees column
    for family in families:
        assert any(l.startswith(f"== {family.name}: ") for l in lines), family.name

    doc = json.loads(out_json.read_text())
    assert doc["settings"]["quick"] is True
    assert set(doc["cases"]) == {c.name for c in cases}
    assert set(doc["families"]) == {f.name for f in families}
    assert doc["settings"]["modes"] == list(registry.MODES)
    assert (doc["settings"]["device"], doc["settings"]["dtype"]) == ("cpu", "float32")
    rows = {(tuple(r["shape"]), r["case"], r["mode"]): r for r in doc["rows"]}
    assert set(rows) == expected
    for (shape, name, mode), r in rows.items():
        if name in gpu_only:
            assert r["status"] == "skipped", r
            continue
        assert r["status"] == "ok", r
        rounds = doc["settings"]["families"][r["family"]]["rounds"]
        assert len(r["times_s"]) == rounds and r["mean_s"] > 0
        assert r["memory_bytes"] is not None and r["memory_fraction"] >= 0
        assert r["ratio"] is not None
        assert r["elements"] == math.prod(r["logits_shape"])
        if doc["cases"][name]["reference"]:
            agreement = r["agreement"]
            assert agreement["agree"] is True and agreement["reference"] == \
                doc["cases"][name]["reference"]
            assert agreement["dtype"] == "float32"
            # each mode compares what it computes
            assert set(agreement["max_rel_diff"]) >= (
                {"loss"} if mode == "inference" else {"d_" + n for n in ("logits",)}
                if name == "wce_jax" and mode == "backward" else set())
            assert ("loss" in agreement["max_rel_diff"]) == (mode != "backward")
            assert all(0 <= d <= 1e-5 for d in agreement["max_rel_diff"].values()), r
    # deterministic measures: the naive JAX version and torch keep logits-sized buffers
    ce = next(f for f in families if f.name == "ce")
    for shape in ce.quick_shapes:
        assert rows[(shape, "jnp_naive", "fwd+bwd")]["memory_fraction"] >= 1.0
        assert rows[(shape, "wce_jax", "fwd+bwd")]["memory_fraction"] < 0.1
        assert rows[(shape, "torch_F", "fwd+bwd")]["memory_fraction"] == pytest.approx(
            3.0, abs=0.01)
        # inference keeps no logits-sized gradient: torch's log-softmax output only
        assert rows[(shape, "torch_F", "inference")]["memory_fraction"] == pytest.approx(
            1.0, abs=0.01)
        # every ratio is against the baseline of the same mode
        for mode in registry.MODES:
            r, base = rows[(shape, "wce_jax", mode)], rows[(shape, "optax", mode)]
            assert r["ratio"] == pytest.approx(r["mean_s"] / base["mean_s"])
    # the fused linear+cross-entropy: both gradients, the logits are N x V
    (lce_shape,) = next(f for f in families if f.name == "lce").quick_shapes
    lce = rows[(lce_shape, "lce/wce_jax", "fwd+bwd")]
    assert lce["logits_shape"] == [lce_shape[0], lce_shape[2]]
    assert set(lce["agreement"]["max_rel_diff"]) == {"loss", "d_hidden", "d_weight"}
    assert set(rows[(lce_shape, "lce/wce_torch", "backward")]["agreement"][
        "max_rel_diff"]) == {"d_hidden", "d_weight"}


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
    fused = harness.Row(shape=(4, 2, 3), case="f", framework="jax", baseline="b",
                        logits_shape=(4, 3), times_s=[1.0, 1.0], memory_bytes=1,
                        goal_memory_ratio=0.125)
    harness._summarise([base, fused])
    assert fused.elements == 12 and fused.goals() == {"memory_ratio": True}


def test_selection_adds_baselines_and_references_and_rejects_unknown_names():
    names = [c.name for c in registry.select(names=["wce_torch"])]
    assert names == ["torch_F", "wce_torch"]
    assert [c.name for c in registry.select(names=["wce_jax"])] == [
        "optax", "wce_jax", "jnp_naive"]  # its baseline and its reference
    assert {c.framework for c in registry.select(only="jax")} == {"jax"}
    assert [c.name for c in registry.select(only="torch", families=["lce"])] == [
        "lce/torch_unfused", "lce/wce_torch", "lce/liger", "lce/cce"]
    with pytest.raises(KeyError, match="nosuch"):
        registry.select(names=["nosuch"])
    with pytest.raises(KeyError, match="nosuch"):
        registry.select(families=["nosuch"])
    assert parse_shapes("8192x1000, 8192x1024x32768") == [(8192, 1000), (8192, 1024, 32768)]


def test_families_have_their_own_shapes_and_the_plan_follows_the_options():
    families = {f.name: f for f in registry.all_families()}
    assert {"ce", "nll", "bcel", "bce", "softmax_focal", "sigmoid_focal", "lce"} <= set(families)
    for family in families.values():
        assert family.quick_shapes and family.shapes
    assert families["lce"].goal_shapes == ((8192, 1024, 32768),)
    cases = registry.all_cases()

    def planned(*argv):
        args = build_parser().parse_args(list(argv))
        return {f.name: (shapes, rounds) for f, _, shapes, rounds in
                plan(registry.all_families(), registry.select(args.only, args.cases,
                                                              args.family), args)}

    assert planned("--goal-shapes") == {
        "ce": ([(8192, 1000), (2048, 32000)], families["ce"].rounds),
        "lce": ([(8192, 1024, 32768)], families["lce"].rounds)}
    assert planned("--family", "lce", "--goal-shapes", "--rounds", "2") == {
        "lce": ([(8192, 1024, 32768)], 2)}
    # a three-dimensional shape is run by the families whose cases take it
    assert set(planned("--shapes", "64x8x256")) == {"lce"}
    assert set(planned("--shapes", "64x100")) == set(families) - {"lce"}
    quick = planned("--quick")
    assert all(quick[f] == (list(families[f].quick_shapes), families[f].quick_rounds)
               for f in families)
    assert all(c.applies(s) for c in cases for s in families[c.family].shapes)


def test_a_case_that_disagrees_with_its_reference_is_an_error_row_with_the_numbers():
    import numpy as np

    def constant(value):
        return registry.Case(
            f"c{value}", "torch", setup=lambda s, m: registry.Step(lambda: value),
            memory=lambda s, m: None, modes=(registry.FWD_BWD,),
            baseline=None if value == 1.0 else "c1.0",
            reference=None if value == 1.0 else "c1.0",
            outputs=lambda result: {"loss": np.float32(result),
                                    "d_x": np.full(3, result, np.float32)})

    rows = harness.run_shape([constant(1.0), constant(1.0 + 3e-6), constant(1.001)], (2, 3),
                             rounds=1, min_time=0.0)
    close, far = rows[1], rows[2]
    assert close.status == "ok" and close.agreement["agree"] is True
    assert close.agreement["reference"] == "c1.0"
    assert close.agreement["max_rel_diff"]["d_x"] == pytest.approx(3e-6, rel=0.1)
    assert far.status == "error" and "disagrees with c1.0" in far.note and not far.times_s
    assert far.agreement["max_rel_diff"]["loss"] == pytest.approx(1e-3, rel=1e-3)
    nan = harness.agreement({"x": np.array([1.0, np.nan])}, {"x": np.array([1.0, 2.0])})
    assert nan["agree"] is False


def test_agreement_is_conformances_comparison_with_the_specs_tolerance():
    import numpy as np

    from conformance import clauses, compare

    f32 = clauses.tolerances()["float32"]
    # An all-zero expected value (a gradient that vanishes): the relative difference is
    # the absolute one, as conformance reports it (not infinity), and only atol applies.
    zeros = np.zeros(4)
    for got in (zeros + f32.atol / 2, zeros + f32.atol * 2, np.array([0, 0, 0, np.inf])):
        found = harness.agreement({"d_x": got}, {"d_x": zeros})
        want = compare.compare(got, zeros, "float32")
        assert found["agree"] is want.ok
        assert found["max_abs_diff"]["d_x"] == want.abs_err
        assert found["max_rel_diff"]["d_x"] == want.rel_err
    assert harness.agreement({"d_x": zeros + f32.atol / 2}, {"d_x": zeros})["agree"]
    assert harness.agreement({"d_x": zeros + f32.atol / 2},
                             {"d_x": zeros})["max_rel_diff"]["d_x"] == f32.atol / 2
    assert not harness.agreement({"d_x": zeros + f32.atol * 2}, {"d_x": zeros})["agree"]
    # the tolerance is SPEC.md's for the dtype asked for
    bf16 = clauses.tolerances()["bfloat16"]
    assert bf16.rtol > f32.rtol
    close = {"loss": np.array(1.0 + bf16.rtol / 2)}
    assert not harness.agreement(close, {"loss": np.array(1.0)})["agree"]
    found = harness.agreement(close, {"loss": np.array(1.0)}, "bfloat16")
    assert found["agree"] and (found["rtol"], found["atol"]) == (bf16.rtol, bf16.atol)
    # infinities of opposite sign disagree, as in conformance
    assert not harness.agreement({"x": np.array([np.inf])}, {"x": np.array([-np.inf])})[
        "agree"]


def test_an_unavailable_or_broken_case_is_a_row_not_a_crash():
    def missing(shape, mode):
        raise registry.Unavailable("not here")

    def broken(shape, mode):
        raise ZeroDivisionError("boom")

    one = dict(memory=lambda s, m: None, modes=(registry.FWD_BWD,))
    cases = [registry.Case("gone", "torch", setup=missing, baseline=None, **one),
             registry.Case("bad", "torch", setup=broken, baseline="gone", **one),
             registry.Case("fine", "torch", setup=lambda s, m: registry.Step(lambda: 1),
                           baseline=None, **one)]
    rows = harness.run_shape(cases, (2, 3), rounds=2, min_time=0.0)
    status = {r.case: (r.status, r.note) for r in rows}
    assert status["gone"] == ("skipped", "not here")
    assert status["bad"][0] == "error" and "ZeroDivisionError: boom" in status["bad"][1]
    assert status["fine"] == ("ok", "") and len(rows[2].times_s) == 2


def test_a_backward_step_times_only_its_run_and_modes_pair_with_their_own_baseline():
    import time

    slow_forward = registry.Step(prepare=lambda: time.sleep(0.02) or 5,
                                 run=lambda state: state + 1)
    assert harness._call(slow_forward, lambda r: r)[0] == 6
    assert harness._timed(slow_forward, lambda r: r, 3) < 0.02  # the prepare is untimed

    def case(name, baseline, seconds):
        def setup(shape, mode):
            pause = seconds[mode]
            return registry.Step(lambda: time.sleep(pause))
        return registry.Case(name, "torch", setup=setup, memory=lambda s, m: None,
                             baseline=baseline)

    rows = harness.run_shape(
        [case("base", None, {"fwd+bwd": 0.004, "backward": 0.002, "inference": 0.001}),
         case("mine", "base", {"fwd+bwd": 0.004, "backward": 0.002, "inference": 0.004})],
        (2, 3), rounds=2, min_time=0.0, warmup=1)
    got = {(r.case, r.mode): r for r in rows}
    assert set(got) == {(c, m) for c in ("base", "mine") for m in registry.MODES}
    assert got[("mine", "inference")].ratio > 2  # against the baseline's inference
    assert got[("mine", "fwd+bwd")].ratio < 2


def test_gpu_check_dry_run_on_the_cpu_and_says_when_there_is_no_gpu(tmp_path):
    from benchmarks import gpu_check
    from conformance import clauses

    script = ROOT / "benchmarks" / "gpu_check.sh"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHON"] = sys.executable
    if gpu_check.gpu_problem():
        proc = subprocess.run([str(script), "--out", str(tmp_path / "gpu")], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == gpu_check.NO_GPU == 3, proc.stderr
        assert "NO GPU" in proc.stderr and not (tmp_path / "gpu").exists()
    proc = subprocess.run([str(script), "--dry-run", "--out", str(tmp_path / "dry")],
                          cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tmp_path / "dry" / "gpu_check.md").read_text()
    assert table.strip() in proc.stdout
    for impl in ("wce_jax", "wce_torch"):
        for dtype in ("float32", "bfloat16"):
            line = next(l for l in table.splitlines() if l.startswith(f"| {impl} | {dtype} |"))
            passed, failed = (int(x) for x in line.split("|")[3:5])
            assert passed == len(gpu_check.DRY_CASES) and failed == 0, line
    for case in ("wce_jax", "wce_torch", "lce/wce_jax", "lce/wce_torch"):
        for mode in registry.MODES:
            assert any(l.startswith(f"| {case} | ") and f"| {mode} |" in l and
                       l.rstrip().endswith("| ok |") for l in table.splitlines()), (case, mode)
    lce = json.loads((tmp_path / "dry" / "lce.json").read_text())
    assert lce["settings"]["dtype"] == "bfloat16"
    assert {(r["case"], r["status"]) for r in lce["rows"]} == {
        (c, "ok") for c in ("lce/jax_unfused", "lce/wce_jax", "lce/torch_unfused",
                            "lce/wce_torch")}
    bf16 = clauses.tolerances()["bfloat16"]
    assert all(r["agreement"]["rtol"] == bf16.rtol for r in lce["rows"] if r["agreement"])
