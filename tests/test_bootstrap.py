"""simulate and the parametric bootstrap (jaxmixed.core._simulate, jaxmixed.linear._bootstrap)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxmixed as jm
from jaxmixed.core._simulate import factor_codes

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep_fit():
    return jm.fit_reml(FORMULA, jm.load_dataset("sleepstudy"))


@pytest.fixture(scope="module")
def boot(sleep_fit):
    return sleep_fit.bootstrap(1000, key=7, verbose=False)


def test_simulate_draws_have_the_model_moments(sleep_fit):
    sims = sleep_fit.simulate(4000, key=1)
    assert sims.shape == (4000, 180)
    np.testing.assert_array_equal(sims[:3], sleep_fit.simulate(3, key=1))  # draw k is fold_in(key, k)
    assert not np.allclose(sims[:3], sleep_fit.simulate(3, key=2))
    days = sleep_fit.arrays.X[:, 1]
    mean = sleep_fit.fitted_fixed
    se_mean = np.sqrt(sims.var(axis=0) / len(sims))
    assert np.all(np.abs(sims.mean(axis=0) - mean) < 5 * se_mean)
    lam = np.asarray(sleep_fit.fit_result.lambdas[0])
    z = np.column_stack([np.ones_like(days), days])
    var = sleep_fit.sigma**2 * (np.einsum("ni,ij,nj->n", z, lam @ lam.T, z) + 1.0)
    np.testing.assert_allclose(sims.var(axis=0), var, rtol=0.1)
    # Rows of one subject share its random effects: their covariance is σ²zᵢᵀΛΛᵀzⱼ.
    cov01 = np.cov(sims[:, 0], sims[:, 1])[0, 1]
    assert cov01 == pytest.approx(sleep_fit.sigma**2 * z[0] @ lam @ lam.T @ z[1], rel=0.15)


def test_factor_codes_read_back_from_the_index():
    df = jm.load_dataset("Penicillin")
    design, arrays = jm.design.build_design("diameter ~ 1 + (1 | plate) + (1 | sample)", df)
    with jax.enable_x64(True):
        codes = factor_codes(jm.design.prepare(design, arrays))
    for got, want in zip(codes, arrays.codes, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)


def test_bootstrap_is_reproducible_and_independent_of_chunks(sleep_fit, boot):
    again = sleep_fit.bootstrap(1000, key=7, batch_size=96, verbose=False)
    np.testing.assert_allclose(
        again.replicates.to_numpy(), boot.replicates.to_numpy(), rtol=1e-9, equal_nan=True
    )
    other = sleep_fit.bootstrap(64, key=8, verbose=False)
    assert not np.allclose(other.replicates.to_numpy()[:5], boot.replicates.to_numpy()[:5])
    assert boot.n_replicates == 1000 and boot.converged.all()


def test_bootstrap_intervals_match_wald_widths_for_fixed_effects(sleep_fit, boot):
    """On sleepstudy the sampling distribution of β̂ is close to normal."""
    ci = boot.conf_int()
    wald = sleep_fit.conf_int()
    for name in ["(Intercept)", "Days"]:
        width = ci.loc[name].diff().iloc[-1]
        wald_width = wald.loc[name].diff().iloc[-1]
        assert width == pytest.approx(wald_width, rel=0.15)
        assert ci.loc[name].iloc[0] < sleep_fit.fixed_effects[name] < ci.loc[name].iloc[1]
    assert list(ci.columns) == ["2.5%", "97.5%"]
    assert list(ci.index[:4]) == [
        "sd_(Intercept)|Subject",
        "sd_Days|Subject",
        "cor_Days.(Intercept)|Subject",
        "sigma",
    ]
    # σ̂ = 25.6: its interval is tight around it; the SD intervals are positive.
    assert 20 < ci.loc["sigma"].iloc[0] < sleep_fit.sigma < ci.loc["sigma"].iloc[1] < 31
    assert (ci.loc[["sd_(Intercept)|Subject", "sd_Days|Subject"]].to_numpy() >= 0).all()
    assert boot.original["sigma"] == pytest.approx(sleep_fit.sigma)
    assert abs(boot.bias["Days"]) < 0.2 * boot.std_error["Days"] + 1e-9


def test_conf_int_methods(sleep_fit):
    boot_ci = sleep_fit.conf_int(method="boot", n_boot=200, key=3, verbose=False)
    assert "sigma" in boot_ci.index and "Days" in boot_ci.index
    with pytest.raises(ValueError, match="method"):
        sleep_fit.conf_int(method="likelihood")  # "profile" is a method now: tests/test_profile.py
    with pytest.raises(ValueError, match="positive"):
        sleep_fit.bootstrap(0)
    with pytest.raises(TypeError, match="key"):
        sleep_fit.simulate(2, key="a")


def test_bootstrap_of_a_crossed_model_runs_at_its_fit():
    fit = jm.fit_reml("diameter ~ 1 + (1 | plate) + (1 | sample)", jm.load_dataset("Penicillin"))
    boot = fit.bootstrap(50, key=0, verbose=False)
    assert boot.converged.all()
    med = boot.replicates.median()
    assert med["sd_(Intercept)|sample"] == pytest.approx(fit.varcorr.sdcor[1], rel=0.35)
    assert med["(Intercept)"] == pytest.approx(fit.fixed_effects["(Intercept)"], rel=0.01)
