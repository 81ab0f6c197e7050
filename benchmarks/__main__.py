"""python -m benchmarks: time and memory of wce's losses against their peers.

See benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks import harness, registry, report

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "latest.json"
DEFAULT_PLOT = HERE / "results" / "latest.png"

MIN_TIME, QUICK_MIN_TIME = 0.1, 0.005


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """``"8192x1000,8192x1024x32768"`` -> ``[(8192, 1000), (8192, 1024, 32768)]``."""
    shapes = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            shape = tuple(int(d) for d in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad shape {item!r}; expected NxC or NxDxV, e.g. 8192x1000")
        if len(shape) < 2 or min(shape) < 1:
            raise argparse.ArgumentTypeError(
                f"bad shape {item!r}; expected NxC or NxDxV, e.g. 8192x1000")
        shapes.append(shape)
    if not shapes:
        raise argparse.ArgumentTypeError("no shapes given")
    return shapes


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _modes(text: str) -> list[str]:
    modes = _names(text)
    unknown = [m for m in modes if m not in registry.MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(
            f"bad mode(s) {', '.join(map(repr, unknown)) or repr(text)}; expected some of "
            f"{', '.join(registry.MODES)}")
    return modes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time and memory of wce's losses against their peers (forward+"
                    "backward, backward alone, inference), as ratios within one run. "
                    "Each loss family has its own shapes and "
                    "rounds (--list shows them).")
    p.add_argument("--quick", action="store_true",
                   help="each family's tiny shapes and few rounds: a smoke test, not a "
                        "measurement")
    p.add_argument("--goal-shapes", action="store_true",
                   help="only the shapes the goals are stated for (families without goal "
                        "shapes are left out)")
    p.add_argument("--shapes", type=parse_shapes, metavar="NxC[,NxDxV...]",
                   help="shapes to run instead of each family's grid; a family runs those "
                        "its cases take (N x C, or N x D x V for lce)")
    p.add_argument("--rounds", type=int, metavar="K",
                   help="interleaved rounds per shape (default: the family's)")
    p.add_argument("--min-time", type=float, metavar="SECONDS",
                   help=f"least duration of one measurement (default {MIN_TIME}, "
                        f"{QUICK_MIN_TIME} with --quick); fast calls are repeated to reach it")
    p.add_argument("--only", choices=("jax", "torch"),
                   help="only this framework's cases")
    p.add_argument("--family", type=_names, metavar="NAME[,NAME...]",
                   help="only these loss families; see --list")
    p.add_argument("--cases", type=_names, metavar="NAME[,NAME...]",
                   help="only these cases (their baselines and references are added); "
                        "see --list")
    p.add_argument("--modes", type=_modes, default=list(registry.MODES),
                   metavar="MODE[,MODE...]",
                   help=f"what each call runs: {', '.join(registry.MODES)} (default: all "
                        "three, interleaved in the same rounds)")
    p.add_argument("--device", choices=registry.DEVICES, default="cpu",
                   help="where the inputs live and the cases run (default cpu; gpu: JAX's "
                        "GPU backend and torch's cuda device)")
    p.add_argument("--dtype", choices=registry.DTYPES, default="float32",
                   help="the floating dtype of the inputs (default float32); the agreement "
                        "check uses SPEC.md's tolerance for it")
    p.add_argument("--torch-threads", type=int, metavar="N",
                   help="torch.set_num_threads(N) before measuring (default: torch's own "
                        "default, left alone)")
    p.add_argument("--list", action="store_true", help="list the families and cases and exit")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH",
                   help="where to write the results (default benchmarks/results/latest.json)")
    p.add_argument("--plot", type=Path, default=DEFAULT_PLOT, metavar="PATH",
                   help="where to write the PNG plot (default benchmarks/results/latest.png)")
    p.add_argument("--no-plot", action="store_true", help="write no plot")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def plan(families, cases, args) -> list[tuple]:
    """``(family, its cases, shapes, rounds)`` for each family with something to run."""
    out = []
    for family in families:
        mine = [c for c in cases if c.family == family.name]
        if not mine:
            continue
        if args.shapes:
            shapes = [s for s in args.shapes if any(c.applies(s) for c in mine)]
        elif args.goal_shapes:
            shapes = list(family.goal_shapes)
        else:
            shapes = list(family.quick_shapes if args.quick else family.shapes)
        rounds = args.rounds or (family.quick_rounds if args.quick else family.rounds)
        if shapes:
            out.append((family, mine, shapes, rounds))
    return out


def _list(families, cases) -> None:
    for family in families:
        mine = [c for c in cases if c.family == family.name]
        if not mine:
            continue
        shapes = ", ".join(map(report.shape_str, family.shapes))
        goals = ", ".join(map(report.shape_str, family.goal_shapes)) or "none"
        print(f"{family.name}: {family.title}\n  shape {family.shape_names}; default "
              f"{shapes}; {family.rounds} rounds; goal shapes {goals}")
        for case in mine:
            base = f" (vs {case.baseline})" if case.baseline else " (baseline)"
            print(f"  {case.name:24} {case.framework:6}{base}: {case.description}")


def gpu_problem() -> str:
    """Why this machine cannot run the GPU cases (empty when JAX has a GPU backend and
    torch sees a CUDA device)."""
    problems = []
    try:
        import jax

        if not any(d.platform == "gpu" for d in jax.devices()):
            problems.append(f"JAX has no GPU device (backend {jax.default_backend()!r})")
    except Exception as err:  # no GPU backend at all raises
        problems.append(f"JAX has no GPU backend ({type(err).__name__}: {err})")
    try:
        import torch

        if not torch.cuda.is_available():
            problems.append(f"torch {torch.__version__} sees no CUDA device")
    except ImportError as err:
        problems.append(f"torch is not importable ({err})")
    return "; ".join(problems)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cases = registry.select(args.only, args.cases, args.family)
    except KeyError as err:
        print(f"python -m benchmarks: {err.args[0]}", file=sys.stderr)
        return 2
    families = registry.all_families()
    if args.list:
        _list(families, cases)
        return 0
    min_time = args.min_time if args.min_time is not None else (
        QUICK_MIN_TIME if args.quick else MIN_TIME)
    if (args.rounds is not None and args.rounds < 1) or min_time < 0:
        print("python -m benchmarks: --rounds must be >= 1 and --min-time >= 0",
              file=sys.stderr)
        return 2
    work = plan(families, cases, args)
    if not work:
        print("python -m benchmarks: nothing to run (no selected case takes these shapes)",
              file=sys.stderr)
        return 2

    registry.configure(args.device, args.dtype)
    if args.device == "gpu":
        problem = gpu_problem()
        if problem:
            print(f"python -m benchmarks: --device gpu: {problem}", file=sys.stderr)
            return 3
    if args.torch_threads is not None:
        if args.torch_threads < 1:
            print("python -m benchmarks: --torch-threads must be >= 1", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.torch_threads)

    started = time.monotonic()

    def progress(message):
        if not args.quiet:
            print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr,
                  flush=True)

    rows = []
    for family, mine, shapes, rounds in work:
        progress(f"{family.name}: {len(mine)} cases, {len(shapes)} shapes, {rounds} rounds")
        rows += harness.run(mine, shapes, rounds=rounds, min_time=min_time,
                            warmup=family.warmup, modes=args.modes, progress=progress)
    ran = [family for family, *_ in work]
    print(report.format_report(rows, ran, {f.name: r for f, _, _, r in work}))
    settings = {"argv": sys.argv[1:] if argv is None else list(argv), "quick": args.quick,
                "goal_shapes_only": args.goal_shapes, "rounds": args.rounds,
                "min_time_s": min_time, "only": args.only, "family": args.family,
                "cases": [c.name for c in cases], "torch_threads": args.torch_threads,
                "modes": args.modes, "device": args.device, "dtype": args.dtype,
                "families": {f.name: {"shapes": [list(s) for s in shapes], "rounds": r,
                                      "warmup": f.warmup}
                             for f, _, shapes, r in work},
                "wall_s": round(time.monotonic() - started, 1)}
    report.write_json(args.json, rows, cases, settings, ran)
    print(f"\nwrote {args.json}")
    if not args.no_plot:
        report.write_plot(args.plot, rows, ran)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
