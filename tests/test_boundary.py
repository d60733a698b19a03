"""Boundary optima: a variance exactly 0 is found every time, for lme4's verified optima.

The data (``tests/data/boundary_cases.csv.gz``) and lme4's fits of them
(``boundary_lme4.json``) come from ``tests/data/make_boundary_cases.py`` and
``boundary_cases.R`` (see ``tests/data/README.md``): 100 seeds per design,
each simulated with one true variance exactly 0, fitted by lme4 1.1-31 with
bobyqa at ``rhoend = 1e-12``. The seeds of one design share their shapes, so
the 100 fits run as one vmapped call over stacked designs.
"""

from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import DATA
from lme4_r import lmer_fit, rscript_available

from jaxmixed import core
from jaxmixed import design as jmd
from jaxmixed.core._covariance import diagonal_mask

MODELS = [
    ("slope", "y ~ x + (x | g)"),
    ("slope", "y ~ x + (x || g)"),
    ("intercept", "y ~ x + (1 | g)"),
    ("crossed", "y ~ x + (1 | g) + (1 | h)"),
]


@pytest.fixture(scope="module")
def cases():
    data = pd.read_csv(DATA / "boundary_cases.csv.gz", keep_default_na=False)
    refs = json.loads((DATA / "boundary_lme4.json").read_text())
    return data, refs


def _stacked(data: pd.DataFrame, design_name: str, formula: str):
    """Per seed: the design (same shapes for every seed), stacked along axis 0."""
    rows, ys, names = [], [], None
    for seed in range(100):
        df = data[(data.design == design_name) & (data.seed == seed)].reset_index(drop=True)
        design, arrays = jmd.build_design(formula, df)
        rows.append(jmd.prepare(design, arrays))
        ys.append(arrays.y)
        names = design
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *rows)
    return stacked, jnp.asarray(np.stack(ys)), names


@eqx.filter_jit
def _fit_all(data, ys, options):
    return jax.vmap(lambda d, y: core.fit_data(d, y, options))(data, ys)


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("design_name, formula", MODELS)
def test_every_boundary_optimum_is_exactly_zero(cases, design_name, formula, reml):
    data, refs = cases
    ref = {r["seed"]: r for r in refs if r["model"] == formula and r["reml"] == reml}
    with jax.enable_x64(True):
        stacked, ys, design = _stacked(data, design_name, formula)
        res = jax.tree.map(np.asarray, _fit_all(stacked, ys, core.FitOptions(reml=reml)))
        interior = jax.tree.map(np.asarray, _fit_all(stacked, ys, core.FitOptions(reml=reml, boundary=False)))
    diag = diagonal_mask(design.structures)
    n_boundary = 0
    for seed in range(100):
        lme4 = ref[seed]
        obj = res.objective[seed]
        assert res.converged[seed], (seed, core.RESULTS[jax.tree.map(lambda a, k=seed: a[k], res.result)])
        # Never worse than lme4's verified optimum, and never worse than the interior point.
        assert obj <= lme4["objective"] + 1e-7 * abs(lme4["objective"]), seed
        assert obj <= interior.objective[seed] + 1e-9 * abs(obj), seed
        if lme4["singular"]:
            n_boundary += 1
            theta = res.theta[seed]
            assert res.singular[seed], (seed, theta)
            assert np.any(theta[diag] == 0.0), (seed, theta)
            assert np.all(theta[res.at_boundary[seed]] == 0.0)
        else:
            assert not res.singular[seed], (seed, res.theta[seed])
            assert obj == pytest.approx(lme4["objective"], rel=1e-8)
    assert n_boundary >= 40  # the simulation puts about half of the optima at the boundary


@pytest.mark.skipif(not rscript_available(), reason="Rscript with lme4 not installed")
def test_boundary_agrees_with_a_fresh_lme4_fit():
    """New data, fitted by lme4 now (skipped without R)."""
    import jaxmixed as jm

    rng = np.random.default_rng(12345)
    g = np.repeat(np.arange(25), 6)
    x = rng.normal(size=len(g))
    y = 1 + 0.5 * x + rng.normal(scale=0.7, size=25)[g] + rng.normal(size=len(g))
    df = pd.DataFrame({"y": y, "x": x, "g": pd.Categorical([f"g{k:02d}" for k in g])})
    for reml in (True, False):
        ours = jm.fit_reml("y ~ x + (x | g)", data=df, reml=reml)
        theirs = lmer_fit(df, "y ~ x + (x | g)", reml=reml)
        assert ours.singular == bool(theirs["singular"])
        assert ours.objective <= theirs["objective"] + 1e-7 * abs(theirs["objective"])
        assert ours.objective == pytest.approx(theirs["objective"], rel=1e-7)
