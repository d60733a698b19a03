"""Units do not matter: covariates, responses and nearly collinear columns.

The criterion is invariant to rescaling a column of Z and, up to the constant
``2 log c`` per rescaled fixed-effect column in REML, of X; θ and β rescale
with the column. The fit works on standardised columns, so it reaches the
same optimum whatever the units.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxmixed as jm
from jaxmixed import core


def _data(seed=7):
    rng = np.random.default_rng(seed)
    n_g, n_h, per = 30, 6, 8
    g = np.repeat(np.arange(n_g), per)
    h = rng.integers(0, n_h, size=len(g))
    x = rng.normal(size=len(g))
    y = (
        2.0
        + 0.8 * x
        + rng.normal(scale=0.9, size=n_g)[g]
        + rng.normal(scale=0.4, size=n_g)[g] * x
        + rng.normal(scale=0.5, size=n_h)[h]
        + rng.normal(size=len(g))
    )
    return pd.DataFrame({"y": y, "x": x, "g": g, "h": h})


FORMULAS = [
    "y ~ x + (x | g)",
    "y ~ x + (x || g)",
    "y ~ x + (x | g) + (1 | h)",
    "y ~ x + (x || g) + (x | h)",
]


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("formula", FORMULAS)
def test_covariate_units_do_not_change_the_optimum(formula, reml):
    df = _data()
    fits = {}
    for c in (1e-4, 1.0, 1e4):
        scaled = df.assign(x=df.x * c)
        fits[c] = jm.fit_reml(formula, data=scaled, reml=reml)
    ref = fits[1.0]
    assert ref.converged
    for c, res in fits.items():
        assert res.converged, (c, res.convergence_message)
        # REML: the fixed-effect column x scaled by c adds 2 log c (log|XᵀV⁻¹X| has c² in it).
        constant = 2.0 * np.log(c) if reml else 0.0
        assert res.objective - constant == pytest.approx(ref.objective, rel=1e-8)
        assert res.fixed_effects["x"] * c == pytest.approx(ref.fixed_effects["x"], rel=1e-5)
        assert res.fixed_effects["(Intercept)"] == pytest.approx(ref.fixed_effects["(Intercept)"], rel=1e-5)
        assert res.sigma == pytest.approx(ref.sigma, rel=1e-5)
        # x's slope variance scales by 1/c², its covariances by 1/c; the rest does not move.
        vc, vr = res.varcorr, ref.varcorr
        is_x = vc.var1.eq("x").to_numpy().astype(int) + vc.var2.eq("x").to_numpy().astype(int)
        power = np.where(vc.var1.eq("x") & vc.var2.isna(), 2, is_x)
        np.testing.assert_allclose(vc.vcov * c**power, vr.vcov, rtol=1e-4, atol=1e-8 * vr.vcov.abs().max())
        assert res.singular == ref.singular


@pytest.mark.parametrize("c", [1e-6, 1e6, 1e200, 1e-200])
def test_response_units_do_not_change_the_fit(c):
    df = jm.load_dataset("sleepstudy")
    ref = jm.fit_reml("Reaction ~ Days + (Days | Subject)", data=df)
    scaled = df.assign(Reaction=df.Reaction * c)
    if abs(np.log10(c)) > 150:  # σ² leaves float64's range: said, not hidden
        with pytest.warns(RuntimeWarning, match="outside float64's range"):
            res = jm.fit_reml("Reaction ~ Days + (Days | Subject)", data=scaled)
    else:
        res = jm.fit_reml("Reaction ~ Days + (Days | Subject)", data=scaled)
    assert res.converged
    n, p = 180, 2
    assert res.objective - 2 * (n - p) * np.log(c) == pytest.approx(ref.objective, rel=1e-9)
    np.testing.assert_allclose(res.theta, ref.theta, rtol=1e-6)
    np.testing.assert_allclose(res.fixed_effects / c, ref.fixed_effects, rtol=1e-8)
    assert res.sigma / c == pytest.approx(ref.sigma, rel=1e-8)
    # Standard deviations scale by c, correlations do not: both stay exact.
    is_sd = ref.varcorr.var2.isna().to_numpy()
    np.testing.assert_allclose(res.varcorr.sdcor / np.where(is_sd, c, 1.0), ref.varcorr.sdcor, rtol=1e-6)


def _dense_qr_criterion(y, X, Z, lam, reml):
    """The profiled criterion from a dense QR of [ZΛ X y; I 0 0] (float64, no cross-products)."""
    n, p = X.shape
    zl = Z @ lam
    q = zl.shape[1]
    top = np.concatenate([zl, X, y[:, None]], axis=1)
    bottom = np.concatenate([np.eye(q), np.zeros((q, p + 1))], axis=1)
    r = np.linalg.qr(np.concatenate([top, bottom], axis=0), mode="r")
    d = np.abs(np.diag(r))
    log_det_a = 2 * np.sum(np.log(d[:q]))
    r2 = d[-1] ** 2
    dof = n - p if reml else n
    value = log_det_a + dof * (1 + np.log(2 * np.pi * r2 / dof))
    if reml:
        value += 2 * np.sum(np.log(d[q : q + p]))
    return value


@pytest.mark.parametrize("eps", [1e-2, 1e-5, 1e-8])
def test_criterion_is_accurate_for_nearly_collinear_columns(eps):
    """At any θ the criterion agrees with a dense QR evaluation as well as two dense QR
    evaluations with the columns in different orders agree with each other."""
    rng = np.random.default_rng(3)
    n_g, per = 20, 10
    g = np.repeat(np.arange(n_g), per)
    x1 = rng.normal(size=n_g * per)
    x2 = x1 + eps * rng.normal(size=n_g * per)
    X = np.column_stack([np.ones_like(x1), x1, x2])
    y = X @ [1.0, 2.0, -1.0] + rng.normal(size=n_g)[g] + rng.normal(size=len(g))
    Z = np.zeros((len(g), n_g))
    Z[np.arange(len(g)), g] = 1.0
    structure = core.CovarianceStructure(1, (0,), (0,), ((0, 1),))
    with jax.enable_x64(True):
        data = core.model_data(X, [np.ones((len(g), 1))], [g], [n_g], [structure])
        stats = core.model_statistics(data, jnp.asarray(y))
        for theta in (0.05, 0.7, 3.0):
            phi = jnp.log(jnp.asarray([theta]))  # the intercept column has RMS 1: θ̃ = θ
            for reml in (True, False):
                ours = float(core.objective(phi, stats, reml))
                dense = _dense_qr_criterion(y, X, Z, theta * np.eye(n_g), reml)
                reordered = _dense_qr_criterion(y, X[:, ::-1], Z, theta * np.eye(n_g), reml)
                spread = abs(dense - reordered)
                # Well conditioned (eps = 1e-2): 1e-10 relative. Nearly collinear: within a
                # small multiple of how much two dense QR evaluations disagree (measured: ≤ 4×).
                bound = 1e-10 * abs(dense) if eps >= 1e-2 else max(5 * spread, 1e-12 * abs(dense))
                assert abs(ours - dense) <= bound, (theta, reml, ours, dense, spread)


def test_collinear_columns_converge_without_false_alarm():
    rng = np.random.default_rng(11)
    df = jm.load_dataset("sleepstudy").assign(Days2=lambda d: d.Days + 1e-6 * rng.normal(size=len(d)))
    res = jm.fit_reml("Reaction ~ Days + Days2 + (Days | Subject)", data=df, reml=False)
    ref = jm.fit_reml("Reaction ~ Days + (Days | Subject)", data=df, reml=False)
    assert res.converged, res.convergence_message
    assert res.objective <= ref.objective + 1e-9 * ref.objective
