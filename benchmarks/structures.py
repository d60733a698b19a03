"""Many data sets of distinct sizes and structures in one process: compiled programs stay bounded.

A process that fits thousands of different data sets (a notebook, a server,
a simulation study) must not run out of memory maps: every compiled XLA CPU
program holds several hundred, and Linux allows 65,530 per process. This
fits ``--n`` (default 500) simulated data sets, each of a random size and one
of four model structures, with ``jaxmixed.fit_reml`` in one process, and
prints the number of distinct padded (formula, rows, levels) shapes, the
compiled programs held,
the peak number of memory maps, and the time. With the disk cache off
(default here) every new structure compiles.

    .venv/bin/python -m benchmarks.structures --n 500
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import check_idle, log, no_compilation_cache, write_json

FORMULAS = (
    "y ~ x + (1 | g)",
    "y ~ x + (x | g)",
    "y ~ x + (1 | g) + (1 | h)",
    "y ~ x + (x || g)",
)


def simulate(rng: np.random.Generator, n: int, n_groups: int) -> pd.DataFrame:
    g = rng.integers(0, n_groups, n)
    h = rng.integers(0, max(2, n_groups // 4), n)
    x = rng.normal(size=n)
    u = rng.normal(size=(n_groups, 2))
    v = rng.normal(size=max(2, n_groups // 4))
    y = 1.0 + 0.5 * x + u[g, 0] + 0.3 * u[g, 1] * x + 0.5 * v[h] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": g.astype(str), "h": h.astype(str)})


def memory_maps() -> int:
    try:
        return len(Path("/proc/self/maps").read_text().splitlines())
    except OSError:  # not Linux
        return -1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="data sets to fit (default 500)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache", action="store_true", help="keep the disk compilation cache on")
    parser.add_argument("--out", default=None, help="write the summary as JSON here")
    args = parser.parse_args(argv)
    if not args.cache:
        no_compilation_cache()
    import jaxmixed as jm
    from jaxmixed.core._padding import bucket, padded_levels

    check_idle()
    rng = np.random.default_rng(args.seed)
    structures, peak, failures = set(), memory_maps(), 0
    start = time.perf_counter()
    for k in range(args.n):
        n = int(rng.integers(100, 2000))  # a distinct size almost every time
        formula = FORMULAS[int(rng.integers(len(FORMULAS)))]
        df = simulate(rng, n, int(rng.integers(10, 60)))
        try:
            fit = jm.fit_reml(formula, df)
        except Exception as err:  # noqa: BLE001 - counted and shown, the run goes on
            failures += 1
            log(f"  data set {k}: {type(err).__name__}: {err}")
            continue
        structures.add((formula, bucket(n, 3), tuple(padded_levels(list(fit.n_levels.values())))))
        peak = max(peak, memory_maps())
        if (k + 1) % 50 == 0:
            print(
                f"{k + 1:5d} fits  {time.perf_counter() - start:7.1f} s  structures {len(structures):4d}  "
                f"programs held {jm.n_compiled_programs():3d}  memory maps {memory_maps():6d} (peak {peak})",
                flush=True,
            )
    summary = {
        "fits": args.n,
        "failures": failures,
        "distinct_structures": len(structures),
        "programs_held": jm.n_compiled_programs(),
        "peak_memory_maps": peak,
        "seconds": round(time.perf_counter() - start, 1),
        "disk_cache": bool(args.cache),
    }
    print(json.dumps(summary))
    if args.out:
        write_json(Path(args.out), summary)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
