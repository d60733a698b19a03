"""GLMMResults.bootstrap: replicates drawn from the fit and refitted (lme4's bootMer)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GLMM_GROUP

import jaxmixed as jm
from jaxmixed.glmm._predict import draw_responses

pytestmark = GLMM_GROUP


@pytest.fixture(scope="module")
def fit(cbpp_frame, cbpp_logit_fit):
    """cbpp's binomial fit (conftest: one compiled fit shared by the GLMM modules)."""
    return cbpp_frame, cbpp_logit_fit


@pytest.fixture(scope="module")
def boot(fit):
    return fit[1].bootstrap(120, seed=4, batch_size=64, verbose=False)


def test_each_replicate_is_the_refit_of_its_drawn_response(fit, boot):
    cbpp, m = fit
    ys = draw_responses(m, 120, seed=4)
    for k in (0, 77):
        data = cbpp.assign(k=np.round(ys[k] * cbpp["size"]))
        one = jm.fit_glmm("cbind(k, size - k) ~ period + (1 | herd)", data)
        row = boot.replicates.iloc[k]
        np.testing.assert_allclose(row[list(one.fixef.index)].to_numpy(float), one.fixef, rtol=1e-7, atol=1e-10)
        assert row["sd_(Intercept)|herd"] == pytest.approx(float(one.theta.iloc[0]), rel=1e-7, abs=1e-12)


def test_the_spread_of_the_replicates_is_the_hessians_standard_errors(fit, boot):
    """120 replicates estimate an SD to about ±7% (1/√(2·119)); the fixed effects' SEs
    from the Hessian must lie within 25% of them, and the original is the fit's."""
    _, m = fit
    assert boot.converged.mean() > 0.95
    se = m.coef_table()["Std. Error"]
    ratio = boot.std_error[se.index] / se
    assert np.all((ratio > 0.75) & (ratio < 1.25)), ratio
    assert boot.original["(Intercept)"] == pytest.approx(float(m.fixef["(Intercept)"]))
    assert boot.original["sd_(Intercept)|herd"] == pytest.approx(float(m.theta.iloc[0]))
    ci = boot.conf_int(0.9)
    assert np.all(ci["5%"] < boot.original) and np.all(boot.original < ci["95%"])


def test_conf_int_wald_and_boot(fit, boot):
    """Wald: β̂ ± z·SE (lme4's confint(method = "Wald") rows of β); boot: the bootstrap's
    percentile intervals of every parameter, from the same draws (same seed)."""
    _, m = fit
    table = m.coef_table()
    for level, z in ((0.95, 1.959963984540054), (0.8, 1.2815515655446004)):
        ci = m.conf_int(level)
        lo, hi = ci.columns
        np.testing.assert_allclose(ci[lo], table["Estimate"] - z * table["Std. Error"], rtol=1e-12)
        np.testing.assert_allclose(ci[hi], table["Estimate"] + z * table["Std. Error"], rtol=1e-12)
    assert list(m.conf_int(0.9).columns) == ["5%", "95%"]
    again = m.conf_int(0.9, method="boot", n_boot=120, seed=4, batch_size=64, verbose=False)
    np.testing.assert_allclose(again.to_numpy(), boot.conf_int(0.9).to_numpy(), rtol=1e-9)
    with pytest.raises(ValueError, match="'wald' or 'boot' for a GLMM"):
        m.conf_int(method="profile")
