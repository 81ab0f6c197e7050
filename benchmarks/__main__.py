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

#: The shapes the goals are stated for.
GOAL_SHAPES = ((8192, 1000), (2048, 32000))
#: The default grid: the goal shapes and others, spread over N*C for the plot.
GRID = ((1024, 1000), (4096, 1000), (8192, 1000), (512, 32000), (1024, 32000),
        (2048, 32000))
QUICK_GRID = ((256, 100), (512, 1000))
ROUNDS, QUICK_ROUNDS = 15, 3
MIN_TIME, QUICK_MIN_TIME = 0.1, 0.005


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """``"8192x1000,2048x32000"`` -> ``[(8192, 1000), (2048, 32000)]``."""
    shapes = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            shape = tuple(int(d) for d in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad shape {item!r}; expected NxC, e.g. 8192x1000")
        if len(shape) < 2 or min(shape) < 1:
            raise argparse.ArgumentTypeError(f"bad shape {item!r}; expected NxC, e.g. 8192x1000")
        shapes.append(shape)
    if not shapes:
        raise argparse.ArgumentTypeError("no shapes given")
    return shapes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Forward+backward time and memory of wce's losses against their peers, "
                    "as ratios within one run.")
    p.add_argument("--quick", action="store_true",
                   help=f"small shapes ({', '.join(map(report.shape_str, QUICK_GRID))}) and "
                        f"{QUICK_ROUNDS} rounds: a smoke test, not a measurement")
    p.add_argument("--shapes", type=parse_shapes, metavar="NxC[,NxC...]",
                   help="shapes to run (default: a grid of "
                        f"{', '.join(map(report.shape_str, GRID))})")
    p.add_argument("--rounds", type=int, metavar="K",
                   help=f"interleaved rounds per shape (default {ROUNDS}, {QUICK_ROUNDS} "
                        "with --quick)")
    p.add_argument("--min-time", type=float, metavar="SECONDS",
                   help=f"least duration of one measurement (default {MIN_TIME}, "
                        f"{QUICK_MIN_TIME} with --quick); fast calls are repeated to reach it")
    p.add_argument("--only", choices=("jax", "torch"),
                   help="only this framework's cases")
    p.add_argument("--cases", type=lambda s: [n.strip() for n in s.split(",") if n.strip()],
                   metavar="NAME[,NAME...]",
                   help="only these cases (their baselines are added); see --list")
    p.add_argument("--torch-threads", type=int, metavar="N",
                   help="torch.set_num_threads(N) before measuring (default: torch's own "
                        "default, left alone)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH",
                   help="where to write the results (default benchmarks/results/latest.json)")
    p.add_argument("--plot", type=Path, default=DEFAULT_PLOT, metavar="PATH",
                   help="where to write the PNG plot (default benchmarks/results/latest.png)")
    p.add_argument("--no-plot", action="store_true", help="write no plot")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cases = registry.select(args.only, args.cases)
    except KeyError as err:
        print(f"python -m benchmarks: {err.args[0]}", file=sys.stderr)
        return 2
    if args.list:
        for case in cases:
            base = f" (vs {case.baseline})" if case.baseline else " (baseline)"
            print(f"{case.name:22} {case.framework:6}{base}: {case.description}")
        return 0
    shapes = args.shapes or (QUICK_GRID if args.quick else GRID)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    min_time = args.min_time if args.min_time is not None else (
        QUICK_MIN_TIME if args.quick else MIN_TIME)
    if rounds < 1 or min_time < 0:
        print("python -m benchmarks: --rounds must be >= 1 and --min-time >= 0",
              file=sys.stderr)
        return 2

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

    rows = harness.run(cases, shapes, rounds=rounds, min_time=min_time, progress=progress)
    print(report.format_report(rows, GOAL_SHAPES, rounds))
    settings = {"argv": sys.argv[1:] if argv is None else list(argv), "quick": args.quick,
                "shapes": [list(s) for s in shapes], "rounds": rounds, "min_time_s": min_time,
                "only": args.only, "cases": [c.name for c in cases],
                "torch_threads": args.torch_threads,
                "goal_shapes": [list(s) for s in GOAL_SHAPES],
                "wall_s": round(time.monotonic() - started, 1)}
    report.write_json(args.json, rows, cases, settings)
    print(f"\nwrote {args.json}")
    if not args.no_plot:
        report.write_plot(args.plot, rows)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
