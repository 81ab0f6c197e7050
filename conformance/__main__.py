"""python -m conformance {generate,run,check,...}: see ``--help``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conformance import golden, spec


def _generate(args) -> int:
    from conformance import cases

    directory = Path(args.out) if args.out else spec.spec_dir() / "cases"
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


def _run(args) -> int:
    from conformance import adapters, runner

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
        all_cases = golden.load_cases(Path(args.cases) if args.cases else None)
    except golden.GoldenFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    selected = [c for c in all_cases
                if (not args.case or any(k in c.id for k in args.case))
                and (not args.clause or set(args.clause) & set(c.clauses))]
    dtypes = args.dtype or list(spec.DTYPES)
    print(f"wce conformance: {len(selected)} golden cases, {len(spec.clauses())} clauses, "
          f"dtypes {', '.join(dtypes)}")
    for a in loaded:
        print(f"  {a.name}: {a.description}")
    records = runner.run(loaded, selected, dtypes)
    runner.print_report(records, only_failures=args.only_failures)
    if args.json:
        runner.write_json(records, args.json, {"implementations": [a.name for a in loaded],
                                                "dtypes": dtypes})
    return 1 if runner.totals(records)[runner.FAIL] else 0


def _check(args) -> int:
    from conformance import check, runner

    try:
        adapter = check.UserAdapter(args.function, args.loss, args.framework, args.layout)
    except check.CheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cases = [c for c in golden.load_cases() if c.loss == args.loss]
    dtypes = [d for d in (args.dtype or spec.DTYPES) if d in adapter.dtypes]
    print(f"checking {adapter.description} against {len(cases)} golden cases of "
          f"{args.loss}, dtypes {', '.join(dtypes)}")
    records = runner.run([adapter], cases, dtypes)
    runner.print_report(records, only_failures=args.only_failures)
    return 1 if runner.totals(records)[runner.FAIL] else 0


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
    dtypes = args.dtype or list(spec.DTYPES)
    records = runner.run(loaded, golden.load_cases(), dtypes)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(matrix.markdown(records, loaded, dtypes), encoding="utf-8")
    runner.print_clause_summary(records)
    runner.print_totals(records)
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
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
    run.add_argument("--dtype", action="append", choices=spec.DTYPES,
                     help="dtype to run (repeatable); default: all")
    run.add_argument("--json", help="also write every record to this JSON file")
    run.add_argument("--case", action="append", help="only cases whose id contains this")
    run.add_argument("--clause", action="append", help="only cases covering this clause")
    run.add_argument("--cases", help="folder of golden files (default: the installed ones)")
    run.add_argument("--only-failures", action="store_true",
                     help="list only failing and deviating cases")
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
                     help="where the function wants the class axis (default: 1, as torch)")
    chk.add_argument("--dtype", action="append", choices=spec.DTYPES,
                     help="dtype to run (repeatable); default: all the framework has")
    chk.add_argument("--only-failures", action="store_true")
    chk.set_defaults(func=_check)

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
    mx.add_argument("--dtype", action="append", choices=spec.DTYPES,
                    help="dtype to run (repeatable); default: all")
    mx.add_argument("--out", default="docs/compatibility.md")
    mx.set_defaults(func=_matrix)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
