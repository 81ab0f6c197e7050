"""The table, the JSON file and the plot of a benchmark run."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import sys
from pathlib import Path
from typing import Optional, Sequence

from benchmarks.harness import OK, Row
from benchmarks.registry import MODES, SETTINGS, Case, Family, Shape

MEMORY_KINDS = {
    "xla-temp": "temporary buffers of the compiled program (inputs and outputs excluded)",
    "torch-peak": "CPU allocator peak beyond the inputs (the returned gradients included); "
                  "on a GPU, the CUDA allocator's",
}

COLUMNS = ("shape", "case", "mode", "time ms (mean ± std)", "min ms", "ratio (± std)", "vs",
           "mem/logits",
           "mem kind", "mem ratio", "agrees", "goals")


def shape_str(shape: Shape) -> str:
    return "x".join(map(str, shape))


def _ms(seconds: Optional[float], digits: int = 3) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.{digits}g}"


def _fraction(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value == 0 or value >= 0.01:
        return f"{value:.3f}"
    return f"{value:.1e}"


def _goals(row: Row) -> str:
    met = row.goals()
    words = []
    if "time" in met:
        words.append(f"time<={row.goal_time_ratio:g} " + ("ok" if met["time"] else "MISS"))
    if "memory" in met:
        words.append(f"mem<={row.goal_memory_fraction:g}x " + ("ok" if met["memory"] else "MISS"))
    if "memory_ratio" in met:
        words.append(f"mem ratio<={row.goal_memory_ratio:.3g} "
                     + ("ok" if met["memory_ratio"] else "MISS"))
    return ", ".join(words)


def _agrees(row: Row) -> str:
    """``ok 3e-07``: agreement with the reference and the largest norm-wise relative
    difference over the loss and the gradients; ``-`` without a reference."""
    a = row.agreement
    if not a or a.get("agree") is None:
        return "-"
    worst = max(a["max_rel_diff"].values(), default=0.0)
    return f"{'ok' if a['agree'] else 'NO'} {worst:.0e}"


def in_table_order(rows: Sequence[Row]) -> list[Row]:
    """Shape by shape as run; within a shape, mode by mode (:data:`MODES`), the cases in
    registration order."""
    shapes = list(dict.fromkeys(tuple(r.shape) for r in rows))
    return sorted(rows, key=lambda r: (shapes.index(tuple(r.shape)),
                                       MODES.index(r.mode) if r.mode in MODES else 99))


def table_rows(rows: Sequence[Row], goal_shapes: Sequence[Shape] = ()) -> list[tuple]:
    out = []
    for row in in_table_order(rows):
        shape = shape_str(row.shape) + (" *" if tuple(row.shape) in goal_shapes else "")
        if row.status != OK:
            out.append((shape, row.case, row.mode, f"{row.status}: {row.note}"))
            continue
        if row.baseline is None:
            ratio, vs, mem_ratio = "base", "", "base" if row.memory_bytes is not None else "-"
        else:
            ratio = ("-" if row.ratio is None else
                     f"{row.ratio:.2f} ± {row.ratio_std:.2f}")
            vs = row.baseline
            mem_ratio = "-" if row.memory_ratio is None else f"{row.memory_ratio:.3g}"
        out.append((shape, row.case, row.mode, f"{_ms(row.mean_s)} ± {_ms(row.std_s, 2)}",
                    _ms(row.min_s), ratio, vs,
                    _fraction(row.memory_fraction), row.memory_kind or "-", mem_ratio,
                    _agrees(row), _goals(row)))
    return out


def format_table(rows: Sequence[Row], goal_shapes: Sequence[Shape] = ()) -> str:
    body = table_rows(rows, goal_shapes)
    full = [r for r in body if len(r) == len(COLUMNS)]
    widths = [max([len(COLUMNS[i])] + [len(r[i]) for r in full]) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    previous = None
    for r in body:
        if previous is not None and r[:3:2] != previous:
            lines.append("")
        previous = r[:3:2]
        if len(r) == len(COLUMNS):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        else:  # skipped or failed: shape, case, mode, then the note across the others
            lines.append("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + f"  {r[3]}")
    return "\n".join(lines)


def format_context(rows: Sequence[Row]) -> str:
    """Each shape's other baselines against its first (cross-framework context)."""
    lines = []
    for row in in_table_order(rows):
        if row.baseline is None and row.mean_s is not None:
            first = next(r for r in rows if r.shape == row.shape and r.baseline is None
                         and r.mode == row.mode and r.mean_s is not None)
            if first is not row and first.case in row.context_ratios:
                r = row.context_ratios[first.case]
                lines.append(f"{shape_str(row.shape)} {row.mode}: {row.case} takes "
                             f"{r['ratio']:.2f} ± {r['ratio_std']:.2f} x the time of "
                             f"{first.case}")
    return "\n".join(lines)


def format_report(rows: Sequence[Row], families: Sequence[Family] = (),
                  rounds: Optional[dict] = None) -> str:
    """One section per family (its title, its table, its baselines against each other),
    then the legend. ``rounds`` maps family names to their number of rounds."""
    parts = []
    known = {f.name: f for f in families}
    for name in dict.fromkeys(r.family for r in rows):
        mine = [r for r in rows if r.family == name]
        family = known.get(name)
        header = f"== {name}" + (f": {family.title}" if family else "")
        details = []
        if family:
            details.append(f"shape {family.shape_names}")
        if rounds and name in rounds:
            details.append(f"{rounds[name]} rounds")
        parts += [header + (f" ({', '.join(details)})" if details else ""), ""]
        parts.append(format_table(mine, family.goal_shapes if family else ()))
        context = format_context(mine)
        if context:
            parts += ["baselines against each other:", context]
        parts.append("")
    if any(family.goal_shapes for family in families):
        parts.append("* a shape the goals are stated for")
    parts.append("mode: fwd+bwd (the loss and its gradients), backward (the gradients "
                 "alone, after an untimed forward pass), inference (the loss alone: "
                 "torch.no_grad(), no VJP in JAX)")
    parts.append("ratio: mean time / the baseline's ('vs') mean time in the same mode, in "
                 "the same run; ± the std of the per-round ratios")
    parts.append("mem/logits: memory beyond the inputs / the logits' bytes; mem ratio: "
                 "memory / the baseline's; mem kind:")
    parts += [f"  {kind}: {text}" for kind, text in MEMORY_KINDS.items()]
    parts.append(f"agrees: loss and gradients equal to the reference's by conformance's "
                 f"comparison and SPEC.md's {SETTINGS.dtype} tolerance, and the largest "
                 f"max|diff| / max|ref| "
                 f"(see the JSON)")
    return "\n".join(parts)


def environment() -> dict:
    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "machine": platform.machine(), "processor": platform.processor()}
    try:
        import os

        info["cpu_count"] = os.cpu_count()
    except Exception:  # pragma: no cover
        pass
    for module in ("numpy", "jax", "jaxlib", "optax", "torch"):
        try:
            info[module] = __import__(module).__version__
        except Exception:
            info[module] = None
    try:
        import jax

        info["jax_backend"] = jax.default_backend()
    except Exception:
        pass
    try:
        import torch

        info["torch_num_threads"] = torch.get_num_threads()
    except Exception:
        pass
    return info


def _clean(value):
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, rows: Sequence[Row], cases: Sequence[Case], settings: dict,
               families: Sequence[Family] = ()) -> None:
    records = []
    for row in rows:
        record = dataclasses.asdict(row)
        record["shape"] = list(row.shape)
        record["logits_shape"] = list(row.logits_shape or row.shape)
        record["elements"] = row.elements
        record["goals_met"] = row.goals()
        records.append(record)
    doc = {
        "settings": settings,
        "environment": environment(),
        "memory_kinds": MEMORY_KINDS,
        "families": {f.name: {"title": f.title, "shape_names": f.shape_names,
                              "logits_names": f.logits_names,
                              "goal_shapes": [list(s) for s in f.goal_shapes]}
                     for f in families},
        "cases": {c.name: {"family": c.family, "framework": c.framework,
                           "baseline": c.baseline, "reference": c.reference,
                           "description": c.description, "memory_kind": c.memory_kind,
                           "goal_time_ratio": c.goal_time_ratio,
                           "goal_memory_fraction": c.goal_memory_fraction,
                           "goal_memory_ratio": c.goal_memory_ratio,
                           "modes": list(c.modes)}
                  for c in cases},
        "rows": records,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(doc), indent=1) + "\n")


def write_plot(path: Path, rows: Sequence[Row], families: Sequence[Family] = ()) -> None:
    """One row of panels per family: the forward+backward time, its ratio against the
    baseline and its memory fraction, each against the number of logits (N*C, or N*V).
    The other modes are in the table and the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    known = {f.name: f for f in families}
    rows = [r for r in rows if r.mode == MODES[0]]  # forward+backward
    names = list(dict.fromkeys(r.family for r in rows))
    height = 4.2 * len(names)
    fig, axes = plt.subplots(len(names), 3, figsize=(17, height), squeeze=False)
    for family, panels in zip(names, axes):
        _plot_family(panels, [r for r in rows if r.family == family], known.get(family),
                     family)
    # Fixed margins: tight_layout draws the whole figure once more, seconds for 8 rows.
    fig.subplots_adjust(left=0.05, right=0.99, wspace=0.22, top=1 - 0.45 / height,
                        bottom=0.6 / height, hspace=0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_family(panels, rows: Sequence[Row], family: Optional[Family], name: str) -> None:
    import matplotlib.ticker

    ax_t, ax_r, ax_m = panels
    for i, case in enumerate(dict.fromkeys(r.case for r in rows)):
        mine = sorted((r for r in rows if r.case == case and r.status == OK),
                      key=lambda r: r.elements)
        if not mine:
            continue
        style = dict(color=f"C{i % 10}", marker="o", ms=4, capsize=3, label=case,
                     linestyle="-" if mine[0].framework == "jax" else "--")
        x = [r.elements for r in mine]
        ax_t.errorbar(x, [r.mean_s * 1e3 for r in mine], yerr=[r.std_s * 1e3 for r in mine],
                      **style)
        if mine[0].baseline is not None:
            ratios = [(r.elements, r.ratio, r.ratio_std) for r in mine if r.ratio is not None]
            if ratios:
                ax_r.errorbar([e for e, _, _ in ratios], [q for _, q, _ in ratios],
                              yerr=[s for _, _, s in ratios], **style)
        memory = [(r.elements, r.memory_fraction) for r in mine
                  if r.memory_fraction is not None and r.memory_fraction > 0]
        if memory:
            ax_m.plot([e for e, _ in memory], [f for _, f in memory], **{
                k: v for k, v in style.items() if k != "capsize"})
    logits = (family.logits_names if family else "N x C").replace(" x ", "·")
    xlabel = f"{logits} (logits elements)"
    ax_t.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="forward+backward time (ms)",
             title=f"{name}: time per step (mean ± std)")
    ax_r.axhline(1.0, color="gray", lw=1)
    for goal in sorted({r.goal_time_ratio for r in rows if r.goal_time_ratio}):
        ax_r.axhline(goal, color="gray", lw=1, ls=":")
    ax_r.set(xscale="log", xlabel=xlabel, ylabel="time / baseline time",
             title=f"{name}: ratio vs baseline (± std of per-round ratios)")
    for goal in sorted({r.goal_memory_fraction for r in rows if r.goal_memory_fraction}):
        ax_m.axhline(goal, color="gray", lw=1, ls=":")
    ax_m.set(xscale="log", yscale="log", xlabel=xlabel,
             ylabel="memory / logits bytes\n(jax: xla-temp, torch: torch-peak)",
             title=f"{name}: memory beyond the inputs")
    for ax in panels:
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_t.legend(fontsize="small", frameon=False)
