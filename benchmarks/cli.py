"""The command line of ``python -m benchmarks`` and ``benchmarks/run_benchmarks.py``.

Usage (from the repository root):

    .venv/bin/python -m benchmarks                                  # peer comparison: everything
    .venv/bin/python -m benchmarks --quick                          # peer comparison, small sizes
    .venv/bin/python -m benchmarks --cases a,c --no-plot
    .venv/bin/python -m benchmarks --skip-insteval-statsmodels
    .venv/bin/python -m benchmarks --suite quick                    # kernels, against the last run
    .venv/bin/python -m benchmarks --suite real                     # mlmRev's models against lme4
    .venv/bin/python -m benchmarks --suite real --models bdf,exam
    .venv/bin/python -m benchmarks --suite real --check-designs     # build the designs only
    python -m benchmarks --suite gpu                                # one accelerator, against the CPU's results
    python -m benchmarks --suite gpu --write-reference              # (on a CPU) store those results

See benchmarks/README.md for the suites and what each column means.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import RESULTS

PEER_CASES = ("a", "b", "c", "d")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--suite",
        choices=("peers", "quick", "real", "gpu"),
        default="peers",
        help="peers: jaxmixed, statsmodels and lme4 on the cases a-d (default); quick: the library's "
        "kernels against the previous quick.json; real: mlmRev's models, jaxmixed against lme4; "
        "gpu: timings on one accelerator and agreement with stored CPU results",
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="output folder (benchmarks/results)")
    peers = p.add_argument_group("peers suite")
    peers.add_argument("--cases", default=",".join(PEER_CASES), help="comma-separated subset of a,b,c,d")
    peers.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    peers.add_argument("--no-plot", action="store_true", help="skip the scaling runs and plot")
    peers.add_argument(
        "--skip-insteval-statsmodels",
        action="store_true",
        help="do not run statsmodels on InstEval (it may not finish in 15 minutes)",
    )
    real = p.add_argument_group("real suite")
    real.add_argument("--models", help="comma-separated subset of the real models (default: all)")
    real.add_argument("--check-designs", action="store_true", help="build each design in jaxmixed; no fits")
    real.add_argument("--refresh-data", action="store_true", help="export mlmRev's data again")
    gpu = p.add_argument_group("gpu suite")
    gpu.add_argument("--write-reference", action="store_true", help="run the fits here (a CPU) and store them")
    p.add_argument("--worker", nargs=3, metavar=("KIND", "SPEC", "OUT"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.worker:
        from .workers import worker_main

        worker_main(*args.worker)
        return 0
    if args.suite == "quick":
        from .quick import run_quick

        return run_quick(args.results_dir)
    if args.suite == "gpu":
        from .gpu import run_gpu, write_reference

        return write_reference(args.quick) if args.write_reference else run_gpu(args.quick, args.results_dir)
    if args.suite == "real":
        from .real import run_real, select_models

        try:
            select_models(args.models)
        except ValueError as exc:
            p.error(str(exc))
        return run_real(args.models, args.refresh_data, args.check_designs, args.results_dir)
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(wanted) - set(PEER_CASES)
    if unknown:
        p.error(f"unknown cases {sorted(unknown)}; choose from a,b,c,d")
    from .peers import run_peers

    return run_peers(wanted, args.quick, args.no_plot, args.skip_insteval_statsmodels, args.results_dir)
