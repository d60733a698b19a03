"""Satterthwaite's df and the coefficient table against lmerTest (tests/data/lme4_reference.json).

lmerTest differentiates the deviance numerically (numDeriv), which leaves
relative errors of up to about 1e-4 in its df (Penicillin: 5.48659 against the
exact 5.48709; sleepstudy's balanced design has exactly n_subjects − 1 = 17,
where lmerTest reports 16.99973). The df here come from exact derivatives, so
they are compared to 3e-4 relative, and the p-values to what that allows.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmixed as jm
from jaxmixed._datasets import REFERENCE_MODELS
from jaxmixed.core._inference import satterthwaite
from jaxmixed.linear._inference import satterthwaite_df

# InstEval's fit takes tens of seconds on two cores: the benchmarks time it.
MODELS = [m for m in REFERENCE_MODELS if not m.key.startswith("insteval")]


@pytest.fixture(scope="module")
def fits():
    return {m.key: jm.fit_reml(m.formula, jm.load_dataset(m.dataset), reml=m.reml) for m in MODELS}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.key)
def test_satterthwaite_matches_lmertest(model, fits, lme4_refs):
    ref = lme4_refs[model.key]
    table = fits[model.key].coef_table()
    for name, df in ref["satterthwaite_df"].items():
        row = table.loc[name]
        assert row["df"] == pytest.approx(df, rel=3e-4), name
        assert row["Pr(>|t|)"] == pytest.approx(ref["p_values"][name], rel=2e-2, abs=1e-300), name
        assert row["Std. Error"] == pytest.approx(ref["se"][name], rel=1e-4), name


def test_exact_df_where_the_design_is_balanced(fits):
    """Balanced designs have closed forms: J − 1 for a random intercept's mean (Dyestuff: 5
    with REML), n − p when the only variance is at 0 (Dyestuff2: 29)."""
    assert fits["dyestuff_reml"].coef_table()["df"].iloc[0] == pytest.approx(5.0, rel=1e-7)
    assert fits["dyestuff2_reml_singular"].coef_table()["df"].iloc[0] == pytest.approx(29.0, rel=1e-9)
    sleep = fits["sleepstudy_slopes_reml"].coef_table()["df"]
    np.testing.assert_allclose(sleep.to_numpy(), 17.0, rtol=1e-6)


def test_contrasts_are_linear_in_the_covariance(fits):
    """A contrast's variance is cᵀΦc with Φ the fit's vcov, and a scaled contrast keeps its df."""
    fit = fits["sleepstudy_slopes_reml"]
    contrasts = np.asarray([[1.0, 0.0], [0.0, 1.0], [1.0, 5.0], [3.0, 15.0]])
    var, df = satterthwaite_df(fit, contrasts)
    np.testing.assert_allclose(var, np.einsum("kp,pq,kq->k", contrasts, fit.vcov.to_numpy(), contrasts), rtol=1e-9)
    assert df[3] == pytest.approx(df[2], rel=1e-9)


def test_df_against_a_finite_difference_hessian(fits):
    """The exact Hessian and gradient against central differences of the same functions."""
    from jaxmixed.core import _inference as inf

    fit = fits["penicillin_crossed_reml"]
    with jax.enable_x64(True):
        data = jm.design.prepare(fit.design, fit.arrays)
        stats = jm.core.model_statistics(data, jnp.asarray(fit.arrays.y))
        phi = jnp.asarray(fit.fit_result.phi)
        free = np.arange(phi.shape[0])
        zero = jnp.zeros(phi.shape[0], bool)
        exact = eqx.filter_jit(satterthwaite)(stats, phi, tuple(int(k) for k in free), True, jnp.eye(1))
        _, r2 = inf._criterion(inf._factorize(phi, stats, zero), stats, True)
        psi = np.concatenate([np.asarray(phi), [0.5 * np.log(float(r2) / float(inf._dof(stats, True)))]])

        # compiled once each: evaluated op by op the 4m² + 2m points took 40 s
        dev_jit = jax.jit(lambda x: inf._deviance(x, phi, free, zero, stats, True))
        var_jit = jax.jit(lambda x: inf._covariance(x, phi, free, zero, stats)[0, 0])

        def dev(x):
            return float(dev_jit(jnp.asarray(x)))

        def var(x):
            return float(var_jit(jnp.asarray(x)))

        m, h = len(psi), 1e-4
        hess = np.zeros((m, m))
        for i in range(m):
            for j in range(m):
                e_i, e_j = np.eye(m)[i] * h, np.eye(m)[j] * h
                hess[i, j] = (dev(psi + e_i + e_j) - dev(psi + e_i - e_j) - dev(psi - e_i + e_j) + dev(psi - e_i - e_j)) / (4 * h * h)
        grad = np.asarray([(var(psi + np.eye(m)[i] * h) - var(psi - np.eye(m)[i] * h)) / (2 * h) for i in range(m)])
        v = var(psi)
    df_fd = 2 * v**2 / (grad @ (2 * np.linalg.inv(hess)) @ grad)
    assert float(exact.df[0]) == pytest.approx(df_fd, rel=1e-4)


def test_z_tests_and_bad_ddf(fits):
    fit = fits["sleepstudy_slopes_reml"]
    z = fit.coef_table("none")
    assert list(z.columns) == ["Estimate", "Std. Error", "z value", "Pr(>|z|)"]
    assert z["Pr(>|z|)"].iloc[1] == pytest.approx(1.2746739e-11, rel=1e-6)  # 2·Φ(−6.7715)
    with pytest.raises(ValueError, match="ddf must be one of"):
        fit.coef_table("kenward")
    assert "Pr(>|t|)" in fit.summary() and "Pr(>|z|)" in fit.summary(ddf="none")


def test_two_sided_p_matches_known_quantiles():
    from jaxmixed.linear._tails import two_sided_p

    # t quantiles: t_{0.975, 10} = 2.228139, t_{0.995, 3} = 5.840909; normal: 1.959964
    np.testing.assert_allclose(two_sided_p(np.asarray([2.228139, 5.840909]), np.asarray([10.0, 3.0])), [0.05, 0.01], rtol=1e-5)
    np.testing.assert_allclose(two_sided_p(np.asarray([1.959964]), np.inf), [0.05], rtol=1e-5)


def test_contest_one_df_is_the_t_test(fits):
    """lmerTest's anova of the sleepstudy model: Days, Sum Sq 30031, NumDF 1, DenDF 17, F 45.853."""
    fit = fits["sleepstudy_slopes_reml"]
    table = fit.contest([0.0, 1.0])
    row = table.iloc[0]
    t = fit.coef_table().loc["Days"]
    assert row["F value"] == pytest.approx(t["t value"] ** 2, rel=1e-10)
    assert row["DenDF"] == pytest.approx(t["df"], rel=1e-10)
    assert row["Pr(>F)"] == pytest.approx(t["Pr(>|t|)"], rel=1e-8)
    assert row["F value"] == pytest.approx(45.853, abs=1e-3)
    assert row["Sum Sq"] == pytest.approx(30031.0, abs=1.0)
    assert row["NumDF"] == 1


def test_contest_several_df(fits):
    fit = fits["sleepstudy_slopes_reml"]
    beta, vcov = fit.fixed_effects.to_numpy(), fit.vcov.to_numpy()
    both = fit.contest(np.eye(2)).iloc[0]
    assert both["NumDF"] == 2
    assert both["F value"] == pytest.approx(beta @ np.linalg.solve(vcov, beta) / 2, rel=1e-10)
    assert both["DenDF"] == pytest.approx(17.0, rel=1e-6)  # both directions have 17 df
    scaled = fit.contest(np.asarray([[3.0, 1.0], [0.0, 2.0]])).iloc[0]  # same hypothesis, other basis
    assert scaled["F value"] == pytest.approx(both["F value"], rel=1e-9)
    # A rank-deficient L tests its row space: one direction here.
    assert fit.contest([[0.0, 1.0], [0.0, 2.0]]).iloc[0]["NumDF"] == 1
    shifted = fit.contest([0.0, 1.0], rhs=float(beta[1])).iloc[0]
    assert shifted["F value"] == pytest.approx(0.0, abs=1e-12) and shifted["Pr(>F)"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="columns"):
        fit.contest(np.eye(3))


def test_denominator_df_rule():
    from jaxmixed.linear._inference import _combined_df
    from jaxmixed.linear._tails import f_upper_tail

    assert _combined_df(np.asarray([7.0])) == 7.0
    assert _combined_df(np.asarray([9.0, 9.0])) == 9.0
    assert _combined_df(np.asarray([1.5, 30.0])) == 2.0
    e = 10 / 8 + 20 / 18
    assert _combined_df(np.asarray([10.0, 20.0])) == pytest.approx(2 * e / (e - 2))
    # F(2, 10) upper 5% point 4.102821; F(1, d) is t²
    assert f_upper_tail(4.102821, 2, 10) == pytest.approx(0.05, rel=1e-5)
