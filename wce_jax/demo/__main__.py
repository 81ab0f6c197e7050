"""Command line: ``python -m wce_jax.demo [options]`` and ``python -m wce_jax.demo parity``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from wce_jax.demo.config import DEFAULT, QUICK

DEFAULT_OUT = Path("wce-demo-out")


def main(argv: list[str] | None = None) -> int:
    """Run the comparison (no command) or the parity run; return the exit status."""
    args = _parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "parity":
        return _parity(args)
    return _compare(args)


def _compare(args) -> int:
    from wce_jax.demo import metrics, plots, train

    config = QUICK if args.quick else DEFAULT
    if args.seeds is not None:
        config = dataclasses.replace(config, seeds=tuple(range(args.seeds)))
    if args.steps is not None:
        config = dataclasses.replace(config, steps=args.steps)
    results, runs = train.compare(config)
    data = results["data"]
    print(f"digits, training counts {data['train_counts']} (imbalance "
          f"{data['imbalance_ratio']:.0f}:1), test counts {data['test_counts']}")
    print(f"{len(config.seeds)} seeds x {config.steps} steps per method, "
          f"{results['wall_time_s']:.0f} s; scores on the test split, mean ± std over seeds; "
          f"minority recall = mean recall of the {config.minority_k} rarest training "
          f"classes {data['minority_classes']}\n")
    print(metrics.table(results))
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plots.training_loss(runs, args.out / "loss.png")
    plots.per_class_recall(results, args.out / "recall.png")
    plots.confusion_matrices(results, args.out / "confusion.png")
    print(f"\nwrote results.json, loss.png, recall.png and confusion.png to {args.out}")
    return 0


def _parity(args) -> int:
    from wce_jax.demo import parity, plots

    result = parity.run(args.steps, args.dtype)
    every = max(1, args.steps // 10)
    print(f"every {every} steps (all of them in parity-{args.dtype}.json):")
    print(f"{'step':>5}  {'PyTorch loss':>22}  {'Flax loss':>22}  relative difference")
    for i in sorted(set(range(0, args.steps, every)) | {args.steps - 1}):
        print(f"{i:>5}  {result.torch_losses[i]:>22.17g}  {result.jax_losses[i]:>22.17g}  "
              f"{result.relative_loss_diffs[i]:.2e}")
    name = f"parity-{args.dtype}"
    plots.parity(result, args.out / f"{name}.png")
    (args.out / f"{name}.json").write_text(json.dumps({
        "dtype": args.dtype, "steps": args.steps,
        "max_relative_loss_diff": result.max_relative_loss_diff,
        "max_abs_param_diff": result.max_param_diff, "tolerance": result.tolerance,
        "torch_losses": result.torch_losses.tolist(),
        "jax_losses": result.jax_losses.tolist()}, indent=1) + "\n")
    verdict = "within" if result.passed else "OVER"
    print(f"\n{args.dtype}, {args.steps} steps: max relative loss difference "
          f"{result.max_relative_loss_diff:.2e} ({verdict} the tolerance "
          f"{result.tolerance:.0e}), max |parameter difference| after training "
          f"{result.max_param_diff:.2e}")
    print(f"wrote {name}.png and {name}.json to {args.out}")
    return 0 if result.passed else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wce_jax.demo",
        description="Train a Flax NNX MLP with optax on a long-tailed subsample of "
                    "scikit-learn's digits and compare unweighted cross-entropy, class-"
                    "weight schemes, focal losses and balanced resampling on an untouched "
                    "test split (macro-F1, balanced accuracy, minority-class recall).",
        epilog="The parity command takes its own options, after its name: "
               "python -m wce_jax.demo parity --help.")
    parser.add_argument("--quick", action="store_true",
                        help=f"{len(QUICK.seeds)} seeds x {QUICK.steps} steps per method "
                             f"instead of {len(DEFAULT.seeds)} x {DEFAULT.steps}")
    parser.add_argument("--seeds", type=_positive, metavar="N",
                        help="train every method with seeds 0..N-1")
    parser.add_argument("--steps", type=_positive, metavar="N",
                        help="training steps per run")
    _out(parser)
    commands = parser.add_subparsers(dest="command", title="commands")
    parity = commands.add_parser(
        "parity", help="the same training in PyTorch and in Flax, step by step",
        description="Train the same MLP in PyTorch (wce_torch.cross_entropy) and in Flax "
                    "NNX (wce_jax.cross_entropy) from identical parameters on identical "
                    "batches with SGD, class weights, ignore_index=-100 and "
                    "label_smoothing=0.1; print and plot the per-step losses and report "
                    "their largest relative difference (exit status 1 above 1e-10 in "
                    "float64, 1e-4 in float32) and the largest parameter difference.")
    parity.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parity.add_argument("--steps", type=_positive, default=200, metavar="N",
                        help="SGD steps (default: 200)")
    _out(parity)
    return parser


def _out(parser):
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help=f"where to write the JSON and PNG files (default: {DEFAULT_OUT})")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
