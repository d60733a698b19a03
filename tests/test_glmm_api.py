"""``jm.fit_glmm`` against lme4's glmer: formulas, responses, families, results, errors.

References: tests/data/glmm_reference.json (tests/data/glmm_reference.R; lme4 1.1-31 and
its own cbpp data, tests/data/cbpp.csv).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DATA
from test_laplace import REF

import jaxmixed as jm

CBIND = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.fixture(scope="module")
def cbpp() -> pd.DataFrame:
    df = pd.read_csv(DATA / "cbpp.csv")
    return df.assign(herd=df["herd"].astype(str), period=df["period"].astype(str))


@pytest.fixture(scope="module")
def logit_fit(cbpp):
    return jm.fit_glmm(CBIND, cbpp)


def test_cbind_fit_matches_lme4(logit_fit):
    ref = REF["models"]["cbpp_laplace"]
    conv = ref["converged"]
    fit = logit_fit
    assert fit.converged and not fit.singular
    assert fit.loglik == pytest.approx(conv["logLik"], abs=1e-7)
    assert fit.aic == pytest.approx(ref["AIC"], abs=1e-6) and fit.bic == pytest.approx(ref["BIC"], abs=1e-6)
    assert list(fit.fixef.index) == ref["fixef"]["names"]
    np.testing.assert_allclose(fit.fixef, conv["fixef"], rtol=1e-5)
    np.testing.assert_allclose(fit.theta, conv["theta"], rtol=1e-5)
    assert list(fit.theta.index) == ref["theta"]["names"]
    table = fit.coef_table()
    np.testing.assert_allclose(table["Std. Error"], ref["se"], rtol=1e-3)
    modes = fit.ranef()["herd"]["(Intercept)"]
    lme4_modes = pd.Series(ref["ranef"]["herd"]["mode"]["(Intercept)"], index=ref["ranef"]["herd"]["levels"])
    np.testing.assert_allclose(modes[lme4_modes.index], lme4_modes, rtol=1e-4, atol=1e-6)
    vc = fit.varcorr()
    assert vc.loc[0, "sdcor"] == pytest.approx(conv["theta"][0], rel=1e-5)


def test_summary_reads_like_lme4s(logit_fit):
    text = logit_fit.summary()
    assert "Laplace Approximation" in text and "Family: binomial  ( logit )" in text
    assert "194.1    204.2    -92.0    184.1       51" in text  # lme4 prints these
    assert "period4" in text and "Pr(>|z|)" in text
    assert "logLik -92.0263" in repr(logit_fit)


def test_proportions_with_trials_as_weights_are_the_same_model(cbpp, logit_fit):
    prop = cbpp.assign(p=cbpp["incidence"] / cbpp["size"])
    fit = jm.fit_glmm("p ~ period + (1 | herd)", prop, weights="size")
    np.testing.assert_allclose(fit.fixef, logit_fit.fixef, rtol=1e-10)
    assert fit.loglik == pytest.approx(logit_fit.loglik, abs=1e-9)


def test_probit_link_matches_lme4(cbpp):
    conv = REF["models"]["cbpp_probit"]["converged"]
    fit = jm.fit_glmm(CBIND, cbpp, family=jm.Binomial("probit"))
    assert fit.loglik == pytest.approx(conv["logLik"], abs=1e-6)
    np.testing.assert_allclose(fit.fixef, conv["fixef"], rtol=1e-5)


def test_poisson_with_an_offset_column_matches_lme4(cbpp):
    conv = REF["models"]["cbpp_offset_poisson"]["converged"]
    data = cbpp.assign(log_size=np.log(cbpp["size"]))
    fit = jm.fit_glmm("incidence ~ period + (1 | herd)", data, family="poisson", offset="log_size")
    assert fit.loglik == pytest.approx(conv["logLik"], abs=1e-6)
    np.testing.assert_allclose(fit.fixef, conv["fixef"], rtol=1e-5)


def test_a_two_level_response_is_read_as_r_reads_it():
    """A factor, string or boolean response: its first level is failure (0), as in R."""
    from jaxmixed.glmm._response import RESPONSE, glmm_frame

    frame = pd.DataFrame({"r": ["N", "Y", "Y", "N"], "g": list("aabb")})
    _, out, _ = glmm_frame("r ~ 1 + (1 | g)", frame, None, None, binomial=True)
    np.testing.assert_array_equal(out[RESPONSE], [0.0, 1.0, 1.0, 0.0])
    flags = frame.assign(r=[True, False, True, True])
    _, out, _ = glmm_frame("r ~ 1 + (1 | g)", flags, None, None, binomial=True)
    np.testing.assert_array_equal(out[RESPONSE], [1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="categorical with 3 levels"):
        glmm_frame("r ~ 1 + (1 | g)", frame.assign(r=list("xyzx")), None, None, binomial=True)


def test_bad_input_is_named(cbpp):
    with pytest.raises(ValueError, match="weights= must not be given too"):
        jm.fit_glmm(CBIND, cbpp, weights="size")
    with pytest.raises(ValueError, match="proportion in \\[0, 1\\]"):
        jm.fit_glmm("size ~ period + (1 | herd)", cbpp)
    with pytest.raises(ValueError, match="negative or not finite"):
        jm.fit_glmm("y ~ period + (1 | herd)", cbpp.assign(y=-cbpp["incidence"]), family="poisson")
    with pytest.raises(ValueError, match="offset must have one value per row"):
        jm.fit_glmm(CBIND, cbpp, offset=np.zeros(3))
    with pytest.raises(ValueError, match="family must be"):
        jm.fit_glmm(CBIND, cbpp, family="gamma")
    with pytest.raises(ValueError, match="jaxmixed uses itself"):
        jm.fit_glmm(CBIND, cbpp.assign(jaxmixed_glmm_response=1.0))
    with pytest.raises(ValueError, match="cbind\\(\\) of a binomial response takes"):
        jm.fit_glmm("cbind(incidence) ~ period + (1 | herd)", cbpp)
    with pytest.raises(ValueError, match="cbind\\(successes, failures\\) is a binomial response"):
        jm.fit_glmm(CBIND, cbpp, family="poisson")
    with pytest.raises(ValueError, match="offset\\(\\) in the formula is not read yet"):
        jm.fit_glmm("incidence ~ period + offset(log(size)) + (1 | herd)", cbpp, family="poisson")
    with pytest.raises(ValueError, match="offset has 1 missing or non-finite"):
        jm.fit_glmm(CBIND, cbpp, offset=np.r_[np.nan, np.zeros(len(cbpp) - 1)])
    with pytest.raises(ValueError, match="nAGQ must be an integer from 1 to 25, got 2.7"):
        jm.fit_glmm(CBIND, cbpp, nAGQ=2.7)
    with pytest.raises(ValueError, match="nAGQ = 0"):
        jm.fit_glmm(CBIND, cbpp, nAGQ=0)
    with pytest.raises(ValueError, match="numbers of trials: 1 row"):
        some = cbpp.assign(p=(cbpp["incidence"] > 0).astype(float))
        jm.fit_glmm("p ~ period + (1 | herd)", some, weights=np.r_[1.5, np.ones(len(cbpp) - 1)])
    with pytest.raises(NotImplementedError, match="one grouping factor for now"):
        # an observation-level effect beside the herd's, as often fitted to cbpp
        obs = cbpp.assign(obs=[f"o{i}" for i in range(len(cbpp))])
        jm.fit_glmm(CBIND.replace("(1 | herd)", "(1 | herd) + (1 | obs)"), obs)
