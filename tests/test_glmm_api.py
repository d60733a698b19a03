"""``jm.fit_glmm`` against lme4's glmer: formulas, responses, offsets, families, results,
predictions, residuals, simulation, separation, the printed summary, errors.

References: tests/data/glmm_reference.json (tests/data/glmm_reference.R; lme4 1.1-31 and
its own cbpp and grouseticks data, tests/data/cbpp.csv and grouseticks.csv) and
tests/data/glmm_predict_reference.json (tests/data/glmm_predict_reference.R: predict,
fitted, residuals and the printed summary of the same fits) and
tests/data/glmm_anova_reference.json (tests/data/glmm_anova_reference.R: lme4's anova of
nested glmer fits). Simulations are checked
against the model's moments computed independently (Gauss-Hermite quadrature, or the
lognormal's closed form).
"""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, GLMM_CBIND, GLMM_GROUP, GLMM_GROUSE, fit_glmm_quietly
from test_laplace import REF

import jaxmixed as jm
from jaxmixed.design._offsets import split_offsets
from jaxmixed.glmm._response import RESPONSE, glmm_frame
from jaxmixed.glmm._separation import (
    SeparationWarning,
    overlap_certified,
    separated_coefficients,
    separated_responses,
)

PRED = json.loads((DATA / "glmm_predict_reference.json").read_text())["models"]
LRT = json.loads((DATA / "glmm_anova_reference.json").read_text())
pytestmark = GLMM_GROUP


@pytest.fixture(scope="module")
def slope_fit(cbpp_frame):
    """A correlated random slope: (1 + t | herd), t = period / 4."""
    return fit_glmm_quietly(GLMM_CBIND.replace("(1 | herd)", "(1 + t | herd)"), cbpp_frame)


@pytest.fixture(scope="module")
def new_cbpp() -> pd.DataFrame:
    """Rows of new data (herd "16" not in cbpp), as the R script made them."""
    return pd.DataFrame(PRED["cbpp_binomial"]["newdata"])


# ---------------------------------------------------------------- the fit


def test_cbind_fit_matches_lme4(cbpp_logit_fit):
    ref = REF["models"]["cbpp_laplace"]
    conv = ref["converged"]
    fit = cbpp_logit_fit
    assert fit.converged and not fit.singular and fit.separated == ()
    assert fit.loglik == pytest.approx(conv["logLik"], abs=1e-7)
    assert fit.aic == pytest.approx(ref["AIC"], abs=1e-6) and fit.bic == pytest.approx(ref["BIC"], abs=1e-6)
    assert list(fit.fixef.index) == ref["fixef"]["names"]
    np.testing.assert_allclose(fit.fixef, conv["fixef"], rtol=1e-5)
    np.testing.assert_allclose(fit.theta, conv["theta"], rtol=1e-5)
    assert list(fit.theta.index) == ref["theta"]["names"]
    table = fit.coef_table()
    np.testing.assert_allclose(table["Std. Error"], ref["se"], rtol=1e-3)
    np.testing.assert_allclose(fit.vcov, ref["vcov"], rtol=3e-3)
    modes = fit.ranef()["herd"]["(Intercept)"]
    lme4_modes = pd.Series(ref["ranef"]["herd"]["mode"]["(Intercept)"], index=ref["ranef"]["herd"]["levels"])
    np.testing.assert_allclose(modes[lme4_modes.index], lme4_modes, rtol=1e-4, atol=1e-6)
    vc = fit.varcorr()
    assert list(vc["grp"]) == ["herd"] and vc.loc[0, "var2"] is None
    assert vc.loc[0, "sdcor"] == pytest.approx(conv["theta"][0], rel=1e-5)
    assert "logLik -92.0263" in repr(cbpp_logit_fit)


def test_three_crossed_factors_are_named_in_lme4s_order(grouse_frame, grouse_fit):
    """grouseticks: θ by lme4's names and order (INDEX, BROOD, LOCATION: by number of
    levels), the variance components in that order, the fixed effects; predictions on the
    data itself as new data (every factor's levels looked up by label) are the fitted ones."""
    ref = REF["models"]["grouseticks_poisson"]
    assert list(grouse_fit.theta.index) == ref["theta"]["names"]
    np.testing.assert_allclose(grouse_fit.theta, ref["converged"]["theta"], rtol=2e-5)
    np.testing.assert_allclose(grouse_fit.fixef, ref["converged"]["fixef"], rtol=1e-5, atol=1e-7)
    vc = grouse_fit.varcorr()
    assert list(vc["grp"]) == ref["varcorr"]["grp"]
    np.testing.assert_allclose(vc["vcov"], ref["varcorr"]["vcov"], rtol=5e-5)
    shuffled = grouse_frame.sample(frac=1.0, random_state=0)
    np.testing.assert_allclose(grouse_fit.predict(shuffled), grouse_fit.predict()[shuffled.index], rtol=1e-12)


@pytest.mark.parametrize("units", [1e-4, 1e4])
def test_a_covariates_units_change_nothing_but_its_coefficient(grouse_frame, grouse_fit, units):
    """cHEIGHT in units 1e4 times smaller or larger: the same optimum (its coefficient and
    SE scaled), converged without a warning (the optimiser's coordinates follow the
    deviance's curvature, not the units). The program of grouse_fit: no new compilation."""
    fit = fit_glmm_quietly(GLMM_GROUSE, grouse_frame.assign(cHEIGHT=grouse_frame["cHEIGHT"] / units), family="poisson")
    assert fit.converged
    assert fit.loglik == pytest.approx(grouse_fit.loglik, abs=1e-7)
    scale = pd.Series(1.0, index=fit.fixef.index)
    scale["cHEIGHT"] = units
    np.testing.assert_allclose(fit.fixef, grouse_fit.fixef * scale, rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(fit.theta, grouse_fit.theta, rtol=2e-6)
    se = fit.coef_table()["Std. Error"]
    np.testing.assert_allclose(se, grouse_fit.coef_table()["Std. Error"] * scale, rtol=1e-5)


def test_proportions_with_trials_as_weights_are_the_same_model(cbpp_frame, cbpp_logit_fit):
    prop = cbpp_frame.assign(p=cbpp_frame["incidence"] / cbpp_frame["size"])
    fit = jm.fit_glmm("p ~ period + (1 | herd)", prop, weights="size")
    np.testing.assert_allclose(fit.fixef, cbpp_logit_fit.fixef, rtol=1e-10)
    assert fit.loglik == pytest.approx(cbpp_logit_fit.loglik, abs=1e-9)
    # the same fitted proportions; R's binomial draws for a proportion response are proportions
    np.testing.assert_allclose(fit.fitted(), cbpp_logit_fit.fitted(), rtol=1e-9)
    # the same draws (same seed), as proportions rather than cbind's (successes, failures)
    successes = cbpp_logit_fit.simulate(2, seed=5).xs("incidence", axis=1, level=1).to_numpy()
    np.testing.assert_allclose(fit.simulate(2, seed=5).to_numpy() * cbpp_frame["size"].to_numpy()[:, None], successes)


def test_probit_link_matches_lme4(cbpp_frame):
    conv = REF["models"]["cbpp_probit"]["converged"]
    fit = jm.fit_glmm(GLMM_CBIND, cbpp_frame, family=jm.Binomial("probit"))
    assert fit.loglik == pytest.approx(conv["logLik"], abs=1e-6)
    np.testing.assert_allclose(fit.fixef, conv["fixef"], rtol=1e-5)


# ---------------------------------------------------------------- offsets


def test_poisson_with_an_offset_column_matches_lme4(cbpp_frame):
    conv = REF["models"]["cbpp_offset_poisson"]["converged"]
    data = cbpp_frame.assign(log_size=np.log(cbpp_frame["size"]))
    fit = jm.fit_glmm("incidence ~ period + (1 | herd)", data, family="poisson", offset="log_size")
    assert fit.loglik == pytest.approx(conv["logLik"], abs=1e-6)
    np.testing.assert_allclose(fit.fixef, conv["fixef"], rtol=1e-5)


def test_offset_terms_in_the_formula_match_lme4(cbpp_frame, cbpp_offset_fit, new_cbpp):
    """``+ offset(log(size))``: the fit (lme4's glmm_reference), its linear predictor, and
    predictions on new data with the offset evaluated on the new rows (lme4's predict)."""
    conv = REF["models"]["cbpp_offset_poisson"]["converged"]
    ref = PRED["cbpp_offset"]
    assert cbpp_offset_fit.offsets.terms == ("log(size)",)
    assert cbpp_offset_fit.loglik == pytest.approx(conv["logLik"], abs=1e-6)
    np.testing.assert_allclose(cbpp_offset_fit.fixef, conv["fixef"], rtol=1e-5)
    np.testing.assert_allclose(cbpp_offset_fit.predict(), ref["eta"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cbpp_offset_fit.predict(re_form="~0"), ref["eta_fixed"], rtol=1e-6, atol=1e-6)
    link = cbpp_offset_fit.predict(new_cbpp, allow_new_levels=True)
    np.testing.assert_allclose(link, ref["predict_new_link"], rtol=1e-6, atol=1e-6)
    resp = cbpp_offset_fit.predict(new_cbpp, type="response", allow_new_levels=True)
    np.testing.assert_allclose(resp, ref["predict_new_response"], rtol=1e-6)
    np.testing.assert_allclose(cbpp_offset_fit.predict(new_cbpp, re_form=np.nan), ref["predict_new_fixed"], rtol=1e-6, atol=1e-6)
    # the offset moves with the new rows' sizes: doubling them adds log 2
    np.testing.assert_allclose(cbpp_offset_fit.predict(cbpp_frame), cbpp_offset_fit.predict(), rtol=1e-12)
    bigger = new_cbpp.assign(size=2 * new_cbpp["size"])
    np.testing.assert_allclose(cbpp_offset_fit.predict(bigger, allow_new_levels=True), link + np.log(2.0), rtol=1e-12)
    with pytest.raises(ValueError, match=r"cannot evaluate offset\(log\(size\)\) on the data"):
        cbpp_offset_fit.predict(new_cbpp.drop(columns="size"), allow_new_levels=True)


def test_offsets_are_summed_as_lme4_sums_them(cbpp_frame, cbpp_offset_fit, new_cbpp):
    """``offset(half)`` in the formula and ``offset=`` half (half = log(size)/2) are the
    model with offset log(size): lme4's fit and linear predictor. On new data the
    argument's column is evaluated too (lme4 drops it there); an array needs ``offset=``."""
    ref = PRED["cbpp_offset_sum"]
    both = fit_glmm_quietly("incidence ~ period + offset(half) + (1 | herd)", cbpp_frame, family="poisson", offset="half")
    np.testing.assert_allclose(both.offsets.values, np.log(cbpp_frame["size"]), rtol=1e-15)
    np.testing.assert_allclose(both.fixef, ref["fixef"]["values"], rtol=1e-5)
    np.testing.assert_allclose(both.predict(), ref["eta"], rtol=1e-6, atol=1e-6)
    new = new_cbpp.assign(half=np.log(new_cbpp["size"]) / 2)
    expected = cbpp_offset_fit.predict(new, allow_new_levels=True)
    np.testing.assert_allclose(both.predict(new, allow_new_levels=True), expected, rtol=1e-8)
    array = fit_glmm_quietly("incidence ~ period + offset(half) + (1 | herd)", cbpp_frame, family="poisson", offset=cbpp_frame["half"].to_numpy())
    with pytest.raises(ValueError, match="fitted with offset= an array"):
        array.predict(new, allow_new_levels=True)
    np.testing.assert_allclose(array.predict(new, allow_new_levels=True, offset=new["half"].to_numpy()), expected, rtol=1e-8)
    listed = fit_glmm_quietly("incidence ~ period + offset(half) + (1 | herd)", cbpp_frame, family="poisson", offset=cbpp_frame["half"].tolist())
    with pytest.raises(ValueError, match="fitted with offset= an array"):  # a list is an array too
        listed.predict(new, allow_new_levels=True)
    several = split_offsets(" period + offset(a) + offset(np.log(b) / 2) + (1 | g)")
    assert several == ("period + (1 | g)", ("a", "np.log(b) / 2"))
    assert split_offsets("offset(a)") == ("1", ("a",))
    assert split_offsets("x + my_offset(a)") == ("x + my_offset(a)", ())


# ---------------------------------------------------------------- predictions and residuals


def test_predictions_fitted_and_residuals_match_lme4(cbpp_logit_fit, new_cbpp):
    ref = PRED["cbpp_binomial"]
    fit = cbpp_logit_fit
    np.testing.assert_allclose(fit.predict(), ref["eta"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fit.predict(type="response"), ref["mu"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fit.fitted(), ref["mu"], rtol=1e-6, atol=1e-8)
    for na in ("~0", "NA", np.nan, pd.NA):
        np.testing.assert_allclose(fit.predict(re_form=na), ref["eta_fixed"], rtol=1e-6, atol=1e-6)
    for kind, values in ref["residuals"].items():
        np.testing.assert_allclose(fit.residuals(kind), values, rtol=1e-5, atol=1e-6, err_msg=kind)
    np.testing.assert_array_equal(fit.residuals(), fit.residuals("deviance"))
    link = fit.predict(new_cbpp, allow_new_levels=True)
    np.testing.assert_allclose(link, ref["predict_new_link"], rtol=1e-6, atol=1e-6)
    resp = fit.predict(new_cbpp, type="response", allow_new_levels=True)
    np.testing.assert_allclose(resp, ref["predict_new_response"], rtol=1e-6)
    np.testing.assert_allclose(fit.predict(new_cbpp, re_form="~0"), ref["predict_new_fixed"], rtol=1e-6, atol=1e-6)
    # the new herd's rows are at the population level; the others carry their herd's mode
    herd = fit.ranef()["herd"]["(Intercept)"]
    fixed = fit.predict(new_cbpp, re_form="~0")
    np.testing.assert_allclose(link - fixed, [herd["1"], herd["5"], 0.0, 0.0, herd["9"]], atol=1e-14)
    with pytest.raises(ValueError, match=r"1 level\(s\) of 'herd' not seen in fitting \('16'\).*allow_new_levels=True"):
        fit.predict(new_cbpp)
    with pytest.raises(ValueError, match="type must be 'link' or 'response'"):
        fit.predict(type="probability")
    with pytest.raises(NotImplementedError, match="a subset of the random-effects terms"):
        fit.predict(re_form="~(1 | herd)")
    with pytest.raises(ValueError, match="type must be one of"):
        fit.residuals("partial")


def test_conditional_variances_match_lme4(cbpp_logit_fit, grouse_fit):
    """ranef(condVar = TRUE): each level's conditional variance, lme4's postVar (one
    factor, cbpp; three crossed factors, grouseticks), matched by level name."""
    for fit, key in ((cbpp_logit_fit, "cbpp_laplace"), (grouse_fit, "grouseticks_poisson")):
        plain, with_var = fit.ranef(), fit.ranef(condVar=True)
        assert set(with_var) == set(REF["models"][key]["ranef"])
        for name, theirs in REF["models"][key]["ranef"].items():
            assert "condVar" not in plain[name].attrs
            cov = with_var[name].attrs["condVar"]
            assert cov.shape == (len(theirs["levels"]), 1, 1)
            var = pd.Series(cov[:, 0, 0], index=with_var[name].index)[theirs["levels"]]
            np.testing.assert_allclose(var, theirs["condvar"]["(Intercept)"], rtol=1e-4, err_msg=name)
            mode = with_var[name]["(Intercept)"][theirs["levels"]]
            np.testing.assert_allclose(mode, theirs["mode"]["(Intercept)"], rtol=1e-4, atol=1e-5, err_msg=name)
            np.testing.assert_array_equal(fit.random_effects_var[name].to_numpy()[:, 0], cov[:, 0, 0])


def test_a_random_slope_predicts_and_has_conditional_covariances_as_lme4(slope_fit, new_cbpp):
    """(1 + t | herd): θ, predictions on new rows (each row's t times its herd's slope), and
    the 2 × 2 conditional covariance of each herd's modes (lme4's postVar)."""
    ref = PRED["cbpp_slope"]
    np.testing.assert_allclose(slope_fit.theta, ref["theta"], rtol=2e-5)
    assert list(slope_fit.theta.index) == ["herd.(Intercept)", "herd.t.(Intercept)", "herd.t"]
    np.testing.assert_allclose(slope_fit.predict(), ref["eta"], rtol=1e-5, atol=1e-5)
    for kind, values in ref["residuals"].items():
        np.testing.assert_allclose(slope_fit.residuals(kind), values, rtol=1e-5, atol=1e-5, err_msg=kind)
    link = slope_fit.predict(new_cbpp, allow_new_levels=True)
    np.testing.assert_allclose(link, ref["predict_new_link"], rtol=1e-5, atol=1e-5)
    resp = slope_fit.predict(new_cbpp, type="response", allow_new_levels=True)
    np.testing.assert_allclose(resp, ref["predict_new_response"], rtol=1e-5)
    table = slope_fit.ranef(condVar=True)["herd"]
    assert list(table.columns) == ref["ranef"]["terms"]
    levels = ref["ranef"]["levels"]
    np.testing.assert_allclose(table.loc[levels].to_numpy(), ref["ranef"]["mode"], rtol=1e-4, atol=1e-5)
    cov = pd.Series(list(table.attrs["condVar"]), index=table.index)[levels]
    np.testing.assert_allclose(np.stack(cov.to_list()).reshape(len(levels), 4), ref["ranef"]["condvar"], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- simulation


def _logistic_moments(fit, nodes=60):
    """E over the herd effect b ~ N(0, σ²) (Gauss-Hermite) of μᵢ(b) for every row
    (nodes, n), with the node weights: the model's marginal law, independently of the fit's
    code (σ, β read from its θ and fixef)."""
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    eta = fit.predict(re_form="~0")[None, :] + fit.theta.iloc[0] * z[:, None]
    return 1.0 / (1.0 + np.exp(-eta)), w


def test_simulating_new_herd_effects_gives_the_marginal_model(cbpp_frame, cbpp_logit_fit):
    """re_form = "~0" (lme4's default NA): new herd effects per simulation, shared by a
    herd's rows. Row means and herd totals' variances against the marginal model."""
    nsim = 4000
    sims = cbpp_logit_fit.simulate(nsim, seed=1)
    assert list(sims.columns.get_level_values(0)[:2]) == ["sim_1", "sim_1"]
    assert list(sims.columns.get_level_values(1)[:2]) == ["incidence", "size - incidence"]
    k = sims.xs("incidence", axis=1, level=1).to_numpy()
    size = cbpp_frame["size"].to_numpy()
    np.testing.assert_array_equal(k + sims.xs("size - incidence", axis=1, level=1).to_numpy(), size[:, None] + 0 * k)
    mu, w = _logistic_moments(cbpp_logit_fit)
    mean = size * (w @ mu)
    var = size * (w @ (mu * (1 - mu))) + size**2 * (w @ mu**2 - (w @ mu) ** 2)
    assert np.max(np.abs(k.mean(axis=1) - mean) / np.sqrt(var / nsim)) < 4.5
    # a herd's rows share its effect: the variance of herd totals is the marginal one
    herd = cbpp_frame["herd"].to_numpy()
    for h in ("1", "7", "13"):
        rows = herd == h
        totals = k[rows].sum(axis=0)
        f = mu[:, rows] @ size[rows]
        expected = w @ (mu[:, rows] * (1 - mu[:, rows])) @ size[rows] + (w @ f**2 - (w @ f) ** 2)
        assert totals.var() == pytest.approx(expected, rel=0.15), h
    pd.testing.assert_frame_equal(cbpp_logit_fit.simulate(3, seed=7), cbpp_logit_fit.simulate(3, seed=7))
    assert not cbpp_logit_fit.simulate(3, seed=7).equals(cbpp_logit_fit.simulate(3, seed=8))
    assert cbpp_logit_fit.simulate(1, seed=2).attrs["seed"] == 2


def test_simulating_conditional_on_the_modes(cbpp_frame, cbpp_logit_fit):
    """re_form = None (lme4's NULL): y from the fitted means, rows independent."""
    nsim = 4000
    k = cbpp_logit_fit.simulate(nsim, seed=3, re_form=None).xs("incidence", axis=1, level=1).to_numpy()
    size, mu = cbpp_frame["size"].to_numpy(), cbpp_logit_fit.fitted()
    var = size * mu * (1 - mu)
    assert np.max(np.abs(k.mean(axis=1) - size * mu) / np.sqrt(var / nsim)) < 4.5
    rows = cbpp_frame["herd"].to_numpy() == "1"
    assert k[rows].sum(axis=0).var() == pytest.approx(var[rows].sum(), rel=0.15)


def test_simulated_poisson_counts_follow_the_lognormal_mean(cbpp_offset_fit):
    """New herd effects: E[y] = exp(xβ + offset + σ²/2), Var[y] = E[y] + E[y]²(exp(σ²) − 1)."""
    nsim = 4000
    sims = cbpp_offset_fit.simulate(nsim, seed=11)
    assert list(sims.columns[:2]) == ["sim_1", "sim_2"] and sims.to_numpy().dtype.kind == "i"
    s2 = cbpp_offset_fit.theta.iloc[0] ** 2
    mean = np.exp(cbpp_offset_fit.predict(re_form="~0") + s2 / 2)
    var = mean + mean**2 * np.expm1(s2)
    assert np.max(np.abs(sims.to_numpy().mean(axis=1) - mean) / np.sqrt(var / nsim)) < 4.5


# ---------------------------------------------------------------- separation


def test_complete_separation_is_warned():
    """Every row of treatment B a success: the likelihood rises without bound in trtB. The
    fit warns, names it, and says so in the summary; the string response simulates as its
    labels."""
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(12), 8)
    trt = np.tile(["A", "B"], 48)
    x = rng.normal(size=96)
    eta = -0.3 + 0.5 * x + 0.7 * rng.normal(size=12)[g]
    r = np.where((trt == "B") | (rng.random(96) < 1 / (1 + np.exp(-eta))), "yes", "no")
    data = pd.DataFrame({"r": r, "g": [f"g{i}" for i in g], "trt": trt, "x": x})
    with pytest.warns(SeparationWarning, match=r"separation: the likelihood keeps rising as trtB \(estimate"):
        fit = jm.fit_glmm("r ~ trt + x + (1 | g)", data)
    assert fit.separated == ("trtB",)
    se = fit.coef_table().loc["trtB", "Std. Error"]
    assert fit.fixef["trtB"] > 10 and (not np.isfinite(se) or se > 100)
    assert "complete or quasi-complete separation: trtB" in fit.summary()
    sims = fit.simulate(20, seed=0)
    assert set(np.unique(sims.to_numpy())) == {"no", "yes"}
    assert (sims[trt == "B"] == "yes").to_numpy().mean() > 0.99


def _separation_design(rng, n: int):
    """(a 0/1 level alternating over the n rows, a normal covariate from ``rng``, the
    design [1, level, x], its names)."""
    level = np.tile([0.0, 1.0], n // 2)
    x = rng.normal(size=n)
    return level, x, np.c_[np.ones(n), level, x], ["(Intercept)", "tB", "x"]


def test_the_separation_rule():
    """The linear program on its own: quasi-complete separation by a factor level (binomial;
    Poisson with a level of zero counts), complete separation by a continuous predictor,
    and none for cbpp (binomial and Poisson)."""
    rng = np.random.default_rng(0)
    n = 200
    level, x, X, names = _separation_design(rng, n)
    y = np.where(level == 1, 1.0, rng.binomial(1, 0.4, n))
    assert separated_coefficients(X, y, names, binomial=True) == ["tB"]
    assert separated_coefficients(X, np.where(level == 1, 0.0, rng.poisson(2.0, n)), names, binomial=False) == ["tB"]
    assert separated_coefficients(X[:, [0, 2]], (x > 0.2).astype(float), ["(Intercept)", "x"], binomial=True) == [
        "(Intercept)",
        "x",
    ]
    assert separated_coefficients(X, rng.binomial(1, 0.5, n).astype(float), names, binomial=True) == []
    cbpp = pd.read_csv(DATA / "cbpp.csv")
    xc = np.c_[np.ones(len(cbpp)), pd.get_dummies(cbpp["period"], drop_first=True).to_numpy(float)]
    assert separated_coefficients(xc, (cbpp["incidence"] / cbpp["size"]).to_numpy(), list("abcd"), binomial=True) == []
    assert separated_coefficients(xc, cbpp["incidence"].to_numpy(float), list("abcd"), binomial=False) == []


def test_the_overlap_certificate_never_clears_a_separated_response():
    """The certificate is exact one way: whatever fitted means it is given, a separated
    response is never certified (its coefficients cannot keep their signs), and with the
    means of a fit it clears the responses that overlap, so the LP decides only the rest;
    separated_responses gives the LP's answer for every response."""
    rng = np.random.default_rng(3)
    n = 120
    level, x, X, names = _separation_design(rng, n)
    overlap = rng.binomial(1, 0.4, (6, n)).astype(float)
    separated = np.where(level == 1, 1.0, overlap[:3])  # quasi-complete in tB
    ys = np.concatenate([overlap, separated, (x > 0.3).astype(float)[None, :]])  # then complete in x
    weights = np.ones(n)
    for _ in range(5):  # any means at all: never a certificate for the separated ones
        mus = rng.uniform(0.01, 0.99, ys.shape)
        assert not overlap_certified(X, ys[6:], mus[6:], weights, binomial=True).any()
    # the means of a fit (here the GLM's, by IRLS): the overlapping responses are certified
    mus = np.empty_like(overlap)
    for k, y in enumerate(overlap):
        beta = np.zeros(3)
        for _ in range(25):
            mu = 1 / (1 + np.exp(-X @ beta))
            beta = beta + np.linalg.solve(X.T @ (X * (mu * (1 - mu))[:, None]), X.T @ (y - mu))
        mus[k] = 1 / (1 + np.exp(-X @ beta))
    assert overlap_certified(X, overlap, mus, weights, binomial=True).all()
    all_mus = np.concatenate([mus, np.full((4, n), 0.5)])
    found = separated_responses(X, ys, all_mus, weights, names, binomial=True)
    assert found == {6: ["tB"], 7: ["tB"], 8: ["tB"], 9: separated_coefficients(X, ys[9], names, binomial=True)}
    assert "x" in found[9]
    poisson = np.where(level == 1, 0.0, rng.poisson(2.0, n))[None, :]
    assert not overlap_certified(X, poisson, np.full((1, n), 1.5), weights, binomial=False).any()
    assert separated_responses(X, poisson, np.full((1, n), 1.5), weights, names, binomial=False) == {0: ["tB"]}


def test_coef_is_lme4s(cbpp_logit_fit):
    """coef(): β̂ plus each herd's mode in the intercept column (lme4's coef of the glmer fit,
    tests/data/coef_reference.R, within 1e-4)."""
    ref = json.loads((DATA / "coef_reference.json").read_text())["cbpp"]["factors"]["herd"]
    got = cbpp_logit_fit.coef()["herd"]
    assert list(got.columns) == ref["columns"] and sorted(got.index.astype(str)) == sorted(ref["rows"])
    got = got.loc[ref["rows"]]  # herd read as text here (levels sorted as text); R's sort numerically
    np.testing.assert_allclose(got.to_numpy(), np.asarray(ref["values"]), rtol=1e-4, atol=1e-5)
    modes = cbpp_logit_fit.random_effects["herd"]["(Intercept)"].loc[ref["rows"]].to_numpy()
    np.testing.assert_array_equal(got["(Intercept)"], cbpp_logit_fit.fixef["(Intercept)"] + modes)
    np.testing.assert_array_equal(got["period2"], np.full(len(got), cbpp_logit_fit.fixef["period2"]))


def test_refit_with_a_new_response(cbpp_logit_fit, cbpp_offset_fit, cbpp_frame):
    """refit(newresp): successes and failures swapped give −β̂, the same θ and logLik (the
    binomial is symmetric); a Poisson refit equals fit_glmm on that data; a response the
    family cannot take is an error."""
    y = np.asarray(cbpp_logit_fit.arrays.y)
    swapped = fit_glmm_quietly_refit(cbpp_logit_fit, 1.0 - y)
    np.testing.assert_allclose(swapped.fixef, -cbpp_logit_fit.fixef, rtol=1e-5, atol=1e-7)
    assert swapped.theta.iloc[0] == pytest.approx(cbpp_logit_fit.theta.iloc[0], rel=1e-5)
    assert swapped.loglik == pytest.approx(cbpp_logit_fit.loglik, abs=1e-7)
    counts = cbpp_frame["size"] - cbpp_frame["incidence"]
    again = cbpp_offset_fit.refit(counts)
    direct = fit_glmm_quietly(
        "incidence ~ period + offset(log(size)) + (1 | herd)", cbpp_frame.assign(incidence=counts), family="poisson"
    )
    assert again.loglik == pytest.approx(direct.loglik, rel=1e-12)
    np.testing.assert_allclose(again.fixef, direct.fixef, rtol=1e-10)
    with pytest.raises(ValueError, match="not whole numbers"):
        cbpp_offset_fit.refit(counts + 0.5)
    with pytest.raises(ValueError, match=r"one value per fitted row \(56\)"):
        cbpp_offset_fit.refit(counts[:10])


def fit_glmm_quietly_refit(fit, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit.refit(y)


def test_summary_carries_its_tables(cbpp_logit_fit):
    s = cbpp_logit_fit.summary()
    assert isinstance(s, str) and repr(s) == str(s) and str(cbpp_logit_fit) == s
    pd.testing.assert_frame_equal(s.tables["fixed effects"], cbpp_logit_fit.coef_table())
    pd.testing.assert_frame_equal(s.tables["random effects"], cbpp_logit_fit.varcorr())


# ---------------------------------------------------------------- likelihood-ratio tests


def _check_lrt(table: pd.DataFrame, ref: dict) -> None:
    cols = ref["columns"]
    np.testing.assert_array_equal(table["npar"], cols["npar"])
    np.testing.assert_allclose(table["logLik"], cols["logLik"], rtol=0, atol=5e-5)
    np.testing.assert_allclose(table[["AIC", "BIC", "deviance"]].to_numpy(), np.c_[cols["AIC"], cols["BIC"], cols["deviance"]], rtol=0, atol=1e-4)  # fmt: skip
    assert table["Chisq"].iloc[1] == pytest.approx(cols["Chisq"][1], abs=1e-4)
    assert table["Df"].iloc[1] == cols["Df"][1]
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(cols["Pr(>Chisq)"][1], rel=1e-4)
    assert np.isnan(table["Chisq"].iloc[0]) and table.index.name == "model"


def test_anova_of_nested_glmms_is_lme4s(cbpp_frame, cbpp_logit_fit, grouse_frame, grouse_fit):
    """jm.anova of glmer-like fits: lme4's anova table (Chisq 25.61 on 3 df for cbpp's
    period; 1.497 on 1 df for grouseticks' LOCATION), models ordered by npar; no REML refit."""
    small = fit_glmm_quietly(LRT["cbpp_period"]["small"], cbpp_frame)
    _check_lrt(jm.anova(cbpp_logit_fit, small), LRT["cbpp_period"])
    small = fit_glmm_quietly(LRT["grouseticks_location"]["small"], grouse_frame, family="poisson")
    table = jm.anova(small, grouse_fit)
    _check_lrt(table, LRT["grouseticks_location"])
    assert list(table.index) == [LRT["grouseticks_location"]["small"], GLMM_GROUSE]


def test_anova_refuses_glmms_it_cannot_compare(cbpp_frame, cbpp_logit_fit, cbpp_offset_fit):
    """Another family, link or nAGQ, a linear mixed model, or other trials: clear errors."""
    with pytest.raises(ValueError, match=r"different kinds \(GLMM binomial\(logit\), nAGQ = 1, GLMM poisson"):
        jm.anova(cbpp_logit_fit, cbpp_offset_fit)
    probit = fit_glmm_quietly(GLMM_CBIND, cbpp_frame, family=jm.Binomial(link="probit"))
    with pytest.raises(ValueError, match="different kinds"):
        jm.anova(cbpp_logit_fit, probit)
    lmm = jm.fit_reml("incidence ~ period + (1 | herd)", cbpp_frame)
    with pytest.raises(ValueError, match="linear mixed model"):
        jm.anova(lmm, cbpp_offset_fit)
    doubled = fit_glmm_quietly(
        "incidence / size ~ 1 + (1 | herd)", cbpp_frame.assign(size2=2 * cbpp_frame["size"]), weights="size2"
    )
    with pytest.raises(ValueError, match="not of the same data"):
        jm.anova(cbpp_logit_fit, doubled)


# ---------------------------------------------------------------- summary


def _same_print(ours: str, theirs: list[str]) -> None:
    """``ours`` reads as lme4's printed ``theirs``: line for line the same text and
    widths, numbers equal within 3 units of their last printed digit (lme4's optimum and
    its finite-difference standard errors differ from ours in the 6th digit)."""
    mine = ours.split("\n")
    theirs = [t.rstrip().replace("[glmerMod]", "[GLMMResults]") for t in theirs]
    assert len(mine) == len(theirs), "\n".join(mine)
    for a, b in zip(mine, theirs, strict=True):
        assert len(a) == len(b), f"\n{a}\n{b}"
        for x, y in zip(a.split(), b.split(), strict=True):
            if x != y:
                assert re.fullmatch(r"-?\d+\.\d+", y), f"{x!r} != {y!r} in\n{a}\n{b}"
                unit = 10.0 ** -len(y.split(".")[1])
                assert abs(float(x) - float(y)) <= 3 * unit + 1e-12, f"{x} != {y} in\n{a}\n{b}"


@pytest.mark.parametrize("key", ["cbpp_binomial", "cbpp_offset", "cbpp_slope", "grouseticks"])
def test_summary_prints_as_lme4s(key, cbpp_logit_fit, cbpp_offset_fit, slope_fit, grouse_fit):
    """The whole printed summary (family, criteria, scaled residuals, variance components
    of one and of three factors and of a correlated slope, numbers of levels, z tests with
    codes, correlations)."""
    fits = {"cbpp_binomial": cbpp_logit_fit, "cbpp_offset": cbpp_offset_fit, "cbpp_slope": slope_fit, "grouseticks": grouse_fit}
    fit = fits[key]
    _same_print(fit.summary(), PRED[key]["summary"])
    assert str(fit) == fit.summary()


# ---------------------------------------------------------------- input


def test_a_two_level_response_is_read_as_r_reads_it():
    """A factor, string or boolean response: its first level is failure (0), as in R."""
    frame = pd.DataFrame({"r": ["N", "Y", "Y", "N"], "g": list("aabb")})
    work = glmm_frame("r ~ 1 + (1 | g)", frame, None, None, binomial=True)
    np.testing.assert_array_equal(work.frame[RESPONSE], [0.0, 1.0, 1.0, 0.0])
    assert work.response.kind == "categorical" and work.response.levels == ("N", "Y")
    flags = frame.assign(r=[True, False, True, True])
    work = glmm_frame("r ~ 1 + (1 | g)", flags, None, None, binomial=True)
    np.testing.assert_array_equal(work.frame[RESPONSE], [1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="categorical with 3 levels"):
        glmm_frame("r ~ 1 + (1 | g)", frame.assign(r=list("xyzx")), None, None, binomial=True)


def test_bad_input_is_named(cbpp_frame):
    with pytest.raises(ValueError, match="weights= must not be given too"):
        jm.fit_glmm(GLMM_CBIND, cbpp_frame, weights="size")
    with pytest.raises(ValueError, match="proportion in \\[0, 1\\]"):
        jm.fit_glmm("size ~ period + (1 | herd)", cbpp_frame)
    with pytest.raises(ValueError, match="negative or not finite"):
        jm.fit_glmm("y ~ period + (1 | herd)", cbpp_frame.assign(y=-cbpp_frame["incidence"]), family="poisson")
    with pytest.raises(ValueError, match="not whole numbers"):
        jm.fit_glmm("y ~ period + (1 | herd)", cbpp_frame.assign(y=cbpp_frame["incidence"] + 0.5), family="poisson")
    with pytest.raises(ValueError, match="offset must have one value per row"):
        jm.fit_glmm(GLMM_CBIND, cbpp_frame, offset=np.zeros(3))
    with pytest.raises(ValueError, match="family must be"):
        jm.fit_glmm(GLMM_CBIND, cbpp_frame, family="gamma")
    with pytest.raises(ValueError, match="jaxmixed uses itself"):
        jm.fit_glmm(GLMM_CBIND, cbpp_frame.assign(jaxmixed_glmm_response=1.0))
    with pytest.raises(ValueError, match="cbind\\(\\) of a binomial response takes"):
        jm.fit_glmm("cbind(incidence) ~ period + (1 | herd)", cbpp_frame)
    with pytest.raises(ValueError, match="cbind\\(successes, failures\\) is a binomial response"):
        jm.fit_glmm(GLMM_CBIND, cbpp_frame, family="poisson")
    with pytest.raises(ValueError, match="'k' must count events \\(whole numbers ≥ 0\\); 1 row"):
        jm.fit_glmm("cbind(k, size - k) ~ period + (1 | herd)", cbpp_frame.assign(k=cbpp_frame["incidence"].where(cbpp_frame.index != 2, -1)))
    with pytest.raises(ValueError, match="is a two-level factor: that is a binomial response"):
        jm.fit_glmm("sick ~ period + (1 | herd)", cbpp_frame.assign(sick=np.where(cbpp_frame["incidence"] > 0, "yes", "no")), family="poisson")
    with pytest.raises(ValueError, match="offset\\(\\) must be a term added to the formula on its own"):
        jm.fit_glmm("incidence ~ period - offset(log(size)) + (1 | herd)", cbpp_frame, family="poisson")
    with pytest.raises(ValueError, match="cannot evaluate offset\\(log\\(sizes\\)\\) on the data"):
        jm.fit_glmm("incidence ~ period + offset(log(sizes)) + (1 | herd)", cbpp_frame, family="poisson")
    with pytest.raises(ValueError, match="offset\\(period\\): the column 'period' is not numeric"):
        jm.fit_glmm("incidence ~ offset(period) + (1 | herd)", cbpp_frame, family="poisson")
    with pytest.raises(ValueError, match="offset\\(log\\(incidence\\)\\) has 22 missing or non-finite"):
        jm.fit_glmm("incidence ~ period + offset(log(incidence)) + (1 | herd)", cbpp_frame, family="poisson")
    with pytest.raises(ValueError, match="offset has 1 missing or non-finite"):
        jm.fit_glmm(GLMM_CBIND, cbpp_frame, offset=np.r_[np.nan, np.zeros(len(cbpp_frame) - 1)])
    with pytest.raises(ValueError, match="nAGQ must be an integer from 1 to 25, got 2.7"):
        jm.fit_glmm(GLMM_CBIND, cbpp_frame, nAGQ=2.7)
    with pytest.raises(ValueError, match="nAGQ = 0"):
        jm.fit_glmm(GLMM_CBIND, cbpp_frame, nAGQ=0)
    with pytest.raises(ValueError, match="numbers of trials: 1 row"):
        some = cbpp_frame.assign(p=(cbpp_frame["incidence"] > 0).astype(float))
        jm.fit_glmm("p ~ period + (1 | herd)", some, weights=np.r_[1.5, np.ones(len(cbpp_frame) - 1)])
