"""python -m benchmarks.gpu_check: the GPU run, in one go and under ten minutes.

On a machine with an NVIDIA GPU, JAX with CUDA and PyTorch with CUDA installed, from
the working tree (``PYTHONPATH=.``, nothing installed by this script), it runs

1. the golden cases of spec/cases/ for ``wce_jax`` and ``wce_torch`` on the GPU in
   float32 and bfloat16 (``python -m conformance run --impl ... --dtype ...`` with
   ``JAX_PLATFORMS=cuda`` and ``WCE_TORCH_DEVICE=cuda``);
2. the loss families at the goal shapes (N x C = 8192 x 1000 and 2048 x 32000) in
   float32 on the GPU, in the three modes, each against its peers in the same run;
3. ``linear_cross_entropy`` at N=16384, D=4096, V=131072 in bfloat16 against the
   unfused computation, and against Liger Kernel's and Cut Cross-Entropy's fused
   losses where they are importable;

and prints one markdown table (also written to ``OUT/gpu_check.md``, beside the JSON of
each step). Every step has its share of a 570-second budget; a step that runs out is
reported as timed out.

Exit status: 0 every step ran and passed; 1 a conformance failure, a benchmark error
row or a step that failed or timed out; 2 bad arguments; 3 no GPU here (the message
says what is missing: the ``nvidia-smi`` device, JAX's GPU backend or torch's CUDA).

``--dry-run`` checks the plumbing on the CPU instead: two golden cases, the
cross-entropy and linear cross-entropy cases on tiny shapes, one round. It is what
the test suite runs; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 570.0
NO_GPU = 3

FAMILIES = "ce,nll,bcel,bce,softmax_focal,sigmoid_focal"
GOAL_SHAPES = "8192x1000,2048x32000"
LCE_SHAPE = "16384x4096x131072"
DRY_SHAPES, DRY_LCE_SHAPE = "64x100", "32x16x256"
DRY_CASES = ("bce-weight-none-mean", "lce-plain-mean")  # a few golden cases' ids
DRY_BENCHMARKS = "wce_jax,wce_torch,lce/wce_jax,lce/wce_torch"  # and their peers

START = [time.monotonic()]


def gpu_problem() -> str:
    """What is missing for the GPU run, or ""."""
    try:
        found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                               timeout=30)
        if found.returncode != 0 or "GPU" not in found.stdout:
            return "nvidia-smi lists no GPU"
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"no usable nvidia-smi ({type(err).__name__}: {err})"
    from benchmarks.__main__ import gpu_problem as frameworks_problem

    return frameworks_problem()


def _run(argv: list[str], env: dict, timeout: float, log: Path) -> tuple[int, str, float]:
    """``(exit status, stdout, seconds)``; status None when it ran out of time."""
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, text=True,
                              capture_output=True, timeout=max(timeout, 1.0))
        status, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as expired:
        status, out, err = None, _text(expired.stdout), _text(expired.stderr)
    log.write_text(f"$ python {' '.join(argv)}\n{out}\n--- stderr\n{err}")
    return status, out, time.monotonic() - start


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def conformance_rows(dry_run: bool, env: dict, deadline: float, out: Path) -> list[dict]:
    """One ``python -m conformance run`` per implementation (both dtypes; one for both
    in a dry run), counted from its JSON records by implementation and dtype."""
    impls, dtypes = ("wce_jax", "wce_torch"), ("float32", "bfloat16")
    groups = [impls] if dry_run else [(impl,) for impl in impls]
    rows = []
    for k, group in enumerate(groups):
        path = out / f"conformance-{'-'.join(group)}.json"
        argv = ["-m", "conformance", "run", "--only-failures", "--json", str(path)]
        for name, values in (("--impl", group), ("--dtype", dtypes),
                             ("--case", DRY_CASES if dry_run else ())):
            for value in values:
                argv += [name, value]
        # an equal share of what is left of the 40% of the budget given to conformance
        end = deadline if dry_run else min(deadline, START[0] + 0.4 * BUDGET_S)
        share = (end - time.monotonic()) / (len(groups) - k)
        status, text, seconds = _run(argv, env, share, path.with_suffix(".txt"))
        records = json.loads(path.read_text())["records"] if path.exists() and \
            status is not None else []
        for impl in group:
            for dtype in dtypes:
                mine = [r["status"] for r in records
                        if r["impl"] == impl and r["dtype"] == dtype]
                row = {"impl": impl, "dtype": dtype, "status": status, "seconds": seconds,
                       "passed": mine.count("pass"), "failed": mine.count("FAIL"),
                       "deviations": mine.count("deviates"), "na": mine.count("n/a")}
                row["ok"] = status in (0, 1) and row["failed"] == 0 and row["passed"] > 0
                rows.append(row)
    return rows


def benchmark_runs(dry_run: bool) -> list[tuple[str, list[str]]]:
    device = "cpu" if dry_run else "gpu"
    quick = ["--rounds", "1", "--min-time", "0", "--cases", DRY_BENCHMARKS] if dry_run else []
    return [
        ("families", ["--device", device, "--family", FAMILIES, "--shapes",
                      DRY_SHAPES if dry_run else GOAL_SHAPES,
                      *(quick or ["--rounds", "5", "--min-time", "0.05"])]),
        ("lce", ["--device", device, "--dtype", "bfloat16", "--family", "lce", "--shapes",
                 DRY_LCE_SHAPE if dry_run else LCE_SHAPE, *(quick or ["--rounds", "3"])]),
    ]


def benchmark_rows(dry_run: bool, env: dict, deadline: float, out: Path) -> tuple[list, list]:
    steps, rows = [], []
    runs = benchmark_runs(dry_run)
    for k, (name, argv) in enumerate(runs):
        path = out / f"{name}.json"
        share = (deadline - time.monotonic()) / (len(runs) - k)
        status, _, seconds = _run(["-m", "benchmarks", *argv, "--json", str(path),
                                   "--no-plot", "--quiet"], env, share, out / f"{name}.txt")
        doc = json.loads(path.read_text()) if status == 0 and path.exists() else None
        errors = [r for r in doc["rows"] if r["status"] == "error"] if doc else []
        steps.append({"step": name, "status": status, "seconds": seconds,
                      "ok": status == 0 and doc is not None and not errors,
                      "errors": [f"{r['case']} {r['mode']}: {r['note']}" for r in errors]})
        if doc:
            framework = {name: c["framework"] for name, c in doc["cases"].items()}
            for r in doc["rows"]:
                if r["case"].split("/")[-1].startswith("wce_"):
                    r["peer_ratios"] = {
                        name: v["ratio"] for name, v in r["context_ratios"].items()
                        if framework.get(name) == r["framework"] and name != r["baseline"]}
                    rows.append(r)
    return steps, rows


def _ratio(r: dict) -> str:
    if r["status"] != "ok":
        return f"{r['status']}: {r['note'][:60]}"
    return "-" if r["ratio"] is None else f"{r['ratio']:.2f} ± {r['ratio_std']:.2f}"


def markdown(where: str, conformance: list, steps: list, rows: list) -> str:
    lines = [f"## GPU check ({where})", "",
             "| conformance | dtype | passed | failed | documented deviations | n/a | s |",
             "|---|---|---|---|---|---|---|"]
    for c in conformance:
        state = "" if c["status"] is not None else " (timed out)"
        lines.append(f"| {c['impl']}{state} | {c['dtype']} | {c['passed']} | "
                     f"{c['failed']} | {c['deviations']} | {c['na']} | {c['seconds']:.0f} |")
    lines += ["", "| case | shape | mode | time ms | ratio ± std | vs | mem ratio | "
              "ratio vs other peers | agrees |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        others = ", ".join(f"{name}: {v:.2f}" for name, v in r["peer_ratios"].items())
        mean = "-" if r.get("mean_s") is None else f"{r['mean_s'] * 1e3:.3g}"
        memory = "-" if r.get("memory_ratio") is None else f"{r['memory_ratio']:.3g}"
        agreement = r.get("agreement") or {}
        agrees = {True: "ok", False: "NO"}.get(agreement.get("agree"), "-")
        lines.append(f"| {r['case']} | {'x'.join(map(str, r['shape']))} | {r['mode']} | "
                     f"{mean} | {_ratio(r)} | {r['baseline']} | {memory} | {others or '-'} "
                     f"| {agrees} |")
    lines += ["", "| step | status | s | errors |", "|---|---|---|---|"]
    for s in steps:
        status = "timed out" if s["status"] is None else f"exit {s['status']}"
        lines.append(f"| {s['step']} | {status} | {s['seconds']:.0f} | "
                     f"{'; '.join(s['errors']) or '-'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true",
                   help="check the plumbing on the CPU: a few cases, tiny shapes")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu",
                   help="folder for the table, the JSON and the logs")
    args = p.parse_args(argv)
    started = START[0] = time.monotonic()
    deadline = started + BUDGET_S
    if not args.dry_run:
        problem = gpu_problem()
        if problem:
            print(f"gpu_check: NO GPU: {problem}. Nothing was run (exit {NO_GPU}); "
                  f"`--dry-run` checks the plumbing on the CPU.", file=sys.stderr)
            return NO_GPU
    args.out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if args.dry_run else "cuda"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        JAX_PLATFORMS=device, WCE_TORCH_DEVICE=device)
    conformance = conformance_rows(args.dry_run, env, deadline, args.out)
    steps, rows = benchmark_rows(args.dry_run, env, deadline, args.out)
    where = "dry run on the CPU, tiny shapes: figures mean nothing" if args.dry_run else (
        _device_name())
    table = markdown(where, conformance, steps, rows)
    (args.out / "gpu_check.md").write_text(table + "\n")
    print(table)
    print(f"\n{time.monotonic() - started:.0f} s; wrote {args.out / 'gpu_check.md'}")
    ok = all(c["ok"] for c in conformance) and all(s["ok"] for s in steps)
    return 0 if ok else 1


def _device_name() -> str:
    found = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                           capture_output=True, text=True)
    return found.stdout.strip().splitlines()[0] if found.stdout.strip() else "GPU"


if __name__ == "__main__":
    sys.exit(main())
