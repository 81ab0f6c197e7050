"""The wce conformance suite: run the golden cases of spec/SPEC.md against wce_jax,
wce_torch, torch.nn.functional and other implementations (``run``), or against your own
loss function (``check``); freeze your own inputs and options as a golden case
(``make-case``); regenerate the goldens from the reference (``generate``); fuzz against
the reference (``fuzz``); write the compatibility matrix (``matrix``).

Exit status: 0 when nothing failed, 1 when a case failed, 2 for a usage error."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conformance import clauses, golden


def _generate(args) -> int:
    from conformance import cases

    directory = Path(args.out) if args.out else clauses.spec_dir() / "cases"
    built = cases.build()
    changed = []
    for loss, loss_cases in built.items():
        path = directory / f"{loss}.json"
        text = golden.dumps(loss, loss_cases)
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old != text:
            changed.append((path, old, text, loss_cases))
        if not args.check and old != text:
            directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    stale = [p for p in golden.case_files(directory) if p.stem not in built]
    total = sum(len(c) for c in built.values())
    if args.check:
        for path, old, text, _ in changed:
            print(f"{path}: would change: {_first_difference(old, text)}")
        for path in stale:
            print(f"{path}: no case definitions produce this file")
        if changed or stale:
            print("golden cases are out of date: run `python -m conformance generate`")
            return 1
        print(f"golden cases up to date: {total} cases in {len(built)} files")
        return 0
    for path in stale:
        path.unlink()
    print(f"wrote {total} cases in {len(built)} files to {directory} "
          f"({len(changed)} changed, {len(stale)} removed)")
    return 0


def _first_difference(old: str | None, new: str) -> str:
    if old is None:
        return "file missing"
    old_lines, new_lines = old.splitlines(), new.splitlines()
    for i, (a, b) in enumerate(zip(old_lines, new_lines)):
        if a != b:
            case_id = b.split('"id":"', 1)[-1].split('"', 1)[0] if '"id":"' in b else "?"
            return f"line {i + 1} (case {case_id!r}) differs"
    return f"{len(old_lines)} lines now {len(new_lines)}"


def _progress(total: int, what: str):
    """A progress bar on standard error when it is a terminal, else nothing."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=what, unit="run", file=sys.stderr, leave=False)
    return bar.update, bar.close


def _select(args):
    from conformance import workers

    all_cases = workers.load(args.cases)
    return [c for c in all_cases
            if (not getattr(args, "case", None) or any(k in c.id for k in args.case))
            and (not getattr(args, "clause", None) or set(args.clause) & set(c.clauses))]


def _report(args, records, meta) -> int:
    from conformance import runner

    out = sys.stderr if args.json == "-" else sys.stdout
    runner.print_report(records, out, verbose=args.verbose)
    if args.json:
        runner.write_json(records, args.json, meta)
        if args.json != "-":
            print(f"wrote every record to {args.json}", file=out)
    return 1 if runner.totals(records)[runner.FAIL] else 0


def _run(args) -> int:
    from conformance import adapters, runner, workers

    names = args.impl or list(adapters.OWN)
    loaded = []
    for name in names:
        try:
            loaded.append(adapters.load(name))
        except adapters.UnknownImplementation as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except adapters.Unavailable as exc:
            if args.impl:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"note: skipping {exc}", file=sys.stderr)
    try:
        selected = _select(args)
    except (golden.GoldenFormatError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dtypes = args.dtype or list(clauses.DTYPES)
    out = sys.stderr if args.json == "-" else sys.stdout
    print(f"wce conformance: {len(selected)} golden cases, {len(clauses.clauses())} clauses, "
          f"dtypes {', '.join(dtypes)}", file=out)
    for a in loaded:
        print(f"  {a.name}: {a.description}", file=out)
    jobs = args.jobs or workers.default_jobs()
    update, close = _progress(runner.count_runs(loaded, selected, dtypes), "conformance")
    try:
        if jobs > 1 and len(selected) > workers.CHUNK and workers.loadable(loaded):
            records = workers.run([a.name for a in loaded], selected, dtypes, args.cases,
                                  jobs, update)
        else:
            records = runner.run(loaded, selected, dtypes, update)
    finally:
        close()
    return _report(args, records, {"implementations": [a.name for a in loaded],
                                   "dtypes": dtypes})


def _check(args) -> int:
    from conformance import check, runner

    try:
        adapter = check.UserAdapter(args.function, args.loss, args.framework, args.layout)
        cases = [c for c in _select(args) if c.loss == args.loss]
    except check.CheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (golden.GoldenFormatError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dtypes = [d for d in (args.dtype or clauses.DTYPES) if d in adapter.dtypes]
    out = sys.stderr if args.json == "-" else sys.stdout
    print(f"checking {adapter.description} against {len(cases)} golden cases of "
          f"{args.loss}, dtypes {', '.join(dtypes)}", file=out)
    if adapter.deviations:
        print(f"  {adapter.peer}: the spec's documented departures "
              f"({', '.join(adapter.deviations)}) count as deviations", file=out)
    update, close = _progress(runner.count_runs([adapter], cases, dtypes), "check")
    try:
        records = runner.run([adapter], cases, dtypes, update)
    finally:
        close()
    return _report(args, records, {"function": args.function, "loss": args.loss,
                                   "framework": args.framework, "layout": args.layout,
                                   "dtypes": dtypes})


def _make_case(args) -> int:
    import numpy as np

    from conformance import make

    try:
        options = {k: make.parse_value(v) for k, v in (o.split("=", 1) for o in args.option)}
        arrays = {k: np.load(v) for k, v in (a.split("=", 1) for a in args.array)}
        case = make.make_case(args.loss, np.load(args.input), np.load(args.target),
                              id=args.id, dtypes=args.dtype, **arrays, **options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    make.write_cases(args.out, [case])
    print(f"wrote case {case.id!r} ({case.loss}, dtypes {', '.join(case.dtypes)}) to "
          f"{args.out}; run it with --cases {args.out}")
    return 0


def _fuzz(args) -> int:
    from conformance import adapters, fuzz

    try:
        loaded = [adapters.load(name) for name in args.impl]
    except (adapters.UnknownImplementation, adapters.Unavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = fuzz.fuzz(loaded, args.examples, args.seed, Path(args.out) if args.out else None)
    print(fuzz.summary(result))
    return 0 if result.failure is None else 1


def _matrix(args) -> int:
    from conformance import adapters, matrix, runner

    try:
        loaded, skipped = matrix.load_available(args.impl)
    except (adapters.UnknownImplementation, adapters.Unavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in skipped:
        print(f"note: skipping {note}", file=sys.stderr)
    dtypes = args.dtype or list(clauses.DTYPES)
    records = runner.run(loaded, golden.load_cases(), dtypes)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(matrix.markdown(records, loaded, dtypes), encoding="utf-8")
    runner.print_clause_summary(records)
    runner.print_totals(records)
    print(f"wrote {out}")
    return 0


def _common(p):
    """The options ``run`` and ``check`` share."""
    p.add_argument("--case", action="append", help="only cases whose id contains this")
    p.add_argument("--clause", action="append", help="only cases covering this clause")
    p.add_argument("--cases", metavar="PATH",
                   help="golden file or folder of golden files, e.g. your own from "
                        "make-case (default: the installed ones)")
    p.add_argument("--json", nargs="?", const="conformance-report.json", metavar="PATH",
                   help="also write every record as JSON to PATH; without PATH to "
                        "conformance-report.json; '-' writes it to standard output (the "
                        "report then goes to standard error)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="list every case run, not only failures and deviations")
    p.add_argument("--only-failures", action="store_true", help=argparse.SUPPRESS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write spec/cases/ from the case definitions")
    gen.add_argument("--check", action="store_true",
                     help="exit 1 if regenerating would change the committed files")
    gen.add_argument("--out", help="folder to write (default: the installed spec/cases)")
    gen.set_defaults(func=_generate)

    run = sub.add_parser("run", help="run the golden cases against implementations")
    run.add_argument("--impl", action="append",
                     help="implementation to test (repeatable); default: reference, torch, "
                          "wce_jax, wce_torch")
    run.add_argument("--dtype", action="append", choices=clauses.DTYPES,
                     help="dtype to run (repeatable); default: all")
    _common(run)
    run.add_argument("--jobs", "-j", type=int, default=0,
                     help="worker processes (default: one per core; 1 runs in this process)")
    run.set_defaults(func=_run)

    chk = sub.add_parser("check", help="run the golden cases of one loss against your "
                                       "function MODULE:FUNCTION")
    chk.add_argument("function", metavar="MODULE:FUNCTION")
    chk.add_argument("--loss", required=True,
                     help="which loss's cases: cross_entropy, nll_loss, ... (spec names)")
    chk.add_argument("--framework", default="numpy", choices=("numpy", "jax", "torch"),
                     help="what the function takes and returns (default: numpy)")
    chk.add_argument("--layout", default="channels_first",
                     choices=("channels_first", "channels_last"),
                     help="where the function wants the class axis: channels_first (axis "
                          "1, as torch.nn.functional) or channels_last (the last axis, as "
                          "wce_jax and optax); default: channels_first")
    chk.add_argument("--dtype", action="append", choices=clauses.DTYPES,
                     help="dtype to run (repeatable); default: all the framework has")
    _common(chk)
    chk.set_defaults(func=_check)

    mk = sub.add_parser("make-case", help="freeze your own inputs and options as a golden "
                                          "case, expected values from the reference")
    mk.add_argument("loss", help="spec name of the loss: cross_entropy, nll_loss, ...")
    mk.add_argument("--input", required=True, help=".npy file of the input (logits, ...), "
                                                   "class axis 1 as in torch")
    mk.add_argument("--target", required=True, help=".npy file of the target")
    mk.add_argument("--array", action="append", default=[], metavar="NAME=FILE.npy",
                    help="another array argument, e.g. weight=w.npy (repeatable)")
    mk.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                    help="a scalar option, e.g. reduction=sum, ignore_index=0, "
                         "label_smoothing=0.1 (repeatable; JSON values)")
    mk.add_argument("--id", help="case id (default: made from the loss and options)")
    mk.add_argument("--dtype", action="append", choices=clauses.DTYPES,
                    help="dtypes the case applies to (default: every one its inputs fit)")
    mk.add_argument("--out", required=True,
                    help="golden file to write, or to add the case to if it exists")
    mk.set_defaults(func=_make_case)

    fz = sub.add_parser("fuzz", help="differential testing against the reference on "
                                     "random inputs (hypothesis)")
    fz.add_argument("--impl", action="append", required=True,
                    help="implementation to fuzz (repeatable)")
    fz.add_argument("--examples", type=int, default=200, help="examples to draw")
    fz.add_argument("--seed", type=int, default=0)
    fz.add_argument("--out", default="fuzz-failures",
                    help="folder for the shrunk failing case (default: fuzz-failures)")
    fz.set_defaults(func=_fuzz)

    mx = sub.add_parser("matrix", help="run every implementation and write the "
                                       "compatibility matrix (docs/compatibility.md)")
    mx.add_argument("--impl", action="append",
                    help="implementation (repeatable); default: every one that imports")
    mx.add_argument("--dtype", action="append", choices=clauses.DTYPES,
                    help="dtype to run (repeatable); default: all")
    mx.add_argument("--out", default="docs/compatibility.md")
    mx.set_defaults(func=_matrix)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
