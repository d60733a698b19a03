#!/usr/bin/env python
"""float32 against float64 on the same fits: how close the criterion and θ come.

Cases: the 800 simulated fits of ``tests/data/boundary_cases.csv.gz`` (four
models, REML and ML, 100 seeds each; about half with a variance at 0) and the
lme4 reference models of ``tests/data/lme4_reference.json``. For each fit it
records the relative difference of the criterion, the largest absolute
difference of θ, and whether float32 reports convergence; it prints a summary
per group and writes ``benchmarks/results/float32.md``.

    .venv/bin/python benchmarks/float32_accuracy.py
"""

# ruff: noqa: E402  (the imports below need sys.path first, when run as a script)

from __future__ import annotations

import sys
import warnings
from pathlib import Path

if not __package__:  # as a script, benchmarks/ is first on sys.path; the package lives one level up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import jaxmixed as jm
from benchmarks._common import REPO, RESULTS, md_table
from jaxmixed import core

DATA = REPO / "tests" / "data"
MODELS = [
    ("slope", "y ~ x + (x | g)"),
    ("slope", "y ~ x + (x || g)"),
    ("intercept", "y ~ x + (1 | g)"),
    ("crossed", "y ~ x + (1 | g) + (1 | h)"),
]


@eqx.filter_jit
def _fit_all(data, ys, options):
    return jax.vmap(lambda d, y: core.fit_data(d, y, options))(data, ys)


def _stacked(df, design_name, formula, dtype):
    rows, ys = [], []
    for seed in range(100):
        part = df[(df.design == design_name) & (df.seed == seed)].reset_index(drop=True)
        design, arrays = jm.design.build_design(formula, part)
        rows.append(jm.design.prepare(design, arrays, dtype=dtype))
        ys.append(arrays.y)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *rows), jnp.asarray(np.stack(ys), dtype)


def simulated() -> list[dict]:
    df = pd.read_csv(DATA / "boundary_cases.csv.gz", keep_default_na=False)
    out = []
    for design_name, formula in MODELS:
        for reml in (True, False):
            fits = {}
            with jax.enable_x64(True):
                for dtype in (jnp.float64, jnp.float32):
                    data, ys = _stacked(df, design_name, formula, dtype)
                    res = _fit_all(data, ys, core.FitOptions(reml=reml))
                    fits[dtype] = jax.tree.map(
                        lambda a: np.asarray(a, dtype=float) if a.dtype.kind == "f" else np.asarray(a), res
                    )
            f64, f32 = fits[jnp.float64], fits[jnp.float32]
            for seed in range(100):
                out.append(
                    {
                        "group": f"{formula} {'REML' if reml else 'ML'}",
                        "criterion": abs(f32.objective[seed] - f64.objective[seed])
                        / abs(f64.objective[seed]),
                        "theta": float(np.max(np.abs(f32.theta[seed] - f64.theta[seed]))),
                        "converged32": bool(f32.converged[seed]),
                        "singular_agrees": bool(f32.singular[seed] == f64.singular[seed]),
                    }
                )
    return out


def references() -> list[dict]:
    """The lme4 reference models (``REFERENCE_MODELS``, the list tests/test_api.py checks)."""
    from jaxmixed._datasets import REFERENCE_MODELS

    out = []
    for m in REFERENCE_MODELS:
        df = jm.load_dataset(m.dataset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = jm.fit_reml(m.formula, data=df, reml=m.reml)
            b = jm.fit_reml(m.formula, data=df, reml=m.reml, dtype=jnp.float32)
        out.append(
            {
                "group": m.key,
                "criterion": abs(b.objective - a.objective) / abs(a.objective),
                "theta": float(np.max(np.abs(b.theta.to_numpy() - a.theta.to_numpy()))),
                "converged32": b.converged,
                "singular_agrees": a.singular == b.singular,
            }
        )
    return out


def _markdown(table: pd.DataFrame) -> str:
    """A markdown table (pandas' to_markdown needs tabulate, not a dependency)."""

    def cell(v) -> str:
        return f"{v:.2g}" if isinstance(v, float) else str(v)

    rows = ([cell(v) for v in row] for row in table.itertuples(index=False))
    return "\n".join(md_table(list(table.columns), rows, "l" * len(table.columns)))


def main() -> None:
    rows = pd.DataFrame(simulated() + (references() if "--no-refs" not in sys.argv else []))
    rows["both_hold"] = (rows.criterion <= 1e-5) & (rows.theta <= 1e-3)
    summary = rows.groupby("group", sort=False).agg(
        fits=("criterion", "size"),
        max_rel_criterion=("criterion", "max"),
        max_abs_theta=("theta", "max"),
        criterion_within_1e5=("criterion", lambda c: int((c <= 1e-5).sum())),
        theta_within_1e3=("theta", lambda t: int((t <= 1e-3).sum())),
        converged32=("converged32", "sum"),
        singular_agrees=("singular_agrees", "sum"),
    )
    text = _markdown(summary.reset_index())
    RESULTS.mkdir(exist_ok=True)
    rows.to_csv(RESULTS / "float32_fits.csv", index=False)
    total = (
        f"\n\nall fits: {len(rows)}; criterion within 1e-5 and θ within 1e-3: {int(rows.both_hold.sum())}\n"
    )
    print(text + total)
    (RESULTS / "float32.md").write_text("# float32 against float64\n\n" + text + total)


if __name__ == "__main__":
    main()
