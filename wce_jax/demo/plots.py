"""PNG figures of a comparison run and of a parity run.

Figures are built with :class:`matplotlib.figure.Figure` directly, not pyplot, so
nothing here selects a backend or keeps global state; classes are always shown from the
most to the least frequent in the training split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

SMOOTHING_STEPS = 20  # the loss curves are running means over this many steps


def training_loss(runs: dict, path: Path) -> None:
    """One panel per method, one line per seed: the running mean of the batch loss.

    Losses of different methods are on different scales (weights, focal modulation), so
    each panel has its own y axis.
    """
    fig, axes = _panels(len(runs), (3.2, 2.6))
    smoothing = min(SMOOTHING_STEPS, len(next(iter(runs.values()))[0].losses))
    window = np.ones(smoothing) / smoothing
    for ax, (name, method_runs) in zip(axes, runs.items()):
        for run in method_runs:
            ax.plot(np.convolve(run.losses, window, mode="valid"), lw=1,
                    label=f"seed {run.seed}")
        ax.set(title=name, yscale="log", xlabel="step")
    axes[0].legend(fontsize="small")
    axes[0].set_ylabel("training loss")
    fig.suptitle(f"Training loss (running mean over {smoothing} steps)")
    fig.savefig(path, dpi=90)


def per_class_recall(results: dict, path: Path) -> None:
    """Grouped bars: test recall of every class (mean over seeds) for every method."""
    data = results["data"]
    order = data["classes_by_count"]
    methods = results["methods"]
    width = 0.8 / len(methods)
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(order))
    for i, (name, summary) in enumerate(methods.items()):
        recall = np.asarray(summary["per_class_recall"])[order]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, recall, width, label=name)
    ax.set_xticks(x, [f"digit {c}\nn={data['train_counts'][c]}" for c in order])
    ax.set(ylabel="test recall", ylim=(0, 1.05),
           title=f"Per-class test recall, classes by training count "
                 f"(imbalance {data['imbalance_ratio']:.0f}:1, "
                 f"mean over {len(results['config']['seeds'])} seeds)")
    fig.legend(loc="outside lower center", ncols=len(methods), fontsize="small")
    fig.savefig(path, dpi=80)


def confusion_matrices(results: dict, path: Path) -> None:
    """One row-normalised confusion matrix per method (counts summed over seeds)."""
    order = results["data"]["classes_by_count"]
    methods = results["methods"]
    fig, axes = _panels(len(methods), (2.8, 2.8))
    for ax, (name, summary) in zip(axes, methods.items()):
        confusion = np.asarray(summary["confusion"], dtype=np.float64)[np.ix_(order, order)]
        image = ax.imshow(confusion / confusion.sum(axis=1, keepdims=True), vmin=0, vmax=1,
                          cmap="Blues")
        ax.set_xticks(range(len(order)), order, fontsize="x-small")
        ax.set_yticks(range(len(order)), order, fontsize="x-small")
        ax.set(title=name, xlabel="predicted", ylabel="true")
    fig.colorbar(image, ax=axes[:len(methods)].tolist(), shrink=0.6,
                 label="fraction of the true class")
    fig.suptitle("Test confusion matrices, classes by training count")
    fig.savefig(path, dpi=90)


def _panels(count: int, size: tuple[float, float], columns: int = 4):
    """A figure with a grid of ``count`` panels of ``size`` inches, four to a row; the
    grid's unused cells are hidden."""
    rows = -(-count // columns)
    fig = Figure(figsize=(size[0] * columns, size[1] * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_axis_off()
    return fig, axes


def parity(result, path: Path) -> None:
    """The per-step loss of both frameworks, and their relative difference against the
    tolerance; ``result`` is a :class:`wce_jax.demo.parity.Parity`."""
    torch_losses, jax_losses = result.torch_losses, result.jax_losses
    steps = np.arange(torch_losses.size)
    fig = Figure(figsize=(7, 5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(steps, torch_losses, lw=2, label="PyTorch + wce_torch")
    top.plot(steps, jax_losses, lw=1, ls="--", label="Flax NNX + wce_jax")
    top.set(ylabel="loss", title=f"Same network, parameters and batches "
                                 f"({result.dtype}, SGD)")
    top.legend()
    relative = result.relative_loss_diffs
    differ = relative > 0  # equal losses have no place on a log scale
    bottom.semilogy(steps[differ], relative[differ], ".", label="steps where they differ")
    bottom.axhline(result.tolerance, color="C3", label=f"tolerance {result.tolerance:.0e}")
    bottom.set(xlabel="step", ylabel="|torch - jax| / |torch|",
               title=f"losses equal to the last bit at {np.sum(~differ)} of "
                     f"{steps.size} steps")
    bottom.legend(loc="center right")
    fig.savefig(path, dpi=90)
