"""The Laplace deviance (PIRLS in the blocked factor) against lme4's glmer.

References: tests/data/glmm_reference.json, made by tests/data/glmm_reference.R
from lme4 1.1-31's own datasets (cbpp, grouseticks), with PIRLS run to convergence
("values_converged", "converged"): lme4's reported values carry up to 1e-8 of its
PIRLS tolerance.
"""

from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import DATA, GLMM_GROUP

from jaxmixed import core
from jaxmixed.core._family import Binomial, Poisson
from jaxmixed.core._laplace import laplace_deviance

REF = json.loads((DATA / "glmm_reference.json").read_text())
pytestmark = GLMM_GROUP


def _treatment(values: pd.Series) -> np.ndarray:
    """R's treatment contrasts of a factor (first level the baseline), without the intercept."""
    levels = sorted(values.unique(), key=str)
    return np.column_stack([(values == lv).to_numpy(float) for lv in levels[1:]])


def _cbpp():
    df = pd.read_csv(DATA / "cbpp.csv")
    n = len(df)  # call inside jax.enable_x64 (float64 statistics)
    X = np.column_stack([np.ones(n), _treatment(df["period"].astype(str))])
    codes, levels = pd.factorize(df["herd"].astype(str), sort=True)
    data = core.model_data(
        X, [np.ones((n, 1))], [codes], [len(levels)], [core.structure_for_terms([1])],
        weights=df["size"].to_numpy(float),
    )  # fmt: skip
    return data, (df["incidence"] / df["size"]).to_numpy()


def _padded(data, pad: int):
    """cbpp's rows with ``pad`` padding rows: X, Z and prior weight 0, level 0."""
    return eqx.tree_at(
        lambda d: (d.X, d.Z, d.weights, d.index.codes),
        data,
        (
            np.pad(np.asarray(data.X), ((0, pad), (0, 0))),
            (np.pad(np.asarray(data.Z[0]), ((0, pad), (0, 0))),),
            np.pad(np.asarray(data.weights), (0, pad)),
            np.pad(np.asarray(data.index.codes), (0, pad)),
        ),
    )


def _grouseticks():
    df = pd.read_csv(DATA / "grouseticks.csv")
    n = len(df)
    X = np.column_stack([np.ones(n), _treatment(df["YEAR"].astype(str)), df["cHEIGHT"].to_numpy(float)])
    factors = ["BROOD", "INDEX", "LOCATION"]
    coded = [pd.factorize(df[f].astype(str), sort=True) for f in factors]
    # the factor with the most levels first, as jaxmixed orders them
    order = sorted(range(3), key=lambda k: -len(coded[k][1]))
    data = core.model_data(
        X, [np.ones((n, 1))] * 3, [coded[k][0] for k in order], [len(coded[k][1]) for k in order],
        [core.structure_for_terms([1])] * 3, weights=np.ones(n),
    )  # fmt: skip
    return data, df["TICKS"].to_numpy(float), order


def test_cbpp_matches_lme4s_devfun():
    ref = REF["laplace_devfun"]
    with jax.enable_x64(True):
        data, y = _cbpp()
        fun = jax.jit(lambda th, b: laplace_deviance(th, b, data, jnp.asarray(y), Binomial()))
        for point, expected in zip(ref["points"], ref["values_converged"], strict=True):
            out = fun(jnp.asarray(point[:1]), jnp.asarray(point[1:]))
            assert bool(out.converged)
            assert float(out.deviance) == pytest.approx(expected, abs=1e-7)


def test_grouseticks_three_factors_match_lme4_at_its_optimum():
    """A crossed Poisson model (three factors: the dense block and its Schur complement)."""
    conv = REF["models"]["grouseticks_poisson"]["converged"]
    with jax.enable_x64(True):
        data, y, order = _grouseticks()
        names = REF["models"]["grouseticks_poisson"]["theta"]["names"]  # lme4's order: by levels
        assert [names[k].split(".")[0] for k in range(3)] == [["BROOD", "INDEX", "LOCATION"][k] for k in order]
        theta = np.asarray(conv["theta"])
        out = jax.jit(lambda th, b: laplace_deviance(th, b, data, jnp.asarray(y), Poisson()))(
            jnp.asarray(theta), jnp.asarray(conv["fixef"])
        )
    assert bool(out.converged)
    assert float(out.deviance) == pytest.approx(conv["minus2logLik"], abs=1e-6)


def _herd_log_integrands(data, y, theta: float, beta, u):
    """log of Π_i f(y_i | u) φ(u) per herd at u (J, G): column g of ``u`` holds each
    herd's own point."""
    fam = Binomial()
    codes = jnp.asarray(data.index.codes)
    eta = (jnp.asarray(data.X) @ beta)[:, None] + theta * u[codes]
    ll = fam.log_likelihood(jnp.asarray(y)[:, None], fam.link.inverse(eta), jnp.asarray(data.weights)[:, None])
    return jax.ops.segment_sum(ll, codes, data.index.n_levels) - 0.5 * u**2 - 0.5 * jnp.log(2 * jnp.pi)


def test_a_scalar_factor_against_the_integrand_itself():
    """Per herd, the Laplace term from the integrand itself (its mode on a grid, refined,
    and its curvature there by central differences) adds up to the PIRLS result (logit
    is canonical: the working weights are the observed information); the exact integral
    (the same grid) differs from it, as it should."""
    with jax.enable_x64(True):
        data, y = _cbpp()
        theta, beta = jnp.asarray([0.6]), jnp.asarray([-1.4, -1.0, -1.1, -1.6])
        out = jax.jit(lambda th, b: laplace_deviance(th, b, data, jnp.asarray(y), Binomial()))(theta, beta)
        j = data.index.n_levels
        h = 1e-3
        grid = jnp.broadcast_to(jnp.arange(-8.0, 8.0, h), (j, 16000))
        log_f = np.asarray(_herd_log_integrands(data, y, 0.6, beta, grid))
        k = np.argmax(log_f, axis=1)
        rows = np.arange(j)
        lo, mid, hi = log_f[rows, k - 1], log_f[rows, k], log_f[rows, k + 1]
        mode = np.asarray(grid)[rows, k] - h * (hi - lo) / (2 * (hi - 2 * mid + lo))
        d = 1e-4
        near = np.asarray(_herd_log_integrands(data, y, 0.6, beta, jnp.asarray(mode[:, None] + [-d, 0.0, d])))
    second = (near[:, 2] - 2 * near[:, 1] + near[:, 0]) / d**2
    laplace = -2.0 * np.sum(near[:, 1] + 0.5 * np.log(2 * np.pi) - 0.5 * np.log(-second))
    assert float(out.deviance) == pytest.approx(laplace, abs=1e-5)
    top = log_f.max(axis=1, keepdims=True)
    exact = -2.0 * np.sum(top[:, 0] + np.log(np.trapezoid(np.exp(log_f - top), dx=h, axis=1)))
    assert 1e-3 < abs(float(out.deviance) - exact) < 0.2


def test_verbagg_bernoulli_responses_with_crossed_factors_match_lme4():
    """0/1 responses (VerbAgg's r2), persons crossed with items, at lme4's optimum."""
    conv = REF["models"]["verbagg_crossed"]["converged"]
    df = pd.read_csv(DATA / "VerbAgg.csv.gz")
    n = len(df)
    X = np.column_stack(
        [np.ones(n), df["Anger"].to_numpy(float), (df["Gender"] == "M").to_numpy(float),
         _treatment(df["btype"].astype(str).map({"curse": "a", "scold": "b", "shout": "c"})),
         (df["situ"] == "self").to_numpy(float)]
    )  # fmt: skip
    coded = [pd.factorize(df[f].astype(str), sort=True) for f in ("id", "item")]
    with jax.enable_x64(True):
        data = core.model_data(
            X, [np.ones((n, 1))] * 2, [c for c, _ in coded], [len(lv) for _, lv in coded],
            [core.structure_for_terms([1])] * 2, weights=np.ones(n),
        )  # fmt: skip
        y = jnp.asarray((df["r2"] == "Y").to_numpy(float))
        out = jax.jit(lambda th, b: laplace_deviance(th, b, data, y, Binomial()))(
            jnp.asarray(conv["theta"]), jnp.asarray(conv["fixef"])
        )
    assert REF["models"]["verbagg_crossed"]["theta"]["names"] == ["id.(Intercept)", "item.(Intercept)"]
    assert bool(out.converged)
    assert float(out.deviance) == pytest.approx(conv["minus2logLik"], abs=1e-6)


@pytest.mark.parametrize("link", ["logit", "probit"])
def test_gradients_are_finite_and_unchanged_on_padded_rows(link):
    """Padded rows (prior weight 0) keep the reverse-mode gradient finite and equal (probit:
    the observed information of a padded row is 0, as its working weight)."""
    with jax.enable_x64(True):
        data, y = _cbpp()
        pad = 4
        padded = _padded(data, pad)
        y_padded = jnp.asarray(np.pad(y, (0, pad)))
        x = jnp.asarray([0.6, -1.4, -1.0, -1.1, -1.6])

        def dev(d, yy, z):
            return laplace_deviance(z[:1], z[1:], d, yy, Binomial(link), newton_steps=1).deviance

        full = jax.jit(jax.grad(lambda z: dev(data, jnp.asarray(y), z)))(x)
        more = jax.jit(jax.grad(lambda z: dev(padded, y_padded, z)))(x)
    assert np.all(np.isfinite(np.asarray(more)))
    np.testing.assert_allclose(np.asarray(more), np.asarray(full), rtol=1e-8, atol=1e-10)


def _central(fun, x, step=1e-6):
    """Central differences of ``fun`` (vector or scalar valued) at x, one column per entry."""
    cols = []
    for i in range(x.shape[0]):
        h = step * max(1.0, abs(float(x[i])))
        e = jnp.zeros_like(x).at[i].set(h)
        cols.append((np.asarray(fun(x + e)) - np.asarray(fun(x - e))) / (2 * h))
    return np.stack(cols, axis=-1)


def test_gradient_through_three_crossed_factors_against_finite_differences():
    """One Newton step at the modes gives the implicit gradient, away from the optimum too."""
    conv = REF["models"]["grouseticks_poisson"]["converged"]
    with jax.enable_x64(True):
        data, y, _ = _grouseticks()
        y = jnp.asarray(y)
        x = 0.9 * jnp.asarray(conv["theta"] + conv["fixef"])

        def dev(z, steps):
            return laplace_deviance(z[:3], z[3:], data, y, Poisson(), newton_steps=steps).deviance

        grad = jax.jit(jax.grad(lambda z: dev(z, 1)))(x)
        fd = _central(jax.jit(lambda z: dev(z, 0)), x)
    np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-6, atol=1e-5)


def test_hessian_from_two_newton_steps_against_differences_of_the_gradient():
    """Two Newton steps with the observed information (probit: not the working weights)
    give the exact Hessian; one step would not (its second derivative is off). (The logit
    Hessian gives lme4's standard errors in test_glmm.)"""
    with jax.enable_x64(True):
        data, y = _cbpp()
        y = jnp.asarray(y)
        x = jnp.asarray([0.7, -1.3, -1.0, -1.1, -1.6])

        def dev(z, steps):
            return laplace_deviance(z[:1], z[1:], data, y, Binomial("probit"), newton_steps=steps).deviance

        hess = np.asarray(jax.jit(jax.hessian(lambda z: dev(z, 2)))(x))
        one_step = np.asarray(jax.jit(jax.hessian(lambda z: dev(z, 1)))(x))
        fd = _central(jax.jit(jax.grad(lambda z: dev(z, 1))), x, step=1e-5)
    np.testing.assert_allclose(hess, fd, rtol=1e-6, atol=1e-6)
    assert np.max(np.abs(one_step - fd)) > 1e-3


def test_vmap_over_parameters_equals_one_at_a_time():
    with jax.enable_x64(True):
        data, y = _cbpp()
        thetas = jnp.asarray([[0.5], [0.7]])
        betas = jnp.asarray([[-1.3, -0.9, -1.2, -1.5], [-1.4, -1.0, -1.1, -1.6]])
        fun = lambda th, b: laplace_deviance(th, b, data, jnp.asarray(y), Binomial()).deviance  # noqa: E731
        batched = jax.jit(jax.vmap(fun))(thetas, betas)
        single = jax.jit(fun)
        one = [float(single(thetas[i], betas[i])) for i in range(2)]
    np.testing.assert_allclose(np.asarray(batched), one, rtol=1e-12)


def test_padded_rows_change_nothing():
    """Rows of zero prior weight (padding) add nothing to the deviance."""
    with jax.enable_x64(True):
        data, y = _cbpp()
    n = data.X.shape[0]
    pad = 9
    padded = _padded(data, pad)
    with jax.enable_x64(True):
        theta, beta = jnp.asarray([0.6]), jnp.asarray([-1.4, -1.0, -1.1, -1.6])
        full = jax.jit(lambda th, b: laplace_deviance(th, b, data, jnp.asarray(y), Binomial()))(theta, beta)
        y_padded = jnp.asarray(np.pad(y, (0, pad)))
        more = jax.jit(lambda th, b: laplace_deviance(th, b, padded, y_padded, Binomial(), n_obs=n))(theta, beta)
    assert float(more.deviance) == pytest.approx(float(full.deviance), abs=1e-9)
