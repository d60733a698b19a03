"""Results: tables, prediction, summary."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import DATA

import jaxmixed as jm


@pytest.fixture(scope="module")
def sleep_fit():
    return jm.fit_reml("Reaction ~ Days + (Days | Subject)", data=jm.load_dataset("sleepstudy"))


def test_information_criteria_count_parameters_like_lme4(sleep_fit):
    assert sleep_fit.n_params == 6  # 2 fixed effects, 3 θ, σ
    assert sleep_fit.aic == pytest.approx(sleep_fit.objective + 12)
    assert sleep_fit.bic == pytest.approx(sleep_fit.objective + 6 * math.log(180))
    assert sleep_fit.loglik == pytest.approx(-sleep_fit.objective / 2)


def test_fitted_residuals_and_predict(sleep_fit):
    df = jm.load_dataset("sleepstudy")
    np.testing.assert_allclose(sleep_fit.fitted + sleep_fit.residuals, df.Reaction.to_numpy())
    np.testing.assert_allclose(sleep_fit.predict(df), sleep_fit.fitted, rtol=1e-12)
    fixed_only = sleep_fit.predict(df, include_random=False)
    np.testing.assert_allclose(
        fixed_only, sleep_fit.fixed_effects["(Intercept)"] + sleep_fit.fixed_effects["Days"] * df.Days
    )
    # By hand for one row: (β₀ + b₀) + (β₁ + b₁) Days.
    row = df.iloc[[25]]
    b = sleep_fit.random_effects["Subject"].loc[row.Subject.iloc[0]]
    by_hand = (
        sleep_fit.fixed_effects["(Intercept)"]
        + b["(Intercept)"]
        + (sleep_fit.fixed_effects["Days"] + b["Days"]) * row.Days.iloc[0]
    )
    assert sleep_fit.predict(row)[0] == pytest.approx(by_hand)


def test_unseen_levels_get_the_fixed_effects_prediction_with_a_warning(sleep_fit):
    new = pd.DataFrame({"Days": [0.0, 5.0], "Subject": ["999", "308"]})
    with pytest.warns(UserWarning, match="1 row.*not seen in fitting") as record:
        pred = sleep_fit.predict(new)
    assert {w.filename for w in record} == {__file__}  # the user's line, not the library's
    fixed = sleep_fit.predict(new, include_random=False)
    assert pred[0] == pytest.approx(fixed[0])
    assert pred[1] != pytest.approx(fixed[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sleep_fit.predict(new.iloc[[1]])  # all levels known: no warning


def test_random_effects_tables(sleep_fit):
    re = sleep_fit.random_effects["Subject"]
    assert re.shape == (18, 2)
    assert list(re.columns) == ["(Intercept)", "Days"]
    var = sleep_fit.random_effects_var["Subject"]
    assert var.shape == (18, 2)
    assert (var.to_numpy() > 0).all()
    cov = sleep_fit.random_effects_cov["Subject"]
    np.testing.assert_allclose(np.diagonal(cov, axis1=1, axis2=2), var.to_numpy())
    # Conditional variances are below the prior variances.
    prior = sleep_fit.varcorr.vcov.iloc[:2].to_numpy()
    assert (var.to_numpy() < prior).all()


def test_vcov_and_standard_errors(sleep_fit):
    np.testing.assert_allclose(np.sqrt(np.diag(sleep_fit.vcov)), sleep_fit.fixed_effects_se)
    ci = sleep_fit.conf_int()
    assert list(ci.columns) == ["2.5%", "97.5%"]
    np.testing.assert_allclose(
        ci["97.5%"] - sleep_fit.fixed_effects, 1.959963984540054 * sleep_fit.fixed_effects_se
    )
    ci90 = sleep_fit.conf_int(0.9)
    np.testing.assert_allclose(
        ci90["95%"] - sleep_fit.fixed_effects, 1.6448536269514722 * sleep_fit.fixed_effects_se
    )


def test_summary_shows_what_users_look_for(sleep_fit):
    text = sleep_fit.summary()
    for piece in (
        "REML criterion: 1743.6283",
        "logLik: -871.8141",
        "AIC: 1755.6283",
        "BIC: 1774.7860",
        "Observations: 180",
        "Groups: Subject 18",
        "Converged: yes",
        "Random effects:",
        "Residual",
        "Fixed effects:",
        "Intercept",
        "t value",
        "[0.025",
    ):
        assert piece in text, piece
    assert str(sleep_fit) == text


def test_ml_summary_says_deviance():
    res = jm.fit_reml("Yield ~ 1 + (1 | Batch)", data=jm.load_dataset("Dyestuff"), reml=False)
    assert "Deviance: 327.3271" in res.summary()
    assert "maximum likelihood" in res.summary()


def test_several_factors_predict_adds_each_known_factor():
    df = jm.load_dataset("Penicillin")
    res = jm.fit_reml("diameter ~ 1 + (1 | plate) + (1 | sample)", data=df)
    np.testing.assert_allclose(res.predict(df), res.fitted, rtol=1e-12)
    new = pd.DataFrame({"plate": ["a", "zz"], "sample": ["A", "A"]})
    with pytest.warns(UserWarning, match="'plate' not seen"):
        pred = res.predict(new)
    b_plate = res.random_effects["plate"].loc["a", "(Intercept)"]
    b_sample = res.random_effects["sample"].loc["A", "(Intercept)"]
    mu = res.fixed_effects["(Intercept)"]
    np.testing.assert_allclose(pred, [mu + b_plate + b_sample, mu + b_sample])


def test_predict_without_newdata_and_without_random_effects(sleep_fit):
    np.testing.assert_allclose(sleep_fit.predict(include_random=False), sleep_fit.fitted_fixed)
    np.testing.assert_allclose(
        sleep_fit.fitted_fixed,
        sleep_fit.fixed_effects["(Intercept)"]
        + sleep_fit.fixed_effects["Days"] * jm.load_dataset("sleepstudy").Days,
    )


def test_unseen_category_of_a_fixed_factor_is_an_error():
    df = jm.load_dataset("sleepstudy")
    df["phase"] = np.where(df.Days < 5, "early", "late")
    res = jm.fit_reml("Reaction ~ phase + (1 | Subject)", data=df)
    new = pd.DataFrame({"phase": ["middle"], "Subject": ["308"]})
    with pytest.raises(ValueError, match="category not seen in fitting"):
        res.predict(new)


def test_array_predict_keeps_the_right_columns_when_one_is_aliased():
    rng = np.random.default_rng(4)
    n = 120
    g = np.repeat(np.arange(12), 10)
    u, v = rng.normal(size=n), rng.normal(size=n)
    X = pd.DataFrame({"one": np.ones(n), "u": u, "u2": 2 * u, "v": v})
    y = 1 + u - 2 * v + rng.normal(size=12)[g] + rng.normal(size=n)
    with pytest.warns(UserWarning, match=r"\['u2'\]"):
        res = jm.fit_reml(y=y, X=X, groups=g)
    assert list(res.fixed_effects.index) == ["one", "u", "v"]
    expected = res.fixed_effects["one"] + res.fixed_effects["u"] * u + res.fixed_effects["v"] * v
    np.testing.assert_allclose(res.predict(X=X, groups=g, include_random=False), expected)


def test_lazy_tables_are_the_fit_and_are_built_once():
    import pickle

    from jaxmixed.design._names import varcorr_table
    from jaxmixed.linear._results import fit_status

    res = jm.fit_reml("Reaction ~ Days + (Days | Subject)", data=jm.load_dataset("sleepstudy"))
    fit, design, arrays = res.fit_result, res.design, res.arrays
    names = list(design.fixed_names)
    assert "varcorr" not in vars(res)  # not built until read
    pd.testing.assert_series_equal(
        res.fixed_effects, pd.Series(np.asarray(fit.beta), index=names, name="estimate")
    )
    vcov = np.asarray(fit.vcov_beta)
    pd.testing.assert_frame_equal(res.vcov, pd.DataFrame(vcov, index=names, columns=names))
    np.testing.assert_array_equal(res.fixed_effects_se, np.sqrt(np.diag(vcov)))
    expected_vc = varcorr_table(design, [np.asarray(lam) for lam in fit.lambdas], float(fit.sigma))
    pd.testing.assert_frame_equal(res.varcorr, expected_vc)
    b = np.asarray(fit.b[0])
    np.testing.assert_array_equal(res.random_effects["Subject"].to_numpy(), b)
    np.testing.assert_array_equal(
        res.random_effects_var["Subject"].to_numpy(), np.diagonal(np.asarray(fit.b_cov[0]), axis1=1, axis2=2)
    )
    fitted = arrays.X @ np.asarray(fit.beta) + np.einsum("nq,nq->n", arrays.Z[0], b[arrays.codes[0]])
    np.testing.assert_array_equal(res.fitted, fitted)
    np.testing.assert_array_equal(res.residuals, arrays.y - fitted)
    assert res.varcorr is res.varcorr and res.random_effects is res.random_effects
    assert (res.converged, res.convergence_message) == (bool(fit.converged), jm.core.RESULTS[fit.result])
    assert fit_status(fit) == (bool(fit.converged), jm.core.RESULTS[fit.result])
    assert res.singular == bool(fit.singular)
    # repr is one short line naming the model and its state (summary() has the rest); the object pickles.
    text = repr(res)
    assert "\n" not in text and len(text) < 200, text
    assert (
        text.startswith("<MixedModelResults ")
        and f"{res.objective:.4f}" in text
        and f"{res.nobs} obs" in text
    )
    assert ("not converged" in text) != res.converged and ("singular" in text) == res.singular
    again = pickle.loads(
        pickle.dumps(jm.fit_reml("Reaction ~ Days + (Days | Subject)", jm.load_dataset("sleepstudy")))
    )
    pd.testing.assert_frame_equal(again.varcorr, res.varcorr)
    np.testing.assert_array_equal(again.fitted, res.fitted)


COEF = json.loads((DATA / "coef_reference.json").read_text())  # tests/data/coef_reference.R (lme4's coef)


@pytest.mark.parametrize("key", ["sleep_slopes", "sleep_no_fixed_slope", "penicillin"])
def test_coef_is_lme4s(key):
    """coef(): per factor, the fixed effects plus each level's modes, lme4's rows and
    columns (a random slope without a fixed one first, as 0 plus the modes), its values
    within the fits' agreement (1e-4 of each column's scale)."""
    ref = COEF[key]
    data = jm.load_dataset("Penicillin" if key == "penicillin" else "sleepstudy")
    fit = jm.fit_reml(ref["formula"], data)
    ours = fit.coef()
    assert set(ours) == set(ref["factors"])
    for name, table in ref["factors"].items():
        got = ours[name]
        assert list(got.columns) == table["columns"] and list(got.index.astype(str)) == table["rows"]
        want = np.asarray(table["values"])  # lme4's default fit: modes within 1e-4 of their scale
        assert np.all(np.abs(got.to_numpy() - want) <= 1e-4 * np.max(np.abs(want), axis=0))
        for col in got.columns:  # the rule, exactly: fixed effect (or 0) plus the modes
            fixed = fit.fixed_effects.get(col, 0.0)
            np.testing.assert_array_equal(got[col], fixed + fit.random_effects[name][col].to_numpy())


def test_refit_with_a_new_response(sleep_fit):
    """refit(newresp) (lme4's refit): the same design and settings on another response; a
    response 2y + 1 gives fit_reml's fit of that data: β̂ = 2β + (1, 0) and σ̂ doubled."""
    df = jm.load_dataset("sleepstudy")
    again = sleep_fit.refit(2.0 * df["Reaction"].to_numpy() + 1.0)
    direct = jm.fit_reml("Reaction ~ Days + (Days | Subject)", df.assign(Reaction=2.0 * df["Reaction"] + 1.0))
    np.testing.assert_allclose(again.fixed_effects, direct.fixed_effects, rtol=1e-10)
    np.testing.assert_allclose(
        again.fixed_effects,
        [2 * sleep_fit.fixed_effects.iloc[0] + 1, 2 * sleep_fit.fixed_effects.iloc[1]],
        rtol=1e-6,
    )
    assert again.sigma == pytest.approx(2 * sleep_fit.sigma, rel=1e-6)
    assert (
        again.objective == pytest.approx(direct.objective, rel=1e-12) and again.formula == sleep_fit.formula
    )
    with pytest.raises(ValueError, match=r"one value per fitted row \(180\)"):
        sleep_fit.refit(np.ones(179))
    with pytest.raises(ValueError, match="1 missing or infinite"):
        sleep_fit.refit(np.r_[np.nan, np.ones(179)])


def test_summary_is_text_with_its_tables(sleep_fit):
    """summary(): a str (prints, compares and searches as the text) whose repr is the text
    laid out, with the tables it shows (statsmodels' Summary.tables)."""
    s = sleep_fit.summary()
    assert isinstance(s, str) and repr(s) == str(s) == s.as_text() and "Fixed effects:" in s
    pd.testing.assert_frame_equal(s.tables["fixed effects"], sleep_fit.coef_table())
    pd.testing.assert_frame_equal(s.tables["random effects"], sleep_fit.varcorr)
    assert str(sleep_fit) == s
    kr = sleep_fit.summary(ddf="kenward-roger")
    pd.testing.assert_frame_equal(kr.tables["fixed effects"], sleep_fit.coef_table("kenward-roger"))
