#!/usr/bin/env python
"""Every lme4 reference fit's numbers to the last bit, for before/after checks of a refactor.

Fits each model of ``jaxmixed._datasets.REFERENCE_MODELS`` (the list the tests check
against lme4) plus sleepstudy with prior weights, and writes, per model, the criterion,
σ, θ, β, their standard errors, the first 50 conditional modes (all as ``float.hex``),
and the convergence flags, iteration count and singularity. Two trees give identical
files exactly when their fits agree bit for bit:

    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old .venv/bin/python benchmarks/fingerprint.py /tmp/before.json
    PYTHONPATH=. .venv/bin/python benchmarks/fingerprint.py /tmp/after.json
    cmp /tmp/before.json /tmp/after.json

InstEval's LAPACK calls sum in an order that depends on the number of BLAS threads,
which jaxmixed sizes from the load average; this script fixes it at one thread so that
the bits do not depend on how busy the machine is.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

os.environ["JAXMIXED_BLAS_THREADS"] = "1"  # before jaxmixed is imported


def _hex(values) -> list[str]:
    import numpy as np

    return [float(v).hex() for v in np.asarray(values, dtype=float).ravel()]


def _record(fit) -> dict:
    modes = [v for table in fit.random_effects.values() for v in _hex(table)[:50]]
    return {
        "objective": float(fit.objective).hex(),
        "sigma": float(fit.sigma).hex(),
        "theta": _hex(fit.theta),
        "beta": _hex(fit.fixed_effects),
        "se": _hex(fit.fixed_effects_se),
        "ranef": modes,
        "converged": bool(fit.converged),
        "singular": bool(fit.singular),
        "n_iter": int(fit.n_iter),
    }


def main(out: str) -> None:
    import numpy as np

    import jaxmixed as jm
    from jaxmixed._datasets import REFERENCE_MODELS

    warnings.simplefilter("ignore")
    records = {m.key: _record(jm.fit_reml(m.formula, jm.load_dataset(m.dataset), reml=m.reml)) for m in REFERENCE_MODELS}
    df = jm.load_dataset("sleepstudy").assign(w=lambda d: 1.0 + (np.arange(len(d)) % 3))
    records["sleepstudy_weights"] = _record(jm.fit_reml("Reaction ~ Days + (Days | Subject)", df, weights="w"))
    with open(out, "w") as f:
        json.dump(records, f, indent=1)
        f.write("\n")
    print(f"{len(records)} fits from {jm.__file__} written to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: fingerprint.py OUT.json")
    main(sys.argv[1])
