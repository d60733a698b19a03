"""Likelihood-ratio tests of nested models (``jaxmixed.anova``) against lme4's ``anova``."""

from __future__ import annotations

import numpy as np
import pytest

import jaxmixed as jm
from jaxmixed.linear._api import refit
from jaxmixed.linear._tails import chi2_upper_tail

INTERCEPT = "Reaction ~ Days + (1 | Subject)"
SLOPES = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep():
    df = jm.load_dataset("sleepstudy")
    return df, jm.fit_reml(INTERCEPT, df), jm.fit_reml(SLOPES, df)


def test_sleepstudy_matches_lme4(sleep, lme4_refs):
    """lme4: anova(fm1, fm2) refits by ML; fm1's logLik −897.0393, Chisq 42.139 on 2 df, p 7.072e-10."""
    _, f1, f2 = sleep
    table = jm.anova(f2, f1)  # ordered by npar whatever the order given
    assert table.index.name == "model (refitted by ML)"
    assert list(table.index) == [INTERCEPT, SLOPES]
    assert list(table["npar"]) == [4, 6]
    ml = lme4_refs["sleepstudy_slopes_ml"]
    assert table.loc[SLOPES, "logLik"] == pytest.approx(ml["logLik"], rel=1e-8)
    assert table.loc[SLOPES, "AIC"] == pytest.approx(ml["AIC"], rel=1e-8)
    assert table.loc[SLOPES, "BIC"] == pytest.approx(ml["BIC"], rel=1e-8)
    assert table.loc[INTERCEPT, "logLik"] == pytest.approx(-897.0393, abs=1e-4)
    assert table.loc[SLOPES, "Chisq"] == pytest.approx(42.1393, abs=1e-3)
    assert table.loc[SLOPES, "Df"] == 2
    assert table.loc[SLOPES, "Pr(>Chisq)"] == pytest.approx(7.072e-10, rel=1e-3)
    np.testing.assert_allclose(table["deviance"], -2 * table["logLik"])
    assert np.isnan(table.iloc[0]["Chisq"])


def test_refit_by_ml_equals_an_ml_fit(sleep):
    df, _, f2 = sleep
    again = refit(f2, jm.FitOptions(reml=False))
    direct = jm.fit_reml(SLOPES, df, reml=False)
    assert not again.reml
    assert again.objective == pytest.approx(direct.objective, rel=1e-10)
    np.testing.assert_allclose(again.theta, direct.theta, rtol=1e-6)


def test_without_refitting_reml_criteria_are_compared(sleep):
    _, f1, f2 = sleep
    table = jm.anova(f1, f2, refit_ml=False, names=["m1", "m2"])
    assert table.index.name == "model" and list(table.index) == ["m1", "m2"]
    assert table.loc["m2", "logLik"] == pytest.approx(f2.loglik)
    with pytest.raises(ValueError, match="mix REML and ML"):
        jm.anova(f1, refit(f2, jm.FitOptions(reml=False)), refit_ml=False)


def test_bad_comparisons_get_clear_errors(sleep):
    df, f1, f2 = sleep
    with pytest.raises(ValueError, match="at least two"):
        jm.anova(f1)
    with pytest.raises(ValueError, match="not nested"):
        jm.anova(f1, jm.fit_reml("Reaction ~ 1 + (Days | Subject)", df))
    with pytest.raises(ValueError, match="not of the same data"):
        jm.anova(f1, jm.fit_reml(SLOPES, df.iloc[:170]))
    with pytest.raises(ValueError, match="not of the same data"):
        jm.anova(f1, jm.fit_reml(SLOPES, df.assign(Reaction=df.Reaction + 1.0)))
    with pytest.raises(ValueError, match="distinct label"):
        jm.anova(f1, f2, names=["a", "a"])


def test_chi2_tail_at_known_quantiles():
    np.testing.assert_allclose(chi2_upper_tail(np.asarray([3.841459, 5.991465, 0.0]), np.asarray([1.0, 2.0, 3.0])), [0.05, 0.05, 1.0], rtol=1e-6)
