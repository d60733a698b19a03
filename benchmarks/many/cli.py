"""The command line of ``benchmarks/many_benchmark.py`` and the sections of ``results/many.md``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .._common import REPO, RESULTS, check_idle, json_worker, log
from ..lme4 import lme4_available
from . import bigrows, bootstrap, genomics, w4
from .common import Context, sizes

OUT = RESULTS / "many.md"
CASES = {  # in the order of many.md
    "w4": w4.case_w4,
    "genomics": genomics.case_genomics,
    "bootstrap": bootstrap.case_bootstrap,
    "bigrows": bigrows.case_bigrows,
}
WORKERS = {**w4.WORKERS, **genomics.WORKERS, **bootstrap.WORKERS, **bigrows.WORKERS}
TITLE = [
    "# Many fits: fit_reml_many, parametric bootstrap, big rows over devices",
    "",
    "Written by `benchmarks/many_benchmark.py` (see its docstring); each section is replaced when its case "
    "is run again. Timings are only meaningful on an otherwise idle machine.",
    "",
]


def write_sections(sections: dict[str, list[str]], out: Path = OUT) -> None:
    """Replaces the sections of the cases just run; keeps the others' earlier text."""
    old: dict[str, str] = {}
    if out.exists():
        text = out.read_text()
        for key in CASES:
            start, end = f"<!-- case:{key} -->", f"<!-- /case:{key} -->"
            i, j = text.find(start), text.find(end)
            if i >= 0 and j > i:
                old[key] = text[i : j + len(end)]
    parts = ["\n".join(TITLE)]
    for key in CASES:
        if key in sections:
            parts.append(
                f"<!-- case:{key} -->\n" + "\n".join(sections[key]).rstrip() + f"\n<!-- /case:{key} -->"
            )
        elif key in old:
            parts.append(old[key])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join(parts) + "\n")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test (< 2 min)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument(
        "--no-statsmodels", dest="statsmodels", action="store_false", help="skip statsmodels in w4"
    )
    p.add_argument("--no-lme4", dest="lme4", action="store_false", help="skip every lme4 run")
    p.add_argument(
        "--no-formula-design",
        dest="formula_design",
        action="store_false",
        help="bigrows: skip timing the formula route's host design on a DataFrame",
    )
    p.add_argument(
        "--bigrows-rows", type=int, default=None, help="bigrows: this many rows (groups of 100) instead"
    )
    return p


def main(description: str, argv: list[str] | None = None) -> None:
    """Runs the chosen cases, each section of many.md written as soon as its case is done."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        kind, spec_path, out_path = argv[1:4]
        json_worker(WORKERS[kind], spec_path, out_path)
        return
    p = parser(description)
    args = p.parse_args(argv)
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    sz = sizes(args.quick)
    if args.bigrows_rows:
        sz["big_n"], sz["big_groups"] = args.bigrows_rows, max(1, args.bigrows_rows // 100)
    r_ok, r_note = lme4_available() if args.lme4 else (False, "--no-lme4")
    if not r_ok:
        log(f"lme4 not used: {r_note}")
    check_idle()
    sections = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaxmixed-many-") as tmp:
        ctx = Context(args, sz, Path(tmp), r_ok, r_note)
        for key, case in CASES.items():
            if key in chosen:
                sections[key] = case(ctx)
                write_sections(sections)  # after each case: a later failure keeps the earlier ones
    print("\n" + "\n\n".join("\n".join(sections[k]) for k in CASES if k in sections))
    log(f"Wrote {OUT.relative_to(REPO)} ({time.perf_counter() - t0:.0f} s in all)")
